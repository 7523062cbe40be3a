//! Enrolled hosts, one key each (`minions/ID`), and the calls that change them. A join also
//! uses its token (`tokens`), and forgetting a host forgets its events (`events`), in the same
//! transaction.

use brine_common::names::MinionId;
use brine_common::outcome::HostReport;
use etcd_client::{Event, EventType, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};
use futures::StreamExt;

use super::{Attempts, EtcdStore, HOSTS_PER_PAGE, OPS_PER_TXN, Read, delete_under, deleted};
use crate::pki::SignedCertificate;
use crate::store::minions::{self as rules, Enrolment, StoredMinionRecord};
use crate::store::record::{decode, encode};
use crate::store::{
    Approval, ApprovalChange, CertificateCheck, HostChange, HostChanges, HostHello, JoinAttempt,
    JoinOutcome, MinionRecord, Renewal, StoreError,
};

const NAME: &str = "minions";

/// The host record in `read` of host `id`.
fn record_in(read: &Read, id: &MinionId) -> Result<Option<MinionRecord>, StoreError> {
    Ok(read
        .decode::<StoredMinionRecord>(NAME, id.as_str())?
        .map(MinionRecord::from))
}

fn decode_record(key: &str, bytes: &[u8]) -> Result<MinionRecord, StoreError> {
    decode::<StoredMinionRecord>(NAME, key, bytes).map(MinionRecord::from)
}

/// Reads host `id`'s record, decides with `decide` what to answer and what to write, and
/// writes it if the record has not changed meanwhile (else starts again).
async fn change<T>(
    store: &EtcdStore,
    id: &MinionId,
    what: &'static str,
    mut decide: impl FnMut(Option<MinionRecord>) -> (T, Option<MinionRecord>),
) -> Result<T, StoreError> {
    let key = store.keys.minion(id);
    let mut attempts = Attempts::new(what);
    loop {
        attempts.another().await?;
        let read = store.read(key.clone()).await?;
        let (answer, changed) = decide(record_in(&read, id)?);
        let Some(record) = changed else {
            return Ok(answer);
        };
        let txn = Txn::new().when([read.unchanged]).and_then([TxnOp::put(
            key.as_str(),
            encode(&record),
            None,
        )]);
        if store.commit(txn).await?.is_some() {
            return Ok(answer);
        }
    }
}

pub(super) async fn join(
    store: &EtcdStore,
    attempt: JoinAttempt,
) -> Result<JoinOutcome, StoreError> {
    let minion_key = store.keys.minion(&attempt.id);
    let mut attempts = Attempts::new("join");
    loop {
        attempts.another().await?;
        let (token_read, token) = super::tokens::find(store, &attempt.secret_hash).await?;
        let token = match rules::usable_token(token, &attempt) {
            Ok(token) => token,
            Err(refusal) => return Ok(JoinOutcome::Refused(refusal)),
        };
        let minion_read = store.read(minion_key.clone()).await?;
        let existing = record_in(&minion_read, &attempt.id)?;
        let Enrolment {
            outcome,
            token,
            record,
        } = match rules::enrol(token, existing, attempt.clone()) {
            Ok(enrolment) => enrolment,
            Err(refusal) => return Ok(JoinOutcome::Refused(refusal)),
        };
        let mut compares = vec![minion_read.unchanged];
        compares.extend(token_read.map(|read| read.unchanged));
        let txn = Txn::new().when(compares).and_then([
            super::tokens::put(store, &token)?,
            TxnOp::put(minion_key.as_str(), encode(&record), None),
        ]);
        if store.commit(txn).await?.is_some() {
            return Ok(outcome);
        }
    }
}

/// Records a hello. Unlike the redb store, every write is durable: etcd commits each to a
/// quorum of members.
pub(super) async fn record_hello(
    store: &EtcdStore,
    id: MinionId,
    certificate_sha256: String,
    hello: HostHello,
) -> Result<CertificateCheck, StoreError> {
    change(store, &id, "a hello", |record| {
        let (answer, write) = rules::hello(record, &certificate_sha256, hello.clone());
        (answer, write.map(|write| write.record))
    })
    .await
}

