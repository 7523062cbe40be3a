//! `plan(desired, observed)`: what to do to make a host match its desired state. Pure.

use brine_common::names::{ContainerName, NEXT_SUFFIX, REPLACED_SUFFIX, RoleName};
use brine_common::spec::{ContainerSpec, SpecHash};

use crate::runtime::{ObservedContainer, labels};

/// A desired container together with the image it must run, known after the pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredContainer {
    pub spec: ContainerSpec,
    pub hash: SpecHash,
    /// The id of the image the container must run, as the pull found it.
    pub image_id: String,
}

/// One step towards the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// It runs and matches; leave it alone.
    Keep {
        desired: DesiredContainer,
        observed: ObservedContainer,
    },
    /// It does not exist yet.
    Create { desired: DesiredContainer },
    /// It exists but its spec or image changed, or it is not running.
    Replace {
        desired: DesiredContainer,
        observed: ObservedContainer,
    },
    /// brine manages it in this namespace but nothing declares it any more.
    Remove { observed: ObservedContainer },
}

/// How brine names a container on the engine: namespaced minions sharing an engine each prefix
/// their containers with their namespace.
pub fn docker_name(namespace: &str, name: &ContainerName) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}.{name}")
    }
}

/// The temporary Docker name of the new container a start-first replacement starts beside the
/// old one. The name grammar keeps every declared container's Docker name from equalling it.
pub fn next_name(namespace: &str, name: &ContainerName) -> String {
    format!("{}.{NEXT_SUFFIX}", docker_name(namespace, name))
}

/// The temporary Docker name a stop-first replacement sets the old container aside under. The
/// name grammar keeps every declared container's Docker name from equalling it.
pub fn replaced_name(namespace: &str, name: &ContainerName) -> String {
    format!("{}.{REPLACED_SUFFIX}", docker_name(namespace, name))
}

/// The container name and role an observed container was created for, from its labels.
pub fn declared_identity(
    observed: &ObservedContainer,
) -> (Option<ContainerName>, Option<RoleName>) {
    // It may have been created when container names could contain '.'.
    let name = observed
        .label(labels::CONTAINER)
        .and_then(|n| ContainerName::existing(n).ok());
    let role = observed
        .label(labels::ROLE)
        .and_then(|r| RoleName::new(r).ok());
    (name, role)
}

