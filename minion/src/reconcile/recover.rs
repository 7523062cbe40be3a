//! Replacements a crash interrupted, finished before the minion does anything else.
//!
//! A replacement leaves its state in Docker's names: a start-first one runs the new container
//! as `NAME.next` beside the old `NAME`; a stop-first one sets the old container aside as
//! `NAME.replaced` (stopped) and starts the new one as `NAME`. Killed in between, the minion
//! finds on its next start a new container that never passed its health gate. It runs the gate
//! now: a healthy new container takes over as the replacement would have; an unhealthy one (or
//! none) is removed and the old container put back. Either way it reports what it found as the
//! lost job's result, which the master records late.

use std::collections::BTreeMap;
use std::time::Duration;

use brine_common::names::ContainerName;
use brine_common::outcome::{ContainerAction, ContainerResult, HostStatus, JobId, JobResult};
use brine_common::spec::{ContainerSpec, DesiredState};

use super::execute::Executor;
use super::health::{RuntimeTarget, wait_until_healthy};
use super::plan::{declared_identity, docker_name, next_name, replaced_name};
use crate::runtime::{ContainerRuntime, ObservedContainer, labels};

/// A replacement a crash interrupted, as Docker's state shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interrupted {
    /// The new container runs as `NAME.next` beside the old one (if that is still there).
    StartFirst {
        name: ContainerName,
        old: Option<ObservedContainer>,
        next: ObservedContainer,
    },
    /// The old container is set aside as `NAME.replaced`; the new one holds `NAME`, if it was
    /// created at all.
    StopFirst {
        name: ContainerName,
        parked: ObservedContainer,
        new: Option<ObservedContainer>,
    },
}

/// Finds the interrupted replacements among `observed` (pure).
pub fn find_interrupted(namespace: &str, observed: &[ObservedContainer]) -> Vec<Interrupted> {
    let mine: Vec<&ObservedContainer> = observed
        .iter()
        .filter(|o| o.belongs_to(namespace))
        .collect();
    let holding = |name: &str| {
        mine.iter()
            .find(|o| o.docker_name == name)
            .copied()
            .cloned()
    };
    let mut found = vec![];
    for container in &mine {
        let Some(name) = declared_identity(container).0 else {
            continue;
        };
        if container.docker_name == next_name(namespace, &name) {
            found.push(Interrupted::StartFirst {
                old: holding(&docker_name(namespace, &name)),
                next: (*container).clone(),
                name,
            });
        } else if container.docker_name == replaced_name(namespace, &name) {
            found.push(Interrupted::StopFirst {
                new: holding(&docker_name(namespace, &name)),
                parked: (*container).clone(),
                name,
            });
        }
    }
    found
}

impl<R: ContainerRuntime> Executor<R> {
    /// Finishes every replacement a crash interrupted, against the `desired` state that was
    /// being applied; returns what it found, as results of the jobs that were lost.
    pub async fn finish_interrupted(
        &self,
        desired: &DesiredState,
    ) -> Result<Vec<JobResult>, crate::runtime::RuntimeError> {
        let observed = self.runtime().list_managed(self.namespace()).await?;
        let mut by_job: BTreeMap<String, Vec<ContainerResult>> = BTreeMap::new();
        for interrupted in find_interrupted(self.namespace(), &observed) {
            let (job, result) = self.finish(interrupted, desired).await;
            by_job.entry(job).or_default().push(result);
        }
        Ok(by_job
            .into_iter()
            .filter_map(|(job, containers)| {
                let job_id = JobId::new(job).ok()?;
                let failed = containers
                    .iter()
                    .any(|c| c.action == ContainerAction::Failed);
                Some(JobResult {
                    job_id,
                    status: if failed {
                        HostStatus::Failed
                    } else {
                        HostStatus::Changed
                    },
                    error: failed.then(|| {
                        "the minion stopped in the middle of this job; at its restart the new \
                         container was not healthy, and the one before it was brought back"
                            .to_owned()
                    }),
                    containers,
                    timings: Default::default(),
                })
            })
            .collect())
    }

