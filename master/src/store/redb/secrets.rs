//! The `secrets` table: each secret's sealed value, keyed by its name.

use brine_common::names::SecretName;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::read;
use crate::store::record::{decode, encode};
use crate::store::{SecretRecord, StoreError};

const NAME: &str = "secrets";
pub(super) const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(NAME);

pub(super) fn put(
    db: &Database,
    name: &SecretName,
    record: &SecretRecord,
) -> Result<Option<SecretRecord>, StoreError> {
    let tx = db.begin_write()?;
    let previous = {
        let mut table = tx.open_table(TABLE)?;
        let previous = read(&table, NAME, name.as_str())?;
        table.insert(name.as_str(), encode(record).as_slice())?;
        previous
    };
    tx.commit()?;
    Ok(previous)
}

pub(super) fn get(db: &Database, name: &SecretName) -> Result<Option<SecretRecord>, StoreError> {
    let tx = db.begin_read()?;
    read(&tx.open_table(TABLE)?, NAME, name.as_str())
}

pub(super) fn all(db: &Database) -> Result<Vec<(SecretName, SecretRecord)>, StoreError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(TABLE)?;
    table
        .iter()?
        .map(|entry| {
            let (key, value) = entry?;
            let key = key.value();
            let name = SecretName::new(key).map_err(|err| StoreError::Corrupt {
                table: NAME,
                key: key.to_owned(),
                message: format!("the key is not a secret's name: {err}"),
            })?;
            Ok((name, decode(NAME, key, value.value())?))
        })
        .collect()
}

pub(super) fn delete(db: &Database, name: &SecretName) -> Result<Option<SecretRecord>, StoreError> {
    let tx = db.begin_write()?;
    let previous = tx
        .open_table(TABLE)?
        .remove(name.as_str())?
        .map(|bytes| decode(NAME, name.as_str(), bytes.value()))
        .transpose()?;
    tx.commit()?;
    Ok(previous)
}
