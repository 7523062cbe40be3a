//! The masters a minion can link to: the one it joined through (minion.toml's `master`) and,
//! when its fleet's masters share a store, the others it was told of at its join and on every
//! link. They are kept in `masters.json` in the data directory, so a minion that starts while
//! its own master is gone still knows where the others are.
//!
//! Addresses come from the network: each must be `HOST:PORT`, and a list is cut at
//! [`MAX_MASTERS`]. A file that cannot be read is reported and counts as empty: the minion
//! still has the master it joined through.

use std::collections::VecDeque;
use std::path::PathBuf;

use brine_common::address::is_host_and_port;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::config::DataDir;

/// The most master addresses a minion keeps.
pub const MAX_MASTERS: usize = 16;

/// The file in the data directory.
const FILE: &str = "masters.json";

/// The file's layout version; another one is ignored rather than misread.
const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    format: u32,
    addresses: Vec<String>,
}

/// Where the masters of this host's fleet serve minions.
#[derive(Debug)]
pub struct Masters {
    path: PathBuf,
    /// The master this host joined through.
    joined: String,
    /// What the masters said, as they said it (valid addresses only).
    told: Vec<String>,
    /// The master to link to now.
    current: String,
    /// The masters still to try, quickly, before backing off.
    untried: VecDeque<String>,
}

/// What comes after a link ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// Another master (or the same, last) still to try since the last link.
    Another,
    /// Every master was tried since the last link: time to back off.
    AllTried,
}

/// The valid addresses of `addresses`, in order, without repeats, at most [`MAX_MASTERS`].
fn valid(addresses: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut kept: Vec<String> = vec![];
    for address in addresses {
        if !is_host_and_port(&address) {
            tracing::warn!(%address, "ignored a master address that is not HOST:PORT");
            continue;
        }
        if !kept.contains(&address) && kept.len() < MAX_MASTERS {
            kept.push(address);
        }
    }
    kept
}

