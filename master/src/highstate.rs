//! Running a highstate: every targeted host converges to what the roles file assigns it, and
//! ends with exactly one final status.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use brine_common::identity::CertRole;
use brine_common::names::{MinionId, RoleName};
use brine_common::outcome::{
    ContainerAction, ContainerResult, HighstateEvent, HostReport, HostStatus, JobId, JobSummary,
    Timings,
};
use brine_common::roles_file::RolesFile;
use brine_common::spec::{ContainerSpec, DesiredState, ImageRef};
use brine_common::target::{HostView, Target};
use futures::future::join_all;
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::job::{JobImages, JobKind, RollbackError};
use crate::job_run::{JobPlan, JobRun, Step};
use crate::link::{Command, JobEvent};
use crate::registry::{ResolveError, Resolver};
use crate::release::{Pins, Release, next_pins, pins_of};
use crate::rollout::Rollout;
use crate::state::{Master, load_roles, now_unix_ms};
use crate::store::{Approval, JobRecord, LockRecord, MinionRecord};

/// How many events may wait for a slow caller; progress beyond that is dropped, final statuses
/// are not.
const CALLER_QUEUE: usize = 256;
/// How many minion messages may wait for the job loop.
const JOB_QUEUE: usize = 1024;
/// How long a command may wait for room in a minion's queue before the host counts unreachable.
const DISPATCH_TIMEOUT: Duration = Duration::from_secs(5);

/// How much free space a job needs where the store is: its record, for 10,000 hosts, and room
/// for the store to grow.
pub const MIN_FREE_BYTES: u64 = 16 * 1024 * 1024;

/// `bytes` in MiB, KiB or bytes, for people.
fn human_bytes(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} bytes"),
        1024..1_048_576 => format!("{} KiB", bytes / 1024),
        _ => format!("{} MiB", bytes / 1_048_576),
    }
}

/// How much longer than its longest possible run a job's lock lasts.
const LOCK_MARGIN: Duration = Duration::from_secs(60);

/// Says who holds the fleet lock, why, and what to do about it.
pub fn describe_lock(lock: &LockRecord) -> String {
    let since = humantime::format_rfc3339_seconds(unix_ms_to_time(lock.acquired_at_unix_ms));
    let left = Duration::from_millis(
        u64::try_from(lock.expires_at_unix_ms.saturating_sub(now_unix_ms())).unwrap_or(0),
    );
    format!(
        "the fleet is locked by {} since {since}: {:?}; it expires in {} unless released with \
         `brine-master lock release`",
        lock.holder,
        lock.message,
        humantime::format_duration(Duration::from_secs(left.as_secs())),
    )
}

fn unix_ms_to_time(ms: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Why a highstate could not start. Nothing was sent to any host.
#[derive(Debug, thiserror::Error)]
pub enum HighstateError {
    #[error(transparent)]
    Roles(#[from] crate::state::RolesError),
    #[error("no enrolled minion matches {0:?}")]
    NoTargets(String),
    #[error("roles: {0} is not declared in the roles file")]
    UnknownRole(RoleName),
    #[error(
        "role {role} may be deployed from {} only, not from {repository}; to allow it, add it to \
         deploy_from in [roles.{role}] of the roles file",
        allowed.iter().cloned().collect::<Vec<_>>().join(", ")
    )]
    NotDeployable {
        role: RoleName,
        repository: String,
        allowed: BTreeSet<String>,
    },
    #[error(
        "this job could hold the fleet lock for {}, and a ci certificate may hold it for {} at \
         most (ci_lock_limit in master.toml): lower --timeout, --batch-wait, or use bigger batches",
        humantime::format_duration(*.longest),
        humantime::format_duration(*.limit)
    )]
    TooLongForCi { longest: Duration, limit: Duration },
    #[error(
        "the roles file gives some hosts an impossible set of containers; nothing was sent:\n{0}"
    )]
    ImpossibleHosts(String),
    #[error("cannot resolve image tags to digests; nothing was sent: {0}")]
    Registry(ResolveError),
    #[error("{}", describe_lock(.0))]
    Locked(LockRecord),
    #[error(
        "the master's disk is full: {} free where its data directory is, less than the {} a job \
         needs to be recorded; nothing was sent. Free some space and run it again",
        human_bytes(*.available_bytes),
        human_bytes(MIN_FREE_BYTES)
    )]
    DiskFull { available_bytes: u64 },
    #[error(transparent)]
    Rollback(#[from] RollbackError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A highstate that passed every check and is ready to run.
#[derive(Debug)]
pub struct PreparedJob {
    pub job_id: JobId,
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
}

/// What a caller asks of a highstate.
#[derive(Debug)]
pub struct JobRequest {
    pub kind: JobKind,
    /// Which hosts; `None` for every enrolled host.
    pub target: Option<Target>,
    /// How long each batch may take.
    pub timeout: Duration,
    pub rollout: Rollout,
    /// The certificate identity of the caller.
    pub caller: String,
    /// The caller's certificate role: a `ci` caller may hold the lock for a limited time.
    pub caller_role: CertRole,
    /// Why, for the fleet lock; empty for a default.
    pub lock_message: String,
}

/// A new job id: UTC start time, then random hex, so ids sort by time and never collide.
fn new_job_id() -> JobId {
    let now = time::OffsetDateTime::now_utc();
    let suffix: u32 = rand::rng().random();
    let id = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}-{suffix:08x}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    JobId::new(id).expect("a formatted job id is valid")
}

