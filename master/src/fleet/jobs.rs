//! The job RPCs: highstate, deploy and rollback (turned into a `JobKind` and streamed), the
//! releases, and the recorded jobs (list, get with its host reports in pages, cancel). It is
//! separate because jobs are the service's largest concern and share their own edge
//! validation (timeouts, rollout options, targets, the plan rate).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use brine_common::identity::CertIdentity;
use brine_common::names::{MinionId, RoleName};
use brine_common::outcome::{HighstateEvent, HostStatus, JobId, JobSummary};
use brine_common::spec::ImageRef;
use brine_common::target::Target;
use brine_proto::pb;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::paging::{MAX_PAGE_BYTES, page_size, page_token, paged};
use super::{FleetService, HighstateStream, store_failure};
use crate::auth::Caller;
use crate::highstate::{self, HighstateError, JobRequest};
use crate::job::{JobKind, RollbackError};
use crate::rollout::{BatchSize, MAX_BATCH_WAIT, Rollout};
use crate::store::JobRecord;

/// A highstate waits 24 hours at most, whatever the caller asks.
const MAX_HIGHSTATE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How many plans may start per minute, fleet-wide: each one asks every targeted host's
/// Docker engine about its containers.
const PLANS_PER_MINUTE: usize = 12;

/// The plans started within the last minute.
#[derive(Debug, Default)]
pub struct PlanRate {
    // A std mutex: never held across an await.
    started: std::sync::Mutex<std::collections::VecDeque<Instant>>,
}

impl PlanRate {
    /// Lets a plan start now, or says when one may.
    fn admit(&self, now: Instant) -> Result<(), Status> {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        while started
            .front()
            .is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(60))
        {
            started.pop_front();
        }
        if let Some(oldest) = started
            .front()
            .filter(|_| started.len() >= PLANS_PER_MINUTE)
        {
            let wait = Duration::from_secs(60).saturating_sub(now.duration_since(*oldest));
            return Err(Status::resource_exhausted(format!(
                "{PLANS_PER_MINUTE} plans started within the last minute; try again in {} s",
                wait.as_secs().max(1)
            )));
        }
        started.push_back(now);
        Ok(())
    }
}

impl From<HighstateError> for Status {
    fn from(err: HighstateError) -> Self {
        match err {
            HighstateError::Roles(_)
            | HighstateError::ImpossibleHosts(_)
            | HighstateError::Registry(_)
            | HighstateError::Locked(_) => Status::failed_precondition(err.to_string()),
            HighstateError::NoTargets(_) => Status::not_found(err.to_string()),
            HighstateError::UnknownRole(_) => Status::invalid_argument(err.to_string()),
            HighstateError::NotDeployable { .. } | HighstateError::TooLongForCi { .. } => {
                Status::permission_denied(err.to_string())
            }
            HighstateError::Rollback(ref rollback) => match rollback {
                RollbackError::NoRelease | RollbackError::NothingEarlier(_) => {
                    Status::failed_precondition(err.to_string())
                }
                RollbackError::UnknownRelease(_) => Status::not_found(err.to_string()),
                RollbackError::RoleNotInRelease { .. } => Status::invalid_argument(err.to_string()),
            },
            HighstateError::Store(err) => err.to_status(),
            HighstateError::DiskFull { .. } => {
                tracing::error!("refused a job: {err}");
                Status::resource_exhausted(err.to_string())
            }
        }
    }
}

/// Validates rollout options at the edge.
fn rollout_from_wire(rollout: pb::Rollout) -> Result<Rollout, Status> {
    let batch = rollout
        .batch
        .parse::<BatchSize>()
        .map_err(|err| Status::invalid_argument(format!("rollout.batch: {err}")))?;
    let batch_wait = Duration::from_millis(rollout.batch_wait_ms);
    if batch_wait > MAX_BATCH_WAIT {
        return Err(Status::invalid_argument(
            "rollout.batch_wait_ms: at most one hour",
        ));
    }
    Ok(Rollout {
        batch,
        batch_wait,
        canary: rollout.canary,
        max_failures: rollout.max_failures,
        auto_revert: rollout.auto_revert,
    })
}

/// Parses a request's target expression; an empty one targets every host.
fn parse_target(text: &str) -> Result<Option<Target>, Status> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    Target::parse(text)
        .map(Some)
        .map_err(|err| Status::invalid_argument(format!("target: {err}")))
}

