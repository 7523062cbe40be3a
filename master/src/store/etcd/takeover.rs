//! Jobs held under leases, and their plans (`job-owners/JOB`, `job-plans/JOB`,
//! `job-desired/JOB/ID`): see `store/takeover.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use brine_common::names::MinionId;
use brine_common::outcome::JobId;
use brine_common::spec::DesiredState;
use etcd_client::{Compare, CompareOp, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp};
use futures::StreamExt;

use super::relay::{Seen, follow_prefix};
use super::{EtcdStore, delete_under, key_text};
use crate::store::record::{decode, encode};
use crate::store::{JobOwner, JobPlanRecord, JobRecord, Lease, ReleasedJobs, StoreError};

const OWNERS: &str = "job_owners";
const PLANS: &str = "job_plans";

/// A lease and the stream that renews it.
struct EtcdLease {
    id: i64,
    keeper: LeaseKeeper,
    answers: LeaseKeepAliveStream,
}

#[async_trait::async_trait]
impl Lease for EtcdLease {
    fn id(&self) -> i64 {
        self.id
    }

    async fn renew(&mut self) -> Result<Duration, StoreError> {
        self.keeper
            .keep_alive()
            .await
            .map_err(super::etcd_failure)?;
        match self.answers.message().await.map_err(super::etcd_failure)? {
            Some(answer) if answer.ttl() > 0 => Ok(Duration::from_secs(
                u64::try_from(answer.ttl()).unwrap_or(0),
            )),
            Some(_) => Err(StoreError::Unavailable(format!(
                "lease {:x} ran out",
                self.id
            ))),
            None => Err(StoreError::Unavailable(
                "etcd closed the lease's renewals".into(),
            )),
        }
    }
}

pub(super) async fn grant_lease(
    store: &EtcdStore,
    ttl: Duration,
) -> Result<Box<dyn Lease>, StoreError> {
    let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    let mut leases = store.leases.clone();
    let granted = leases
        .grant(seconds, None)
        .await
        .map_err(super::etcd_failure)?;
    let (keeper, answers) = leases
        .keep_alive(granted.id())
        .await
        .map_err(super::etcd_failure)?;
    Ok(Box::new(EtcdLease {
        id: granted.id(),
        keeper,
        answers,
    }))
}

/// The comparison that holds while `owner` holds job `job_id`.
pub(super) fn held_by(store: &EtcdStore, job_id: &str, owner: &JobOwner) -> Compare {
    Compare::value(
        store.keys.job_owner(job_id),
        CompareOp::Equal,
        encode(owner),
    )
}

/// What a job's end removes: who held it, and its plan.
pub(super) fn forget_ownership(store: &EtcdStore, job_id: &str) -> [TxnOp; 3] {
    [
        TxnOp::delete(store.keys.job_owner(job_id), None),
        TxnOp::delete(store.keys.job_plan(job_id), None),
        delete_under(store.keys.job_desired(job_id)),
    ]
}

pub(super) async fn claim(
    store: &EtcdStore,
    job: JobId,
    owner: JobOwner,
    plan: Option<JobPlanRecord>,
) -> Result<bool, StoreError> {
    let job_id = job.as_str();
    let mut writes = vec![];
    if let Some(mut plan) = plan {
        // Each host's desired state first, in transactions of their own; the header last,
        // with the claim.
        let desired = std::mem::take(&mut plan.desired);
        let per_host = desired
            .iter()
            .map(|(id, desired)| {
                TxnOp::put(store.keys.job_desired_of(job_id, id), encode(desired), None)
            })
            .collect();
        store.write_all(per_host).await?;
        writes.push(TxnOp::put(store.keys.job_plan(job_id), encode(&plan), None));
    }
    writes.push(TxnOp::put(
        store.keys.job_owner(job_id),
        encode(&owner),
        Some(PutOptions::new().with_lease(owner.lease)),
    ));
    let txn = Txn::new()
        .when([Compare::version(
            store.keys.job_owner(job_id),
            CompareOp::Equal,
            0,
        )])
        .and_then(writes);
    Ok(store.commit(txn).await?.is_some())
}

pub(super) async fn plan(
    store: &EtcdStore,
    job: JobId,
) -> Result<Option<JobPlanRecord>, StoreError> {
    let job_id = job.as_str();
    let header = store.read(store.keys.job_plan(job_id)).await?;
    let Some(mut plan) = header.decode::<JobPlanRecord>(PLANS, job_id)? else {
        return Ok(None);
    };
    let prefix = store.keys.job_desired(job_id);
    let mut desired = BTreeMap::new();
    for kv in store.under(prefix.clone()).await? {
        let key = key_text(&kv);
        let id = key.strip_prefix(&prefix).unwrap_or_default();
        let id = MinionId::new(id).map_err(|err| StoreError::Corrupt {
            table: PLANS,
            key: key.clone(),
            message: err.to_string(),
        })?;
        desired.insert(id, decode::<DesiredState>(PLANS, &key, kv.value())?);
    }
    plan.desired = desired;
    Ok(Some(plan))
}

pub(super) async fn running(
    store: &EtcdStore,
) -> Result<Vec<(JobId, Option<JobOwner>)>, StoreError> {
    let mut owners = BTreeMap::new();
    let owners_prefix = store.keys.job_owners();
    for kv in store.under(owners_prefix.clone()).await? {
        let key = key_text(&kv);
        let job_id = key
            .strip_prefix(&owners_prefix)
            .unwrap_or_default()
            .to_owned();
        owners.insert(job_id, decode::<JobOwner>(OWNERS, &key, kv.value())?);
    }
    let jobs_prefix = store.keys.jobs();
    let mut running = vec![];
    for kv in store.under(jobs_prefix.clone()).await? {
        let key = key_text(&kv);
        let job_id = key.strip_prefix(&jobs_prefix).unwrap_or_default();
        let record: JobRecord = decode("jobs", &key, kv.value())?;
        if record.running {
            running.push((record.summary.job_id, owners.remove(job_id)));
        }
    }
    Ok(running)
}

pub(super) async fn follow_released(store: &EtcdStore) -> Result<ReleasedJobs, StoreError> {
    let prefix = store.keys.job_owners();
    let seen = follow_prefix(store, prefix.clone(), "the jobs' holders").await?;
    Ok(Box::pin(seen.filter_map(move |seen| {
        let released = match seen {
            Ok(Seen::Deleted(key)) => {
                let id = key.strip_prefix(&prefix).unwrap_or_default();
                Some(JobId::new(id).map_err(|err| StoreError::Corrupt {
                    table: OWNERS,
                    key: key.clone(),
                    message: err.to_string(),
                }))
            }
            Ok(Seen::Put(_)) => None,
            Err(err) => Some(Err(err)),
        };
        std::future::ready(released)
    })))
}
