//! `brine-master highstate`: run a highstate and watch it.

use std::time::Duration;

use anyhow::Context;
use brine_common::outcome::HighstateEvent;
use brine_proto::{pb, time};
use tonic::Streaming;

use super::client::ClientArgs;
use super::output::{OutputFormat, Renderer};
use crate::rollout::{BatchSize, MAX_BATCH_WAIT};

/// How a job ended, for the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every host is unchanged or changed.
    Success,
    /// Some host failed, was unreachable or timed out.
    HostsFailed,
    /// The connection was lost after the job started: it goes on without this caller, and its
    /// outcome is not known here.
    OutcomeUnknown { job_id: Option<String> },
}

impl Verdict {
    /// The exit code, as README's "Exit codes" lists them.
    pub fn exit_code(&self) -> std::process::ExitCode {
        std::process::ExitCode::from(match self {
            Verdict::Success => super::exit::SUCCESS,
            Verdict::HostsFailed => super::exit::HOSTS_FAILED,
            Verdict::OutcomeUnknown { .. } => super::exit::OUTCOME_UNKNOWN,
        })
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
    /// With batches, the hosts of later batches fetch their images when the rollout starts, so
    /// their turn only swaps containers; at most this many at once (0: none ahead). A host
    /// whose fetch fails is reported `skipped` in its turn. Default: 8.
    #[arg(long)]
    pub concurrent_pulls: Option<u32>,
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
            batch_size: match self.batch {
                None | Some(BatchSize::All) => None,
                Some(BatchSize::Count(hosts)) => Some(pb::rollout::BatchSize::BatchHosts(hosts)),
                Some(BatchSize::Percent(percent)) => {
                    Some(pb::rollout::BatchSize::BatchPercent(u32::from(percent)))
                }
            },
            batch_wait: Some(time::duration(batch_wait)),
            canary: self.canary,
            max_failures: self.max_failures,
            auto_revert: self.auto_revert,
            concurrent_pulls: self.concurrent_pulls,
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
    /// Makes the command safe to repeat: run again with the same id (e.g. after a lost
    /// connection, exit code 4), it follows the job the first run started instead of starting
    /// another. Use a new id for each job, e.g. the CI pipeline's run id.
    #[arg(long, value_name = "ID", env = "BRINE_REQUEST_ID")]
    pub request_id: Option<String>,
    /// When the fleet is locked, wait up to this long (e.g. `10m`, at most `1h`) for the lock
    /// instead of giving up at once.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait_for_lock: Option<Duration>,
    /// `auto`: progress bars on a terminal, plain lines otherwise.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Auto)]
    pub output: OutputFormat,
}

impl JobArgs {
    /// The options every job request carries, for `target` (an expression; `None` for every
    /// host).
    fn options(&self, target: Option<String>) -> anyhow::Result<pb::JobOptions> {
        Ok(pb::JobOptions {
            target: target.unwrap_or_default(),
            batch_timeout: self.timeout.map(time::duration),
            rollout: Some(self.rollout.to_wire()?),
            lock_message: self.rollout.message.clone().unwrap_or_default(),
            request_id: self.request_id.clone().unwrap_or_default(),
            wait_for_lock: self.wait_for_lock.map(time::duration),
        })
    }

    async fn fleet(
        &self,
    ) -> anyhow::Result<pb::fleet_service_client::FleetServiceClient<tonic::transport::Channel>>
    {
        Ok(pb::fleet_service_client::FleetServiceClient::new(
            self.client.connect().await?,
        ))
    }
}

/// Runs a highstate over `target` (an expression; `None` for every host) and renders it; a `plan`
/// only reports what each host would do.
pub async fn run(job: &JobArgs, target: Option<String>, plan: bool) -> anyhow::Result<Verdict> {
    let request = pb::HighstateRequest {
        options: Some(job.options(target)?),
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
    watch(stream, |r: pb::HighstateResponse| r.event, job.output).await
}

/// Rolls `role` (or every role) back to release `to` (or the previous one) and renders it.
pub async fn rollback(
    job: &JobArgs,
    role: Option<String>,
    to: Option<u64>,
    target: Option<String>,
) -> anyhow::Result<Verdict> {
    let request = pb::RollbackRequest {
        role: role.unwrap_or_default(),
        release_id: to,
        options: Some(job.options(target)?),
    };
    let stream = job
        .fleet()
        .await?
        .rollback(request)
        .await
        .map_err(super::status_error)
        .context("start the rollback")?
        .into_inner();
    watch(stream, |r: pb::RollbackResponse| r.event, job.output).await
}

/// Deploys `image` to `roles` (CI's call) and renders it.
pub async fn deploy(
    job: &JobArgs,
    roles: Vec<String>,
    image: String,
    target: Option<String>,
) -> anyhow::Result<Verdict> {
    let request = pb::DeployRequest {
        roles,
        image,
        options: Some(job.options(target)?),
    };
    let stream = job
        .fleet()
        .await?
        .deploy(request)
        .await
        .map_err(super::status_error)
        .context("start the deploy")?
        .into_inner();
    watch(stream, |r: pb::DeployResponse| r.event, job.output).await
}

/// Renders a job's events (each the `event` of a response message) until its summary; without
/// one, the outcome is unknown. A refusal before the job started (one that waited for the lock
/// and was refused after all) is an error, as if the call itself had been refused.
pub(super) async fn watch<T>(
    mut stream: Streaming<T>,
    event_of: fn(T) -> Option<pb::JobEvent>,
    format: OutputFormat,
) -> anyhow::Result<Verdict> {
    let mut renderer = Renderer::new(format);
    let mut job_id = None;
    let mut summarized = false;
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(status) if job_id.is_none() => return Err(super::status_error(status)),
            Err(status) => {
                tracing::error!("the job's stream broke off: {}", status.message());
                break;
            }
        };
        let Some(message) = event_of(message) else {
            continue;
        };
        let event = match HighstateEvent::try_from(message) {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!("ignored an event the master sent: {err}");
                continue;
            }
        };
        match &event {
            HighstateEvent::Started { job_id: id, .. } => job_id = Some(id.to_string()),
            HighstateEvent::Summary(_) => summarized = true,
            _ => {}
        }
        renderer.event(&event);
    }
    renderer.finish();
    if !summarized {
        let follow = match &job_id {
            Some(id) => format!("follow it with: brine-master jobs show {id} --follow"),
            None => "see `brine-master jobs`".to_owned(),
        };
        eprintln!(
            "the connection to the master was lost while the job ran; it goes on without you: \
             {follow} (or repeat this command with the same --request-id)"
        );
        return Ok(Verdict::OutcomeUnknown { job_id });
    }
    // Judged on what the renderer gathered: a long job's summary leaves the hosts' reports to
    // the events that came before it.
    Ok(if renderer.job_succeeded() {
        Verdict::Success
    } else {
        Verdict::HostsFailed
    })
}
