//! Preparing a job: everything that can refuse it is checked before anything is sent: free
//! space for its record, the roles file, the targets and their desired states, the lock time a
//! CI caller may hold, the registries (every tag resolved to a digest once, each host's
//! containers pinned to it) and the fleet lock, taken last. It is separate because it decides
//! whether a job starts at all, while the driver only runs one that did.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use brine_common::identity::CertRole;
use brine_common::names::{MinionId, RoleName, SecretName};
use brine_common::outcome::{
    ContainerAction, ContainerResult, HostReport, HostStatus, JobId, Timings,
};
use brine_common::roles_file::RolesFile;
use brine_common::spec::{ContainerSpec, DesiredState, ImageRef};
use brine_common::target::{HostView, Target};
use futures::future::join_all;
use rand::Rng;
use tokio::time::Instant;

use super::PreparedJob;
use crate::job::{JobImages, JobKind, RollbackError};
use crate::registry::{ResolveError, Resolver};
use crate::release::{Pins, pins_of};
use crate::rollout::Rollout;
use crate::state::{Master, now_unix_ms};
use crate::store::{Approval, LockRecord, MinionRecord, RequestRecord};

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
    Roles(#[from] crate::roles::RolesError),
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
    #[error(
        "the roles file gives {} secret {secret:?}, which the master does not hold; nothing was \
         sent. Set it with `brine-master secret set {secret}`",
        users.join(", ")
    )]
    SecretNotFound {
        secret: SecretName,
        /// The containers that use it, as `ROLE/CONTAINER`.
        users: Vec<String>,
    },
    #[error(transparent)]
    Rollback(#[from] RollbackError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What a caller asks of a highstate.
#[derive(Debug, Clone)]
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
    /// The caller's request id, recorded with the job so that a repeated call finds it.
    pub request: Option<RequestRecord>,
}

/// A new job id: UTC start time, then random hex, so ids sort by time and never collide.
pub(crate) fn new_job_id() -> JobId {
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
pub fn is_targeted(target: &Target, host: &MinionRecord, roles: &RolesFile) -> bool {
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
        request,
    } = request;
    tracing::info!(%caller, ?kind, "job requested");
    let plan = kind.is_plan();
    let job_type = kind.job_type();
    // A job that could not be recorded would leave no trace of what it changed, and the fleet
    // locked: refused before anything is sent.
    let available_bytes = master.store.available_bytes().await?;
    if available_bytes < MIN_FREE_BYTES {
        return Err(HighstateError::DiskFull { available_bytes });
    }
    // A locked fleet refuses at once, before the registry is asked anything (a caller waiting
    // for the lock asks again every second). The lock is taken for real at the end.
    if !plan && let Some(held) = master.store.current_lock(now_unix_ms()).await? {
        return Err(HighstateError::Locked(held));
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
    let roles = crate::roles::load(master).await?;
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
    fill_secret_fingerprints(master, &roles, &mut desired).await?;
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
        job_type,
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
        request,
    })
}

/// Says in each reference to a secret which value the job sends: the one the master holds now,
/// by its fingerprint (so a new value is a changed spec, and replaces the containers that use
/// it). A secret the master does not hold refuses the job before anything is sent.
async fn fill_secret_fingerprints(
    master: &Master,
    roles: &RolesFile,
    desired: &mut BTreeMap<MinionId, DesiredState>,
) -> Result<(), HighstateError> {
    let names: BTreeSet<SecretName> = desired
        .values()
        .flat_map(DesiredState::secret_names)
        .cloned()
        .collect();
    let mut fingerprints = BTreeMap::new();
    for name in names {
        let Some(record) = master.store.secret(name.clone()).await? else {
            return Err(HighstateError::SecretNotFound {
                users: roles.secret_users(&name),
                secret: name,
            });
        };
        fingerprints.insert(name, record.fingerprint);
    }
    for reference in desired.values_mut().flat_map(DesiredState::secret_refs_mut) {
        reference.fingerprint = fingerprints[&reference.secret].clone();
    }
    Ok(())
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
    if let Some(Err(unreachable)) = resolved.values().find(|r| {
        matches!(
            r,
            Err(ResolveError::Unreachable { .. } | ResolveError::Unusable { .. })
        )
    }) {
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

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
