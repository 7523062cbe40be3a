//! What every job request carries (`JobOptions`: target, batch timeout, rollout, lock message,
//! request id, how long to wait for the lock), validated at the edge into domain values, and
//! what a refused job tells its caller. It is separate because Highstate, Deploy and Rollback
//! share it, and because these errors are the ones CI pipelines branch on.

use std::time::{Duration, Instant};

use brine_common::target::Target;
use brine_proto::errors::{failure, invalid, retry_after};
use brine_proto::{pb, time};
use sha2::{Digest, Sha256};
use tonic::{Code, Status};

use super::store_failure;
use crate::highstate::HighstateError;
use crate::job::{JobKind, RollbackError};
use crate::registry::ResolveError;
use crate::rollout::{
    BatchSize, DEFAULT_CONCURRENT_PULLS, MAX_BATCH_WAIT, MAX_CONCURRENT_PULLS, Rollout,
};

/// A batch waits 24 hours at most, whatever the caller asks.
const MAX_BATCH_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// A caller waits an hour at most for the fleet lock.
pub(super) const MAX_WAIT_FOR_LOCK: Duration = Duration::from_secs(3600);
/// The longest request id.
const MAX_REQUEST_ID: usize = 128;

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
    pub(super) fn admit(&self, now: Instant) -> Result<(), Status> {
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
            let wait = Duration::from_secs(60)
                .saturating_sub(now.duration_since(*oldest))
                .max(Duration::from_secs(1));
            return Err(retry_after(
                Code::ResourceExhausted,
                pb::ErrorReason::Throttled,
                format!(
                    "{PLANS_PER_MINUTE} plans started within the last minute; try again in {} s",
                    wait.as_secs()
                ),
                wait,
            ));
        }
        started.push_back(now);
        Ok(())
    }
}

/// A job's options, checked.
#[derive(Debug, Clone)]
pub(super) struct JobOptions {
    /// The target expression as given (empty for every host) and parsed.
    pub target_text: String,
    pub target: Option<Target>,
    /// How long each batch may take; `None` for the master's default.
    pub batch_timeout: Option<Duration>,
    pub rollout: Rollout,
    pub lock_message: String,
    pub request_id: Option<String>,
    pub wait_for_lock: Duration,
}

impl JobOptions {
    /// Validates the options of a request; unset options are the defaults.
    pub(super) fn from_wire(options: Option<pb::JobOptions>) -> Result<Self, Status> {
        let options = options.unwrap_or_default();
        let batch_timeout = time::std_duration("options.batch_timeout", options.batch_timeout)?;
        if batch_timeout.is_some_and(|t| t > MAX_BATCH_TIMEOUT || t.is_zero()) {
            return Err(invalid("options.batch_timeout", "from one second to a day"));
        }
        let wait_for_lock =
            time::std_duration("options.wait_for_lock", options.wait_for_lock)?.unwrap_or_default();
        if wait_for_lock > MAX_WAIT_FOR_LOCK {
            return Err(invalid("options.wait_for_lock", "at most an hour"));
        }
        Ok(JobOptions {
            target: parse_target("options.target", &options.target)?,
            target_text: options.target,
            batch_timeout,
            rollout: match options.rollout {
                Some(rollout) => rollout_from_wire(rollout)?,
                None => Rollout::default(),
            },
            lock_message: options.lock_message,
            request_id: request_id(options.request_id)?,
            wait_for_lock,
        })
    }

    /// A digest of what the caller asks for under its request id: a repeat must ask for the
    /// same (the request id itself and how long to wait for the lock aside).
    pub(super) fn fingerprint(&self, caller: &str, kind: &JobKind) -> String {
        let asked = format!(
            "{caller}\n{kind:?}\n{:?}\n{:?}\n{:?}\n{:?}",
            self.target_text, self.batch_timeout, self.rollout, self.lock_message
        );
        hex::encode(Sha256::digest(asked.as_bytes()))
    }
}

