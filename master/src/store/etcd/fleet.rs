//! Which fleet the keys under the prefix are (`fleet`).

use etcd_client::{Txn, TxnOp};

use super::{Attempts, EtcdStore};
use crate::store::StoreError;
use crate::store::fleet::{self as rules, FleetClaim, FleetRecord};
use crate::store::record::encode;

const NAME: &str = "fleet";

pub(super) async fn claim(store: &EtcdStore, ca_sha256: &str) -> Result<FleetClaim, StoreError> {
    let key = store.keys.fleet();
    let mut attempts = Attempts::new("claiming the fleet");
    loop {
        attempts.another().await?;
        let read = store.read(key.clone()).await?;
        let (claim, write) = rules::claim(read.decode::<FleetRecord>(NAME, &key)?, ca_sha256);
        let Some(record) = write else {
            return Ok(claim);
        };
        let txn = Txn::new().when([read.unchanged]).and_then([TxnOp::put(
            key.as_str(),
            encode(&record),
            None,
        )]);
        if store.commit(txn).await?.is_some() {
            return Ok(claim);
        }
    }
}
