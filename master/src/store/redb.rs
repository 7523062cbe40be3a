//! The store in an embedded redb database: one file in the data directory.
//!
//! redb calls block, so every call runs on tokio's blocking pool, and each is one redb
//! transaction. `database.rs` closes the file after an I/O failure and opens it again on the
//! next call, so a full disk, once freed, needs no restart.
//!
//! A module per table (`minions`, `tokens`, `jobs`, `lock`, `releases`, `revocations`,
//! `events`) holds the table's definition and the transactions of the calls about it; a call
//! that spans tables (a join uses a token and writes a host) lives in the module of the table
//! it is about and reaches the others through their modules. What each call decides is not
//! here: the rules are in the store's modules of the same names, one level up, shared by every
//! implementation.

use std::path::Path;
use std::sync::Arc;

use brine_common::host::HostEvent;
use brine_common::identity::CertRole;
use brine_common::names::MinionId;
use brine_common::outcome::{HostReport, JobId};
use redb::{Database, ReadableTable};
use serde::de::DeserializeOwned;

use super::record::decode;
use super::{
    Approval, ApprovalChange, CertificateCheck, CertificateRevocation, HostHello, JobRecord,
    JobRetention, JoinAttempt, JoinOutcome, ListedToken, LockRecord, MinionRecord, Renewal,
    StoreError, TokenCheck, TokenRecord,
};
use crate::pki::SignedCertificate;
use crate::release::{Pins, Release};

