//! The store in an embedded redb database: one file in the data directory.
//!
//! redb calls block, so every call runs on tokio's blocking pool, and each is one redb
//! transaction. `database.rs` closes the file after an I/O failure and opens it again on the
//! next call, so a full disk, once freed, needs no restart.
//!
//! A module per table (`minions`, `tokens`, `jobs`, `lock`, `releases`, `revocations`,
//! `events`, `hook_failures`) holds the table's definition and the transactions of the calls about it; a call
//! that spans tables (a join uses a token and writes a host) lives in the module of the table
//! it is about and reaches the others through their modules. What each call decides is not
//! here: the rules are in the store's modules of the same names, one level up, shared by every
//! implementation.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use brine_common::fleet_event::HookFailure;
use brine_common::host::HostEvent;
use brine_common::identity::CertRole;
use brine_common::names::{MinionId, SecretName};
use brine_common::outcome::{HostReport, JobId};
use redb::{Database, ReadableTable};
use serde::de::DeserializeOwned;

use super::record::decode;
use super::{
    Approval, ApprovalChange, CertificateCheck, CertificateRevocation, FleetClaim, HostChanges,
    HostHello, JobOwner, JobPlanRecord, JobRecord, JobRetention, JoinAttempt, JoinOutcome, Lease,
    LinkChanges, ListedToken, LockRecord, MasterAnnouncement, MinionRecord, NewRoles, Relayed,
    RelayedMessages, ReleasedJobs, Renewal, RolesApplied, RolesVersion, SecretRecord, Store,
    StoreError, TokenCheck, TokenRecord,
};
use crate::pki::SignedCertificate;
use crate::release::{Pins, Release};

mod database;
mod events;
mod fleet;
mod hook_failures;
mod jobs;
mod lock;
mod masters;
mod minions;
mod releases;
mod revocations;
mod roles;
mod secrets;
#[cfg(test)]
mod tests;
mod tokens;

/// How often a hello's commit is flushed to disk; those between are not (see
/// `minions::record_hello`), so a fleet reconnecting at once costs a flush a second, not one
/// per host.
const HELLO_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The store in a redb database file.
pub(super) struct RedbStore {
    db: Arc<database::Reopening>,
    /// When a hello's commit was last flushed.
    hello_flushed: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

/// redb's errors as callers see them: a failure to read or write the file (which closes it, see
/// `database.rs`) told apart from any other.
impl From<redb::Error> for StoreError {
    fn from(err: redb::Error) -> Self {
        match err {
            redb::Error::Io(err) => StoreError::Io(err),
            // The database is out of use after an I/O failure, until it is opened again.
            redb::Error::PreviousIo | redb::Error::DatabaseClosed => {
                StoreError::Closed(err.to_string())
            }
            other => StoreError::Backend(other.to_string()),
        }
    }
}

macro_rules! from_redb {
    ($($ty:ty),*) => {$(
        impl From<$ty> for StoreError {
            fn from(err: $ty) -> Self {
                redb::Error::from(err).into()
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

impl RedbStore {
    /// Opens (or creates) the store and its tables. Blocking: call it before serving.
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
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
            tx.open_table(hook_failures::TABLE)?;
            tx.open_table(fleet::TABLE)?;
            tx.open_table(roles::TABLE)?;
            tx.open_table(masters::TABLE)?;
            tx.open_table(secrets::TABLE)?;
            tx.commit()?;
            Ok(())
        })?;
        Ok(Self {
            db: Arc::new(db),
            hello_flushed: Mutex::default(),
        })
    }

    /// Whether the next hello's commit is to be flushed, [`HELLO_FLUSH_INTERVAL`] after the
    /// last one was.
    fn hello_flush_due(&self) -> bool {
        let mut flushed = self
            .hello_flushed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if flushed.is_some_and(|at| now.duration_since(at) < HELLO_FLUSH_INTERVAL) {
            return false;
        }
        *flushed = Some(now);
        true
    }

    /// Runs `work` on the database, on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.with(work))
            .await
            .map_err(|err| StoreError::Task(err.to_string()))?
    }
}

#[async_trait::async_trait]
impl Store for RedbStore {
    async fn available_bytes(&self) -> Result<u64, StoreError> {
        let path = self.db.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let stats = rustix::fs::statvfs(&path)
                .map_err(|err| StoreError::Io(std::io::Error::from(err)))?;
            Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
        })
        .await
        .map_err(|err| StoreError::Task(err.to_string()))?
    }

    async fn claim_fleet(&self, ca_sha256: String) -> Result<FleetClaim, StoreError> {
        self.blocking(move |db| fleet::claim(db, &ca_sha256)).await
    }

    async fn join(&self, attempt: JoinAttempt) -> Result<JoinOutcome, StoreError> {
        self.blocking(move |db| minions::join(db, attempt)).await
    }