impl FleetService {
    /// Validates a job's timeout and rollout at the edge.
    fn job_options(
        &self,
        timeout_seconds: u32,
        rollout: Option<pb::Rollout>,
    ) -> Result<(Duration, Rollout), Status> {
        let timeout = match timeout_seconds {
            0 => self.master.config.highstate_timeout,
            seconds => Duration::from_secs(u64::from(seconds)),
        };
        if timeout > MAX_HIGHSTATE_TIMEOUT {
            return Err(Status::invalid_argument("timeout_seconds: at most 86400"));
        }
        let rollout = match rollout {
            Some(rollout) => rollout_from_wire(rollout)?,
            None => Rollout::default(),
        };
        Ok((timeout, rollout))
    }

    /// Prepares a job of `kind` with the options every job request carries (target, timeout,
    /// rollout, lock message), runs it and streams its events to the caller.
    async fn start_job(
        &self,
        caller: &CertIdentity,
        kind: JobKind,
        target: &str,
        timeout_seconds: u32,
        rollout: Option<pb::Rollout>,
        lock_message: String,
    ) -> Result<Response<HighstateStream>, Status> {
        let target = parse_target(target)?;
        let (timeout, rollout) = self.job_options(timeout_seconds, rollout)?;
        let job = highstate::prepare(
            &self.master,
            JobRequest {
                kind,
                target,
                timeout,
                rollout,
                caller: caller.to_string(),
                caller_role: caller.role,
                lock_message,
            },
        )
        .await?;
        let events = highstate::spawn(self.master.clone(), job);
        let stream = ReceiverStream::new(events).map(|event| Ok(fitted(event.into())));
        Ok(Response::new(Box::pin(stream)))
    }
}

pub(super) async fn highstate(
    fleet: &FleetService,
    request: Request<pb::HighstateRequest>,
) -> Result<Response<HighstateStream>, Status> {
    let identity = Caller::of(&request)?.identity()?.clone();
    let request = request.into_inner();
    if request.plan {
        fleet.plan_rate.admit(Instant::now())?;
    }
    fleet
        .start_job(
            &identity,
            JobKind::Highstate {
                dry_run: request.plan,
            },
            &request.target,
            request.timeout_seconds,
            request.rollout,
            request.lock_message,
        )
        .await
}

