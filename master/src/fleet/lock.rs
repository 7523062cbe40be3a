//! The fleet lock's RPCs: show it, take it by hand with a reason, release it. It is separate
//! because an operator holds the lock apart from any job (a job takes it in the store itself).

use std::time::Duration;

use brine_common::outcome::JobId;
use brine_proto::errors::{failure, invalid};
use brine_proto::{pb, time};
use tonic::{Code, Request, Response, Status};

use super::{FleetService, store_failure};
use crate::auth::Caller;
use crate::highstate::HighstateError;
use crate::state::now_unix_ms;
use crate::store::LockRecord;

/// A lock taken by hand lasts an hour unless the caller asks otherwise, and 7 days at most.
const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(3600);
const MAX_LOCK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

pub(super) async fn get_lock(
    fleet: &FleetService,
    _request: Request<pb::GetLockRequest>,
) -> Result<Response<pb::GetLockResponse>, Status> {
    let lock = fleet
        .master
        .store
        .current_lock(now_unix_ms())
        .await
        .map_err(store_failure)?;
    Ok(Response::new(pb::GetLockResponse {
        lock: Some(lock_status(lock)),
    }))
}

pub(super) async fn acquire_lock(
    fleet: &FleetService,
    request: Request<pb::AcquireLockRequest>,
) -> Result<Response<pb::AcquireLockResponse>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    let request = request.into_inner();
    if request.message.trim().is_empty() {
        return Err(invalid("message", "say why the fleet is locked"));
    }
    let ttl = time::std_duration("ttl", request.ttl)?.unwrap_or(DEFAULT_LOCK_TTL);
    if ttl > MAX_LOCK_TTL {
        return Err(invalid("ttl", "at most 7 days"));
    }
    let now = now_unix_ms();
    let lock = LockRecord {
        holder: caller.clone(),
        message: request.message,
        acquired_at_unix_ms: now,
        expires_at_unix_ms: now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
        job_id: None,
    };
    match fleet
        .master
        .store
        .try_lock(lock.clone(), now)
        .await
        .map_err(store_failure)?
    {
        Ok(()) => {
            tracing::info!(%caller, message = %lock.message, "fleet locked");
            Ok(Response::new(pb::AcquireLockResponse {
                lock: Some(lock_status(Some(lock))),
            }))
        }
        Err(held) => Err(HighstateError::Locked(held).into()),
    }
}

pub(super) async fn release_lock(
    fleet: &FleetService,
    request: Request<pb::ReleaseLockRequest>,
) -> Result<Response<pb::ReleaseLockResponse>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    if !request.into_inner().force {
        let lock = fleet
            .master
            .store
            .current_lock(now_unix_ms())
            .await
            .map_err(store_failure)?;
        let running_job = lock.and_then(|lock| lock.job_id).filter(|job| {
            JobId::new(job.as_str()).is_ok_and(|id| fleet.master.feeds.get(&id).is_some())
        });
        if let Some(job) = running_job {
            return Err(failure(
                Code::FailedPrecondition,
                pb::ErrorReason::LockHeldByJob,
                format!(
                    "job {job} holds the lock while it runs; cancel the job (`brine-master jobs \
                     cancel {job}`), or release the lock anyway with --force (the job goes on \
                     unlocked)"
                ),
                [("job_id", job.clone())],
            ));
        }
    }
    let released = fleet
        .master
        .store
        .release_lock(None)
        .await
        .map_err(store_failure)?;
    if let Some(lock) = &released {
        tracing::warn!(%caller, holder = %lock.holder, "fleet lock released");
    }
    Ok(Response::new(pb::ReleaseLockResponse {
        released: Some(lock_status(released)),
    }))
}

fn lock_status(lock: Option<LockRecord>) -> pb::Lock {
    match lock {
        Some(lock) => pb::Lock {
            locked: true,
            holder: lock.holder,
            message: lock.message,
            acquired_at: Some(time::timestamp(lock.acquired_at_unix_ms)),
            expires_at: Some(time::timestamp(lock.expires_at_unix_ms)),
            job_id: lock.job_id.unwrap_or_default(),
        },
        None => pb::Lock::default(),
    }
}
