//! The `certificate_revocations` table: operator and CI certificate revocations, keyed
//! `ROLE/NAME`.

use brine_common::identity::CertRole;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::store::record::{decode, encode};
use crate::store::revocations::{RevocationRecord, key, parse_key};
use crate::store::{CertificateRevocation, StoreError};

const NAME: &str = "certificate_revocations";
pub(super) const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(NAME);

/// When the revocation stored under `key` was made.
fn revoked_at(key: &str, bytes: &[u8]) -> Result<i64, StoreError> {
    // Written before records carried a format: the moment alone, a JSON number.
    if let Ok(revoked_at_unix_ms) = serde_json::from_slice::<i64>(bytes) {
        return Ok(revoked_at_unix_ms);
    }
    Ok(decode::<RevocationRecord>(NAME, key, bytes)?.revoked_at_unix_ms)
}

pub(super) fn revoke(
    db: &Database,
    role: CertRole,
    name: String,
    now_unix_ms: i64,
) -> Result<(), StoreError> {
    let record = RevocationRecord {
        revoked_at_unix_ms: now_unix_ms,
    };
    let tx = db.begin_write()?;
    tx.open_table(TABLE)?
        .insert(key(role, &name).as_str(), encode(&record).as_slice())?;
    tx.commit()?;
    Ok(())
}

pub(super) fn all(db: &Database) -> Result<Vec<CertificateRevocation>, StoreError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(TABLE)?;
    table
        .iter()?
        .map(|entry| {
            let (key, value) = entry?;
            let key = key.value();
            let (role, name) = parse_key(key).ok_or_else(|| StoreError::Corrupt {
                table: NAME,
                key: key.to_owned(),
                message: "the key is not ROLE/NAME".into(),
            })?;
            Ok(CertificateRevocation {
                role,
                name: name.to_owned(),
                revoked_at_unix_ms: revoked_at(key, value.value())?,
            })
        })
        .collect()
}
