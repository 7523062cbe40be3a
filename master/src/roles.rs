//! Where the roles file comes from. A master alone with its store reads `roles_file` from its
//! data directory at every job, as it always did; masters that share a store in etcd read the
//! newest version applied to the store (`brine-master roles apply FILE`), so that they all
//! deploy the same roles, and keep each version with who applied it.

use brine_common::roles_file::{RolesFile, RolesFileError};
use brine_common::token::sha256_hex;

use crate::state::{Master, now_unix_ms};
use crate::store::{NewRoles, RolesApplied, StoreError};

/// The largest roles file applied to a store: etcd keeps values well under its 1.5 MiB limit.
pub const MAX_ROLES_BYTES: usize = 1024 * 1024;

/// Why the roles file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    #[error("cannot read the roles file {file}: {message}")]
    Unreadable { file: String, message: String },
    #[error("the roles file has errors; nothing was sent (hosts keep what they run):\n{0}")]
    Invalid(#[from] RolesFileError),
    #[error(
        "no roles file was applied to this fleet yet (its masters share a store, and read the \
         roles file from it): apply one with `brine-master roles apply FILE`"
    )]
    NoneApplied,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a roles file was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyRolesError {
    #[error(
        "this master reads its roles from {file}, as it shares its store with no other master: \
         edit that file instead (`roles apply` is for masters that share a store in etcd)"
    )]
    ReadFromFile { file: String },
    #[error("the roles file is {size} bytes; at most {MAX_ROLES_BYTES} are kept")]
    TooLarge { size: usize },
    #[error("the roles file has errors; nothing was applied:\n{0}")]
    Invalid(#[from] RolesFileError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads and validates the roles file in force. A file with errors is refused as a whole, so
/// hosts keep running what the last good file gave them.
pub async fn load(master: &Master) -> Result<RolesFile, RolesError> {
    if master.config.store_is_shared() {
        let newest = master
            .store
            .roles_version(None)
            .await?
            .ok_or(RolesError::NoneApplied)?;
        let name = format!("roles version {}", newest.version);
        return Ok(RolesFile::parse(&name, &newest.text)?);
    }
    let path = &master.config.roles_file;
    let file = path.display().to_string();
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|err| RolesError::Unreadable {
            file: file.clone(),
            message: err.to_string(),
        })?;
    Ok(RolesFile::parse(&file, &text)?)
}

/// Checks `text` (named `file_name` in errors) as a job would, and keeps it as the next version
/// of the fleet's roles file, applied by `caller`.
pub async fn apply(
    master: &Master,
    text: String,
    file_name: &str,
    caller: String,
) -> Result<RolesApplied, ApplyRolesError> {
    if !master.config.store_is_shared() {
        return Err(ApplyRolesError::ReadFromFile {
            file: master.config.roles_file.display().to_string(),
        });
    }
    if text.len() > MAX_ROLES_BYTES {
        return Err(ApplyRolesError::TooLarge { size: text.len() });
    }
    RolesFile::parse(file_name, &text)?;
    let new = NewRoles {
        sha256: sha256_hex(text.as_bytes()),
        text,
        applied_by: caller,
        applied_at_unix_ms: now_unix_ms(),
    };
    Ok(master.store.apply_roles(new).await?)
}
