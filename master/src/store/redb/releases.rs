//! The `releases` table: releases by id, 1, 2, 3, ... in order.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::release::{Pins, Release};
use crate::store::StoreError;
use crate::store::record::{decode, encode};

const NAME: &str = "releases";
pub(super) const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new(NAME);

pub(super) fn add(
    db: &Database,
    job_id: String,
    caller: String,
    created_at_unix_ms: i64,
    pins: Pins,
) -> Result<Release, StoreError> {
    let tx = db.begin_write()?;
    let release = {
        let mut table = tx.open_table(TABLE)?;
        let id = match table.last()? {
            Some((key, _)) => key.value() + 1,
            None => 1,
        };
        let release = Release {
            id,
            job_id,
            caller,
            created_at_unix_ms,
            pins,
        };
        table.insert(id, encode(&release).as_slice())?;
        release
    };
    tx.commit()?;
    Ok(release)
}

pub(super) fn latest(db: &Database) -> Result<Option<Release>, StoreError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(TABLE)?;
    match table.last()? {
        Some((key, value)) => Ok(Some(decode(NAME, key.value(), value.value())?)),
        None => Ok(None),
    }
}

/// Every release, oldest first.
pub(super) fn all(db: &Database) -> Result<Vec<Release>, StoreError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(TABLE)?;
    table
        .iter()?
        .map(|entry| {
            let (key, value) = entry?;
            decode(NAME, key.value(), value.value())
        })
        .collect()
}