pub(super) async fn deploy(
    fleet: &FleetService,
    request: Request<pb::DeployRequest>,
) -> Result<Response<HighstateStream>, Status> {
    let identity = Caller::of(&request)?.identity()?.clone();
    let request = request.into_inner();
    if request.roles.is_empty() {
        return Err(Status::invalid_argument("roles: name at least one role"));
    }
    let roles = request
        .roles
        .iter()
        .map(|role| {
            RoleName::new(role.trim())
                .map_err(|err| Status::invalid_argument(format!("roles: {role:?} {err}")))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    let image = ImageRef::new(request.image)
        .map_err(|err| Status::invalid_argument(format!("image: {err}")))?;
    fleet
        .start_job(
            &identity,
            JobKind::Deploy { roles, image },
            &request.target,
            request.timeout_seconds,
            request.rollout,
            request.lock_message,
        )
        .await
}

pub(super) async fn rollback(
    fleet: &FleetService,
    request: Request<pb::RollbackRequest>,
) -> Result<Response<HighstateStream>, Status> {
    let identity = Caller::of(&request)?.identity()?.clone();
    let request = request.into_inner();
    let role = match request.role.trim() {
        "" => None,
        role => Some(
            RoleName::new(role).map_err(|err| Status::invalid_argument(format!("role: {err}")))?,
        ),
    };
    let kind = JobKind::Rollback {
        role,
        release: (request.to_release != 0).then_some(request.to_release),
    };
    fleet
        .start_job(
            &identity,
            kind,
            &request.target,
            request.timeout_seconds,
            request.rollout,
            request.lock_message,
        )
        .await
}

pub(super) async fn list_releases(
    fleet: &FleetService,
    _request: Request<pb::ListReleasesRequest>,
) -> Result<Response<pb::ListReleasesResponse>, Status> {
    let releases = fleet
        .master
        .store
        .releases()
        .await
        .map_err(store_failure)?
        .into_iter()
        .map(|r| pb::Release {
            id: r.id,
            job_id: r.job_id,
            caller: r.caller,
            created_at_unix_ms: r.created_at_unix_ms,
            pins: r
                .pins
                .into_iter()
                .flat_map(|(role, containers)| {
                    containers
                        .into_iter()
                        .map(move |(container, image)| pb::Pin {
                            role: role.to_string(),
                            container: container.into(),
                            image: image.into(),
                        })
                })
                .collect(),
        })
        .collect();
    Ok(Response::new(pb::ListReleasesResponse { releases }))
}

pub(super) async fn list_jobs(
    fleet: &FleetService,
    request: Request<pb::ListJobsRequest>,
) -> Result<Response<pb::ListJobsResponse>, Status> {
    let limit = match request.into_inner().limit {
        0 => 50,
        n @ 1..=1000 => n,
        _ => return Err(Status::invalid_argument("limit: at most 1000")),
    };
    let jobs = fleet
        .master
        .store
        .jobs(usize::try_from(limit).unwrap_or(usize::MAX))
        .await
        .map_err(store_failure)?
        .into_iter()
        .map(|job| job_to_wire(job, HostPage::None))
        .collect();
    Ok(Response::new(pb::ListJobsResponse { jobs }))
}

pub(super) async fn cancel_job(
    fleet: &FleetService,
    request: Request<pb::CancelJobRequest>,
) -> Result<Response<pb::CancelJobResponse>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    let id = JobId::new(request.into_inner().job_id)
        .map_err(|err| Status::invalid_argument(format!("job_id: {err}")))?;
    if !fleet.master.router.cancel(&id, &caller) {
        return Err(Status::not_found(format!("no job {id} is running")));
    }
    tracing::warn!(%caller, job.id = %id, "job cancelled");
    Ok(Response::new(pb::CancelJobResponse {}))
}

pub(super) async fn get_job(
    fleet: &FleetService,
    request: Request<pb::GetJobRequest>,
) -> Result<Response<pb::JobRecord>, Status> {
    let request = request.into_inner();
    let id = JobId::new(request.job_id)
        .map_err(|err| Status::invalid_argument(format!("job_id: {err}")))?;
    let hosts = HostPage::After {
        after: page_token(&request.page_token)?,
        size: page_size(request.page_size),
    };
    match fleet
        .master
        .store
        .job(id.to_string())
        .await
        .map_err(store_failure)?
    {
        Some(job) => Ok(Response::new(job_to_wire(job, hosts))),
        None => Err(Status::not_found(format!("no job {id}"))),
    }
}

/// `event` as it can be sent: a job's closing summary leaves out the host reports when they
/// would not fit one message (each came in its own `HostFinished` event).
pub(super) fn fitted(mut event: pb::HighstateEvent) -> pb::HighstateEvent {
    if let Some(pb::highstate_event::Kind::Summary(summary)) = &mut event.kind
        && prost::Message::encoded_len(summary) > MAX_PAGE_BYTES
    {
        summary.hosts.clear();
        summary.hosts_in_events = true;
    }
    event
}

/// A recorded job for the wire: its counts, and `hosts` of its host reports (in id order).
fn job_to_wire(job: JobRecord, hosts: HostPage) -> pb::JobRecord {
    let counts = job_counts(&job.summary);
    let summary = pb::HighstateEvent::from(HighstateEvent::Summary(job.summary));
    let mut summary = match summary.kind {
        Some(pb::highstate_event::Kind::Summary(summary)) => summary,
        _ => pb::JobSummary::default(),
    };
    let all_hosts = std::mem::take(&mut summary.hosts);
    let (page, next_page_token) = match hosts {
        HostPage::None => (vec![], String::new()),
        HostPage::After { after, size } => paged(
            all_hosts.into_iter().filter(|h| {
                after
                    .as_ref()
                    .is_none_or(|after| h.minion_id.as_str() > after.as_str())
            }),
            size,
            |host| &host.minion_id,
        ),
    };
    summary.hosts = page;
    pb::JobRecord {
        caller: job.caller,
        target: job.target,
        plan: job.plan,
        running: job.running,
        summary: Some(summary),
        counts: Some(counts),
        next_page_token,
    }
}

/// Which of a job's host reports to send.
enum HostPage {
    None,
    /// Up to `size` reports after host `after` (from the first without it).
    After {
        after: Option<MinionId>,
        size: usize,
    },
}

fn job_counts(summary: &JobSummary) -> pb::JobCounts {
    let mut counts = pb::JobCounts::default();
    for host in &summary.hosts {
        let count = match host.status {
            HostStatus::Unchanged => &mut counts.unchanged,
            HostStatus::Changed => &mut counts.changed,
            HostStatus::Failed => &mut counts.failed,
            HostStatus::Unreachable => &mut counts.unreachable,
            HostStatus::TimedOut => &mut counts.timed_out,
            HostStatus::Skipped => &mut counts.skipped,
            HostStatus::Interrupted => &mut counts.interrupted,
        };
        *count += 1;
    }
    counts
}
