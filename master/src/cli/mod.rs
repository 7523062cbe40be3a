//! Operator subcommands: most talk to a running master over gRPC.

pub mod cert;
pub mod client;
pub mod client_config;
pub mod connection;
pub mod context;
pub mod docs;
pub mod highstate;
pub mod jobs;
pub mod lock;
pub mod minions;
pub mod output;
pub mod releases;
pub mod token;

/// Turns a gRPC status into an error that says what the master said, without gRPC jargon.
fn status_error(status: tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unavailable => anyhow::anyhow!(
            "the master is unreachable: {}",
            brine_proto::tls::error_chain(&status)
        ),
        _ => anyhow::anyhow!("{}", status.message()),
    }
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

/// A time from the master, in milliseconds since the Unix epoch, as RFC 3339 to the second.
fn time_of(unix_ms: i64) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0)),
    )
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
