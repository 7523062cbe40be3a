//! The fleet's events (`FleetService.Watch`) and the record of failed hook deliveries.
//! Separate because they are one API of their own: what happened in the fleet, for operators'
//! tools and the CLI, not the events of one job.

use std::collections::BTreeMap;

use brine_common::fleet_event::{
    FleetEvent, FleetEventKind, HookFailure, HostOutcome, JobOutcome, KIND_NAMES, WatchRequest,
};
use brine_common::host::HostEvent;
use brine_common::limits::{MAX_ERROR_TEXT, MAX_SHORT_TEXT};
use brine_common::names::MinionId;
use brine_common::outcome::{HostStatus, JobId};

use super::outcome::host_status_from_wire;
use super::{InvalidField, bounded, field, optional_string, required};
use crate::pb::fleet_event::Kind;
use crate::{pb, time};

/// The wire's kind filter to the kinds' names, and back.
const KINDS: &[(pb::FleetEventKind, &str)] = &[
    (pb::FleetEventKind::HostLinked, "host_linked"),
    (pb::FleetEventKind::HostLost, "host_lost"),
    (pb::FleetEventKind::HostAccepted, "host_accepted"),
    (pb::FleetEventKind::HostRejected, "host_rejected"),
    (pb::FleetEventKind::HostRevoked, "host_revoked"),
    (pb::FleetEventKind::HostDeleted, "host_deleted"),
    (pb::FleetEventKind::JobStarted, "job_started"),
    (pb::FleetEventKind::HostReported, "host_reported"),
    (pb::FleetEventKind::JobFinished, "job_finished"),
    (pb::FleetEventKind::HostEvent, "host_event"),
    (pb::FleetEventKind::HookFailed, "hook_failed"),
];

/// The wire's kind for a kind's name (as `KIND_NAMES` has it), if it is one a watcher can ask
/// for.
pub fn fleet_event_kind(name: &str) -> Option<pb::FleetEventKind> {
    KINDS
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(kind, _)| *kind)
}

/// The kinds' names a watcher can ask for.
pub fn watchable_kinds() -> impl Iterator<Item = &'static str> {
    KINDS.iter().map(|(_, name)| *name)
}

impl TryFrom<pb::WatchRequest> for WatchRequest {
    type Error = InvalidField;

