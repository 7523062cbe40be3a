//! The master's embedded, transactional store (redb): enrolled minions, join tokens and jobs.
//!
//! Records are JSON so they can grow fields without migrations, and each says which format it
//! is in (`record.rs`), so a master never misreads a shape it does not know. Every write
//! commits before the caller is answered. redb calls block, so every call runs on tokio's blocking pool.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use brine_common::host::{Facts, HostEvent, RunningContainer};
use brine_common::identity::CertRole;
use brine_common::names::MinionId;
use brine_common::outcome::{ContainerAction, HostReport, HostStatus, JobId, JobSummary};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::pki::SignedCertificate;
use crate::release::{Pins, Release};
use serde::{Deserialize, Serialize};

mod database;
mod record;

use record::{decode, encode};

const MINIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("minions");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("join_tokens");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const LOCK: TableDefinition<&str, &[u8]> = TableDefinition::new("fleet_lock");
const RELEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("releases");
/// What hosts did between jobs, keyed by host id and a sequence number per host.
const HOST_EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("host_events");
/// How many events the store keeps per host; older ones go.
pub const EVENTS_KEPT: usize = 200;
/// Operator and CI certificate revocations, keyed `ROLE/NAME`.
const REVOCATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("certificate_revocations");
/// The fleet has one lock, under this key.
const LOCK_KEY: &str = "fleet";

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Database(#[from] redb::Error),
    /// A record that is not one this master can read: it does not decode, or it is in a format
    /// this master does not know.
    #[error("store: the {table} record {key:?} is unreadable: {message}")]
    Corrupt {
        table: &'static str,
        key: String,
        message: String,
    },
    #[error("store: the blocking task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// Whether the database file could not be read or written; redb uses it no more until it
    /// is opened again.
    fn is_io_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed
            )
        )
    }

    /// Whether the disk holding the store is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            StoreError::Database(redb::Error::Io(err))
                if matches!(err.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        )
    }

    /// What a remote caller is told: whether the master's disk is full, which an operator must
    /// fix, and otherwise only that the store failed; the details are in the master's log.
    pub fn to_status(&self) -> tonic::Status {
        tracing::error!("{self}");
        if self.is_disk_full() {
            tonic::Status::resource_exhausted(
                "the master's disk is full: it can record nothing (so it starts no job and \
                 enrols no host) until space is freed where its data directory is",
            )
        } else {
            tonic::Status::unavailable("the master's store failed; see the master's log")
        }
    }
}

macro_rules! from_redb {
    ($($ty:ty),*) => {$(
        impl From<$ty> for StoreError {
            fn from(err: $ty) -> Self {
                StoreError::Database(err.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// An enrolled host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinionRecord {
    pub id: MinionId,
    pub enrolled_at_unix_ms: i64,
    /// SHA-256 of its newest certificate (DER), hex.
    pub certificate_sha256: String,
    /// The certificate it renewed last, still accepted until the newest one is first used (the
    /// host may not have received the renewal's answer).
    #[serde(default)]
    pub previous_certificate_sha256: Option<String>,
    /// When the newest certificate expires.
    #[serde(default)]
    pub certificate_expires_unix_ms: i64,
    /// Labels from the token it joined with.
    #[serde(default)]
    pub join_labels: BTreeMap<String, String>,
    /// 0 until it first connects.
    pub last_seen_unix_ms: i64,
    pub facts: Facts,
    pub running: Vec<RunningContainer>,
    /// Whether its link is admitted.
    #[serde(default)]
    pub approval: Approval,
    /// A machine that joined with a token made to replace this host (`token create --replace`)
    /// on a master that approves joins by hand: it takes the host's place once an operator
    /// accepts it. Until then the host as it is keeps its certificate and its link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_replacement: Option<PendingEnrolment>,
    /// The certificate issued at the last renewal (PEM), until the host first uses it: a host
    /// that lost the answer asks again with its previous certificate and gets this same one
    /// back, never a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_renewal_pem: Option<String>,
    /// How far its clock was ahead of the master's (negative: behind) at its last hello.
    #[serde(default)]
    pub clock_offset_ms: i64,
}

/// A joined machine waiting for approval to take over an enrolled host's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEnrolment {
    pub certificate_sha256: String,
    pub certificate_expires_unix_ms: i64,
    pub joined_at_unix_ms: i64,
    pub join_labels: BTreeMap<String, String>,
}

/// Whether a host's link is admitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    #[default]
    Accepted,
    /// Joined on a master that approves joins by hand.
    Pending,
    /// Turned away by an operator; must join again.
    Rejected,
    /// Its certificate is refused; must join again.
    Revoked,
}

/// What became of a change of approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalChange {
    Changed,
    /// Accepting a host with a pending replacement: the replacing machine's certificate is now
    /// the host's, and the one before is refused.
    ReplacementAccepted,
    /// Rejecting a host with a pending replacement: the replacing machine is turned away, the
    /// host keeps its certificate and approval.
    ReplacementRejected,
    NotFound,
    /// The host is rejected or revoked and cannot be accepted again.
    Refused(Approval),
}

/// What the store says of a host's certificate when it connects or renews.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateCheck {
    /// Accepted, and what the host sent was recorded.
    Recorded,
    NotEnrolled,
    /// Pending, rejected or revoked.
    NotAdmitted(Approval),
    /// The host has a newer certificate: it enrolled again or renewed since.
    CertificateReplaced,
}

/// What a host said when it linked up.
#[derive(Debug, Clone, Default)]
pub struct HostHello {
    pub facts: Facts,
    pub running: Vec<RunningContainer>,
    /// How far its clock was ahead of the master's (negative: behind).
    pub clock_offset_ms: i64,
    /// When, by the master's clock.
    pub at_unix_ms: i64,
}

/// What a renewal gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// The new certificate is recorded as the host's newest.
    Issued,
    /// The host called with the certificate it renewed last: it gets the certificate issued
    /// then (PEM) again.
    Reissued(String),
    Refused(CertificateCheck),
}

/// A join token; the store keys it by its public id and never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// SHA-256 of the secret, hex; compared in constant time.
    #[serde(default)]
    pub secret_sha256: String,
    pub created_at_unix_ms: i64,
    pub expires_at_unix_ms: i64,
    /// How many more hosts may join with it; `None`: any number until it expires.
    #[serde(default)]
    pub uses_left: Option<u32>,
    /// How many hosts joined with it.
    #[serde(default)]
    pub uses: u32,
    /// Labels every host that joins with it gets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Set for a token that re-enrols exactly this host id (a rebuilt machine); no other id may
    /// join with it, and it is the only way to join under an id that is enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<MinionId>,
}

/// Operator or CI certificates refused from a moment on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRevocation {
    pub role: CertRole,
    pub name: String,
    /// Certificates issued up to this moment are refused.
    pub revoked_at_unix_ms: i64,
}

fn revocation_key(role: CertRole, name: &str) -> String {
    format!("{role}/{name}")
}

/// A revocation as stored under its key.
#[derive(Serialize, Deserialize)]
struct RevocationRecord {
    revoked_at_unix_ms: i64,
}

/// When the revocation stored under `key` was made.
fn revoked_at(key: &str, bytes: &[u8]) -> Result<i64, StoreError> {
    // Written before records carried a format: the moment alone, a JSON number.
    if let Ok(revoked_at_unix_ms) = serde_json::from_slice::<i64>(bytes) {
        return Ok(revoked_at_unix_ms);
    }
    Ok(decode::<RevocationRecord>("certificate_revocations", key, bytes)?.revoked_at_unix_ms)
}

/// A join token as listed: its public id (the start of its secret's hash) and its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedToken {
    pub id: String,
    pub record: TokenRecord,
}

/// How many hex digits of a token's secret hash identify it: its key in the store and its id in
/// listings.
const TOKEN_ID_LEN: usize = 12;

/// Finds the token whose secret hashes to `secret_hash`: looked up by its public id, then the
/// whole hash compared in constant time.
fn find_token(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    secret_hash: &str,
) -> Result<Option<TokenRecord>, StoreError> {
    let Some(id) = secret_hash.get(..TOKEN_ID_LEN) else {
        return Ok(None);
    };
    Ok(
        read::<TokenRecord>(table, "join_tokens", id)?.filter(|record| {
            bool::from(
                record
                    .secret_sha256
                    .as_bytes()
                    .ct_eq(secret_hash.as_bytes()),
            )
        }),
    )
}

