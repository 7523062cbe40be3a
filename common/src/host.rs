//! What a host reports about itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::{ContainerName, RoleName};

/// Facts a host reports when it connects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub hostname: String,
    pub os: String,
    /// The OS's short id, e.g. `debian` (`ID` in os-release).
    #[serde(default)]
    pub os_id: String,
    pub kernel: String,
    /// Empty when Docker could not be reached.
    pub docker_version: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    /// Labels from the minion's configuration.
    pub labels: BTreeMap<String, String>,
}

/// A brine-managed container as a host reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningContainer {
    pub name: ContainerName,
    pub role: RoleName,
    pub image: String,
    pub image_digest: String,
    /// Docker's state: `running`, `exited`, ...
    pub state: String,
    pub container_id: String,
}

/// Something that happened on a host outside a job, reported to the master and kept in the
/// host's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEvent {
    /// When, by the host's clock.
    pub at_unix_ms: i64,
    pub kind: HostEventKind,
    /// What happened, for people (at most [`MAX_EVENT_MESSAGE`] bytes).
    pub message: String,
}

/// The longest event message the master keeps; longer ones are cut.
pub const MAX_EVENT_MESSAGE: usize = 2048;

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostEventKind {
    /// Containers that died, were stopped or were removed were brought back.
    Repaired,
    /// A repair did not bring everything back.
    RepairFailed,
    /// Containers keep needing repair; the minion waits longer between repairs.
    CrashLooping,
    /// The Docker engine stopped answering; the minion keeps its link and retries.
    DockerUnavailable,
    /// The Docker engine answers again; the minion checks its containers.
    DockerAvailable,
    /// Images of releases older than the ones kept were removed after a successful job.
    ImagesRemoved,
    /// Removing old images failed; the job they followed is not affected.
    PruneFailed,
}

impl HostEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HostEventKind::Repaired => "repaired",
            HostEventKind::RepairFailed => "repair_failed",
            HostEventKind::CrashLooping => "crash_looping",
            HostEventKind::DockerUnavailable => "docker_unavailable",
            HostEventKind::DockerAvailable => "docker_available",
            HostEventKind::ImagesRemoved => "images_removed",
            HostEventKind::PruneFailed => "prune_failed",
        }
    }
}

impl HostEvent {
    /// An event now, its message cut to [`MAX_EVENT_MESSAGE`] bytes.
    pub fn new(at_unix_ms: i64, kind: HostEventKind, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_EVENT_MESSAGE {
            let mut end = MAX_EVENT_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Self {
            at_unix_ms,
            kind,
            message,
        }
    }
}
