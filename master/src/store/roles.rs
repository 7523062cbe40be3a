//! Versions of the roles file, for masters that share a store: the file lives in the store, so
//! every master deploys the same roles, and each version is kept with who applied it.

use serde::{Deserialize, Serialize};

/// How many versions of the roles file the store keeps; older ones go.
pub const ROLES_VERSIONS_KEPT: usize = 100;

/// One version of the roles file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolesVersion {
    /// 1, 2, 3, ... in the order they were applied.
    pub version: u64,
    pub text: String,
    /// SHA-256 of the text, hex.
    pub sha256: String,
    /// The certificate identity of who applied it.
    pub applied_by: String,
    pub applied_at_unix_ms: i64,
}

/// A roles file to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoles {
    pub text: String,
    pub sha256: String,
    pub applied_by: String,
    pub applied_at_unix_ms: i64,
}

/// What applying a roles file came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolesApplied {
    /// A new version, after the one it replaces (if any).
    Added {
        version: RolesVersion,
        previous: Option<u64>,
    },
    /// The newest version has this text already: nothing was added.
    Unchanged(RolesVersion),
}

/// What applying `new` after the newest version `newest` comes to: unchanged, or the version to
/// add.
pub(super) fn apply(newest: Option<RolesVersion>, new: NewRoles) -> RolesApplied {
    match newest {
        Some(newest) if newest.sha256 == new.sha256 => RolesApplied::Unchanged(newest),
        newest => {
            let previous = newest.map(|n| n.version);
            RolesApplied::Added {
                version: RolesVersion {
                    version: previous.unwrap_or(0) + 1,
                    text: new.text,
                    sha256: new.sha256,
                    applied_by: new.applied_by,
                    applied_at_unix_ms: new.applied_at_unix_ms,
                },
                previous,
            }
        }
    }
}

/// The first version kept once `newest` is added.
pub(super) fn oldest_kept(newest: u64) -> u64 {
    (newest + 1)
        .saturating_sub(ROLES_VERSIONS_KEPT as u64)
        .max(1)
}
