//! The master's embedded, transactional store (redb): enrolled minions, join tokens and jobs.
//!
//! Records are JSON so they can grow fields without migrations. Every write commits before the
//! caller is answered. redb calls block, so every call runs on tokio's blocking pool.

use std::path::Path;
use std::sync::Arc;

use brine_common::host::{Facts, RunningContainer};
use brine_common::names::MinionId;
use brine_common::outcome::{ContainerAction, JobSummary};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;

use crate::release::{Pins, Release};
use serde::{Deserialize, Serialize};

const MINIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("minions");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("join_tokens");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const LOCK: TableDefinition<&str, &[u8]> = TableDefinition::new("fleet_lock");
const RELEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("releases");
/// The fleet has one lock, under this key.
const LOCK_KEY: &str = "fleet";

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Database(#[from] redb::Error),
    #[error("store: a {table} record is unreadable: {message}")]
    Corrupt {
        table: &'static str,
        message: String,
    },
    #[error("store: the blocking task failed: {0}")]
    Task(String),
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
    /// SHA-256 of its current certificate (DER), hex.
    pub certificate_sha256: String,
    /// 0 until it first connects.
    pub last_seen_unix_ms: i64,
    pub facts: Facts,
    pub running: Vec<RunningContainer>,
    /// Whether its link is admitted.
    #[serde(default)]
    pub approval: Approval,
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

/// What the store says of a host that connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloCheck {
    Recorded,
    NotEnrolled,
    /// Pending, rejected or revoked.
    NotAdmitted(Approval),
    /// The host enrolled again since this certificate was issued.
    CertificateReplaced,
}

/// A join token; the store keys it by the hash of its secret and never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub created_at_unix_ms: i64,
    pub expires_at_unix_ms: i64,
    /// How many more hosts may join with it; `None`: any number until it expires.
    #[serde(default)]
    pub uses_left: Option<u32>,
    /// How many hosts joined with it.
    #[serde(default)]
    pub uses: u32,
}

/// A join token as listed: its public id (the start of its secret's hash) and its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedToken {
    pub id: String,
    pub record: TokenRecord,
}

/// How many hex digits of a token's secret hash identify it in listings.
const TOKEN_ID_LEN: usize = 12;

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
    db: Arc<Database>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Corrupt {
        table,
        message: err.to_string(),
    })
}

/// Reads and decodes the record under `key` of `table` (named `name` in errors), if any.
fn read<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &'static str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match table.get(key)? {
        Some(bytes) => Ok(Some(decode(name, bytes.value())?)),
        None => Ok(None),
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store records always serialize")
}

