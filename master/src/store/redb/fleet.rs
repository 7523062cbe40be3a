//! The `fleet` table: which fleet the database holds, under one key.

use redb::{Database, TableDefinition};

use super::read;
use crate::store::StoreError;
use crate::store::fleet::{self as rules, FleetClaim, FleetRecord};
use crate::store::record::encode;

const NAME: &str = "fleet";
pub(super) const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(NAME);
const KEY: &str = "fleet";

pub(super) fn claim(db: &Database, ca_sha256: &str) -> Result<FleetClaim, StoreError> {
    let tx = db.begin_write()?;
    let claim = {
        let mut table = tx.open_table(TABLE)?;
        let (claim, write) = rules::claim(read::<FleetRecord>(&table, NAME, KEY)?, ca_sha256);
        if let Some(record) = write {
            table.insert(KEY, encode(&record).as_slice())?;
        }
        claim
    };
    tx.commit()?;
    Ok(claim)
}
