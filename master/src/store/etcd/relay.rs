//! Links and messages between masters (`links/ID`, `relay/NAME/UNIQUE`): see
//! `store/relay.rs`. Both are followed as a read of what is there, then a watch from the
//! revision of that read, so nothing written in between is missed.

use brine_common::names::MinionId;
use etcd_client::{Compare, CompareOp, EventType, GetOptions, KeyValue, Txn, TxnOp, WatchOptions};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::{EtcdStore, OPS_PER_TXN};
use crate::store::StoreError;
use crate::store::record::{decode, encode};
use crate::store::relay::{
    LinkChange, LinkChanges, LinkRecord, Relayed, RelayedMessages, RelayedRecord,
};

const LINKS: &str = "links";
const RELAY: &str = "relay";

pub(super) async fn record_link(
    store: &EtcdStore,
    host: MinionId,
    master: String,
) -> Result<(), StoreError> {
    let write = TxnOp::put(store.keys.link(&host), encode(&LinkRecord { master }), None);
    store
        .commit_unconditionally(Txn::new().and_then([write]))
        .await?;
    Ok(())
}

/// The comparison that holds while `key` says `master` holds the link.
fn held_by(key: &str, master: &str) -> Compare {
    Compare::value(
        key,
        CompareOp::Equal,
        encode(&LinkRecord {
            master: master.to_owned(),
        }),
    )
}

pub(super) async fn forget_link(
    store: &EtcdStore,
    host: MinionId,
    master: String,
) -> Result<(), StoreError> {
    let key = store.keys.link(&host);
    // Another master may hold the link by now: its record stays.
    let txn = Txn::new()
        .when([held_by(&key, &master)])
        .and_then([TxnOp::delete(key.as_str(), None)]);
    store.commit(txn).await?;
    Ok(())
}

pub(super) async fn forget_links_of(store: &EtcdStore, master: String) -> Result<(), StoreError> {
    let mine: Vec<String> = store
        .under(store.keys.links())
        .await?
        .iter()
        .filter(|kv| {
            decode::<LinkRecord>(LINKS, super::key_text(kv), kv.value())
                .is_ok_and(|record| record.master == master)
        })
        .map(super::key_text)
        .collect();
    // Comparisons count against etcd's limit too: half a transaction each.
    for keys in mine.chunks(OPS_PER_TXN / 2) {
        let txn = Txn::new()
            .when(
                keys.iter()
                    .map(|key| held_by(key, &master))
                    .collect::<Vec<_>>(),
            )
            .and_then(
                keys.iter()
                    .map(|key| TxnOp::delete(key.as_str(), None))
                    .collect::<Vec<_>>(),
            );
        if store.commit(txn).await?.is_none() {
            // One was taken by another master meanwhile: key by key, then.
            for key in keys {
                let txn = Txn::new()
                    .when([held_by(key, &master)])
                    .and_then([TxnOp::delete(key.as_str(), None)]);
                store.commit(txn).await?;
            }
        }
    }
    Ok(())
}

pub(super) async fn follow_links(store: &EtcdStore) -> Result<LinkChanges, StoreError> {
    let prefix = store.keys.links();
    let seen = follow_prefix(store, prefix.clone(), "the hosts' links").await?;
    Ok(Box::pin(seen.filter_map(move |seen| {
        let change = seen.and_then(|seen| {
            let (key, value) = match &seen {
                Seen::Put(kv) => (super::key_text(kv), Some(kv.value())),
                Seen::Deleted(key) => (key.clone(), None),
            };
            let Some(id) = key.strip_prefix(&prefix) else {
                return Ok(None);
            };
            let host = MinionId::new(id).map_err(|err| StoreError::Corrupt {
                table: LINKS,
                key: key.clone(),
                message: err.to_string(),
            })?;
            Ok(Some(match value {
                Some(value) => LinkChange::Linked {
                    host,
                    master: decode::<LinkRecord>(LINKS, &key, value)?.master,
                },
                None => LinkChange::Unlinked(host),
            }))
        });
        std::future::ready(change.transpose())
    })))
}

