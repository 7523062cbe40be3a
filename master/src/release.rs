//! Releases: which pinned image each container of each role ran after a successful rollout.
//! Pure; the store keeps them and highstate records them.

use std::collections::BTreeMap;

use brine_common::names::{ContainerName, MinionId, RoleName};
use brine_common::spec::{DesiredState, ImageRef};
use serde::{Deserialize, Serialize};

/// Role → container → pinned image (`repo:tag@sha256:...`).
pub type Pins = BTreeMap<RoleName, BTreeMap<ContainerName, ImageRef>>;

/// A release: the pins in force after a successful rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// 1, 2, 3, ... in order.
    pub id: u64,
    /// The job that made it.
    pub job_id: String,
    /// The certificate identity of the caller.
    pub caller: String,
    pub created_at_unix_ms: i64,
    pub pins: Pins,
}

/// One container whose image differs between two releases; `None` where a release did not
/// run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinChange {
    pub role: RoleName,
    pub container: ContainerName,
    pub from: Option<ImageRef>,
    pub to: Option<ImageRef>,
}

/// What changed from release `from` to release `to`: every container whose image differs, or
/// that only one of them ran, by role and container.
pub fn diff(from: &Pins, to: &Pins) -> Vec<PinChange> {
    let mut keys: Vec<(&RoleName, &ContainerName)> = from
        .iter()
        .chain(to)
        .flat_map(|(role, containers)| containers.keys().map(move |c| (role, c)))
        .collect();
    keys.sort();
    keys.dedup();
    let pin = |pins: &Pins, role: &RoleName, container: &ContainerName| {
        pins.get(role).and_then(|c| c.get(container)).cloned()
    };
    keys.into_iter()
        .map(|(role, container)| PinChange {
            role: role.clone(),
            container: container.clone(),
            from: pin(from, role, container),
            to: pin(to, role, container),
        })
        .filter(|change| change.from != change.to)
        .collect()
}

/// The pins a job sends: every container of every host, by role.
pub fn pins_of(desired: &BTreeMap<MinionId, DesiredState>) -> Pins {
    let mut pins = Pins::new();
    for spec in desired.values().flat_map(|state| &state.containers) {
        pins.entry(spec.role.clone())
            .or_default()
            .insert(spec.name.clone(), spec.image.clone());
    }
    pins
}

/// The pins after a successful job: the previous release's, with the roles the job deployed
/// replaced by what it deployed (a job over some hosts keeps every other role's pins). `None`
/// when nothing changed, so a no-change highstate records no release.
pub fn next_pins(previous: Option<&Release>, deployed: &Pins) -> Option<Pins> {
    let mut pins = previous.map(|r| r.pins.clone()).unwrap_or_default();
    for (role, containers) in deployed {
        pins.insert(role.clone(), containers.clone());
    }
    (previous.map(|r| &r.pins) != Some(&pins)).then_some(pins)
}

/// The pins a rollback deploys: for `role` (or every role when `None`), the pins of `target`;
/// every other role keeps the pins of `current`, so a rollback changes nothing else.
pub fn rollback_pins(current: Option<&Release>, target: &Release, role: Option<&RoleName>) -> Pins {
    let mut pins = current.map(|r| r.pins.clone()).unwrap_or_default();
    for (name, containers) in &target.pins {
        if role.is_none_or(|r| r == name) {
            pins.insert(name.clone(), containers.clone());
        }
    }
    pins
}

/// The release a rollback goes back to when none is named: the newest one before `current`
/// whose pins for `role` (or for anything, when `None`) differ from `current`'s.
pub fn previous_release<'a>(
    releases: &'a [Release],
    current: &Release,
    role: Option<&RoleName>,
) -> Option<&'a Release> {
    let differs = |r: &Release| match role {
        Some(role) => r.pins.contains_key(role) && r.pins.get(role) != current.pins.get(role),
        None => r.pins != current.pins,
    };
    releases
        .iter()
        .filter(|r| r.id < current.id)
        .rev()
        .find(|r| differs(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pins(entries: &[(&str, &str, &str)]) -> Pins {
        let mut pins = Pins::new();
        for (role, container, image) in entries {
            pins.entry(RoleName::new(*role).unwrap())
                .or_default()
                .insert(
                    ContainerName::new(*container).unwrap(),
                    ImageRef::new(format!(
                        "app:{image}@sha256:{}",
                        image.repeat(64).chars().take(64).collect::<String>()
                    ))
                    .unwrap(),
                );
        }
        pins
    }

    fn release(id: u64, pins: Pins) -> Release {
        Release {
            id,
            job_id: format!("j{id}"),
            caller: "admin".into(),
            created_at_unix_ms: 0,
            pins,
        }
    }

    #[test]
    fn a_diff_lists_the_containers_whose_image_changed_came_or_went() {
        let from = pins(&[("web", "web", "1"), ("web", "side", "1"), ("db", "db", "1")]);
        let to = pins(&[
            ("web", "web", "2"),
            ("web", "side", "1"),
            ("worker", "worker", "2"),
        ]);
        let changes: Vec<(String, String, bool, bool)> = diff(&from, &to)
            .into_iter()
            .map(|c| {
                (
                    c.role.to_string(),
                    c.container.to_string(),
                    c.from.is_some(),
                    c.to.is_some(),
                )
            })
            .collect();
        assert_eq!(
            changes,
            [
                ("db".into(), "db".into(), true, false),
                ("web".into(), "web".into(), true, true),
                ("worker".into(), "worker".into(), false, true),
            ]
        );
        assert!(diff(&from, &from).is_empty());
    }

    #[test]
    fn a_job_over_some_roles_keeps_the_others() {
        let first = release(1, pins(&[("web", "web", "a"), ("db", "db", "b")]));
        let next = next_pins(Some(&first), &pins(&[("web", "web", "c")])).unwrap();
        assert_eq!(next, pins(&[("web", "web", "c"), ("db", "db", "b")]));
        assert_eq!(next_pins(Some(&first), &pins(&[("web", "web", "a")])), None);
        assert!(next_pins(None, &pins(&[("web", "web", "a")])).is_some());
    }

    #[test]
    fn a_rollback_changes_only_the_named_role() {
        let old = release(1, pins(&[("web", "web", "a"), ("db", "db", "b")]));
        let current = release(2, pins(&[("web", "web", "c"), ("db", "db", "d")]));
        let web = RoleName::new("web").unwrap();
        assert_eq!(
            rollback_pins(Some(&current), &old, Some(&web)),
            pins(&[("web", "web", "a"), ("db", "db", "d")])
        );
        assert_eq!(rollback_pins(Some(&current), &old, None), old.pins);
    }

    #[test]
    fn the_previous_release_is_the_newest_that_differs() {
        let releases = vec![
            release(1, pins(&[("web", "web", "a")])),
            release(2, pins(&[("web", "web", "a"), ("db", "db", "b")])),
            release(3, pins(&[("web", "web", "c"), ("db", "db", "b")])),
        ];
        let web = RoleName::new("web").unwrap();
        let db = RoleName::new("db").unwrap();
        assert_eq!(
            previous_release(&releases, &releases[2], Some(&web)).map(|r| r.id),
            Some(2)
        );
        assert_eq!(previous_release(&releases, &releases[2], Some(&db)), None);
        assert_eq!(
            previous_release(&releases, &releases[2], None).map(|r| r.id),
            Some(2)
        );
        assert_eq!(previous_release(&releases, &releases[0], None), None);
    }
}
