//! Secrets as the store keeps them: sealed (encrypted and authenticated) by the master's key,
//! one record per name. The store never sees a value.

use serde::{Deserialize, Serialize};

/// A secret's sealed value and what may be said of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    /// Which value: the master's keyed digest of the name and value (hex).
    pub fingerprint: String,
    /// Which key sealed it (hex), so that a master with another key says so instead of failing
    /// to open it.
    pub key_id: String,
    /// The AEAD nonce (hex).
    pub nonce: String,
    /// The ciphertext with its tag (hex).
    pub sealed: String,
    pub updated_at_unix_ms: i64,
    /// The certificate identity of whoever set it.
    pub updated_by: String,
}
