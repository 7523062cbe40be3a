//! Jobs as recorded: running ones with the reports so far, finished ones with every host's
//! final status; how much history is kept, and how a late report or a stopped master changes a
//! record.

use std::time::Duration;

use brine_common::names::MinionId;
use brine_common::outcome::{HostReport, HostStatus, JobSummary};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::job::JobType;

/// A job, running or finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub summary: JobSummary,
    /// The target expression the caller gave (empty for every host).
    pub target: String,
    /// The certificate identity of the caller.
    pub caller: String,
    /// A plan (dry run) that changed nothing.
    #[serde(default)]
    pub plan: bool,
    /// Still running: the summary holds the reports recorded so far.
    #[serde(default)]
    pub running: bool,
    /// Every host the job targets.
    #[serde(default)]
    pub targets: Vec<MinionId>,
    /// The request id the caller gave, so that a repeated call finds this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestRecord>,
    /// The master that runs (or ran) the job, by its name in master.toml: of the masters that
    /// share a store, only that one finishes the job if it stops while the job runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// The lease under which that master holds the job, when masters share a store: a write
    /// of the record is refused once the job is no longer held under it (another master took
    /// it over), so a master cut off from the others never overwrites the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<i64>,
    /// What the job was; `None` in records from before masters kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<JobType>,
    /// For `exec` and `logs`: the role, container and command or log options asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// A caller's request id, and what it asked for under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: String,
    /// A digest of the request's parameters, so a repeat that asks for something else is told
    /// apart from a retry.
    pub fingerprint: String,
}

/// How much job history the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobRetention {
    /// The newest this many jobs are kept (a job still running counts, and is never
    /// forgotten)...
    pub keep: usize,
    /// ...and of those, only the ones that finished within this long.
    pub max_age: Duration,
}

/// The keys of the jobs beyond `retention` at `now_unix_ms`, given how many jobs there are
/// (`total`) and the jobs oldest first (job ids sort by their start time), which are read only
/// as far as needed. A job still running is never forgotten.
pub(super) fn jobs_to_forget(
    total: usize,
    oldest_first: impl Iterator<Item = Result<(String, JobRecord), StoreError>>,
    retention: JobRetention,
    now_unix_ms: i64,
) -> Result<Vec<String>, StoreError> {
    let mut excess = total.saturating_sub(retention.keep.max(1));
    let cutoff = now_unix_ms
        .saturating_sub(i64::try_from(retention.max_age.as_millis()).unwrap_or(i64::MAX));
    let mut forgotten = vec![];
    for job in oldest_first {
        let (key, record) = job?;
        if record.running {
            continue;
        }
        if excess == 0 && record.summary.finished_at_unix_ms >= cutoff {
            break;
        }
        excess = excess.saturating_sub(1);
        forgotten.push(key);
    }
    Ok(forgotten)
}

impl JobRecord {
    /// Whether this job is running and was left so by master `run_by` (by any master when
    /// `None`).
    pub(super) fn is_left_running_by(&self, run_by: Option<&str>) -> bool {
        self.running && run_by.is_none_or(|name| self.master.as_deref() == Some(name))
    }

    /// Puts `report`, which arrived after this finished job had given up on its host, in the
    /// place of the verdict, marked as reported late. Returns the report as recorded, or `None`
    /// (and changes nothing) when the job is running or did not give up on the host.
    pub(super) fn record_late_report(&mut self, report: HostReport) -> Option<HostReport> {
        let running = self.running;
        let slot = self
            .summary
            .hosts
            .iter_mut()
            .find(|h| h.minion_id == report.minion_id)
            .filter(|h| !running && h.gave_up())?;
        *slot = HostReport {
            reported_late: true,
            ..report
        };
        Some(slot.clone())
    }

    /// Finishes this job, left running by a master that stopped, at `now_unix_ms`: every target
    /// without a recorded report is `interrupted`.
    pub(super) fn interrupt(&mut self, now_unix_ms: i64) {
        for target in &self.targets {
            if !self.summary.hosts.iter().any(|h| &h.minion_id == target) {
                self.summary.hosts.push(HostReport {
                    minion_id: target.clone(),
                    status: HostStatus::Interrupted,
                    containers: vec![],
                    error: Some("the master stopped before this host's report was recorded".into()),
                    duration_ms: 0,
                    timings: Default::default(),
                    reported_late: false,
                });
            }
        }
        self.summary
            .hosts
            .sort_by(|a, b| a.minion_id.cmp(&b.minion_id));
        self.summary.finished_at_unix_ms = now_unix_ms;
        self.running = false;
    }
}
