//! The executor against an in-memory runtime that records every call: what each job creates,
//! replaces, removes and restores, in which order, without Docker.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use brine_common::names::RoleName;
use brine_common::outcome::HostStatus;
use brine_common::spec::{HealthCheck, PortMapping, Probe, RestartPolicy};

use super::*;
use brine_common::session::LogsOptions;
use tokio::sync::mpsc;

use crate::runtime::{
    ContainerStatus, EngineEvent, ImageRemoval, OutputBytes, PullProgress, RuntimeError,
};

/// A runtime that records every call and keeps containers in memory.
#[derive(Default)]
struct Recording {
    /// Shared with the fake proxy of `proxied.rs`, which records its calls in the same list.
    state: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    containers: Vec<ObservedContainer>,
    /// Image reference to image id; a missing reference fails to pull.
    images: HashMap<String, String>,
    /// Images already on the host, by reference.
    local: HashMap<String, String>,
    /// Containers created from this image fail to start.
    broken_image: Option<String>,
    /// Containers created from this image fail their exec probe.
    unhealthy_image: Option<String>,
    /// The ports each container publishes once it runs, by id.
    ports: HashMap<String, Vec<PortMapping>>,
    calls: Vec<String>,
    next_id: u32,
}

impl Recording {
    fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    fn container(&self, docker_name: &str) -> Option<ObservedContainer> {
        let state = self.state.lock().unwrap();
        state
            .containers
            .iter()
            .find(|c| c.docker_name == docker_name)
            .cloned()
    }
}

impl ContainerRuntime for Recording {
    async fn version(&self) -> Result<String, RuntimeError> {
        Ok("fake".into())
    }