/// Why `record`'s host is not admitted with `certificate_sha256`, if it is not: it must be
/// accepted, and the certificate its newest (or the one it renewed last, until the newest is
/// used); a machine waiting to replace it is told it waits.
fn admits(record: Option<&MinionRecord>, certificate_sha256: &str) -> Option<CertificateCheck> {
    let Some(record) = record else {
        return Some(CertificateCheck::NotEnrolled);
    };
    if record
        .pending_replacement
        .as_ref()
        .is_some_and(|p| p.certificate_sha256 == certificate_sha256)
    {
        return Some(CertificateCheck::NotAdmitted(Approval::Pending));
    }
    if record.approval != Approval::Accepted {
        return Some(CertificateCheck::NotAdmitted(record.approval));
    }
    if record.certificate_sha256 != certificate_sha256
        && record.previous_certificate_sha256.as_deref() != Some(certificate_sha256)
    {
        return Some(CertificateCheck::CertificateReplaced);
    }
    None
}

/// How much job history the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobRetention {
    /// The newest this many jobs are kept (a job still running counts, and is never
    /// forgotten)...
    pub keep: usize,
    /// ...and of those, only the ones that finished within this long.
    pub max_age: Duration,
}

/// Forgets the jobs beyond `retention`, oldest first (job ids sort by their start time). A
/// job still running is never forgotten.
fn prune_jobs(
    jobs: &mut redb::Table<&'static str, &'static [u8]>,
    retention: JobRetention,
    now_unix_ms: i64,
) -> Result<(), StoreError> {
    let total = usize::try_from(jobs.len()?).unwrap_or(usize::MAX);
    let mut excess = total.saturating_sub(retention.keep.max(1));
    let cutoff = now_unix_ms
        .saturating_sub(i64::try_from(retention.max_age.as_millis()).unwrap_or(i64::MAX));
    let mut forgotten = vec![];
    for entry in jobs.iter()? {
        let (key, value) = entry?;
        let record: JobRecord = decode("jobs", key.value(), value.value())?;
        if record.running {
            continue;
        }
        if excess == 0 && record.summary.finished_at_unix_ms >= cutoff {
            break;
        }
        excess = excess.saturating_sub(1);
        forgotten.push(key.value().to_owned());
    }
    for key in forgotten {
        jobs.remove(key.as_str())?;
    }
    Ok(())
}

/// The decision of [`Store::join`], inside its transaction.
fn admit(
    tokens: &mut redb::Table<&'static str, &'static [u8]>,
    minions: &mut redb::Table<&'static str, &'static [u8]>,
    attempt: JoinAttempt,
) -> Result<JoinOutcome, StoreError> {
    let JoinAttempt {
        secret_hash,
        id,
        certificate,
        now_unix_ms,
        approval,
    } = attempt;
    let Some(mut token) = find_token(tokens, &secret_hash)? else {
        return Ok(JoinOutcome::Refused(JoinRefusal::Token(
            TokenCheck::Unknown,
        )));
    };
    match token.check(now_unix_ms) {
        TokenCheck::Valid => {}
        refused => return Ok(JoinOutcome::Refused(JoinRefusal::Token(refused))),
    }
    if let Some(only) = &token.replaces
        && *only != id
    {
        return Ok(JoinOutcome::Refused(JoinRefusal::TokenForAnotherHost(
            only.clone(),
        )));
    }
    let existing = read::<MinionRecord>(minions, "minions", id.as_str())?;
    let labels = token.labels.clone();
    let (record, outcome) = match existing {
        Some(_) if token.replaces.is_none() => {
            return Ok(JoinOutcome::Refused(JoinRefusal::AlreadyEnrolled));
        }
        Some(mut record) if approval == Approval::Pending => {
            record.pending_replacement = Some(PendingEnrolment {
                certificate_sha256: certificate.sha256,
                certificate_expires_unix_ms: certificate.expires_unix_ms,
                joined_at_unix_ms: now_unix_ms,
                join_labels: labels.clone(),
            });
            (record, JoinOutcome::ReplacementPending { labels })
        }
        Some(mut record) => {
            record.replace_with(PendingEnrolment {
                certificate_sha256: certificate.sha256,
                certificate_expires_unix_ms: certificate.expires_unix_ms,
                joined_at_unix_ms: now_unix_ms,
                join_labels: labels.clone(),
            });
            (record, JoinOutcome::Replaced { labels })
        }
        None => (
            MinionRecord {
                id: id.clone(),
                enrolled_at_unix_ms: now_unix_ms,
                certificate_sha256: certificate.sha256,
                previous_certificate_sha256: None,
                certificate_expires_unix_ms: certificate.expires_unix_ms,
                join_labels: labels.clone(),
                last_seen_unix_ms: 0,
                facts: Facts::default(),
                running: vec![],
                approval,
                pending_replacement: None,
                last_renewal_pem: None,
                clock_offset_ms: 0,
            },
            JoinOutcome::Enrolled { approval, labels },
        ),
    };
    token.uses = token.uses.saturating_add(1);
    token.uses_left = token.uses_left.map(|n| n.saturating_sub(1));
    let token_id = token.secret_sha256[..TOKEN_ID_LEN].to_owned();
    tokens.insert(token_id.as_str(), encode(&token).as_slice())?;
    minions.insert(id.as_str(), encode(&record).as_slice())?;
    Ok(outcome)
}

impl MinionRecord {
    /// Makes `replacement` this host: its certificate, the only one accepted from now on, its
    /// labels, accepted. What the old machine reported is kept until the new one says hello.
    fn replace_with(&mut self, replacement: PendingEnrolment) {
        self.certificate_sha256 = replacement.certificate_sha256;
        self.previous_certificate_sha256 = None;
        self.certificate_expires_unix_ms = replacement.certificate_expires_unix_ms;
        self.enrolled_at_unix_ms = replacement.joined_at_unix_ms;
        self.join_labels = replacement.join_labels;
        self.approval = Approval::Accepted;
        self.pending_replacement = None;
        self.last_renewal_pem = None;
    }
}

/// A finished job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub summary: JobSummary,
    /// The target expression the caller gave (empty for every host).
    pub target: String,
    /// The certificate identity of the caller.
    pub caller: String,
    /// A plan (dry run) that changed nothing.
    #[serde(default)]
    pub plan: bool,
    /// Still running: the summary holds the reports recorded so far.
    #[serde(default)]
    pub running: bool,
    /// Every host the job targets.
    #[serde(default)]
    pub targets: Vec<MinionId>,
}

/// The fleet lock: while it is held and not expired, no rollout starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// The certificate identity of the holder.
    pub holder: String,
    pub message: String,
    pub acquired_at_unix_ms: i64,
    pub expires_at_unix_ms: i64,
    /// The job holding it; `None` for a lock taken by hand.
    pub job_id: Option<String>,
}

impl LockRecord {
    pub fn is_expired(&self, now_unix_ms: i64) -> bool {
        self.expires_at_unix_ms <= now_unix_ms
    }
}

/// What a join asks of the store: the token it came with, the id it claims and the certificate
/// signed for it.
#[derive(Debug, Clone)]
pub struct JoinAttempt {
    pub secret_hash: String,
    pub id: MinionId,
    pub certificate: SignedCertificate,
    pub now_unix_ms: i64,
    /// Accepted or pending, as the master's `join_approval` says.
    pub approval: Approval,
}

/// What became of a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// A new host, accepted or pending, with its token's labels.
    Enrolled {
        approval: Approval,
        labels: BTreeMap<String, String>,
    },
    /// A replacement of an enrolled host took effect: the new certificate is the host's, the
    /// old one is refused (its live link must be dropped).
    Replaced {
        labels: BTreeMap<String, String>,
    },
    /// A replacement waits for an operator; the enrolled host is untouched.
    ReplacementPending {
        labels: BTreeMap<String, String>,
    },
    Refused(JoinRefusal),
}

