//! Live progress of a job on a host.

use serde::{Deserialize, Serialize};

/// A step of converging a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Pulling,
    Creating,
    Starting,
    Stopping,
    Removing,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pulling => "pulling",
            Phase::Creating => "creating",
            Phase::Starting => "starting",
            Phase::Stopping => "stopping",
            Phase::Removing => "removing",
        }
    }
}

/// One progress report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    /// An image reference while pulling, a container name otherwise.
    pub subject: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
}
