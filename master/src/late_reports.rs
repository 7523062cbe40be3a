//! Which hosts of recently ended jobs may still report late, so that results a host sends again
//! cost no store call.
//!
//! A minion sends its recent results again on every new link, not knowing whether the master
//! got them. After a master restart a whole fleet does so at once, and each result would make
//! the store read the job's record: with 10,000 hosts, 10,000 reads of a 10,000-host record.
//! Here each ended job's record is read once, by the first result for it, into the set of hosts
//! the job gave up on (unreachable, timed out, interrupted); a result from any other host is
//! known already and dropped. The store still decides for the hosts in the set.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use brine_common::names::MinionId;
use brine_common::outcome::JobId;
use tokio::sync::OnceCell;

use crate::store::{JobRecord, StoreError};

/// Jobs whose sets are kept: a minion sends again the results of its last few jobs at most.
const JOBS_KEPT: usize = 16;

/// The hosts a job gave up on, while it still has some.
type Awaited = Mutex<HashSet<MinionId>>;

/// The sets of the most recently asked-about ended jobs.
#[derive(Debug, Default)]
pub struct LateReports {
    jobs: Mutex<VecDeque<(JobId, Arc<OnceCell<Awaited>>)>>,
}

impl LateReports {
    /// Whether `host` may still report late for `job_id`: it is among the hosts the ended job
    /// gave up on. The first call for a job reads its record with `load`; calls meanwhile wait
    /// for that one. A job that is still running, or a failed read, is not kept, so the next
    /// result asks again.
    pub async fn awaited<F, Fut>(&self, job_id: &JobId, host: &MinionId, load: F) -> bool
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<JobRecord>, StoreError>>,
    {
        let cell = self.cell(job_id);
        let loaded = cell
            .get_or_try_init(|| async {
                match load().await {
                    Ok(Some(job)) if job.running => Err(()),
                    Ok(Some(job)) => Ok(Mutex::new(gave_up_on(&job))),
                    Ok(None) => Ok(Mutex::default()),
                    Err(err) => {
                        tracing::warn!(job.id = %job_id, "cannot read the job for a late result: {err}");
                        Err(())
                    }
                }
            })
            .await;
        match loaded {
            Ok(hosts) => hosts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(host),
            // Not kept: the store decides.
            Err(()) => true,
        }
    }

    /// Notes that `host`'s late result for `job_id` is recorded (or refused): it is no longer
    /// awaited.
    pub fn settled(&self, job_id: &JobId, host: &MinionId) {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, cell)) = jobs.iter().find(|(id, _)| id == job_id)
            && let Some(hosts) = cell.get()
        {
            hosts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(host);
        }
    }

    /// The cell of `job_id`, new if it has none, making room by forgetting the oldest.
    fn cell(&self, job_id: &JobId) -> Arc<OnceCell<Awaited>> {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, cell)) = jobs.iter().find(|(id, _)| id == job_id) {
            return cell.clone();
        }
        if jobs.len() >= JOBS_KEPT {
            jobs.pop_front();
        }
        let cell = Arc::new(OnceCell::new());
        jobs.push_back((job_id.clone(), cell.clone()));
        cell
    }
}

/// The hosts an ended job gave up on.
fn gave_up_on(job: &JobRecord) -> HashSet<MinionId> {
    job.summary
        .hosts
        .iter()
        .filter(|report| report.gave_up())
        .map(|report| report.minion_id.clone())
        .collect()
}

#[cfg(test)]
mod tests;
