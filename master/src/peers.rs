//! The fleet's masters, as this one knows them, when they share a store: each announces in the
//! store where it serves minions, for a few seconds at a time and again every second, and reads
//! the others' announcements back. Minions are told the list (in the join answer, and on every
//! link at its start and whenever it changes), so a minion whose master goes away links to
//! another.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::{Master, now_unix_ms};
use crate::store::MasterAnnouncement;

/// How often a master renews its announcement and reads the others'.
const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);
/// How long an announcement holds: a master gone (or cut off from the store) for this long
/// is no longer offered to minions.
const ANNOUNCEMENT_LIFETIME: Duration = Duration::from_secs(5);

/// Where the fleet's masters serve minions.
#[derive(Debug, Default)]
pub struct Peers {
    /// This master's `HOST:PORT` for minions, if it has one (`advertise_address`).
    own: Option<String>,
    /// Every master's address, this one first, or none while no other is known. A std lock:
    /// never held across an await.
    addresses: RwLock<Vec<String>>,
    /// The names of the masters whose announcement held at the last reading, this one's too.
    live: RwLock<HashSet<String>>,
}

impl Peers {
    pub fn new(own: Option<String>) -> Self {
        Self {
            own,
            addresses: RwLock::default(),
            live: RwLock::default(),
        }
    }

    /// Whether the master named `name` announced itself lately (commands for the hosts it
    /// holds can reach them).
    pub fn is_live(&self, name: &str) -> bool {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name)
    }

    fn set_live(&self, names: HashSet<String>) {
        *self.live.write().unwrap_or_else(PoisonError::into_inner) = names;
    }

    /// Every master's address, this one first; empty while no other master is known (a
    /// minion then keeps the address it has).
    pub fn addresses(&self) -> Vec<String> {
        self.addresses
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Keeps the other masters' addresses; returns every master's if that changed them.
    fn set_others(&self, others: &[String]) -> Option<Vec<String>> {
        let addresses: Vec<String> = if others.is_empty() {
            vec![]
        } else {
            self.own.iter().chain(others).cloned().collect()
        };
        let mut current = self
            .addresses
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        (*current != addresses).then(|| {
            current.clone_from(&addresses);
            addresses
        })
    }
}

/// Announces `master` and reads the other masters' announcements every [`ANNOUNCE_INTERVAL`]
/// until `stopping`.
pub async fn keep_announced(master: Arc<Master>, stopping: CancellationToken) {
    let mut failing = false;
    loop {
        let now = now_unix_ms();
        let lifetime = i64::try_from(ANNOUNCEMENT_LIFETIME.as_millis()).unwrap_or(i64::MAX);
        let announcement = MasterAnnouncement {
            name: master.config.name.clone(),
            address: master.peers.own.clone(),
            until_unix_ms: now.saturating_add(lifetime),
        };
        let announced = master.store.announce_master(announcement).await;
        let read = match announced {
            Ok(()) => master.store.masters(now).await,
            Err(err) => Err(err),
        };
        match read {
            Ok(masters) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("announcing this master in the store again");
                }
                master
                    .peers
                    .set_live(masters.iter().map(|m| m.name.clone()).collect());
                let others: Vec<String> = masters
                    .into_iter()
                    .filter(|m| m.name != master.config.name)
                    .filter_map(|m| m.address)
                    .collect();
                if let Some(changed) = master.peers.set_others(&others) {
                    tracing::info!(masters = ?changed, "the fleet's masters changed");
                    master.links.tell_masters(&changed);
                }
            }
            Err(err) => {
                // Cut off from the store, this master cannot tell who else is there.
                master.peers.set_live(HashSet::new());
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!("cannot announce this master to the others: {err}");
                }
            }
        }
        tokio::select! {
            () = stopping.cancelled() => return,
            () = tokio::time::sleep(ANNOUNCE_INTERVAL) => {}
        }
    }
}
