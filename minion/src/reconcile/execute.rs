//! Applying a desired state: pull, plan, then create, replace and remove containers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use brine_common::host::RunningContainer;
use brine_common::names::ContainerName;
use brine_common::outcome::{ContainerAction, ContainerResult, JobId, JobResult, Timings};
use brine_common::progress::{Phase, Progress};
use brine_common::spec::{ContainerSpec, DesiredState, ImageRef};
use futures::future::join_all;
use tokio::time::Instant;

use super::health::{RuntimeTarget, wait_until_healthy};
use super::plan::{
    Action, DesiredContainer, belongs_to, declared_identity, docker_name, next_name, plan,
    replaced_name,
};
use crate::runtime::{ContainerRuntime, CreateRequest, ObservedContainer, PulledImage, labels};

/// Where progress goes; reporting is best effort and must never block the executor.
pub type ProgressSink<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// Converges one host's containers, through a [`ContainerRuntime`].
#[derive(Debug)]
pub struct Executor<R> {
    runtime: R,
    namespace: String,
    /// Milliseconds spent waiting for health in the current job; jobs run one at a time.
    health_ms: AtomicU64,
}

impl<R: ContainerRuntime> Executor<R> {
    pub fn new(runtime: R, namespace: String) -> Self {
        Self {
            runtime,
            namespace,
            health_ms: AtomicU64::new(0),
        }
    }

    /// The namespace whose containers it manages.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// The managed containers of this namespace, as reported to the master.
    pub async fn running(&self) -> Result<Vec<RunningContainer>, crate::runtime::RuntimeError> {
        let observed = self.runtime.list_managed().await?;
        Ok(observed
            .iter()
            .filter(|o| belongs_to(&self.namespace, o))
            .filter_map(|o| {
                let (name, role) = declared_identity(o);
                Some(RunningContainer {
                    name: name?,
                    role: role?,
                    image: o.image.clone(),
                    image_digest: o.image_id.clone(),
                    state: o.state.clone(),
                    container_id: o.id.clone(),
                })
            })
            .collect())
    }

    /// Makes the host run exactly `desired`. Every image is pulled before any container is
    /// touched, so a failed pull leaves the host as it was.
    pub async fn apply(
        &self,
        job_id: &JobId,
        desired: &DesiredState,
        progress: ProgressSink<'_>,
    ) -> JobResult {
        let observed = match self.runtime.list_managed().await {
            Ok(observed) => observed,
            Err(err) => {
                return JobResult::failed(job_id.clone(), format!("list containers: {err}"));
            }
        };
        self.converge(job_id, desired, &observed, progress).await
    }

    /// Brings back the containers of `desired` that are missing or stopped (died, stopped or
    /// removed by hand), and nothing else: a running container is never replaced and nothing is
    /// removed, so a repair cannot deploy or undo a deploy; only the master's jobs do. Returns
    /// `None` when nothing needed repair, or the engine could not be asked.
    pub async fn repair(&self, job_id: &JobId, desired: &DesiredState) -> Option<JobResult> {
        let observed = match self.runtime.list_managed().await {
            Ok(observed) => observed,
            Err(err) => {
                // Nothing can be repaired without the engine; its outage is reported by whoever
                // watches it, and its return brings a new check.
                tracing::debug!("no repair: cannot list containers: {err}");
                return None;
            }
        };
        let ours: Vec<&ObservedContainer> = observed
            .iter()
            .filter(|o| belongs_to(&self.namespace, o))
            .collect();
        let broken: Vec<ContainerSpec> = desired
            .containers
            .iter()
            .filter(|spec| {
                let name = docker_name(&self.namespace, &spec.name);
                // Docker restarts a container with a restart policy by itself.
                !ours.iter().any(|o| {
                    o.docker_name == name && matches!(o.state.as_str(), "running" | "restarting")
                })
            })
            .cloned()
            .collect();
        if broken.is_empty() {
            return None;
        }
        let names: Vec<String> = broken
            .iter()
            .map(|spec| docker_name(&self.namespace, &spec.name))
            .collect();
        // Only the broken containers are planned, so nothing else is replaced or removed.
        let subset: Vec<ObservedContainer> = ours
            .into_iter()
            .filter(|o| names.contains(&o.docker_name))
            .cloned()
            .collect();
        let broken = DesiredState { containers: broken };
        Some(self.converge(job_id, &broken, &subset, &|_| {}).await)
    }

