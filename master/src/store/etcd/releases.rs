//! Releases, one key each by id, 1, 2, 3, ... in order (`releases/ID`).

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::keys::Keys;
use super::{Attempts, EtcdStore};
use crate::release::{Pins, Release};
use crate::store::StoreError;
use crate::store::record::{decode, encode};

const NAME: &str = "releases";

pub(super) async fn add(
    store: &EtcdStore,
    job_id: String,
    caller: String,
    created_at_unix_ms: i64,
    pins: Pins,
) -> Result<Release, StoreError> {
    let mut attempts = Attempts::new("a release");
    loop {
        attempts.another().await?;
        let id = match latest(store).await? {
            Some(release) => release.id + 1,
            None => 1,
        };
        let release = Release {
            id,
            job_id: job_id.clone(),
            caller: caller.clone(),
            created_at_unix_ms,
            pins: pins.clone(),
        };
        let key = store.keys.release(id);
        // Another master that took the same id first makes this one take the next.
        let txn = Txn::new()
            .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, encode(&release), None)]);
        if store.commit(txn).await?.is_some() {
            return Ok(release);
        }
    }
}

pub(super) async fn latest(store: &EtcdStore) -> Result<Option<Release>, StoreError> {
    let newest = store.newest_under(store.keys.releases(), 1).await?;
    newest.first().map(release_in).transpose()
}

/// Every release, oldest first.
pub(super) async fn all(store: &EtcdStore) -> Result<Vec<Release>, StoreError> {
    store
        .under(store.keys.releases())
        .await?
        .iter()
        .map(release_in)
        .collect()
}

fn release_in(kv: &etcd_client::KeyValue) -> Result<Release, StoreError> {
    let key = super::key_text(kv);
    let id = Keys::sequence_of(&key).map_or(key, |id| id.to_string());
    decode(NAME, id, kv.value())
}