pub(super) async fn renew_certificate(
    store: &EtcdStore,
    id: MinionId,
    caller_sha256: String,
    renewed: SignedCertificate,
    renewed_pem: String,
) -> Result<Renewal, StoreError> {
    change(store, &id, "a renewal", |record| {
        rules::renew(
            record,
            caller_sha256.clone(),
            renewed.clone(),
            renewed_pem.clone(),
        )
    })
    .await
}

pub(super) async fn certificate_check(
    store: &EtcdStore,
    id: MinionId,
    certificate_sha256: String,
) -> Result<CertificateCheck, StoreError> {
    let record = minion(store, &id).await?;
    Ok(rules::admits(record.as_ref(), &certificate_sha256).unwrap_or(CertificateCheck::Recorded))
}

pub(super) async fn set_approval(
    store: &EtcdStore,
    id: MinionId,
    approval: Approval,
) -> Result<ApprovalChange, StoreError> {
    change(store, &id, "an approval", |record| {
        rules::change_approval(record, approval)
    })
    .await
}

pub(super) async fn import(store: &EtcdStore, record: MinionRecord) -> Result<bool, StoreError> {
    let key = store.keys.minion(&record.id);
    let txn = Txn::new()
        .when([etcd_client::Compare::version(
            key.as_str(),
            etcd_client::CompareOp::Equal,
            0,
        )])
        .and_then([TxnOp::put(key.as_str(), encode(&record), None)]);
    Ok(store.commit(txn).await?.is_some())
}

pub(super) async fn delete(store: &EtcdStore, id: MinionId) -> Result<bool, StoreError> {
    let txn = Txn::new().and_then([
        TxnOp::delete(store.keys.minion(&id), None),
        delete_under(store.keys.events(&id)),
    ]);
    let answers = store.commit_unconditionally(txn).await?;
    Ok(deleted(answers.first()) > 0)
}

pub(super) async fn minion(
    store: &EtcdStore,
    id: &MinionId,
) -> Result<Option<MinionRecord>, StoreError> {
    let read = store.read(store.keys.minion(id)).await?;
    record_in(&read, id)
}

pub(super) async fn minions_after(
    store: &EtcdStore,
    after: Option<&MinionId>,
    limit: usize,
) -> Result<Vec<MinionRecord>, StoreError> {
    let prefix = store.keys.minions();
    // From just after `after`'s key (a key and a NUL byte) to the end of the prefix.
    let start = match after {
        Some(after) => format!("{}\0", store.keys.minion(after)),
        None => prefix.clone(),
    };
    let options = GetOptions::new()
        .with_range(prefix_end(&prefix))
        .with_limit(super::limit_of(limit));
    store
        .range(start, options)
        .await?
        .iter()
        .map(|kv| decode_record(&super::key_text(kv), kv.value()))
        .collect()
}

pub(super) async fn all(store: &EtcdStore) -> Result<Vec<MinionRecord>, StoreError> {
    let mut every = vec![];
    loop {
        let page = minions_after(
            store,
            every.last().map(|m: &MinionRecord| &m.id),
            HOSTS_PER_PAGE,
        )
        .await?;
        let full = page.len() == HOSTS_PER_PAGE;
        every.extend(page);
        if !full {
            return Ok(every);
        }
    }
}

/// The first key after every key that starts with `prefix` (which ends in an ASCII byte below
/// 0x7f, as every prefix here ends in '/').
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Updates what the hosts of `reports` run, for those enrolled whose report says anything new:
/// a transaction of reads and one of writes per [`OPS_PER_TXN`] hosts, each write made only if
/// the host's record has not changed since it was read.
pub(super) async fn apply_reports(
    store: &EtcdStore,
    reports: &[HostReport],
) -> Result<(), StoreError> {
    for chunk in reports.chunks(OPS_PER_TXN) {
        apply_chunk(store, chunk).await?;
    }
    Ok(())
}

