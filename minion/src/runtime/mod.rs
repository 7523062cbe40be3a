//! The container runtime behind a narrow trait: the only way the minion touches Docker.
//!
//! [`docker::DockerRuntime`] implements it with bollard; unit tests of the executor use a
//! recording fake. [`view::EngineView`] sits in front of either and answers the reads a job
//! makes from what it learnt through the engine's event stream.

pub mod docker;
pub mod view;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::time::SystemTime;

use brine_common::session::{LogsOptions, OutputStream};
use brine_common::spec::{ContainerSpec, ImageRef, PortMapping};
use tokio::sync::mpsc;

/// Labels brine puts on every container it creates. Containers without `MANAGED` are never
/// touched.
pub mod labels {
    pub const MANAGED: &str = "io.brine.managed";
    pub const NAMESPACE: &str = "io.brine.namespace";
    pub const ROLE: &str = "io.brine.role";
    pub const CONTAINER: &str = "io.brine.container";
    pub const SPEC_HASH: &str = "io.brine.spec-hash";
    pub const JOB: &str = "io.brine.job";
    /// The ports the host's proxy holds for the container, `LISTEN>CONTAINER_PORT`,
    /// comma-separated; only on a container whose ports the proxy carries.
    pub const PROXY: &str = "io.brine.proxy";
    /// How the proxy carries them: `tcp` or `http`.
    pub const PROXY_MODE: &str = "io.brine.proxy-mode";
}

/// A container as Docker reports it, with brine's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    /// Docker's container id.
    pub id: String,
    /// Docker's name for it, without the leading `/`.
    pub docker_name: String,
    /// The image reference it was created from.
    pub image: String,
    /// The id (`sha256:...`) of the image it runs.
    pub image_id: String,
    /// Docker's state: `running`, `exited`, `created`, ...
    pub state: String,
    pub labels: HashMap<String, String>,
    /// The host ports it holds now (only a running container holds any), so a replacement knows
    /// whether its successor can start beside it.
    pub published: Vec<PortMapping>,
    /// The image's HEALTHCHECK judges it unhealthy now.
    pub unhealthy: bool,
}

impl ObservedContainer {
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// Whether brine created it for `namespace`; everything else is never touched.
    pub fn belongs_to(&self, namespace: &str) -> bool {
        self.label(labels::MANAGED) == Some("true")
            && self.label(labels::NAMESPACE) == Some(namespace)
    }
}

/// An image present on the host after a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The image id (`sha256:...`), which changes whenever the content does.
    pub image_id: String,
    /// `repo@sha256:...` as the registry reported it, when it did.
    pub repo_digest: Option<String>,
}

/// Bytes of an image pull so far, summed over its layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PullProgress {
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// What a health check needs to know about a container, from `docker inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    /// Its process runs: not created, exited, restarting or paused.
    pub running: bool,
    /// The status its process last exited with; 0 when it never exited.
    pub exit_code: i64,
    /// How often Docker restarted it by its restart policy: a process that crashed and came
    /// back between two looks still counts as having exited.
    pub restart_count: i64,
    /// The verdict of the image's HEALTHCHECK; `None` when the image has none.
    pub docker_health: Option<DockerHealth>,
    /// Its address on its Docker network, which the host can reach; `None` without a network.
    pub ip_address: Option<IpAddr>,
}

/// Docker's verdict on a container whose image has a HEALTHCHECK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerHealth {
    /// No check has passed yet (or none has run).
    Starting,
    Healthy,
    Unhealthy,
}

/// Everything needed to create one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    /// Docker's name for the container (namespace-prefixed).
    pub docker_name: String,
    pub spec: ContainerSpec,
    /// brine's labels; see [`labels`].
    pub labels: HashMap<String, String>,
}

/// What became of an image brine asked to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageRemoval {
    Removed,
    /// A container (any, managed or not) still uses it; it stays.
    InUse,
    /// It was not on the host.
    Absent,
}

/// A runtime call that failed. The message is Docker's, made readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// Docker could not be reached at all.
    #[error("docker is unavailable: {0}")]
    Unavailable(String),
    /// The image reference does not exist in its registry, or access was denied.
    #[error("image {image} could not be pulled: {message}")]
    Pull { image: String, message: String },
    /// The container does not exist (any more).
    #[error("no such container: {0}")]
    Gone(String),
    /// A container name is taken by a container brine does not manage.
    #[error("a container named {0} already exists and brine does not manage it")]
    NameTaken(String),
    #[error("{0}")]
    Other(String),
}

