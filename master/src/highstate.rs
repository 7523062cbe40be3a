//! Running a highstate: every targeted host converges to what the roles file assigns it, and
//! ends with exactly one final status.
//!
//! A job is prepared first (`prepare.rs`: every check, nothing sent on error), then run here by
//! a small driver around `job_run.rs`, and finished (`finish.rs`: record, release, lock).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use brine_common::fleet_event::FleetEventKind;
use brine_common::names::MinionId;
use brine_common::outcome::{HighstateEvent, HostReport, JobId, JobSummary};
use brine_common::spec::DesiredState;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::job::JobType;
use crate::job_feed::{Feed, Publisher};
use crate::job_run::{JobPlan, JobRun, Step};
use crate::link::{Command, JobEvent};
use crate::release::{Pins, Release};
use crate::rollout::Rollout;
use crate::state::{Master, now_unix_ms};
use crate::store::{JobOwner, JobPlanRecord, JobRecord, RequestRecord};

mod finish;
mod prepare;
#[cfg(test)]
mod tests;

use finish::{FINISH_RETRY, Finishing};
pub(crate) use prepare::new_job_id;
pub use prepare::{
    HighstateError, JobRequest, MIN_FREE_BYTES, describe_lock, is_targeted, prepare,
};

/// How many minion messages may wait for the job loop.
const JOB_QUEUE: usize = 1024;
/// How long a command may wait for room in a minion's queue before the host counts unreachable.
const DISPATCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A highstate that passed every check and is ready to run.
#[derive(Debug)]
pub struct PreparedJob {
    pub job_id: JobId,
    job_type: JobType,
    /// The target expression as given (empty for every host).
    target: String,
    /// Every host that gets a command, with images pinned to digests.
    desired: BTreeMap<MinionId, DesiredState>,
    /// What the job deploys, by role: the next release if every host succeeds.
    deployed: Pins,
    /// The release in force when the job started: what an auto-revert returns to.
    previous_release: Option<Release>,
    /// Hosts that fail before any command: an image of theirs does not resolve.
    blocked: BTreeMap<MinionId, HostReport>,
    /// How long each batch may take.
    timeout: Duration,
    rollout: Rollout,
    caller: String,
    plan: bool,
    /// Time spent resolving tags to digests.
    resolve_ms: u64,
    /// Hosts the target picked that were left out because they are not accepted.
    not_accepted: u32,
    /// The caller's request id, if it gave one.
    request: Option<RequestRecord>,
}

impl PreparedJob {
    /// What another master needs to run the job on if this one stops.
    fn to_record(&self) -> JobPlanRecord {
        JobPlanRecord {
            job_id: self.job_id.clone(),
            job_type: self.job_type,
            target: self.target.clone(),
            rollout: self.rollout.clone(),
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            plan: self.plan,
            desired: self.desired.clone(),
            blocked: self.blocked.clone(),
            deployed: self.deployed.clone(),
            previous_release: self.previous_release.clone(),
            caller: self.caller.clone(),
            resolve_ms: self.resolve_ms,
            not_accepted: self.not_accepted,
            request: self.request.clone(),
        }
    }

    fn from_record(plan: JobPlanRecord) -> Self {
        Self {
            job_id: plan.job_id,
            job_type: plan.job_type,
            target: plan.target,
            desired: plan.desired,
            deployed: plan.deployed,
            previous_release: plan.previous_release,
            blocked: plan.blocked,
            timeout: Duration::from_millis(plan.timeout_ms),
            rollout: plan.rollout,
            caller: plan.caller,
            plan: plan.plan,
            resolve_ms: plan.resolve_ms,
            not_accepted: plan.not_accepted,
            request: plan.request,
        }
    }
}

/// Where a job run starts from.
struct Start {
    started_at_unix_ms: i64,
    /// The final reports recorded before (a job taken over from another master).
    done: BTreeMap<MinionId, HostReport>,
    /// The lease the job is held under, when masters share the store.
    lease: Option<i64>,
}