/// Why a join was refused. The token is not used up by a refused join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinRefusal {
    Token(TokenCheck),
    /// The id is enrolled, and the token was not made to replace it.
    AlreadyEnrolled,
    /// The token re-enrols another host id only.
    TokenForAnotherHost(MinionId),
}

/// Why a join token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    Valid,
    Unknown,
    Expired,
    UsedUp,
}

impl TokenRecord {
    fn check(&self, now_unix_ms: i64) -> TokenCheck {
        if self.expires_at_unix_ms <= now_unix_ms {
            TokenCheck::Expired
        } else if self.uses_left == Some(0) {
            TokenCheck::UsedUp
        } else {
            TokenCheck::Valid
        }
    }
}

/// The store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<database::Reopening>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// Reads and decodes the record under `key` of `table` (named `name` in errors), if any.
fn read<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &'static str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match table.get(key)? {
        Some(bytes) => Ok(Some(decode(name, key, bytes.value())?)),
        None => Ok(None),
    }
}

impl Store {
    /// Opens (or creates) the store and its tables. Blocking: call it before serving.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = database::Reopening::open(path)?;
        db.with(|db| {
            let tx = db.begin_write()?;
            tx.open_table(MINIONS)?;
            tx.open_table(TOKENS)?;
            tx.open_table(JOBS)?;
            tx.open_table(LOCK)?;
            tx.open_table(RELEASES)?;
            tx.open_table(REVOCATIONS)?;
            tx.open_table(HOST_EVENTS)?;
            tx.commit()?;
            Ok(())
        })?;
        Ok(Self { db: Arc::new(db) })
    }

    /// How many bytes are free for the master on the filesystem that holds the store.
    pub async fn available_bytes(&self) -> Result<u64, StoreError> {
        let path = self.db.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let stats = rustix::fs::statvfs(&path)
                .map_err(|err| StoreError::Database(redb::Error::Io(std::io::Error::from(err))))?;
            Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
        })
        .await
        .map_err(|err| StoreError::Task(err.to_string()))?
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.with(work))
            .await
            .map_err(|err| StoreError::Task(err.to_string()))?
    }

    /// Enrols a host with a join token, in one transaction: the token is checked and used, and
    /// an id that is enrolled already is taken over only with a token made to replace it, never
    /// by a join with any other token.
    pub async fn join(&self, attempt: JoinAttempt) -> Result<JoinOutcome, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let outcome = {
                let mut tokens = tx.open_table(TOKENS)?;
                let mut minions = tx.open_table(MINIONS)?;
                admit(&mut tokens, &mut minions, attempt)?
            };
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }

    /// Records what a host said when it connected, if the certificate it connected with is the
    /// newest issued to it (or the one it renewed last) and the host is accepted.
    pub async fn record_hello(
        &self,
        id: MinionId,
        certificate_sha256: String,
        hello: HostHello,
    ) -> Result<CertificateCheck, StoreError> {
        self.update_admitted(id, certificate_sha256.clone(), move |record| {
            if record.certificate_sha256 == certificate_sha256 {
                // The newest certificate is in use: the one before it is no longer needed, nor
                // a copy of the newest to hand out again.
                record.previous_certificate_sha256 = None;
                record.last_renewal_pem = None;
            }
            record.facts = hello.facts;
            record.running = hello.running;
            record.clock_offset_ms = hello.clock_offset_ms;
            record.last_seen_unix_ms = hello.at_unix_ms;
        })
        .await
    }

    /// Records a renewed certificate for a host that called with its newest certificate (or the
    /// one before, whose renewal it may not have received) and is accepted. The certificate it
    /// called with stays valid until the new one is first used.
    pub async fn renew_certificate(
        &self,
        id: MinionId,
        caller_sha256: String,
        renewed: SignedCertificate,
        renewed_pem: String,
    ) -> Result<Renewal, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let renewal = {
                let mut table = tx.open_table(MINIONS)?;
                let record = read::<MinionRecord>(&table, "minions", id.as_str())?;
                match record {
                    None => Renewal::Refused(CertificateCheck::NotEnrolled),
                    Some(record) => match admits(Some(&record), &caller_sha256) {
                        Some(refused) => Renewal::Refused(refused),
                        None if record.certificate_sha256 == caller_sha256 => {
                            let mut record = record;
                            record.previous_certificate_sha256 = Some(caller_sha256);
                            record.certificate_sha256 = renewed.sha256;
                            record.certificate_expires_unix_ms = renewed.expires_unix_ms;
                            record.last_renewal_pem = Some(renewed_pem);
                            table.insert(id.as_str(), encode(&record).as_slice())?;
                            Renewal::Issued
                        }
                        // The previous certificate fetches the same issued one again, at most.
                        None => match record.last_renewal_pem {
                            Some(pem) => Renewal::Reissued(pem),
                            None => Renewal::Refused(CertificateCheck::CertificateReplaced),
                        },
                    },
                }
            };
            tx.commit()?;
            Ok(renewal)
        })
        .await
    }

    /// Applies `update` to host `id`'s record if it is accepted and `certificate_sha256` is its
    /// newest or previous certificate, in one transaction.
    async fn update_admitted(
        &self,
        id: MinionId,
        certificate_sha256: String,
        update: impl FnOnce(&mut MinionRecord) + Send + 'static,
    ) -> Result<CertificateCheck, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let check = {
                let mut table = tx.open_table(MINIONS)?;
                match read::<MinionRecord>(&table, "minions", id.as_str())? {
                    Some(mut record) if admits(Some(&record), &certificate_sha256).is_none() => {
                        update(&mut record);
                        table.insert(id.as_str(), encode(&record).as_slice())?;
                        CertificateCheck::Recorded
                    }
                    existing => admits(existing.as_ref(), &certificate_sha256)
                        .unwrap_or(CertificateCheck::Recorded),
                }
            };
            tx.commit()?;
            Ok(check)
        })
        .await
    }

    /// Whether host `id` is admitted with this certificate now (as a connect or renewal would
    /// be), without recording anything: `Recorded` if it is.
    pub async fn certificate_check(
        &self,
        id: MinionId,
        certificate_sha256: String,
    ) -> Result<CertificateCheck, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let record = read::<MinionRecord>(&tx.open_table(MINIONS)?, "minions", id.as_str())?;
            Ok(admits(record.as_ref(), &certificate_sha256).unwrap_or(CertificateCheck::Recorded))
        })
        .await
    }

    /// Forgets a host and its events. Returns false for an unknown host.
    pub async fn delete_minion(&self, id: MinionId) -> Result<bool, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let found = tx.open_table(MINIONS)?.remove(id.as_str())?.is_some();
            tx.open_table(HOST_EVENTS)?
                .retain_in((id.as_str(), 0)..=(id.as_str(), u64::MAX), |_, _| false)?;
            tx.commit()?;
            Ok(found)
        })
        .await
    }

    /// Records an event of an enrolled host, keeping its newest [`EVENTS_KEPT`]. Returns false
    /// (and records nothing) for an unknown host.
    pub async fn record_host_event(
        &self,
        id: MinionId,
        event: HostEvent,
    ) -> Result<bool, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let known = tx.open_table(MINIONS)?.get(id.as_str())?.is_some();
            if known {
                let mut table = tx.open_table(HOST_EVENTS)?;
                let range = (id.as_str(), 0)..=(id.as_str(), u64::MAX);
                let next = match table.range(range.clone())?.next_back() {
                    Some(last) => last?.0.value().1 + 1,
                    None => 0,
                };
                table.insert((id.as_str(), next), encode(&event).as_slice())?;
                let oldest_kept = (next + 1).saturating_sub(EVENTS_KEPT as u64);
                table.retain_in(range, |(_, seq), _| seq >= oldest_kept)?;
            }
            tx.commit()?;
            Ok(known)
        })
        .await
    }

    /// A host's newest `limit` events, newest first.
    pub async fn host_events(
        &self,
        id: MinionId,
        limit: usize,
    ) -> Result<Vec<HostEvent>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(HOST_EVENTS)?;
            table
                .range((id.as_str(), 0)..=(id.as_str(), u64::MAX))?
                .rev()
                .take(limit)
                .map(|entry| {
                    let (key, value) = entry?;
                    let (host, seq) = key.value();
                    decode("host_events", format_args!("{host}/{seq}"), value.value())
                })
                .collect()
        })
        .await
    }

    /// Refuses every `role` certificate for `name` issued up to `now_unix_ms`.
    pub async fn revoke_certificates(
        &self,
        role: CertRole,
        name: String,
        now_unix_ms: i64,
    ) -> Result<(), StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let record = RevocationRecord {
                revoked_at_unix_ms: now_unix_ms,
            };
            tx.open_table(REVOCATIONS)?.insert(
                revocation_key(role, &name).as_str(),
                encode(&record).as_slice(),
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Every operator and CI certificate revocation.
    pub async fn certificate_revocations(&self) -> Result<Vec<CertificateRevocation>, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(REVOCATIONS)?;
            table
                .iter()?
                .map(|entry| {
                    let (key, value) = entry?;
                    let corrupt = || StoreError::Corrupt {
                        table: "certificate_revocations",
                        key: key.value().to_owned(),
                        message: "the key is not ROLE/NAME".into(),
                    };
                    let (role, name) = key.value().split_once('/').ok_or_else(corrupt)?;
                    Ok(CertificateRevocation {
                        role: role.parse().map_err(|_| corrupt())?,
                        name: name.to_owned(),
                        revoked_at_unix_ms: revoked_at(key.value(), value.value())?,
                    })
                })
                .collect()
        })
        .await
    }

    /// Sets whether a host's link is admitted. Only a waiting host can be accepted: a rejected
    /// or revoked one must join again, with a new certificate.
    pub async fn set_approval(
        &self,
        id: MinionId,
        approval: Approval,
    ) -> Result<ApprovalChange, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let change = {
                let mut table = tx.open_table(MINIONS)?;
                match read::<MinionRecord>(&table, "minions", id.as_str())? {
                    None => ApprovalChange::NotFound,
                    Some(mut record)
                        if record.pending_replacement.is_some()
                            && matches!(approval, Approval::Accepted | Approval::Rejected) =>
                    {
                        let replacement = record.pending_replacement.take();
                        let change = match replacement {
                            Some(replacement) if approval == Approval::Accepted => {
                                record.replace_with(replacement);
                                ApprovalChange::ReplacementAccepted
                            }
                            _ => ApprovalChange::ReplacementRejected,
                        };
                        table.insert(id.as_str(), encode(&record).as_slice())?;
                        change
                    }
                    Some(record)
                        if approval == Approval::Accepted
                            && matches!(
                                record.approval,
                                Approval::Rejected | Approval::Revoked
                            ) =>
                    {
                        ApprovalChange::Refused(record.approval)
                    }
                    Some(mut record) => {
                        record.approval = approval;
                        // Revoking a host turns away a machine waiting to replace it too.
                        record.pending_replacement = None;
                        table.insert(id.as_str(), encode(&record).as_slice())?;
                        ApprovalChange::Changed
                    }
                }
            };
            tx.commit()?;
            Ok(change)
        })
        .await
    }

    /// One enrolled host.
    pub async fn minion(&self, id: MinionId) -> Result<Option<MinionRecord>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            read(&tx.open_table(MINIONS)?, "minions", id.as_str())
        })
        .await
    }

    /// Up to `limit` enrolled hosts after `after` (from the first without it), sorted by id.
    pub async fn minions_after(
        &self,
        after: Option<MinionId>,
        limit: usize,
    ) -> Result<Vec<MinionRecord>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(MINIONS)?;
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
                    decode("minions", key.value(), value.value())
                })
                .collect()
        })
        .await
    }

    /// Every enrolled host, sorted by id.
    pub async fn minions(&self) -> Result<Vec<MinionRecord>, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(MINIONS)?;
            table
                .iter()?
                .map(|entry| {
                    let (key, value) = entry?;
                    decode("minions", key.value(), value.value())
                })
                .collect()
        })
        .await
    }

    /// Stores a new join token under its public id.
    pub async fn add_token(&self, record: TokenRecord) -> Result<(), StoreError> {
        self.blocking(move |db| {
            let id = record
                .secret_sha256
                .get(..TOKEN_ID_LEN)
                .ok_or_else(|| StoreError::Corrupt {
                    table: "join_tokens",
                    key: record.secret_sha256.clone(),
                    message: "a token's hash is too short".into(),
                })?
                .to_owned();
            let tx = db.begin_write()?;
            tx.open_table(TOKENS)?
                .insert(id.as_str(), encode(&record).as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Checks a join token by the hash of its secret.
    pub async fn check_token(
        &self,
        secret_hash: String,
        now_unix_ms: i64,
    ) -> Result<TokenCheck, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(TOKENS)?;
            Ok(find_token(&table, &secret_hash)?
                .map_or(TokenCheck::Unknown, |record| record.check(now_unix_ms)))
        })
        .await
    }

    /// Every join token, newest first, by public id.
    pub async fn tokens(&self) -> Result<Vec<ListedToken>, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(TOKENS)?;
            let mut tokens = table
                .iter()?
                .map(|entry| {
                    let (key, value) = entry?;
                    Ok(ListedToken {
                        id: key.value().to_owned(),
                        record: decode("join_tokens", key.value(), value.value())?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            tokens.sort_by_key(|t| std::cmp::Reverse(t.record.created_at_unix_ms));
            Ok(tokens)
        })
        .await
    }

    /// Deletes the token whose public id is `id`; returns whether there was one.
    pub async fn revoke_token(&self, id: String) -> Result<bool, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let removed = tx.open_table(TOKENS)?.remove(id.as_str())?.is_some();
            tx.commit()?;
            Ok(removed)
        })
        .await
    }

    /// Stores a finished job and what each host now runs, in one transaction.
    pub async fn record_job(
        &self,
        job: JobRecord,
        retention: JobRetention,
    ) -> Result<(), StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            {
                let mut minions = tx.open_table(MINIONS)?;
                for host in &job.summary.hosts {
                    let existing =
                        read::<MinionRecord>(&minions, "minions", host.minion_id.as_str())?;
                    let Some(mut record) = existing else { continue };
                    if !apply_results(&mut record.running, host) {
                        continue;
                    }
                    minions.insert(host.minion_id.as_str(), encode(&record).as_slice())?;
                }
                let mut jobs = tx.open_table(JOBS)?;
                jobs.insert(job.summary.job_id.as_str(), encode(&job).as_slice())?;
                prune_jobs(&mut jobs, retention, job.summary.finished_at_unix_ms)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Records a host's result that arrived after its finished job had given up on the host
    /// (unreachable, timed out, interrupted): the job's record then shows what the host really
    /// did, marked as reported late, and the host's containers as it left them. Returns false
    /// (and records nothing) when the job or the host's report is not one to update.
    pub async fn record_late_report(
        &self,
        job_id: JobId,
        report: HostReport,
    ) -> Result<bool, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let recorded = {
                let mut jobs = tx.open_table(JOBS)?;
                let Some(mut job) = read::<JobRecord>(&jobs, "jobs", job_id.as_str())? else {
                    return Ok(false);
                };
                let Some(slot) = job
                    .summary
                    .hosts
                    .iter_mut()
                    .find(|h| h.minion_id == report.minion_id)
                    .filter(|h| !job.running && h.gave_up())
                else {
                    return Ok(false);
                };
                *slot = HostReport {
                    reported_late: true,
                    ..report
                };
                let late = slot.clone();
                jobs.insert(job_id.as_str(), encode(&job).as_slice())?;
                let mut minions = tx.open_table(MINIONS)?;
                if let Some(mut record) =
                    read::<MinionRecord>(&minions, "minions", late.minion_id.as_str())?
                    && apply_results(&mut record.running, &late)
                {
                    minions.insert(late.minion_id.as_str(), encode(&record).as_slice())?;
                }
                true
            };
            tx.commit()?;
            Ok(recorded)
        })
        .await
    }

    /// Records how far a running job got (it must have `running` set); the final record
    /// replaces it through [`Store::record_job`].
    pub async fn record_job_progress(&self, job: JobRecord) -> Result<(), StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            tx.open_table(JOBS)?
                .insert(job.summary.job_id.as_str(), encode(&job).as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Finishes the jobs a stopped master left running: every target without a recorded report
    /// is `interrupted`, and the fleet lock such a job held is released. Returns their ids.
    pub async fn interrupt_running_jobs(
        &self,
        now_unix_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let interrupted = {
                let mut jobs = tx.open_table(JOBS)?;
                let running: Vec<JobRecord> = jobs
                    .iter()?
                    .map(|entry| {
                        let (key, value) = entry?;
                        decode::<JobRecord>("jobs", key.value(), value.value())
                    })
                    .filter(|job| job.as_ref().map_or(true, |job| job.running))
                    .collect::<Result<_, _>>()?;
                let mut ids = vec![];
                for mut job in running {
                    for target in &job.targets {
                        if !job.summary.hosts.iter().any(|h| &h.minion_id == target) {
                            job.summary.hosts.push(HostReport {
                                minion_id: target.clone(),
                                status: HostStatus::Interrupted,
                                containers: vec![],
                                error: Some(
                                    "the master stopped before this host's report was recorded"
                                        .into(),
                                ),
                                duration_ms: 0,
                                timings: Default::default(),
                                reported_late: false,
                            });
                        }
                    }
                    job.summary
                        .hosts
                        .sort_by(|a, b| a.minion_id.cmp(&b.minion_id));
                    job.summary.finished_at_unix_ms = now_unix_ms;
                    job.running = false;
                    let id = job.summary.job_id.to_string();
                    jobs.insert(id.as_str(), encode(&job).as_slice())?;
                    ids.push(id);
                }
                let mut lock = tx.open_table(LOCK)?;
                let held = read::<LockRecord>(&lock, "fleet_lock", LOCK_KEY)?;
                if held.is_some_and(|held| held.job_id.is_some_and(|job| ids.contains(&job))) {
                    lock.remove(LOCK_KEY)?;
                }
                ids
            };
            tx.commit()?;
            Ok(interrupted)
        })
        .await
    }

    /// The newest `limit` jobs, newest first (job ids sort by start time).
    pub async fn jobs(&self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(JOBS)?;
            table
                .iter()?
                .rev()
                .take(limit)
                .map(|entry| {
                    let (key, value) = entry?;
                    decode("jobs", key.value(), value.value())
                })
                .collect()
        })
        .await
    }

    /// Takes the fleet lock unless someone holds it; an expired lock is taken over. Returns the
    /// lock in force when it is held by someone else.
    pub async fn try_lock(
        &self,
        lock: LockRecord,
        now_unix_ms: i64,
    ) -> Result<Result<(), LockRecord>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let outcome = {
                let mut table = tx.open_table(LOCK)?;
                let current = read::<LockRecord>(&table, "fleet_lock", LOCK_KEY)?;
                match current {
                    Some(held) if !held.is_expired(now_unix_ms) => Err(held),
                    _ => {
                        table.insert(LOCK_KEY, encode(&lock).as_slice())?;
                        Ok(())
                    }
                }
            };
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }

    /// The lock in force, if any (an expired lock is none).
    pub async fn current_lock(&self, now_unix_ms: i64) -> Result<Option<LockRecord>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(LOCK)?;
            let lock = read::<LockRecord>(&table, "fleet_lock", LOCK_KEY)?;
            Ok(lock.filter(|l| !l.is_expired(now_unix_ms)))
        })
        .await
    }

    /// Releases the lock: any lock when `job_id` is `None`, else only the one that job holds.
    /// Returns what was released.
    pub async fn release_lock(
        &self,
        job_id: Option<String>,
    ) -> Result<Option<LockRecord>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let released = {
                let mut table = tx.open_table(LOCK)?;
                let current = read::<LockRecord>(&table, "fleet_lock", LOCK_KEY)?;
                match current {
                    Some(held) if job_id.is_none() || held.job_id == job_id => {
                        table.remove(LOCK_KEY)?;
                        Some(held)
                    }
                    _ => None,
                }
            };
            tx.commit()?;
            Ok(released)
        })
        .await
    }

    /// The newest release, if any.
    pub async fn latest_release(&self) -> Result<Option<Release>, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(RELEASES)?;
            match table.last()? {
                Some((key, value)) => Ok(Some(decode("releases", key.value(), value.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    /// Every release, oldest first.
    pub async fn releases(&self) -> Result<Vec<Release>, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(RELEASES)?;
            table
                .iter()?
                .map(|entry| {
                    let (key, value) = entry?;
                    decode("releases", key.value(), value.value())
                })
                .collect()
        })
        .await
    }

    /// Records a release with the next id.
    pub async fn add_release(
        &self,
        job_id: String,
        caller: String,
        created_at_unix_ms: i64,
        pins: Pins,
    ) -> Result<Release, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let release = {
                let mut table = tx.open_table(RELEASES)?;
                let id = match table.last()? {
                    Some((key, _)) => key.value() + 1,
                    None => 1,
                };
                let release = Release {
                    id,
                    job_id,
                    caller,
                    created_at_unix_ms,
                    pins,
                };
                table.insert(id, encode(&release).as_slice())?;
                release
            };
            tx.commit()?;
            Ok(release)
        })
        .await
    }

    pub async fn job(&self, id: String) -> Result<Option<JobRecord>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(JOBS)?;
            read(&table, "jobs", &id)
        })
        .await
    }
}

