//! Secrets, sealed, one key each (`secrets/NAME`).

use brine_common::names::SecretName;
use etcd_client::{Txn, TxnOp};

use super::{Attempts, EtcdStore};
use crate::store::record::{decode, encode};
use crate::store::{SecretRecord, StoreError};

const NAME: &str = "secrets";

/// Keeps `record` under `name` and returns what it replaced: read, then written only if what
/// was read is unchanged, so the answer is true even when masters set it at once.
pub(super) async fn put(
    store: &EtcdStore,
    name: &SecretName,
    record: &SecretRecord,
) -> Result<Option<SecretRecord>, StoreError> {
    let key = store.keys.secret(name);
    let value = encode(record);
    let mut attempts = Attempts::new("setting a secret");
    loop {
        attempts.another().await?;
        let read = store.read(key.clone()).await?;
        let previous = read.decode::<SecretRecord>(NAME, name.as_str())?;
        let txn = Txn::new().when([read.unchanged]).and_then([TxnOp::put(
            key.as_str(),
            value.clone(),
            None,
        )]);
        if store.commit(txn).await?.is_some() {
            return Ok(previous);
        }
    }
}

pub(super) async fn get(
    store: &EtcdStore,
    name: &SecretName,
) -> Result<Option<SecretRecord>, StoreError> {
    let key = store.keys.secret(name);
    store.read(key).await?.decode(NAME, name.as_str())
}

pub(super) async fn all(store: &EtcdStore) -> Result<Vec<(SecretName, SecretRecord)>, StoreError> {
    let prefix = store.keys.secrets();
    store
        .under(prefix.clone())
        .await?
        .iter()
        .map(|kv| {
            let full = super::key_text(kv);
            let key = full.strip_prefix(&prefix).unwrap_or(&full);
            let name = SecretName::new(key).map_err(|err| StoreError::Corrupt {
                table: NAME,
                key: key.to_owned(),
                message: format!("the key is not a secret's name: {err}"),
            })?;
            Ok((name, decode(NAME, key, kv.value())?))
        })
        .collect()
}

pub(super) async fn delete(
    store: &EtcdStore,
    name: &SecretName,
) -> Result<Option<SecretRecord>, StoreError> {
    let key = store.keys.secret(name);
    let mut attempts = Attempts::new("deleting a secret");
    loop {
        attempts.another().await?;
        let read = store.read(key.clone()).await?;
        let Some(previous) = read.decode::<SecretRecord>(NAME, name.as_str())? else {
            return Ok(None);
        };
        let txn = Txn::new()
            .when([read.unchanged])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        if store.commit(txn).await?.is_some() {
            return Ok(Some(previous));
        }
    }
}