pub(super) async fn relay(
    store: &EtcdStore,
    to: String,
    message: Relayed,
) -> Result<(), StoreError> {
    let unique = format!(
        "{:013}-{:016x}",
        brine_daemon::clock::now_unix_ms(),
        rand::random::<u64>()
    );
    let write = TxnOp::put(
        store.keys.relayed(&to, &unique),
        encode(&RelayedRecord { message }),
        None,
    );
    store
        .commit_unconditionally(Txn::new().and_then([write]))
        .await?;
    Ok(())
}

pub(super) async fn follow_relayed(
    store: &EtcdStore,
    master: String,
) -> Result<RelayedMessages, StoreError> {
    let prefix = store.keys.relayed_to(&master);
    let seen = follow_prefix(store, prefix, "the messages from other masters").await?;
    let kv = store.kv.clone();
    Ok(Box::pin(seen.filter_map(move |seen| {
        let mut kv = kv.clone();
        async move {
            let put = match seen {
                Ok(Seen::Put(put)) => put,
                Ok(Seen::Deleted(_)) => return None,
                Err(err) => return Some(Err(err)),
            };
            let key = super::key_text(&put);
            // Taken out as it is read: delivered at most once.
            if let Err(err) = kv.delete(put.key(), None).await {
                tracing::warn!(%key, "cannot take a read message out of the store: {err}");
            }
            Some(decode::<RelayedRecord>(RELAY, &key, put.value()).map(|record| record.message))
        }
    })))
}

/// What a follower saw happen to a key.
pub(super) enum Seen {
    Put(KeyValue),
    Deleted(String),
}

/// Every key under `prefix` now, then every change to one; `what` names it in errors. The
/// stream ends with an error when the watch breaks or etcd cancels it.
pub(super) async fn follow_prefix(
    store: &EtcdStore,
    prefix: String,
    what: &'static str,
) -> Result<BoxStream<'static, Result<Seen, StoreError>>, StoreError> {
    let mut response = super::with_retries(super::unreachable, || {
        let (mut kv, prefix) = (store.kv.clone(), prefix.clone());
        async move { kv.get(prefix, Some(GetOptions::new().with_prefix())).await }
    })
    .await?;
    let revision = response.header().map_or(0, |header| header.revision());
    let now: Vec<Result<Seen, StoreError>> = response
        .take_kvs()
        .into_iter()
        .map(|kv| Ok(Seen::Put(kv)))
        .collect();
    let watching = store
        .watch
        .clone()
        .watch(
            prefix,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await
        .map_err(super::etcd_failure)?;
    let changes = futures::stream::unfold(Some(watching), move |watching| async move {
        let mut watching = watching?;
        let batch = match watching.message().await {
            Ok(Some(response)) if response.canceled() => Err(StoreError::Unavailable(format!(
                "etcd ended the watch on {what}: {}",
                response.cancel_reason()
            ))),
            Ok(Some(response)) => Ok(response
                .events()
                .iter()
                .filter_map(|event| {
                    let kv = event.kv()?;
                    Some(Ok(match event.event_type() {
                        EventType::Put => Seen::Put(kv.clone()),
                        EventType::Delete => Seen::Deleted(super::key_text(kv)),
                    }))
                })
                .collect::<Vec<_>>()),
            Ok(None) => Err(StoreError::Unavailable(format!(
                "etcd closed the watch on {what}"
            ))),
            Err(err) => Err(super::etcd_failure(err)),
        };
        Some(match batch {
            Ok(seen) => (futures::stream::iter(seen), Some(watching)),
            // The error is the last item.
            Err(err) => (futures::stream::iter(vec![Err(err)]), None),
        })
    })
    .flatten();
    Ok(Box::pin(futures::stream::iter(now).chain(changes)))
}
