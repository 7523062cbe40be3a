//! Sessions: a container's logs or a command run in it, on one host, for one caller
//! (`brine-master logs` and `exec`). The master opens one session per host and container and
//! the minion streams its output back, within the limits the master sets.

use std::fmt;

use crate::names::{ContainerName, MinionId, RoleName};
use crate::outcome::JobId;

/// How long `exec` waits for a command unless the caller says.
pub const DEFAULT_EXEC_TIMEOUT_MS: u64 = 60_000;
/// The longest `exec` waits for a command.
pub const MAX_EXEC_TIMEOUT_MS: u64 = 3_600_000;
/// How many arguments a command may have.
pub const MAX_COMMAND_ARGS: usize = 64;
/// How long a command may be, all its arguments together, in bytes.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
/// The most lines of a log's end a caller may ask for.
pub const MAX_TAIL_LINES: u32 = 10_000;
/// The lines of a log's end a caller gets when it does not say.
pub const DEFAULT_TAIL_LINES: u32 = 100;

/// A session's id: the job's id and a counter, so a minion's answers reach their caller.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(String);

/// Why a session id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a session id is 1 to 80 letters, digits or '-'")]
pub struct SessionIdError;

impl SessionId {
    pub fn new(id: impl Into<String>) -> Result<Self, SessionIdError> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= 80
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if valid {
            Ok(Self(id))
        } else {
            Err(SessionIdError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which of a process's outputs bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Which part of a container's log to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogsOptions {
    /// Only lines written at or after this time; `None` from the container's start.
    pub since_unix_ms: Option<i64>,
    /// Only this many lines from the end (of those since `since`); at most [`MAX_TAIL_LINES`].
    pub tail: u32,
    /// Keep streaming new lines until the caller goes away.
    pub follow: bool,
}

/// A command to run in a container: its argv, run as is (no shell unless it names one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command(Vec<String>);

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("is empty; name the program to run")]
    Empty,
    #[error("has {0} arguments; at most {MAX_COMMAND_ARGS} are accepted")]
    TooManyArgs(usize),
    #[error("is {0} bytes long; at most {MAX_COMMAND_BYTES} are accepted")]
    TooLong(usize),
    #[error("argument {0} holds a NUL byte, which no program can receive")]
    Nul(usize),
    #[error("its program (the first argument) is empty")]
    EmptyProgram,
}

impl Command {
    pub fn new(argv: Vec<String>) -> Result<Self, CommandError> {
        if argv.is_empty() {
            return Err(CommandError::Empty);
        }
        if argv.len() > MAX_COMMAND_ARGS {
            return Err(CommandError::TooManyArgs(argv.len()));
        }
        let bytes: usize = argv.iter().map(String::len).sum();
        if bytes > MAX_COMMAND_BYTES {
            return Err(CommandError::TooLong(bytes));
        }
        if let Some(at) = argv.iter().position(|arg| arg.contains('\0')) {
            return Err(CommandError::Nul(at));
        }
        if argv[0].is_empty() {
            return Err(CommandError::EmptyProgram);
        }
        Ok(Self(argv))
    }

    pub fn argv(&self) -> &[String] {
        &self.0
    }

    pub fn into_argv(self) -> Vec<String> {
        self.0
    }
}

impl fmt::Display for Command {
    /// The argv as a shell would read it back: arguments with spaces or quotes single-quoted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted: Vec<String> = self.0.iter().map(|arg| shell_quoted(arg)).collect();
        f.write_str(&quoted.join(" "))
    }
}

fn shell_quoted(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// What a session does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionKind {
    Logs(LogsOptions),
    Exec(Command),
}

/// How much a session may send, set by the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// The most bytes of output in all; what follows is left out and the end says so. 0: no cap.
    pub max_bytes: u64,
    /// The output's steady rate, bytes a second; what goes over is left out and counted. 0: no
    /// rate limit.
    pub bytes_per_second: u64,
    /// How much may go out at once above the steady rate.
    pub burst_bytes: u64,
}

/// A session as the master asks a minion for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    pub session_id: SessionId,
    /// The role and container (brine's names, not Docker's) it is for: the minion reaches only
    /// a container it manages, in its namespace, of that role.
    pub role: RoleName,
    pub container: ContainerName,
    pub kind: SessionKind,
    pub limits: SessionLimits,
    /// When the session ends, by the master's clock, whatever it is doing; `None` for a
    /// followed log, which ends when its caller goes away.
    pub ends_at_unix_ms: Option<i64>,
}

/// What a minion says about a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The host took the session and found its container.
    Accepted,
    /// Output, in order. `dropped_bytes` were left out just before it (over the rate limit).
    Output {
        stream: OutputStream,
        data: Vec<u8>,
        dropped_bytes: u64,
    },
    /// The last word on a session.
    Ended(SessionEnd),
}

/// How a session ended on its host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionEnd {
    /// A command's exit status, once it exited.
    pub exit_code: Option<i64>,
    /// Why the session failed (container not found, Docker's error, timed out); `None` if it
    /// did not.
    pub error: Option<String>,
    /// Output over the session's `max_bytes` was left out.
    pub truncated: bool,
    /// The session's end time came before its end; the master, which knows the caller's
    /// timeout, says so in `error`.
    pub timed_out: bool,
}

/// What a minion says about one of its sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMessage {
    pub session_id: SessionId,
    pub event: SessionEvent,
}

