//! Image retention: which images a host keeps after a successful job.
//!
//! For each role the minion remembers the images of its releases (each distinct set of images
//! its containers ran after a successful job), newest last, in `images.json`. The current
//! release and the `keep` before it stay on the host, so a rollback to any of them starts
//! without a download; the images of older releases are removed. Removal is best effort: an
//! image still used by a container stays, and a failure is reported, never failing the job.

use std::collections::{BTreeMap, BTreeSet};

use brine_common::names::RoleName;
use brine_common::spec::{DesiredState, ImageRef};
use serde::{Deserialize, Serialize};

use crate::config::DataDir;

/// The releases of each role, newest last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageHistory {
    roles: BTreeMap<RoleName, Vec<BTreeSet<ImageRef>>>,
}

impl ImageHistory {
    /// Records the images `desired` runs as each role's newest release, and forgets releases
    /// beyond the current one and `keep` before it. Returns the images no kept release of any
    /// role uses any more: the ones to remove.
    pub fn record(&mut self, desired: &DesiredState, keep: usize) -> BTreeSet<ImageRef> {
        let mut current: BTreeMap<RoleName, BTreeSet<ImageRef>> = BTreeMap::new();
        for spec in &desired.containers {
            current
                .entry(spec.role.clone())
                .or_default()
                .insert(spec.image.clone());
        }
        let mut dropped = BTreeSet::new();
        // A role the host no longer runs keeps its history: it may be assigned back, or rolled
        // back to.
        for (role, images) in current {
            let releases = self.roles.entry(role).or_default();
            if releases.last() != Some(&images) {
                releases.retain(|release| *release != images);
                releases.push(images);
            }
            let excess = releases.len().saturating_sub(keep + 1);
            dropped.extend(releases.drain(..excess).flatten());
        }
        let kept: BTreeSet<&ImageRef> = self.roles.values().flatten().flatten().collect();
        dropped.retain(|image| !kept.contains(image));
        dropped
    }

    /// Loads the history; an unreadable file starts afresh (nothing is removed because of it:
    /// an empty history only ever drops what later jobs record).
    pub fn load(data: &DataDir) -> Self {
        let path = data.root().join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                tracing::warn!(
                    "{} is unreadable ({err}); image history starts afresh",
                    path.display()
                );
                Self::default()
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(err) => {
                tracing::warn!(
                    "cannot read {} ({err}); image history starts afresh",
                    path.display()
                );
                Self::default()
            }
        }
    }

    pub fn save(&self, data: &DataDir) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        brine_daemon::files::replace(&data.root().join(FILE), &json, 0o644)
    }
}

const FILE: &str = "images.json";

#[cfg(test)]
mod tests {
    use brine_common::names::ContainerName;
    use brine_common::spec::ContainerSpec;

    use super::*;

    fn desired(containers: &[(&str, &str, &str)]) -> DesiredState {
        DesiredState::new(
            containers
                .iter()
                .map(|(role, name, image)| ContainerSpec {
                    role: RoleName::new(*role).unwrap(),
                    name: ContainerName::new(*name).unwrap(),
                    image: ImageRef::new(*image).unwrap(),
                    command: vec![],
                    env: Default::default(),
                    ports: vec![],
                    volumes: vec![],
                    restart: Default::default(),
                    stop_timeout_seconds: 10,
                    health: Default::default(),
                    secret_env: Default::default(),
                    proxy: None,
                    hooks: None,
                })
                .collect(),
        )
        .unwrap()
    }

    fn images(names: &[&str]) -> BTreeSet<ImageRef> {
        names.iter().map(|n| ImageRef::new(*n).unwrap()).collect()
    }

    #[test]
    fn the_current_and_keep_previous_releases_stay() {
        let mut history = ImageHistory::default();
        let web = |image: &str| desired(&[("web", "web", image)]);
        for n in 1..=3 {
            let dropped = history.record(&web(&format!("app:{n}")), 2);
            assert!(dropped.is_empty(), "release {n}: {dropped:?}");
        }
        assert_eq!(history.record(&web("app:4"), 2), images(&["app:1"]));
        // The same release again changes nothing; going back to a kept one makes it the newest.
        assert!(history.record(&web("app:4"), 2).is_empty());
        assert!(history.record(&web("app:2"), 2).is_empty());
        assert_eq!(history.record(&web("app:5"), 2), images(&["app:3"]));
    }

    #[test]
    fn an_image_another_role_keeps_is_not_removed() {
        let mut history = ImageHistory::default();
        history.record(
            &desired(&[("web", "web", "app:1"), ("worker", "w", "app:1")]),
            0,
        );
        let dropped = history.record(
            &desired(&[("web", "web", "app:2"), ("worker", "w", "app:1")]),
            0,
        );
        assert!(dropped.is_empty(), "{dropped:?}");
        let dropped = history.record(
            &desired(&[("web", "web", "app:2"), ("worker", "w", "app:2")]),
            0,
        );
        assert_eq!(dropped, images(&["app:1"]));
    }

    #[test]
    fn history_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let mut history = ImageHistory::load(&data);
        history.record(&desired(&[("web", "web", "app:1")]), 3);
        history.save(&data).unwrap();
        assert_eq!(ImageHistory::load(&data), history);
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        assert_eq!(ImageHistory::load(&data), ImageHistory::default());
    }
}
