//! `brine-master highstate`: run a highstate and watch it.

use std::time::Duration;

use anyhow::Context;
use brine_common::outcome::HighstateEvent;
use brine_proto::pb;

use super::client::ClientArgs;
use super::output::{OutputFormat, Renderer};

/// How a highstate ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every host is unchanged or changed.
    Success,
    /// Some host failed, was unreachable or timed out, or the stream broke off.
    HostsFailed,
}

/// Runs a highstate over `target` (a glob; `None` for every host) and renders it.
pub async fn run(
    client: &ClientArgs,
    target: Option<String>,
    timeout: Option<Duration>,
    format: OutputFormat,
) -> anyhow::Result<Verdict> {
    let channel = client.connect().await?;
    let timeout_seconds = match timeout {
        Some(timeout) => {
            u32::try_from(timeout.as_secs().max(1)).context("--timeout is too long")?
        }
        None => 0,
    };
    let mut stream = pb::fleet_client::FleetClient::new(channel)
        .highstate(pb::HighstateRequest {
            target: target.unwrap_or_default(),
            timeout_seconds,
        })
        .await
        .map_err(super::status_error)
        .context("start the highstate")?
        .into_inner();

    let mut renderer = Renderer::new(format);
    let mut verdict = Verdict::HostsFailed;
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(status) => {
                tracing::error!("the highstate stream broke off: {}", status.message());
                break;
            }
        };
        let event = match HighstateEvent::try_from(message) {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!("ignored an event the master sent: {err}");
                continue;
            }
        };
        if let HighstateEvent::Summary(summary) = &event {
            verdict = if summary.is_success() {
                Verdict::Success
            } else {
                Verdict::HostsFailed
            };
        }
        renderer.event(&event);
    }
    renderer.finish();
    Ok(verdict)
}
