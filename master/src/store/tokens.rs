//! Join tokens: what the store keeps of one (never its secret, only the secret's hash), how a
//! token is found by its secret and whether it may still be used.

use std::collections::BTreeMap;

use brine_common::names::MinionId;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// A join token; the store keys it by its public id and never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// SHA-256 of the secret, hex; compared in constant time.
    #[serde(default)]
    pub secret_sha256: String,
    pub created_at_unix_ms: i64,
    pub expires_at_unix_ms: i64,
    /// How many more hosts may join with it; `None`: any number until it expires.
    #[serde(default)]
    pub uses_left: Option<u32>,
    /// How many hosts joined with it.
    #[serde(default)]
    pub uses: u32,
    /// Labels every host that joins with it gets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Set for a token that re-enrols exactly this host id (a rebuilt machine); no other id may
    /// join with it, and it is the only way to join under an id that is enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<MinionId>,
}

/// A join token as listed: its public id (the start of its secret's hash) and its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedToken {
    pub id: String,
    pub record: TokenRecord,
}

/// Why a join token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    Valid,
    Unknown,
    Expired,
    UsedUp,
}

/// How many hex digits of a token's secret hash identify it: its key in the store and its id in
/// listings.
const TOKEN_ID_LEN: usize = 12;

/// The public id of the token whose secret hashes to `secret_hash`: the hash's first digits
/// (none if it is too short to have them).
pub(super) fn token_id(secret_hash: &str) -> Option<&str> {
    secret_hash.get(..TOKEN_ID_LEN)
}

/// Sorts `tokens` newest first, ties broken by id so that pages of tokens created in the same
/// millisecond are stable.
pub(super) fn newest_first(tokens: &mut [ListedToken]) {
    tokens.sort_by(|a, b| {
        b.record
            .created_at_unix_ms
            .cmp(&a.record.created_at_unix_ms)
            .then_with(|| a.id.cmp(&b.id))
    });
}

impl TokenRecord {
    /// Whether this is the token whose secret hashes to `secret_hash` (found by its public id,
    /// it must match the whole hash), compared in constant time.
    pub(super) fn matches(&self, secret_hash: &str) -> bool {
        bool::from(self.secret_sha256.as_bytes().ct_eq(secret_hash.as_bytes()))
    }

    pub(super) fn check(&self, now_unix_ms: i64) -> TokenCheck {
        if self.expires_at_unix_ms <= now_unix_ms {
            TokenCheck::Expired
        } else if self.uses_left == Some(0) {
            TokenCheck::UsedUp
        } else {
            TokenCheck::Valid
        }
    }

    /// Counts a join with the token.
    pub(super) fn use_once(&mut self) {
        self.uses = self.uses.saturating_add(1);
        self.uses_left = self.uses_left.map(|n| n.saturating_sub(1));
    }
}
