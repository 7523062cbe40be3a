//! The `minions` table: enrolled hosts by id, and the calls that change them. A join also uses
//! its token (`tokens`), and forgetting a host forgets its events (`events`), in the same
//! transaction.

use brine_common::names::MinionId;
use brine_common::outcome::HostReport;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition};

use super::{events, read, tokens};
use crate::pki::SignedCertificate;
use crate::store::minions::{self as rules, Enrolment, StoredMinionRecord};
use crate::store::record::{decode, encode};
use crate::store::{
    Approval, ApprovalChange, CertificateCheck, HostHello, JoinAttempt, JoinOutcome, MinionRecord,
    Renewal, StoreError,
};

const NAME: &str = "minions";
pub(super) const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(NAME);

/// Host `id`'s record, if it is enrolled.
fn get(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &MinionId,
) -> Result<Option<MinionRecord>, StoreError> {
    Ok(read::<StoredMinionRecord>(table, NAME, id.as_str())?.map(MinionRecord::from))
}

fn put(
    table: &mut Table<&'static str, &'static [u8]>,
    id: &MinionId,
    record: &MinionRecord,
) -> Result<(), StoreError> {
    table.insert(id.as_str(), encode(record).as_slice())?;
    Ok(())
}

/// Reads host `id`'s record, decides with `decide` what to answer and what to write, and
/// writes it, in one transaction flushed to disk.
fn change<T>(
    db: &Database,
    id: &MinionId,
    decide: impl FnOnce(Option<MinionRecord>) -> (T, Option<MinionRecord>),
) -> Result<T, StoreError> {
    change_flushing(db, id, |record| {
        let (answer, changed) = decide(record);
        (answer, changed, Durability::Immediate)
    })
}

/// [`change`], where `decide` also says whether the commit must be flushed to disk before it
/// returns.
fn change_flushing<T>(
    db: &Database,
    id: &MinionId,
    decide: impl FnOnce(Option<MinionRecord>) -> (T, Option<MinionRecord>, Durability),
) -> Result<T, StoreError> {
    let mut tx = db.begin_write()?;
    let (answer, durability) = {
        let mut table = tx.open_table(TABLE)?;
        let (answer, changed, durability) = decide(get(&table, id)?);
        if let Some(record) = changed {
            put(&mut table, id, &record)?;
        }
        (answer, durability)
    };
    tx.set_durability(durability)
        .map_err(|err| StoreError::Backend(err.to_string()))?;
    tx.commit()?;
    Ok(answer)
}

pub(super) fn join(db: &Database, attempt: JoinAttempt) -> Result<JoinOutcome, StoreError> {
    let tx = db.begin_write()?;
    let outcome = {
        let mut tokens = tx.open_table(tokens::TABLE)?;
        let mut minions = tx.open_table(TABLE)?;
        let token = tokens::find(&tokens, &attempt.secret_hash)?;
        match rules::usable_token(token, &attempt) {
            Err(refusal) => JoinOutcome::Refused(refusal),
            Ok(token) => {
                let id = attempt.id.clone();
                let existing = get(&minions, &id)?;
                match rules::enrol(token, existing, attempt) {
                    Err(refusal) => JoinOutcome::Refused(refusal),
                    Ok(Enrolment {
                        outcome,
                        token,
                        record,
                    }) => {
                        tokens::put(&mut tokens, &token)?;
                        put(&mut minions, &id, &record)?;
                        outcome
                    }
                }
            }
        }
    };
    tx.commit()?;
    Ok(outcome)
}

/// Records a hello. Unless `durable` or the hello settles a renewed certificate, the commit
/// is not flushed to disk: a reconnecting fleet would otherwise cost one flush per host, and
/// what it risks in a crash (facts, containers, when the host was seen) the host says again
/// at its next hello. Any later durable commit persists it too.
pub(super) fn record_hello(
    db: &Database,
    id: MinionId,
    certificate_sha256: String,
    hello: HostHello,
    durable: bool,
) -> Result<CertificateCheck, StoreError> {
    change_flushing(db, &id, |record| {
        let (answer, write) = rules::hello(record, &certificate_sha256, hello);
        match write {
            Some(write) => {
                let durability = if durable || write.settles_certificate {
                    Durability::Immediate
                } else {
                    Durability::None
                };
                (answer, Some(write.record), durability)
            }
            // Nothing written, nothing to flush.
            None => (answer, None, Durability::None),
        }
    })
}

pub(super) fn renew_certificate(
    db: &Database,
    id: MinionId,
    caller_sha256: String,
    renewed: SignedCertificate,
    renewed_pem: String,
) -> Result<Renewal, StoreError> {
    change(db, &id, |record| {
        rules::renew(record, caller_sha256, renewed, renewed_pem)
    })
}

pub(super) fn certificate_check(
    db: &Database,
    id: MinionId,
    certificate_sha256: String,
) -> Result<CertificateCheck, StoreError> {
    let tx = db.begin_read()?;
    let record = get(&tx.open_table(TABLE)?, &id)?;
    Ok(rules::admits(record.as_ref(), &certificate_sha256).unwrap_or(CertificateCheck::Recorded))
}

pub(super) fn set_approval(
    db: &Database,
    id: MinionId,
    approval: Approval,
) -> Result<ApprovalChange, StoreError> {
    change(db, &id, |record| rules::change_approval(record, approval))
}

pub(super) fn import(db: &Database, record: MinionRecord) -> Result<bool, StoreError> {
    let tx = db.begin_write()?;
    let imported = {
        let mut table = tx.open_table(TABLE)?;
        let absent = table.get(record.id.as_str())?.is_none();
        if absent {
            put(&mut table, &record.id, &record)?;
        }
        absent
    };
    tx.commit()?;
    Ok(imported)
}

pub(super) fn delete(db: &Database, id: MinionId) -> Result<bool, StoreError> {
    let tx = db.begin_write()?;
    let found = tx.open_table(TABLE)?.remove(id.as_str())?.is_some();
    events::forget(&tx, &id)?;
    tx.commit()?;
    Ok(found)
}

pub(super) fn minion(db: &Database, id: MinionId) -> Result<Option<MinionRecord>, StoreError> {
    let tx = db.begin_read()?;
    get(&tx.open_table(TABLE)?, &id)
}

pub(super) fn minions_after(
    db: &Database,
    after: Option<MinionId>,
    limit: usize,
) -> Result<Vec<MinionRecord>, StoreError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(TABLE)?;
    let range = match &after {
        Some(after) => table.range::<&str>((
            std::ops::Bound::Excluded(after.as_str()),
            std::ops::Bound::Unbounded,
        ))?,
        None => table.range::<&str>(..)?,
    };
    range
        .take(limit)
        .map(|entry| {
            let (key, value) = entry?;
            decode::<StoredMinionRecord>(NAME, key.value(), value.value()).map(MinionRecord::from)
        })
        .collect()
}

pub(super) fn minions(db: &Database) -> Result<Vec<MinionRecord>, StoreError> {
    minions_after(db, None, usize::MAX)
}

/// Updates what the host of `report` runs, if it is enrolled and the report says anything new.
pub(super) fn apply_report(
    table: &mut Table<&'static str, &'static [u8]>,
    report: &HostReport,
) -> Result<(), StoreError> {
    if let Some(mut record) = get(table, &report.minion_id)?
        && record.apply_report(report)
    {
        put(table, &report.minion_id, &record)?;
    }
    Ok(())
}
