//! Operator and CI certificate revocations, one key each (`revocations/ROLE/NAME`).

use brine_common::identity::CertRole;
use etcd_client::{Txn, TxnOp};

use super::EtcdStore;
use crate::store::record::{decode, encode};
use crate::store::revocations::{RevocationRecord, key, parse_key};
use crate::store::{CertificateRevocation, StoreError};

const NAME: &str = "certificate_revocations";

pub(super) async fn revoke(
    store: &EtcdStore,
    role: CertRole,
    name: &str,
    now_unix_ms: i64,
) -> Result<(), StoreError> {
    let record = RevocationRecord {
        revoked_at_unix_ms: now_unix_ms,
    };
    let write = TxnOp::put(
        store.keys.revocation(&key(role, name)),
        encode(&record),
        None,
    );
    store
        .commit_unconditionally(Txn::new().and_then([write]))
        .await?;
    Ok(())
}

pub(super) async fn all(store: &EtcdStore) -> Result<Vec<CertificateRevocation>, StoreError> {
    let prefix = store.keys.revocations();
    store
        .under(prefix.clone())
        .await?
        .iter()
        .map(|kv| {
            let full = super::key_text(kv);
            let key = full.strip_prefix(&prefix).unwrap_or(&full);
            let (role, name) = parse_key(key).ok_or_else(|| StoreError::Corrupt {
                table: NAME,
                key: key.to_owned(),
                message: "the key is not ROLE/NAME".into(),
            })?;
            let record: RevocationRecord = decode(NAME, key, kv.value())?;
            Ok(CertificateRevocation {
                role,
                name: name.to_owned(),
                revoked_at_unix_ms: record.revoked_at_unix_ms,
            })
        })
        .collect()
}
