//! What a running job streams: a step's progress on a host, and the events of a highstate
//! (started, progress, a host finished, the summary). Separate because they are the messages of
//! one stream, from the minion through the master to the caller.

use brine_common::limits::MAX_IMAGE_TEXT;
use brine_common::names::MinionId;
use brine_common::outcome::{HighstateEvent, HostReport, HostStatus, JobId, JobSummary};
use brine_common::progress::{Phase, Progress};

use super::{InvalidField, bounded, field, required};
use crate::pb::job_event::Kind;
use crate::{pb, time};

impl TryFrom<pb::JobEvent> for HighstateEvent {
    type Error = InvalidField;

    fn try_from(event: pb::JobEvent) -> Result<Self, InvalidField> {
        Ok(match required("kind", event.kind)? {
            Kind::Started(started) => HighstateEvent::Started {
                job_id: field("started.job_id", JobId::new(started.job_id))?,
                targets: started
                    .minion_ids
                    .into_iter()
                    .map(|t| field("started.minion_ids", MinionId::new(t)))
                    .collect::<Result<_, _>>()?,
                not_accepted: started.not_accepted,
            },
            Kind::Progress(p) => HighstateEvent::Progress {
                minion_id: field("progress.minion_id", MinionId::new(p.minion_id))?,
                progress: Progress::try_from(required("progress.progress", p.progress)?)
                    .map_err(|e| e.within("progress"))?,
            },
            Kind::HostFinished(report) => HighstateEvent::HostFinished(
                HostReport::try_from(report).map_err(|e| e.within("host_finished"))?,
            ),
            Kind::Summary(summary) => HighstateEvent::Summary(JobSummary {
                job_id: field("summary.job_id", JobId::new(summary.job_id))?,
                hosts: summary
                    .hosts
                    .into_iter()
                    .map(|h| HostReport::try_from(h).map_err(|e| e.within("summary.hosts")))
                    .collect::<Result<_, _>>()?,
                started_at_unix_ms: time::unix_ms_or_zero(
                    "summary.started_at",
                    summary.started_at,
                )?,
                finished_at_unix_ms: time::unix_ms_or_zero(
                    "summary.finished_at",
                    summary.finished_at,
                )?,
                resolve_ms: time::ms_or_zero("summary.resolve", summary.resolve)?,
                cancelled_by: super::optional_string(summary.cancelled_by),
            }),
        })
    }
}

impl From<HighstateEvent> for pb::JobEvent {
    fn from(event: HighstateEvent) -> Self {
        let kind = match event {
            HighstateEvent::Started {
                job_id,
                targets,
                not_accepted,
            } => Kind::Started(pb::JobStarted {
                job_id: job_id.into(),
                minion_ids: targets.into_iter().map(Into::into).collect(),
                not_accepted,
                attached: false,
            }),
            HighstateEvent::Progress {
                minion_id,
                progress,
            } => Kind::Progress(pb::HostProgress {
                minion_id: minion_id.into(),
                progress: Some(progress.into()),
            }),
            HighstateEvent::HostFinished(report) => Kind::HostFinished(report.into()),
            HighstateEvent::Summary(summary) => Kind::Summary(summary.into()),
        };
        pb::JobEvent { kind: Some(kind) }
    }
}

impl From<JobSummary> for pb::JobSummary {
    fn from(summary: JobSummary) -> Self {
        pb::JobSummary {
            counts: Some(counts(&summary.hosts)),
            job_id: summary.job_id.into(),
            hosts: summary.hosts.into_iter().map(Into::into).collect(),
            started_at: time::timestamp_if_known(summary.started_at_unix_ms),
            finished_at: time::timestamp_if_known(summary.finished_at_unix_ms),
            resolve: Some(time::duration_of_ms(summary.resolve_ms)),
            cancelled_by: summary.cancelled_by.unwrap_or_default(),
            hosts_in_events: false,
        }
    }
}

/// How many of `hosts` ended in each status.
fn counts(hosts: &[HostReport]) -> pb::JobCounts {
    let mut counts = pb::JobCounts::default();
    for host in hosts {
        let count = match host.status {
            HostStatus::Unchanged => &mut counts.unchanged,
            HostStatus::Changed => &mut counts.changed,
            HostStatus::Failed => &mut counts.failed,
            HostStatus::Unreachable => &mut counts.unreachable,
            HostStatus::TimedOut => &mut counts.timed_out,
            HostStatus::Skipped => &mut counts.skipped,
            HostStatus::Interrupted => &mut counts.interrupted,
        };
        *count += 1;
    }
    counts
}

impl TryFrom<pb::Progress> for Progress {
    type Error = InvalidField;

    fn try_from(p: pb::Progress) -> Result<Self, InvalidField> {
        let phase = match pb::Phase::try_from(p.phase) {
            Ok(pb::Phase::Pulling) => Phase::Pulling,
            Ok(pb::Phase::Creating) => Phase::Creating,
            Ok(pb::Phase::Starting) => Phase::Starting,
            Ok(pb::Phase::Stopping) => Phase::Stopping,
            Ok(pb::Phase::Removing) => Phase::Removing,
            _ => return Err(InvalidField::new("phase", "unknown phase")),
        };
        Ok(Progress {
            phase,
            subject: bounded("subject", p.subject, MAX_IMAGE_TEXT)?,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
        })
    }
}

impl From<Progress> for pb::Progress {
    fn from(p: Progress) -> Self {
        pb::Progress {
            phase: match p.phase {
                Phase::Pulling => pb::Phase::Pulling,
                Phase::Creating => pb::Phase::Creating,
                Phase::Starting => pb::Phase::Starting,
                Phase::Stopping => pb::Phase::Stopping,
                Phase::Removing => pb::Phase::Removing,
            }
            .into(),
            subject: p.subject,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
        }
    }
}