    async fn list_managed(&self, namespace: &str) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .containers
            .iter()
            .filter(|c| c.belongs_to(namespace))
            .cloned()
            .collect())
    }

    async fn pull(
        &self,
        image: &ImageRef,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<PulledImage, RuntimeError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(format!("pull {image}"));
        let id = state
            .images
            .get(image.as_str())
            .cloned()
            .ok_or_else(|| RuntimeError::Pull {
                image: image.to_string(),
                message: "manifest unknown".into(),
            })?;
        progress(PullProgress {
            bytes_done: 1,
            bytes_total: 1,
        });
        state.local.insert(image.to_string(), id.clone());
        Ok(PulledImage {
            image_id: id,
            repo_digest: None,
        })
    }

    async fn local_image(&self, image: &ImageRef) -> Result<Option<PulledImage>, RuntimeError> {
        let state = self.state.lock().unwrap();
        Ok(state.local.get(image.as_str()).map(|id| PulledImage {
            image_id: id.clone(),
            repo_digest: None,
        }))
    }

    async fn create(&self, request: &CreateRequest) -> Result<String, RuntimeError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(format!("create {}", request.docker_name));
        if state
            .containers
            .iter()
            .any(|c| c.docker_name == request.docker_name)
        {
            return Err(RuntimeError::NameTaken(request.docker_name.clone()));
        }
        state.next_id += 1;
        let id = format!("c{}", state.next_id);
        let image_id = state.images[request.spec.image.as_str()].clone();
        state.containers.push(ObservedContainer {
            id: id.clone(),
            docker_name: request.docker_name.clone(),
            image: request.spec.image.to_string(),
            image_id,
            state: "created".into(),
            labels: request.labels.clone(),
            published: vec![],
            unhealthy: false,
        });
        let ports = request
            .spec
            .docker_ports()
            .iter()
            .filter(|p| p.host_port.is_some())
            .cloned()
            .collect();
        state.ports.insert(id.clone(), ports);
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(format!("start {id}"));
        let broken = state.broken_image.clone();
        let ports = state.ports.get(id).cloned().unwrap_or_default();
        // As Docker does, a host port another running container holds refuses the start.
        let taken = state.containers.iter().any(|c| {
            c.id != id
                && c.published
                    .iter()
                    .any(|held| ports.iter().any(|p| p.conflicts_with(held)))
        });
        let container = state.containers.iter_mut().find(|c| c.id == id).unwrap();
        if broken.as_deref() == Some(container.image_id.as_str()) {
            return Err(RuntimeError::Other("exec format error".into()));
        }
        if taken {
            return Err(RuntimeError::Other("port is already allocated".into()));
        }
        container.state = "running".into();
        container.published = ports;
        Ok(())
    }

    async fn stop(&self, id: &str, _timeout_seconds: u32) -> Result<(), RuntimeError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(format!("stop {id}"));
        if let Some(c) = state.containers.iter_mut().find(|c| c.id == id) {
            c.state = "exited".into();
            c.published.clear();
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(format!("remove {id}"));
        state.containers.retain(|c| c.id != id);
        Ok(())
    }

    async fn rename(&self, id: &str, new_name: &str) -> Result<(), RuntimeError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(format!("rename {id} {new_name}"));
        if state.containers.iter().any(|c| c.docker_name == new_name) {
            return Err(RuntimeError::NameTaken(new_name.to_owned()));
        }
        let container = state.containers.iter_mut().find(|c| c.id == id).unwrap();
        container.docker_name = new_name.to_owned();
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let state = self.state.lock().unwrap();
        let container = state
            .containers
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| RuntimeError::Gone(id.to_owned()))?;
        // Each container has its own address: 10.0.0.N for container cN.
        let n: u8 = container.id[1..].parse().unwrap_or(0);
        Ok(ContainerStatus {
            running: container.is_running(),
            exit_code: 0,
            restart_count: 0,
            docker_health: None,
            ip_address: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, n))),
        })
    }

    async fn remove_image(&self, image: &ImageRef) -> Result<ImageRemoval, RuntimeError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(format!("remove_image {image}"));
        Ok(match state.local.remove(image.as_str()) {
            Some(_) => ImageRemoval::Removed,
            None => ImageRemoval::Absent,
        })
    }

    async fn follow_events(
        &self,
        _namespace: &str,
        _since: SystemTime,
        _seen: &(dyn Fn(EngineEvent) + Send + Sync),
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unavailable("no events in tests".into()))
    }

    async fn exec(&self, id: &str, _command: &[String]) -> Result<i64, RuntimeError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(format!("exec {id}"));
        let unhealthy = state.unhealthy_image.clone();
        let container = state.containers.iter().find(|c| c.id == id).unwrap();
        Ok(i64::from(
            unhealthy.as_deref() == Some(container.image_id.as_str()),
        ))
    }

    async fn logs(
        &self,
        _id: &str,
        _options: &LogsOptions,
        _output: &mpsc::Sender<OutputBytes>,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Other("no logs in these tests".into()))
    }

    async fn exec_attached(
        &self,
        _id: &str,
        _command: &[String],
        _output: &mpsc::Sender<OutputBytes>,
    ) -> Result<i64, RuntimeError> {
        Err(RuntimeError::Other(
            "no attached commands in these tests".into(),
        ))
    }
}

mod proxied;

const NS: &str = "host";

fn spec(name: &str, image: &str) -> ContainerSpec {
    ContainerSpec {
        role: RoleName::new("web").unwrap(),
        name: ContainerName::new(name).unwrap(),
        image: ImageRef::new(image).unwrap(),
        command: vec![],
        env: Default::default(),
        ports: vec![],
        volumes: vec![],
        restart: RestartPolicy::UnlessStopped,
        stop_timeout_seconds: 1,
        health: Default::default(),
        secret_env: Default::default(),
        proxy: None,
        hooks: None,
    }
}

fn executor(images: &[(&str, &str)]) -> Executor<Recording> {
    let runtime = Recording::default();
    runtime.state.lock().unwrap().images = images
        .iter()
        .map(|(r, i)| ((*r).to_owned(), (*i).to_owned()))
        .collect();
    Executor::new(runtime, NS.into())
}

async fn apply(executor: &Executor<Recording>, specs: Vec<ContainerSpec>) -> JobResult {
    let desired = DesiredState::new(specs).unwrap();
    executor
        .apply(&JobId::new("j").unwrap(), &desired, &|_| {})
        .await
}