/// Updates what a host runs from its job report; false when the report says nothing new.
fn apply_results(
    running: &mut Vec<RunningContainer>,
    host: &brine_common::outcome::HostReport,
) -> bool {
    let mut changed = false;
    for result in &host.containers {
        match result.action {
            ContainerAction::Removed => {
                running.retain(|c| c.name != result.name);
                changed = true;
            }
            ContainerAction::Kept | ContainerAction::Created | ContainerAction::Replaced => {
                let Some(role) = result.role.clone() else {
                    continue;
                };
                let entry = RunningContainer {
                    name: result.name.clone(),
                    role,
                    image: result.image.clone(),
                    image_digest: result.image_digest.clone(),
                    state: "running".into(),
                    container_id: running
                        .iter()
                        .find(|c| c.name == result.name && result.action == ContainerAction::Kept)
                        .map(|c| c.container_id.clone())
                        .unwrap_or_default(),
                };
                running.retain(|c| c.name != result.name);
                running.push(entry);
                changed = true;
            }
            ContainerAction::Failed => {}
        }
    }
    running.sort_by(|a, b| a.name.cmp(&b.name));
    changed
}

#[cfg(test)]
mod tests {
    use brine_common::outcome::{ContainerResult, HostReport, HostStatus, JobId};

    use super::*;