impl Store {
    /// Opens (or creates) the store and its tables. Blocking: call it before serving.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(MINIONS)?;
        tx.open_table(TOKENS)?;
        tx.open_table(JOBS)?;
        tx.open_table(LOCK)?;
        tx.open_table(RELEASES)?;
        tx.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|err| StoreError::Task(err.to_string()))?
    }

    /// Records a newly enrolled host, or a host that enrolled again with a new certificate.
    pub async fn enrol_minion(
        &self,
        id: MinionId,
        certificate_sha256: String,
        now_unix_ms: i64,
        approval: Approval,
    ) -> Result<(), StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            {
                let mut table = tx.open_table(MINIONS)?;
                let record = MinionRecord {
                    id: id.clone(),
                    enrolled_at_unix_ms: now_unix_ms,
                    certificate_sha256,
                    last_seen_unix_ms: 0,
                    facts: Facts::default(),
                    running: vec![],
                    approval,
                };
                table.insert(id.as_str(), encode(&record).as_slice())?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Records what a host said when it connected, if the certificate it connected with is the
    /// one it enrolled with last and is not revoked.
    pub async fn record_hello(
        &self,
        id: MinionId,
        certificate_sha256: String,
        facts: Facts,
        running: Vec<RunningContainer>,
        now_unix_ms: i64,
    ) -> Result<HelloCheck, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let check = {
                let mut table = tx.open_table(MINIONS)?;
                let existing = read::<MinionRecord>(&table, "minions", id.as_str())?;
                match existing {
                    None => HelloCheck::NotEnrolled,
                    Some(record) if record.approval != Approval::Accepted => {
                        HelloCheck::NotAdmitted(record.approval)
                    }
                    Some(record) if record.certificate_sha256 != certificate_sha256 => {
                        HelloCheck::CertificateReplaced
                    }
                    Some(mut record) => {
                        record.facts = facts;
                        record.running = running;
                        record.last_seen_unix_ms = now_unix_ms;
                        table.insert(id.as_str(), encode(&record).as_slice())?;
                        HelloCheck::Recorded
                    }
                }
            };
            tx.commit()?;
            Ok(check)
        })
        .await
    }

    /// Sets whether a host's link is admitted. Returns false for an unknown host.
    pub async fn set_approval(&self, id: MinionId, approval: Approval) -> Result<bool, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let found = {
                let mut table = tx.open_table(MINIONS)?;
                let existing = read::<MinionRecord>(&table, "minions", id.as_str())?;
                match existing {
                    Some(mut record) => {
                        record.approval = approval;
                        table.insert(id.as_str(), encode(&record).as_slice())?;
                        true
                    }
                    None => false,
                }
            };
            tx.commit()?;
            Ok(found)
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
                    let (_, value) = entry?;
                    decode("minions", value.value())
                })
                .collect()
        })
        .await
    }

    pub async fn add_token(
        &self,
        secret_hash: String,
        record: TokenRecord,
    ) -> Result<(), StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            tx.open_table(TOKENS)?
                .insert(secret_hash.as_str(), encode(&record).as_slice())?;
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
            Ok(read::<TokenRecord>(&table, "join_tokens", &secret_hash)?
                .map_or(TokenCheck::Unknown, |record| record.check(now_unix_ms)))
        })
        .await
    }

    /// Uses a join token for one host, if it is still valid, in one transaction, so two hosts
    /// cannot both take its last use.
    pub async fn consume_token(
        &self,
        secret_hash: String,
        now_unix_ms: i64,
    ) -> Result<TokenCheck, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let check = {
                let mut table = tx.open_table(TOKENS)?;
                let record = read::<TokenRecord>(&table, "join_tokens", secret_hash.as_str())?;
                match record {
                    None => TokenCheck::Unknown,
                    Some(mut record) => {
                        let check = record.check(now_unix_ms);
                        if check == TokenCheck::Valid {
                            record.uses = record.uses.saturating_add(1);
                            record.uses_left = record.uses_left.map(|n| n - 1);
                            table.insert(secret_hash.as_str(), encode(&record).as_slice())?;
                        }
                        check
                    }
                }
            };
            tx.commit()?;
            Ok(check)
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
                        id: key.value().chars().take(TOKEN_ID_LEN).collect(),
                        record: decode("join_tokens", value.value())?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            tokens.sort_by_key(|t| std::cmp::Reverse(t.record.created_at_unix_ms));
            Ok(tokens)
        })
        .await
    }

    /// Deletes the tokens whose public id is `id`; returns how many.
    pub async fn revoke_token(&self, id: String) -> Result<usize, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let removed = {
                let mut table = tx.open_table(TOKENS)?;
                let keys: Vec<String> = table
                    .iter()?
                    .map(|entry| entry.map(|(key, _)| key.value().to_owned()))
                    .filter(|key| {
                        key.as_ref()
                            .is_ok_and(|k| k.get(..TOKEN_ID_LEN) == Some(id.as_str()))
                    })
                    .collect::<Result<_, _>>()?;
                for key in &keys {
                    table.remove(key.as_str())?;
                }
                keys.len()
            };
            tx.commit()?;
            Ok(removed)
        })
        .await
    }

    /// Stores a finished job and what each host now runs, in one transaction.
    pub async fn record_job(&self, job: JobRecord) -> Result<(), StoreError> {
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
                tx.open_table(JOBS)?
                    .insert(job.summary.job_id.as_str(), encode(&job).as_slice())?;
            }
            tx.commit()?;
            Ok(())
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
                    let (_, value) = entry?;
                    decode("jobs", value.value())
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
                Some((_, value)) => Ok(Some(decode("releases", value.value())?)),
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
                    let (_, value) = entry?;
                    decode("releases", value.value())
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

    #[tokio::test]
    async fn minions_tokens_and_jobs_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = Store::open(&path).unwrap();
            store
                .enrol_minion(id("web-1"), "ab".into(), 1, Approval::Accepted)
                .await
                .unwrap();
            let hello = |who: &str, cert: &str| {
                store.record_hello(id(who), cert.into(), Facts::default(), vec![], 5)
            };
            assert_eq!(hello("web-1", "ab").await.unwrap(), HelloCheck::Recorded);
            assert_eq!(hello("ghost", "ab").await.unwrap(), HelloCheck::NotEnrolled);
            assert_eq!(
                hello("web-1", "old").await.unwrap(),
                HelloCheck::CertificateReplaced
            );
            assert!(
                store
                    .set_approval(id("web-1"), Approval::Revoked)
                    .await
                    .unwrap()
            );
            assert_eq!(
                hello("web-1", "ab").await.unwrap(),
                HelloCheck::NotAdmitted(Approval::Revoked)
            );
            assert!(
                !store
                    .set_approval(id("ghost"), Approval::Revoked)
                    .await
                    .unwrap()
            );
            // Enrolling again lifts the revocation, for the new certificate only.
            store
                .enrol_minion(id("web-1"), "new".into(), 6, Approval::Accepted)
                .await
                .unwrap();
            assert_eq!(
                hello("web-1", "ab").await.unwrap(),
                HelloCheck::CertificateReplaced
            );
            assert_eq!(hello("web-1", "new").await.unwrap(), HelloCheck::Recorded);
            store
                .add_token(
                    "h".into(),
                    TokenRecord {
                        created_at_unix_ms: 0,
                        expires_at_unix_ms: 100,
                        uses_left: None,
                        uses: 0,
                    },
                )
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
            };
            let summary = JobSummary {
                job_id: JobId::new("j-1").unwrap(),
                hosts: vec![report],
                started_at_unix_ms: 1,
                finished_at_unix_ms: 2,
                resolve_ms: 0,
            };
            store
                .record_job(JobRecord {
                    summary,
                    target: String::new(),
                    caller: "admin".into(),
                    plan: false,
                })
                .await
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let minions = store.minions().await.unwrap();
        assert_eq!(minions.len(), 1);
        assert_eq!(minions[0].last_seen_unix_ms, 5);
        assert_eq!(minions[0].running[0].image_digest, "app@sha256:1");
        assert_eq!(
            store.check_token("h".into(), 50).await.unwrap(),
            TokenCheck::Valid
        );
        assert_eq!(
            store.check_token("h".into(), 100).await.unwrap(),
            TokenCheck::Expired
        );
        assert_eq!(
            store.check_token("x".into(), 0).await.unwrap(),
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
        let record = TokenRecord {
            created_at_unix_ms: 0,
            expires_at_unix_ms: 100,
            uses_left: Some(2),
            uses: 0,
        };
        let hash = "ab".repeat(32);
        store.add_token(hash.clone(), record).await.unwrap();
        assert_eq!(
            store.consume_token(hash.clone(), 1).await.unwrap(),
            TokenCheck::Valid
        );
        assert_eq!(
            store.consume_token(hash.clone(), 1).await.unwrap(),
            TokenCheck::Valid
        );
        assert_eq!(
            store.consume_token(hash.clone(), 1).await.unwrap(),
            TokenCheck::UsedUp
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
        assert_eq!(store.revoke_token("abababababab".into()).await.unwrap(), 1);
        assert_eq!(
            store.check_token(hash, 1).await.unwrap(),
            TokenCheck::Unknown
        );
        assert_eq!(store.revoke_token("abababababab".into()).await.unwrap(), 0);
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
