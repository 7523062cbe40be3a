//! [`ContainerRuntime`] over the Docker Engine API, through bollard: the calls to the engine
//! and its errors; what is read from and sent to it is translated in `translate.rs`.

use std::collections::{BTreeMap, HashMap};
use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerInspectResponse, EventMessageTypeEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use brine_common::session::{LogsOptions, OutputStream};
use brine_common::spec::ImageRef;
use futures::StreamExt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{OnceCell, mpsc};

use crate::config::RegistryLogin;

use super::{
    ContainerRuntime, ContainerStatus, CreateRequest, EngineEvent, ImageRemoval, ObservedContainer,
    OutputBytes, PullProgress, PulledImage, RuntimeError, labels,
};

#[cfg(test)]
mod tests;
mod translate;

use translate::{
    EngineReference, PullTally, container_body, familiar, observed, observed_inspected, status,
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

    /// The containers these filters select, running or not, in brine's terms.
    async fn list(
        &self,
        filters: HashMap<String, Vec<String>>,
    ) -> Result<Vec<ObservedContainer>, RuntimeError> {
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

    /// What the engine says of the container `id`; `None` when there is none.
    async fn inspect_container(
        &self,
        id: &str,
    ) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        match self.docker().await?.inspect_container(id, None).await {
            Ok(inspected) => Ok(Some(inspected)),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(err) => Err(runtime_error(err)),
        }
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

    async fn list_managed(&self, namespace: &str) -> Result<Vec<ObservedContainer>, RuntimeError> {
        self.list(managed_filters(namespace)).await
    }

    async fn observe(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Option<ObservedContainer>, RuntimeError> {
        Ok(self
            .inspect_container(id)
            .await?
            .and_then(observed_inspected)
            .filter(|container| container.belongs_to(namespace)))
    }

    async fn clock(&self) -> Result<SystemTime, RuntimeError> {
        let reported = self
            .docker()
            .await?
            .info()
            .await
            .map_err(runtime_error)?
            .system_time
            .ok_or_else(|| RuntimeError::Other("docker did not report its clock".into()))?;
        OffsetDateTime::parse(&reported, &Rfc3339)
            .map(SystemTime::from)
            .map_err(|err| {
                RuntimeError::Other(format!("docker reported its clock as {reported:?}: {err}"))
            })
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
        tally.complete();
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
            .inspect_container(id)
            .await?
            .ok_or_else(|| RuntimeError::Gone(id.to_owned()))?;
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

    async fn follow_events(
        &self,
        namespace: &str,
        since: SystemTime,
        seen: &(dyn Fn(EngineEvent) + Send + Sync),
    ) -> Result<(), RuntimeError> {
        let since = since
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|at| format!("{}.{:09}", at.as_secs(), at.subsec_nanos()))
            .unwrap_or_else(|_| "0".to_owned());
        let subscribe =
            |filters: HashMap<String, Vec<String>>| bollard::query_parameters::EventsOptions {
                since: Some(since.clone()),
                until: None,
                filters: Some(filters),
            };
        let mut containers = managed_filters(namespace);
        containers.insert("type".to_owned(), vec!["container".to_owned()]);
        containers.insert("event".to_owned(), strings(CONTAINER_CHANGES));
        let images = HashMap::from([
            ("type".to_owned(), vec!["image".to_owned()]),
            ("event".to_owned(), strings(IMAGE_CHANGES)),
        ]);
        // Labels select containers, but an image's labels are its own: two subscriptions.
        let docker = self.docker().await?;
        let mut events = std::pin::pin!(futures::stream::select(
            docker.events(Some(subscribe(containers))),
            docker.events(Some(subscribe(images))),
        ));
        while let Some(event) = events.next().await {
            let event = event.map_err(runtime_error)?;
            let action = event.action.unwrap_or_default();
            match event.typ {
                Some(EventMessageTypeEnum::CONTAINER) => {
                    let Some(id) = event.actor.and_then(|actor| actor.id) else {
                        continue;
                    };
                    let ended = CONTAINER_ENDINGS.contains(&action.as_str());
                    seen(EngineEvent::Container { id, ended });
                }
                Some(EventMessageTypeEnum::IMAGE) => seen(EngineEvent::Image),
                _ => {}
            }
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
        self.exit_code_of(&exec.id).await
    }

    async fn logs(
        &self,
        id: &str,
        options: &LogsOptions,
        output: &mpsc::Sender<OutputBytes>,
    ) -> Result<(), RuntimeError> {
        let mut query = LogsOptionsBuilder::new()
            .follow(options.follow)
            .stdout(true)
            .stderr(true)
            .tail(&options.tail.to_string());
        if let Some(since_ms) = options.since_unix_ms {
            // The engine counts whole seconds; a time before 1970 is every line.
            let seconds = i32::try_from(since_ms.div_euclid(1000).max(0)).unwrap_or(i32::MAX);
            query = query.since(seconds);
        }
        let docker = self.docker().await?;
        let mut log = docker.logs(id, Some(query.build()));
        while let Some(piece) = log.next().await {
            let Some(bytes) = output_bytes(piece.map_err(runtime_error)?) else {
                continue;
            };
            if output.send(bytes).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    async fn exec_attached(
        &self,
        id: &str,
        command: &[String],
        output: &mpsc::Sender<OutputBytes>,
    ) -> Result<i64, RuntimeError> {
        let options = CreateExecOptions {
            cmd: Some(command.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let docker = self.docker().await?;
        let exec = docker
            .create_exec(id, options)
            .await
            .map_err(runtime_error)?;
        if let StartExecResults::Attached {
            output: mut written,
            ..
        } = docker
            .start_exec(&exec.id, None)
            .await
            .map_err(runtime_error)?
        {
            while let Some(piece) = written.next().await {
                let Some(bytes) = output_bytes(piece.map_err(runtime_error)?) else {
                    continue;
                };
                if output.send(bytes).await.is_err() {
                    return Err(RuntimeError::Other(
                        "the command's output was no longer read".into(),
                    ));
                }
            }
        }
        self.exit_code_of(&exec.id).await
    }
}

impl DockerRuntime {
    /// The exit status of exec `exec_id`, once its process has ended.
    async fn exit_code_of(&self, exec_id: &str) -> Result<i64, RuntimeError> {
        let mut pause = EXEC_POLL_FIRST;
        loop {
            let state = self
                .docker()
                .await?
                .inspect_exec(exec_id)
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

/// What a process wrote, as a session streams it; nothing for its input echoed back.
fn output_bytes(piece: LogOutput) -> Option<OutputBytes> {
    let (stream, message) = match piece {
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            (OutputStream::Stdout, message)
        }
        LogOutput::StdErr { message } => (OutputStream::Stderr, message),
        LogOutput::StdIn { .. } => return None,
    };
    Some(OutputBytes {
        stream,
        data: message.to_vec(),
    })
}

/// The container events that change what [`ContainerRuntime::observe`] reports. Docker matches
/// `health_status` on its prefix (the action is `health_status: healthy`).
const CONTAINER_CHANGES: &[&str] = &[
    "create",
    "start",
    "restart",
    "rename",
    "pause",
    "unpause",
    "update",
    "health_status",
    "die",
    "stop",
    "destroy",
];
/// The container events after which it no longer runs (or exists).
const CONTAINER_ENDINGS: &[&str] = &["die", "stop", "destroy"];
/// The image events that change which images the engine holds, or under which names.
const IMAGE_CHANGES: &[&str] = &["pull", "tag", "untag", "delete", "import", "load"];

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|value| (*value).to_owned()).collect()
}

/// The engine-side filter for the managed containers of `namespace`.
fn managed_filters(namespace: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{}=true", labels::MANAGED),
            format!("{}={namespace}", labels::NAMESPACE),
        ],
    )])
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
