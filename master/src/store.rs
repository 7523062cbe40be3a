//! The master's store: enrolled minions, join tokens, jobs, the fleet lock, releases,
//! certificate revocations, host events, failed hook deliveries, the versions of the roles file (for masters that share
//! a store) and which fleet it holds.
//!
//! Callers hold it as `Arc<dyn Store>` (from [`open`]) and see only the [`Store`] trait and the
//! records it speaks, none of which knows how records are kept. Each table's records and the
//! rules that change them (who may join under which id, what a renewal gives, which jobs are
//! forgotten) live in a module of their own here: `minions` (with joins), `tokens`, `jobs`,
//! `lock`, `revocations`, `roles` and `fleet`; host events and releases are records of
//! `brine-common` and [`crate::release`]. Keeping the rules out of the implementations means
//! every implementation applies the same ones; an implementation only keeps records and makes
//! each call one transaction (etcd: a job's record, split over keys, in several, see
//! `etcd.rs`), committed before the caller is answered.
//!
//! Records are JSON carrying a format version (`record`), so they can grow fields without
//! migrations and a master never misreads a shape it does not know.
//!
//! Two implementations: `redb`, an embedded database file in the data directory (one master),
//! and `etcd`, an etcd cluster that several masters can share. Each has its code, a module per
//! table, under its own directory. `contract` is the test suite both must pass.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use brine_common::fleet_event::HookFailure;
use brine_common::host::HostEvent;
use brine_common::identity::CertRole;
use brine_common::names::{MinionId, SecretName};
use brine_common::outcome::{HostReport, JobId};

use crate::pki::SignedCertificate;
use crate::release::{Pins, Release};

#[cfg(test)]
mod contract;
mod etcd;
mod fleet;
mod jobs;
mod lock;
mod masters;
mod minions;
mod record;
mod redb;
mod relay;
mod revocations;
mod roles;
mod secrets;
mod takeover;
mod tokens;

pub use fleet::FleetClaim;
pub use jobs::{JobRecord, JobRetention, RequestRecord};
pub use lock::LockRecord;
pub use masters::MasterAnnouncement;
pub use minions::{
    Approval, ApprovalChange, CertificateCheck, HostHello, JoinAttempt, JoinOutcome, JoinRefusal,
    MinionRecord, PendingEnrolment, Renewal,
};
pub use relay::{HostAnswer, LinkChange, LinkChanges, Relayed, RelayedCommand, RelayedMessages};
pub use revocations::CertificateRevocation;
pub use roles::{NewRoles, ROLES_VERSIONS_KEPT, RolesApplied, RolesVersion};
pub use secrets::SecretRecord;
pub use takeover::{JobOwner, JobPlanRecord, Lease, ReleasedJobs};
pub use tokens::{ListedToken, TokenCheck, TokenRecord};

/// A host's record as changed by a master sharing the store.
#[derive(Debug, Clone)]
pub enum HostChange {
    /// The host's record now.
    Changed(Box<MinionRecord>),
    /// The host was forgotten.
    Deleted(MinionId),
}

/// What [`Store::follow_host_changes`] yields.
pub type HostChanges = futures::stream::BoxStream<'static, Result<HostChange, StoreError>>;

/// How many events the store keeps per host; older ones go.
pub const EVENTS_KEPT: usize = 200;
/// How many failed hook deliveries the store keeps (of every master, when they share it).
pub const HOOK_FAILURES_KEPT: usize = 1000;

pub use etcd::{DEFAULT_QUOTA_BYTES as DEFAULT_ETCD_QUOTA_BYTES, EtcdSettings, EtcdTls};

/// Where the master keeps what it knows.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// A redb database file on the master's disk.
    File(PathBuf),
    /// An etcd cluster.
    Etcd(EtcdSettings),
}

/// Opens (or creates) the master's store.
pub async fn open(location: &StoreLocation) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match location {
        StoreLocation::File(path) => {
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || self::redb::RedbStore::open(&path))
                .await
                .map_err(|err| StoreError::Task(err.to_string()))??;
            Arc::new(store)
        }
        StoreLocation::Etcd(settings) => Arc::new(self::etcd::EtcdStore::connect(settings).await?),
    })
}

