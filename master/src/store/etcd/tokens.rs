//! Join tokens, one key each by public id (`tokens/PUBLIC-ID`, the first digits of their
//! secret's hash).

use etcd_client::{Txn, TxnOp};

use super::{EtcdStore, Read, deleted};
use crate::store::record::{decode, encode};
use crate::store::tokens::{newest_first, token_id};
use crate::store::{ListedToken, StoreError, TokenCheck, TokenRecord};

const NAME: &str = "join_tokens";

/// Finds the token whose secret hashes to `secret_hash`: looked up by its public id, then the
/// whole hash compared in constant time. With the token's key as read, when the hash has a
/// public id.
pub(super) async fn find(
    store: &EtcdStore,
    secret_hash: &str,
) -> Result<(Option<Read>, Option<TokenRecord>), StoreError> {
    let Some(id) = token_id(secret_hash) else {
        return Ok((None, None));
    };
    let read = store.read(store.keys.token(id)).await?;
    let token = read
        .decode::<TokenRecord>(NAME, id)?
        .filter(|record| record.matches(secret_hash));
    Ok((Some(read), token))
}

/// The write that stores `record` under its public id.
pub(super) fn put(store: &EtcdStore, record: &TokenRecord) -> Result<TxnOp, StoreError> {
    let id = token_id(&record.secret_sha256).ok_or_else(|| StoreError::Corrupt {
        table: NAME,
        key: record.secret_sha256.clone(),
        message: "a token's hash is too short".into(),
    })?;
    Ok(TxnOp::put(store.keys.token(id), encode(record), None))
}

pub(super) async fn add(store: &EtcdStore, record: TokenRecord) -> Result<(), StoreError> {
    store
        .commit_unconditionally(Txn::new().and_then([put(store, &record)?]))
        .await?;
    Ok(())
}

pub(super) async fn check(
    store: &EtcdStore,
    secret_hash: &str,
    now_unix_ms: i64,
) -> Result<TokenCheck, StoreError> {
    let (_, token) = find(store, secret_hash).await?;
    Ok(token.map_or(TokenCheck::Unknown, |record| record.check(now_unix_ms)))
}

pub(super) async fn list(store: &EtcdStore) -> Result<Vec<ListedToken>, StoreError> {
    let prefix = store.keys.tokens();
    let mut tokens = store
        .under(prefix.clone())
        .await?
        .iter()
        .map(|kv| {
            let key = super::key_text(kv);
            let id = key.strip_prefix(&prefix).unwrap_or(&key).to_owned();
            let record = decode(NAME, &id, kv.value())?;
            Ok(ListedToken { id, record })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    newest_first(&mut tokens);
    Ok(tokens)
}

pub(super) async fn revoke(store: &EtcdStore, id: &str) -> Result<bool, StoreError> {
    let txn = Txn::new().and_then([TxnOp::delete(store.keys.token(id), None)]);
    let answers = store.commit_unconditionally(txn).await?;
    Ok(deleted(answers.first()) > 0)
}