    /// Makes `observed` (the managed containers considered) match `desired`.
    async fn converge(
        &self,
        job_id: &JobId,
        desired: &DesiredState,
        observed: &[ObservedContainer],
        progress: ProgressSink<'_>,
    ) -> JobResult {
        let pulling = Instant::now();
        let pulled = match self.pull_all(desired, progress).await {
            Ok(pulled) => pulled,
            Err(failures) => {
                let error = failures.values().cloned().collect::<Vec<_>>().join("; ");
                let containers = desired
                    .containers
                    .iter()
                    .filter_map(|spec| {
                        failures.get(&spec.image).map(|err| ContainerResult {
                            name: spec.name.clone(),
                            role: Some(spec.role.clone()),
                            action: ContainerAction::Failed,
                            image: spec.image.to_string(),
                            image_digest: String::new(),
                            error: Some(err.clone()),
                            previous_restored: false,
                            needs_pull: false,
                        })
                    })
                    .collect();
                return JobResult {
                    job_id: job_id.clone(),
                    status: brine_common::outcome::HostStatus::Failed,
                    containers,
                    error: Some(format!("{error}; no container was changed")),
                    timings: Timings {
                        pull_ms: elapsed_ms(pulling),
                        ..Timings::default()
                    },
                };
            }
        };

        let wanted: Vec<DesiredContainer> = desired
            .containers
            .iter()
            .map(|spec| DesiredContainer {
                hash: spec.hash(),
                image_id: pulled[&spec.image].image_id.clone(),
                spec: spec.clone(),
            })
            .collect();

        let pull_ms = elapsed_ms(pulling);
        self.health_ms.store(0, Ordering::Relaxed);
        let acting = Instant::now();
        let mut results = vec![];
        for action in plan(&self.namespace, &wanted, observed) {
            results.push(self.execute(job_id, action, &pulled, progress).await);
        }
        let health_ms = self.health_ms.load(Ordering::Relaxed);
        JobResult {
            timings: Timings {
                pull_ms,
                containers_ms: elapsed_ms(acting).saturating_sub(health_ms),
                health_ms,
            },
            ..JobResult::from_containers(job_id.clone(), results)
        }
    }

    /// What [`Executor::apply`] would do, without doing any of it: nothing is pulled, created,
    /// stopped or removed. An image the host lacks is reported as `needs_pull`, and a container
    /// that would run it counts as created or replaced.
    pub async fn plan_only(&self, job_id: &JobId, desired: &DesiredState) -> JobResult {
        let observed = match self.runtime.list_managed().await {
            Ok(observed) => observed,
            Err(err) => {
                return JobResult::failed(job_id.clone(), format!("list containers: {err}"));
            }
        };
        let mut local: HashMap<&ImageRef, Option<PulledImage>> = HashMap::new();
        for spec in &desired.containers {
            if !local.contains_key(&spec.image) {
                // Only a pinned reference says which bits it means; a bare tag may have moved.
                let present = match spec.image.parts().digest {
                    Some(_) => self.runtime.local_image(&spec.image).await.unwrap_or(None),
                    None => None,
                };
                local.insert(&spec.image, present);
            }
        }
        // An image the host lacks cannot be compared by id: a pinned one is new for sure, while
        // for a bare tag the running container's image is the best guess.
        let current_image = |spec: &ContainerSpec| {
            let name = docker_name(&self.namespace, &spec.name);
            observed
                .iter()
                .find(|o| o.docker_name == name && spec.image.parts().digest.is_none())
                .map(|o| o.image_id.clone())
                .unwrap_or_default()
        };
        let wanted: Vec<DesiredContainer> = desired
            .containers
            .iter()
            .map(|spec| DesiredContainer {
                hash: spec.hash(),
                image_id: local[&spec.image]
                    .as_ref()
                    .map_or_else(|| current_image(spec), |p| p.image_id.clone()),
                spec: spec.clone(),
            })
            .collect();
        let results = plan(&self.namespace, &wanted, &observed)
            .into_iter()
            .map(|action| match action {
                Action::Keep { desired, .. } => predicted(&desired, ContainerAction::Kept, &local),
                Action::Create { desired } => predicted(&desired, ContainerAction::Created, &local),
                Action::Replace { desired, .. } => {
                    predicted(&desired, ContainerAction::Replaced, &local)
                }
                Action::Remove { observed } => removed(&observed, None),
            })
            .collect();
        JobResult::from_containers(job_id.clone(), results)
    }

