//! The masters of a fleet whose masters share a store: each says where it serves minions, for
//! a few seconds at a time, and says it again while it runs; one that stopped or lost the store
//! drops out when its word runs out.

use serde::{Deserialize, Serialize};

/// A master's word that it serves minions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterAnnouncement {
    /// Its name (master.toml's `name`).
    pub name: String,
    /// `HOST:PORT` where minions reach it, if it has one for them (`advertise_address`).
    #[serde(default)]
    pub address: Option<String>,
    /// Until when it holds.
    pub until_unix_ms: i64,
}

impl MasterAnnouncement {
    pub(super) fn holds_at(&self, now_unix_ms: i64) -> bool {
        self.until_unix_ms > now_unix_ms
    }
}
