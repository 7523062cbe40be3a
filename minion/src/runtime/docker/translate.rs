//! Translation between the runtime's types and bollard's models: a listed container, an
//! inspected one, the body of a create, image references as the engine wants them, and a
//! pull's progress. It does no IO; it is separate from the calls to the engine so that what
//! brine reads from Docker and asks of it is read, and unit-tested, on its own.

use std::collections::HashMap;
use std::net::IpAddr;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    CreateImageInfo, HealthStatusEnum, HostConfig, PortBinding, PortSummary, PortSummaryTypeEnum,
    RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum,
};
use brine_common::spec::{ImageRef, PortMapping, Protocol, RestartPolicy};

use crate::runtime::{
    ContainerStatus, CreateRequest, DockerHealth, ObservedContainer, PullProgress,
};

/// The health-relevant part of `docker inspect`. Missing fields read as "not running" and "no
/// health check", which a health check then reports instead of passing.
pub(super) fn status(inspected: ContainerInspectResponse) -> ContainerStatus {
    let state = inspected.state.unwrap_or_default();
    // `Running` stays true while Docker restarts a crashed process; only the status tells.
    let running = state.status == Some(ContainerStateStatusEnum::RUNNING);
    // A HEALTHCHECK of the image is merged into the container's config when it is created;
    // `["NONE"]` switches it off.
    let configured = inspected
        .config
        .and_then(|config| config.healthcheck)
        .and_then(|check| check.test)
        .is_some_and(|test| test.first().is_some_and(|kind| kind != "NONE"));
    let docker_health = match state.health.and_then(|health| health.status) {
        Some(HealthStatusEnum::HEALTHY) => Some(DockerHealth::Healthy),
        Some(HealthStatusEnum::UNHEALTHY) => Some(DockerHealth::Unhealthy),
        Some(HealthStatusEnum::STARTING) => Some(DockerHealth::Starting),
        Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) | None => {
            configured.then_some(DockerHealth::Starting)
        }
    };
    ContainerStatus {
        running,
        exit_code: state.exit_code.unwrap_or(0),
        restart_count: inspected.restart_count.unwrap_or(0),
        docker_health,
        ip_address: ip_address(inspected.network_settings.and_then(|n| n.networks)),
    }
}

/// The container's address: on the default `bridge` network when it is attached there (brine
/// creates containers there), else on the first network by name that gave it one.
pub(super) fn ip_address(
    networks: Option<HashMap<String, bollard::models::EndpointSettings>>,
) -> Option<IpAddr> {
    let mut networks: Vec<(String, bollard::models::EndpointSettings)> =
        networks.unwrap_or_default().into_iter().collect();
    networks.sort_by_key(|(name, _)| (name != "bridge", name.clone()));
    networks
        .into_iter()
        .find_map(|(_, endpoint)| endpoint.ip_address.and_then(|ip| ip.parse::<IpAddr>().ok()))
}

/// A host port a running container holds, as a mapping its successor's can be compared with.
/// Docker writes "every address" as `0.0.0.0` or `::`, which overlaps any other address.
pub(super) fn published(port: &PortSummary) -> Option<PortMapping> {
    let protocol = match port.typ {
        Some(PortSummaryTypeEnum::TCP) => Protocol::Tcp,
        Some(PortSummaryTypeEnum::UDP) => Protocol::Udp,
        _ => return None,
    };
    Some(PortMapping {
        host_ip: host_address(port.ip.as_deref()),
        host_port: Some(port.public_port?),
        container_port: port.private_port,
        protocol,
    })
}