    async fn record_hello(
        &self,
        id: MinionId,
        certificate_sha256: String,
        hello: HostHello,
    ) -> Result<CertificateCheck, StoreError> {
        let durable = self.hello_flush_due();
        self.blocking(move |db| minions::record_hello(db, id, certificate_sha256, hello, durable))
            .await
    }

    async fn renew_certificate(
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

    async fn certificate_check(
        &self,
        id: MinionId,
        certificate_sha256: String,
    ) -> Result<CertificateCheck, StoreError> {
        self.blocking(move |db| minions::certificate_check(db, id, certificate_sha256))
            .await
    }

    async fn set_approval(
        &self,
        id: MinionId,
        approval: Approval,
    ) -> Result<ApprovalChange, StoreError> {
        self.blocking(move |db| minions::set_approval(db, id, approval))
            .await
    }

    async fn follow_host_changes(&self) -> Result<HostChanges, StoreError> {
        // The file is this master's alone: it sees its own changes as it makes them.
        Ok(Box::pin(futures::stream::pending()))
    }

    async fn record_link(&self, _host: MinionId, _master: String) -> Result<(), StoreError> {
        Ok(())
    }

    async fn forget_link(&self, _host: MinionId, _master: String) -> Result<(), StoreError> {
        Ok(())
    }

    async fn forget_links_of(&self, _master: String) -> Result<(), StoreError> {
        Ok(())
    }

    async fn follow_links(&self) -> Result<LinkChanges, StoreError> {
        // Every link is this master's own.
        Ok(Box::pin(futures::stream::pending()))
    }

    async fn relay(&self, to: String, _message: Relayed) -> Result<(), StoreError> {
        Err(StoreError::Backend(format!(
            "no message can reach master {to}: a master alone with its store has no other"
        )))
    }

    async fn follow_relayed(&self, _master: String) -> Result<RelayedMessages, StoreError> {
        Ok(Box::pin(futures::stream::pending()))
    }

    async fn grant_lease(&self, _ttl: Duration) -> Result<Box<dyn Lease>, StoreError> {
        Err(alone("holds no lease"))
    }

    async fn claim_job(
        &self,
        _job: JobId,
        _owner: JobOwner,
        _plan: Option<JobPlanRecord>,
    ) -> Result<bool, StoreError> {
        Err(alone("holds its jobs without claiming them"))
    }

    async fn job_plan(&self, _job: JobId) -> Result<Option<JobPlanRecord>, StoreError> {
        Ok(None)
    }

    async fn running_jobs(&self) -> Result<Vec<(JobId, Option<JobOwner>)>, StoreError> {
        Err(alone("takes no job over"))
    }

    async fn follow_released_jobs(&self) -> Result<ReleasedJobs, StoreError> {
        Ok(Box::pin(futures::stream::pending()))
    }

    async fn interrupt_job(&self, _job: JobId, _now_unix_ms: i64) -> Result<bool, StoreError> {
        Err(alone("finishes its jobs all at once when it starts"))
    }

    async fn import_minion(&self, record: MinionRecord) -> Result<bool, StoreError> {
        self.blocking(move |db| minions::import(db, record)).await
    }

    async fn delete_minion(&self, id: MinionId) -> Result<bool, StoreError> {
        self.blocking(move |db| minions::delete(db, id)).await
    }

    async fn minion(&self, id: MinionId) -> Result<Option<MinionRecord>, StoreError> {
        self.blocking(move |db| minions::minion(db, id)).await
    }

    async fn minions_after(
        &self,
        after: Option<MinionId>,
        limit: usize,
    ) -> Result<Vec<MinionRecord>, StoreError> {
        self.blocking(move |db| minions::minions_after(db, after, limit))
            .await
    }

    async fn minions(&self) -> Result<Vec<MinionRecord>, StoreError> {
        self.blocking(minions::minions).await
    }

    async fn record_host_event(&self, id: MinionId, event: HostEvent) -> Result<bool, StoreError> {
        self.blocking(move |db| events::record(db, id, event)).await
    }

    async fn host_events(&self, id: MinionId, limit: usize) -> Result<Vec<HostEvent>, StoreError> {
        self.blocking(move |db| events::newest(db, id, limit)).await
    }

    async fn record_hook_failure(&self, failure: HookFailure) -> Result<(), StoreError> {
        self.blocking(move |db| hook_failures::record(db, failure))
            .await
    }

    async fn hook_failures(&self, limit: usize) -> Result<Vec<HookFailure>, StoreError> {
        self.blocking(move |db| hook_failures::newest(db, limit))
            .await
    }

    async fn add_token(&self, record: TokenRecord) -> Result<(), StoreError> {
        self.blocking(move |db| tokens::add(db, record)).await
    }

    async fn check_token(
        &self,
        secret_hash: String,
        now_unix_ms: i64,
    ) -> Result<TokenCheck, StoreError> {
        self.blocking(move |db| tokens::check(db, secret_hash, now_unix_ms))
            .await
    }

    async fn tokens(&self) -> Result<Vec<ListedToken>, StoreError> {
        self.blocking(tokens::list).await
    }

    async fn revoke_token(&self, id: String) -> Result<bool, StoreError> {
        self.blocking(move |db| tokens::revoke(db, id)).await
    }

    async fn record_job(&self, job: JobRecord, retention: JobRetention) -> Result<(), StoreError> {
        self.blocking(move |db| jobs::record(db, job, retention))
            .await
    }

    async fn record_late_report(
        &self,
        job_id: JobId,
        report: HostReport,
    ) -> Result<bool, StoreError> {
        self.blocking(move |db| jobs::record_late_report(db, job_id, report))
            .await
    }

    async fn record_job_progress(&self, job: JobRecord) -> Result<(), StoreError> {
        self.blocking(move |db| jobs::record_progress(db, job))
            .await
    }

    async fn interrupt_running_jobs(
        &self,
        now_unix_ms: i64,
        run_by: Option<String>,
    ) -> Result<Vec<String>, StoreError> {
        self.blocking(move |db| jobs::interrupt_running(db, now_unix_ms, run_by.as_deref()))
            .await
    }

    async fn jobs_before(
        &self,
        before: Option<String>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        self.blocking(move |db| jobs::newest_before(db, before.as_deref(), limit))
            .await
    }

    async fn job_with_request(&self, request_id: String) -> Result<Option<JobRecord>, StoreError> {
        self.blocking(move |db| jobs::with_request(db, &request_id))
            .await
    }

    async fn job(&self, id: String) -> Result<Option<JobRecord>, StoreError> {
        self.blocking(move |db| jobs::job(db, id)).await
    }

    async fn try_lock(
        &self,
        lock: LockRecord,
        now_unix_ms: i64,
    ) -> Result<Result<(), LockRecord>, StoreError> {
        self.blocking(move |db| lock::try_lock(db, lock, now_unix_ms))
            .await
    }

    async fn current_lock(&self, now_unix_ms: i64) -> Result<Option<LockRecord>, StoreError> {
        self.blocking(move |db| lock::current(db, now_unix_ms))
            .await
    }

    async fn release_lock(&self, job_id: Option<String>) -> Result<Option<LockRecord>, StoreError> {
        self.blocking(move |db| lock::release(db, job_id)).await
    }

    async fn add_release(
        &self,
        job_id: String,
        caller: String,
        created_at_unix_ms: i64,
        pins: Pins,
    ) -> Result<Release, StoreError> {
        self.blocking(move |db| releases::add(db, job_id, caller, created_at_unix_ms, pins))
            .await
    }

    async fn latest_release(&self) -> Result<Option<Release>, StoreError> {
        self.blocking(releases::latest).await
    }

    async fn releases(&self) -> Result<Vec<Release>, StoreError> {
        self.blocking(releases::all).await
    }

    async fn announce_master(&self, announcement: MasterAnnouncement) -> Result<(), StoreError> {
        self.blocking(move |db| masters::announce(db, announcement))
            .await
    }

    async fn masters(&self, now_unix_ms: i64) -> Result<Vec<MasterAnnouncement>, StoreError> {
        self.blocking(move |db| masters::holding(db, now_unix_ms))
            .await
    }

    async fn apply_roles(&self, new: NewRoles) -> Result<RolesApplied, StoreError> {
        self.blocking(move |db| roles::apply(db, new)).await
    }

    async fn roles_version(
        &self,
        version: Option<u64>,
    ) -> Result<Option<RolesVersion>, StoreError> {
        self.blocking(move |db| roles::version(db, version)).await
    }

    async fn roles_versions(&self) -> Result<Vec<RolesVersion>, StoreError> {
        self.blocking(roles::all).await
    }

    async fn revoke_certificates(
        &self,
        role: CertRole,
        name: String,
        now_unix_ms: i64,
    ) -> Result<(), StoreError> {
        self.blocking(move |db| revocations::revoke(db, role, name, now_unix_ms))
            .await
    }

    async fn certificate_revocations(&self) -> Result<Vec<CertificateRevocation>, StoreError> {
        self.blocking(revocations::all).await
    }

    async fn put_secret(
        &self,
        name: SecretName,
        record: SecretRecord,
    ) -> Result<Option<SecretRecord>, StoreError> {
        self.blocking(move |db| secrets::put(db, &name, &record))
            .await
    }

    async fn secret(&self, name: SecretName) -> Result<Option<SecretRecord>, StoreError> {
        self.blocking(move |db| secrets::get(db, &name)).await
    }

    async fn secrets(&self) -> Result<Vec<(SecretName, SecretRecord)>, StoreError> {
        self.blocking(secrets::all).await
    }

    async fn delete_secret(&self, name: SecretName) -> Result<Option<SecretRecord>, StoreError> {
        self.blocking(move |db| secrets::delete(db, &name)).await
    }
}

/// The error of a call that only masters sharing a store make.
fn alone(what: &str) -> StoreError {
    StoreError::Backend(format!("a master alone with its store {what}"))
}
