//! What hosts did between jobs: one key per event (`events/ID/SEQUENCE`), the newest
//! [`EVENTS_KEPT`] of each host.

use brine_common::host::HostEvent;
use brine_common::names::MinionId;
use etcd_client::{Compare, CompareOp, DeleteOptions, Txn, TxnOp};

use super::keys::Keys;
use super::{Attempts, EtcdStore};
use crate::store::record::{decode, encode};
use crate::store::{EVENTS_KEPT, StoreError};

const NAME: &str = "host_events";

/// Records an event of host `id` if it is enrolled (whether it is).
pub(super) async fn record(
    store: &EtcdStore,
    id: MinionId,
    event: HostEvent,
) -> Result<bool, StoreError> {
    let minion_key = store.keys.minion(&id);
    let value = encode(&event);
    let mut attempts = Attempts::new("a host event");
    loop {
        attempts.another().await?;
        let host = store.read(minion_key.clone()).await?;
        if host.value.is_none() {
            return Ok(false);
        }
        let newest = store.newest_under(store.keys.events(&id), 1).await?;
        let next = match newest.first() {
            Some(kv) => sequence(kv)? + 1,
            None => 0,
        };
        let key = store.keys.event(&id, next);
        let mut ops = vec![TxnOp::put(key.as_str(), value.clone(), None)];
        let oldest_kept = (next + 1).saturating_sub(EVENTS_KEPT as u64);
        if oldest_kept > 0 {
            ops.push(TxnOp::delete(
                store.keys.event(&id, 0),
                Some(DeleteOptions::new().with_range(store.keys.event(&id, oldest_kept))),
            ));
        }
        let txn = Txn::new()
            .when([host.unchanged, Compare::version(key, CompareOp::Equal, 0)])
            .and_then(ops);
        if store.commit(txn).await?.is_some() {
            return Ok(true);
        }
    }
}

/// The sequence number of an event's key.
fn sequence(kv: &etcd_client::KeyValue) -> Result<u64, StoreError> {
    let key = super::key_text(kv);
    Keys::sequence_of(&key).ok_or_else(|| StoreError::Corrupt {
        table: NAME,
        key,
        message: "the key does not end in a sequence number".into(),
    })
}

/// Host `id`'s newest `limit` events, newest first.
pub(super) async fn newest(
    store: &EtcdStore,
    id: MinionId,
    limit: usize,
) -> Result<Vec<HostEvent>, StoreError> {
    if limit == 0 {
        return Ok(vec![]);
    }
    store
        .newest_under(store.keys.events(&id), limit)
        .await?
        .iter()
        .map(|kv| decode(NAME, super::key_text(kv), kv.value()))
        .collect()
}
