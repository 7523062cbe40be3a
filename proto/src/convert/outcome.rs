//! The outcome of a job: a minion's result, each container's action, a host's final report,
//! its status and timings. Separate because these travel both ways (minion to master, master
//! to caller) and a minion may claim only some of the statuses.

use brine_common::limits::{MAX_CONTAINERS, MAX_ERROR_TEXT, MAX_IMAGE_TEXT, truncate};
use brine_common::names::{ContainerName, MinionId, RoleName};
use brine_common::outcome::{
    ContainerAction, ContainerResult, HostReport, HostStatus, JobId, JobResult, Timings,
};

use super::{InvalidField, bounded, bounded_list, field, optional_string};
use crate::{pb, time};

pub(super) fn host_status_from_wire(status: i32) -> Result<HostStatus, InvalidField> {
    match pb::HostStatus::try_from(status) {
        Ok(pb::HostStatus::Unchanged) => Ok(HostStatus::Unchanged),
        Ok(pb::HostStatus::Changed) => Ok(HostStatus::Changed),
        Ok(pb::HostStatus::Failed) => Ok(HostStatus::Failed),
        Ok(pb::HostStatus::Unreachable) => Ok(HostStatus::Unreachable),
        Ok(pb::HostStatus::TimedOut) => Ok(HostStatus::TimedOut),
        Ok(pb::HostStatus::Skipped) => Ok(HostStatus::Skipped),
        Ok(pb::HostStatus::Interrupted) => Ok(HostStatus::Interrupted),
        _ => Err(InvalidField::new(
            "status",
            format!("unknown host status {status}"),
        )),
    }
}

impl From<HostStatus> for pb::HostStatus {
    fn from(status: HostStatus) -> Self {
        match status {
            HostStatus::Unchanged => pb::HostStatus::Unchanged,
            HostStatus::Changed => pb::HostStatus::Changed,
            HostStatus::Failed => pb::HostStatus::Failed,
            HostStatus::Unreachable => pb::HostStatus::Unreachable,
            HostStatus::TimedOut => pb::HostStatus::TimedOut,
            HostStatus::Skipped => pb::HostStatus::Skipped,
            HostStatus::Interrupted => pb::HostStatus::Interrupted,
        }
    }
}

impl TryFrom<pb::ContainerResult> for ContainerResult {
    type Error = InvalidField;

    fn try_from(c: pb::ContainerResult) -> Result<Self, InvalidField> {
        let action = match pb::ContainerAction::try_from(c.action) {
            Ok(pb::ContainerAction::Kept) => ContainerAction::Kept,
            Ok(pb::ContainerAction::Created) => ContainerAction::Created,
            Ok(pb::ContainerAction::Replaced) => ContainerAction::Replaced,
            Ok(pb::ContainerAction::Removed) => ContainerAction::Removed,
            Ok(pb::ContainerAction::Failed) => ContainerAction::Failed,
            _ => return Err(InvalidField::new("action", "unknown container action")),
        };
        Ok(ContainerResult {
            // A removed container may have been made before '.' was reserved.
            name: field("name", ContainerName::existing(c.name))?,
            role: match optional_string(c.role) {
                Some(role) => Some(field("role", RoleName::new(role))?),
                None => None,
            },
            action,
            image: bounded("image", c.image, MAX_IMAGE_TEXT)?,
            image_digest: bounded("image_digest", c.image_digest, MAX_IMAGE_TEXT)?,
            error: optional_string(bounded("error", c.error, MAX_ERROR_TEXT)?),
            previous_restored: c.previous_restored,
            needs_pull: c.needs_pull,
        })
    }
}