/// [`apply_reports`] for at most [`OPS_PER_TXN`] reports.
async fn apply_chunk(store: &EtcdStore, chunk: &[HostReport]) -> Result<(), StoreError> {
    let keys: Vec<String> = chunk
        .iter()
        .map(|report| store.keys.minion(&report.minion_id))
        .collect();
    let reads = Txn::new().and_then(
        keys.iter()
            .map(|key| TxnOp::get(key.as_str(), None))
            .collect::<Vec<_>>(),
    );
    let mut attempts = Attempts::new("recording what hosts run");
    loop {
        attempts.another().await?;
        let answers = store.read_all(reads.clone()).await?;
        let mut compares = vec![];
        let mut writes = vec![];
        for ((report, key), answer) in chunk.iter().zip(&keys).zip(answers) {
            let TxnOpResponse::Get(mut got) = answer else {
                continue;
            };
            let read = Read::new(key.clone(), got.take_kvs().into_iter().next());
            if let Some(mut record) = record_in(&read, &report.minion_id)?
                && record.apply_report(report)
            {
                compares.push(read.unchanged);
                writes.push(TxnOp::put(key.as_str(), encode(&record), None));
            }
        }
        if writes.is_empty()
            || store
                .commit(Txn::new().when(compares).and_then(writes))
                .await?
                .is_some()
        {
            return Ok(());
        }
    }
}

/// [`MinionRecord::apply_report`] for one host, as a comparison and a write to add to another
/// transaction, if the host is enrolled and the report says anything new.
pub(super) async fn report_write(
    store: &EtcdStore,
    report: &HostReport,
) -> Result<Option<(etcd_client::Compare, TxnOp)>, StoreError> {
    let key = store.keys.minion(&report.minion_id);
    let read = store.read(key.clone()).await?;
    Ok(match record_in(&read, &report.minion_id)? {
        Some(mut record) => record.apply_report(report).then(|| {
            (
                read.unchanged,
                TxnOp::put(key.as_str(), encode(&record), None),
            )
        }),
        None => None,
    })
}

/// Every change to a host's key from now on, as [`HostChange`]s, from an etcd watch on the
/// hosts' prefix. The watch ends with an error when etcd cancels it (a compaction past it, say)
/// or the connection breaks.
pub(super) async fn follow_changes(store: &EtcdStore) -> Result<HostChanges, StoreError> {
    let prefix = store.keys.minions();
    let watching = store
        .watch
        .clone()
        .watch(prefix.clone(), Some(WatchOptions::new().with_prefix()))
        .await
        .map_err(super::etcd_failure)?;
    let changes = futures::stream::unfold(Some(watching), move |watching| {
        let prefix = prefix.clone();
        async move {
            let mut watching = watching?;
            let batch = match watching.message().await {
                Ok(Some(response)) if response.canceled() => Err(StoreError::Unavailable(format!(
                    "etcd ended the watch on the hosts: {}",
                    response.cancel_reason()
                ))),
                Ok(Some(response)) => Ok(response
                    .events()
                    .iter()
                    .filter_map(|event| change_of(event, &prefix))
                    .collect::<Vec<_>>()),
                Ok(None) => Err(StoreError::Unavailable(
                    "etcd closed the watch on the hosts".into(),
                )),
                Err(err) => Err(super::etcd_failure(err)),
            };
            Some(match batch {
                Ok(changes) => (futures::stream::iter(changes), Some(watching)),
                // The error is the last item.
                Err(err) => (futures::stream::iter(vec![Err(err)]), None),
            })
        }
    })
    .flatten();
    Ok(Box::pin(changes))
}

/// The change `event` makes to the host record under `prefix`, if it is one.
fn change_of(event: &Event, prefix: &str) -> Option<Result<HostChange, StoreError>> {
    let kv = event.kv()?;
    let key = super::key_text(kv);
    let id = key.strip_prefix(prefix)?;
    Some(match event.event_type() {
        EventType::Delete => {
            MinionId::new(id)
                .map(HostChange::Deleted)
                .map_err(|err| StoreError::Corrupt {
                    table: NAME,
                    key: key.clone(),
                    message: err.to_string(),
                })
        }
        EventType::Put => {
            decode_record(&key, kv.value()).map(|record| HostChange::Changed(Box::new(record)))
        }
    })
}
