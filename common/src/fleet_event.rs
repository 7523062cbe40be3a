//! What happens in the fleet, as the master tells watchers (`FleetService.Watch`,
//! `brine-master events`) and hooks: links, admission, jobs, what hosts report between jobs,
//! and hooks that failed.
//!
//! The JSON form (serde) is a documented interface: it is what hooks receive and what
//! `brine-master events --output json` prints, one object per line. Field names are stable;
//! new kinds and fields may be added.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::host::HostEvent;
use crate::names::MinionId;
use crate::outcome::{HostStatus, JobId, JobSummary};

/// One event, numbered by the master that published it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetEvent {
    /// Counts up from 1 for each event a master publishes; 0 marks a [`FleetEventKind::Missed`]
    /// marker, which is not an event of the fleet.
    pub sequence: u64,
    /// When the master published it, by its clock.
    pub at_unix_ms: i64,
    #[serde(flatten)]
    pub what: FleetEventKind,
}

/// What happened. The JSON form carries it as `"kind": "host_linked"` beside its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FleetEventKind {
    /// A host's link to this master is up.
    HostLinked { minion_id: MinionId },
    /// A host's link to this master ended.
    HostLost { minion_id: MinionId },
    /// An operator admitted a host (`minions accept`).
    HostAccepted { minion_id: MinionId, by: String },
    /// An operator turned a host away (`minions reject`).
    HostRejected { minion_id: MinionId, by: String },
    /// An operator revoked a host (`minions revoke`).
    HostRevoked { minion_id: MinionId, by: String },
    /// An operator deleted a host (`minions delete`).
    HostDeleted { minion_id: MinionId, by: String },
    /// A job was accepted and sends its first commands.
    JobStarted {
        job_id: JobId,
        /// `highstate`, `plan`, `deploy` or `rollback`.
        job_type: String,
        /// The certificate identity that started it.
        caller: String,
        /// The hosts it targets, sorted.
        targets: Vec<MinionId>,
    },
    /// One host of a job reached its final status.
    HostReported {
        job_id: JobId,
        minion_id: MinionId,
        status: HostStatus,
        /// Why the host did not succeed, as it (or the master) said; host-written text.
        error: Option<String>,
    },
    /// Every host of a job has its final status.
    JobFinished {
        job_id: JobId,
        job_type: String,
        outcome: JobOutcome,
        /// How many hosts ended in each status (statuses with none left out).
        counts: BTreeMap<HostStatus, u32>,
        /// Each host's final status, sorted by host.
        hosts: Vec<HostOutcome>,
        /// Who cancelled the job, if someone did.
        cancelled_by: Option<String>,
        /// From the start to the last report.
        duration_ms: u64,
    },
    /// A host reported something it did between jobs: a repair, a crash loop, Docker going
    /// away or back, old images removed.
    HostEvent {
        minion_id: MinionId,
        /// Its time is the host's; its message is host-written text.
        event: HostEvent,
    },
    /// A hook did not take an event, after its retries (or its queue was full).
    HookFailed {
        /// The hook's name in master.toml.
        hook: String,
        /// The event it was given.
        event_sequence: u64,
        event_kind: String,
        /// How many times delivery was tried (0: the hook's queue was full).
        attempts: u32,
        /// Why the last try failed.
        error: String,
    },
    /// The watcher fell behind and `count` events were not sent to it.
    Missed { count: u64 },
}

/// A delivery to a hook that failed after its retries, or was dropped because the hook's queue
/// was full, as the master keeps it for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookFailure {
    pub hook: String,
    pub event_sequence: u64,
    pub event_kind: String,
    /// 0 when the event was dropped without a try.
    pub attempts: u32,
    pub error: String,
    pub failed_at_unix_ms: i64,
}

impl HookFailure {
    /// The event that tells watchers of this failure.
    pub fn to_event(&self) -> FleetEventKind {
        FleetEventKind::HookFailed {
            hook: self.hook.clone(),
            event_sequence: self.event_sequence,
            event_kind: self.event_kind.clone(),
            attempts: self.attempts,
            error: self.error.clone(),
        }
    }
}

