//! A container engine in memory: what a simulated host's minion drives instead of Docker.
//!
//! It keeps containers and images the way an engine would (names unique, a running container
//! holds its ports, removing an image in use is refused) and answers after configurable delays,
//! failing a configurable share of pulls and container calls, so the master sees hosts that are
//! slow or flaky the way real ones are.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use brine_common::session::LogsOptions;
use brine_common::spec::{ImageRef, PortMapping};
use brine_common::token::sha256_hex;
use brine_minion::runtime::{
    ContainerRuntime, ContainerStatus, CreateRequest, EngineEvent, ImageRemoval, ObservedContainer,
    OutputBytes, PullProgress, PulledImage, RuntimeError,
};
use rand::Rng;
use tokio::sync::mpsc;

/// How the simulated engine behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    /// How long a pull of an image the host does not have takes.
    pub pull_delay: Duration,
    /// How long every other call that changes something takes (create, start, stop, remove).
    pub call_delay: Duration,
    /// The share of pulls and container changes that fail, from 0 to 1.
    pub failure_rate: f64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            pull_delay: Duration::from_millis(50),
            call_delay: Duration::from_millis(5),
            failure_rate: 0.0,
        }
    }
}

/// One host's engine. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct SimulatedRuntime {
    behaviour: Behaviour,
    state: Arc<Mutex<Engine>>,
}

#[derive(Debug, Default)]
struct Engine {
    /// By container id.
    containers: BTreeMap<String, Container>,
    /// By the reference they were pulled as.
    images: HashMap<String, PulledImage>,
    next_id: u64,
}

#[derive(Debug, Clone)]
struct Container {
    docker_name: String,
    image: String,
    image_id: String,
    labels: HashMap<String, String>,
    ports: Vec<PortMapping>,
    running: bool,
}

impl SimulatedRuntime {
    pub fn new(behaviour: Behaviour) -> Self {
        Self {
            behaviour,
            state: Arc::default(),
        }
    }

    /// The names of the containers on this engine, running or not.
    pub fn container_names(&self) -> Vec<String> {
        self.engine()
            .containers
            .values()
            .map(|c| c.docker_name.clone())
            .collect()
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        // The engine's state stays whole even if a panic interrupted a caller.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits `delay`, then fails with `failure` for the configured share of calls.
    async fn call(
        &self,
        delay: Duration,
        failure: impl FnOnce() -> RuntimeError,
    ) -> Result<(), RuntimeError> {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let rate = self.behaviour.failure_rate;
        if rate > 0.0 && rand::rng().random_bool(rate.min(1.0)) {
            return Err(failure());
        }
        Ok(())
    }

    fn with_container<T>(
        &self,
        id: &str,
        change: impl FnOnce(&mut Container) -> T,
    ) -> Result<T, RuntimeError> {
        let mut engine = self.engine();
        let container = engine
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::Gone(id.to_owned()))?;
        Ok(change(container))
    }
}

/// The image a reference stands for: a pinned one by its digest, so every host agrees on it.
fn image_for(image: &ImageRef) -> PulledImage {
    let content = image.parts().digest.unwrap_or(image.as_str());
    PulledImage {
        image_id: format!("sha256:{}", sha256_hex(content.as_bytes())),
        repo_digest: image
            .parts()
            .digest
            .map(|digest| format!("{}@{digest}", image.parts().repository())),
    }
}

fn injected(what: &str) -> RuntimeError {
    RuntimeError::Other(format!("simulated failure of {what}"))
}

impl ContainerRuntime for SimulatedRuntime {
    async fn version(&self) -> Result<String, RuntimeError> {
        Ok("simulated".into())
    }

