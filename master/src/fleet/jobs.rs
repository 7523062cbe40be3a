//! The job RPCs: highstate, deploy and rollback (turned into a `JobKind`, started or attached to
//! by request id, and streamed), following a job (`WatchJob`), and the recorded jobs (list, get
//! with its host reports in pages, cancel). It is separate because jobs are the service's
//! largest concern.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brine_common::identity::CertIdentity;
use brine_common::names::{MinionId, RoleName};
use brine_common::outcome::{HighstateEvent, JobId};
use brine_common::spec::ImageRef;
use brine_proto::errors::{failure, invalid};
use brine_proto::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status};

use super::job_options::JobOptions;
use super::paging::{MAX_PAGE_BYTES, page_size, page_token, paged};
use super::{FleetService, JobStream, store_failure};
use crate::auth::Caller;
use crate::highstate::{self, HighstateError, JobRequest, PreparedJob};
use crate::job::JobKind;
use crate::request_ids::{Claim, Ticket};
use crate::state::Master;
use crate::store::{JobRecord, RequestRecord};

/// Jobs in a page of `ListJobs` unless the caller asks for fewer.
const DEFAULT_JOBS_PAGE: usize = 50;
/// How often a caller waiting for the fleet lock tries again.
const LOCK_RETRY: Duration = Duration::from_secs(1);
/// How long a repeated call waits at a time for the first call with its request id to start
/// its job, before it looks again.
const REQUEST_WAIT: Duration = Duration::from_secs(1);
/// How long a repeated call waits for the first call with its request id to start its job
/// (well within the server's deadline for an answer) before it asks its caller to try again.
const MAX_REQUEST_WAIT: Duration = Duration::from_secs(60);
/// How many replayed events of a recorded job may wait for a slow caller.
const REPLAY_QUEUE: usize = 256;

/// A job's events for one caller; a job that waited for the lock and was then refused ends its
/// stream with that refusal instead.
type Events = Pin<Box<dyn Stream<Item = Result<HighstateEvent, Status>> + Send>>;

/// A job's events for one caller, and whether the caller attached to a job it did not start.
struct Followed {
    events: Events,
    attached: bool,
}

impl Followed {
    fn new(events: mpsc::Receiver<HighstateEvent>, attached: bool) -> Self {
        Self {
            events: Box::pin(ReceiverStream::new(events).map(Ok)),
            attached,
        }
    }

    /// The events as one RPC streams them, each wrapped in its response message.
    fn respond<T: Send + 'static>(self, wrap: fn(pb::JobEvent) -> T) -> Response<JobStream<T>> {
        let attached = self.attached;
        let stream = self.events.map(move |event| {
            let mut event = fitted(event?.into());
            if let Some(pb::job_event::Kind::Started(started)) = &mut event.kind {
                started.attached = attached;
            }
            Ok(wrap(event))
        });
        Response::new(Box::pin(stream))
    }
}

impl FleetService {
    /// Starts a job of `kind` with `options`, or attaches to the job an earlier call with the
    /// same request id started, and follows it.
    async fn start_job(
        &self,
        caller: &CertIdentity,
        kind: JobKind,
        options: JobOptions,
    ) -> Result<Followed, Status> {
        let caller_name = caller.to_string();
        let Some(request_id) = options.request_id.clone() else {
            return self
                .prepare_and_run(caller, kind, options, None, None)
                .await;
        };
        let fingerprint = options.fingerprint(&caller_name, &kind);
        let give_up_at = tokio::time::Instant::now() + MAX_REQUEST_WAIT;
        loop {
            match self.master.requests.claim(&request_id, &fingerprint) {
                Claim::Started(job_id) => return self.attach(&job_id).await,
                Claim::Conflict(job_id) => return Err(reused(&request_id, job_id)),
                Claim::Wait(_) if tokio::time::Instant::now() >= give_up_at => {
                    return Err(failure(
                        Code::Unavailable,
                        pb::ErrorReason::RequestPending,
                        format!(
                            "a call with request id {request_id} is still preparing its job \
                             (waiting for the fleet lock); try again"
                        ),
                        [("request_id", request_id.clone())],
                    ));
                }
                Claim::Wait(ready) => {
                    // Woken when the first call started its job or gave up; looks again
                    // anyway after a while, in case the wake-up came before the wait.
                    let _ = tokio::time::timeout(REQUEST_WAIT, ready.notified()).await;
                }
                Claim::First(ticket) => {
                    // A job started before the master restarted is known to the store only.
                    let recorded = self
                        .master
                        .store
                        .job_with_request(request_id.clone())
                        .await
                        .map_err(store_failure)?;
                    if let Some(job) = recorded {
                        let job_id = job.summary.job_id.clone();
                        let same = job
                            .request
                            .as_ref()
                            .is_some_and(|r| r.fingerprint == fingerprint);
                        if !same {
                            return Err(reused(&request_id, Some(job_id)));
                        }
                        ticket.started(job_id.clone());
                        return self.attach(&job_id).await;
                    }
                    let request = RequestRecord {
                        id: request_id.clone(),
                        fingerprint: fingerprint.clone(),
                    };
                    return self
                        .prepare_and_run(caller, kind, options, Some(request), Some(ticket))
                        .await;
                }
            }
        }
    }

