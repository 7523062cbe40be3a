//! What a running job streams: a step's progress on a host, and the events of a highstate
//! (started, progress, a host finished, the summary). Separate because they are the messages of
//! one stream, from the minion through the master to the caller.

use brine_common::limits::MAX_IMAGE_TEXT;
use brine_common::names::MinionId;
use brine_common::outcome::{HighstateEvent, HostReport, JobId, JobSummary};
use brine_common::progress::{Phase, Progress};

use super::{InvalidField, bounded, field, required};
use crate::pb;
use crate::pb::highstate_event::Kind;

impl TryFrom<pb::HighstateEvent> for HighstateEvent {
    type Error = InvalidField;

    fn try_from(event: pb::HighstateEvent) -> Result<Self, InvalidField> {
        Ok(match required("kind", event.kind)? {
            Kind::Started(started) => HighstateEvent::Started {
                job_id: field("started.job_id", JobId::new(started.job_id))?,
                targets: started
                    .targets
                    .into_iter()
                    .map(|t| field("started.targets", MinionId::new(t)))
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
                started_at_unix_ms: summary.started_at_unix_ms,
                finished_at_unix_ms: summary.finished_at_unix_ms,
                resolve_ms: summary.resolve_ms,
                cancelled_by: super::optional_string(summary.cancelled_by),
            }),
        })
    }
}

impl From<HighstateEvent> for pb::HighstateEvent {
    fn from(event: HighstateEvent) -> Self {
        let kind = match event {
            HighstateEvent::Started {
                job_id,
                targets,
                not_accepted,
            } => Kind::Started(pb::JobStarted {
                job_id: job_id.into(),
                targets: targets.into_iter().map(Into::into).collect(),
                not_accepted,
            }),
            HighstateEvent::Progress {
                minion_id,
                progress,
            } => Kind::Progress(pb::HostProgress {
                minion_id: minion_id.into(),
                progress: Some(progress.into()),
            }),
            HighstateEvent::HostFinished(report) => Kind::HostFinished(report.into()),
            HighstateEvent::Summary(summary) => Kind::Summary(pb::JobSummary {
                job_id: summary.job_id.into(),
                hosts: summary.hosts.into_iter().map(Into::into).collect(),
                started_at_unix_ms: summary.started_at_unix_ms,
                finished_at_unix_ms: summary.finished_at_unix_ms,
                resolve_ms: summary.resolve_ms,
                cancelled_by: summary.cancelled_by.unwrap_or_default(),
                hosts_in_events: false,
            }),
        };
        pb::HighstateEvent { kind: Some(kind) }
    }
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