    async fn list_managed(&self, namespace: &str) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let engine = self.engine();
        Ok(engine
            .containers
            .iter()
            .map(|(id, c)| ObservedContainer {
                id: id.clone(),
                docker_name: c.docker_name.clone(),
                image: c.image.clone(),
                image_id: c.image_id.clone(),
                state: if c.running { "running" } else { "exited" }.into(),
                labels: c.labels.clone(),
                published: if c.running { c.ports.clone() } else { vec![] },
                unhealthy: false,
            })
            .filter(|c| c.belongs_to(namespace))
            .collect())
    }

    async fn pull(
        &self,
        image: &ImageRef,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<PulledImage, RuntimeError> {
        let present = self.engine().images.contains_key(image.as_str());
        let delay = if present {
            Duration::ZERO
        } else {
            self.behaviour.pull_delay
        };
        self.call(delay, || RuntimeError::Pull {
            image: image.to_string(),
            message: "simulated failure of the pull".into(),
        })
        .await?;
        progress(PullProgress {
            bytes_done: 1,
            bytes_total: 1,
        });
        let pulled = image_for(image);
        self.engine()
            .images
            .insert(image.as_str().to_owned(), pulled.clone());
        Ok(pulled)
    }

    async fn local_image(&self, image: &ImageRef) -> Result<Option<PulledImage>, RuntimeError> {
        Ok(self.engine().images.get(image.as_str()).cloned())
    }

    async fn create(&self, request: &CreateRequest) -> Result<String, RuntimeError> {
        self.call(self.behaviour.call_delay, || injected("a create"))
            .await?;
        let mut engine = self.engine();
        if engine
            .containers
            .values()
            .any(|c| c.docker_name == request.docker_name)
        {
            return Err(RuntimeError::NameTaken(request.docker_name.clone()));
        }
        let image = request.spec.image.as_str();
        let Some(pulled) = engine.images.get(image).cloned() else {
            return Err(RuntimeError::Other(format!("no such image: {image}")));
        };
        engine.next_id += 1;
        let id = format!("sim{:012x}", engine.next_id);
        engine.containers.insert(
            id.clone(),
            Container {
                docker_name: request.docker_name.clone(),
                image: image.to_owned(),
                image_id: pulled.image_id,
                labels: request.labels.clone(),
                ports: request.spec.ports.clone(),
                running: false,
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.call(self.behaviour.call_delay, || injected("a start"))
            .await?;
        let mut engine = self.engine();
        let ports = engine
            .containers
            .get(id)
            .ok_or_else(|| RuntimeError::Gone(id.to_owned()))?
            .ports
            .clone();
        let taken = engine.containers.iter().any(|(other, c)| {
            other != id
                && c.running
                && c.ports
                    .iter()
                    .any(|held| ports.iter().any(|wanted| held.conflicts_with(wanted)))
        });
        if taken {
            return Err(RuntimeError::Other(format!(
                "container {id}: a port it publishes is already allocated"
            )));
        }
        if let Some(container) = engine.containers.get_mut(id) {
            container.running = true;
        }
        Ok(())
    }

    async fn stop(&self, id: &str, _timeout_seconds: u32) -> Result<(), RuntimeError> {
        self.call(self.behaviour.call_delay, || injected("a stop"))
            .await?;
        self.with_container(id, |c| c.running = false)
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.call(self.behaviour.call_delay, || injected("a remove"))
            .await?;
        self.engine()
            .containers
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| RuntimeError::Gone(id.to_owned()))
    }

    async fn rename(&self, id: &str, new_name: &str) -> Result<(), RuntimeError> {
        let mut engine = self.engine();
        if engine
            .containers
            .iter()
            .any(|(other, c)| other != id && c.docker_name == new_name)
        {
            return Err(RuntimeError::NameTaken(new_name.to_owned()));
        }
        let container = engine
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::Gone(id.to_owned()))?;
        container.docker_name = new_name.to_owned();
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        self.with_container(id, |c| ContainerStatus {
            running: c.running,
            exit_code: 0,
            restart_count: 0,
            docker_health: None,
            ip_address: None,
        })
    }

    async fn exec(&self, id: &str, _command: &[String]) -> Result<i64, RuntimeError> {
        let running = self.with_container(id, |c| c.running)?;
        if running {
            Ok(0)
        } else {
            Err(RuntimeError::Other(format!(
                "container {id} is not running"
            )))
        }
    }

    // A simulated container runs no process: it has no log to read and no command to run in.
    async fn logs(
        &self,
        id: &str,
        _options: &LogsOptions,
        _output: &mpsc::Sender<OutputBytes>,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Other(format!(
            "simulated container {id} runs no process and writes no log"
        )))
    }

    async fn exec_attached(
        &self,
        id: &str,
        _command: &[String],
        _output: &mpsc::Sender<OutputBytes>,
    ) -> Result<i64, RuntimeError> {
        Err(RuntimeError::Other(format!(
            "simulated container {id} runs no process to run a command beside"
        )))
    }

    async fn remove_image(&self, image: &ImageRef) -> Result<ImageRemoval, RuntimeError> {
        let mut engine = self.engine();
        let Some(pulled) = engine.images.get(image.as_str()).cloned() else {
            return Ok(ImageRemoval::Absent);
        };
        if engine
            .containers
            .values()
            .any(|c| c.image_id == pulled.image_id)
        {
            return Ok(ImageRemoval::InUse);
        }
        engine.images.remove(image.as_str());
        Ok(ImageRemoval::Removed)
    }

    async fn follow_events(
        &self,
        _namespace: &str,
        _since: SystemTime,
        _seen: &(dyn Fn(EngineEvent) + Send + Sync),
    ) -> Result<(), RuntimeError> {
        // Nothing changes behind the minion's back on a simulated host: the stream stays open.
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    use brine_common::names::{ContainerName, RoleName};
    use brine_common::spec::{ContainerSpec, RestartPolicy};
    use brine_minion::runtime::labels;

    use super::*;

    fn request(name: &str, image: &str) -> CreateRequest {
        let spec = ContainerSpec {
            role: RoleName::new("web").unwrap(),
            name: ContainerName::new(name).unwrap(),
            image: ImageRef::new(image).unwrap(),
            command: vec![],
            env: Default::default(),
            ports: vec!["8080:80".parse().unwrap()],
            volumes: vec![],
            restart: RestartPolicy::UnlessStopped,
            stop_timeout_seconds: 1,
            health: Default::default(),
            secret_env: Default::default(),
            proxy: None,
            hooks: None,
        };
        CreateRequest {
            docker_name: name.to_owned(),
            spec,
            labels: HashMap::from([
                (labels::MANAGED.to_owned(), "true".to_owned()),
                (labels::NAMESPACE.to_owned(), "host".to_owned()),
            ]),
        }
    }

    const IMAGE: &str = "registry.example:5000/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn no_delay() -> Behaviour {
        Behaviour {
            pull_delay: Duration::ZERO,
            call_delay: Duration::ZERO,
            failure_rate: 0.0,
        }
    }

    #[tokio::test]
    async fn a_pinned_image_has_the_same_id_on_every_host() {
        let image = ImageRef::new(IMAGE).unwrap();
        let one = SimulatedRuntime::new(no_delay());
        let other = SimulatedRuntime::new(no_delay());
        let first = one.pull(&image, &|_| {}).await.unwrap();
        assert_eq!(first, other.pull(&image, &|_| {}).await.unwrap());
        assert_eq!(first.repo_digest.as_deref(), Some(IMAGE));
        assert_eq!(one.local_image(&image).await.unwrap(), Some(first));
    }

    #[tokio::test]
    async fn containers_keep_names_unique_and_ports_to_one_running_container() {
        let engine = SimulatedRuntime::new(no_delay());
        engine
            .pull(&ImageRef::new(IMAGE).unwrap(), &|_| {})
            .await
            .unwrap();
        let old = engine.create(&request("web", IMAGE)).await.unwrap();
        engine.start(&old).await.unwrap();
        assert_eq!(
            engine.create(&request("web", IMAGE)).await,
            Err(RuntimeError::NameTaken("web".into()))
        );
        engine.rename(&old, "web-old").await.unwrap();
        let new = engine.create(&request("web", IMAGE)).await.unwrap();
        assert!(engine.start(&new).await.is_err(), "the old one holds 8080");
        engine.stop(&old, 10).await.unwrap();
        engine.start(&new).await.unwrap();
        engine.remove(&old).await.unwrap();
        assert_eq!(engine.container_names(), ["web"]);
        let listed = engine.list_managed("host").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].is_running());
        assert_eq!(engine.inspect(&old).await, Err(RuntimeError::Gone(old)));
    }

    #[tokio::test]
    async fn an_image_in_use_stays() {
        let engine = SimulatedRuntime::new(no_delay());
        let image = ImageRef::new(IMAGE).unwrap();
        engine.pull(&image, &|_| {}).await.unwrap();
        let id = engine.create(&request("web", IMAGE)).await.unwrap();
        assert_eq!(engine.remove_image(&image).await, Ok(ImageRemoval::InUse));
        engine.remove(&id).await.unwrap();
        assert_eq!(engine.remove_image(&image).await, Ok(ImageRemoval::Removed));
        assert_eq!(engine.remove_image(&image).await, Ok(ImageRemoval::Absent));
    }

    #[tokio::test]
    async fn every_call_fails_at_a_failure_rate_of_one() {
        let engine = SimulatedRuntime::new(Behaviour {
            failure_rate: 1.0,
            ..no_delay()
        });
        let image = ImageRef::new(IMAGE).unwrap();
        assert!(matches!(
            engine.pull(&image, &|_| {}).await,
            Err(RuntimeError::Pull { .. })
        ));
        assert_eq!(engine.local_image(&image).await, Ok(None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pull_takes_its_delay_once() {
        let engine = SimulatedRuntime::new(Behaviour {
            pull_delay: Duration::from_secs(3),
            ..no_delay()
        });
        let image = ImageRef::new(IMAGE).unwrap();
        let start = tokio::time::Instant::now();
        engine.pull(&image, &|_| {}).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        engine.pull(&image, &|_| {}).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(3), "already present");
    }
}