    /// Finishes one interrupted replacement; returns the job it belonged to and its outcome.
    async fn finish(
        &self,
        interrupted: Interrupted,
        desired: &DesiredState,
    ) -> (String, ContainerResult) {
        let (name, old, new, old_set_aside) = match interrupted {
            Interrupted::StartFirst { name, old, next } => (name, old, Some(next), false),
            Interrupted::StopFirst { name, parked, new } => (name, Some(parked), new, true),
        };
        let spec = desired.containers.iter().find(|s| s.name == name);
        let job = new
            .as_ref()
            .or(old.as_ref())
            .and_then(|c| c.label(labels::JOB))
            .unwrap_or_default()
            .to_owned();
        let name_here = docker_name(self.namespace(), &name);
        let verified = match (new, spec) {
            (Some(new), Some(spec)) => match self.passes_gate(&new, spec).await {
                Ok(()) => Ok(new),
                Err(why) => Err((why, Some(new))),
            },
            (Some(new), None) => Err(("the container is no longer declared".to_owned(), Some(new))),
            (None, _) => Err(("the new container was never created".to_owned(), None)),
        };
        let result = match verified {
            Ok(new) => {
                self.take_over(&name_here, &new, old.as_ref(), spec).await;
                tracing::info!(container = %name_here, "finished a replacement a restart interrupted: the new container is healthy");
                outcome(
                    &name,
                    spec,
                    Some(&new),
                    ContainerAction::Replaced,
                    None,
                    false,
                )
            }
            Err((why, new)) => {
                if let Some(new) = &new {
                    self.remove(new).await;
                }
                let restored = match &old {
                    Some(old) => self.put_back(&name_here, old, old_set_aside).await,
                    None => Err("no container was left to bring back".to_owned()),
                };
                tracing::warn!(container = %name_here, why, restored = restored.is_ok(), "undid a replacement a restart interrupted");
                let error = match &restored {
                    Ok(()) => format!("{why}; the container that ran before was brought back"),
                    Err(err) => format!(
                        "{why}; the container that ran before could not be brought back: {err}"
                    ),
                };
                outcome(
                    &name,
                    spec,
                    new.as_ref().or(old.as_ref()),
                    ContainerAction::Failed,
                    Some(error),
                    restored.is_ok(),
                )
            }
        };
        (job, result)
    }

    /// Runs the health gate of `spec` on an existing container.
    async fn passes_gate(
        &self,
        container: &ObservedContainer,
        spec: &ContainerSpec,
    ) -> Result<(), String> {
        if container.label(labels::SPEC_HASH) != Some(spec.hash().as_str()) {
            return Err("the new container is not the one the desired state asks for".to_owned());
        }
        let target = RuntimeTarget {
            runtime: self.runtime(),
            id: &container.id,
            probe: spec.health.probe.as_ref(),
        };
        wait_until_healthy(&spec.health, &target)
            .await
            .map_err(|unhealthy| format!("the new container is unhealthy: {unhealthy}"))
    }

    /// The healthy new container takes `name` over; the old one goes.
    async fn take_over(
        &self,
        name: &str,
        new: &ObservedContainer,
        old: Option<&ObservedContainer>,
        spec: Option<&ContainerSpec>,
    ) {
        // The proxy's routes follow, as the replacement would have moved them: to the new
        // container, draining the old one, before the old one stops.
        if let Some(spec) = spec
            && let Err(err) = self.route_to(spec, &new.id).await
        {
            tracing::error!(container = %name, "cannot route the proxy to the new container: {err}");
        }
        if let Some(old) = old {
            if let Some(proxy) = spec.and_then(|s| s.proxy.as_ref()) {
                self.drain(old, Duration::from_millis(proxy.drain_ms.into()))
                    .await;
            }
            match spec {
                Some(spec) => self.release_unclaimed(old, spec).await,
                None => {
                    if let Err(err) = self.release(old).await {
                        tracing::warn!(container = %old.docker_name, "{err}");
                    }
                }
            }
            let timeout = spec.map_or(10, |s| s.stop_timeout_seconds);
            if let Err(err) = self.runtime().stop(&old.id, timeout).await {
                tracing::warn!(container = %old.docker_name, "cannot stop the replaced container: {err}");
            }
            self.remove(old).await;
        }
        if new.docker_name != name
            && let Err(err) = self.runtime().rename(&new.id, name).await
        {
            tracing::warn!(container = %new.docker_name, "cannot give the new container its name: {err}");
        }
    }

