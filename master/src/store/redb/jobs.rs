//! The `jobs` table: jobs by id, which sorts by start time. Recording a job's end also records
//! what its hosts now run (`minions`), and finishing the jobs a stopped master left running
//! frees the fleet lock they held (`lock`), in the same transaction.

use brine_common::outcome::{HostReport, JobId};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
};

use super::{lock, minions, read};
use crate::store::jobs::jobs_to_forget;
use crate::store::record::{decode, encode};
use crate::store::{JobRecord, JobRetention, StoreError};

const NAME: &str = "jobs";
pub(super) const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(NAME);

fn put(table: &mut Table<&'static str, &'static [u8]>, job: &JobRecord) -> Result<(), StoreError> {
    table.insert(job.summary.job_id.as_str(), encode(job).as_slice())?;
    Ok(())
}

pub(super) fn record(
    db: &Database,
    job: JobRecord,
    retention: JobRetention,
) -> Result<(), StoreError> {
    let tx = db.begin_write()?;
    {
        let mut minions = tx.open_table(minions::TABLE)?;
        for host in &job.summary.hosts {
            minions::apply_report(&mut minions, host)?;
        }
        let mut jobs = tx.open_table(TABLE)?;
        put(&mut jobs, &job)?;
        prune(&mut jobs, retention, job.summary.finished_at_unix_ms)?;
    }
    tx.commit()?;
    Ok(())
}

/// Forgets the jobs beyond `retention`.
fn prune(
    jobs: &mut Table<&'static str, &'static [u8]>,
    retention: JobRetention,
    now_unix_ms: i64,
) -> Result<(), StoreError> {
    let total = usize::try_from(jobs.len()?).unwrap_or(usize::MAX);
    let oldest_first = jobs.iter()?.map(|entry| {
        let (key, value) = entry?;
        let key = key.value().to_owned();
        let record = decode(NAME, &key, value.value())?;
        Ok((key, record))
    });
    let forgotten = jobs_to_forget(total, oldest_first, retention, now_unix_ms)?;
    for key in forgotten {
        jobs.remove(key.as_str())?;
    }
    Ok(())
}

pub(super) fn record_late_report(
    db: &Database,
    job_id: JobId,
    report: HostReport,
) -> Result<bool, StoreError> {
    let tx = db.begin_write()?;
    let recorded = {
        let mut jobs = tx.open_table(TABLE)?;
        let Some(mut job) = read::<JobRecord>(&jobs, NAME, job_id.as_str())? else {
            return Ok(false);
        };
        let Some(late) = job.record_late_report(report) else {
            return Ok(false);
        };
        jobs.insert(job_id.as_str(), encode(&job).as_slice())?;
        minions::apply_report(&mut tx.open_table(minions::TABLE)?, &late)?;
        true
    };
    tx.commit()?;
    Ok(recorded)
}

pub(super) fn record_progress(db: &Database, job: JobRecord) -> Result<(), StoreError> {
    let tx = db.begin_write()?;
    put(&mut tx.open_table(TABLE)?, &job)?;
    tx.commit()?;
    Ok(())
}

pub(super) fn interrupt_running(
    db: &Database,
    now_unix_ms: i64,
    run_by: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    let tx = db.begin_write()?;
    let interrupted = {
        let mut jobs = tx.open_table(TABLE)?;
        let running: Vec<JobRecord> = jobs
            .iter()?
            .map(|entry| {
                let (key, value) = entry?;
                decode::<JobRecord>(NAME, key.value(), value.value())
            })
            .filter(|job| {
                job.as_ref()
                    .map_or(true, |job| job.is_left_running_by(run_by))
            })
            .collect::<Result<_, _>>()?;
        let mut ids = vec![];
        for mut job in running {
            job.interrupt(now_unix_ms);
            let id = job.summary.job_id.to_string();
            jobs.insert(id.as_str(), encode(&job).as_slice())?;
            ids.push(id);
        }
        lock::release_held_by_any(&tx, &ids)?;
        ids
    };
    tx.commit()?;
    Ok(interrupted)
}

/// Up to `limit` jobs before job `before` (from the newest without it), newest first.
pub(super) fn newest_before(
    db: &Database,
    before: Option<&str>,
    limit: usize,
) -> Result<Vec<JobRecord>, StoreError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(TABLE)?;
    let range = match before {
        Some(before) => table.range::<&str>(..before)?,
        None => table.range::<&str>(..)?,
    };
    range
        .rev()
        .take(limit)
        .map(|entry| {
            let (key, value) = entry?;
            decode(NAME, key.value(), value.value())
        })
        .collect()
}

/// The newest job started with `request_id`. The jobs kept are few (retention), so a scan
/// from the newest is enough.
pub(super) fn with_request(
    db: &Database,
    request_id: &str,
) -> Result<Option<JobRecord>, StoreError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(TABLE)?;
    for entry in table.iter()?.rev() {
        let (key, value) = entry?;
        let job: JobRecord = decode(NAME, key.value(), value.value())?;
        if job.request.as_ref().is_some_and(|r| r.id == request_id) {
            return Ok(Some(job));
        }
    }
    Ok(None)
}

pub(super) fn job(db: &Database, id: String) -> Result<Option<JobRecord>, StoreError> {
    let tx = db.begin_read()?;
    read(&tx.open_table(TABLE)?, NAME, &id)
}