/// What the master keeps: every call is one transaction, committed before it returns.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// How many more bytes the store can take: for a store on the master's disk, what the
    /// filesystem that holds it has free for the master.
    async fn available_bytes(&self) -> Result<u64, StoreError>;

    /// Marks the store as the fleet of the CA whose certificate hashes to `ca_sha256`, unless
    /// it holds another fleet already: a master must never serve another fleet's hosts.
    async fn claim_fleet(&self, ca_sha256: String) -> Result<FleetClaim, StoreError>;

    // Minions.

    /// Enrols a host with a join token, in one transaction: the token is checked and used, and
    /// an id that is enrolled already is taken over only with a token made to replace it, never
    /// by a join with any other token.
    async fn join(&self, attempt: JoinAttempt) -> Result<JoinOutcome, StoreError>;

    /// Records what a host said when it connected, if the certificate it connected with is the
    /// newest issued to it (or the one it renewed last) and the host is accepted.
    async fn record_hello(
        &self,
        id: MinionId,
        certificate_sha256: String,
        hello: HostHello,
    ) -> Result<CertificateCheck, StoreError>;

    /// Records a renewed certificate for a host that called with its newest certificate (or the
    /// one before, whose renewal it may not have received) and is accepted. The certificate it
    /// called with stays valid until the new one is first used.
    async fn renew_certificate(
        &self,
        id: MinionId,
        caller_sha256: String,
        renewed: SignedCertificate,
        renewed_pem: String,
    ) -> Result<Renewal, StoreError>;

    /// Whether host `id` is admitted with this certificate now (as a connect or renewal would
    /// be), without recording anything: `Recorded` if it is.
    async fn certificate_check(
        &self,
        id: MinionId,
        certificate_sha256: String,
    ) -> Result<CertificateCheck, StoreError>;

    /// Sets whether a host's link is admitted. Only a waiting host can be accepted: a rejected
    /// or revoked one must join again, with a new certificate.
    async fn set_approval(
        &self,
        id: MinionId,
        approval: Approval,
    ) -> Result<ApprovalChange, StoreError>;

    /// The hosts' records as they change from now on, through any master sharing the store
    /// (this one included), so that a master ends the links another master's change no longer
    /// admits. A store no other master shares yields nothing. The changes stop, or fail, when
    /// the store loses track: follow them again and check every link, as changes in between
    /// were missed.
    async fn follow_host_changes(&self) -> Result<HostChanges, StoreError>;

    /// Keeps `record` as it is, for a move from another store; false (nothing written) when
    /// its id is enrolled here already.
    async fn import_minion(&self, record: MinionRecord) -> Result<bool, StoreError>;

    /// Forgets a host and its events. Returns false for an unknown host.
    async fn delete_minion(&self, id: MinionId) -> Result<bool, StoreError>;

    /// One enrolled host.
    async fn minion(&self, id: MinionId) -> Result<Option<MinionRecord>, StoreError>;

    /// Up to `limit` enrolled hosts after `after` (from the first without it), sorted by id.
    async fn minions_after(
        &self,
        after: Option<MinionId>,
        limit: usize,
    ) -> Result<Vec<MinionRecord>, StoreError>;

    /// Every enrolled host, sorted by id.
    async fn minions(&self) -> Result<Vec<MinionRecord>, StoreError>;

    // Host events.

    /// Records an event of an enrolled host, keeping its newest [`EVENTS_KEPT`]. Returns false
    /// (and records nothing) for an unknown host.
    async fn record_host_event(&self, id: MinionId, event: HostEvent) -> Result<bool, StoreError>;

    /// A host's newest `limit` events, newest first.
    async fn host_events(&self, id: MinionId, limit: usize) -> Result<Vec<HostEvent>, StoreError>;

    // Failed hook deliveries.

    /// Keeps a delivery to a hook that failed, with the newest [`HOOK_FAILURES_KEPT`].
    async fn record_hook_failure(&self, failure: HookFailure) -> Result<(), StoreError>;

    /// The newest `limit` failed hook deliveries, newest first.
    async fn hook_failures(&self, limit: usize) -> Result<Vec<HookFailure>, StoreError>;

    // Join tokens.

    /// Stores a new join token under its public id.
    async fn add_token(&self, record: TokenRecord) -> Result<(), StoreError>;

    /// Checks a join token by the hash of its secret.
    async fn check_token(
        &self,
        secret_hash: String,
        now_unix_ms: i64,
    ) -> Result<TokenCheck, StoreError>;

    /// Every join token, newest first, by public id.
    async fn tokens(&self) -> Result<Vec<ListedToken>, StoreError>;

    /// Deletes the token whose public id is `id`; returns whether there was one.
    async fn revoke_token(&self, id: String) -> Result<bool, StoreError>;

    // Jobs.

    /// Stores a finished job and what each host now runs, in one transaction, and forgets the
    /// jobs beyond `retention`.
    async fn record_job(&self, job: JobRecord, retention: JobRetention) -> Result<(), StoreError>;

    /// Records a host's result that arrived after its finished job had given up on the host
    /// (unreachable, timed out, interrupted): the job's record then shows what the host really
    /// did, marked as reported late, and the host's containers as it left them. Returns false
    /// (and records nothing) when the job or the host's report is not one to update.
    async fn record_late_report(
        &self,
        job_id: JobId,
        report: HostReport,
    ) -> Result<bool, StoreError>;

    /// Records how far a running job got (it must have `running` set); the final record
    /// replaces it through [`Store::record_job`].
    async fn record_job_progress(&self, job: JobRecord) -> Result<(), StoreError>;

    /// Finishes the jobs a stopped master left running: those master `run_by` ran (of masters
    /// that share the store), or every one (`None`, a store of one master). Every target
    /// without a recorded report is `interrupted`, and the fleet lock such a job held is
    /// released. Returns their ids.
    async fn interrupt_running_jobs(
        &self,
        now_unix_ms: i64,
        run_by: Option<String>,
    ) -> Result<Vec<String>, StoreError>;

    /// Up to `limit` jobs that started before job `before` (from the newest without it),
    /// newest first (job ids sort by start time).
    async fn jobs_before(
        &self,
        before: Option<String>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError>;

    /// The newest job started with request id `request_id`, among the jobs kept.
    async fn job_with_request(&self, request_id: String) -> Result<Option<JobRecord>, StoreError>;

    /// One job.
    async fn job(&self, id: String) -> Result<Option<JobRecord>, StoreError>;

    // The fleet lock.

    /// Takes the fleet lock unless someone holds it; an expired lock is taken over. Returns the
    /// lock in force when it is held by someone else.
    async fn try_lock(
        &self,
        lock: LockRecord,
        now_unix_ms: i64,
    ) -> Result<Result<(), LockRecord>, StoreError>;

    /// The lock in force, if any (an expired lock is none).
    async fn current_lock(&self, now_unix_ms: i64) -> Result<Option<LockRecord>, StoreError>;

    /// Releases the lock: any lock when `job_id` is `None`, else only the one that job holds.
    /// Returns what was released.
    async fn release_lock(&self, job_id: Option<String>) -> Result<Option<LockRecord>, StoreError>;

    // Releases.

    /// Records a release with the next id.
    async fn add_release(
        &self,
        job_id: String,
        caller: String,
        created_at_unix_ms: i64,
        pins: Pins,
    ) -> Result<Release, StoreError>;

    /// The newest release, if any.
    async fn latest_release(&self) -> Result<Option<Release>, StoreError>;

    /// Every release, oldest first.
    async fn releases(&self) -> Result<Vec<Release>, StoreError>;

    // The masters sharing the store.

    /// Records (or renews) a master's announcement that it serves minions.
    async fn announce_master(&self, announcement: MasterAnnouncement) -> Result<(), StoreError>;

    /// The masters whose announcement holds at `now_unix_ms`, by name.
    async fn masters(&self, now_unix_ms: i64) -> Result<Vec<MasterAnnouncement>, StoreError>;

    // Links and messages between masters that share the store (`relay`). A master alone
    // with its store holds every link itself: it records none and has no one to write to.

    /// Records that `host` is linked to the master named `master`.
    async fn record_link(&self, host: MinionId, master: String) -> Result<(), StoreError>;

    /// Records that `host` is no longer linked to `master`; a link another master holds by
    /// now stays recorded.
    async fn forget_link(&self, host: MinionId, master: String) -> Result<(), StoreError>;

    /// Forgets every link recorded as held by `master` (which starts again with none).
    async fn forget_links_of(&self, master: String) -> Result<(), StoreError>;

    /// Every link recorded now, then each change, until the stream ends with an error.
    async fn follow_links(&self) -> Result<LinkChanges, StoreError>;

    /// Leaves `message` for the master named `to`.
    async fn relay(&self, to: String, message: Relayed) -> Result<(), StoreError>;

    /// The messages for the master named `master`: those waiting, then each new one, each
    /// taken out of the store as it is read.
    async fn follow_relayed(&self, master: String) -> Result<RelayedMessages, StoreError>;

    // Taking over jobs, for masters that share a store (`takeover`). A master alone with its
    // store keeps no plan and takes nothing over.

    /// A new lease that holds for `ttl` unless renewed.
    async fn grant_lease(&self, ttl: Duration) -> Result<Box<dyn Lease>, StoreError>;

    /// Claims running job `job` for `owner`, with `plan` if given (a new job): false if
    /// another master holds it.
    async fn claim_job(
        &self,
        job: JobId,
        owner: JobOwner,
        plan: Option<JobPlanRecord>,
    ) -> Result<bool, StoreError>;

    /// The plan of running job `job`, if it was kept.
    async fn job_plan(&self, job: JobId) -> Result<Option<JobPlanRecord>, StoreError>;

    /// Every running job with the master holding it, if one does.
    async fn running_jobs(&self) -> Result<Vec<(JobId, Option<JobOwner>)>, StoreError>;

    /// Jobs whose holder let go of them, from now on.
    async fn follow_released_jobs(&self) -> Result<ReleasedJobs, StoreError>;

    /// Finishes running job `job` as interrupted (its hosts that had not reported), as a
    /// master's start does with its own jobs; false if it is not running.
    async fn interrupt_job(&self, job: JobId, now_unix_ms: i64) -> Result<bool, StoreError>;

    // The roles file, for masters that share a store.

    /// Records `new` as the next version of the roles file, unless the newest version has its
    /// text already; keeps the newest [`ROLES_VERSIONS_KEPT`].
    async fn apply_roles(&self, new: NewRoles) -> Result<RolesApplied, StoreError>;

    /// Version `version` of the roles file, or the newest (`None`), if it is kept.
    async fn roles_version(&self, version: Option<u64>)
    -> Result<Option<RolesVersion>, StoreError>;

    /// Every version of the roles file kept, newest first.
    async fn roles_versions(&self) -> Result<Vec<RolesVersion>, StoreError>;

    // Certificate revocations.

    /// Refuses every `role` certificate for `name` issued up to `now_unix_ms`.
    async fn revoke_certificates(
        &self,
        role: CertRole,
        name: String,
        now_unix_ms: i64,
    ) -> Result<(), StoreError>;

    /// Every operator and CI certificate revocation.
    async fn certificate_revocations(&self) -> Result<Vec<CertificateRevocation>, StoreError>;

    // Secrets, sealed: the store never holds a value in clear.

    /// Keeps `record` as secret `name`; returns the record it replaced.
    async fn put_secret(
        &self,
        name: SecretName,
        record: SecretRecord,
    ) -> Result<Option<SecretRecord>, StoreError>;

    /// Secret `name`, if it is kept.
    async fn secret(&self, name: SecretName) -> Result<Option<SecretRecord>, StoreError>;

    /// Every secret, by name.
    async fn secrets(&self) -> Result<Vec<(SecretName, SecretRecord)>, StoreError>;

    /// Forgets secret `name`; returns the record it held.
    async fn delete_secret(&self, name: SecretName) -> Result<Option<SecretRecord>, StoreError>;
}

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage could not be read or written (a full disk, say).
    #[error("store: I/O error: {0}")]
    Io(#[source] std::io::Error),
    /// The storage is out of use after an earlier failure to read or write it, until the store
    /// opens it again.
    #[error("store: {0}")]
    Closed(String),
    /// Any other failure of the storage.
    #[error("store: {0}")]
    Backend(String),
    /// The store could not be reached or did not answer (an etcd cluster without a quorum,
    /// say).
    #[error("store: {0}")]
    Unavailable(String),
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
    /// Whether the disk holding the store is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            StoreError::Io(err)
                if matches!(err.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        )
    }
}
