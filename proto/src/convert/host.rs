//! What a host says about itself: its facts, its running containers and its events (repairs,
//! Docker outages, image pruning). Separate because all of it is what a host wrote about
//! itself, bounded before the master keeps it.

use brine_common::host::{Facts, HostEvent, HostEventKind, RunningContainer};
use brine_common::limits::{MAX_FACT_TEXT, MAX_IMAGE_TEXT, MAX_LABELS, MAX_SHORT_TEXT, truncate};
use brine_common::names::{ContainerName, RoleName, check_label};

use super::{InvalidField, bounded, field};
use crate::{pb, time};

impl TryFrom<pb::Facts> for Facts {
    type Error = InvalidField;

    fn try_from(facts: pb::Facts) -> Result<Self, InvalidField> {
        if facts.labels.len() > MAX_LABELS {
            return Err(InvalidField::new(
                "labels",
                format!(
                    "{} labels; at most {MAX_LABELS} are accepted",
                    facts.labels.len()
                ),
            ));
        }
        for (key, value) in &facts.labels {
            check_label(key, value).map_err(|err| InvalidField::new("labels", err))?;
        }
        Ok(Facts {
            hostname: bounded("hostname", facts.hostname, MAX_FACT_TEXT)?,
            os: bounded("os", facts.os, MAX_FACT_TEXT)?,
            os_id: bounded("os_id", facts.os_id, MAX_FACT_TEXT)?,
            kernel: bounded("kernel", facts.kernel, MAX_FACT_TEXT)?,
            docker_version: bounded("docker_version", facts.docker_version, MAX_FACT_TEXT)?,
            cpus: facts.cpus,
            memory_bytes: facts.memory_bytes,
            labels: facts.labels.into_iter().collect(),
        })
    }
}

impl From<Facts> for pb::Facts {
    fn from(facts: Facts) -> Self {
        pb::Facts {
            hostname: truncate(facts.hostname, MAX_FACT_TEXT),
            os: truncate(facts.os, MAX_FACT_TEXT),
            os_id: truncate(facts.os_id, MAX_FACT_TEXT),
            kernel: truncate(facts.kernel, MAX_FACT_TEXT),
            docker_version: truncate(facts.docker_version, MAX_FACT_TEXT),
            cpus: facts.cpus,
            memory_bytes: facts.memory_bytes,
            labels: facts.labels.into_iter().collect(),
        }
    }
}

impl TryFrom<pb::RunningContainer> for RunningContainer {
    type Error = InvalidField;

    fn try_from(c: pb::RunningContainer) -> Result<Self, InvalidField> {
        Ok(RunningContainer {
            // A report describes containers that exist, maybe from before '.' was reserved.
            name: field("name", ContainerName::existing(c.name))?,
            role: field("role", RoleName::new(c.role))?,
            image: bounded("image", c.image, MAX_IMAGE_TEXT)?,
            image_digest: bounded("image_digest", c.image_digest, MAX_IMAGE_TEXT)?,
            state: bounded("state", c.state, MAX_SHORT_TEXT)?,
            container_id: bounded("container_id", c.container_id, MAX_SHORT_TEXT)?,
        })
    }
}

impl From<RunningContainer> for pb::RunningContainer {
    fn from(c: RunningContainer) -> Self {
        pb::RunningContainer {
            name: c.name.into(),
            role: c.role.into(),
            image: c.image,
            image_digest: c.image_digest,
            state: c.state,
            container_id: c.container_id,
        }
    }
}

impl TryFrom<pb::HostEvent> for HostEvent {
    type Error = InvalidField;

    fn try_from(event: pb::HostEvent) -> Result<Self, InvalidField> {
        let kind = match pb::HostEventKind::try_from(event.kind) {
            Ok(pb::HostEventKind::Repaired) => HostEventKind::Repaired,
            Ok(pb::HostEventKind::RepairFailed) => HostEventKind::RepairFailed,
            Ok(pb::HostEventKind::CrashLooping) => HostEventKind::CrashLooping,
            Ok(pb::HostEventKind::DockerUnavailable) => HostEventKind::DockerUnavailable,
            Ok(pb::HostEventKind::DockerAvailable) => HostEventKind::DockerAvailable,
            Ok(pb::HostEventKind::ImagesRemoved) => HostEventKind::ImagesRemoved,
            Ok(pb::HostEventKind::PruneFailed) => HostEventKind::PruneFailed,
            _ => {
                return Err(InvalidField::new(
                    "kind",
                    format!("unknown event kind {}", event.kind),
                ));
            }
        };
        Ok(HostEvent::new(
            time::unix_ms_or_zero("at", event.at)?,
            kind,
            event.message,
        ))
    }
}

impl From<HostEvent> for pb::HostEvent {
    fn from(event: HostEvent) -> Self {
        pb::HostEvent {
            at: Some(time::timestamp(event.at_unix_ms)),
            kind: match event.kind {
                HostEventKind::Repaired => pb::HostEventKind::Repaired,
                HostEventKind::RepairFailed => pb::HostEventKind::RepairFailed,
                HostEventKind::CrashLooping => pb::HostEventKind::CrashLooping,
                HostEventKind::DockerUnavailable => pb::HostEventKind::DockerUnavailable,
                HostEventKind::DockerAvailable => pb::HostEventKind::DockerAvailable,
                HostEventKind::ImagesRemoved => pb::HostEventKind::ImagesRemoved,
                HostEventKind::PruneFailed => pb::HostEventKind::PruneFailed,
            }
            .into(),
            message: event.message,
        }
    }
}
