//! `brine-master highstate`: run a highstate and watch it.

use std::time::Duration;

use anyhow::Context;
use brine_common::outcome::HighstateEvent;
use brine_proto::pb;
use tonic::Streaming;

use super::client::ClientArgs;
use super::output::{OutputFormat, Renderer};
use crate::rollout::{BatchSize, MAX_BATCH_WAIT};

/// How a highstate ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every host is unchanged or changed.
    Success,
    /// Some host failed, was unreachable or timed out, or the stream broke off.
    HostsFailed,
}

impl Verdict {
    /// 0 when every host succeeded, 1 otherwise (2 is for jobs that could not run at all).
    pub fn exit_code(self) -> std::process::ExitCode {
        match self {
            Verdict::Success => std::process::ExitCode::SUCCESS,
            Verdict::HostsFailed => std::process::ExitCode::from(1),
        }
    }
}

/// How the highstate proceeds through the hosts.
#[derive(Debug, Clone, clap::Args)]
pub struct RolloutArgs {
    /// Hosts per batch: a number or a percentage of the targets (`2`, `25%`); each batch starts
    /// when the previous one has finished. Default: every host at once.
    #[arg(long, value_parser = parse_batch)]
    pub batch: Option<BatchSize>,
    /// How long to wait between batches (e.g. `30s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub batch_wait: Option<Duration>,
    /// Converge one host first, then the rest in batches.
    #[arg(long)]
    pub canary: bool,
    /// How many hosts may fail before the rollout stops; hosts not reached by then are reported
    /// `skipped` and left untouched.
    #[arg(long, default_value_t = 0)]
    pub max_failures: u32,
    /// When the rollout fails, return the hosts it already changed to the previous release.
    #[arg(long)]
    pub auto_revert: bool,
    /// Why this rollout runs; shown to anyone it locks out while it runs.
    #[arg(long)]
    pub message: Option<String>,
}

fn parse_batch(text: &str) -> Result<BatchSize, String> {
    text.parse()
}

impl RolloutArgs {
    fn to_wire(&self) -> anyhow::Result<pb::Rollout> {
        let batch_wait = self.batch_wait.unwrap_or_default();
        if batch_wait > MAX_BATCH_WAIT {
            anyhow::bail!("--batch-wait: at most one hour");
        }
        Ok(pb::Rollout {
            batch: self.batch.map(|b| b.to_string()).unwrap_or_default(),
            batch_wait_ms: u64::try_from(batch_wait.as_millis()).unwrap_or(u64::MAX),
            canary: self.canary,
            max_failures: self.max_failures,
            auto_revert: self.auto_revert,
        })
    }
}

/// Everything a job subcommand (highstate, deploy, rollback) shares.
#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    #[arg(skip)]
    pub client: ClientArgs,
    /// How long to wait for each batch of hosts (e.g. `90s`, `10m`); defaults to master.toml's.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    #[command(flatten)]
    pub rollout: RolloutArgs,
    /// `auto`: progress bars on a terminal, plain lines otherwise.
    #[arg(long, value_enum, default_value_t = OutputFormat::Auto)]
    pub output: OutputFormat,
}

/// The parts of a job request every job subcommand sends.
struct JobWire {
    timeout_seconds: u32,
    rollout: pb::Rollout,
    lock_message: String,
}

impl JobArgs {
    fn wire(&self) -> anyhow::Result<JobWire> {
        let timeout_seconds = match self.timeout {
            Some(timeout) => {
                u32::try_from(timeout.as_secs().max(1)).context("--timeout is too long")?
            }
            None => 0,
        };
        Ok(JobWire {
            timeout_seconds,
            rollout: self.rollout.to_wire()?,
            lock_message: self.rollout.message.clone().unwrap_or_default(),
        })
    }

    async fn fleet(
        &self,
    ) -> anyhow::Result<pb::fleet_client::FleetClient<tonic::transport::Channel>> {
        Ok(pb::fleet_client::FleetClient::new(
            self.client.connect().await?,
        ))
    }
}

/// Runs a highstate over `target` (an expression; `None` for every host) and renders it; a `plan`
/// only reports what each host would do.
pub async fn run(job: &JobArgs, target: Option<String>, plan: bool) -> anyhow::Result<Verdict> {
    let wire = job.wire()?;
    let request = pb::HighstateRequest {
        target: target.unwrap_or_default(),
        timeout_seconds: wire.timeout_seconds,
        rollout: Some(wire.rollout),
        lock_message: wire.lock_message,
        plan,
    };
    let stream = job
        .fleet()
        .await?
        .highstate(request)
        .await
        .map_err(super::status_error)
        .context("start the highstate")?
        .into_inner();
    Ok(watch(stream, job.output).await)
}

/// Rolls `role` (or every role) back to release `to` (or the previous one) and renders it.
pub async fn rollback(
    job: &JobArgs,
    role: Option<String>,
    to: Option<u64>,
    target: Option<String>,
) -> anyhow::Result<Verdict> {
    let wire = job.wire()?;
    let request = pb::RollbackRequest {
        role: role.unwrap_or_default(),
        to_release: to.unwrap_or(0),
        timeout_seconds: wire.timeout_seconds,
        rollout: Some(wire.rollout),
        lock_message: wire.lock_message,
        target: target.unwrap_or_default(),
    };
    let stream = job
        .fleet()
        .await?
        .rollback(request)
        .await
        .map_err(super::status_error)
        .context("start the rollback")?
        .into_inner();
    Ok(watch(stream, job.output).await)
}

/// Deploys `image` to `roles` (CI's call) and renders it.
pub async fn deploy(
    job: &JobArgs,
    roles: Vec<String>,
    image: String,
    target: Option<String>,
) -> anyhow::Result<Verdict> {
    let wire = job.wire()?;
    let request = pb::DeployRequest {
        roles,
        image,
        timeout_seconds: wire.timeout_seconds,
        rollout: Some(wire.rollout),
        lock_message: wire.lock_message,
        target: target.unwrap_or_default(),
    };
    let stream = job
        .fleet()
        .await?
        .deploy(request)
        .await
        .map_err(super::status_error)
        .context("start the deploy")?
        .into_inner();
    Ok(watch(stream, job.output).await)
}

/// Renders a job's events until its summary; the verdict is a failure without one.
async fn watch(mut stream: Streaming<pb::HighstateEvent>, format: OutputFormat) -> Verdict {
    let mut renderer = Renderer::new(format);
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(status) => {
                tracing::error!("the job's stream broke off: {}", status.message());
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
        renderer.event(&event);
    }
    renderer.finish();
    // Judged on what the renderer gathered: a long job's summary leaves the hosts' reports to
    // the events that came before it.
    if renderer.job_succeeded() {
        Verdict::Success
    } else {
        Verdict::HostsFailed
    }
}
