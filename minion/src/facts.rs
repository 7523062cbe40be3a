//! The facts a host reports when it connects.

use std::collections::BTreeMap;

use brine_common::host::Facts;
use sysinfo::System;

use crate::runtime::ContainerRuntime;

/// Gathers this host's facts; the Docker version is empty when Docker does not answer.
pub async fn gather(runtime: &impl ContainerRuntime, labels: &BTreeMap<String, String>) -> Facts {
    let docker_version = match runtime.version().await {
        Ok(version) => version,
        Err(err) => {
            tracing::warn!("cannot read the Docker version: {err}");
            String::new()
        }
    };
    let memory_bytes = match System::new() {
        Ok(mut system) => {
            system.refresh_memory();
            system.total_memory()
        }
        Err(err) => {
            tracing::warn!("cannot read the memory size: {err}");
            0
        }
    };
    Facts {
        hostname: System::host_name().unwrap_or_default(),
        os: System::long_os_version().unwrap_or_default(),
        os_id: System::distribution_id(),
        kernel: System::kernel_version().unwrap_or_default(),
        docker_version,
        cpus: std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1),
        memory_bytes,
        labels: labels.clone(),
    }
}