impl From<ContainerResult> for pb::ContainerResult {
    fn from(c: ContainerResult) -> Self {
        pb::ContainerResult {
            name: c.name.into(),
            role: c.role.map(String::from).unwrap_or_default(),
            action: match c.action {
                ContainerAction::Kept => pb::ContainerAction::Kept,
                ContainerAction::Created => pb::ContainerAction::Created,
                ContainerAction::Replaced => pb::ContainerAction::Replaced,
                ContainerAction::Removed => pb::ContainerAction::Removed,
                ContainerAction::Failed => pb::ContainerAction::Failed,
            }
            .into(),
            image: c.image,
            image_digest: c.image_digest,
            error: truncate(c.error.unwrap_or_default(), MAX_ERROR_TEXT),
            previous_restored: c.previous_restored,
            needs_pull: c.needs_pull,
        }
    }
}

fn container_results(
    results: Vec<pb::ContainerResult>,
) -> Result<Vec<ContainerResult>, InvalidField> {
    bounded_list("containers", results, MAX_CONTAINERS)?
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            ContainerResult::try_from(c).map_err(|e| e.within(format!("containers[{i}]")))
        })
        .collect()
}

impl TryFrom<pb::Timings> for Timings {
    type Error = InvalidField;

    fn try_from(t: pb::Timings) -> Result<Self, InvalidField> {
        Ok(Timings {
            pull_ms: time::ms_or_zero("timings.pull", t.pull)?,
            containers_ms: time::ms_or_zero("timings.containers", t.containers)?,
            health_ms: time::ms_or_zero("timings.health", t.health)?,
        })
    }
}

impl From<Timings> for pb::Timings {
    fn from(t: Timings) -> Self {
        pb::Timings {
            pull: Some(time::duration_of_ms(t.pull_ms)),
            containers: Some(time::duration_of_ms(t.containers_ms)),
            health: Some(time::duration_of_ms(t.health_ms)),
        }
    }
}

/// Timings from the wire; unset means none were taken.
fn timings(t: Option<pb::Timings>) -> Result<Timings, InvalidField> {
    t.map(Timings::try_from)
        .transpose()
        .map(Option::unwrap_or_default)
}

impl TryFrom<pb::JobResult> for JobResult {
    type Error = InvalidField;

    fn try_from(r: pb::JobResult) -> Result<Self, InvalidField> {
        let status = host_status_from_wire(r.status)?;
        if !matches!(
            status,
            HostStatus::Unchanged | HostStatus::Changed | HostStatus::Failed
        ) {
            return Err(InvalidField::new(
                "status",
                "a minion reports only unchanged, changed or failed",
            ));
        }
        Ok(JobResult {
            job_id: field("job_id", JobId::new(r.job_id))?,
            status,
            containers: container_results(r.containers)?,
            error: optional_string(bounded("error", r.error, MAX_ERROR_TEXT)?),
            timings: timings(r.timings)?,
        })
    }
}

impl From<JobResult> for pb::JobResult {
    fn from(r: JobResult) -> Self {
        pb::JobResult {
            job_id: r.job_id.into(),
            status: pb::HostStatus::from(r.status).into(),
            containers: r.containers.into_iter().map(Into::into).collect(),
            error: truncate(r.error.unwrap_or_default(), MAX_ERROR_TEXT),
            timings: Some(r.timings.into()),
        }
    }
}

impl TryFrom<pb::HostReport> for HostReport {
    type Error = InvalidField;

    fn try_from(r: pb::HostReport) -> Result<Self, InvalidField> {
        Ok(HostReport {
            minion_id: field("minion_id", MinionId::new(r.minion_id))?,
            status: host_status_from_wire(r.status)?,
            containers: container_results(r.containers)?,
            error: optional_string(r.error),
            duration_ms: time::ms_or_zero("duration", r.duration)?,
            timings: timings(r.timings)?,
            reported_late: r.reported_late,
        })
    }
}

impl From<HostReport> for pb::HostReport {
    fn from(r: HostReport) -> Self {
        pb::HostReport {
            minion_id: r.minion_id.into(),
            status: pb::HostStatus::from(r.status).into(),
            containers: r.containers.into_iter().map(Into::into).collect(),
            error: r.error.unwrap_or_default(),
            duration: Some(time::duration_of_ms(r.duration_ms)),
            timings: Some(r.timings.into()),
            reported_late: r.reported_late,
        }
    }
}
