//! The `fleet_lock` table: the fleet's one lock, under one key.

use redb::{Database, ReadableDatabase, TableDefinition, WriteTransaction};

use super::read;
use crate::store::record::encode;
use crate::store::{LockRecord, StoreError};

const NAME: &str = "fleet_lock";
pub(super) const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(NAME);
/// The fleet has one lock, under this key.
const KEY: &str = "fleet";

pub(super) fn try_lock(
    db: &Database,
    lock: LockRecord,
    now_unix_ms: i64,
) -> Result<Result<(), LockRecord>, StoreError> {
    let tx = db.begin_write()?;
    let outcome = {
        let mut table = tx.open_table(TABLE)?;
        match read::<LockRecord>(&table, NAME, KEY)? {
            Some(held) if !held.is_expired(now_unix_ms) => Err(held),
            _ => {
                table.insert(KEY, encode(&lock).as_slice())?;
                Ok(())
            }
        }
    };
    tx.commit()?;
    Ok(outcome)
}

pub(super) fn current(db: &Database, now_unix_ms: i64) -> Result<Option<LockRecord>, StoreError> {
    let tx = db.begin_read()?;
    let lock = read::<LockRecord>(&tx.open_table(TABLE)?, NAME, KEY)?;
    Ok(lock.filter(|l| !l.is_expired(now_unix_ms)))
}

pub(super) fn release(
    db: &Database,
    job_id: Option<String>,
) -> Result<Option<LockRecord>, StoreError> {
    let tx = db.begin_write()?;
    let released = {
        let mut table = tx.open_table(TABLE)?;
        match read::<LockRecord>(&table, NAME, KEY)? {
            Some(held) if held.is_released_by(job_id.as_deref()) => {
                table.remove(KEY)?;
                Some(held)
            }
            _ => None,
        }
    };
    tx.commit()?;
    Ok(released)
}

/// Releases the lock, in `tx`, if one of the jobs `job_ids` holds it.
pub(super) fn release_held_by_any(
    tx: &WriteTransaction,
    job_ids: &[String],
) -> Result<(), StoreError> {
    let mut table = tx.open_table(TABLE)?;
    let held = read::<LockRecord>(&table, NAME, KEY)?;
    if held.is_some_and(|held| held.job_id.is_some_and(|job| job_ids.contains(&job))) {
        table.remove(KEY)?;
    }
    Ok(())
}
