//! Failed deliveries to hooks: one key per failure (`hook-failures/SEQUENCE`), the newest
//! [`HOOK_FAILURES_KEPT`], whichever master's hooks failed.

use brine_common::fleet_event::HookFailure;
use etcd_client::{Compare, CompareOp, DeleteOptions, Txn, TxnOp};

use super::keys::Keys;
use super::{Attempts, EtcdStore};
use crate::store::record::{decode, encode};
use crate::store::{HOOK_FAILURES_KEPT, StoreError};

const NAME: &str = "hook_failures";

/// Keeps `failure`, forgetting the oldest beyond [`HOOK_FAILURES_KEPT`].
pub(super) async fn record(store: &EtcdStore, failure: HookFailure) -> Result<(), StoreError> {
    let value = encode(&failure);
    let mut attempts = Attempts::new("a failed hook delivery");
    loop {
        attempts.another().await?;
        let newest = store.newest_under(store.keys.hook_failures(), 1).await?;
        let next = match newest.first() {
            Some(kv) => sequence(kv)? + 1,
            None => 0,
        };
        let key = store.keys.hook_failure(next);
        let mut ops = vec![TxnOp::put(key.as_str(), value.clone(), None)];
        let oldest_kept = (next + 1).saturating_sub(HOOK_FAILURES_KEPT as u64);
        if oldest_kept > 0 {
            ops.push(TxnOp::delete(
                store.keys.hook_failure(0),
                Some(DeleteOptions::new().with_range(store.keys.hook_failure(oldest_kept))),
            ));
        }
        // Another master may have taken the same number: then read again.
        let txn = Txn::new()
            .when([Compare::version(key, CompareOp::Equal, 0)])
            .and_then(ops);
        if store.commit(txn).await?.is_some() {
            return Ok(());
        }
    }
}

fn sequence(kv: &etcd_client::KeyValue) -> Result<u64, StoreError> {
    let key = super::key_text(kv);
    Keys::sequence_of(&key).ok_or_else(|| StoreError::Corrupt {
        table: NAME,
        key,
        message: "the key does not end in a sequence number".into(),
    })
}

/// The newest `limit` failures, newest first.
pub(super) async fn newest(
    store: &EtcdStore,
    limit: usize,
) -> Result<Vec<HookFailure>, StoreError> {
    if limit == 0 {
        return Ok(vec![]);
    }
    store
        .newest_under(store.keys.hook_failures(), limit)
        .await?
        .iter()
        .map(|kv| decode(NAME, super::key_text(kv), kv.value()))
        .collect()
}
