//! The `join_tokens` table: join tokens by public id (the first digits of their secret's hash).

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};

use super::read;
use crate::store::record::{decode, encode};
use crate::store::tokens::{newest_first, token_id};
use crate::store::{ListedToken, StoreError, TokenCheck, TokenRecord};

const NAME: &str = "join_tokens";
pub(super) const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(NAME);

/// Finds the token whose secret hashes to `secret_hash`: looked up by its public id, then the
/// whole hash compared in constant time.
pub(super) fn find(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    secret_hash: &str,
) -> Result<Option<TokenRecord>, StoreError> {
    let Some(id) = token_id(secret_hash) else {
        return Ok(None);
    };
    Ok(read::<TokenRecord>(table, NAME, id)?.filter(|record| record.matches(secret_hash)))
}

/// Stores `record` under its public id.
pub(super) fn put(
    table: &mut Table<&'static str, &'static [u8]>,
    record: &TokenRecord,
) -> Result<(), StoreError> {
    let id = token_id(&record.secret_sha256).ok_or_else(|| StoreError::Corrupt {
        table: NAME,
        key: record.secret_sha256.clone(),
        message: "a token's hash is too short".into(),
    })?;
    table.insert(id, encode(record).as_slice())?;
    Ok(())
}

pub(super) fn add(db: &Database, record: TokenRecord) -> Result<(), StoreError> {
    let tx = db.begin_write()?;
    put(&mut tx.open_table(TABLE)?, &record)?;
    tx.commit()?;
    Ok(())
}

pub(super) fn check(
    db: &Database,
    secret_hash: String,
    now_unix_ms: i64,
) -> Result<TokenCheck, StoreError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(TABLE)?;
    Ok(find(&table, &secret_hash)?.map_or(TokenCheck::Unknown, |record| record.check(now_unix_ms)))
}

/// Every token, newest first.
pub(super) fn list(db: &Database) -> Result<Vec<ListedToken>, StoreError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(TABLE)?;
    let mut tokens = table
        .iter()?
        .map(|entry| {
            let (key, value) = entry?;
            Ok(ListedToken {
                id: key.value().to_owned(),
                record: decode(NAME, key.value(), value.value())?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    newest_first(&mut tokens);
    Ok(tokens)
}

pub(super) fn revoke(db: &Database, id: String) -> Result<bool, StoreError> {
    let tx = db.begin_write()?;
    let removed = tx.open_table(TABLE)?.remove(id.as_str())?.is_some();
    tx.commit()?;
    Ok(removed)
}