/// Runs a prepared job in the background; its events go to the returned feed, which any
/// number of callers may follow. The job runs to the end and is recorded whoever follows it.
pub fn spawn(master: Arc<Master>, job: PreparedJob) -> Arc<Feed> {
    let (feed, publisher) = master.feeds.open(job.job_id.clone());
    let span = tracing::info_span!("highstate", job.id = %job.job_id);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let start = Start {
                started_at_unix_ms: now_unix_ms(),
                done: BTreeMap::new(),
                lease: hold(&master, &job).await,
            };
            run(master, job, publisher, start).await;
        },
        span,
    ));
    feed
}

/// Runs on a job another master started and stopped running, which this one claimed under
/// `lease`: from the reports in `record`, with the plan the job started with.
pub fn resume(master: Arc<Master>, plan: JobPlanRecord, record: JobRecord, lease: i64) {
    let job = PreparedJob::from_record(plan);
    let (_, publisher) = master.feeds.open(job.job_id.clone());
    let span = tracing::info_span!("highstate", job.id = %job.job_id);
    let start = Start {
        started_at_unix_ms: record.summary.started_at_unix_ms,
        done: record
            .summary
            .hosts
            .into_iter()
            .map(|report| (report.minion_id.clone(), report))
            .collect(),
        lease: Some(lease),
    };
    tokio::spawn(tracing::Instrument::instrument(
        run(master, job, publisher, start),
        span,
    ));
}

