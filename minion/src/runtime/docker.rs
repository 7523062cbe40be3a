//! [`ContainerRuntime`] over the Docker Engine API, through bollard.

use std::collections::{BTreeMap, HashMap};
use std::error::Error as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    CreateImageInfo, HealthStatusEnum, HostConfig, PortBinding, PortSummary, PortSummaryTypeEnum,
    RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use brine_common::spec::{ImageRef, PortMapping, Protocol, RestartPolicy};
use futures::StreamExt;
use tokio::sync::OnceCell;

use crate::config::RegistryLogin;

use super::{
    ContainerRuntime, ContainerStatus, CreateRequest, DockerHealth, ImageRemoval,
    ObservedContainer, PullProgress, PulledImage, RuntimeError, labels,
};

/// A pull reports progress at most this often: enough for a live bar without flooding the master.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// bollard's timeout for a response to begin (streamed bodies are not limited by it).
const REQUEST_TIMEOUT_SECONDS: u64 = 120;

/// How often an exec is asked whether it ended: first soon (a probe command usually takes a few
/// milliseconds), then less often, so a slow command does not flood the engine.
const EXEC_POLL_FIRST: Duration = Duration::from_millis(10);
const EXEC_POLL_MAX: Duration = Duration::from_millis(200);

/// The Docker engine of this host. Clones share one connection pool.
///
/// Nothing is asked of the engine until the first call, so the minion starts (and keeps its
/// link to the master) while Docker is down.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    endpoint: Arc<Endpoint>,
    /// Registry accounts by `HOST[:PORT]`, for pulls.
    logins: Arc<BTreeMap<String, RegistryLogin>>,
    /// The client once the engine has answered and said which API version it speaks.
    negotiated: Arc<OnceCell<Docker>>,
}

/// Where the engine listens.
#[derive(Debug)]
enum Endpoint {
    /// Where the docker CLI would look: `DOCKER_HOST` when it is set, else the local socket.
    Environment,
    Socket(String),
}

impl DockerRuntime {
    /// The engine where the docker CLI would find it: `DOCKER_HOST` when it is set, else the
    /// local socket.
    pub fn from_environment() -> Self {
        Self::new(Endpoint::Environment)
    }

    /// The engine listening on the unix socket at `path`.
    pub fn at_socket(path: &str) -> Self {
        Self::new(Endpoint::Socket(path.to_owned()))
    }

    fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint: Arc::new(endpoint),
            logins: Arc::default(),
            negotiated: Arc::new(OnceCell::new()),
        }
    }

    /// Pulls from these registries (by `HOST[:PORT]`) with these accounts.
    pub fn with_logins(mut self, logins: BTreeMap<String, RegistryLogin>) -> Self {
        self.logins = Arc::new(logins);
        self
    }

    /// The client, made on the first call that reaches the engine. bollard speaks a newer API
    /// than older engines accept (Debian's 20.10 stops at 1.41), so the version is settled then,
    /// once; until the engine answers, every call fails as unavailable and the next one tries
    /// again.
    async fn docker(&self) -> Result<&Docker, RuntimeError> {
        self.negotiated
            .get_or_try_init(|| async {
                let client = match self.endpoint.as_ref() {
                    Endpoint::Environment => Docker::connect_with_defaults(),
                    Endpoint::Socket(path) => Docker::connect_with_socket(
                        path,
                        REQUEST_TIMEOUT_SECONDS,
                        API_DEFAULT_VERSION,
                    ),
                };
                client
                    .map_err(runtime_error)?
                    .negotiate_version()
                    .await
                    .map_err(runtime_error)
            })
            .await
    }
}

impl ContainerRuntime for DockerRuntime {
    async fn version(&self) -> Result<String, RuntimeError> {
        self.docker()
            .await?
            .version()
            .await
            .map_err(runtime_error)?
            .version
            .ok_or_else(|| RuntimeError::Other("docker did not report its version".into()))
    }