mod database;
mod events;
mod jobs;
mod lock;
mod minions;
mod releases;
mod revocations;
#[cfg(test)]
mod tests;
mod tokens;

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
            tx.open_table(minions::TABLE)?;
            tx.open_table(tokens::TABLE)?;
            tx.open_table(jobs::TABLE)?;
            tx.open_table(lock::TABLE)?;
            tx.open_table(releases::TABLE)?;
            tx.open_table(revocations::TABLE)?;
            tx.open_table(events::TABLE)?;
            tx.commit()?;
            Ok(())
        })?;
        Ok(Self { db: Arc::new(db) })
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

    /// How many bytes are free for the master on the filesystem that holds the store.
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

    /// Enrols a host with a join token, in one transaction: the token is checked and used, and
    /// an id that is enrolled already is taken over only with a token made to replace it, never
    /// by a join with any other token.
    pub async fn join(&self, attempt: JoinAttempt) -> Result<JoinOutcome, StoreError> {
        self.blocking(move |db| minions::join(db, attempt)).await
    }

    /// Records what a host said when it connected, if the certificate it connected with is the
    /// newest issued to it (or the one it renewed last) and the host is accepted.
    pub async fn record_hello(
        &self,
        id: MinionId,
        certificate_sha256: String,
        hello: HostHello,
    ) -> Result<CertificateCheck, StoreError> {
        self.blocking(move |db| minions::record_hello(db, id, certificate_sha256, hello))
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
            minions::renew_certificate(db, id, caller_sha256, renewed, renewed_pem)
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
        self.blocking(move |db| minions::certificate_check(db, id, certificate_sha256))
            .await
    }

    /// Sets whether a host's link is admitted. Only a waiting host can be accepted: a rejected
    /// or revoked one must join again, with a new certificate.
    pub async fn set_approval(
        &self,
        id: MinionId,
        approval: Approval,
    ) -> Result<ApprovalChange, StoreError> {
        self.blocking(move |db| minions::set_approval(db, id, approval))
            .await
    }

    /// Forgets a host and its events. Returns false for an unknown host.
    pub async fn delete_minion(&self, id: MinionId) -> Result<bool, StoreError> {
        self.blocking(move |db| minions::delete(db, id)).await
    }

    /// One enrolled host.
    pub async fn minion(&self, id: MinionId) -> Result<Option<MinionRecord>, StoreError> {
        self.blocking(move |db| minions::minion(db, id)).await
    }

    /// Up to `limit` enrolled hosts after `after` (from the first without it), sorted by id.
    pub async fn minions_after(
        &self,
        after: Option<MinionId>,
        limit: usize,
    ) -> Result<Vec<MinionRecord>, StoreError> {
        self.blocking(move |db| minions::minions_after(db, after, limit))
            .await
    }

    /// Every enrolled host, sorted by id.
    pub async fn minions(&self) -> Result<Vec<MinionRecord>, StoreError> {
        self.blocking(minions::minions).await
    }

    /// Records an event of an enrolled host, keeping its newest [`EVENTS_KEPT`]. Returns false
    /// (and records nothing) for an unknown host.
    pub async fn record_host_event(
        &self,
        id: MinionId,
        event: HostEvent,
    ) -> Result<bool, StoreError> {
        self.blocking(move |db| events::record(db, id, event)).await
    }

    /// A host's newest `limit` events, newest first.
    pub async fn host_events(
        &self,
        id: MinionId,
        limit: usize,
    ) -> Result<Vec<HostEvent>, StoreError> {
        self.blocking(move |db| events::newest(db, id, limit)).await
    }

    /// Stores a new join token under its public id.
    pub async fn add_token(&self, record: TokenRecord) -> Result<(), StoreError> {
        self.blocking(move |db| tokens::add(db, record)).await
    }

    /// Checks a join token by the hash of its secret.
    pub async fn check_token(
        &self,
        secret_hash: String,
        now_unix_ms: i64,
    ) -> Result<TokenCheck, StoreError> {
        self.blocking(move |db| tokens::check(db, secret_hash, now_unix_ms))
            .await
    }

    /// Every join token, newest first, by public id.
    pub async fn tokens(&self) -> Result<Vec<ListedToken>, StoreError> {
        self.blocking(tokens::list).await
    }

    /// Deletes the token whose public id is `id`; returns whether there was one.
    pub async fn revoke_token(&self, id: String) -> Result<bool, StoreError> {
        self.blocking(move |db| tokens::revoke(db, id)).await
    }

    /// Stores a finished job and what each host now runs, in one transaction.
    pub async fn record_job(
        &self,
        job: JobRecord,
        retention: JobRetention,
    ) -> Result<(), StoreError> {
        self.blocking(move |db| jobs::record(db, job, retention))
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
        self.blocking(move |db| jobs::record_late_report(db, job_id, report))
            .await
    }

    /// Records how far a running job got (it must have `running` set); the final record
    /// replaces it through [`Store::record_job`].
    pub async fn record_job_progress(&self, job: JobRecord) -> Result<(), StoreError> {
        self.blocking(move |db| jobs::record_progress(db, job))
            .await
    }

    /// Finishes the jobs a stopped master left running: every target without a recorded report
    /// is `interrupted`, and the fleet lock such a job held is released. Returns their ids.
    pub async fn interrupt_running_jobs(
        &self,
        now_unix_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.blocking(move |db| jobs::interrupt_running(db, now_unix_ms))
            .await
    }

    /// The newest `limit` jobs, newest first (job ids sort by start time).
    pub async fn jobs(&self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        self.blocking(move |db| jobs::newest(db, limit)).await
    }

    pub async fn job(&self, id: String) -> Result<Option<JobRecord>, StoreError> {
        self.blocking(move |db| jobs::job(db, id)).await
    }

    /// Takes the fleet lock unless someone holds it; an expired lock is taken over. Returns the
    /// lock in force when it is held by someone else.
    pub async fn try_lock(
        &self,
        lock: LockRecord,
        now_unix_ms: i64,
    ) -> Result<Result<(), LockRecord>, StoreError> {
        self.blocking(move |db| lock::try_lock(db, lock, now_unix_ms))
            .await
    }

    /// The lock in force, if any (an expired lock is none).
    pub async fn current_lock(&self, now_unix_ms: i64) -> Result<Option<LockRecord>, StoreError> {
        self.blocking(move |db| lock::current(db, now_unix_ms))
            .await
    }

    /// Releases the lock: any lock when `job_id` is `None`, else only the one that job holds.
    /// Returns what was released.
    pub async fn release_lock(
        &self,
        job_id: Option<String>,
    ) -> Result<Option<LockRecord>, StoreError> {
        self.blocking(move |db| lock::release(db, job_id)).await
    }

    /// Records a release with the next id.
    pub async fn add_release(
        &self,
        job_id: String,
        caller: String,
        created_at_unix_ms: i64,
        pins: Pins,
    ) -> Result<Release, StoreError> {
        self.blocking(move |db| releases::add(db, job_id, caller, created_at_unix_ms, pins))
            .await
    }

    /// The newest release, if any.
    pub async fn latest_release(&self) -> Result<Option<Release>, StoreError> {
        self.blocking(releases::latest).await
    }

    /// Every release, oldest first.
    pub async fn releases(&self) -> Result<Vec<Release>, StoreError> {
        self.blocking(releases::all).await
    }

    /// Refuses every `role` certificate for `name` issued up to `now_unix_ms`.
    pub async fn revoke_certificates(
        &self,
        role: CertRole,
        name: String,
        now_unix_ms: i64,
    ) -> Result<(), StoreError> {
        self.blocking(move |db| revocations::revoke(db, role, name, now_unix_ms))
            .await
    }

    /// Every operator and CI certificate revocation.
    pub async fn certificate_revocations(&self) -> Result<Vec<CertificateRevocation>, StoreError> {
        self.blocking(revocations::all).await
    }
}