    /// Pulls every distinct image concurrently; returns the failures by image if any.
    async fn pull_all(
        &self,
        desired: &DesiredState,
        progress: ProgressSink<'_>,
    ) -> Result<HashMap<ImageRef, PulledImage>, BTreeMap<ImageRef, String>> {
        let mut images: Vec<&ImageRef> = desired.containers.iter().map(|c| &c.image).collect();
        images.sort_by_key(|i| i.as_str());
        images.dedup();
        let pulls = images.into_iter().map(|image| async move {
            let report = |bytes: crate::runtime::PullProgress| {
                progress(Progress {
                    phase: Phase::Pulling,
                    subject: image.to_string(),
                    bytes_done: bytes.bytes_done,
                    bytes_total: bytes.bytes_total,
                });
            };
            // A pinned image already here is exactly what is wanted: no registry round trip.
            let local = match image.parts().digest {
                Some(_) => self.runtime.local_image(image).await,
                None => Ok(None),
            };
            let result = match local {
                Ok(Some(present)) => Ok(present),
                Ok(None) | Err(_) => self.runtime.pull(image, &report).await,
            };
            (image.clone(), result)
        });
        let mut pulled = HashMap::new();
        let mut failures = BTreeMap::new();
        for (image, result) in join_all(pulls).await {
            match result {
                Ok(image_info) => {
                    pulled.insert(image, image_info);
                }
                Err(err) => {
                    failures.insert(image, err.to_string());
                }
            }
        }
        if failures.is_empty() {
            Ok(pulled)
        } else {
            Err(failures)
        }
    }

    async fn execute(
        &self,
        job_id: &JobId,
        action: Action,
        pulled: &HashMap<ImageRef, PulledImage>,
        progress: ProgressSink<'_>,
    ) -> ContainerResult {
        let digest = |image: &ImageRef| {
            pulled
                .get(image)
                .map(|p| p.repo_digest.clone().unwrap_or_else(|| p.image_id.clone()))
                .unwrap_or_default()
        };
        match action {
            Action::Keep { desired, .. } => result_for(
                &desired,
                ContainerAction::Kept,
                digest(&desired.spec.image),
                None,
            ),
            Action::Create { desired } => {
                let name = docker_name(&self.namespace, &desired.spec.name);
                let outcome = self.launch(job_id, &desired, &name, progress).await;
                let (action, error) = match outcome {
                    Ok(_) => (ContainerAction::Created, None),
                    Err(err) => (ContainerAction::Failed, Some(err)),
                };
                result_for(&desired, action, digest(&desired.spec.image), error)
            }
            Action::Replace { desired, observed } => {
                let outcome = self.replace(job_id, &desired, &observed, progress).await;
                let image_digest = digest(&desired.spec.image);
                match outcome {
                    Ok(()) => result_for(&desired, ContainerAction::Replaced, image_digest, None),
                    Err(failure) => ContainerResult {
                        previous_restored: failure.previous_restored,
                        ..result_for(
                            &desired,
                            ContainerAction::Failed,
                            image_digest,
                            Some(failure.message),
                        )
                    },
                }
            }
            Action::Remove { observed } => {
                progress(phase(Phase::Removing, &observed.docker_name));
                let error = self
                    .runtime
                    .remove(&observed.id)
                    .await
                    .err()
                    .map(|e| e.to_string());
                removed(&observed, error)
            }
        }
    }