/// brine's view of a listed container; one without an id cannot be acted on, so it is skipped.
pub(super) fn observed(summary: ContainerSummary) -> Option<ObservedContainer> {
    let id = summary.id?;
    // Legacy links add aliases such as `/other/alias`; the container's own name has one `/`.
    let docker_name = summary
        .names
        .unwrap_or_default()
        .iter()
        .map(|name| name.trim_start_matches('/'))
        .find(|name| !name.contains('/'))
        .unwrap_or_default()
        .to_owned();
    // Docker's summary says so only in its status text: `Up 3 minutes (unhealthy)`.
    let unhealthy = summary
        .status
        .as_deref()
        .is_some_and(|status| status.contains("(unhealthy)"));
    Some(ObservedContainer {
        id,
        docker_name,
        unhealthy,
        image: summary.image.unwrap_or_default(),
        image_id: summary.image_id.unwrap_or_default(),
        state: summary
            .state
            .map(|state| state.to_string())
            .unwrap_or_default(),
        labels: summary.labels.unwrap_or_default(),
        published: summary
            .ports
            .unwrap_or_default()
            .iter()
            .filter_map(published)
            .collect(),
    })
}

/// brine's view of an inspected container, as [`observed`] reads a listed one. An inspection
/// reads the container itself, while a listing may still show the state from before its last
/// event.
pub(super) fn observed_inspected(inspected: ContainerInspectResponse) -> Option<ObservedContainer> {
    let id = inspected.id?;
    let state = inspected.state.unwrap_or_default();
    let config = inspected.config.unwrap_or_default();
    let ports = inspected
        .network_settings
        .and_then(|network| network.ports)
        .unwrap_or_default();
    let mut published: Vec<PortMapping> = ports
        .into_iter()
        .flat_map(|(port, bindings)| {
            bindings
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |binding| bound(&port, &binding))
        })
        .collect();
    published.sort_by_key(|p| (p.container_port, p.host_port, p.host_ip));
    Some(ObservedContainer {
        id,
        docker_name: inspected
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        image: config.image.unwrap_or_default(),
        image_id: inspected.image.unwrap_or_default(),
        state: state.status.map(|s| s.to_string()).unwrap_or_default(),
        labels: config.labels.unwrap_or_default(),
        published,
        unhealthy: state.health.and_then(|health| health.status)
            == Some(HealthStatusEnum::UNHEALTHY),
    })
}