    fn try_from(request: pb::WatchRequest) -> Result<Self, InvalidField> {
        let kinds = request
            .kinds
            .iter()
            .map(|&kind| {
                KINDS
                    .iter()
                    .find(|(k, _)| *k as i32 == kind)
                    .map(|(_, name)| *name)
                    .ok_or_else(|| InvalidField::new("kinds", format!("unknown kind {kind}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(WatchRequest {
            replay_recent: request.replay_recent,
            follow: request.follow,
            kinds,
        })
    }
}

fn minion(name: &str, id: String) -> Result<MinionId, InvalidField> {
    field(name, MinionId::new(id))
}

fn job(name: &str, id: String) -> Result<JobId, InvalidField> {
    field(name, JobId::new(id))
}

fn change(minion_id: MinionId, by: String) -> pb::HostChange {
    pb::HostChange {
        minion_id: minion_id.into(),
        changed_by: by,
    }
}

fn outcome_to_wire(outcome: JobOutcome) -> pb::JobOutcome {
    match outcome {
        JobOutcome::Succeeded => pb::JobOutcome::Succeeded,
        JobOutcome::Partial => pb::JobOutcome::Partial,
        JobOutcome::Failed => pb::JobOutcome::Failed,
        JobOutcome::Cancelled => pb::JobOutcome::Cancelled,
    }
}

fn outcome_from_wire(outcome: i32) -> Result<JobOutcome, InvalidField> {
    match pb::JobOutcome::try_from(outcome) {
        Ok(pb::JobOutcome::Succeeded) => Ok(JobOutcome::Succeeded),
        Ok(pb::JobOutcome::Partial) => Ok(JobOutcome::Partial),
        Ok(pb::JobOutcome::Failed) => Ok(JobOutcome::Failed),
        Ok(pb::JobOutcome::Cancelled) => Ok(JobOutcome::Cancelled),
        _ => Err(InvalidField::new(
            "outcome",
            format!("unknown outcome {outcome}"),
        )),
    }
}

fn counts_to_wire(counts: &BTreeMap<HostStatus, u32>) -> pb::JobCounts {
    let of = |status| counts.get(&status).copied().unwrap_or(0);
    pb::JobCounts {
        unchanged: of(HostStatus::Unchanged),
        changed: of(HostStatus::Changed),
        failed: of(HostStatus::Failed),
        unreachable: of(HostStatus::Unreachable),
        timed_out: of(HostStatus::TimedOut),
        skipped: of(HostStatus::Skipped),
        interrupted: of(HostStatus::Interrupted),
    }
}

fn counts_from_wire(counts: pb::JobCounts) -> BTreeMap<HostStatus, u32> {
    [
        (HostStatus::Unchanged, counts.unchanged),
        (HostStatus::Changed, counts.changed),
        (HostStatus::Failed, counts.failed),
        (HostStatus::Unreachable, counts.unreachable),
        (HostStatus::TimedOut, counts.timed_out),
        (HostStatus::Skipped, counts.skipped),
        (HostStatus::Interrupted, counts.interrupted),
    ]
    .into_iter()
    .filter(|(_, count)| *count > 0)
    .collect()
}

impl From<FleetEvent> for pb::FleetEvent {
    fn from(event: FleetEvent) -> Self {
        let kind = match event.what {
            FleetEventKind::HostLinked { minion_id } => {
                Kind::HostLinked(change(minion_id, String::new()))
            }
            FleetEventKind::HostLost { minion_id } => {
                Kind::HostLost(change(minion_id, String::new()))
            }
            FleetEventKind::HostAccepted { minion_id, by } => {
                Kind::HostAccepted(change(minion_id, by))
            }
            FleetEventKind::HostRejected { minion_id, by } => {
                Kind::HostRejected(change(minion_id, by))
            }
            FleetEventKind::HostRevoked { minion_id, by } => {
                Kind::HostRevoked(change(minion_id, by))
            }
            FleetEventKind::HostDeleted { minion_id, by } => {
                Kind::HostDeleted(change(minion_id, by))
            }
            FleetEventKind::JobStarted {
                job_id,
                job_type,
                caller,
                targets,
            } => Kind::JobStarted(pb::JobStartedEvent {
                job_id: job_id.as_str().to_owned(),
                job_type,
                caller,
                minion_ids: targets.into_iter().map(Into::into).collect(),
            }),
            FleetEventKind::HostReported {
                job_id,
                minion_id,
                status,
                error,
            } => Kind::HostReported(pb::HostReportedEvent {
                job_id: job_id.as_str().to_owned(),
                minion_id: minion_id.into(),
                status: pb::HostStatus::from(status).into(),
                error: error.unwrap_or_default(),
            }),
            FleetEventKind::JobFinished {
                job_id,
                job_type,
                outcome,
                counts,
                hosts,
                cancelled_by,
                duration_ms,
            } => Kind::JobFinished(pb::JobFinishedEvent {
                job_id: job_id.as_str().to_owned(),
                job_type,
                outcome: outcome_to_wire(outcome).into(),
                counts: Some(counts_to_wire(&counts)),
                hosts: hosts
                    .into_iter()
                    .map(|host| pb::HostOutcome {
                        minion_id: host.minion_id.into(),
                        status: pb::HostStatus::from(host.status).into(),
                    })
                    .collect(),
                cancelled_by: cancelled_by.unwrap_or_default(),
                duration: Some(time::duration_of_ms(duration_ms)),
            }),
            FleetEventKind::HostEvent { minion_id, event } => {
                Kind::HostEvent(pb::HostEventReported {
                    minion_id: minion_id.into(),
                    event: Some(event.into()),
                })
            }
            FleetEventKind::HookFailed {
                hook,
                event_sequence,
                event_kind,
                attempts,
                error,
            } => Kind::HookFailed(pb::HookFailure {
                hook,
                event_sequence,
                event_kind,
                attempts,
                error,
                failed_at: None,
            }),
            FleetEventKind::Missed { count } => Kind::Missed(pb::EventsMissed { count }),
        };
        pb::FleetEvent {
            sequence: event.sequence,
            at: Some(time::timestamp(event.at_unix_ms)),
            kind: Some(kind),
        }
    }
}

impl TryFrom<pb::FleetEvent> for FleetEvent {
    type Error = InvalidField;

    fn try_from(event: pb::FleetEvent) -> Result<Self, InvalidField> {
        let host_change =
            |name: &str, change: pb::HostChange| -> Result<(MinionId, String), InvalidField> {
                Ok((
                    minion(&format!("{name}.minion_id"), change.minion_id)?,
                    bounded(
                        &format!("{name}.changed_by"),
                        change.changed_by,
                        MAX_SHORT_TEXT,
                    )?,
                ))
            };
        let what = match required("kind", event.kind)? {
            Kind::HostLinked(c) => FleetEventKind::HostLinked {
                minion_id: host_change("host_linked", c)?.0,
            },
            Kind::HostLost(c) => FleetEventKind::HostLost {
                minion_id: host_change("host_lost", c)?.0,
            },
            Kind::HostAccepted(c) => {
                let (minion_id, by) = host_change("host_accepted", c)?;
                FleetEventKind::HostAccepted { minion_id, by }
            }
            Kind::HostRejected(c) => {
                let (minion_id, by) = host_change("host_rejected", c)?;
                FleetEventKind::HostRejected { minion_id, by }
            }
            Kind::HostRevoked(c) => {
                let (minion_id, by) = host_change("host_revoked", c)?;
                FleetEventKind::HostRevoked { minion_id, by }
            }
            Kind::HostDeleted(c) => {
                let (minion_id, by) = host_change("host_deleted", c)?;
                FleetEventKind::HostDeleted { minion_id, by }
            }
            Kind::JobStarted(started) => FleetEventKind::JobStarted {
                job_id: job("job_started.job_id", started.job_id)?,
                job_type: bounded("job_started.job_type", started.job_type, MAX_SHORT_TEXT)?,
                caller: bounded("job_started.caller", started.caller, MAX_SHORT_TEXT)?,
                targets: started
                    .minion_ids
                    .into_iter()
                    .map(|id| minion("job_started.minion_ids", id))
                    .collect::<Result<_, _>>()?,
            },
            Kind::HostReported(report) => FleetEventKind::HostReported {
                job_id: job("host_reported.job_id", report.job_id)?,
                minion_id: minion("host_reported.minion_id", report.minion_id)?,
                status: host_status_from_wire(report.status)
                    .map_err(|err| err.within("host_reported"))?,
                error: optional_string(bounded(
                    "host_reported.error",
                    report.error,
                    MAX_ERROR_TEXT,
                )?),
            },
            Kind::JobFinished(finished) => FleetEventKind::JobFinished {
                job_id: job("job_finished.job_id", finished.job_id)?,
                job_type: bounded("job_finished.job_type", finished.job_type, MAX_SHORT_TEXT)?,
                outcome: outcome_from_wire(finished.outcome)
                    .map_err(|err| err.within("job_finished"))?,
                counts: counts_from_wire(finished.counts.unwrap_or_default()),
                hosts: finished
                    .hosts
                    .into_iter()
                    .map(|host| {
                        Ok(HostOutcome {
                            minion_id: minion("job_finished.hosts.minion_id", host.minion_id)?,
                            status: host_status_from_wire(host.status)
                                .map_err(|err| err.within("job_finished.hosts"))?,
                        })
                    })
                    .collect::<Result<_, InvalidField>>()?,
                cancelled_by: optional_string(bounded(
                    "job_finished.cancelled_by",
                    finished.cancelled_by,
                    MAX_SHORT_TEXT,
                )?),
                duration_ms: time::ms_or_zero("job_finished.duration", finished.duration)?,
            },
            Kind::HostEvent(reported) => FleetEventKind::HostEvent {
                minion_id: minion("host_event.minion_id", reported.minion_id)?,
                event: HostEvent::try_from(required("host_event.event", reported.event)?)
                    .map_err(|err| err.within("host_event.event"))?,
            },
            Kind::HookFailed(failure) => {
                let failure = hook_failure(failure).map_err(|err| err.within("hook_failed"))?;
                failure.to_event()
            }
            Kind::Missed(missed) => FleetEventKind::Missed {
                count: missed.count,
            },
        };
        Ok(FleetEvent {
            sequence: event.sequence,
            at_unix_ms: time::unix_ms_or_zero("at", event.at)?,
            what,
        })
    }
}

fn hook_failure(failure: pb::HookFailure) -> Result<HookFailure, InvalidField> {
    let event_kind = bounded("event_kind", failure.event_kind, MAX_SHORT_TEXT)?;
    if !KIND_NAMES.contains(&event_kind.as_str()) {
        return Err(InvalidField::new(
            "event_kind",
            format!("unknown kind {event_kind:?}"),
        ));
    }
    Ok(HookFailure {
        hook: bounded("hook", failure.hook, MAX_SHORT_TEXT)?,
        event_sequence: failure.event_sequence,
        event_kind,
        attempts: failure.attempts,
        error: bounded("error", failure.error, MAX_ERROR_TEXT)?,
        failed_at_unix_ms: time::unix_ms_or_zero("failed_at", failure.failed_at)?,
    })
}

impl TryFrom<pb::HookFailure> for HookFailure {
    type Error = InvalidField;

    fn try_from(failure: pb::HookFailure) -> Result<Self, InvalidField> {
        hook_failure(failure)
    }
}

impl From<HookFailure> for pb::HookFailure {
    fn from(failure: HookFailure) -> Self {
        pb::HookFailure {
            hook: failure.hook,
            event_sequence: failure.event_sequence,
            event_kind: failure.event_kind,
            attempts: failure.attempts,
            error: failure.error,
            failed_at: Some(time::timestamp(failure.failed_at_unix_ms)),
        }
    }
}
