//! The `masters` table: each master's announcement, by name.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::store::StoreError;
use crate::store::masters::MasterAnnouncement;
use crate::store::record::{decode, encode};

const NAME: &str = "masters";
pub(super) const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(NAME);

pub(super) fn announce(db: &Database, announcement: MasterAnnouncement) -> Result<(), StoreError> {
    let tx = db.begin_write()?;
    tx.open_table(TABLE)?
        .insert(announcement.name.as_str(), encode(&announcement).as_slice())?;
    tx.commit()?;
    Ok(())
}

pub(super) fn holding(
    db: &Database,
    now_unix_ms: i64,
) -> Result<Vec<MasterAnnouncement>, StoreError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(TABLE)?;
    let mut holding = vec![];
    for entry in table.iter()? {
        let (key, value) = entry?;
        let announcement: MasterAnnouncement = decode(NAME, key.value(), value.value())?;
        if announcement.holds_at(now_unix_ms) {
            holding.push(announcement);
        }
    }
    Ok(holding)
}