    fn create_request(
        &self,
        job_id: &JobId,
        desired: &DesiredContainer,
        docker_name: &str,
    ) -> CreateRequest {
        let labels = HashMap::from([
            (labels::MANAGED.to_owned(), "true".to_owned()),
            (labels::NAMESPACE.to_owned(), self.namespace.clone()),
            (labels::ROLE.to_owned(), desired.spec.role.to_string()),
            (labels::CONTAINER.to_owned(), desired.spec.name.to_string()),
            (labels::SPEC_HASH.to_owned(), desired.hash.to_string()),
            (labels::JOB.to_owned(), job_id.to_string()),
        ]);
        CreateRequest {
            docker_name: docker_name.to_owned(),
            spec: desired.spec.clone(),
            labels,
        }
    }

    /// Creates and starts a container named `docker_name`, then waits until it is healthy, and
    /// returns its id. A container that does not start or does not become healthy is stopped
    /// and removed again, so that nothing half-working stays and the next highstate starts from
    /// a clean slate.
    async fn launch(
        &self,
        job_id: &JobId,
        desired: &DesiredContainer,
        docker_name: &str,
        progress: ProgressSink<'_>,
    ) -> Result<String, String> {
        let request = self.create_request(job_id, desired, docker_name);
        progress(phase(Phase::Creating, &desired.spec.name));
        let id = self
            .runtime
            .create(&request)
            .await
            .map_err(|e| e.to_string())?;
        // The phase lasts until the health check has decided.
        progress(phase(Phase::Starting, &desired.spec.name));
        if let Err(err) = self.runtime.start(&id).await {
            if let Err(cleanup) = self.runtime.remove(&id).await {
                tracing::warn!(container = %docker_name, "cannot remove a container that failed to start: {cleanup}");
            }
            return Err(format!("start: {err}"));
        }
        let target = RuntimeTarget {
            runtime: &self.runtime,
            id: &id,
            probe: desired.spec.health.probe.as_ref(),
        };
        if let Err(unhealthy) = self
            .timed_health(wait_until_healthy(&desired.spec.health, &target))
            .await
        {
            tracing::warn!(container = %docker_name, "the new container is unhealthy: {unhealthy}");
            self.discard(&id, docker_name, desired.spec.stop_timeout_seconds)
                .await;
            return Err(format!("the new container is unhealthy: {unhealthy}"));
        }
        Ok(id)
    }

    /// Runs a health wait and adds its duration to the job's health time.
    async fn timed_health<T>(&self, wait: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let outcome = wait.await;
        self.health_ms
            .fetch_add(elapsed_ms(started), Ordering::Relaxed);
        outcome
    }

    /// Stops and removes a container that failed its health check. Failures are only logged:
    /// a leftover is removed by the next highstate, and a caller that needs the name back finds
    /// out when it renames.
    async fn discard(&self, id: &str, docker_name: &str, stop_timeout_seconds: u32) {
        if let Err(err) = self.runtime.stop(id, stop_timeout_seconds).await {
            tracing::warn!(container = %docker_name, "cannot stop an unhealthy container: {err}");
        }
        if let Err(err) = self.runtime.remove(id).await {
            tracing::warn!(container = %docker_name, "cannot remove an unhealthy container: {err}");
        }
    }

    /// Replaces `old` with a new container, keeping the old one running until the new one is
    /// healthy whenever both can run at once, i.e. they publish no host port in common.
    async fn replace(
        &self,
        job_id: &JobId,
        desired: &DesiredContainer,
        old: &ObservedContainer,
        progress: ProgressSink<'_>,
    ) -> Result<(), ReplaceFailure> {
        let conflict = desired
            .spec
            .ports
            .iter()
            .any(|new| old.published.iter().any(|held| new.conflicts_with(held)));
        if conflict {
            self.replace_stop_first(job_id, desired, old, progress)
                .await
        } else {
            self.replace_start_first(job_id, desired, old, progress)
                .await
        }
    }