    /// Puts the old container back under its name and starts it.
    async fn put_back(
        &self,
        name: &str,
        old: &ObservedContainer,
        renamed: bool,
    ) -> Result<(), String> {
        if renamed {
            self.runtime()
                .rename(&old.id, name)
                .await
                .map_err(|err| format!("rename it back to {name}: {err}"))?;
        }
        if !old.is_running() {
            self.runtime()
                .start(&old.id)
                .await
                .map_err(|err| format!("start it again: {err}"))?;
        }
        // The proxy may have been switched to the new container before the crash.
        self.reroute(old).await
    }

    async fn remove(&self, container: &ObservedContainer) {
        if let Err(err) = self.runtime().stop(&container.id, 10).await {
            tracing::warn!(container = %container.docker_name, "cannot stop a container: {err}");
        }
        if let Err(err) = self.runtime().remove(&container.id).await {
            tracing::warn!(container = %container.docker_name, "cannot remove a container: {err}");
        }
    }
}

/// The result for one container of a lost job; `shown` is the container it ended with.
fn outcome(
    name: &ContainerName,
    spec: Option<&ContainerSpec>,
    shown: Option<&ObservedContainer>,
    action: ContainerAction,
    error: Option<String>,
    previous_restored: bool,
) -> ContainerResult {
    ContainerResult {
        name: name.clone(),
        role: spec
            .map(|s| s.role.clone())
            .or_else(|| shown.and_then(|c| declared_identity(c).1)),
        action,
        image: shown.map(|c| c.image.clone()).unwrap_or_default(),
        image_digest: shown.map(|c| c.image_id.clone()).unwrap_or_default(),
        error,
        previous_restored,
        needs_pull: false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn container(docker: &str, declared: &str) -> ObservedContainer {
        ObservedContainer {
            id: format!("id-{docker}"),
            docker_name: docker.to_owned(),
            image: "app".into(),
            image_id: "sha256:1".into(),
            state: "running".into(),
            labels: HashMap::from([
                (labels::MANAGED.to_owned(), "true".to_owned()),
                (labels::NAMESPACE.to_owned(), "ns".to_owned()),
                (labels::CONTAINER.to_owned(), declared.to_owned()),
                (labels::ROLE.to_owned(), "web".to_owned()),
            ]),
            published: vec![],
            unhealthy: false,
        }
    }

    fn name(text: &str) -> ContainerName {
        ContainerName::new(text).unwrap()
    }

    #[test]
    fn interrupted_replacements_are_read_from_the_temporary_names() {
        let old = container("ns.web", "web");
        let next = container("ns.web.next", "web");
        let parked = container("ns.db.replaced", "db");
        let new_db = container("ns.db", "db");
        let lone = container("ns.cache.replaced", "cache");
        let settled = container("ns.other", "other");
        let foreign = {
            let mut c = container("other-ns.web.next", "web");
            c.labels
                .insert(labels::NAMESPACE.to_owned(), "other-ns".to_owned());
            c
        };
        let found = find_interrupted(
            "ns",
            &[
                old.clone(),
                next.clone(),
                parked.clone(),
                new_db.clone(),
                lone.clone(),
                settled,
                foreign,
            ],
        );
        assert_eq!(
            found,
            [
                Interrupted::StartFirst {
                    name: name("web"),
                    old: Some(old),
                    next
                },
                Interrupted::StopFirst {
                    name: name("db"),
                    parked,
                    new: Some(new_db)
                },
                Interrupted::StopFirst {
                    name: name("cache"),
                    parked: lone,
                    new: None
                },
            ]
        );
    }

    #[test]
    fn nothing_is_interrupted_on_a_settled_host() {
        assert!(find_interrupted("ns", &[container("ns.web", "web")]).is_empty());
        assert!(find_interrupted("", &[]).is_empty());
    }
}
