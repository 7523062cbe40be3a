//! Operator subcommands: most talk to a running master over gRPC.

pub mod cert;
pub mod client;
pub mod client_config;
pub mod connection;
pub mod context;
pub mod dashboard;
pub mod docs;
pub mod events;
pub mod highstate;
pub mod init;
pub mod jobs;
pub mod lock;
pub mod minions;
pub mod output;
pub mod releases;
pub mod roles;
pub mod secret;
pub mod sessions;
pub mod token;
pub mod version;

/// The exit codes of `brine-master` commands that call a master, as README's "Exit codes"
/// lists them: a script (or CI) can tell "retry later" from "fix your input" from "find out
/// what happened".
pub mod exit {
    /// Done; for a job, every host is unchanged or changed.
    pub const SUCCESS: u8 = 0;
    /// The job ran and some host failed, was unreachable or timed out.
    pub const HOSTS_FAILED: u8 = 1;
    /// Did not run: the command line, the input or the setup is wrong (also usage errors).
    pub const REFUSED: u8 = 2;
    /// Did not run, and may if tried again later: the fleet is locked, the master or the
    /// registry is unreachable, the master is busy or its disk is full.
    pub const RETRY_LATER: u8 = 3;
    /// The connection was lost after a job started: it goes on, with an outcome unknown here.
    pub const OUTCOME_UNKNOWN: u8 = 4;
}

/// A call the master refused or could not answer, as the CLI reports it.
#[derive(Debug)]
pub struct CallFailed(tonic::Status);

impl std::fmt::Display for CallFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.code() {
            tonic::Code::Unavailable
                if brine_proto::errors::Failure::of(&self.0).reason.is_none() =>
            {
                write!(
                    f,
                    "the master is unreachable: {}",
                    brine_proto::tls::error_chain(&self.0)
                )
            }
            _ => write!(f, "{}", self.0.message()),
        }
    }
}

impl std::error::Error for CallFailed {}

/// Turns a gRPC status into an error that says what the master said, without gRPC jargon.
fn status_error(status: tonic::Status) -> anyhow::Error {
    CallFailed(status).into()
}

/// The exit code for a command that failed with `err` before any job ran.
pub fn exit_code_of(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(CallFailed(status)) = cause.downcast_ref::<CallFailed>() {
            return match status.code() {
                // Cancelled: the master gave up answering in time, before any job started.
                tonic::Code::Unavailable
                | tonic::Code::Aborted
                | tonic::Code::ResourceExhausted
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled => exit::RETRY_LATER,
                _ => exit::REFUSED,
            };
        }
        if let Some(brine_proto::tls::TlsError::Connect { .. }) =
            cause.downcast_ref::<brine_proto::tls::TlsError>()
        {
            return exit::RETRY_LATER;
        }
    }
    exit::REFUSED
}

/// Text a host supplied (facts, states, errors, event messages), made safe to print on a
/// terminal: control characters (escape sequences, carriage returns, newlines that would forge
/// lines) are shown escaped, as `\u{1b}` or `\n`, instead of acting.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// A time from the master as RFC 3339 to the second; `-` when unset (or before 1970).
fn time_of(at: Option<&prost_types::Timestamp>) -> String {
    match at.and_then(|at| std::time::SystemTime::try_from(*at).ok()) {
        Some(at) if at >= std::time::UNIX_EPOCH => {
            humantime::format_rfc3339_seconds(at).to_string()
        }
        _ => "-".to_owned(),
    }
}

/// A time the domain keeps in milliseconds since the Unix epoch, as [`time_of`] shows it.
fn time_of_ms(unix_ms: i64) -> String {
    time_of(brine_proto::time::timestamp_if_known(unix_ms).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_from_hosts_are_shown_not_obeyed() {
        assert_eq!(printable("debian 12"), "debian 12");
        assert_eq!(
            printable("evil\u{1b}[2J\r\nweb-1  up  fake"),
            "evil\\u{1b}[2J\\r\\nweb-1  up  fake"
        );
    }
}