/// What a watcher asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchRequest {
    /// The recent events the master keeps first.
    pub replay_recent: bool,
    /// Then live events until the watcher goes away.
    pub follow: bool,
    /// Only these kinds (names from [`KIND_NAMES`]); every kind when empty.
    pub kinds: std::collections::BTreeSet<&'static str>,
}

impl WatchRequest {
    /// Whether the watcher wants `event` (a [`FleetEventKind::Missed`] marker always).
    pub fn wants(&self, event: &FleetEventKind) -> bool {
        self.kinds.is_empty()
            || matches!(event, FleetEventKind::Missed { .. })
            || self.kinds.contains(event.name())
    }
}

/// One host's final status in a finished job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostOutcome {
    pub minion_id: MinionId,
    pub status: HostStatus,
}

/// How a job ended, over all its hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    /// Every host ended unchanged or changed.
    Succeeded,
    /// Some hosts succeeded, others did not.
    Partial,
    /// No host succeeded (or the job had none).
    Failed,
    /// Someone cancelled it.
    Cancelled,
}

impl JobOutcome {
    pub fn of(summary: &JobSummary) -> Self {
        let succeeded = summary
            .hosts
            .iter()
            .filter(|h| h.status.is_success())
            .count();
        if summary.cancelled_by.is_some() {
            JobOutcome::Cancelled
        } else if !summary.hosts.is_empty() && succeeded == summary.hosts.len() {
            JobOutcome::Succeeded
        } else if succeeded == 0 {
            JobOutcome::Failed
        } else {
            JobOutcome::Partial
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Partial => "partial",
            JobOutcome::Failed => "failed",
            JobOutcome::Cancelled => "cancelled",
        }
    }
}

/// Every kind's name, as the JSON form's `kind` and the hooks' `on` say it.
pub const KIND_NAMES: &[&str] = &[
    "host_linked",
    "host_lost",
    "host_accepted",
    "host_rejected",
    "host_revoked",
    "host_deleted",
    "job_started",
    "host_reported",
    "job_finished",
    "host_event",
    "hook_failed",
    "missed",
];

