//! Jobs: each one's record without its hosts (`jobs/JOB`, which sorts by start time), the
//! hosts it targets (`job-targets/JOB`) and one key per host's report (`job-hosts/JOB/ID`), so
//! that no value grows with the fleet beyond a list of ids. A job's reports and targets are
//! written before its record, which is what makes the job running or finished.

use std::collections::BTreeSet;

use brine_common::names::MinionId;
use brine_common::outcome::{HostReport, JobId};
use etcd_client::{GetOptions, KeyValue, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

use super::{Attempts, EtcdStore, Read, delete_under, key_text, limit_of, minions, takeover};
use crate::store::jobs::jobs_to_forget;
use crate::store::record::{decode, encode};
use crate::store::{JobOwner, JobRecord, JobRetention, StoreError};

const NAME: &str = "jobs";
const REPORTS: &str = "job_hosts";
const TARGETS: &str = "job_targets";

/// The hosts a job targets, as stored beside its record.
#[derive(Serialize, Deserialize)]
struct Targets {
    targets: Vec<MinionId>,
}

/// A job's record without its reports and targets, the reports and the targets.
fn split(mut job: JobRecord) -> (JobRecord, Vec<HostReport>, Targets) {
    let reports = std::mem::take(&mut job.summary.hosts);
    let targets = Targets {
        targets: std::mem::take(&mut job.targets),
    };
    (job, reports, targets)
}

/// The writes of `reports` of job `job_id`.
fn report_writes<'a>(
    store: &'a EtcdStore,
    job_id: &'a str,
    reports: impl IntoIterator<Item = &'a HostReport> + 'a,
) -> impl Iterator<Item = TxnOp> + 'a {
    reports.into_iter().map(move |report| {
        TxnOp::put(
            store.keys.job_host(job_id, &report.minion_id),
            encode(report),
            None,
        )
    })
}

/// Writes a job: its reports first, then its targets and record in one transaction. A job held
/// under a lease is written only while it still is (each transaction compares), and its end
/// lets go of it and of its plan.
async fn write(store: &EtcdStore, job: JobRecord) -> Result<Vec<HostReport>, StoreError> {
    let (record, reports, targets) = split(job);
    let job_id = record.summary.job_id.to_string();
    let holder = match (&record.master, record.lease) {
        (Some(master), Some(lease)) => Some(takeover::held_by(
            store,
            &job_id,
            &JobOwner {
                master: master.clone(),
                lease,
            },
        )),
        _ => None,
    };
    let fenced = || {
        StoreError::Backend(format!(
            "job {job_id} is no longer held by this master (its lease ran out, and another \
             master may have taken it over): it writes nothing more of it"
        ))
    };
    let when = |txn: Txn| match &holder {
        Some(held) => txn.when([held.clone()]),
        None => txn,
    };
    let writes: Vec<TxnOp> = report_writes(store, &job_id, &reports).collect();
    for chunk in writes.chunks(super::OPS_PER_TXN) {
        if store
            .commit(when(Txn::new()).and_then(chunk.to_vec()))
            .await?
            .is_none()
        {
            return Err(fenced());
        }
    }
    let mut last = vec![
        TxnOp::put(store.keys.job_targets(&job_id), encode(&targets), None),
        TxnOp::put(store.keys.job(&job_id), encode(&record), None),
    ];
    if !record.running {
        last.extend(takeover::forget_ownership(store, &job_id));
    }
    if store
        .commit(when(Txn::new()).and_then(last))
        .await?
        .is_none()
    {
        return Err(fenced());
    }
    Ok(reports)
}

/// The job id a record's key names.
fn job_id_of(store: &EtcdStore, kv: &KeyValue) -> String {
    let key = key_text(kv);
    key.strip_prefix(&store.keys.jobs())
        .map_or(key.clone(), str::to_owned)
}

