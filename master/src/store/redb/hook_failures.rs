//! The `hook_failures` table: failed deliveries to hooks, keyed by a sequence number, the newest
//! [`HOOK_FAILURES_KEPT`].

use brine_common::fleet_event::HookFailure;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::store::record::{decode, encode};
use crate::store::{HOOK_FAILURES_KEPT, StoreError};

const NAME: &str = "hook_failures";
pub(super) const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new(NAME);

/// Keeps `failure`, forgetting the oldest beyond [`HOOK_FAILURES_KEPT`].
pub(super) fn record(db: &Database, failure: HookFailure) -> Result<(), StoreError> {
    let tx = db.begin_write()?;
    {
        let mut table = tx.open_table(TABLE)?;
        let next = match table.last()? {
            Some((last, _)) => last.value() + 1,
            None => 0,
        };
        table.insert(next, encode(&failure).as_slice())?;
        let oldest_kept = (next + 1).saturating_sub(HOOK_FAILURES_KEPT as u64);
        table.retain_in(..oldest_kept, |_, _| false)?;
    }
    tx.commit()?;
    Ok(())
}

/// The newest `limit` failures, newest first.
pub(super) fn newest(db: &Database, limit: usize) -> Result<Vec<HookFailure>, StoreError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(TABLE)?;
    table
        .iter()?
        .rev()
        .take(limit)
        .map(|entry| {
            let (key, value) = entry?;
            decode(NAME, key.value(), value.value())
        })
        .collect()
}
