//! Operator and CI certificate revocations, one per certificate role and name, keyed
//! `ROLE/NAME`.

use brine_common::identity::CertRole;
use serde::{Deserialize, Serialize};

/// Operator or CI certificates refused from a moment on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRevocation {
    pub role: CertRole,
    pub name: String,
    /// Certificates issued up to this moment are refused.
    pub revoked_at_unix_ms: i64,
}

/// A revocation as stored under its key.
#[derive(Serialize, Deserialize)]
pub(super) struct RevocationRecord {
    pub revoked_at_unix_ms: i64,
}

/// The key of the revocation of `role` certificates for `name`.
pub(super) fn key(role: CertRole, name: &str) -> String {
    format!("{role}/{name}")
}

/// The role and name a revocation's key names, if it is a key.
pub(super) fn parse_key(key: &str) -> Option<(CertRole, &str)> {
    let (role, name) = key.split_once('/')?;
    Some((role.parse().ok()?, name))
}