#[tokio::test(start_paused = true)]
async fn creates_then_keeps() {
    let exec = executor(&[("app:1", "sha256:a")]);
    let first = apply(&exec, vec![spec("web", "app:1")]).await;
    assert_eq!(first.status, HostStatus::Changed);
    assert_eq!(first.containers[0].action, ContainerAction::Created);
    let id = exec.runtime.container("host.web").unwrap().id;

    let second = apply(&exec, vec![spec("web", "app:1")]).await;
    assert_eq!(second.status, HostStatus::Unchanged);
    assert_eq!(second.containers[0].action, ContainerAction::Kept);
    assert_eq!(exec.runtime.container("host.web").unwrap().id, id);
}

#[tokio::test(start_paused = true)]
async fn a_plan_predicts_without_touching_anything() {
    let exec = executor(&[("app:1", "sha256:a"), ("app:2", "sha256:b")]);
    apply(
        &exec,
        vec![
            spec("web", "app:1"),
            spec("old", "app:1"),
            spec("same", "app:1"),
        ],
    )
    .await;
    let before = exec.runtime.calls().len();

    let mut changed = spec("web", "app:1");
    changed.command = vec!["other".into()];
    let desired =
        DesiredState::new(vec![changed, spec("new", "app:2"), spec("same", "app:1")]).unwrap();
    let result = exec.plan_only(&JobId::new("p").unwrap(), &desired).await;
    let actions: Vec<(&str, ContainerAction)> = result
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c.action))
        .collect();
    assert_eq!(
        actions,
        [
            ("old", ContainerAction::Removed),
            ("new", ContainerAction::Created),
            ("same", ContainerAction::Kept),
            ("web", ContainerAction::Replaced),
        ]
    );
    assert!(result.containers[1].needs_pull, "{result:?}");
    assert_eq!(result.status, HostStatus::Changed);
    assert_eq!(
        exec.runtime.calls().len(),
        before,
        "a plan made runtime calls"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pinned_image_already_present_is_not_pulled_again() {
    let pinned = format!("app:1@sha256:{}", "a".repeat(64));
    let exec = executor(&[(pinned.as_str(), "sha256:a"), ("app:1", "sha256:a")]);
    apply(&exec, vec![spec("web", &pinned), spec("tagged", "app:1")]).await;
    apply(&exec, vec![spec("web", &pinned), spec("tagged", "app:1")]).await;
    let pulls: Vec<String> = exec
        .runtime
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("pull "))
        .collect();
    // The tag is asked for every time (it may have moved); the pinned digest only once.
    assert_eq!(
        pulls,
        [
            "pull app:1".to_owned(),
            format!("pull {pinned}"),
            "pull app:1".into()
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_pull_touches_no_container() {
    let exec = executor(&[("app:1", "sha256:a")]);
    apply(&exec, vec![spec("web", "app:1")]).await;
    let before = exec.runtime.calls().len();

    let result = apply(
        &exec,
        vec![spec("web", "app:missing"), spec("other", "app:1")],
    )
    .await;
    assert_eq!(result.status, HostStatus::Failed);
    assert!(
        result
            .error
            .as_deref()
            .unwrap()
            .contains("manifest unknown")
    );
    assert_eq!(result.containers.len(), 1);
    assert_eq!(result.containers[0].action, ContainerAction::Failed);
    let calls = &exec.runtime.calls()[before..];
    assert!(calls.iter().all(|c| c.starts_with("pull ")), "{calls:?}");
    assert_eq!(exec.runtime.container("host.web").unwrap().state, "running");
}

#[tokio::test(start_paused = true)]
async fn a_repair_brings_back_stopped_and_removed_containers_and_nothing_else() {
    let exec = executor(&[("app:1", "sha256:a"), ("app:2", "sha256:b")]);
    let desired = DesiredState::new(vec![spec("web", "app:1"), spec("worker", "app:1")]).unwrap();
    let job = JobId::new("repair-1").unwrap();
    exec.apply(&job, &desired, &|_| {}).await;
    assert!(
        exec.repair(&job, &desired).await.is_none(),
        "nothing to repair"
    );

    // The registry moved on: a repair does not deploy it.
    exec.runtime
        .state
        .lock()
        .unwrap()
        .images
        .insert("app:1".into(), "sha256:new".into());
    let web = exec.runtime.container("host.web").unwrap().id;
    assert!(exec.repair(&job, &desired).await.is_none());
    assert_eq!(exec.runtime.container("host.web").unwrap().id, web);

    // Stopped by hand, and removed by hand; an undeclared container stays.
    {
        let mut state = exec.runtime.state.lock().unwrap();
        state.containers.retain(|c| c.docker_name != "host.worker");
        let web = state
            .containers
            .iter_mut()
            .find(|c| c.docker_name == "host.web")
            .unwrap();
        web.state = "exited".into();
        let mut extra = web.clone();
        extra.docker_name = "host.extra".into();
        extra.id = "extra".into();
        extra
            .labels
            .insert(labels::CONTAINER.into(), "extra".into());
        extra.state = "running".into();
        state.containers.push(extra);
    }
    let repaired = exec.repair(&job, &desired).await.expect("a repair");
    assert_eq!(repaired.status, HostStatus::Changed, "{repaired:?}");
    let mut actions: Vec<_> = repaired
        .containers
        .iter()
        .map(|c| (c.name.to_string(), c.action))
        .collect();
    actions.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        actions,
        [
            ("web".to_owned(), ContainerAction::Replaced),
            ("worker".to_owned(), ContainerAction::Created)
        ]
    );
    assert_eq!(exec.runtime.container("host.web").unwrap().state, "running");
    assert!(exec.runtime.container("host.extra").is_some());
}

#[tokio::test(start_paused = true)]
async fn a_new_image_replaces_and_removes_the_old_container() {
    let exec = executor(&[("app:1", "sha256:a")]);
    apply(&exec, vec![spec("web", "app:1")]).await;
    let old = exec.runtime.container("host.web").unwrap().id;
    exec.runtime
        .state
        .lock()
        .unwrap()
        .images
        .insert("app:1".into(), "sha256:b".into());

    let result = apply(&exec, vec![spec("web", "app:1")]).await;
    assert_eq!(result.containers[0].action, ContainerAction::Replaced);
    let new = exec.runtime.container("host.web").unwrap();
    assert_ne!(new.id, old);
    assert_eq!(new.image_id, "sha256:b");
    assert_eq!(exec.runtime.state.lock().unwrap().containers.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_replacement_that_cannot_start_brings_the_old_container_back() {
    let exec = executor(&[("app:1", "sha256:a")]);
    apply(&exec, vec![spec("web", "app:1")]).await;
    let old = exec.runtime.container("host.web").unwrap().id;
    {
        let mut state = exec.runtime.state.lock().unwrap();
        state.images.insert("app:1".into(), "sha256:broken".into());
        state.broken_image = Some("sha256:broken".into());
    }

    let result = apply(&exec, vec![spec("web", "app:1")]).await;
    assert_eq!(result.status, HostStatus::Failed);
    let error = result.containers[0].error.clone().unwrap();
    assert!(
        error.contains("exec format error") && error.contains("restored"),
        "{error}"
    );
    let restored = exec.runtime.container("host.web").unwrap();
    assert_eq!(
        (restored.id.as_str(), restored.state.as_str()),
        (old.as_str(), "running")
    );
    assert_eq!(
        exec.runtime.state.lock().unwrap().containers.len(),
        1,
        "the broken one is gone"
    );
}

/// `spec` with an exec probe, which the fake fails for `unhealthy_image`.
fn probed(name: &str, image: &str) -> ContainerSpec {
    ContainerSpec {
        health: HealthCheck {
            probe: Some(Probe::Exec {
                command: vec!["/check".into()],
            }),
            ..HealthCheck::default()
        },
        ..spec(name, image)
    }
}

/// Deploys `specs` from `app:1` as image `sha256:a`, then moves `app:1` to `sha256:b`
/// (unhealthy when `healthy` is false); returns the id of `host.web` before the change.
async fn deployed_then_moved(
    exec: &Executor<Recording>,
    specs: Vec<ContainerSpec>,
    healthy: bool,
) -> String {
    let first = apply(exec, specs).await;
    assert_eq!(first.status, HostStatus::Changed, "{first:?}");
    let mut state = exec.runtime.state.lock().unwrap();
    state.images.insert("app:1".into(), "sha256:b".into());
    if !healthy {
        state.unhealthy_image = Some("sha256:b".into());
    }
    state.calls.clear();
    state.containers[0].id.clone()
}

/// Panics unless the first of each of `expected` came in this order, with every call.
fn assert_in_order(calls: &[String], expected: &[impl AsRef<str>]) {
    let positions: Vec<usize> = expected
        .iter()
        .map(|c| position(calls, c.as_ref()))
        .collect();
    assert!(positions.is_sorted(), "{calls:?}");
}

/// The index of the first call equal to `call`; panics with every call if there is none.
fn position(calls: &[String], call: &str) -> usize {
    calls
        .iter()
        .position(|c| c == call)
        .unwrap_or_else(|| panic!("no {call:?} in {calls:?}"))
}

#[tokio::test(start_paused = true)]
async fn a_replacement_starts_beside_the_old_one_and_takes_over_once_healthy() {
    let exec = executor(&[("app:1", "sha256:a")]);
    let old = deployed_then_moved(&exec, vec![probed("web", "app:1")], true).await;

    let result = apply(&exec, vec![probed("web", "app:1")]).await;
    assert_eq!(result.containers[0].action, ContainerAction::Replaced);
    let calls = exec.runtime.calls();
    let last_probe = calls
        .iter()
        .rposition(|c| c == "exec c2")
        .unwrap_or_else(|| panic!("the new container was never probed: {calls:?}"));
    // Every call names its container second: `stop c1`, `rename c1 NAME`.
    let first_touch = calls
        .iter()
        .position(|c| c.split(' ').nth(1) == Some(old.as_str()))
        .unwrap();
    assert!(
        position(&calls, "create host.web.next") < last_probe && last_probe < first_touch,
        "the old container was touched before the new one was healthy: {calls:?}"
    );
    assert_eq!(
        &calls[first_touch..],
        [
            format!("stop {old}"),
            format!("remove {old}"),
            "rename c2 host.web".into()
        ]
    );
    let new = exec.runtime.container("host.web").unwrap();
    assert_eq!((new.id.as_str(), new.state.as_str()), ("c2", "running"));
    assert_eq!(exec.runtime.state.lock().unwrap().containers.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_replacement_leaves_the_old_container_untouched() {
    let exec = executor(&[("app:1", "sha256:a")]);
    let old = deployed_then_moved(&exec, vec![probed("web", "app:1")], false).await;

    let result = apply(&exec, vec![probed("web", "app:1")]).await;
    assert_eq!(result.status, HostStatus::Failed);
    let entry = &result.containers[0];
    assert_eq!(entry.action, ContainerAction::Failed);
    assert!(entry.previous_restored, "{entry:?}");
    let error = entry.error.clone().unwrap();
    assert!(
        error.contains("unhealthy")
            && error.contains("health check failed for 1m")
            && error.contains("exited with status 1")
            && error.contains("previous container was restored"),
        "{error}"
    );
    let calls = exec.runtime.calls();
    assert!(
        calls.iter().all(|c| !c.contains(&old)),
        "the old container was touched: {calls:?}"
    );
    assert!(position(&calls, "stop c2") < position(&calls, "remove c2"));
    let still = exec.runtime.container("host.web").unwrap();
    assert_eq!((still.id, still.state.as_str()), (old, "running"));
    assert_eq!(exec.runtime.state.lock().unwrap().containers.len(), 1);
}

fn with_port(mut spec: ContainerSpec) -> ContainerSpec {
    spec.ports = vec!["127.0.0.1:8080:80".parse().unwrap()];
    spec
}

#[tokio::test(start_paused = true)]
async fn a_port_conflict_stops_the_old_one_first_and_restores_it_when_the_new_is_unhealthy() {
    let exec = executor(&[("app:1", "sha256:a")]);
    let spec = with_port(probed("web", "app:1"));
    let old = deployed_then_moved(&exec, vec![spec.clone()], false).await;

    let result = apply(&exec, vec![spec]).await;
    assert_eq!(result.status, HostStatus::Failed);
    let entry = &result.containers[0];
    assert!(entry.previous_restored, "{entry:?}");
    let error = entry.error.clone().unwrap();
    assert!(
        error.contains("unhealthy") && error.contains("previous container was restored"),
        "{error}"
    );
    let calls = exec.runtime.calls();
    let expected_order = [
        format!("stop {old}"),
        format!("rename {old} host.web.replaced"),
        "create host.web".into(),
        "start c2".into(),
        "exec c2".into(),
        "stop c2".into(),
        "remove c2".into(),
        format!("rename {old} host.web"),
        format!("start {old}"),
    ];
    assert_in_order(&calls, &expected_order);
    let restored = exec.runtime.container("host.web").unwrap();
    assert_eq!((restored.id, restored.state.as_str()), (old, "running"));
    assert_eq!(exec.runtime.state.lock().unwrap().containers.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_port_conflict_replaces_stop_first_when_the_new_one_is_healthy() {
    let exec = executor(&[("app:1", "sha256:a")]);
    let spec = with_port(probed("web", "app:1"));
    let old = deployed_then_moved(&exec, vec![spec.clone()], true).await;

    let result = apply(&exec, vec![spec]).await;
    assert_eq!(result.containers[0].action, ContainerAction::Replaced);
    let calls = exec.runtime.calls();
    assert!(
        position(&calls, &format!("stop {old}")) < position(&calls, "create host.web"),
        "{calls:?}"
    );
    assert!(
        position(&calls, "exec c2") < position(&calls, &format!("remove {old}")),
        "{calls:?}"
    );
    let new = exec.runtime.container("host.web").unwrap();
    assert_eq!((new.id.as_str(), new.state.as_str()), ("c2", "running"));
    assert_eq!(exec.runtime.state.lock().unwrap().containers.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_created_container_that_fails_its_health_check_is_removed() {
    let exec = executor(&[("app:1", "sha256:a")]);
    exec.runtime.state.lock().unwrap().unhealthy_image = Some("sha256:a".into());

    let result = apply(&exec, vec![probed("web", "app:1")]).await;
    assert_eq!(result.status, HostStatus::Failed);
    let entry = &result.containers[0];
    assert_eq!(entry.action, ContainerAction::Failed);
    assert!(!entry.previous_restored);
    assert!(
        entry.error.as_deref().unwrap().contains("unhealthy"),
        "{entry:?}"
    );
    let calls = exec.runtime.calls();
    assert!(position(&calls, "stop c1") < position(&calls, "remove c1"));
    assert!(exec.runtime.state.lock().unwrap().containers.is_empty());
}

#[tokio::test(start_paused = true)]
async fn undeclared_containers_are_removed_and_foreign_names_reported() {
    let exec = executor(&[("app:1", "sha256:a")]);
    apply(&exec, vec![spec("web", "app:1"), spec("old", "app:1")]).await;
    exec.runtime
        .state
        .lock()
        .unwrap()
        .containers
        .push(ObservedContainer {
            id: "foreign".into(),
            docker_name: "host.db".into(),
            image: "postgres".into(),
            image_id: "sha256:p".into(),
            state: "running".into(),
            labels: HashMap::new(),
            published: vec![],
            unhealthy: false,
        });

    let result = apply(&exec, vec![spec("web", "app:1"), spec("db", "app:1")]).await;
    let actions: Vec<(&str, ContainerAction)> = result
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c.action))
        .collect();
    assert_eq!(
        actions,
        [
            ("old", ContainerAction::Removed),
            ("db", ContainerAction::Failed),
            ("web", ContainerAction::Kept)
        ]
    );
    assert!(
        result.containers[1]
            .error
            .as_deref()
            .unwrap()
            .contains("does not manage")
    );
    assert_eq!(exec.runtime.container("host.db").unwrap().id, "foreign");
}