/// Job `job_id` with its targets and reports, read at one revision.
async fn read_job(store: &EtcdStore, job_id: &str) -> Result<Option<JobRecord>, StoreError> {
    let txn = Txn::new().and_then([
        TxnOp::get(store.keys.job(job_id), None),
        TxnOp::get(store.keys.job_targets(job_id), None),
        TxnOp::get(
            store.keys.job_hosts(job_id),
            Some(GetOptions::new().with_prefix()),
        ),
    ]);
    let mut answers = store
        .read_all(txn)
        .await?
        .into_iter()
        .map(|answer| match answer {
            TxnOpResponse::Get(mut got) => got.take_kvs(),
            _ => vec![],
        });
    let (Some(record), Some(targets), Some(reports)) =
        (answers.next(), answers.next(), answers.next())
    else {
        return Err(StoreError::Backend(
            "etcd answered a job's reads with fewer answers".into(),
        ));
    };
    let Some(record) = record.first() else {
        return Ok(None);
    };
    let mut job: JobRecord = decode(NAME, job_id, record.value())?;
    if let Some(targets) = targets.first() {
        job.targets = decode::<Targets>(TARGETS, job_id, targets.value())?.targets;
    }
    job.summary.hosts = reports
        .iter()
        .map(|kv| decode(REPORTS, key_text(kv), kv.value()))
        .collect::<Result<_, _>>()?;
    Ok(Some(job))
}

pub(super) async fn record(
    store: &EtcdStore,
    job: JobRecord,
    retention: JobRetention,
) -> Result<(), StoreError> {
    let finished_at_unix_ms = job.summary.finished_at_unix_ms;
    let reports = write(store, job).await?;
    minions::apply_reports(store, &reports).await?;
    prune(store, retention, finished_at_unix_ms).await
}

/// Forgets the jobs beyond `retention`, with their targets and reports.
async fn prune(
    store: &EtcdStore,
    retention: JobRetention,
    now_unix_ms: i64,
) -> Result<(), StoreError> {
    let records = store.under(store.keys.jobs()).await?;
    let oldest_first = records.iter().map(|kv| {
        let job_id = job_id_of(store, kv);
        let record = decode(NAME, &job_id, kv.value())?;
        Ok((job_id, record))
    });
    let forgotten = jobs_to_forget(records.len(), oldest_first, retention, now_unix_ms)?;
    let deletes = forgotten
        .iter()
        .flat_map(|job_id| {
            [
                TxnOp::delete(store.keys.job(job_id), None),
                TxnOp::delete(store.keys.job_targets(job_id), None),
                delete_under(store.keys.job_hosts(job_id)),
            ]
        })
        .collect();
    store.write_all(deletes).await
}

pub(super) async fn record_late_report(
    store: &EtcdStore,
    job_id: JobId,
    report: HostReport,
) -> Result<bool, StoreError> {
    let job_id = job_id.as_str();
    let record_key = store.keys.job(job_id);
    let report_key = store.keys.job_host(job_id, &report.minion_id);
    let mut attempts = Attempts::new("a late report");
    loop {
        attempts.another().await?;
        let record_read = store.read(record_key.clone()).await?;
        let Some(mut job) = record_read.decode::<JobRecord>(NAME, job_id)? else {
            return Ok(false);
        };
        // The job's other reports do not bear on this one.
        let report_read: Read = store.read(report_key.clone()).await?;
        job.summary.hosts = report_read
            .decode::<HostReport>(REPORTS, &report_key)?
            .into_iter()
            .collect();
        let Some(late) = job.record_late_report(report.clone()) else {
            return Ok(false);
        };
        let mut compares = vec![record_read.unchanged, report_read.unchanged];
        let mut writes = vec![TxnOp::put(report_key.as_str(), encode(&late), None)];
        if let Some((unchanged, write)) = minions::report_write(store, &late).await? {
            compares.push(unchanged);
            writes.push(write);
        }
        if store
            .commit(Txn::new().when(compares).and_then(writes))
            .await?
            .is_some()
        {
            return Ok(true);
        }
    }
}

