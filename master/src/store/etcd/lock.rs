//! The fleet's one lock, under one key (`lock`).

use etcd_client::{Txn, TxnOp};

use super::{Attempts, EtcdStore};
use crate::store::record::encode;
use crate::store::{LockRecord, StoreError};

const NAME: &str = "fleet_lock";

pub(super) async fn try_lock(
    store: &EtcdStore,
    lock: LockRecord,
    now_unix_ms: i64,
) -> Result<Result<(), LockRecord>, StoreError> {
    let key = store.keys.lock();
    let value = encode(&lock);
    let mut attempts = Attempts::new("taking the lock");
    loop {
        attempts.another().await?;
        let read = store.read(key.clone()).await?;
        match read.decode::<LockRecord>(NAME, &key)? {
            Some(held) if !held.is_expired(now_unix_ms) => return Ok(Err(held)),
            _ => {
                let txn = Txn::new().when([read.unchanged]).and_then([TxnOp::put(
                    key.as_str(),
                    value.clone(),
                    None,
                )]);
                if store.commit(txn).await?.is_some() {
                    return Ok(Ok(()));
                }
            }
        }
    }
}

pub(super) async fn current(
    store: &EtcdStore,
    now_unix_ms: i64,
) -> Result<Option<LockRecord>, StoreError> {
    let key = store.keys.lock();
    let lock = store
        .read(key.clone())
        .await?
        .decode::<LockRecord>(NAME, &key)?;
    Ok(lock.filter(|l| !l.is_expired(now_unix_ms)))
}

pub(super) async fn release(
    store: &EtcdStore,
    job_id: Option<&str>,
) -> Result<Option<LockRecord>, StoreError> {
    release_if(store, |held| held.is_released_by(job_id)).await
}

/// Releases the lock if `releases` says so of the lock held; returns what was released.
pub(super) async fn release_if(
    store: &EtcdStore,
    releases: impl Fn(&LockRecord) -> bool,
) -> Result<Option<LockRecord>, StoreError> {
    let key = store.keys.lock();
    let mut attempts = Attempts::new("releasing the lock");
    loop {
        attempts.another().await?;
        let read = store.read(key.clone()).await?;
        match read.decode::<LockRecord>(NAME, &key)? {
            Some(held) if releases(&held) => {
                let txn = Txn::new()
                    .when([read.unchanged])
                    .and_then([TxnOp::delete(key.as_str(), None)]);
                if store.commit(txn).await?.is_some() {
                    return Ok(Some(held));
                }
            }
            _ => return Ok(None),
        }
    }
}