    fn id(s: &str) -> MinionId {
        MinionId::new(s).unwrap()
    }

    fn hello_at(at_unix_ms: i64) -> HostHello {
        HostHello {
            at_unix_ms,
            ..HostHello::default()
        }
    }

    const KEEP_ALL: JobRetention = JobRetention {
        keep: usize::MAX,
        max_age: Duration::MAX,
    };

    fn cert(sha256: &str) -> SignedCertificate {
        SignedCertificate {
            sha256: sha256.into(),
            expires_unix_ms: 1_000,
        }
    }

    fn token(secret_sha256: &str, uses_left: Option<u32>) -> TokenRecord {
        TokenRecord {
            secret_sha256: secret_sha256.into(),
            created_at_unix_ms: 0,
            expires_at_unix_ms: 100,
            uses_left,
            uses: 0,
            labels: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
            replaces: None,
        }
    }

    /// Joins `who` with certificate `sha` through a fresh single-use token (made to replace
    /// `who` if `replacing`), as the enrolment service does.
    async fn join_with_new_token(
        store: &Store,
        who: &str,
        sha: &str,
        replacing: bool,
        approval: Approval,
    ) -> JoinOutcome {
        let secret_hash = brine_common::token::sha256_hex(format!("{who}/{sha}").as_bytes());
        let mut record = token(&secret_hash, Some(1));
        record.replaces = replacing.then(|| id(who));
        store.add_token(record).await.unwrap();
        store
            .join(JoinAttempt {
                secret_hash,
                id: id(who),
                certificate: cert(sha),
                now_unix_ms: 1,
                approval,
            })
            .await
            .unwrap()
    }