    /// The new container starts beside the old one under a temporary name and takes the name
    /// over once healthy; until then the old one is not touched, so a new container that fails
    /// costs no downtime.
    async fn replace_start_first(
        &self,
        job_id: &JobId,
        desired: &DesiredContainer,
        old: &ObservedContainer,
        progress: ProgressSink<'_>,
    ) -> Result<(), ReplaceFailure> {
        let name = docker_name(&self.namespace, &desired.spec.name);
        let next = next_name(&self.namespace, &desired.spec.name);
        let new_id = self
            .launch(job_id, desired, &next, progress)
            .await
            .map_err(|err| ReplaceFailure {
                message: format!(
                    "{err}; the previous container was restored (it was never stopped)"
                ),
                previous_restored: true,
            })?;

        progress(phase(Phase::Stopping, &desired.spec.name));
        let handed_over = match self
            .runtime
            .stop(&old.id, desired.spec.stop_timeout_seconds)
            .await
        {
            Err(err) => Err(format!("stop the previous container: {err}")),
            Ok(()) => {
                progress(phase(Phase::Removing, &old.docker_name));
                self.runtime
                    .remove(&old.id)
                    .await
                    .map_err(|err| format!("remove the previous container: {err}"))
            }
        };
        if let Err(err) = handed_over {
            // The old one still holds the name: it stays, the new one goes.
            self.discard(&new_id, &next, desired.spec.stop_timeout_seconds)
                .await;
            return Err(ReplaceFailure::undone(
                err,
                self.restore(old, &name, false).await,
            ));
        }
        self.runtime
            .rename(&new_id, &name)
            .await
            .map_err(|err| ReplaceFailure {
                // It runs and is healthy; the next highstate replaces it under the right name.
                message: format!(
                    "rename the new container to {name}: {err}; it runs as {next} and the previous container was removed"
                ),
                previous_restored: false,
            })
    }

    /// The old container holds a host port the new one needs: it is stopped and set aside
    /// under another name (freeing its name and ports), and removed only once the new one is
    /// healthy. If the new one cannot be created or started, or is unhealthy, the old one is
    /// put back and started again.
    async fn replace_stop_first(
        &self,
        job_id: &JobId,
        desired: &DesiredContainer,
        old: &ObservedContainer,
        progress: ProgressSink<'_>,
    ) -> Result<(), ReplaceFailure> {
        let name = docker_name(&self.namespace, &desired.spec.name);
        let parked = replaced_name(&self.namespace, &desired.spec.name);
        progress(phase(Phase::Stopping, &desired.spec.name));
        if let Err(err) = self
            .runtime
            .stop(&old.id, desired.spec.stop_timeout_seconds)
            .await
        {
            return Err(ReplaceFailure::undone(
                format!("stop the old container: {err}"),
                self.restore(old, &name, false).await,
            ));
        }
        if let Err(err) = self.runtime.rename(&old.id, &parked).await {
            return Err(ReplaceFailure::undone(
                format!("set the old container aside: {err}"),
                self.restore(old, &name, false).await,
            ));
        }
        match self.launch(job_id, desired, &name, progress).await {
            Ok(_) => {
                progress(phase(Phase::Removing, &parked));
                if let Err(err) = self.runtime.remove(&old.id).await {
                    // The new container runs; the leftover is removed by the next highstate.
                    tracing::warn!(container = %parked, "cannot remove the replaced container: {err}");
                }
                Ok(())
            }
            Err(err) => Err(ReplaceFailure::undone(
                err,
                self.restore(old, &name, true).await,
            )),
        }
    }