/// A caller's request for `logs` or `exec`: the role's containers on the hosts that run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionsRequest {
    pub role: RoleName,
    /// One container of the role; `None` for every container of the role.
    pub container: Option<ContainerName>,
    /// A target expression narrowing the hosts; empty for every host that runs the role.
    pub target: String,
    pub kind: SessionKind,
    /// How long to wait for a command ([`DEFAULT_EXEC_TIMEOUT_MS`] unless the caller said);
    /// 0 for logs.
    pub timeout_ms: u64,
}

impl SessionsRequest {
    /// What was asked, for the job's record: `web/app -- sh -c 'echo hi'`, `web --tail 100`.
    pub fn describe(&self) -> String {
        let mut text = self.role.to_string();
        if let Some(container) = &self.container {
            text = format!("{text}/{container}");
        }
        match &self.kind {
            SessionKind::Exec(command) => format!("{text} -- {command}"),
            SessionKind::Logs(options) => {
                text = format!("{text} --tail {}", options.tail);
                if let Some(since) = options.since_unix_ms {
                    text = format!("{text} --since-unix-ms {since}");
                }
                if options.follow {
                    text.push_str(" --follow");
                }
                text
            }
        }
    }
}

/// What the caller of `logs` or `exec` is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionsEvent {
    /// Always first: the job recording the call, and every host and container reached for
    /// (the container `None` for a host not reached at all).
    Started {
        job_id: JobId,
        targets: Vec<(MinionId, Option<ContainerName>)>,
    },
    Output {
        minion_id: MinionId,
        container: ContainerName,
        stream: OutputStream,
        data: Vec<u8>,
        dropped_bytes: u64,
    },
    /// One per target.
    Ended {
        minion_id: MinionId,
        container: Option<ContainerName>,
        end: SessionEnd,
    },
}

/// A token bucket over bytes: what a session may send now, given its steady rate and burst.
/// Pure: the caller passes the time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateBudget {
    bytes_per_second: u64,
    burst_bytes: u64,
    available: f64,
    last_ms: Option<u64>,
}

impl RateBudget {
    /// A budget that starts full; a rate of 0 allows everything.
    pub fn new(limits: &SessionLimits) -> Self {
        Self {
            bytes_per_second: limits.bytes_per_second,
            burst_bytes: limits.burst_bytes.max(limits.bytes_per_second),
            available: limits.burst_bytes.max(limits.bytes_per_second) as f64,
            last_ms: None,
        }
    }

    /// Whether `wanted` bytes may go out at `now_ms` (a monotonic clock in milliseconds), all
    /// or none of them (a line is never cut); if so, they are taken from the budget.
    pub fn allow(&mut self, wanted: u64, now_ms: u64) -> bool {
        if self.bytes_per_second == 0 {
            return true;
        }
        let elapsed_ms = self.last_ms.map_or(0, |last| now_ms.saturating_sub(last));
        self.last_ms = Some(now_ms);
        self.available = (self.available
            + elapsed_ms as f64 * self.bytes_per_second as f64 / 1000.0)
            .min(self.burst_bytes as f64);
        if (wanted as f64) > self.available {
            return false;
        }
        self.available -= wanted as f64;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_bounded_and_shown_as_a_shell_would_read_them() {
        let argv = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        let command = Command::new(argv(&["sh", "-c", "echo 'hi'; exit 3"])).unwrap();
        assert_eq!(command.to_string(), r"sh -c 'echo '\''hi'\''; exit 3'");
        assert_eq!(Command::new(vec![]), Err(CommandError::Empty));
        assert_eq!(
            Command::new(argv(&["ls", "a\0b"])),
            Err(CommandError::Nul(1))
        );
        assert_eq!(
            Command::new(argv(&["", "x"])),
            Err(CommandError::EmptyProgram)
        );
        assert_eq!(
            Command::new(vec!["x".into(); MAX_COMMAND_ARGS + 1]),
            Err(CommandError::TooManyArgs(MAX_COMMAND_ARGS + 1))
        );
        assert_eq!(
            Command::new(vec!["x".repeat(MAX_COMMAND_BYTES + 1)]),
            Err(CommandError::TooLong(MAX_COMMAND_BYTES + 1))
        );
    }

    #[test]
    fn session_ids_are_short_and_plain() {
        assert!(SessionId::new("20261203T132800-0a1b2c3d-1").is_ok());
        assert!(SessionId::new("").is_err());
        assert!(SessionId::new("a/b").is_err());
        assert!(SessionId::new("x".repeat(81)).is_err());
    }

    #[test]
    fn the_rate_budget_allows_a_burst_then_the_steady_rate() {
        let limits = SessionLimits {
            max_bytes: 0,
            bytes_per_second: 1_000,
            burst_bytes: 4_000,
        };
        let mut budget = RateBudget::new(&limits);
        assert!(budget.allow(3_000, 0));
        assert!(!budget.allow(3_000, 0), "the burst is spent");
        assert!(budget.allow(1_000, 0), "what is left goes");
        assert!(!budget.allow(600, 500), "half a second earns 500 bytes");
        assert!(budget.allow(500, 500));
        assert!(!budget.allow(4_001, 100_000), "never more than the burst");
        assert!(budget.allow(4_000, 100_000));
        let mut unlimited = RateBudget::new(&SessionLimits {
            max_bytes: 0,
            bytes_per_second: 0,
            burst_bytes: 0,
        });
        assert!(unlimited.allow(u64::MAX, 0));
    }
}