    /// Enrols a new host `who`, accepted, with certificate `sha`.
    async fn enrol(store: &Store, who: &str, sha: &str) {
        let outcome = join_with_new_token(store, who, sha, false, Approval::Accepted).await;
        assert!(
            matches!(outcome, JoinOutcome::Enrolled { .. }),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn minions_tokens_and_jobs_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = Store::open(&path).unwrap();
            enrol(&store, "web-1", "ab").await;
            let hello =
                |who: &str, cert: &str| store.record_hello(id(who), cert.into(), hello_at(5));
            assert_eq!(
                hello("web-1", "ab").await.unwrap(),
                CertificateCheck::Recorded
            );
            assert_eq!(
                hello("ghost", "ab").await.unwrap(),
                CertificateCheck::NotEnrolled
            );
            assert_eq!(
                hello("web-1", "old").await.unwrap(),
                CertificateCheck::CertificateReplaced
            );
            assert_eq!(
                store
                    .set_approval(id("web-1"), Approval::Revoked)
                    .await
                    .unwrap(),
                ApprovalChange::Changed
            );
            // A revoked host cannot be let back in without joining again.
            assert_eq!(
                store
                    .set_approval(id("web-1"), Approval::Accepted)
                    .await
                    .unwrap(),
                ApprovalChange::Refused(Approval::Revoked)
            );
            assert_eq!(
                hello("web-1", "ab").await.unwrap(),
                CertificateCheck::NotAdmitted(Approval::Revoked)
            );
            assert_eq!(
                store
                    .set_approval(id("ghost"), Approval::Revoked)
                    .await
                    .unwrap(),
                ApprovalChange::NotFound
            );
            // Enrolling again with a token made to replace it lifts the revocation, for the
            // new certificate only.
            assert!(matches!(
                join_with_new_token(&store, "web-1", "new", true, Approval::Accepted).await,
                JoinOutcome::Replaced { .. }
            ));
            assert_eq!(
                hello("web-1", "ab").await.unwrap(),
                CertificateCheck::CertificateReplaced
            );
            assert_eq!(
                hello("web-1", "new").await.unwrap(),
                CertificateCheck::Recorded
            );
            store
                .add_token(token(&"0d".repeat(32), None))
                .await
                .unwrap();
            let report = HostReport {
                minion_id: id("web-1"),
                status: HostStatus::Changed,
                containers: vec![ContainerResult {
                    name: "web".parse().unwrap(),
                    role: Some("web".parse().unwrap()),
                    action: ContainerAction::Created,
                    image: "app:1".into(),
                    image_digest: "app@sha256:1".into(),
                    error: None,
                    previous_restored: false,
                    needs_pull: false,
                }],
                error: None,
                duration_ms: 3,
                timings: Default::default(),
                reported_late: false,
            };
            let summary = JobSummary {
                job_id: JobId::new("j-1").unwrap(),
                hosts: vec![report],
                started_at_unix_ms: 1,
                finished_at_unix_ms: 2,
                resolve_ms: 0,
                cancelled_by: None,
            };
            store
                .record_job(
                    JobRecord {
                        summary,
                        target: String::new(),
                        caller: "admin".into(),
                        plan: false,
                        running: false,
                        targets: vec![id("web-1")],
                    },
                    KEEP_ALL,
                )
                .await
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let minions = store.minions().await.unwrap();
        assert_eq!(minions.len(), 1);
        assert_eq!(minions[0].last_seen_unix_ms, 5);
        assert_eq!(minions[0].running[0].image_digest, "app@sha256:1");
        assert_eq!(
            store.check_token("0d".repeat(32), 50).await.unwrap(),
            TokenCheck::Valid
        );
        assert_eq!(
            store.check_token("0d".repeat(32), 100).await.unwrap(),
            TokenCheck::Expired
        );
        assert_eq!(
            store.check_token("x".into(), 0).await.unwrap(),
            TokenCheck::Unknown
        );
        // The same public id with another secret is not the token.
        assert_eq!(
            store
                .check_token(format!("{}{}", "0d".repeat(6), "ff".repeat(26)), 0)
                .await
                .unwrap(),
            TokenCheck::Unknown
        );
        assert!(store.job("j-1".into()).await.unwrap().is_some());
        assert_eq!(store.jobs(10).await.unwrap().len(), 1);
        let first = store
            .add_release("j-1".into(), "admin".into(), 1, Pins::new())
            .await
            .unwrap();
        let second = store
            .add_release("j-2".into(), "admin".into(), 2, Pins::new())
            .await
            .unwrap();
        assert_eq!((first.id, second.id), (1, 2));
        let ids: Vec<u64> = store
            .releases()
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, [1, 2]);
    }