    /// Puts the old container back as it was: under its name (when it was `renamed`) and
    /// running if it was running. `Err` says what could not be done.
    async fn restore(
        &self,
        old: &ObservedContainer,
        name: &str,
        renamed: bool,
    ) -> Result<(), String> {
        if renamed && let Err(err) = self.runtime.rename(&old.id, name).await {
            tracing::error!(container = %name, "cannot restore the previous container's name: {err}");
            return Err(format!("rename it back to {name}: {err}"));
        }
        if old.is_running()
            && let Err(err) = self.runtime.start(&old.id).await
        {
            tracing::error!(container = %name, "cannot restart the previous container: {err}");
            return Err(format!("start it again: {err}"));
        }
        Ok(())
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A replacement that did not happen, and whether the old container runs again.
#[derive(Debug)]
struct ReplaceFailure {
    message: String,
    previous_restored: bool,
}

impl ReplaceFailure {
    /// `what` failed and the old container was (or could not be) brought back.
    fn undone(what: String, restored: Result<(), String>) -> Self {
        match restored {
            Ok(()) => Self {
                message: format!("{what}; the previous container was restored"),
                previous_restored: true,
            },
            Err(why) => Self {
                message: format!("{what}; the previous container could not be restored: {why}"),
                previous_restored: false,
            },
        }
    }
}

fn phase(phase: Phase, subject: &impl ToString) -> Progress {
    Progress {
        phase,
        subject: subject.to_string(),
        bytes_done: 0,
        bytes_total: 0,
    }
}

/// The result for a managed container that no role declares any more: removed, or `error`.
fn removed(observed: &ObservedContainer, error: Option<String>) -> ContainerResult {
    let (name, role) = declared_identity(observed);
    ContainerResult {
        // A managed container always carries its name label; the Docker name is a fallback
        // that is valid too.
        name: name
            .or_else(|| ContainerName::existing(observed.docker_name.clone()).ok())
            .unwrap_or_else(|| ContainerName::new("unnamed").expect("a valid literal name")),
        role,
        action: if error.is_some() {
            ContainerAction::Failed
        } else {
            ContainerAction::Removed
        },
        image: observed.image.clone(),
        image_digest: observed.image_id.clone(),
        error,
        previous_restored: false,
        needs_pull: false,
    }
}

/// A planned action on a desired container.
fn predicted(
    desired: &DesiredContainer,
    action: ContainerAction,
    local: &HashMap<&ImageRef, Option<PulledImage>>,
) -> ContainerResult {
    let present = local.get(&desired.spec.image).and_then(Option::as_ref);
    ContainerResult {
        needs_pull: present.is_none(),
        ..result_for(
            desired,
            action,
            present
                .map(|p| p.repo_digest.clone().unwrap_or_else(|| p.image_id.clone()))
                .unwrap_or_default(),
            None,
        )
    }
}

fn result_for(
    desired: &DesiredContainer,
    action: ContainerAction,
    image_digest: String,
    error: Option<String>,
) -> ContainerResult {
    ContainerResult {
        name: desired.spec.name.clone(),
        role: Some(desired.spec.role.clone()),
        action,
        image: desired.spec.image.to_string(),
        image_digest,
        error,
        previous_restored: false,
        needs_pull: false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use brine_common::names::RoleName;
    use brine_common::outcome::HostStatus;
    use brine_common::spec::{HealthCheck, PortMapping, Probe, RestartPolicy};

    use super::*;
    use crate::runtime::{ContainerStatus, ImageRemoval, PullProgress, RuntimeError};

    /// A runtime that records every call and keeps containers in memory.
    #[derive(Default)]
    struct Recording {
        state: Mutex<FakeState>,
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

        async fn list_managed(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
            Ok(self.state.lock().unwrap().containers.clone())
        }

        async fn pull(
            &self,
            image: &ImageRef,
            progress: &(dyn Fn(PullProgress) + Send + Sync),
        ) -> Result<PulledImage, RuntimeError> {
            let mut state = self.state.lock().unwrap();
            state.calls.push(format!("pull {image}"));
            let id =
                state
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
                .ports
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
            Ok(ContainerStatus {
                running: container.is_running(),
                exit_code: 0,
                restart_count: 0,
                docker_health: None,
                ip_address: None,
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

        async fn watch_changes(
            &self,
            _namespace: &str,
            _changed: &(dyn Fn(String) + Send + Sync),
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
    }

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
        let desired =
            DesiredState::new(vec![spec("web", "app:1"), spec("worker", "app:1")]).unwrap();
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
        let positions: Vec<usize> = expected_order.iter().map(|c| position(&calls, c)).collect();
        assert!(positions.is_sorted(), "{calls:?}");
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
}
