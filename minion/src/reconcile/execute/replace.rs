//! Replacing a container whose spec or image changed: start-first when the new one can run
//! beside the old one, stop-first when they need the same host port, and putting the old one
//! back when the new one fails. It is separate because it is the executor's longest path, and
//! the one where every failure must still leave the old container running.

use brine_common::outcome::JobId;
use brine_common::progress::Phase;

use std::time::Duration;

use super::proxied::{held_as_published, held_ports};
use super::{Executor, ProgressSink, phase};
use crate::reconcile::plan::{DesiredContainer, docker_name, next_name, replaced_name};
use crate::runtime::{ContainerRuntime, ObservedContainer};

impl<R: ContainerRuntime> Executor<R> {
    /// Replaces `old` with a new container, keeping the old one running until the new one is
    /// healthy whenever both can run at once, i.e. they publish no host port in common.
    pub(super) async fn replace(
        &self,
        job_id: &JobId,
        desired: &DesiredContainer,
        old: &ObservedContainer,
        progress: ProgressSink<'_>,
    ) -> Result<(), ReplaceFailure> {
        // A port Docker publishes for the old container is free for the new one only once the
        // old one is stopped, whoever takes it next (Docker or the proxy). A port the proxy
        // holds for the old container moves to a successor behind the proxy by a switch, but
        // a successor that Docker publishes needs it given back first.
        let held = held_as_published(&held_ports(old));
        let conflict = desired
            .spec
            .ports
            .iter()
            .any(|new| old.published.iter().any(|p| new.conflicts_with(p)))
            || desired
                .spec
                .docker_ports()
                .iter()
                .any(|new| held.iter().any(|p| new.conflicts_with(p)));
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
        // The new container has the traffic now; what is in flight to the old one ends first.
        if let Some(proxy) = &desired.spec.proxy {
            self.drain(old, Duration::from_millis(proxy.drain_ms.into()))
                .await;
        }
        self.release_unclaimed(old, &desired.spec).await;
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
        // The proxy gives the old container's ports back for Docker to publish the new one's.
        if let Err(err) = self.release(old).await {
            return Err(ReplaceFailure {
                message: format!("{err}; the previous container was not touched"),
                previous_restored: true,
            });
        }
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
        if old.is_running()
            && let Err(err) = self.reroute(old).await
        {
            tracing::error!(container = %name, "cannot route the proxy to the previous container again: {err}");
            return Err(err);
        }
        Ok(())
    }
}

/// A replacement that did not happen, and whether the old container runs again.
#[derive(Debug)]
pub(super) struct ReplaceFailure {
    pub(super) message: String,
    pub(super) previous_restored: bool,
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