    async fn list_managed(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let filters = HashMap::from([("label", vec![labels::MANAGED])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker()
            .await?
            .list_containers(Some(options))
            .await
            .map_err(runtime_error)?;
        Ok(containers.into_iter().filter_map(observed).collect())
    }

    async fn pull(
        &self,
        image: &ImageRef,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<PulledImage, RuntimeError> {
        let reference = image.as_str();
        let pull_error = |err: DockerError| match runtime_error(err) {
            RuntimeError::Other(message) => RuntimeError::Pull {
                image: reference.to_owned(),
                message,
            },
            unavailable => unavailable,
        };
        let engine = EngineReference::of(image);
        let options = CreateImageOptionsBuilder::new()
            .from_image(&engine.repository)
            .tag(&engine.tag_or_digest)
            .build();
        let credentials = image
            .parts()
            .domain
            .and_then(|domain| self.logins.get(domain).map(|login| (domain, login)))
            .map(|(domain, login)| DockerCredentials {
                username: Some(login.username.clone()),
                password: Some(login.password.clone()),
                serveraddress: Some(domain.to_owned()),
                ..Default::default()
            });
        let mut stream = self
            .docker()
            .await?
            .create_image(Some(options), None, credentials);
        let mut tally = PullTally::default();
        let mut last_report: Option<Instant> = None;
        while let Some(info) = stream.next().await {
            tally.record(&info.map_err(pull_error)?);
            if last_report.is_none_or(|at| at.elapsed() >= PROGRESS_INTERVAL) {
                progress(tally.sum());
                last_report = Some(Instant::now());
            }
        }
        progress(tally.sum());

        self.local_image(image)
            .await?
            .ok_or_else(|| RuntimeError::Pull {
                image: reference.to_owned(),
                message: "the engine does not have the image it just pulled".into(),
            })
    }

    async fn local_image(&self, image: &ImageRef) -> Result<Option<PulledImage>, RuntimeError> {
        let engine = EngineReference::of(image);
        let inspected = match self
            .docker()
            .await?
            .inspect_image(&engine.to_string())
            .await
        {
            Ok(inspected) => inspected,
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(err) => return Err(runtime_error(err)),
        };
        let image_id = inspected
            .id
            .ok_or_else(|| RuntimeError::Other(format!("docker reported no id for {image}")))?;
        let repository = familiar(&engine.repository);
        let repo_digest = inspected
            .repo_digests
            .unwrap_or_default()
            .into_iter()
            .find(|digest| {
                digest
                    .split_once('@')
                    .is_some_and(|(repo, _)| familiar(repo) == repository)
            });
        Ok(Some(PulledImage {
            image_id,
            repo_digest,
        }))
    }

    async fn create(&self, request: &CreateRequest) -> Result<String, RuntimeError> {
        let options = CreateContainerOptionsBuilder::new()
            .name(&request.docker_name)
            .build();
        match self
            .docker()
            .await?
            .create_container(Some(options), container_body(request))
            .await
        {
            Ok(created) => Ok(created.id),
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => Err(RuntimeError::NameTaken(request.docker_name.clone())),
            Err(err) => Err(runtime_error(err)),
        }
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker()
            .await?
            .start_container(id, None)
            .await
            .map_err(runtime_error)
    }

    async fn stop(&self, id: &str, timeout_seconds: u32) -> Result<(), RuntimeError> {
        let options = StopContainerOptionsBuilder::new()
            .t(i32::try_from(timeout_seconds).unwrap_or(i32::MAX))
            .build();
        // The engine answers only once the container is down, which can take the whole grace
        // period; the request timeout must not cut that short. bollard treats the engine's
        // 304 for an already stopped container as success.
        let docker = self
            .docker()
            .await?
            .clone()
            .with_timeout(Duration::from_secs(
                REQUEST_TIMEOUT_SECONDS + u64::from(timeout_seconds),
            ));
        docker
            .stop_container(id, Some(options))
            .await
            .map_err(runtime_error)
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        match self
            .docker()
            .await?
            .remove_container(id, Some(options))
            .await
        {
            Ok(())
            | Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(err) => Err(runtime_error(err)),
        }
    }

    async fn rename(&self, id: &str, new_name: &str) -> Result<(), RuntimeError> {
        let options = RenameContainerOptionsBuilder::new().name(new_name).build();
        match self.docker().await?.rename_container(id, options).await {
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => Err(RuntimeError::NameTaken(new_name.to_owned())),
            result => result.map_err(runtime_error),
        }
    }

    async fn inspect(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let inspected = self
            .docker()
            .await?
            .inspect_container(id, None)
            .await
            .map_err(|err| match err {
                DockerError::DockerResponseServerError {
                    status_code: 404, ..
                } => RuntimeError::Gone(id.to_owned()),
                other => runtime_error(other),
            })?;
        Ok(status(inspected))
    }

    async fn remove_image(&self, image: &ImageRef) -> Result<ImageRemoval, RuntimeError> {
        let engine = EngineReference::of(image).to_string();
        let options: Option<bollard::query_parameters::RemoveImageOptions> = None;
        match self
            .docker()
            .await?
            .remove_image(&engine, options, None)
            .await
        {
            Ok(_) => Ok(ImageRemoval::Removed),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(ImageRemoval::Absent),
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(ImageRemoval::InUse),
            Err(err) => Err(runtime_error(err)),
        }
    }

    async fn watch_changes(
        &self,
        namespace: &str,
        changed: &(dyn Fn(String) + Send + Sync),
    ) -> Result<(), RuntimeError> {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            (
                "label".to_owned(),
                vec![
                    format!("{}=true", labels::MANAGED),
                    format!("{}={namespace}", labels::NAMESPACE),
                ],
            ),
            (
                "event".to_owned(),
                vec!["die".to_owned(), "stop".to_owned(), "destroy".to_owned()],
            ),
        ]);
        let options = bollard::query_parameters::EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let mut events = std::pin::pin!(self.docker().await?.events(Some(options)));
        while let Some(event) = events.next().await {
            let event = event.map_err(runtime_error)?;
            let name = event
                .actor
                .and_then(|actor| actor.attributes)
                .and_then(|attributes| attributes.get("name").cloned())
                .unwrap_or_default();
            changed(name);
        }
        Err(RuntimeError::Unavailable("the event stream ended".into()))
    }

    async fn exec(&self, id: &str, command: &[String]) -> Result<i64, RuntimeError> {
        let options = CreateExecOptions {
            cmd: Some(command.to_vec()),
            // Nothing reads the output; unattached, the engine discards it.
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            ..Default::default()
        };
        let exec = self
            .docker()
            .await?
            .create_exec(id, options)
            .await
            .map_err(runtime_error)?;
        // Detached, the engine answers at once; the end shows in the exec's own state.
        let detached = StartExecOptions {
            detach: true,
            ..Default::default()
        };
        self.docker()
            .await?
            .start_exec(&exec.id, Some(detached))
            .await
            .map_err(runtime_error)?;
        let mut pause = EXEC_POLL_FIRST;
        loop {
            let state = self
                .docker()
                .await?
                .inspect_exec(&exec.id)
                .await
                .map_err(runtime_error)?;
            // The exit code appears only once the process has ended.
            if state.running != Some(true)
                && let Some(code) = state.exit_code
            {
                return Ok(code);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(EXEC_POLL_MAX);
        }
    }
}

/// The health-relevant part of `docker inspect`. Missing fields read as "not running" and "no
/// health check", which a health check then reports instead of passing.
fn status(inspected: ContainerInspectResponse) -> ContainerStatus {
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
fn ip_address(
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
fn published(port: &PortSummary) -> Option<PortMapping> {
    let protocol = match port.typ {
        Some(PortSummaryTypeEnum::TCP) => Protocol::Tcp,
        Some(PortSummaryTypeEnum::UDP) => Protocol::Udp,
        _ => return None,
    };
    let host_ip = port
        .ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified());
    Some(PortMapping {
        host_ip,
        host_port: Some(port.public_port?),
        container_port: port.private_port,
        protocol,
    })
}

/// brine's view of a listed container; one without an id cannot be acted on, so it is skipped.
fn observed(summary: ContainerSummary) -> Option<ObservedContainer> {
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

fn container_body(request: &CreateRequest) -> ContainerCreateBody {
    let spec = &request.spec;
    // Several host ports may publish the same container port; Docker wants them under one key.
    let mut bindings: HashMap<String, Vec<PortBinding>> = HashMap::new();
    for port in &spec.ports {
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
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
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
struct EngineReference {
    repository: String,
    tag_or_digest: String,
}

impl EngineReference {
    fn of(image: &ImageRef) -> Self {
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
fn familiar(repository: &str) -> &str {
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
struct PullTally {
    layers: HashMap<String, PullProgress>,
}

impl PullTally {
    fn record(&mut self, info: &CreateImageInfo) {
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
            ("Download complete", _) => {
                if let Some(entry) = self.layers.get_mut(layer) {
                    entry.bytes_done = entry.bytes_total;
                }
            }
            _ => {}
        }
    }

    fn sum(&self) -> PullProgress {
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

/// Sorts bollard's errors by what the caller does next: an engine that cannot be reached is
/// retried later, a request the engine refused is reported with the engine's own message.
fn runtime_error(err: DockerError) -> RuntimeError {
    match err {
        DockerError::DockerResponseServerError { message, .. } if !message.is_empty() => {
            RuntimeError::Other(message)
        }
        DockerError::DockerStreamError { error } => RuntimeError::Other(error),
        DockerError::SocketNotFoundError(_)
        | DockerError::IOError { .. }
        | DockerError::HyperResponseError { .. }
        | DockerError::HyperLegacyError { .. }
        | DockerError::RequestTimeoutError
        | DockerError::UnsupportedURISchemeError { .. } => {
            RuntimeError::Unavailable(describe(&err))
        }
        other => RuntimeError::Other(describe(&other)),
    }
}

/// bollard's wrappers print a bare "client error (Connect)"; the cause that says what happened
/// (connection refused, permission denied) sits further down the source chain.
fn describe(err: &DockerError) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_become_repository_and_tag_or_digest() {
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let engine = |image: &str| EngineReference::of(&ImageRef::new(image).unwrap()).to_string();
        assert_eq!(engine("busybox"), "busybox:latest");
        assert_eq!(engine("busybox:1.36"), "busybox:1.36");
        assert_eq!(engine("127.0.0.1:5000/a/b:tag"), "127.0.0.1:5000/a/b:tag");
        assert_eq!(engine("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
        assert_eq!(
            engine(&format!("127.0.0.1:5000/app@{digest}")),
            format!("127.0.0.1:5000/app@{digest}")
        );
        assert_eq!(engine(&format!("app:1@{digest}")), format!("app@{digest}"));
    }

    #[test]
    fn repositories_compare_in_their_familiar_form() {
        assert_eq!(familiar("docker.io/library/nginx"), "nginx");
        assert_eq!(familiar("index.docker.io/team/app"), "team/app");
        assert_eq!(familiar("library/nginx"), "nginx");
        assert_eq!(
            familiar("127.0.0.1:5000/library/app"),
            "127.0.0.1:5000/library/app"
        );
    }

    fn inspected(state: serde_json::Value, healthcheck: serde_json::Value) -> ContainerStatus {
        let response: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "State": state,
            "RestartCount": 2,
            "Config": { "Healthcheck": healthcheck },
            "NetworkSettings": { "Networks": {
                "aaa": { "IPAddress": "10.0.0.5" },
                "bridge": { "IPAddress": "172.17.0.9" },
                "none": { "IPAddress": "" },
            }},
        }))
        .unwrap();
        status(response)
    }

    #[test]
    fn inspect_reads_running_health_and_address() {
        let up = inspected(
            serde_json::json!({"Status": "running", "Running": true, "ExitCode": 0}),
            serde_json::Value::Null,
        );
        assert_eq!(
            up,
            ContainerStatus {
                running: true,
                exit_code: 0,
                restart_count: 2,
                docker_health: None,
                ip_address: Some("172.17.0.9".parse().unwrap()),
            }
        );
        // Docker keeps `Running` true while it restarts a crashed process.
        let restarting = inspected(
            serde_json::json!({"Status": "restarting", "Running": true, "Restarting": true, "ExitCode": 3}),
            serde_json::Value::Null,
        );
        assert_eq!((restarting.running, restarting.exit_code), (false, 3));

        let checked = serde_json::json!({"Test": ["CMD", "/bin/busybox", "true"]});
        let before_first_check =
            inspected(serde_json::json!({"Status": "running"}), checked.clone());
        assert_eq!(
            before_first_check.docker_health,
            Some(DockerHealth::Starting)
        );
        let healthy = inspected(
            serde_json::json!({"Status": "running", "Health": {"Status": "healthy"}}),
            checked,
        );
        assert_eq!(healthy.docker_health, Some(DockerHealth::Healthy));
        let switched_off = inspected(
            serde_json::json!({"Status": "running"}),
            serde_json::json!({"Test": ["NONE"]}),
        );
        assert_eq!(switched_off.docker_health, None);

        assert_eq!(
            ip_address(Some(HashMap::from([(
                "zzz".to_owned(),
                bollard::models::EndpointSettings {
                    ip_address: Some("10.1.2.3".into()),
                    ..Default::default()
                }
            )]))),
            Some("10.1.2.3".parse().unwrap()),
            "without the bridge network, another one's address"
        );
        assert!(!status(ContainerInspectResponse::default()).running);
    }

    #[test]
    fn published_ports_treat_every_address_as_overlapping() {
        let port = |ip: &str, public: Option<u16>, typ| PortSummary {
            ip: Some(ip.into()),
            private_port: 8080,
            public_port: public,
            typ: Some(typ),
        };
        let everywhere = published(&port("0.0.0.0", Some(80), PortSummaryTypeEnum::TCP)).unwrap();
        assert_eq!(everywhere.host_ip, None);
        assert_eq!(everywhere.to_string(), "80:8080/tcp");
        assert_eq!(
            published(&port("::", Some(80), PortSummaryTypeEnum::TCP))
                .unwrap()
                .host_ip,
            None
        );
        let loopback = published(&port("127.0.0.1", Some(81), PortSummaryTypeEnum::UDP)).unwrap();
        assert_eq!(loopback.to_string(), "127.0.0.1:81:8080/udp");
        assert_eq!(published(&port("", None, PortSummaryTypeEnum::TCP)), None);
        assert_eq!(
            published(&port("0.0.0.0", Some(80), PortSummaryTypeEnum::SCTP)),
            None
        );
        let wanted: PortMapping = "127.0.0.1:80:9000".parse().unwrap();
        assert!(wanted.conflicts_with(&everywhere));
    }

    fn layer(id: &str, status: &str, current: Option<i64>, total: Option<i64>) -> CreateImageInfo {
        CreateImageInfo {
            id: Some(id.into()),
            status: Some(status.into()),
            progress_detail: Some(bollard::models::ProgressDetail { current, total }),
            ..Default::default()
        }
    }

    #[test]
    fn progress_sums_downloads_and_ignores_extraction() {
        let mut tally = PullTally::default();
        tally.record(&layer("a", "Downloading", Some(10), Some(100)));
        tally.record(&layer("b", "Downloading", Some(5), Some(50)));
        tally.record(&layer("a", "Downloading", Some(40), Some(100)));
        assert_eq!(
            tally.sum(),
            PullProgress {
                bytes_done: 45,
                bytes_total: 150
            }
        );
        tally.record(&layer("a", "Download complete", None, None));
        tally.record(&layer("a", "Extracting", Some(1), Some(100)));
        tally.record(&layer("b", "Downloading", Some(7), Some(-1)));
        assert_eq!(
            tally.sum(),
            PullProgress {
                bytes_done: 107,
                bytes_total: 107
            }
        );
    }
}
