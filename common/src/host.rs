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
        Self {
            at_unix_ms,
            kind,
            message: crate::limits::truncate(message.into(), MAX_EVENT_MESSAGE),
        }
    }
}

/// The version a minion says it runs: at most 64 letters, digits, `.`, `-`, `+` and `_`, so it
/// can be shown and logged as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentVersion(String);

impl AgentVersion {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > 64 {
            return Err(format!("must be 1 to 64 characters, not {}", text.len()));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_')))
        {
            return Err(format!("contains {bad:?}"));
        }
        Ok(Self(text.to_owned()))
    }
}

impl std::fmt::Display for AgentVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn a_version_is_a_short_plain_word() {
        assert!(AgentVersion::parse("0.1.0").is_ok());
        assert!(AgentVersion::parse("1.2.3-rc.1+g1234abc").is_ok());
        assert!(AgentVersion::parse("").is_err());
        assert!(AgentVersion::parse("1.0\n INFO fake line").is_err());
        assert!(AgentVersion::parse(&"9".repeat(65)).is_err());
    }
}