/// The operations the minion needs from a container engine.
pub trait ContainerRuntime: Send + Sync {
    /// The engine's version, for the host's facts.
    fn version(&self) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Every container of `namespace` carrying the [`labels::MANAGED`] label, running or not.
    fn list_managed(
        &self,
        namespace: &str,
    ) -> impl Future<Output = Result<Vec<ObservedContainer>, RuntimeError>> + Send;

    /// The managed container of `namespace` with this id, as [`Self::list_managed`] would report
    /// it; `None` when there is none (any more). By default it is found in the listing; an
    /// engine whose listing can lag behind its events (Docker's) reads the container itself.
    fn observe(
        &self,
        namespace: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<ObservedContainer>, RuntimeError>> + Send {
        async move {
            let listed = self.list_managed(namespace).await?;
            Ok(listed.into_iter().find(|container| container.id == id))
        }
    }

    /// The engine's clock now: where a replay of its events starts. By default this process's
    /// clock; an engine that may run elsewhere (Docker's) tells its own.
    fn clock(&self) -> impl Future<Output = Result<SystemTime, RuntimeError>> + Send {
        async { Ok(SystemTime::now()) }
    }

    /// Pulls `image` (a no-op download when the registry has nothing new) and reports bytes.
    fn pull(
        &self,
        image: &ImageRef,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> impl Future<Output = Result<PulledImage, RuntimeError>> + Send;

    /// The image `image` names, if the engine already has it.
    fn local_image(
        &self,
        image: &ImageRef,
    ) -> impl Future<Output = Result<Option<PulledImage>, RuntimeError>> + Send;

    /// Creates a container and returns its id; it is not started.
    fn create(
        &self,
        request: &CreateRequest,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Stops a container, killing it after `timeout_seconds`. Stopping a stopped one succeeds.
    fn stop(
        &self,
        id: &str,
        timeout_seconds: u32,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Removes a container, stopping it first if needed.
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    fn rename(
        &self,
        id: &str,
        new_name: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Whether a container runs, how it last exited, its Docker health and its address;
    /// [`RuntimeError::Gone`] if it does not exist.
    fn inspect(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<ContainerStatus, RuntimeError>> + Send;

    /// Runs `command` (no shell) inside a running container and returns its exit status. It
    /// waits for the command to end: callers bound it with a timeout.
    fn exec(
        &self,
        id: &str,
        command: &[String],
    ) -> impl Future<Output = Result<i64, RuntimeError>> + Send;

    /// Sends the container `id`'s log, as `options` select it, to `output`, in order; returns
    /// when the log ends (with `follow`, when the container stops) or `output` is closed.
    fn logs(
        &self,
        id: &str,
        options: &LogsOptions,
        output: &mpsc::Sender<OutputBytes>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Runs `command` (no shell) inside the running container `id`, sends what it writes to
    /// `output` as it comes, and returns its exit status. It waits for the command to end:
    /// callers bound it with a timeout.
    fn exec_attached(
        &self,
        id: &str,
        command: &[String],
        output: &mpsc::Sender<OutputBytes>,
    ) -> impl Future<Output = Result<i64, RuntimeError>> + Send;

    /// Removes the local image `image` names, unless a container uses it.
    fn remove_image(
        &self,
        image: &ImageRef,
    ) -> impl Future<Output = Result<ImageRemoval, RuntimeError>> + Send;

    /// Follows the engine's events from `since` (past events are replayed first) and calls
    /// `seen` with each change to a managed container of `namespace` and each change to the
    /// engine's images. Returns when the event stream ends or fails (the engine went away);
    /// callers follow again after a pause.
    fn follow_events(
        &self,
        namespace: &str,
        since: SystemTime,
        seen: &(dyn Fn(EngineEvent) + Send + Sync),
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}

/// Bytes a container's process wrote, as the engine hands them over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputBytes {
    pub stream: OutputStream,
    pub data: Vec<u8>,
}

/// A change the engine reported on its event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// A managed container was created, started, renamed, stopped, removed, or its health or
    /// its process changed.
    Container {
        id: String,
        /// It died, stopped or was removed: what the keeper repairs.
        ended: bool,
    },
    /// An image was pulled, tagged, untagged, deleted, imported or loaded.
    Image,
}
