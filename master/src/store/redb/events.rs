//! The `host_events` table: what hosts did between jobs, keyed by host id and a sequence number
//! per host, the newest [`EVENTS_KEPT`] of each host.

use brine_common::host::HostEvent;
use brine_common::names::MinionId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::minions;
use crate::store::record::{decode, encode};
use crate::store::{EVENTS_KEPT, StoreError};

const NAME: &str = "host_events";
pub(super) const TABLE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new(NAME);

/// Every key of host `id`'s events.
fn of_host(id: &MinionId) -> std::ops::RangeInclusive<(&str, u64)> {
    (id.as_str(), 0)..=(id.as_str(), u64::MAX)
}

/// Records an event of host `id` if it is enrolled (whether it is).
pub(super) fn record(db: &Database, id: MinionId, event: HostEvent) -> Result<bool, StoreError> {
    let tx = db.begin_write()?;
    let known = tx.open_table(minions::TABLE)?.get(id.as_str())?.is_some();
    if known {
        let mut table = tx.open_table(TABLE)?;
        let next = match table.range(of_host(&id))?.next_back() {
            Some(last) => last?.0.value().1 + 1,
            None => 0,
        };
        table.insert((id.as_str(), next), encode(&event).as_slice())?;
        let oldest_kept = (next + 1).saturating_sub(EVENTS_KEPT as u64);
        table.retain_in(of_host(&id), |(_, seq), _| seq >= oldest_kept)?;
    }
    tx.commit()?;
    Ok(known)
}

/// Host `id`'s newest `limit` events, newest first.
pub(super) fn newest(
    db: &Database,
    id: MinionId,
    limit: usize,
) -> Result<Vec<HostEvent>, StoreError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(TABLE)?;
    table
        .range(of_host(&id))?
        .rev()
        .take(limit)
        .map(|entry| {
            let (key, value) = entry?;
            let (host, seq) = key.value();
            decode(NAME, format_args!("{host}/{seq}"), value.value())
        })
        .collect()
}

/// Forgets host `id`'s events, in `tx`.
pub(super) fn forget(tx: &WriteTransaction, id: &MinionId) -> Result<(), StoreError> {
    tx.open_table(TABLE)?.retain_in(of_host(id), |_, _| false)?;
    Ok(())
}