/// A host port bound to `port` (`8080/tcp`), as [`published`] reads one from a listing.
fn bound(port: &str, binding: &PortBinding) -> Option<PortMapping> {
    let (container_port, protocol) = port.split_once('/')?;
    let protocol = match protocol {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    Some(PortMapping {
        host_ip: host_address(binding.host_ip.as_deref()),
        host_port: Some(binding.host_port.as_deref()?.parse().ok()?),
        container_port: container_port.parse().ok()?,
        protocol,
    })
}

/// The address a host port is bound to; `None` for every address (`0.0.0.0`, `::` or none).
fn host_address(ip: Option<&str>) -> Option<IpAddr> {
    ip.and_then(|ip| ip.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified())
}

pub(super) fn container_body(request: &CreateRequest) -> ContainerCreateBody {
    let spec = &request.spec;
    // Several host ports may publish the same container port; Docker wants them under one key.
    let mut bindings: HashMap<String, Vec<PortBinding>> = HashMap::new();
    for port in spec.docker_ports() {
        bindings
            .entry(format!(
                "{}/{}",
                port.container_port,
                port.protocol.as_str()
            ))
            .or_default()
            .push(PortBinding {
                host_ip: Some(port.host_ip.map(|ip| ip.to_string()).unwrap_or_default()),
                host_port: Some(port.host_port.map(|p| p.to_string()).unwrap_or_default()),
            });
    }
    let binds = spec
        .volumes
        .iter()
        .map(|volume| {
            let mode = if volume.read_only { ":ro" } else { "" };
            format!("{}:{}{mode}", volume.source, volume.target)
        })
        .collect();
    ContainerCreateBody {
        image: Some(EngineReference::of(&spec.image).to_string()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(spec.environment()),
        labels: Some(request.labels.clone()),
        exposed_ports: Some(bindings.keys().cloned().collect()),
        stop_timeout: Some(i64::from(spec.stop_timeout_seconds)),
        host_config: Some(HostConfig {
            port_bindings: Some(
                bindings
                    .into_iter()
                    .map(|(port, hosts)| (port, Some(hosts)))
                    .collect(),
            ),
            binds: Some(binds),
            restart_policy: Some(restart_policy(spec.restart)),
            // A PID 1 that ignores SIGTERM would otherwise make every stop wait out its timeout.
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn restart_policy(policy: RestartPolicy) -> DockerRestartPolicy {
    let name = match policy {
        RestartPolicy::No => RestartPolicyNameEnum::NO,
        RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
        RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
        RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
    };
    DockerRestartPolicy {
        name: Some(name),
        maximum_retry_count: None,
    }
}

/// What the engine is asked for: the repository, and the digest when the reference is pinned
/// (the tag is then only for people to read) or else the tag (`latest` when there is none, as
/// a bare repository would make the engine pull every tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EngineReference {
    pub(super) repository: String,
    pub(super) tag_or_digest: String,
}

impl EngineReference {
    pub(super) fn of(image: &ImageRef) -> Self {
        let parts = image.parts();
        let repository = match parts.domain {
            Some(domain) => format!("{domain}/{}", parts.path),
            None => parts.path.to_owned(),
        };
        Self {
            repository,
            tag_or_digest: parts.digest.or(parts.tag).unwrap_or("latest").to_owned(),
        }
    }
}

impl std::fmt::Display for EngineReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A digest (`sha256:...`) follows `@`, a tag `:`.
        let separator = if self.tag_or_digest.contains(':') {
            '@'
        } else {
            ':'
        };
        write!(f, "{}{separator}{}", self.repository, self.tag_or_digest)
    }
}

/// The short form Docker writes in `RepoDigests` (`nginx` for `docker.io/library/nginx`), so a
/// repository matches however the spec spelled it.
pub(super) fn familiar(repository: &str) -> &str {
    let short = repository
        .strip_prefix("docker.io/")
        .or_else(|| repository.strip_prefix("index.docker.io/"))
        .unwrap_or(repository);
    match short.strip_prefix("library/") {
        Some(name) if !name.contains('/') => name,
        _ => short,
    }
}

/// Download progress per layer. Only downloads count: the engine then reports each layer's
/// extraction with its own current/total, which would make the sum go backwards.
#[derive(Default)]
pub(super) struct PullTally {
    layers: HashMap<String, PullProgress>,
}

impl PullTally {
    pub(super) fn record(&mut self, info: &CreateImageInfo) {
        let (Some(layer), Some(status)) = (&info.id, &info.status) else {
            return;
        };
        match (status.as_str(), &info.progress_detail) {
            ("Downloading", Some(detail)) => {
                let entry = self.layers.entry(layer.clone()).or_default();
                entry.bytes_done = bytes(detail.current);
                // The engine sends no (or a negative) total when the registry gave no size.
                entry.bytes_total = bytes(detail.total).max(entry.bytes_done);
            }
            // Whatever comes after a layer's download says it is downloaded: the engine does
            // not always send "Download complete" (a layer that arrived between two progress
            // messages goes straight to checking and extracting).
            ("Download complete" | "Verifying Checksum" | "Extracting" | "Pull complete", _) => {
                if let Some(entry) = self.layers.get_mut(layer) {
                    entry.bytes_done = entry.bytes_total;
                }
            }
            _ => {}
        }
    }

    /// The pull succeeded: every layer it downloaded is whole, whatever the engine last said.
    pub(super) fn complete(&mut self) {
        for layer in self.layers.values_mut() {
            layer.bytes_done = layer.bytes_total;
        }
    }

    pub(super) fn sum(&self) -> PullProgress {
        self.layers
            .values()
            .fold(PullProgress::default(), |sum, layer| PullProgress {
                bytes_done: sum.bytes_done.saturating_add(layer.bytes_done),
                bytes_total: sum.bytes_total.saturating_add(layer.bytes_total),
            })
    }
}

fn bytes(count: Option<i64>) -> u64 {
    count.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}