    /// Prepares a job and runs it. While the fleet is locked, it tries again every second for
    /// up to the options' `wait_for_lock`: then the caller gets its stream at once (the wait may
    /// outlast the server's deadline for an answer), and a refusal after the wait ends the
    /// stream. `ticket` is the caller's hold on its request id, released if the job is refused.
    async fn prepare_and_run(
        &self,
        caller: &CertIdentity,
        kind: JobKind,
        options: JobOptions,
        request: Option<RequestRecord>,
        ticket: Option<Ticket>,
    ) -> Result<Followed, Status> {
        let wait = options.wait_for_lock;
        let request = JobRequest {
            kind,
            target: options.target,
            timeout: options
                .batch_timeout
                .unwrap_or(self.master.config.highstate_timeout),
            rollout: options.rollout,
            caller: caller.to_string(),
            caller_role: caller.role,
            lock_message: options.lock_message,
            request,
        };
        match highstate::prepare(&self.master, request.clone()).await {
            Ok(job) => Ok(run(self.master.clone(), job, ticket)),
            Err(HighstateError::Locked(_)) if !wait.is_zero() => Ok(Followed {
                events: wait_for_lock(self.master.clone(), request, wait, ticket),
                attached: false,
            }),
            Err(err) => Err(err.into()),
        }
    }

    /// Follows job `job_id` from its start: live while it runs, from its record once written.
    async fn attach(&self, job_id: &JobId) -> Result<Followed, Status> {
        if let Some(feed) = self.master.feeds.get(job_id) {
            return Ok(Followed::new(feed.follow(), true));
        }
        let job = self
            .master
            .store
            .job(job_id.to_string())
            .await
            .map_err(store_failure)?
            .ok_or_else(|| job_not_found(job_id))?;
        Ok(Followed::new(replay(job), true))
    }
}

/// Runs a prepared job; the caller follows it from its start.
fn run(master: Arc<Master>, job: PreparedJob, ticket: Option<Ticket>) -> Followed {
    if let Some(ticket) = ticket {
        ticket.started(job.job_id.clone());
    }
    Followed::new(highstate::spawn(master, job).follow(), false)
}