/// Computes the actions that make `observed` match `desired` in `namespace`.
///
/// Removals come first (they free names and ports), then replacements and creations in name
/// order. A managed container counts as the current instance of a desired container only if it
/// has the expected Docker name; any other managed container of the namespace (a leftover of an
/// interrupted replacement, or an undeclared one) is removed.
pub fn plan(
    namespace: &str,
    desired: &[DesiredContainer],
    observed: &[ObservedContainer],
) -> Vec<Action> {
    let ours: Vec<&ObservedContainer> = observed
        .iter()
        .filter(|o| o.belongs_to(namespace))
        .collect();
    let current = |d: &DesiredContainer| {
        let name = docker_name(namespace, &d.spec.name);
        ours.iter().find(|o| o.docker_name == name).copied()
    };

    let mut actions: Vec<Action> = ours
        .iter()
        .filter(|o| {
            !desired
                .iter()
                .any(|d| docker_name(namespace, &d.spec.name) == o.docker_name)
        })
        .map(|o| Action::Remove {
            observed: (*o).clone(),
        })
        .collect();

    for d in desired {
        let action = match current(d) {
            None => Action::Create { desired: d.clone() },
            Some(o) => {
                // A container Docker's own health check finds unhealthy is never kept: the
                // job replaces it (and fails if its successor is no better).
                let matches = o.label(labels::SPEC_HASH) == Some(d.hash.as_str())
                    && o.image_id == d.image_id
                    && o.is_running()
                    && !o.unhealthy;
                if matches {
                    Action::Keep {
                        desired: d.clone(),
                        observed: o.clone(),
                    }
                } else {
                    Action::Replace {
                        desired: d.clone(),
                        observed: o.clone(),
                    }
                }
            }
        };
        actions.push(action);
    }
    actions
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use brine_common::spec::{ImageRef, RestartPolicy};

    use super::*;

    const NS: &str = "host-a";

    fn desired(name: &str, image_id: &str) -> DesiredContainer {
        let spec = ContainerSpec {
            role: RoleName::new("web").unwrap(),
            name: ContainerName::new(name).unwrap(),
            image: ImageRef::new("127.0.0.1:5000/app:tested").unwrap(),
            command: vec![],
            env: BTreeMap::new(),
            ports: vec![],
            volumes: vec![],
            restart: RestartPolicy::UnlessStopped,
            stop_timeout_seconds: 10,
            health: Default::default(),
            secret_env: Default::default(),
            proxy: None,
            hooks: None,
        };
        DesiredContainer {
            hash: spec.hash(),
            spec,
            image_id: image_id.into(),
        }
    }

    fn observed_as(namespace: &str, d: &DesiredContainer, state: &str) -> ObservedContainer {
        let labels = HashMap::from([
            (labels::MANAGED.to_owned(), "true".to_owned()),
            (labels::NAMESPACE.to_owned(), namespace.to_owned()),
            (labels::ROLE.to_owned(), d.spec.role.to_string()),
            (labels::CONTAINER.to_owned(), d.spec.name.to_string()),
            (labels::SPEC_HASH.to_owned(), d.hash.to_string()),
        ]);
        ObservedContainer {
            id: format!("id-{}", d.spec.name),
            docker_name: docker_name(namespace, &d.spec.name),
            image: d.spec.image.to_string(),
            image_id: d.image_id.clone(),
            state: state.into(),
            labels,
            published: vec![],
            unhealthy: false,
        }
    }

    fn observed(d: &DesiredContainer) -> ObservedContainer {
        observed_as(NS, d, "running")
    }

    fn kinds(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Keep { desired, .. } => format!("keep {}", desired.spec.name),
                Action::Create { desired } => format!("create {}", desired.spec.name),
                Action::Replace { desired, .. } => format!("replace {}", desired.spec.name),
                Action::Remove { observed } => format!("remove {}", observed.docker_name),
            })
            .collect()
    }

    #[test]
    fn nothing_desired_nothing_observed_is_a_no_op() {
        assert!(plan(NS, &[], &[]).is_empty());
    }

    #[test]
    fn a_matching_running_container_is_kept() {
        let d = desired("web", "sha256:1");
        assert_eq!(
            kinds(&plan(NS, std::slice::from_ref(&d), &[observed(&d)])),
            ["keep web"]
        );
    }

    #[test]
    fn a_missing_container_is_created() {
        let d = desired("web", "sha256:1");
        assert_eq!(kinds(&plan(NS, &[d], &[])), ["create web"]);
    }

    #[test]
    fn a_changed_spec_is_replaced() {
        let d = desired("web", "sha256:1");
        let mut changed = d.clone();
        changed.spec.command = vec!["other".into()];
        changed.hash = changed.spec.hash();
        assert_eq!(
            kinds(&plan(NS, &[changed], &[observed(&d)])),
            ["replace web"]
        );
    }

    #[test]
    fn a_new_image_under_the_same_tag_is_replaced() {
        let old = desired("web", "sha256:old");
        let new = desired("web", "sha256:new");
        assert_eq!(kinds(&plan(NS, &[new], &[observed(&old)])), ["replace web"]);
    }

    #[test]
    fn a_container_docker_finds_unhealthy_is_never_kept() {
        let d = desired("web", "sha256:1");
        let mut sick = observed(&d);
        sick.unhealthy = true;
        assert_eq!(kinds(&plan(NS, &[d], &[sick])), ["replace web"]);
    }

    #[test]
    fn a_stopped_container_is_replaced() {
        let d = desired("web", "sha256:1");
        let stopped = observed_as(NS, &d, "exited");
        assert_eq!(kinds(&plan(NS, &[d], &[stopped])), ["replace web"]);
    }

    #[test]
    fn an_undeclared_managed_container_is_removed_first() {
        let gone = desired("old", "sha256:1");
        let d = desired("web", "sha256:1");
        assert_eq!(
            kinds(&plan(NS, &[d], &[observed(&gone)])),
            ["remove host-a.old", "create web"]
        );
    }

    #[test]
    fn leftovers_of_an_interrupted_replacement_are_removed() {
        // A start-first replacement leaves `NAME.next`, a stop-first one `NAME.replaced`; both
        // carry the labels of the container they stand for.
        let d = desired("web", "sha256:1");
        let leftover = |suffix: &str| {
            let mut o = observed(&d);
            o.docker_name = format!("host-a.web.{suffix}");
            o.id = format!("id-{suffix}");
            o
        };
        assert_eq!(
            kinds(&plan(
                NS,
                std::slice::from_ref(&d),
                &[leftover("next"), observed(&d), leftover("replaced")]
            )),
            [
                "remove host-a.web.next",
                "remove host-a.web.replaced",
                "keep web"
            ]
        );
        // Interrupted before the new container took the name: it is created again.
        assert_eq!(
            kinds(&plan(NS, std::slice::from_ref(&d), &[leftover("replaced")])),
            ["remove host-a.web.replaced", "create web"]
        );
    }

    #[test]
    fn no_declared_name_equals_a_temporary_or_namespaced_name_of_another() {
        // Namespaces and container names a minion could be given, including every kind that
        // used to collide; the grammar refuses some, and what it accepts must never give two
        // containers (of one minion, or of minions sharing an engine) the same Docker name.
        let candidates = [
            "a",
            "b",
            "c",
            "a.b",
            "b.c",
            "web",
            "web.next",
            "web.replaced",
            "next",
            "replaced",
            "web-next",
            "a-b",
            "a_b",
            "a.b.c",
            "Web",
        ];
        let names: Vec<ContainerName> = candidates
            .iter()
            .filter_map(|n| ContainerName::new(*n).ok())
            .collect();
        let namespaces: Vec<&str> = std::iter::once("")
            .chain(names.iter().map(ContainerName::as_str))
            .collect();
        assert!(
            names.len() > 5 && names.len() < candidates.len(),
            "{names:?}"
        );

        let mut owners: HashMap<String, (&str, &ContainerName, &str)> = HashMap::new();
        for namespace in &namespaces {
            for name in &names {
                for (purpose, docker) in [
                    ("declared", docker_name(namespace, name)),
                    ("next", next_name(namespace, name)),
                    ("replaced", replaced_name(namespace, name)),
                ] {
                    if let Some(other) = owners.insert(docker.clone(), (namespace, name, purpose)) {
                        panic!(
                            "{docker:?} is both {other:?} and {:?}",
                            (namespace, name, purpose)
                        );
                    }
                }
            }
        }

        // What the grammar rules out: names created before it could meet.
        let before = |n: &str| ContainerName::existing(n).unwrap();
        assert_eq!(
            docker_name("a", &before("b.c")),
            docker_name("a.b", &before("c"))
        );
        assert_eq!(
            docker_name("", &before("web.next")),
            next_name("", &before("web"))
        );
        assert_eq!(
            docker_name("web", &before("next")),
            next_name("", &before("web"))
        );
    }

    #[test]
    fn foreign_containers_are_left_alone() {
        let d = desired("web", "sha256:1");
        let mut unmanaged = observed(&d);
        unmanaged.labels.clear();
        let other_namespace = observed_as("host-b", &desired("db", "sha256:1"), "running");
        let mut not_true = observed(&desired("x", "sha256:1"));
        not_true
            .labels
            .insert(labels::MANAGED.into(), "false".into());
        // The unmanaged container holds the desired name: plan still asks to create, and the
        // executor reports the name clash instead of touching it.
        assert_eq!(
            kinds(&plan(NS, &[d], &[unmanaged, other_namespace, not_true])),
            ["create web"]
        );
    }

    #[test]
    fn an_empty_namespace_uses_bare_names() {
        let d = desired("web", "sha256:1");
        let o = observed_as("", &d, "running");
        assert_eq!(o.docker_name, "web");
        assert_eq!(
            kinds(&plan("", std::slice::from_ref(&d), &[o])),
            ["keep web"]
        );
        assert_eq!(
            kinds(&plan("", &[d], &[observed(&desired("web", "sha256:1"))])),
            ["create web"]
        );
    }
}