/// Claims a new job under this master's lease, with its plan, when masters share the store, so
/// another master can run it on if this one stops. Without a lease (the store out of reach) the
/// job runs unclaimed: nobody else takes it over.
async fn hold(master: &Master, job: &PreparedJob) -> Option<i64> {
    if !master.config.store_is_shared() {
        return None;
    }
    // A master whose lease ran out takes a new one within a second or two of reaching the
    // store again.
    let waited = Instant::now();
    let lease = loop {
        match master.fence.current() {
            Some(lease) => break lease,
            None if waited.elapsed() < crate::takeover::LEASE_TTL => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => {
                tracing::warn!(
                    "this master holds no lease: no other master can take this job over"
                );
                return None;
            }
        }
    };
    let owner = JobOwner {
        master: master.config.name.clone(),
        lease,
    };
    match master
        .store
        .claim_job(job.job_id.clone(), owner, Some(job.to_record()))
        .await
    {
        Ok(true) => Some(lease),
        Ok(false) => {
            tracing::error!("another master holds this new job's id; it runs unclaimed");
            None
        }
        Err(err) => {
            tracing::warn!(
                "cannot keep the job's plan for the other masters ({err}); no other master can take it over"
            );
            None
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn run(master: Arc<Master>, job: PreparedJob, caller: Publisher, start: Start) {
    let Start {
        started_at_unix_ms,
        done,
        lease,
    } = start;
    // A job held under a lease acts only while this master holds it.
    let holds = || lease.is_none_or(|lease| master.fence.holds(lease));
    let mut run = JobRun::resume(
        JobPlan {
            job_id: job.job_id.clone(),
            rollout: job.rollout.clone(),
            timeout: job.timeout,
            plan: job.plan,
            desired: job.desired,
            blocked: job.blocked,
            previous_release: job.previous_release,
        },
        done,
    );
    let targets = run.targets().to_vec();
    tracing::info!(hosts = targets.len(), caller = %job.caller, batch = %job.rollout.batch, "highstate started");
    caller.publish(HighstateEvent::Started {
        job_id: job.job_id.clone(),
        targets: targets.clone(),
        not_accepted: job.not_accepted,
    });
    master.events.publish(FleetEventKind::JobStarted {
        job_id: job.job_id.clone(),
        job_type: job.job_type.as_str().to_owned(),
        caller: job.caller.clone(),
        targets: targets.clone(),
    });

    let (job_events, mut inbox) = mpsc::channel(JOB_QUEUE);
    master.router.register(job.job_id.clone(), job_events);
    let cancel = master.router.cancellable(job.job_id.clone());
    master.activity.job_started(&job.job_id);

    // The job's record, with `reports` so far; `finished_at_unix_ms` 0 while it runs.
    let record_of = |reports: &BTreeMap<MinionId, HostReport>,
                     finished_at_unix_ms: i64,
                     cancelled_by: Option<String>| JobRecord {
        summary: JobSummary {
            job_id: job.job_id.clone(),
            hosts: reports.values().cloned().collect(),
            started_at_unix_ms,
            finished_at_unix_ms,
            resolve_ms: job.resolve_ms,
            cancelled_by,
        },
        target: job.target.clone(),
        caller: job.caller.clone(),
        plan: job.plan,
        running: finished_at_unix_ms == 0,
        targets: targets.clone(),
        request: job.request.clone(),
        master: Some(master.config.name.clone()),
        lease,
        kind: Some(job.job_type),
        command: None,
    };
    // Recorded as it goes, so a master that stops mid-job can tell, when it starts again, which
    // hosts never reported (their reports are recorded at the end of each batch).
    let record_progress = |reports: &BTreeMap<MinionId, HostReport>| {
        let record = record_of(reports, 0, None);
        let store = master.store.clone();
        async move {
            if let Err(err) = store.record_job_progress(record).await {
                tracing::warn!("cannot record the job's progress: {err}");
            }
        }
    };
    record_progress(run.reports()).await;

    // The driver: takes the steps the job's state machine decides, and feeds it what happens.
    let mut steps: VecDeque<Step> = run.start(Instant::now()).into();
    let mut routed = vec![];
    let mut fenced = false;
    while !run.is_done() || !steps.is_empty() {
        if !holds() {
            fenced = true;
            break;
        }
        while let Some(step) = steps.pop_front() {
            match step {
                Step::Send {
                    job_id,
                    hosts,
                    plan,
                    valid_for,
                    batch,
                } => {
                    match batch {
                        Some((index, of)) => {
                            tracing::info!(batch = index, of, hosts = hosts.len(), "batch started");
                        }
                        None => {
                            tracing::info!(hosts = hosts.len(), "auto-revert");
                            // Its results come back on the job's inbox under their own job id.
                            if let Some(sender) = master.router.sender_of(&job.job_id) {
                                master.router.register(job_id.clone(), sender);
                                routed.push(job_id.clone());
                            }
                        }
                    }
                    let expires_at_unix_ms = expires_after(valid_for);
                    for (id, desired) in hosts {
                        let command = Command::Apply {
                            job_id: job_id.clone(),
                            expires_at_unix_ms,
                            desired,
                            plan,
                        };
                        if let Err(reason) = dispatch(&master, &id, command).await {
                            steps.extend(run.undeliverable(id, &reason, Instant::now()));
                        }
                    }
                }
                Step::Prefetch {
                    job_id,
                    hosts,
                    valid_for,
                } => {
                    let expires_at_unix_ms = expires_after(valid_for);
                    tracing::debug!(hosts = hosts.len(), "fetching images ahead");
                    for (id, images) in hosts {
                        let command = Command::Prefetch {
                            job_id: job_id.clone(),
                            expires_at_unix_ms,
                            images,
                        };
                        // Best effort: a host that cannot be asked pulls in its own turn.
                        if !try_dispatch(&master, &id, command).await {
                            steps.extend(run.prefetch_unanswered(&id, Instant::now()));
                        }
                    }
                }
                Step::Finished(report) => {
                    // A host's error text is its own: recorded with the job, not written to
                    // the master's log.
                    tracing::info!(minion.id = %report.minion_id, status = %report.status, "host finished");
                    master.events.publish(FleetEventKind::HostReported {
                        job_id: job.job_id.clone(),
                        minion_id: report.minion_id.clone(),
                        status: report.status,
                        error: report.error.clone(),
                    });
                    caller.publish(HighstateEvent::HostFinished(report));
                }
                Step::BatchOver => record_progress(run.reports()).await,
                Step::Done => {}
            }
        }
        if run.is_done() {
            break;
        }
        let more = tokio::select! {
            Some(event) = inbox.recv() => match event {
                JobEvent::Progress(id, progress) => {
                    if run.shows_progress_of(&id) {
                        caller.publish(HighstateEvent::Progress {
                            minion_id: id,
                            progress,
                        });
                    }
                    vec![]
                }
                JobEvent::Result(id, result) => run.result(id, result, Instant::now()),
                JobEvent::Prefetched(id, outcome) => run.prefetched(&id, outcome, Instant::now()),
                JobEvent::Undeliverable { host, prefetch: true, .. } => {
                    run.prefetch_unanswered(&host, Instant::now())
                }
                JobEvent::Undeliverable { host, prefetch: false, reason } => {
                    run.undeliverable(host, &reason, Instant::now())
                }
                JobEvent::LinkLost(id) => {
                    // The minion keeps working and reports on its next link.
                    run.link_lost(&id, Instant::now());
                    vec![]
                }
            },
            () = sleep_until_some(run.wake_at()) => run.time_passed(Instant::now()),
            () = cancel.cancelled(), if run.cancelled_by().is_none() => {
                let by = cancel.by().unwrap_or("someone").to_owned();
                run.cancel(&by, Instant::now())
            }
        };
        steps.extend(more);
    }
    master.router.unregister(&job.job_id);
    for job_id in routed {
        master.router.unregister(&job_id);
    }
    master.router.forget_cancel(&job.job_id);
    if fenced {
        // Another master may run it by now: this one sends and records nothing more of it.
        tracing::error!(
            "this master lost its lease: the job stops here, and another master takes it over"
        );
        master.feeds.remove(&job.job_id);
        return;
    }
    let record = record_of(
        run.reports(),
        now_unix_ms(),
        run.cancelled_by().map(str::to_owned),
    );
    let summary = record.summary.clone();
    log_summary(&summary);
    master.activity.job_finished(&summary);
    master.metrics.job_finished(job.job_type, &summary);
    let release =
        (summary.is_success() && !job.plan).then(|| (job.caller.clone(), job.deployed.clone()));
    // A plan takes no lock.
    let mut finishing = Finishing::new(record, release, !job.plan);
    if let Err(err) = finishing.advance(&master).await {
        tracing::error!(
            "cannot record the finished job ({err}); trying again every {:?} until it is \
             recorded, and the fleet stays locked meanwhile",
            FINISH_RETRY
        );
        let master = master.clone();
        let job_id = job.job_id.clone();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                loop {
                    tokio::time::sleep(FINISH_RETRY).await;
                    if finishing.advance(&master).await.is_ok() {
                        tracing::info!("the finished job is recorded now");
                        master.feeds.remove(&job_id);
                        break;
                    }
                }
            },
            tracing::Span::current(),
        ));
    } else {
        // Whoever follows the job from now on reads its record.
        master.feeds.remove(&job.job_id);
    }
    // After the record (unless the disk is full), so that a hook that reads the job finds it.
    master.events.publish(FleetEventKind::job_finished(
        job.job_type.as_str(),
        &summary,
    ));
    caller.publish(HighstateEvent::Summary(summary));
}

