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