/// Whether `target` picks `host`: by id, its labels (its join token's over its own), its facts
/// or the roles the roles file assigns it.
fn is_targeted(target: &Target, host: &MinionRecord, roles: &RolesFile) -> bool {
    let mut labels = host.facts.labels.clone();
    labels.extend(host.join_labels.clone());
    let assigned: Vec<&RoleName> = roles.roles_for(&host.id).into_iter().collect();
    target.matches(&HostView {
        id: host.id.as_str(),
        facts: &host.facts,
        labels: &labels,
        roles: &assigned,
    })
}

/// Reads the roles file and computes every target's desired state; refuses the whole job if any
/// of that fails.
pub async fn prepare(master: &Master, request: JobRequest) -> Result<PreparedJob, HighstateError> {
    let JobRequest {
        kind,
        target,
        timeout,
        rollout,
        caller,
        caller_role,
        lock_message,
    } = request;
    tracing::info!(%caller, ?kind, "job requested");
    let plan = kind.is_dry_run();
    // A job that could not be recorded would leave no trace of what it changed, and the fleet
    // locked: refused before anything is sent.
    let available_bytes = master.store.available_bytes().await?;
    if available_bytes < MIN_FREE_BYTES {
        return Err(HighstateError::DiskFull { available_bytes });
    }
    let releases = if kind.needs_every_release() {
        master.store.releases().await?
    } else {
        master.store.latest_release().await?.into_iter().collect()
    };
    let JobImages {
        pins,
        deploy,
        lock_message: default_lock_message,
    } = kind.images(&releases)?;
    let roles = load_roles(&master.config).await?;
    if let Some((deployed, image)) = &deploy {
        if let Some(unknown) = deployed
            .iter()
            .find(|r| !roles.role_names().any(|n| n == *r))
        {
            return Err(HighstateError::UnknownRole(unknown.clone()));
        }
        // A deploy brings only images the roles file allows for the role, whoever calls it.
        let repository = image.parts().repository();
        for role in deployed {
            let allowed = roles.deployable_from(role);
            if !allowed.contains(&repository) {
                return Err(HighstateError::NotDeployable {
                    role: role.clone(),
                    repository,
                    allowed,
                });
            }
        }
    }
    // Only accepted hosts get commands: a pending, rejected or revoked one is neither sent
    // anything nor counted as unreachable, only counted as left out.
    let (targets, not_accepted): (Vec<MinionRecord>, Vec<MinionRecord>) = master
        .store
        .minions()
        .await?
        .into_iter()
        .filter(|m| target.as_ref().is_none_or(|t| is_targeted(t, m, &roles)))
        .partition(|m| m.approval == Approval::Accepted);
    let targets: Vec<MinionId> = targets.into_iter().map(|m| m.id).collect();
    let not_accepted = u32::try_from(not_accepted.len()).unwrap_or(u32::MAX);
    let target_text = target.map(|t| t.as_str().to_owned()).unwrap_or_default();
    if targets.is_empty() {
        let picked = if target_text.is_empty() {
            "*".to_owned()
        } else {
            target_text
        };
        return Err(HighstateError::NoTargets(if not_accepted > 0 {
            format!("{picked} ({not_accepted} matching hosts are not accepted)")
        } else {
            picked
        }));
    }
    let mut desired = BTreeMap::new();
    let mut problems = vec![];
    for id in targets {
        match roles.desired_state_for(&id) {
            Ok(state) => {
                desired.insert(id, state);
            }
            Err(err) => problems.push(format!("{id}: {err}")),
        }
    }
    if !problems.is_empty() {
        return Err(HighstateError::ImpossibleHosts(problems.join("\n")));
    }
    if let Some((deployed, _)) = &deploy {
        desired.retain(|_, state| state.containers.iter().any(|c| deployed.contains(&c.role)));
        if desired.is_empty() {
            return Err(HighstateError::NoTargets(format!(
                "any host that runs {}",
                deployed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
    }
    // The lock lasts as long as the job can, so a master that dies mid-job cannot leave the
    // fleet locked for good.
    let job_id = new_job_id();
    let batches = u32::try_from(
        rollout
            .batches(&desired.keys().cloned().collect::<Vec<_>>())
            .len(),
    )
    .unwrap_or(u32::MAX)
    .max(1);
    let longest = timeout.saturating_mul(batches)
        + rollout.batch_wait.saturating_mul(batches - 1)
        + LOCK_MARGIN;
    let limit = master.config.ci_lock_limit;
    if caller_role == CertRole::Ci && !plan && longest > limit {
        return Err(HighstateError::TooLongForCi { longest, limit });
    }
    let resolver = Resolver::new(master.config.registries.clone());
    let resolving = Instant::now();
    if let Some((deployed, image)) = &deploy {
        // The deployed image must resolve (or its digest be one the registry holds), or the
        // deploy is refused as a whole before anything is sent.
        let image = resolver
            .resolve(image)
            .await
            .map_err(HighstateError::Registry)?;
        for spec in desired
            .values_mut()
            .flat_map(|state| state.containers.iter_mut())
        {
            if deployed.contains(&spec.role) {
                spec.image = image.clone();
            }
        }
    }
    let (desired, blocked) = pin_images(&resolver, desired, &pins.unwrap_or_default()).await?;
    let resolve_ms = elapsed_ms(resolving);
    let deployed = pins_of(&desired);
    let previous_release = master.store.latest_release().await?;

    let now = now_unix_ms();
    let lock = LockRecord {
        holder: caller.clone(),
        message: if lock_message.trim().is_empty() {
            default_lock_message.unwrap_or_else(|| format!("highstate {job_id}"))
        } else {
            lock_message
        },
        acquired_at_unix_ms: now,
        expires_at_unix_ms: now
            .saturating_add(i64::try_from(longest.as_millis()).unwrap_or(i64::MAX)),
        job_id: Some(job_id.to_string()),
    };
    // A plan changes nothing, so it neither needs nor blocks the lock.
    if !plan {
        master
            .store
            .try_lock(lock, now)
            .await?
            .map_err(HighstateError::Locked)?;
    }
    Ok(PreparedJob {
        job_id,
        target: target_text,
        desired,
        deployed,
        previous_release,
        blocked,
        timeout,
        rollout,
        caller,
        plan,
        resolve_ms,
        not_accepted,
    })
}

/// Resolves every distinct image once and pins each host's containers to the digests. A
/// registry that cannot be reached fails the whole job; an image that does not resolve fails only
/// the hosts that use it, before anything is sent to them.
async fn pin_images(
    resolver: &Resolver,
    desired: BTreeMap<MinionId, DesiredState>,
    overrides: &Pins,
) -> Result<
    (
        BTreeMap<MinionId, DesiredState>,
        BTreeMap<MinionId, HostReport>,
    ),
    HighstateError,
> {
    let overridden = |spec: &ContainerSpec| {
        overrides
            .get(&spec.role)
            .and_then(|containers| containers.get(&spec.name))
            .cloned()
    };
    let images: BTreeSet<&ImageRef> = desired
        .values()
        .flat_map(|state| state.containers.iter())
        .filter(|spec| overridden(spec).is_none())
        .map(|spec| &spec.image)
        .collect();
    let resolved: BTreeMap<ImageRef, Result<ImageRef, ResolveError>> = join_all(
        images
            .into_iter()
            .map(|image| async move { (image.clone(), resolver.resolve(image).await) }),
    )
    .await
    .into_iter()
    .collect();
    if let Some(Err(unreachable)) = resolved
        .values()
        .find(|r| matches!(r, Err(ResolveError::Unreachable { .. })))
    {
        return Err(HighstateError::Registry(unreachable.clone()));
    }

    let mut pinned = BTreeMap::new();
    let mut blocked = BTreeMap::new();
    for (id, state) in desired {
        let failures: Vec<ContainerResult> = state
            .containers
            .iter()
            .filter(|spec| overridden(spec).is_none())
            .filter_map(|spec| match &resolved[&spec.image] {
                Ok(_) => None,
                Err(err) => Some(ContainerResult {
                    name: spec.name.clone(),
                    role: Some(spec.role.clone()),
                    action: ContainerAction::Failed,
                    image: spec.image.to_string(),
                    image_digest: String::new(),
                    error: Some(err.to_string()),
                    previous_restored: false,
                    needs_pull: false,
                }),
            })
            .collect();
        if failures.is_empty() {
            let containers = state
                .containers
                .into_iter()
                .map(|mut spec| {
                    if let Some(image) = overridden(&spec) {
                        spec.image = image;
                    } else if let Some(Ok(image)) = resolved.get(&spec.image) {
                        spec.image = image.clone();
                    }
                    spec
                })
                .collect();
            // Pinning changes no name or port, so the state stays valid.
            pinned.insert(id, DesiredState { containers });
        } else {
            let errors: BTreeSet<&str> =
                failures.iter().filter_map(|f| f.error.as_deref()).collect();
            let error = format!(
                "{}; nothing was sent to this host",
                errors.into_iter().collect::<Vec<_>>().join("; ")
            );
            blocked.insert(
                id.clone(),
                HostReport {
                    minion_id: id,
                    status: HostStatus::Failed,
                    containers: failures,
                    error: Some(error),
                    duration_ms: 0,
                    timings: Timings::default(),
                    reported_late: false,
                },
            );
        }
    }
    Ok((pinned, blocked))
}

/// Runs a prepared job in the background; its events arrive on the returned receiver. The job
/// runs to the end and is recorded even if the caller stops listening.
pub fn spawn(master: Arc<Master>, job: PreparedJob) -> mpsc::Receiver<HighstateEvent> {
    let (events, receiver) = mpsc::channel(CALLER_QUEUE);
    let span = tracing::info_span!("highstate", job.id = %job.job_id);
    tokio::spawn(tracing::Instrument::instrument(
        run(master, job, events),
        span,
    ));
    receiver
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn run(master: Arc<Master>, job: PreparedJob, caller: mpsc::Sender<HighstateEvent>) {
    let started_at_unix_ms = now_unix_ms();
    let mut run = JobRun::new(JobPlan {
        job_id: job.job_id.clone(),
        rollout: job.rollout.clone(),
        timeout: job.timeout,
        dry_run: job.plan,
        desired: job.desired,
        blocked: job.blocked,
        previous_release: job.previous_release,
    });
    let targets = run.targets().to_vec();
    tracing::info!(hosts = targets.len(), caller = %job.caller, batch = %job.rollout.batch, "highstate started");
    let _ = caller
        .send(HighstateEvent::Started {
            job_id: job.job_id.clone(),
            targets: targets.clone(),
            not_accepted: job.not_accepted,
        })
        .await;

    let (job_events, mut inbox) = mpsc::channel(JOB_QUEUE);
    master.router.register(job.job_id.clone(), job_events);
    let cancel = master.router.cancellable(job.job_id.clone());
    master.activity.job_started(&job.job_id);

    // Recorded as it goes, so a master that stops mid-job can tell, when it starts again, which
    // hosts never reported (their reports are recorded at the end of each batch).
    let record_progress = |reports: &BTreeMap<MinionId, HostReport>| {
        let record = JobRecord {
            summary: JobSummary {
                job_id: job.job_id.clone(),
                hosts: reports.values().cloned().collect(),
                started_at_unix_ms,
                finished_at_unix_ms: 0,
                resolve_ms: job.resolve_ms,
                cancelled_by: None,
            },
            target: job.target.clone(),
            caller: job.caller.clone(),
            plan: job.plan,
            running: true,
            targets: targets.clone(),
        };
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
    while !run.is_done() || !steps.is_empty() {
        while let Some(step) = steps.pop_front() {
            match step {
                Step::Send {
                    job_id,
                    hosts,
                    dry_run,
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
                    let expires_at_unix_ms = now_unix_ms()
                        .saturating_add(i64::try_from(valid_for.as_millis()).unwrap_or(i64::MAX));
                    for (id, desired) in hosts {
                        let command = Command::Apply {
                            job_id: job_id.clone(),
                            expires_at_unix_ms,
                            desired,
                            dry_run,
                        };
                        if let Err(reason) = dispatch(&master, &id, command).await {
                            steps.extend(run.undeliverable(id, reason, Instant::now()));
                        }
                    }
                }
                Step::Finished(report) => {
                    // A host's error text is its own: recorded with the job, not written to
                    // the master's log.
                    tracing::info!(minion.id = %report.minion_id, status = %report.status, "host finished");
                    let _ = caller.send(HighstateEvent::HostFinished(report)).await;
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
                        // Progress is advisory: a caller that cannot keep up misses some of it.
                        let _ = caller.try_send(HighstateEvent::Progress {
                            minion_id: id,
                            progress,
                        });
                    }
                    vec![]
                }
                JobEvent::Result(id, result) => run.result(id, result, Instant::now()),
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
    let cancelled_by = run.cancelled_by().map(str::to_owned);
    let reports = run.into_reports();

    let summary = JobSummary {
        job_id: job.job_id,
        hosts: reports.into_values().collect(),
        started_at_unix_ms,
        finished_at_unix_ms: now_unix_ms(),
        resolve_ms: job.resolve_ms,
        cancelled_by,
    };
    log_summary(&summary);
    master.activity.job_finished(&summary);
    let job_caller = job.caller.clone();
    let record = JobRecord {
        summary: summary.clone(),
        target: job.target,
        caller: job.caller,
        plan: job.plan,
        running: false,
        targets,
    };
    let release = (summary.is_success() && !job.plan).then_some((job_caller, job.deployed));
    let mut finishing = Finishing::Record { record, release };
    if let Err(err) = finishing.advance(&master).await {
        tracing::error!(
            "cannot record the finished job ({err}); trying again every {:?} until it is \
             recorded, and the fleet stays locked meanwhile",
            FINISH_RETRY
        );
        let master = master.clone();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                loop {
                    tokio::time::sleep(FINISH_RETRY).await;
                    if finishing.advance(&master).await.is_ok() {
                        tracing::info!("the finished job is recorded now");
                        break;
                    }
                }
            },
            tracing::Span::current(),
        ));
    }
    let _ = caller.send(HighstateEvent::Summary(summary)).await;
}

/// How often a finished job whose record could not be written (a full disk) is tried again.
const FINISH_RETRY: Duration = Duration::from_secs(2);

/// What is left to store of a finished job, in order: its record, then its release (if it was
/// a successful rollout), then the fleet lock is freed. The lock goes last, so that no other
/// job starts before this one is on record.
enum Finishing {
    Record {
        record: JobRecord,
        /// Who ran it and what it deployed, for the release.
        release: Option<(String, Pins)>,
    },
    Release {
        job_id: JobId,
        caller: String,
        deployed: Pins,
    },
    Unlock {
        job_id: JobId,
    },
    Done,
}

impl Finishing {
    /// Stores what is left, stopping at the first failure (from where it goes on next time).
    async fn advance(&mut self, master: &Master) -> Result<(), crate::store::StoreError> {
        loop {
            *self = match std::mem::replace(self, Finishing::Done) {
                Finishing::Record { record, release } => {
                    let job_id = record.summary.job_id.clone();
                    if let Err(err) = master
                        .store
                        .record_job(record.clone(), master.config.job_retention)
                        .await
                    {
                        *self = Finishing::Record { record, release };
                        return Err(err);
                    }
                    match release {
                        Some((caller, deployed)) => Finishing::Release {
                            job_id,
                            caller,
                            deployed,
                        },
                        None => Finishing::Unlock { job_id },
                    }
                }
                Finishing::Release {
                    job_id,
                    caller,
                    deployed,
                } => {
                    if let Err(err) = record_release(master, &job_id, &caller, &deployed).await {
                        *self = Finishing::Release {
                            job_id,
                            caller,
                            deployed,
                        };
                        return Err(err);
                    }
                    Finishing::Unlock { job_id }
                }
                Finishing::Unlock { job_id } => {
                    if let Err(err) = master.store.release_lock(Some(job_id.to_string())).await {
                        *self = Finishing::Unlock { job_id };
                        return Err(err);
                    }
                    Finishing::Done
                }
                Finishing::Done => return Ok(()),
            };
        }
    }
}

/// Records what a successful job deployed as the next release, if it changed anything.
async fn record_release(
    master: &Master,
    job_id: &JobId,
    caller: &str,
    deployed: &Pins,
) -> Result<(), crate::store::StoreError> {
    let latest = master.store.latest_release().await?;
    let Some(pins) = next_pins(latest.as_ref(), deployed) else {
        return Ok(());
    };
    let release = master
        .store
        .add_release(job_id.to_string(), caller.to_owned(), now_unix_ms(), pins)
        .await?;
    tracing::info!(release = release.id, "release recorded");
    Ok(())
}

/// Hands `command` to `host`'s link; why not, if it cannot.
async fn dispatch(master: &Master, host: &MinionId, command: Command) -> Result<(), &'static str> {
    match master.links.get(host) {
        Some(link) => link
            .commands
            .send_timeout(command, DISPATCH_TIMEOUT)
            .await
            .map_err(|_| "the minion's link closed or is stalled"),
        None => Err("the minion is not connected"),
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_sort_by_time_and_are_valid() {
        let a = new_job_id();
        let b = new_job_id();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), "20261126T183000-0123abcd".len());
    }
}