/// Hands `command` to `host`'s link, here or through the master that holds it; why not, if it
/// cannot.
async fn dispatch(master: &Master, host: &MinionId, command: Command) -> Result<(), String> {
    match master.links.get(host) {
        Some(link) => link
            .commands
            .send_timeout(command, DISPATCH_TIMEOUT)
            .await
            .map_err(|_| "the minion's link closed or is stalled".to_owned()),
        None => crate::relay::send_through_another(master, host, command).await,
    }
}

/// When a command sent now that is valid for `valid_for` expires, by this master's clock.
fn expires_after(valid_for: Duration) -> i64 {
    now_unix_ms().saturating_add(i64::try_from(valid_for.as_millis()).unwrap_or(i64::MAX))
}

/// Hands `command` to `host`'s link if it has room now (a fetch ahead never holds up the job),
/// or leaves it for the master that holds the link; whether it could.
async fn try_dispatch(master: &Master, host: &MinionId, command: Command) -> bool {
    match master.links.get(host) {
        Some(link) => link.commands.try_send(command).is_ok(),
        None => crate::relay::send_through_another(master, host, command)
            .await
            .is_ok(),
    }
}

fn log_summary(summary: &JobSummary) {
    let statuses: BTreeSet<&str> = summary.hosts.iter().map(|h| h.status.as_str()).collect();
    tracing::info!(
        hosts = summary.hosts.len(),
        statuses = ?statuses,
        success = summary.is_success(),
        "highstate finished"
    );
}
