//! Finishing a job: its record, then its release, then the fleet lock freed, in that order and
//! retried from where it stopped while the store cannot write (a full disk). It is separate
//! because what a finished job leaves behind must survive a failing disk, whatever the driver
//! does next.

use std::time::Duration;

use brine_common::outcome::JobId;

use crate::release::{Pins, next_pins};
use crate::state::{Master, now_unix_ms};
use crate::store::JobRecord;

/// How often a finished job whose record could not be written (a full disk) is tried again.
pub(super) const FINISH_RETRY: Duration = Duration::from_secs(2);

/// What is left to store of a finished job, in order: its record, then its release (if it was
/// a successful rollout), then the fleet lock is freed (if it took it). The lock goes last, so
/// that no other job starts before this one is on record.
pub(super) struct Finishing {
    job_id: JobId,
    /// `None` once recorded.
    record: Option<JobRecord>,
    /// Who ran it and what it deployed, until the release is recorded.
    release: Option<(String, Pins)>,
    /// Whether it still holds the fleet lock.
    locked: bool,
}

impl Finishing {
    pub(super) fn new(record: JobRecord, release: Option<(String, Pins)>, locked: bool) -> Self {
        Self {
            job_id: record.summary.job_id.clone(),
            record: Some(record),
            release,
            locked,
        }
    }

    /// Stores what is left, stopping at the first failure (from where it goes on next time).
    pub(super) async fn advance(
        &mut self,
        master: &Master,
    ) -> Result<(), crate::store::StoreError> {
        if let Some(record) = &self.record {
            master
                .store
                .record_job(record.clone(), master.config.job_retention)
                .await?;
            self.record = None;
        }
        if let Some((caller, deployed)) = &self.release {
            record_release(master, &self.job_id, caller, deployed).await?;
            self.release = None;
        }
        if self.locked {
            master
                .store
                .release_lock(Some(self.job_id.to_string()))
                .await?;
            self.locked = false;
        }
        Ok(())
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