impl FleetEventKind {
    /// The kind's name, one of [`KIND_NAMES`].
    pub fn name(&self) -> &'static str {
        match self {
            FleetEventKind::HostLinked { .. } => "host_linked",
            FleetEventKind::HostLost { .. } => "host_lost",
            FleetEventKind::HostAccepted { .. } => "host_accepted",
            FleetEventKind::HostRejected { .. } => "host_rejected",
            FleetEventKind::HostRevoked { .. } => "host_revoked",
            FleetEventKind::HostDeleted { .. } => "host_deleted",
            FleetEventKind::JobStarted { .. } => "job_started",
            FleetEventKind::HostReported { .. } => "host_reported",
            FleetEventKind::JobFinished { .. } => "job_finished",
            FleetEventKind::HostEvent { .. } => "host_event",
            FleetEventKind::HookFailed { .. } => "hook_failed",
            FleetEventKind::Missed { .. } => "missed",
        }
    }

    /// The word hooks filter on with `status`: a finished job's outcome, a host report's
    /// status, a host event's kind; other kinds have none.
    pub fn status(&self) -> Option<&'static str> {
        match self {
            FleetEventKind::JobFinished { outcome, .. } => Some(outcome.as_str()),
            FleetEventKind::HostReported { status, .. } => Some(status.as_str()),
            FleetEventKind::HostEvent { event, .. } => Some(event.kind.as_str()),
            _ => None,
        }
    }

    /// The host the event is about, if it is about one.
    pub fn minion_id(&self) -> Option<&MinionId> {
        match self {
            FleetEventKind::HostLinked { minion_id }
            | FleetEventKind::HostLost { minion_id }
            | FleetEventKind::HostAccepted { minion_id, .. }
            | FleetEventKind::HostRejected { minion_id, .. }
            | FleetEventKind::HostRevoked { minion_id, .. }
            | FleetEventKind::HostDeleted { minion_id, .. }
            | FleetEventKind::HostReported { minion_id, .. }
            | FleetEventKind::HostEvent { minion_id, .. } => Some(minion_id),
            _ => None,
        }
    }

    /// A finished job's event, from its summary.
    pub fn job_finished(job_type: &str, summary: &JobSummary) -> Self {
        let mut counts = BTreeMap::new();
        for host in &summary.hosts {
            *counts.entry(host.status).or_insert(0u32) += 1;
        }
        FleetEventKind::JobFinished {
            job_id: summary.job_id.clone(),
            job_type: job_type.to_owned(),
            outcome: JobOutcome::of(summary),
            counts,
            hosts: summary
                .hosts
                .iter()
                .map(|h| HostOutcome {
                    minion_id: h.minion_id.clone(),
                    status: h.status,
                })
                .collect(),
            cancelled_by: summary.cancelled_by.clone(),
            duration_ms: u64::try_from(
                summary
                    .finished_at_unix_ms
                    .saturating_sub(summary.started_at_unix_ms),
            )
            .unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::HostReport;

    fn report(id: &str, status: HostStatus) -> HostReport {
        HostReport {
            minion_id: MinionId::new(id).unwrap(),
            status,
            containers: vec![],
            error: None,
            duration_ms: 0,
            timings: Default::default(),
            reported_late: false,
        }
    }

    fn summary(hosts: Vec<HostReport>, cancelled_by: Option<&str>) -> JobSummary {
        JobSummary {
            job_id: JobId::new("j-1").unwrap(),
            hosts,
            started_at_unix_ms: 1_000,
            finished_at_unix_ms: 3_500,
            resolve_ms: 0,
            cancelled_by: cancelled_by.map(str::to_owned),
        }
    }

    #[test]
    fn a_jobs_outcome_is_over_all_its_hosts() {
        let ok = report("web-1", HostStatus::Changed);
        let bad = report("web-2", HostStatus::Failed);
        let of = |hosts, by| JobOutcome::of(&summary(hosts, by));
        assert_eq!(of(vec![ok.clone()], None), JobOutcome::Succeeded);
        assert_eq!(of(vec![ok.clone(), bad.clone()], None), JobOutcome::Partial);
        assert_eq!(of(vec![bad.clone()], None), JobOutcome::Failed);
        assert_eq!(of(vec![], None), JobOutcome::Failed);
        assert_eq!(of(vec![ok], Some("admin")), JobOutcome::Cancelled);
    }

    #[test]
    fn the_json_form_names_the_kind_beside_its_fields() {
        let what = FleetEventKind::job_finished(
            "deploy",
            &summary(
                vec![
                    report("web-1", HostStatus::Changed),
                    report("web-2", HostStatus::Failed),
                ],
                None,
            ),
        );
        assert_eq!(what.status(), Some("partial"));
        let event = FleetEvent {
            sequence: 7,
            at_unix_ms: 42,
            what,
        };
        let json: serde_json::Value = serde_json::to_value(&event).unwrap();
        assert_eq!(json["kind"], "job_finished");
        assert_eq!(json["sequence"], 7);
        assert_eq!(json["outcome"], "partial");
        assert_eq!(json["counts"]["failed"], 1);
        assert_eq!(json["hosts"][1]["minion_id"], "web-2");
        assert_eq!(json["duration_ms"], 2_500);
        let back: FleetEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn every_kind_is_named_in_the_list() {
        let id = MinionId::new("web-1").unwrap();
        let kinds = [
            FleetEventKind::HostLinked {
                minion_id: id.clone(),
            },
            FleetEventKind::HostEvent {
                minion_id: id,
                event: HostEvent::new(1, crate::host::HostEventKind::CrashLooping, "web: exited"),
            },
            FleetEventKind::Missed { count: 3 },
        ];
        for kind in kinds {
            assert!(KIND_NAMES.contains(&kind.name()), "{}", kind.name());
            let json = serde_json::to_value(&kind).unwrap();
            assert_eq!(json["kind"], kind.name());
        }
    }
}