    #[tokio::test]
    async fn a_token_with_uses_is_used_up_and_a_revoked_one_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let hash = "ab".repeat(32);
        store.add_token(token(&hash, Some(2))).await.unwrap();
        let attempt = |who: &str| JoinAttempt {
            secret_hash: hash.clone(),
            id: id(who),
            certificate: cert(who),
            now_unix_ms: 1,
            approval: Approval::Accepted,
        };
        let JoinOutcome::Enrolled { labels, .. } = store.join(attempt("web-1")).await.unwrap()
        else {
            panic!("the first join enrols");
        };
        assert_eq!(labels["env"], "prod");
        // A refused join does not use the token up.
        assert_eq!(
            store.join(attempt("web-1")).await.unwrap(),
            JoinOutcome::Refused(JoinRefusal::AlreadyEnrolled)
        );
        assert!(matches!(
            store.join(attempt("web-2")).await.unwrap(),
            JoinOutcome::Enrolled { .. }
        ));
        assert_eq!(
            store.join(attempt("web-3")).await.unwrap(),
            JoinOutcome::Refused(JoinRefusal::Token(TokenCheck::UsedUp))
        );
        assert_eq!(
            store.check_token(hash.clone(), 1).await.unwrap(),
            TokenCheck::UsedUp
        );
        let listed = store.tokens().await.unwrap();
        assert_eq!(
            (listed[0].id.as_str(), listed[0].record.uses),
            ("abababababab", 2)
        );
        assert!(store.revoke_token("abababababab".into()).await.unwrap());
        assert_eq!(
            store.check_token(hash, 1).await.unwrap(),
            TokenCheck::Unknown
        );
        assert!(!store.revoke_token("abababababab".into()).await.unwrap());
    }

    #[tokio::test]
    async fn a_renewed_certificate_replaces_the_old_one_once_it_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let web = || id("web-1");
        enrol(&store, "web-1", "one").await;
        let renew = |caller: &str, new: &str| {
            store.renew_certificate(web(), caller.into(), cert(new), format!("pem of {new}"))
        };
        let hello = |cert: &str| store.record_hello(web(), cert.into(), hello_at(5));
        assert_eq!(
            renew("stranger", "x").await.unwrap(),
            Renewal::Refused(CertificateCheck::CertificateReplaced)
        );
        assert_eq!(renew("one", "two").await.unwrap(), Renewal::Issued);
        // The answer may have been lost: the old certificate still connects, and asking again
        // gets the same new certificate, never another one.
        assert_eq!(hello("one").await.unwrap(), CertificateCheck::Recorded);
        assert_eq!(
            renew("one", "three").await.unwrap(),
            Renewal::Reissued("pem of two".into())
        );
        // Once the newest is used, the one before is refused, for links and renewals alike.
        assert_eq!(hello("two").await.unwrap(), CertificateCheck::Recorded);
        assert_eq!(
            hello("one").await.unwrap(),
            CertificateCheck::CertificateReplaced
        );
        assert_eq!(
            renew("one", "four").await.unwrap(),
            Renewal::Refused(CertificateCheck::CertificateReplaced)
        );
        store.set_approval(web(), Approval::Revoked).await.unwrap();
        assert_eq!(
            renew("two", "five").await.unwrap(),
            Renewal::Refused(CertificateCheck::NotAdmitted(Approval::Revoked))
        );
        assert!(store.delete_minion(web()).await.unwrap());
        assert!(!store.delete_minion(web()).await.unwrap());
        assert_eq!(hello("two").await.unwrap(), CertificateCheck::NotEnrolled);
        assert_eq!(
            renew("two", "six").await.unwrap(),
            Renewal::Refused(CertificateCheck::NotEnrolled)
        );
    }

    #[tokio::test]
    async fn an_enrolled_id_is_taken_over_only_with_a_token_made_to_replace_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let hello = |cert: &str| store.record_hello(id("victim"), cert.into(), hello_at(5));
        enrol(&store, "victim", "real").await;
        for approval in [Approval::Accepted, Approval::Pending] {
            assert_eq!(
                join_with_new_token(&store, "victim", "thief", false, approval).await,
                JoinOutcome::Refused(JoinRefusal::AlreadyEnrolled)
            );
        }
        assert_eq!(hello("real").await.unwrap(), CertificateCheck::Recorded);
        assert_eq!(
            hello("thief").await.unwrap(),
            CertificateCheck::CertificateReplaced
        );

        // A replacing token is for its host only.
        let secret_hash = brine_common::token::sha256_hex(b"for web-9");
        let mut only_web_9 = token(&secret_hash, Some(1));
        only_web_9.replaces = Some(id("web-9"));
        store.add_token(only_web_9).await.unwrap();
        assert_eq!(
            store
                .join(JoinAttempt {
                    secret_hash,
                    id: id("victim"),
                    certificate: cert("thief"),
                    now_unix_ms: 1,
                    approval: Approval::Accepted,
                })
                .await
                .unwrap(),
            JoinOutcome::Refused(JoinRefusal::TokenForAnotherHost(id("web-9")))
        );

        // With one, the new certificate is the host's and the old one is refused at once.
        assert!(matches!(
            join_with_new_token(&store, "victim", "rebuilt", true, Approval::Accepted).await,
            JoinOutcome::Replaced { .. }
        ));
        assert_eq!(
            hello("real").await.unwrap(),
            CertificateCheck::CertificateReplaced
        );
        assert_eq!(hello("rebuilt").await.unwrap(), CertificateCheck::Recorded);
    }

    #[tokio::test]
    async fn a_pending_replacement_leaves_the_host_alone_until_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let hello = |cert: &str| store.record_hello(id("web-1"), cert.into(), hello_at(5));
        enrol(&store, "web-1", "old").await;
        assert!(matches!(
            join_with_new_token(&store, "web-1", "new", true, Approval::Pending).await,
            JoinOutcome::ReplacementPending { .. }
        ));
        assert_eq!(hello("old").await.unwrap(), CertificateCheck::Recorded);
        assert_eq!(
            hello("new").await.unwrap(),
            CertificateCheck::NotAdmitted(Approval::Pending)
        );
        let record = store.minion(id("web-1")).await.unwrap().unwrap();
        assert_eq!(
            (record.approval, record.certificate_sha256.as_str()),
            (Approval::Accepted, "old")
        );

        // Rejected: the machine is turned away, the host keeps going.
        assert_eq!(
            store
                .set_approval(id("web-1"), Approval::Rejected)
                .await
                .unwrap(),
            ApprovalChange::ReplacementRejected
        );
        assert_eq!(hello("old").await.unwrap(), CertificateCheck::Recorded);
        assert_eq!(
            hello("new").await.unwrap(),
            CertificateCheck::CertificateReplaced
        );

        // Accepted: the new machine is the host, the old certificate is refused.
        assert!(matches!(
            join_with_new_token(&store, "web-1", "newer", true, Approval::Pending).await,
            JoinOutcome::ReplacementPending { .. }
        ));
        assert_eq!(
            store
                .set_approval(id("web-1"), Approval::Accepted)
                .await
                .unwrap(),
            ApprovalChange::ReplacementAccepted
        );
        assert_eq!(hello("newer").await.unwrap(), CertificateCheck::Recorded);
        assert_eq!(
            hello("old").await.unwrap(),
            CertificateCheck::CertificateReplaced
        );
    }

    #[tokio::test]
    async fn host_events_keep_the_newest_and_go_with_their_host() {
        use brine_common::host::HostEventKind;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let event = |n: i64| HostEvent::new(n, HostEventKind::Repaired, format!("repair {n}"));
        assert!(
            !store
                .record_host_event(id("ghost"), event(0))
                .await
                .unwrap()
        );
        for host in ["web-1", "web-10"] {
            enrol(&store, host, host).await;
        }
        let total = i64::try_from(EVENTS_KEPT).unwrap() + 5;
        for n in 0..total {
            assert!(
                store
                    .record_host_event(id("web-1"), event(n))
                    .await
                    .unwrap()
            );
        }
        store
            .record_host_event(id("web-10"), event(-1))
            .await
            .unwrap();
        let events = store.host_events(id("web-1"), 1_000).await.unwrap();
        assert_eq!(events.len(), EVENTS_KEPT);
        assert_eq!(events[0].at_unix_ms, total - 1, "newest first");
        assert_eq!(events.last().unwrap().at_unix_ms, 5, "the oldest went");
        assert_eq!(store.host_events(id("web-1"), 3).await.unwrap().len(), 3);
        assert!(store.delete_minion(id("web-1")).await.unwrap());
        assert!(store.host_events(id("web-1"), 10).await.unwrap().is_empty());
        assert_eq!(store.host_events(id("web-10"), 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_job_left_running_is_interrupted_for_the_hosts_without_a_report() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let reported = HostReport {
            minion_id: id("web-1"),
            status: HostStatus::Changed,
            containers: vec![],
            error: None,
            duration_ms: 1,
            timings: Default::default(),
            reported_late: false,
        };
        let job = |job_id: &str, running: bool| JobRecord {
            summary: JobSummary {
                job_id: JobId::new(job_id).unwrap(),
                hosts: vec![reported.clone()],
                started_at_unix_ms: 1,
                finished_at_unix_ms: 0,
                resolve_ms: 0,
                cancelled_by: None,
            },
            target: String::new(),
            caller: "admin".into(),
            plan: false,
            running,
            targets: vec![id("web-1"), id("web-2")],
        };
        store.record_job_progress(job("j-1", true)).await.unwrap();
        store.record_job(job("j-2", false), KEEP_ALL).await.unwrap();
        let lock = LockRecord {
            holder: "admin".into(),
            message: "highstate".into(),
            acquired_at_unix_ms: 0,
            expires_at_unix_ms: i64::MAX,
            job_id: Some("j-1".into()),
        };
        assert!(store.try_lock(lock, 0).await.unwrap().is_ok());

        assert_eq!(store.interrupt_running_jobs(9).await.unwrap(), ["j-1"]);
        let interrupted = store.job("j-1".into()).await.unwrap().unwrap();
        assert!(!interrupted.running);
        assert_eq!(interrupted.summary.finished_at_unix_ms, 9);
        let statuses: Vec<HostStatus> =
            interrupted.summary.hosts.iter().map(|h| h.status).collect();
        assert_eq!(statuses, [HostStatus::Changed, HostStatus::Interrupted]);
        assert!(
            store.current_lock(0).await.unwrap().is_none(),
            "its lock was released"
        );
        let finished = store.job("j-2".into()).await.unwrap().unwrap();
        assert_eq!(
            finished.summary.hosts.len(),
            1,
            "a finished job is left alone"
        );
        assert!(store.interrupt_running_jobs(10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn job_history_keeps_the_newest_and_the_recent_but_never_a_running_job() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let job = |n: u32, finished: i64, running: bool| JobRecord {
            summary: JobSummary {
                job_id: JobId::new(format!("20260101T0000{n:02}-0000")).unwrap(),
                hosts: vec![],
                started_at_unix_ms: finished,
                finished_at_unix_ms: finished,
                resolve_ms: 0,
                cancelled_by: None,
            },
            target: String::new(),
            caller: "admin".into(),
            plan: false,
            running,
            targets: vec![],
        };
        let day = 24 * 3600 * 1000;
        let retention = JobRetention {
            keep: 3,
            max_age: Duration::from_secs(10 * 24 * 3600),
        };
        store.record_job_progress(job(0, 0, true)).await.unwrap();
        for n in 1..=5 {
            store
                .record_job(job(n, i64::from(n) * day, false), retention)
                .await
                .unwrap();
        }
        let kept = |jobs: Vec<JobRecord>| -> Vec<String> {
            jobs.iter().map(|j| j.summary.job_id.to_string()).collect()
        };
        assert_eq!(
            kept(store.jobs(100).await.unwrap()),
            [
                "20260101T000005-0000",
                "20260101T000004-0000",
                "20260101T000000-0000"
            ],
            "three: the newest, and the running one however old"
        );
        // Forty days on, only what finished within ten days stays.
        store
            .record_job(job(6, 40 * day, false), retention)
            .await
            .unwrap();
        assert_eq!(
            kept(store.jobs(100).await.unwrap()),
            ["20260101T000006-0000", "20260101T000000-0000"]
        );
    }

    #[tokio::test]
    async fn certificate_revocations_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = Store::open(&path).unwrap();
            store
                .revoke_certificates(CertRole::Ci, "gitlab".into(), 7)
                .await
                .unwrap();
            store
                .revoke_certificates(CertRole::Ci, "gitlab".into(), 9)
                .await
                .unwrap();
        }
        let revocations = Store::open(&path)
            .unwrap()
            .certificate_revocations()
            .await
            .unwrap();
        assert_eq!(
            revocations,
            [CertificateRevocation {
                role: CertRole::Ci,
                name: "gitlab".into(),
                revoked_at_unix_ms: 9
            }]
        );
    }

    /// Changes the database file as an older master, or damage, left it.
    fn write_raw(
        store: &Store,
        write: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    ) {
        store
            .db
            .with(|db| {
                let tx = db.begin_write()?;
                write(&tx)?;
                tx.commit()?;
                Ok(())
            })
            .unwrap();
    }

    /// A stored record as the master wrote it before records carried a format.
    fn without_format(bytes: &[u8]) -> Vec<u8> {
        let mut record: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(record["format"], 1, "written with its format");
        record.as_object_mut().unwrap().remove("format");
        serde_json::to_vec(&record).unwrap()
    }

    /// Rewrites every record of `table` without its format.
    fn strip_formats(
        tx: &redb::WriteTransaction,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<(), StoreError> {
        let mut table = tx.open_table(table)?;
        let records: Vec<(String, Vec<u8>)> = table
            .iter()?
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key.value().to_owned(), without_format(value.value())))
            })
            .collect::<Result<_, StoreError>>()?;
        for (key, record) in records {
            table.insert(key.as_str(), record.as_slice())?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn records_written_before_records_carried_a_format_still_read() {
        use brine_common::host::HostEventKind;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        enrol(&store, "web-1", "ab").await;
        store
            .record_host_event(
                id("web-1"),
                HostEvent::new(3, HostEventKind::Repaired, "repaired"),
            )
            .await
            .unwrap();
        store
            .add_release("j-1".into(), "admin".into(), 1, Pins::new())
            .await
            .unwrap();
        let job = JobRecord {
            summary: JobSummary {
                job_id: JobId::new("j-1").unwrap(),
                hosts: vec![],
                started_at_unix_ms: 1,
                finished_at_unix_ms: 2,
                resolve_ms: 0,
                cancelled_by: None,
            },
            target: String::new(),
            caller: "admin".into(),
            plan: false,
            running: false,
            targets: vec![id("web-1")],
        };
        store.record_job(job, KEEP_ALL).await.unwrap();
        let lock = LockRecord {
            holder: "admin".into(),
            message: "by hand".into(),
            acquired_at_unix_ms: 0,
            expires_at_unix_ms: 100,
            job_id: None,
        };
        store.try_lock(lock, 0).await.unwrap().unwrap();
        store
            .revoke_certificates(CertRole::Ci, "gitlab".into(), 9)
            .await
            .unwrap();
        let everything = || async {
            (
                store.minions().await.unwrap(),
                store.tokens().await.unwrap(),
                store.host_events(id("web-1"), 10).await.unwrap(),
                store.releases().await.unwrap(),
                store.jobs(10).await.unwrap(),
                store.current_lock(0).await.unwrap(),
                store.certificate_revocations().await.unwrap(),
            )
        };
        let written = everything().await;

        write_raw(&store, |tx| {
            for table in [MINIONS, TOKENS, JOBS, LOCK] {
                strip_formats(tx, table)?;
            }
            let mut releases = tx.open_table(RELEASES)?;
            let release = without_format(releases.get(1)?.unwrap().value());
            releases.insert(1, release.as_slice())?;
            let mut events = tx.open_table(HOST_EVENTS)?;
            let event = without_format(events.get(("web-1", 0))?.unwrap().value());
            events.insert(("web-1", 0), event.as_slice())?;
            // A revocation was the moment alone.
            tx.open_table(REVOCATIONS)?
                .insert("ci/gitlab", b"9".as_slice())?;
            Ok(())
        });
        assert_eq!(everything().await, written);
    }

    #[tokio::test]
    async fn an_unreadable_record_is_corrupt_naming_its_table_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let names = |err: StoreError| match err {
            StoreError::Corrupt { table, key, .. } => (table, key),
            other => panic!("not Corrupt: {other:?}"),
        };
        write_raw(&store, |tx| {
            let newer = br#"{"format":2,"id":"web-1"}"#.as_slice();
            tx.open_table(MINIONS)?.insert("web-1", newer)?;
            tx.open_table(JOBS)?
                .insert("j-9", b"{\"summary\":".as_slice())?;
            tx.open_table(RELEASES)?.insert(4, b"[]".as_slice())?;
            tx.open_table(HOST_EVENTS)?
                .insert(("web-1", 7), br#"{"format":1}"#.as_slice())?;
            tx.open_table(REVOCATIONS)?
                .insert("ci/gitlab", br#"{"format":1}"#.as_slice())?;
            Ok(())
        });
        let web_1 = ("minions", "web-1".to_owned());
        assert_eq!(names(store.minion(id("web-1")).await.unwrap_err()), web_1);
        assert_eq!(names(store.minions().await.unwrap_err()), web_1);
        assert_eq!(
            names(store.job("j-9".into()).await.unwrap_err()),
            ("jobs", "j-9".to_owned())
        );
        assert_eq!(
            names(store.releases().await.unwrap_err()),
            ("releases", "4".to_owned())
        );
        assert_eq!(
            names(store.host_events(id("web-1"), 10).await.unwrap_err()),
            ("host_events", "web-1/7".to_owned())
        );
        let err = store.certificate_revocations().await.unwrap_err();
        assert!(err.to_string().contains(r#""ci/gitlab""#), "{err}");
        assert_eq!(
            names(err),
            ("certificate_revocations", "ci/gitlab".to_owned())
        );
    }

    #[tokio::test]
    async fn the_lock_refuses_a_second_holder_until_released_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let lock = |holder: &str, job: Option<&str>, expires| LockRecord {
            holder: holder.into(),
            message: "deploying".into(),
            acquired_at_unix_ms: 0,
            expires_at_unix_ms: expires,
            job_id: job.map(Into::into),
        };
        assert_eq!(
            store.try_lock(lock("a", Some("j1"), 100), 0).await.unwrap(),
            Ok(())
        );
        let held = store
            .try_lock(lock("b", Some("j2"), 100), 50)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(held.holder, "a");
        // Another job cannot release it; its own can.
        assert!(
            store
                .release_lock(Some("j2".into()))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .release_lock(Some("j1".into()))
                .await
                .unwrap()
                .is_some()
        );
        assert!(store.current_lock(0).await.unwrap().is_none());
        // An expired lock is taken over.
        store
            .try_lock(lock("a", None, 100), 0)
            .await
            .unwrap()
            .unwrap();
        assert!(store.current_lock(100).await.unwrap().is_none());
        assert_eq!(
            store.try_lock(lock("b", None, 500), 100).await.unwrap(),
            Ok(())
        );
        assert_eq!(store.current_lock(100).await.unwrap().unwrap().holder, "b");
    }
}
