//! Operator subcommands that talk to a running master over gRPC.

pub mod cert;
pub mod client;
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

/// A time from the master, in milliseconds since the Unix epoch, as RFC 3339 to the second.
fn time_of(unix_ms: i64) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0)),
    )
}
