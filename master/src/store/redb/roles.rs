//! The `roles` table: versions of the roles file by number, the newest
//! [`ROLES_VERSIONS_KEPT`](crate::store::roles::ROLES_VERSIONS_KEPT).

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::store::StoreError;
use crate::store::record::{decode, encode};
use crate::store::roles::{self as rules, NewRoles, RolesApplied, RolesVersion};

const NAME: &str = "roles";
pub(super) const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new(NAME);

pub(super) fn apply(db: &Database, new: NewRoles) -> Result<RolesApplied, StoreError> {
    let tx = db.begin_write()?;
    let applied = {
        let mut table = tx.open_table(TABLE)?;
        let newest = match table.last()? {
            Some((key, value)) => Some(decode(NAME, key.value(), value.value())?),
            None => None,
        };
        let applied = rules::apply(newest, new);
        if let RolesApplied::Added { version, .. } = &applied {
            table.insert(version.version, encode(version).as_slice())?;
            let oldest_kept = rules::oldest_kept(version.version);
            table.retain_in(..oldest_kept, |_, _| false)?;
        }
        applied
    };
    tx.commit()?;
    Ok(applied)
}

pub(super) fn version(
    db: &Database,
    number: Option<u64>,
) -> Result<Option<RolesVersion>, StoreError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(TABLE)?;
    let found = match number {
        Some(number) => table.get(number)?.map(|value| (number, value)),
        None => table.last()?.map(|(key, value)| (key.value(), value)),
    };
    found
        .map(|(number, value)| decode(NAME, number, value.value()))
        .transpose()
}

/// Every version kept, newest first.
pub(super) fn all(db: &Database) -> Result<Vec<RolesVersion>, StoreError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(TABLE)?;
    table
        .iter()?
        .rev()
        .map(|entry| {
            let (key, value) = entry?;
            decode(NAME, key.value(), value.value())
        })
        .collect()
}