pub(super) async fn record_progress(store: &EtcdStore, job: JobRecord) -> Result<(), StoreError> {
    write(store, job).await.map(drop)
}

pub(super) async fn interrupt_running(
    store: &EtcdStore,
    now_unix_ms: i64,
    run_by: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    let mut interrupted = vec![];
    for kv in store.under(store.keys.jobs()).await? {
        let job_id = job_id_of(store, &kv);
        let record: JobRecord = decode(NAME, &job_id, kv.value())?;
        if record.is_left_running_by(run_by) && interrupt(store, &job_id, now_unix_ms).await? {
            interrupted.push(job_id);
        }
    }
    release_lock_of(store, &interrupted).await?;
    Ok(interrupted)
}

pub(super) async fn interrupt_one(
    store: &EtcdStore,
    job_id: &str,
    now_unix_ms: i64,
) -> Result<bool, StoreError> {
    let interrupted = interrupt(store, job_id, now_unix_ms).await?;
    if interrupted {
        release_lock_of(store, &[job_id.to_owned()]).await?;
    }
    Ok(interrupted)
}

/// Finishes running job `job_id` as interrupted; false if it is not running.
async fn interrupt(store: &EtcdStore, job_id: &str, now_unix_ms: i64) -> Result<bool, StoreError> {
    let Some(mut job) = read_job(store, job_id).await? else {
        return Ok(false);
    };
    if !job.running {
        return Ok(false);
    }
    let reported: BTreeSet<MinionId> = job
        .summary
        .hosts
        .iter()
        .map(|h| h.minion_id.clone())
        .collect();
    job.interrupt(now_unix_ms);
    let (record, reports, _) = split(job);
    let unreported = reports
        .iter()
        .filter(|report| !reported.contains(&report.minion_id));
    let mut writes: Vec<TxnOp> = report_writes(store, job_id, unreported).collect();
    writes.push(TxnOp::put(store.keys.job(job_id), encode(&record), None));
    writes.extend(takeover::forget_ownership(store, job_id));
    store.write_all(writes).await?;
    Ok(true)
}

async fn release_lock_of(store: &EtcdStore, jobs: &[String]) -> Result<(), StoreError> {
    super::lock::release_if(store, |held| {
        held.job_id.as_ref().is_some_and(|job| jobs.contains(job))
    })
    .await
    .map(drop)
}

/// Up to `limit` jobs before job `before` (from the newest without it), newest first.
pub(super) async fn newest_before(
    store: &EtcdStore,
    before: Option<&str>,
    limit: usize,
) -> Result<Vec<JobRecord>, StoreError> {
    if limit == 0 {
        return Ok(vec![]);
    }
    let records = match before {
        Some(before) => {
            let options = GetOptions::new()
                .with_range(store.keys.job(before))
                .with_sort(SortTarget::Key, SortOrder::Descend)
                .with_limit(limit_of(limit));
            store.range(store.keys.jobs(), options).await?
        }
        None => store.newest_under(store.keys.jobs(), limit).await?,
    };
    let mut jobs = vec![];
    for kv in &records {
        // A job forgotten between the two reads is left out.
        if let Some(job) = read_job(store, &job_id_of(store, kv)).await? {
            jobs.push(job);
        }
    }
    Ok(jobs)
}

/// The newest job started with `request_id`. The jobs kept are few (retention) and their
/// records small, so a scan from the newest is enough.
pub(super) async fn with_request(
    store: &EtcdStore,
    request_id: &str,
) -> Result<Option<JobRecord>, StoreError> {
    for kv in store.under(store.keys.jobs()).await?.iter().rev() {
        let job_id = job_id_of(store, kv);
        let record: JobRecord = decode(NAME, &job_id, kv.value())?;
        if record.request.as_ref().is_some_and(|r| r.id == request_id) {
            return read_job(store, &job_id).await;
        }
    }
    Ok(None)
}

pub(super) async fn job(store: &EtcdStore, job_id: &str) -> Result<Option<JobRecord>, StoreError> {
    read_job(store, job_id).await
}
