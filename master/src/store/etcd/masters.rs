//! Each master's announcement, one key by name (`masters/NAME`).

use etcd_client::{Txn, TxnOp};

use super::EtcdStore;
use crate::store::StoreError;
use crate::store::masters::MasterAnnouncement;
use crate::store::record::{decode, encode};

const NAME: &str = "masters";

pub(super) async fn announce(
    store: &EtcdStore,
    announcement: MasterAnnouncement,
) -> Result<(), StoreError> {
    let write = TxnOp::put(
        store.keys.master(&announcement.name),
        encode(&announcement),
        None,
    );
    store
        .commit_unconditionally(Txn::new().and_then([write]))
        .await?;
    Ok(())
}

pub(super) async fn holding(
    store: &EtcdStore,
    now_unix_ms: i64,
) -> Result<Vec<MasterAnnouncement>, StoreError> {
    let mut holding = vec![];
    for kv in store.under(store.keys.masters()).await? {
        let announcement: MasterAnnouncement = decode(NAME, super::key_text(&kv), kv.value())?;
        if announcement.holds_at(now_unix_ms) {
            holding.push(announcement);
        }
    }
    Ok(holding)
}
