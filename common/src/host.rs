//! What a host reports about itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::{ContainerName, RoleName};

/// Facts a host reports when it connects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub hostname: String,
    pub os: String,
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
