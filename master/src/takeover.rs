//! A rollout survives its master, when masters share a store: each master holds its running
//! jobs under a lease it renews every second ([`keep_lease`]); a job whose master stopped (or
//! was cut off from the store) is let go of when that lease runs out, and another master
//! claims it and runs it on from the reports it recorded ([`take_over_jobs`]).
//!
//! A master that cannot renew its lease in time stops its jobs ([`Fence`]): it sends no more
//! commands and writes nothing more of them, since another master may be running them by
//! then (the store refuses its writes too, as they compare the lease).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use brine_common::outcome::JobId;
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::following::{RETRY, keep_following};
use crate::state::{Master, now_unix_ms};
use crate::store::{JobOwner, StoreError};

/// How long a master's lease holds without a renewal: its jobs are taken over this long after
/// it stops.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often the lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// A master stops its jobs this long before its lease would run out without a renewal: the
/// store's clock and this one's may differ a little.
const FENCE_MARGIN: Duration = Duration::from_secs(1);
/// How often every running job is looked at, besides the jobs let go of as it happens.
const SCAN_EVERY: Duration = Duration::from_secs(30);

/// The lease this master holds its jobs under, while it holds.
#[derive(Debug, Default)]
pub struct Fence {
    /// The lease and until when this master may act under it. A std lock: never held across an
    /// await.
    held: Mutex<Option<(i64, Instant)>>,
}

impl Fence {
    /// The lease jobs are held under now, if this master holds one.
    pub fn current(&self) -> Option<i64> {
        let held = *self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.filter(|(_, until)| Instant::now() < *until)
            .map(|(lease, _)| lease)
    }

    /// Whether a job held under `lease` may still act.
    pub fn holds(&self, lease: i64) -> bool {
        self.current() == Some(lease)
    }

    fn set(&self, lease: i64, until: Instant) {
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = Some((lease, until));
    }
}

/// Holds a lease for this master's jobs and renews it every second until `stopping`; takes a
/// new one when it ran out.
pub async fn keep_lease(master: Arc<Master>, stopping: CancellationToken) {
    let mut failing = false;
    loop {
        let asked = Instant::now();
        let mut lease = match master.store.grant_lease(LEASE_TTL).await {
            Ok(lease) => lease,
            Err(err) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!("cannot take a lease for this master's jobs: {err}");
                }
                tokio::select! {
                    () = stopping.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        failing = false;
        let id = lease.id();
        master
            .fence
            .set(id, asked + LEASE_TTL.saturating_sub(FENCE_MARGIN));
        tracing::info!(
            lease = format_args!("{id:x}"),
            "holding this master's jobs under a lease"
        );
        loop {
            tokio::select! {
                () = stopping.cancelled() => return,
                () = tokio::time::sleep(RENEW_EVERY) => {}
            }
            let asked = Instant::now();
            match tokio::time::timeout(LEASE_TTL, lease.renew()).await {
                Ok(Ok(left)) => master
                    .fence
                    .set(id, asked + left.saturating_sub(FENCE_MARGIN)),
                Ok(Err(err)) if !master.fence.holds(id) => {
                    tracing::error!(
                        "this master's lease ran out ({err}): its jobs stop here, and other \
                         masters take them over"
                    );
                    let_hosts_go(&master);
                    break;
                }
                Ok(Err(err)) => tracing::warn!("cannot renew this master's lease yet: {err}"),
                Err(_) if !master.fence.holds(id) => {
                    tracing::error!(
                        "this master could not renew its lease in time: its jobs stop here, \
                         and other masters take them over"
                    );
                    let_hosts_go(&master);
                    break;
                }
                Err(_) => {}
            }
        }
    }
}

/// Ends every link of a master cut off from the store: its hosts link to the other masters,
/// which can still run jobs on them. It takes links again once it holds a lease again.
fn let_hosts_go(master: &Master) {
    let ended = master.links.disconnect_all();
    if ended > 0 {
        tracing::warn!(
            hosts = ended,
            "ended every link: cut off from the store, this master cannot serve its hosts"
        );
    }
}

/// Takes over the running jobs nobody holds: at start, whenever a master lets go of one, and
/// every [`SCAN_EVERY`], until `stopping`.
pub async fn take_over_jobs(master: Arc<Master>, stopping: CancellationToken) {
    keep_following(&stopping, "the running jobs", || async {
        let mut released = match master.store.follow_released_jobs().await {
            Ok(released) => released,
            Err(err) => return err,
        };
        if let Err(err) = scan(&master).await {
            return err;
        }
        let mut next_scan = Instant::now() + SCAN_EVERY;
        loop {
            tokio::select! {
                item = released.next() => match item {
                    Some(Ok(job)) => take_over(&master, job).await,
                    Some(Err(err)) => return err,
                    None => return StoreError::Unavailable("the store ended the following".into()),
                },
                () = tokio::time::sleep_until(next_scan) => {
                    next_scan = Instant::now() + SCAN_EVERY;
                    if let Err(err) = scan(&master).await {
                        return err;
                    }
                }
            }
        }
    })
    .await;
}

/// Takes over every running job that nobody holds.
async fn scan(master: &Arc<Master>) -> Result<(), StoreError> {
    for (job, owner) in master.store.running_jobs().await? {
        if owner.is_none() {
            take_over(master, job).await;
        }
    }
    Ok(())
}

/// Claims running job `job` if nobody holds it, and runs it on from its recorded reports.
async fn take_over(master: &Arc<Master>, job: JobId) {
    let Some(lease) = master.fence.current() else {
        return;
    };
    let record = match master.store.job(job.to_string()).await {
        Ok(Some(record)) if record.running => record,
        Ok(_) => return,
        Err(err) => {
            tracing::warn!(job.id = %job, "cannot read a job that lost its master: {err}");
            return;
        }
    };
    let owner = JobOwner {
        master: master.config.name.clone(),
        lease,
    };
    match master.store.claim_job(job.clone(), owner, None).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(err) => {
            tracing::warn!(job.id = %job, "cannot claim a job that lost its master: {err}");
            return;
        }
    }
    let previous = record.master.clone().unwrap_or_default();
    let plan = match master.store.job_plan(job.clone()).await {
        Ok(Some(plan)) => plan,
        outcome => {
            if let Err(err) = outcome {
                tracing::warn!(job.id = %job, "cannot read the plan of a job that lost its master: {err}");
            }
            // Without its plan it cannot go on: it ends as a master's restart ends its jobs.
            match master.store.interrupt_job(job.clone(), now_unix_ms()).await {
                Ok(_) => {
                    tracing::warn!(job.id = %job, %previous, "a job whose master stopped had no plan to go on from; its hosts that had not reported are marked interrupted")
                }
                Err(err) => {
                    tracing::error!(job.id = %job, "cannot finish a job whose master stopped: {err}")
                }
            }
            return;
        }
    };
    tracing::warn!(
        job.id = %job,
        %previous,
        reported = record.summary.hosts.len(),
        of = record.targets.len(),
        "taking over a job whose master stopped"
    );
    crate::highstate::resume(master.clone(), plan, record, lease);
}