/// A request id from the wire: unset when empty.
fn request_id(id: String) -> Result<Option<String>, Status> {
    if id.is_empty() {
        return Ok(None);
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if id.len() > MAX_REQUEST_ID || !id.chars().all(allowed) {
        return Err(invalid(
            "options.request_id",
            format!(
                "1 to {MAX_REQUEST_ID} letters, digits, `-`, `_`, `.` or `:` (e.g. a UUID or the \
                 CI run's id)"
            ),
        ));
    }
    Ok(Some(id))
}

/// Validates rollout options at the edge.
fn rollout_from_wire(rollout: pb::Rollout) -> Result<Rollout, Status> {
    let batch = match rollout.batch_size {
        None => BatchSize::All,
        Some(pb::rollout::BatchSize::BatchHosts(0)) => {
            return Err(invalid("options.rollout.batch_hosts", "at least 1"));
        }
        Some(pb::rollout::BatchSize::BatchHosts(hosts)) => BatchSize::Count(hosts),
        Some(pb::rollout::BatchSize::BatchPercent(percent @ 1..=100)) => {
            BatchSize::Percent(u8::try_from(percent).unwrap_or(100))
        }
        Some(pb::rollout::BatchSize::BatchPercent(_)) => {
            return Err(invalid("options.rollout.batch_percent", "from 1 to 100"));
        }
    };
    let batch_wait =
        time::std_duration("options.rollout.batch_wait", rollout.batch_wait)?.unwrap_or_default();
    if batch_wait > MAX_BATCH_WAIT {
        return Err(invalid("options.rollout.batch_wait", "at most one hour"));
    }
    let concurrent_pulls = rollout.concurrent_pulls.unwrap_or(DEFAULT_CONCURRENT_PULLS);
    if concurrent_pulls > MAX_CONCURRENT_PULLS {
        return Err(invalid(
            "options.rollout.concurrent_pulls",
            format!("at most {MAX_CONCURRENT_PULLS}"),
        ));
    }
    Ok(Rollout {
        batch,
        batch_wait,
        canary: rollout.canary,
        max_failures: rollout.max_failures,
        auto_revert: rollout.auto_revert,
        concurrent_pulls,
    })
}

/// Parses the target expression in request field `field`; an empty one targets every host.
pub(super) fn parse_target(field: &str, text: &str) -> Result<Option<Target>, Status> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    Target::parse(text)
        .map(Some)
        .map_err(|err| invalid(field, err))
}

impl From<HighstateError> for Status {
    fn from(err: HighstateError) -> Self {
        let message = err.to_string();
        let refused = |code, reason| failure(code, reason, message.clone(), []);
        match err {
            HighstateError::Roles(crate::roles::RolesError::Store(err)) => store_failure(err),
            HighstateError::Roles(_) | HighstateError::ImpossibleHosts(_) => {
                refused(Code::FailedPrecondition, pb::ErrorReason::RolesFileInvalid)
            }
            HighstateError::Registry(ResolveError::Unreachable { .. }) => {
                refused(Code::Unavailable, pb::ErrorReason::RegistryUnavailable)
            }
            HighstateError::Registry(ResolveError::Unusable { .. }) => refused(
                Code::FailedPrecondition,
                pb::ErrorReason::MasterMisconfigured,
            ),
            HighstateError::Registry(ResolveError::Refused { .. }) => {
                refused(Code::FailedPrecondition, pb::ErrorReason::ImageUnresolvable)
            }
            HighstateError::Locked(lock) => failure(
                Code::Aborted,
                pb::ErrorReason::FleetLocked,
                message,
                [
                    ("holder", lock.holder),
                    ("message", lock.message),
                    (
                        "expires_at",
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH
                                + Duration::from_millis(
                                    u64::try_from(lock.expires_at_unix_ms).unwrap_or(0),
                                ),
                        )
                        .to_string(),
                    ),
                    ("job_id", lock.job_id.unwrap_or_default()),
                ],
            ),
            HighstateError::NoTargets(_) => refused(Code::NotFound, pb::ErrorReason::NoTargets),
            HighstateError::UnknownRole(_) => invalid("roles", message),
            HighstateError::NotDeployable { .. } | HighstateError::TooLongForCi { .. } => {
                refused(Code::PermissionDenied, pb::ErrorReason::NotAllowed)
            }
            HighstateError::Rollback(rollback) => match rollback {
                RollbackError::NoRelease | RollbackError::NothingEarlier(_) => {
                    refused(Code::FailedPrecondition, pb::ErrorReason::NoRelease)
                }
                RollbackError::UnknownRelease(_) => {
                    refused(Code::NotFound, pb::ErrorReason::NoRelease)
                }
                RollbackError::RoleNotInRelease { .. } => invalid("role", message),
            },
            HighstateError::SecretNotFound { secret, .. } => failure(
                Code::FailedPrecondition,
                pb::ErrorReason::SecretNotFound,
                message,
                [("secret", secret.to_string())],
            ),
            HighstateError::Store(err) => store_failure(err),
            HighstateError::DiskFull { available_bytes } => {
                tracing::error!("refused a job: {message}");
                failure(
                    Code::ResourceExhausted,
                    pb::ErrorReason::DiskFull,
                    message,
                    [("available_bytes", available_bytes.to_string())],
                )
            }
        }
    }
}
