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
/// a successful rollout), then the fleet lock is freed. The lock goes last, so that no other
/// job starts before this one is on record.
pub(super) enum Finishing {
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
    pub(super) async fn advance(
        &mut self,
        master: &Master,
    ) -> Result<(), crate::store::StoreError> {
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