impl Masters {
    /// The masters of the host whose data directory is `data`, which joined through `joined`.
    pub fn load(data: &DataDir, joined: &str) -> Self {
        let path = data.root().join(FILE);
        let told = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Stored>(&bytes) {
                Ok(stored) if stored.format == FORMAT => valid(stored.addresses),
                Ok(stored) => {
                    tracing::warn!(
                        path = %path.display(),
                        format = stored.format,
                        "ignored the masters file: written in a format this minion does not know"
                    );
                    vec![]
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), "ignored the masters file: {err}");
                    vec![]
                }
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(err) => {
                tracing::warn!(path = %path.display(), "cannot read the masters file: {err}");
                vec![]
            }
        };
        Self {
            path,
            joined: joined.to_owned(),
            told,
            current: joined.to_owned(),
            untried: VecDeque::new(),
        }
    }

    /// Keeps what a master said of the fleet's masters, on disk too, if it is news.
    pub fn learn(&mut self, addresses: Vec<String>) -> anyhow::Result<()> {
        let told = valid(addresses);
        if told == self.told {
            return Ok(());
        }
        let stored = Stored {
            format: FORMAT,
            addresses: told.clone(),
        };
        brine_daemon::files::replace(&self.path, &serde_json::to_string(&stored)?, 0o600)?;
        tracing::info!(masters = ?told, "learned the fleet's masters");
        self.told = told;
        Ok(())
    }

    /// The master to link to now.
    pub fn current(&self) -> &str {
        &self.current
    }

    /// Moves on to the next master to try after the link to the current one ended (or could
    /// not be made): the others first, in [`Self::after`]'s order, then the same one again.
    pub fn move_on(&mut self, was_linked: bool) -> Rotation {
        if was_linked {
            self.untried = self.after(&self.current).into();
        }
        let rotation = if self.untried.is_empty() {
            self.untried = self.after(&self.current).into();
            Rotation::AllTried
        } else {
            Rotation::Another
        };
        if let Some(next) = self.untried.pop_front() {
            self.current = next;
        }
        rotation
    }

    /// Every master, the one joined through first.
    pub fn all(&self) -> Vec<String> {
        let mut all = vec![self.joined.clone()];
        all.extend(self.told.iter().filter(|a| **a != self.joined).cloned());
        all
    }

    /// The masters to try after the link to `lost` ended, in the order to try them: the others
    /// in random order (so a fleet that lost one master spreads over the rest), then `lost`.
    pub fn after(&self, lost: &str) -> Vec<String> {
        let mut others: Vec<String> = self.all().into_iter().filter(|a| a != lost).collect();
        others.shuffle(&mut rand::rng());
        others.push(lost.to_owned());
        others
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masters(dir: &tempfile::TempDir) -> Masters {
        Masters::load(&DataDir::new(dir.path()), "m1.example:4700")
    }

    #[test]
    fn what_masters_say_is_kept_across_restarts_and_the_joined_one_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut known = masters(&dir);
        assert_eq!(known.all(), ["m1.example:4700"]);
        known
            .learn(vec!["m2.example:4700".into(), "m1.example:4700".into()])
            .unwrap();
        assert_eq!(known.all(), ["m1.example:4700", "m2.example:4700"]);
        assert_eq!(masters(&dir).all(), known.all());
        // After losing one, the others first, the lost one last.
        assert_eq!(
            known.after("m1.example:4700"),
            ["m2.example:4700", "m1.example:4700"]
        );
    }

    #[test]
    fn a_lost_link_tries_every_other_master_once_then_backs_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut known = masters(&dir);
        known
            .learn(vec!["m2.example:4700".into(), "m3.example:4700".into()])
            .unwrap();
        assert_eq!(known.current(), "m1.example:4700");
        // Linked to m1, then lost: m2 and m3 (in some order), then m1 again, then back off.
        assert_eq!(known.move_on(true), Rotation::Another);
        let mut tried = vec![known.current().to_owned()];
        assert_eq!(known.move_on(false), Rotation::Another);
        tried.push(known.current().to_owned());
        tried.sort();
        assert_eq!(tried, ["m2.example:4700", "m3.example:4700"]);
        assert_eq!(known.move_on(false), Rotation::Another);
        assert_eq!(known.current(), "m1.example:4700");
        assert_eq!(known.move_on(false), Rotation::AllTried);
        assert_ne!(known.current(), "m1.example:4700");
    }

    #[test]
    fn a_lone_master_is_tried_again_then_backed_off_from() {
        let dir = tempfile::tempdir().unwrap();
        let mut known = masters(&dir);
        assert_eq!(known.move_on(true), Rotation::Another);
        assert_eq!(known.current(), "m1.example:4700");
        assert_eq!(known.move_on(false), Rotation::AllTried);
        assert_eq!(known.current(), "m1.example:4700");
        assert_eq!(known.move_on(false), Rotation::AllTried);
    }

    #[test]
    fn addresses_that_are_not_host_and_port_are_ignored_and_lists_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut known = masters(&dir);
        let mut said: Vec<String> = ["", "m2", "m2:", "m2:0", "m2:99999", "m 2:1", "a/b:1"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        said.push("[fd00::1]:4700".into());
        said.extend((0..40).map(|n| format!("10.0.0.{n}:4700")));
        known.learn(said).unwrap();
        let all = known.all();
        assert_eq!(all[1], "[fd00::1]:4700");
        assert_eq!(all.len(), 1 + MAX_MASTERS);
    }

    #[test]
    fn an_unreadable_file_counts_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        assert_eq!(masters(&dir).all(), ["m1.example:4700"]);
        std::fs::write(
            dir.path().join(FILE),
            r#"{"format":9,"addresses":["m2.example:4700"]}"#,
        )
        .unwrap();
        assert_eq!(masters(&dir).all(), ["m1.example:4700"]);
    }
}