/// Waits up to `wait` for the fleet lock, trying to prepare the job every second, then runs it;
/// a caller that hangs up meanwhile stops the wait, and no job starts.
fn wait_for_lock(
    master: Arc<Master>,
    request: JobRequest,
    wait: Duration,
    ticket: Option<Ticket>,
) -> Events {
    let (sender, receiver) = mpsc::channel(REPLAY_QUEUE);
    tokio::spawn(async move {
        let give_up_at = tokio::time::Instant::now() + wait;
        let prepared = loop {
            tokio::select! {
                () = tokio::time::sleep_until(give_up_at.min(tokio::time::Instant::now() + LOCK_RETRY)) => {}
                () = sender.closed() => return,
            }
            match highstate::prepare(&master, request.clone()).await {
                Err(HighstateError::Locked(_)) if tokio::time::Instant::now() < give_up_at => {}
                prepared => break prepared,
            }
        };
        let mut events = match prepared {
            Ok(job) => run(master, job, ticket).events,
            Err(err) => {
                let _ = sender.send(Err(err.into())).await;
                return;
            }
        };
        while let Some(event) = events.next().await {
            if sender.send(event).await.is_err() {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}

/// A recorded job's events, as its callers saw them: its start, each host's final report, and
/// its summary.
fn replay(job: JobRecord) -> mpsc::Receiver<HighstateEvent> {
    let (events, receiver) = mpsc::channel(REPLAY_QUEUE);
    tokio::spawn(async move {
        let started = HighstateEvent::Started {
            job_id: job.summary.job_id.clone(),
            targets: job.targets.clone(),
            not_accepted: 0,
        };
        let reports = job
            .summary
            .hosts
            .iter()
            .cloned()
            .map(HighstateEvent::HostFinished);
        for event in std::iter::once(started)
            .chain(reports)
            .chain(std::iter::once(HighstateEvent::Summary(
                job.summary.clone(),
            )))
        {
            if events.send(event).await.is_err() {
                return;
            }
        }
    });
    receiver
}

fn reused(request_id: &str, job_id: Option<JobId>) -> Status {
    let job_id = job_id.map(String::from).unwrap_or_default();
    failure(
        Code::AlreadyExists,
        pb::ErrorReason::RequestIdReused,
        format!(
            "request id {request_id} was used for a different request{}; use a new id for a new \
             job",
            if job_id.is_empty() {
                String::new()
            } else {
                format!(" (job {job_id})")
            }
        ),
        [("job_id", job_id)],
    )
}

fn job_not_found(job_id: &JobId) -> Status {
    failure(
        Code::NotFound,
        pb::ErrorReason::JobNotFound,
        format!("no job {job_id}"),
        [("job_id", job_id.to_string())],
    )
}

pub(super) async fn highstate(
    fleet: &FleetService,
    request: Request<pb::HighstateRequest>,
) -> Result<Response<JobStream<pb::HighstateResponse>>, Status> {
    let identity = Caller::of(&request)?.identity()?.clone();
    let request = request.into_inner();
    let options = JobOptions::from_wire(request.options)?;
    if request.plan {
        fleet.plan_rate.admit(Instant::now())?;
    }
    let kind = JobKind::Highstate { plan: request.plan };
    let followed = fleet.start_job(&identity, kind, options).await?;
    Ok(followed.respond(|event| pb::HighstateResponse { event: Some(event) }))
}

pub(super) async fn deploy(
    fleet: &FleetService,
    request: Request<pb::DeployRequest>,
) -> Result<Response<JobStream<pb::DeployResponse>>, Status> {
    let identity = Caller::of(&request)?.identity()?.clone();
    let request = request.into_inner();
    if request.roles.is_empty() {
        return Err(invalid("roles", "name at least one role"));
    }
    let roles = request
        .roles
        .iter()
        .map(|role| {
            RoleName::new(role.trim()).map_err(|err| invalid("roles", format!("{role:?} {err}")))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    let image = ImageRef::new(request.image).map_err(|err| invalid("image", err))?;
    let options = JobOptions::from_wire(request.options)?;
    let followed = fleet
        .start_job(&identity, JobKind::Deploy { roles, image }, options)
        .await?;
    Ok(followed.respond(|event| pb::DeployResponse { event: Some(event) }))
}

pub(super) async fn rollback(
    fleet: &FleetService,
    request: Request<pb::RollbackRequest>,
) -> Result<Response<JobStream<pb::RollbackResponse>>, Status> {
    let identity = Caller::of(&request)?.identity()?.clone();
    let request = request.into_inner();
    let role = match request.role.trim() {
        "" => None,
        role => Some(RoleName::new(role).map_err(|err| invalid("role", err))?),
    };
    if request.release_id == Some(0) {
        return Err(invalid(
            "release_id",
            "releases are numbered from 1; leave it unset for the newest earlier one",
        ));
    }
    let kind = JobKind::Rollback {
        role,
        release: request.release_id,
    };
    let options = JobOptions::from_wire(request.options)?;
    let followed = fleet.start_job(&identity, kind, options).await?;
    Ok(followed.respond(|event| pb::RollbackResponse { event: Some(event) }))
}

pub(super) async fn watch_job(
    fleet: &FleetService,
    request: Request<pb::WatchJobRequest>,
) -> Result<Response<JobStream<pb::WatchJobResponse>>, Status> {
    let id = JobId::new(request.into_inner().job_id).map_err(|err| invalid("job_id", err))?;
    let mut followed = fleet.attach(&id).await?;
    // Watching is not a repeated call: its start is not marked as an attachment.
    followed.attached = false;
    Ok(followed.respond(|event| pb::WatchJobResponse { event: Some(event) }))
}

pub(super) async fn list_jobs(
    fleet: &FleetService,
    request: Request<pb::ListJobsRequest>,
) -> Result<Response<pb::ListJobsResponse>, Status> {
    let request = request.into_inner();
    let size = match request.page_size {
        0 => DEFAULT_JOBS_PAGE,
        size => page_size(size),
    };
    let before = match request.page_token.as_str() {
        "" => None,
        token => Some(
            JobId::new(token)
                .map_err(|err| invalid("page_token", format!("not one this master gave: {err}")))?
                .to_string(),
        ),
    };
    let full = matches!(request.view(), pb::JobView::Full);
    // One more than the page, to tell whether another page follows.
    let records = fleet
        .master
        .store
        .jobs_before(before, size + 1)
        .await
        .map_err(store_failure)?;
    let jobs = records.into_iter().map(|job| {
        let hosts = if full { HostPage::All } else { HostPage::None };
        job_to_wire(job, hosts).0
    });
    let (jobs, next_page_token) = paged(jobs, size, |job| {
        job.summary
            .as_ref()
            .map(|summary| summary.job_id.clone())
            .unwrap_or_default()
    });
    Ok(Response::new(pb::ListJobsResponse {
        jobs,
        next_page_token,
    }))
}

pub(super) async fn cancel_job(
    fleet: &FleetService,
    request: Request<pb::CancelJobRequest>,
) -> Result<Response<pb::CancelJobResponse>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    let id = JobId::new(request.into_inner().job_id).map_err(|err| invalid("job_id", err))?;
    if !fleet.master.router.cancel(&id, &caller) {
        return Err(failure(
            Code::NotFound,
            pb::ErrorReason::JobNotRunning,
            format!("no job {id} is running"),
            [("job_id", id.to_string())],
        ));
    }
    tracing::warn!(%caller, job.id = %id, "job cancelled");
    Ok(Response::new(pb::CancelJobResponse {}))
}

pub(super) async fn get_job(
    fleet: &FleetService,
    request: Request<pb::GetJobRequest>,
) -> Result<Response<pb::GetJobResponse>, Status> {
    let request = request.into_inner();
    let id = JobId::new(request.job_id).map_err(|err| invalid("job_id", err))?;
    let hosts = HostPage::After {
        after: page_token(&request.page_token)?,
        size: page_size(request.page_size),
    };
    let job = fleet
        .master
        .store
        .job(id.to_string())
        .await
        .map_err(store_failure)?
        .ok_or_else(|| job_not_found(&id))?;
    let (job, next_page_token) = job_to_wire(job, hosts);
    Ok(Response::new(pb::GetJobResponse {
        job: Some(job),
        next_page_token,
    }))
}

/// `event` as it can be sent: a job's closing summary leaves out the host reports when they
/// would not fit one message (each came in its own `HostFinished` event).
pub(super) fn fitted(mut event: pb::JobEvent) -> pb::JobEvent {
    if let Some(pb::job_event::Kind::Summary(summary)) = &mut event.kind
        && prost::Message::encoded_len(summary) > MAX_PAGE_BYTES
    {
        summary.hosts.clear();
        summary.hosts_in_events = true;
    }
    event
}

/// A recorded job for the wire, with `hosts` of its host reports (in id order), and the token
/// of the next page of reports.
fn job_to_wire(job: JobRecord, hosts: HostPage) -> (pb::Job, String) {
    let mut summary = pb::JobSummary::from(job.summary);
    let all_hosts = std::mem::take(&mut summary.hosts);
    let (page, next_page_token) = match hosts {
        HostPage::None => (vec![], String::new()),
        HostPage::All => (all_hosts, String::new()),
        HostPage::After { after, size } => paged(
            all_hosts.into_iter().filter(|h| {
                after
                    .as_ref()
                    .is_none_or(|after| h.minion_id.as_str() > after.as_str())
            }),
            size,
            |host| host.minion_id.clone(),
        ),
    };
    summary.hosts = page;
    let job = pb::Job {
        caller: job.caller,
        target: job.target,
        plan: job.plan,
        running: job.running,
        summary: Some(summary),
        request_id: job.request.map(|r| r.id).unwrap_or_default(),
        kind: job.kind.map(|k| k.as_str().to_owned()).unwrap_or_default(),
        command: job.command.unwrap_or_default(),
    };
    (job, next_page_token)
}

/// Which of a job's host reports to send.
enum HostPage {
    None,
    All,
    /// Up to `size` reports after host `after` (from the first without it).
    After {
        after: Option<MinionId>,
        size: usize,
    },
}
