//! Versions of the roles file, one key each (`roles/VERSION`), the newest
//! [`ROLES_VERSIONS_KEPT`](crate::store::roles::ROLES_VERSIONS_KEPT).

use etcd_client::{Compare, CompareOp, DeleteOptions, Txn, TxnOp};

use super::keys::Keys;
use super::{Attempts, EtcdStore};
use crate::store::StoreError;
use crate::store::record::{decode, encode};
use crate::store::roles::{self as rules, NewRoles, RolesApplied, RolesVersion};

const NAME: &str = "roles";

fn version_in(kv: &etcd_client::KeyValue) -> Result<RolesVersion, StoreError> {
    let key = super::key_text(kv);
    let number = Keys::sequence_of(&key).map_or(key, |n| n.to_string());
    decode(NAME, number, kv.value())
}

pub(super) async fn apply(store: &EtcdStore, new: NewRoles) -> Result<RolesApplied, StoreError> {
    let mut attempts = Attempts::new("applying roles");
    loop {
        attempts.another().await?;
        let newest = version(store, None).await?;
        let applied = rules::apply(newest, new.clone());
        let RolesApplied::Added { version, .. } = &applied else {
            return Ok(applied);
        };
        let key = store.keys.roles_version(version.version);
        let mut ops = vec![TxnOp::put(key.as_str(), encode(version), None)];
        let oldest_kept = rules::oldest_kept(version.version);
        if oldest_kept > 1 {
            ops.push(TxnOp::delete(
                store.keys.roles_version(0),
                Some(DeleteOptions::new().with_range(store.keys.roles_version(oldest_kept))),
            ));
        }
        // Another master that applied a version first makes this one come after it.
        let txn = Txn::new()
            .when([Compare::version(key, CompareOp::Equal, 0)])
            .and_then(ops);
        if store.commit(txn).await?.is_some() {
            return Ok(applied);
        }
    }
}

pub(super) async fn version(
    store: &EtcdStore,
    number: Option<u64>,
) -> Result<Option<RolesVersion>, StoreError> {
    match number {
        Some(number) => {
            let read = store.read(store.keys.roles_version(number)).await?;
            read.decode(NAME, &number.to_string())
        }
        None => {
            let newest = store.newest_under(store.keys.roles_versions(), 1).await?;
            newest.first().map(version_in).transpose()
        }
    }
}

/// Every version kept, newest first.
pub(super) async fn all(store: &EtcdStore) -> Result<Vec<RolesVersion>, StoreError> {
    store
        .newest_under(store.keys.roles_versions(), usize::MAX)
        .await?
        .iter()
        .map(version_in)
        .collect()
}
