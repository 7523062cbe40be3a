//! Applying a desired state: pull, plan, then create, replace and remove containers. The
//! replacement of a running container is in `replace.rs`, a plan (reporting what would change) in `plan_only.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use brine_common::host::RunningContainer;
use brine_common::names::{ContainerName, RoleName};
use brine_common::outcome::{ContainerAction, ContainerResult, JobId, JobResult, Timings};
use brine_common::progress::{Phase, Progress};
use brine_common::spec::{ContainerSpec, DesiredState, ImageRef};
use futures::future::join_all;
use tokio::time::Instant;

use super::health::{RuntimeTarget, wait_until_healthy};
use super::hooks::{self, HookPoint};
use super::plan::{Action, DesiredContainer, declared_identity, docker_name, plan};
use crate::proxy::ProxyClient;
use crate::runtime::{ContainerRuntime, CreateRequest, ObservedContainer, PulledImage, labels};

mod plan_only;
pub(crate) mod proxied;
mod replace;
#[cfg(test)]
mod tests;

/// Where progress goes; reporting is best effort and must never block the executor.
pub type ProgressSink<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// Converges one host's containers, through a [`ContainerRuntime`].
#[derive(Debug)]
pub struct Executor<R> {
    runtime: R,
    namespace: String,
    /// The host's proxy, asked only for containers whose ports it carries.
    proxy: ProxyClient,
    /// Milliseconds spent waiting for health in the current job; jobs run one at a time.
    health_ms: AtomicU64,
}

impl<R: ContainerRuntime> Executor<R> {
    pub fn new(runtime: R, namespace: String) -> Self {
        Self {
            runtime,
            namespace,
            proxy: ProxyClient::new(brine_common::proxy_control::DEFAULT_CONTROL_SOCKET),
            health_ms: AtomicU64::new(0),
        }
    }

