//! A plan: what [`Executor::apply`] would do to a host, predicted from the images it
//! already has, without pulling, creating, stopping or removing anything. It is separate
//! because it shares the plan with the executor but none of its side effects.

use std::collections::HashMap;

use brine_common::outcome::{ContainerAction, ContainerResult, JobId, JobResult};
use brine_common::spec::{ContainerSpec, DesiredState, ImageRef};

use super::{Executor, removed, result_for};
use crate::reconcile::plan::{Action, DesiredContainer, docker_name, plan};
use crate::runtime::{ContainerRuntime, PulledImage};

impl<R: ContainerRuntime> Executor<R> {
    /// What [`Executor::apply`] would do, without doing any of it: nothing is pulled, created,
    /// stopped or removed. An image the host lacks is reported as `needs_pull`, and a container
    /// that would run it counts as created or replaced.
    pub async fn plan_only(&self, job_id: &JobId, desired: &DesiredState) -> JobResult {
        let observed = match self.runtime.list_managed(&self.namespace).await {
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