    /// Talks to the host's proxy at `proxy` instead of its default control socket.
    pub fn with_proxy(self, proxy: ProxyClient) -> Self {
        Self { proxy, ..self }
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
        let observed = self.runtime.list_managed(&self.namespace).await?;
        Ok(observed
            .iter()
            .filter(|o| o.belongs_to(&self.namespace))
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
        let observed = match self.runtime.list_managed(&self.namespace).await {
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
        let observed = match self.runtime.list_managed(&self.namespace).await {
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
            .filter(|o| o.belongs_to(&self.namespace))
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
        let pulled = match self.pull_all(desired.images(), progress).await {
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
        let actions = plan(&self.namespace, &wanted, observed);
        let rollouts =
            hooks::rollouts(
                actions
                    .iter()
                    .enumerate()
                    .filter_map(|(at, action)| match action {
                        Action::Replace { desired, .. } => Some((
                            at,
                            &desired.spec.role,
                            &desired.spec.name,
                            desired.spec.hooks.as_ref(),
                        )),
                        _ => None,
                    }),
            );
        // Roles whose before_replace hook failed, and why: their replacements do not happen.
        let mut held_back: BTreeMap<RoleName, String> = BTreeMap::new();
        let mut results: Vec<ContainerResult> = vec![];
        for (at, action) in actions.into_iter().enumerate() {
            let role = match &action {
                Action::Replace { desired, .. } => Some(desired.spec.role.clone()),
                _ => None,
            };
            let rollout = role.as_ref().and_then(|r| Some((r, rollouts.get(r)?)));
            if let Some((role, rollout)) = rollout
                && rollout.first == at
                && let Err(err) = hooks::run(HookPoint::BeforeReplace, role, rollout, job_id).await
            {
                tracing::warn!(%role, "{err}");
                held_back.insert(role.clone(), err);
            }
            let result = match (&action, role.as_ref().and_then(|r| held_back.get(r))) {
                (Action::Replace { desired, .. }, Some(why)) => ContainerResult {
                    // The previous container was never touched: it still runs.
                    previous_restored: true,
                    ..result_for(
                        desired,
                        ContainerAction::Failed,
                        String::new(),
                        Some(format!("not replaced: {why}")),
                    )
                },
                _ => self.execute(job_id, action, &pulled, progress).await,
            };
            results.push(result);
            // Put back into service only a role whose containers all serve: replaced, or the
            // previous ones restored.
            let serving = |role: &RoleName| {
                results
                    .iter()
                    .filter(|r| r.role.as_ref() == Some(role))
                    .all(|r| r.action != ContainerAction::Failed || r.previous_restored)
            };
            if let Some((role, rollout)) = rollout
                && rollout.last == at
                && !held_back.contains_key(role)
                && serving(role)
                && let Err(err) = hooks::run(HookPoint::AfterHealthy, role, rollout, job_id).await
            {
                tracing::warn!(%role, "{err}");
                if let Some(last) = results.last_mut() {
                    let done = match last.action {
                        ContainerAction::Replaced => "replaced".to_owned(),
                        _ => last.error.clone().unwrap_or_default(),
                    };
                    last.action = ContainerAction::Failed;
                    last.error = Some(format!("{done}; then {err}"));
                }
            }
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

    /// Gets every image concurrently (see [`Self::obtain`]); returns the failures by image if
    /// any.
    async fn pull_all(
        &self,
        images: Vec<&ImageRef>,
        progress: ProgressSink<'_>,
    ) -> Result<HashMap<ImageRef, PulledImage>, BTreeMap<ImageRef, String>> {
        let pulls = images.into_iter().map(|image| async move {
            let report = |bytes: crate::runtime::PullProgress| {
                progress(Progress {
                    phase: Phase::Pulling,
                    subject: image.to_string(),
                    bytes_done: bytes.bytes_done,
                    bytes_total: bytes.bytes_total,
                });
            };
            (image.clone(), self.obtain(image, &report).await)
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

    /// Gets `images` onto the host without touching a container, ahead of a job that will use
    /// them; says which could not be fetched, and why.
    pub async fn fetch_ahead(&self, images: &[ImageRef]) -> Result<(), String> {
        match self.pull_all(images.iter().collect(), &|_| {}).await {
            Ok(_) => Ok(()),
            Err(failures) => Err(failures.into_values().collect::<Vec<_>>().join("; ")),
        }
    }

    /// The local image `image` names, pulled first unless it is pinned and already here.
    async fn obtain(
        &self,
        image: &ImageRef,
        progress: &(dyn Fn(crate::runtime::PullProgress) + Send + Sync),
    ) -> Result<PulledImage, crate::runtime::RuntimeError> {
        // A pinned image already here is exactly what is wanted: no registry round trip.
        let local = match image.parts().digest {
            Some(_) => self.runtime.local_image(image).await,
            None => Ok(None),
        };
        match local {
            Ok(Some(present)) => Ok(present),
            Ok(None) | Err(_) => self.runtime.pull(image, progress).await,
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
            Action::Keep { desired, observed } => {
                // The proxy may have lost the route (a host rebooted, a proxy reinstalled):
                // setting it again is cheap and changes nothing when it is in place.
                let error = self.route_to(&desired.spec, &observed.id).await.err();
                let action = match error {
                    None => ContainerAction::Kept,
                    Some(_) => ContainerAction::Failed,
                };
                result_for(&desired, action, digest(&desired.spec.image), error)
            }
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
                let error = match self.release(&observed).await {
                    // The container stays while the proxy still routes to it.
                    Err(err) => Some(err),
                    Ok(()) => self
                        .runtime
                        .remove(&observed.id)
                        .await
                        .err()
                        .map(|e| e.to_string()),
                };
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
        let mut labels = HashMap::from([
            (labels::MANAGED.to_owned(), "true".to_owned()),
            (labels::NAMESPACE.to_owned(), self.namespace.clone()),
            (labels::ROLE.to_owned(), desired.spec.role.to_string()),
            (labels::CONTAINER.to_owned(), desired.spec.name.to_string()),
            (labels::SPEC_HASH.to_owned(), desired.hash.to_string()),
            (labels::JOB.to_owned(), job_id.to_string()),
        ]);
        if let Some(proxy) = &desired.spec.proxy {
            labels.insert(
                labels::PROXY.to_owned(),
                proxied::proxy_label(&proxied::proxied_ports(&desired.spec)),
            );
            labels.insert(
                labels::PROXY_MODE.to_owned(),
                proxy.mode.as_str().to_owned(),
            );
        }
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
        // Only a healthy container gets traffic; a route that fails leaves it to no one.
        if let Err(err) = self.route_to(&desired.spec, &id).await {
            self.discard(&id, docker_name, desired.spec.stop_timeout_seconds)
                .await;
            return Err(err);
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
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
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
