//! The store in an etcd cluster, which several masters can share.
//!
//! Every record is one key under the fleet's prefix (`/brine/` unless master.toml says
//! otherwise), in the same JSON as the redb store's (`record`):
//!
//! ```text
//! PREFIX fleet                      which CA the fleet under this prefix belongs to
//! PREFIX minions/ID                 an enrolled host
//! PREFIX tokens/PUBLIC-ID           a join token
//! PREFIX jobs/JOB                   a job, without its targets and reports...
//! PREFIX job-targets/JOB            ...the hosts it targets...
//! PREFIX job-hosts/JOB/ID           ...and each host's report, so values stay small
//! PREFIX lock                       the fleet lock
//! PREFIX releases/00000000000000000001
//! PREFIX revocations/ROLE/NAME
//! PREFIX events/ID/00000000000000000001
//! PREFIX hook-failures/00000000000000000001
//! PREFIX masters/NAME               a master's announcement
//! PREFIX links/ID                   which master holds a host's link
//! PREFIX relay/NAME/UNIQUE          a message for the master NAME (a command, an answer)
//! PREFIX job-owners/JOB             which master holds a running job (under its lease)...
//! PREFIX job-plans/JOB              ...and the job's plan, while it runs...
//! PREFIX job-desired/JOB/ID         ...with each host's desired state
//! ```
//!
//! A call that reads and then writes is an optimistic transaction: its write is made only if
//! none of the keys it read has changed since (an etcd `Txn` comparing their revisions), and is
//! tried again from the read otherwise, so masters writing at once never lose each other's
//! changes. The rules applied between the read and the write are the store's shared ones, as
//! for redb.
//!
//! etcd refuses a transaction of more than 128 operations (its `--max-txn-ops`) and a request
//! of more than 1.5 MiB, so a job's reports are written in transactions of at most
//! [`OPS_PER_TXN`], and its record (the `jobs/JOB` key) last: a job is never seen finished
//! before every report of it is written. What a job's end changes in its hosts' records is
//! written in the same steps; a master that stops between them leaves the job running, which
//! the next start finishes as for redb, and each host says what it runs at its next hello.

use std::time::Duration;

use brine_common::fleet_event::HookFailure;
use brine_common::host::HostEvent;
use brine_common::identity::CertRole;
use brine_common::names::{MinionId, SecretName};
use brine_common::outcome::{HostReport, JobId};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    KeyValue, KvClient, LeaseClient, MaintenanceClient, SortOrder, SortTarget, TlsOptions, Txn,
    TxnOp, TxnOpResponse, WatchClient,
};
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

mod events;
mod fleet;
mod hook_failures;
mod jobs;
mod keys;
mod lock;
mod masters;
mod minions;
mod relay;
mod releases;
mod revocations;
mod roles;
mod secrets;
mod takeover;
#[cfg(test)]
mod tests;
mod tokens;

use keys::Keys;

/// The most operations (or comparisons) one transaction carries: etcd refuses more than 128
/// by default.
const OPS_PER_TXN: usize = 100;

/// How many times a read-then-write call starts again when another writer changed what it
/// read, before it gives up.
const CONFLICT_RETRIES: usize = 64;

/// After a conflict, a call waits up to 2, 4, ... and at most 2^this milliseconds before it
/// reads again.
const CONFLICT_BACKOFF_DOUBLINGS: usize = 6;

/// How long a call waits for etcd before it fails, and how long connecting to a member may
/// take: a cluster without a quorum fails calls, it does not hang them.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a call that etcd refused without doing anything (no leader during an election, a
/// member that went away) is sent again before it fails: an election takes a second or two.
const RETRY_WINDOW: Duration = Duration::from_secs(6);
/// The wait before the first retry; it doubles up to a second.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);

/// The most a response may hold: a page of hosts or a job's reports.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// How many hosts one read of the host list asks for.
const HOSTS_PER_PAGE: usize = 500;

/// etcd's own default for how much its database may hold (`--quota-backend-bytes`).
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Where the etcd cluster is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Client URLs of the cluster's members: `http://HOST:PORT` or `https://HOST:PORT`.
    pub endpoints: Vec<String>,
    /// Every key of this fleet starts with this; it ends with '/'.
    pub prefix: String,
    /// TLS with a client certificate, for `https://` endpoints.
    pub tls: Option<EtcdTls>,
    /// How much the cluster's database may hold (its `--quota-backend-bytes`): the master
    /// starts no job when less than a little of it is left.
    pub quota_bytes: u64,
}

/// The files that authenticate the master to etcd, and etcd to the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA that signed the members' certificates (PEM).
    pub ca_file: std::path::PathBuf,
    /// The master's client certificate and key (PEM).
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

/// The store in an etcd cluster.
pub(super) struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
    leases: LeaseClient,
    maintenance: MaintenanceClient,
    keys: Keys,
    quota_bytes: u64,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.keys.prefix())
            .finish_non_exhaustive()
    }
}

/// etcd's errors as callers see them: a member that cannot be reached or answers nothing in
/// time, told apart from a request it refused.
fn etcd_failure(err: etcd_client::Error) -> StoreError {
    use etcd_client::Error;
    match &err {
        Error::TransportError(_) | Error::IoError(_) => {
            StoreError::Unavailable(format!("etcd cannot be reached: {err}"))
        }
        // A connection that broke mid-call comes back as a status of code `Unknown` whose
        // source is the transport's error.
        Error::GRpcStatus(status)
            if matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) || std::error::Error::source(status)
                .is_some_and(|source| source.is::<tonic::transport::Error>()) =>
        {
            StoreError::Unavailable(format!("etcd did not answer: {}", status.message()))
        }
        _ => StoreError::Backend(format!("etcd: {err}")),
    }
}

/// The options that connect to the cluster, with TLS when `tls` says so.
fn connect_options(tls: Option<&EtcdTls>) -> Result<ConnectOptions, StoreError> {
    let options = ConnectOptions::new()
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_require_leader(true);
    let Some(tls) = tls else {
        return Ok(options);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|err| {
            StoreError::Backend(format!("cannot read {} for etcd: {err}", path.display()))
        })
    };
    let identity = Identity::from_pem(read(&tls.cert_file)?, read(&tls.key_file)?);
    Ok(options.with_tls(
        TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read(&tls.ca_file)?))
            .identity(identity),
    ))
}

/// Whether etcd certainly did not apply a request that failed with `err`, so that sending it
/// again cannot apply it twice: the member could not be reached, or refused it for want of a
/// leader (during an election, as the client asks with `require_leader`) or because the leader
/// changed while it served a read.
fn never_applied(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            (status.code() == tonic::Code::Unavailable
                && ["no leader", "leader changed"]
                    .iter()
                    .any(|says| status.message().contains(says)))
                || connection_refused(status)
        }
        _ => false,
    }
}

/// Whether a call failed because no connection could be made to the member.
fn connection_refused(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// Whether a read that failed with `err` may be asked again: it changes nothing, so any
/// failure to reach the cluster.
fn unreachable(err: &etcd_client::Error) -> bool {
    matches!(etcd_failure(clone_error(err)), StoreError::Unavailable(_)) || never_applied(err)
}

/// What of `err` [`etcd_failure`] needs (etcd's error is not `Clone`).
fn clone_error(err: &etcd_client::Error) -> etcd_client::Error {
    match err {
        etcd_client::Error::GRpcStatus(status) => etcd_client::Error::GRpcStatus(status.clone()),
        other => etcd_client::Error::Internal(other.to_string()),
    }
}

/// Sends `call` until it succeeds, fails in a way `may_retry` does not allow, or
/// [`RETRY_WINDOW`] has passed.
async fn with_retries<T, Call, Sent>(
    may_retry: fn(&etcd_client::Error) -> bool,
    mut call: Call,
) -> Result<T, StoreError>
where
    Call: FnMut() -> Sent,
    Sent: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = FIRST_RETRY_DELAY;
    loop {
        match call().await {
            Ok(answer) => return Ok(answer),
            Err(err) if may_retry(&err) && started.elapsed() + delay < RETRY_WINDOW => {
                tracing::debug!("etcd refused a call, sending it again: {err}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(err) => return Err(etcd_failure(err)),
        }
    }
}

/// A key as read: its value, if it is there, and the comparison that holds while it has not
/// changed since.
struct Read {
    value: Option<KeyValue>,
    unchanged: Compare,
}

impl Read {
    fn new(key: String, value: Option<KeyValue>) -> Self {
        let unchanged = match &value {
            Some(kv) => Compare::mod_revision(key, CompareOp::Equal, kv.mod_revision()),
            None => Compare::version(key, CompareOp::Equal, 0),
        };
        Self { value, unchanged }
    }

    /// The record stored there (`table` and `key` name it in errors).
    fn decode<T: DeserializeOwned>(
        &self,
        table: &'static str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        self.value
            .as_ref()
            .map(|kv| decode(table, key, kv.value()))
            .transpose()
    }
}

/// Counts the attempts of a call that reads, then writes only if what it read is unchanged,
/// and reads again otherwise.
struct Attempts {
    what: &'static str,
    made: usize,
}

impl Attempts {
    fn new(what: &'static str) -> Self {
        Self { what, made: 0 }
    }

    /// Allows another attempt, unless other writers changed the same records too many times
    /// in a row. After a conflict it first waits a random while, longer after each: writers
    /// racing for one record (hosts joining with one token) would otherwise meet again at once.
    async fn another(&mut self) -> Result<(), StoreError> {
        if self.made == CONFLICT_RETRIES {
            return Err(StoreError::Backend(format!(
                "{}: other masters changed the same records {CONFLICT_RETRIES} times in a row",
                self.what
            )));
        }
        if self.made > 0 {
            let most = 1u64 << self.made.min(CONFLICT_BACKOFF_DOUBLINGS);
            let wait = rand::random_range(0..=most);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        self.made += 1;
        Ok(())
    }
}

impl EtcdStore {
    /// Connects to the cluster. Fails when no member answers.
    pub(super) async fn connect(settings: &EtcdSettings) -> Result<Self, StoreError> {
        let client = Client::connect(
            &settings.endpoints,
            Some(connect_options(settings.tls.as_ref())?),
        )
        .await
        .map_err(etcd_failure)?;
        let store = Self {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            watch: client.watch_client(),
            leases: client.lease_client(),
            maintenance: client.maintenance_client(),
            keys: Keys::new(&settings.prefix),
            quota_bytes: settings.quota_bytes,
        };
        // Connecting is lazy: a first read tells a cluster that answers from one that does not.
        store.read(store.keys.fleet()).await?;
        Ok(store)
    }

    /// The value under `key`, with the comparison that holds while it is unchanged.
    async fn read(&self, key: String) -> Result<Read, StoreError> {
        let mut response = with_retries(unreachable, || {
            let (mut kv, key) = (self.kv.clone(), key.clone());
            async move { kv.get(key, None).await }
        })
        .await?;
        let value = response.take_kvs().into_iter().next();
        Ok(Read::new(key, value))
    }

    /// The keys and values `options` select from `key` on.
    async fn range(&self, key: String, options: GetOptions) -> Result<Vec<KeyValue>, StoreError> {
        let mut response = with_retries(unreachable, || {
            let (mut kv, key, options) = (self.kv.clone(), key.clone(), options.clone());
            async move { kv.get(key, Some(options)).await }
        })
        .await?;
        Ok(response.take_kvs())
    }

    /// Every key and value under `prefix`, in key order.
    async fn under(&self, prefix: String) -> Result<Vec<KeyValue>, StoreError> {
        self.range(prefix, GetOptions::new().with_prefix()).await
    }

    /// The newest `limit` keys under `prefix` (keys whose order is their age), newest first.
    async fn newest_under(
        &self,
        prefix: String,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(limit_of(limit));
        self.range(prefix, options).await
    }

    /// Runs `txn`: its answers when its comparisons held, `None` when one did not. Sent again
    /// only when etcd certainly did not apply it.
    async fn commit(&self, txn: Txn) -> Result<Option<Vec<TxnOpResponse>>, StoreError> {
        let response = with_retries(never_applied, || {
            let (mut kv, txn) = (self.kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await?;
        Ok(response.succeeded().then(|| response.op_responses()))
    }

    /// Runs `txn`, which compares nothing (so it always succeeds), for its answers.
    async fn commit_unconditionally(&self, txn: Txn) -> Result<Vec<TxnOpResponse>, StoreError> {
        self.commit(txn).await?.ok_or_else(|| {
            StoreError::Backend("etcd refused a transaction that compares nothing".into())
        })
    }

    /// Runs `reads`, a transaction of reads only (so several keys are read at one revision),
    /// for its answers.
    async fn read_all(&self, reads: Txn) -> Result<Vec<TxnOpResponse>, StoreError> {
        let response = with_retries(unreachable, || {
            let (mut kv, reads) = (self.kv.clone(), reads.clone());
            async move { kv.txn(reads).await }
        })
        .await?;
        Ok(response.op_responses())
    }

    /// Writes `ops` in transactions of at most [`OPS_PER_TXN`] operations each.
    async fn write_all(&self, ops: Vec<TxnOp>) -> Result<(), StoreError> {
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            let chunk: Vec<TxnOp> = ops.by_ref().take(OPS_PER_TXN).collect();
            self.commit_unconditionally(Txn::new().and_then(chunk))
                .await?;
        }
        Ok(())
    }
}

/// `limit` as etcd takes it (0 is no limit).
fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX).max(1)
}

/// A key as text (keys are written from text, so a key that is not is someone else's).
fn key_text(kv: &KeyValue) -> String {
    String::from_utf8_lossy(kv.key()).into_owned()
}

/// A delete of every key under `prefix`.
fn delete_under(prefix: String) -> TxnOp {
    TxnOp::delete(prefix, Some(DeleteOptions::new().with_prefix()))
}

/// How many keys a transaction's delete removed.
fn deleted(response: Option<&TxnOpResponse>) -> i64 {
    match response {
        Some(TxnOpResponse::Delete(delete)) => delete.deleted(),
        _ => 0,
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn available_bytes(&self) -> Result<u64, StoreError> {
        let status = with_retries(unreachable, || {
            let mut maintenance = self.maintenance.clone();
            async move { maintenance.status().await }
        })
        .await?;
        let used = u64::try_from(status.db_size()).unwrap_or(0);
        Ok(self.quota_bytes.saturating_sub(used))
    }

    async fn claim_fleet(&self, ca_sha256: String) -> Result<FleetClaim, StoreError> {
        fleet::claim(self, &ca_sha256).await
    }

    async fn join(&self, attempt: JoinAttempt) -> Result<JoinOutcome, StoreError> {
        minions::join(self, attempt).await
    }

    async fn record_hello(
        &self,
        id: MinionId,
        certificate_sha256: String,
        hello: HostHello,
    ) -> Result<CertificateCheck, StoreError> {
        minions::record_hello(self, id, certificate_sha256, hello).await
    }

    async fn renew_certificate(
        &self,
        id: MinionId,
        caller_sha256: String,
        renewed: SignedCertificate,
        renewed_pem: String,
    ) -> Result<Renewal, StoreError> {
        minions::renew_certificate(self, id, caller_sha256, renewed, renewed_pem).await
    }

    async fn certificate_check(
        &self,
        id: MinionId,
        certificate_sha256: String,
    ) -> Result<CertificateCheck, StoreError> {
        minions::certificate_check(self, id, certificate_sha256).await
    }

    async fn set_approval(
        &self,
        id: MinionId,
        approval: Approval,
    ) -> Result<ApprovalChange, StoreError> {
        minions::set_approval(self, id, approval).await
    }

    async fn follow_host_changes(&self) -> Result<HostChanges, StoreError> {
        minions::follow_changes(self).await
    }

    async fn record_link(&self, host: MinionId, master: String) -> Result<(), StoreError> {
        relay::record_link(self, host, master).await
    }

    async fn forget_link(&self, host: MinionId, master: String) -> Result<(), StoreError> {
        relay::forget_link(self, host, master).await
    }

    async fn forget_links_of(&self, master: String) -> Result<(), StoreError> {
        relay::forget_links_of(self, master).await
    }

    async fn follow_links(&self) -> Result<LinkChanges, StoreError> {
        relay::follow_links(self).await
    }

    async fn relay(&self, to: String, message: Relayed) -> Result<(), StoreError> {
        relay::relay(self, to, message).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Box<dyn Lease>, StoreError> {
        takeover::grant_lease(self, ttl).await
    }

    async fn claim_job(
        &self,
        job: JobId,
        owner: JobOwner,
        plan: Option<JobPlanRecord>,
    ) -> Result<bool, StoreError> {
        takeover::claim(self, job, owner, plan).await
    }

    async fn job_plan(&self, job: JobId) -> Result<Option<JobPlanRecord>, StoreError> {
        takeover::plan(self, job).await
    }

    async fn running_jobs(&self) -> Result<Vec<(JobId, Option<JobOwner>)>, StoreError> {
        takeover::running(self).await
    }

    async fn follow_released_jobs(&self) -> Result<ReleasedJobs, StoreError> {
        takeover::follow_released(self).await
    }

    async fn interrupt_job(&self, job: JobId, now_unix_ms: i64) -> Result<bool, StoreError> {
        jobs::interrupt_one(self, job.as_str(), now_unix_ms).await
    }

    async fn follow_relayed(&self, master: String) -> Result<RelayedMessages, StoreError> {
        relay::follow_relayed(self, master).await
    }

    async fn import_minion(&self, record: MinionRecord) -> Result<bool, StoreError> {
        minions::import(self, record).await
    }

    async fn delete_minion(&self, id: MinionId) -> Result<bool, StoreError> {
        minions::delete(self, id).await
    }

    async fn minion(&self, id: MinionId) -> Result<Option<MinionRecord>, StoreError> {
        minions::minion(self, &id).await
    }

    async fn minions_after(
        &self,
        after: Option<MinionId>,
        limit: usize,
    ) -> Result<Vec<MinionRecord>, StoreError> {
        minions::minions_after(self, after.as_ref(), limit).await
    }

    async fn minions(&self) -> Result<Vec<MinionRecord>, StoreError> {
        minions::all(self).await
    }

    async fn record_host_event(&self, id: MinionId, event: HostEvent) -> Result<bool, StoreError> {
        events::record(self, id, event).await
    }

    async fn host_events(&self, id: MinionId, limit: usize) -> Result<Vec<HostEvent>, StoreError> {
        events::newest(self, id, limit).await
    }

    async fn record_hook_failure(&self, failure: HookFailure) -> Result<(), StoreError> {
        hook_failures::record(self, failure).await
    }

    async fn hook_failures(&self, limit: usize) -> Result<Vec<HookFailure>, StoreError> {
        hook_failures::newest(self, limit).await
    }

    async fn add_token(&self, record: TokenRecord) -> Result<(), StoreError> {
        tokens::add(self, record).await
    }

    async fn check_token(
        &self,
        secret_hash: String,
        now_unix_ms: i64,
    ) -> Result<TokenCheck, StoreError> {
        tokens::check(self, &secret_hash, now_unix_ms).await
    }

    async fn tokens(&self) -> Result<Vec<ListedToken>, StoreError> {
        tokens::list(self).await
    }

    async fn revoke_token(&self, id: String) -> Result<bool, StoreError> {
        tokens::revoke(self, &id).await
    }

    async fn record_job(&self, job: JobRecord, retention: JobRetention) -> Result<(), StoreError> {
        jobs::record(self, job, retention).await
    }

    async fn record_late_report(
        &self,
        job_id: JobId,
        report: HostReport,
    ) -> Result<bool, StoreError> {
        jobs::record_late_report(self, job_id, report).await
    }

    async fn record_job_progress(&self, job: JobRecord) -> Result<(), StoreError> {
        jobs::record_progress(self, job).await
    }

    async fn interrupt_running_jobs(
        &self,
        now_unix_ms: i64,
        run_by: Option<String>,
    ) -> Result<Vec<String>, StoreError> {
        jobs::interrupt_running(self, now_unix_ms, run_by.as_deref()).await
    }

    async fn jobs_before(
        &self,
        before: Option<String>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        jobs::newest_before(self, before.as_deref(), limit).await
    }

    async fn job_with_request(&self, request_id: String) -> Result<Option<JobRecord>, StoreError> {
        jobs::with_request(self, &request_id).await
    }

    async fn job(&self, id: String) -> Result<Option<JobRecord>, StoreError> {
        jobs::job(self, &id).await
    }

    async fn try_lock(
        &self,
        lock: LockRecord,
        now_unix_ms: i64,
    ) -> Result<Result<(), LockRecord>, StoreError> {
        lock::try_lock(self, lock, now_unix_ms).await
    }

    async fn current_lock(&self, now_unix_ms: i64) -> Result<Option<LockRecord>, StoreError> {
        lock::current(self, now_unix_ms).await
    }

    async fn release_lock(&self, job_id: Option<String>) -> Result<Option<LockRecord>, StoreError> {
        lock::release(self, job_id.as_deref()).await
    }

    async fn add_release(
        &self,
        job_id: String,
        caller: String,
        created_at_unix_ms: i64,
        pins: Pins,
    ) -> Result<Release, StoreError> {
        releases::add(self, job_id, caller, created_at_unix_ms, pins).await
    }

    async fn latest_release(&self) -> Result<Option<Release>, StoreError> {
        releases::latest(self).await
    }

    async fn releases(&self) -> Result<Vec<Release>, StoreError> {
        releases::all(self).await
    }

    async fn announce_master(&self, announcement: MasterAnnouncement) -> Result<(), StoreError> {
        masters::announce(self, announcement).await
    }

    async fn masters(&self, now_unix_ms: i64) -> Result<Vec<MasterAnnouncement>, StoreError> {
        masters::holding(self, now_unix_ms).await
    }

    async fn apply_roles(&self, new: NewRoles) -> Result<RolesApplied, StoreError> {
        roles::apply(self, new).await
    }

    async fn roles_version(
        &self,
        version: Option<u64>,
    ) -> Result<Option<RolesVersion>, StoreError> {
        roles::version(self, version).await
    }

    async fn roles_versions(&self) -> Result<Vec<RolesVersion>, StoreError> {
        roles::all(self).await
    }

    async fn revoke_certificates(
        &self,
        role: CertRole,
        name: String,
        now_unix_ms: i64,
    ) -> Result<(), StoreError> {
        revocations::revoke(self, role, &name, now_unix_ms).await
    }

    async fn certificate_revocations(&self) -> Result<Vec<CertificateRevocation>, StoreError> {
        revocations::all(self).await
    }

    async fn put_secret(
        &self,
        name: SecretName,
        record: SecretRecord,
    ) -> Result<Option<SecretRecord>, StoreError> {
        secrets::put(self, &name, &record).await
    }

    async fn secret(&self, name: SecretName) -> Result<Option<SecretRecord>, StoreError> {
        secrets::get(self, &name).await
    }

    async fn secrets(&self) -> Result<Vec<(SecretName, SecretRecord)>, StoreError> {
        secrets::all(self).await
    }

    async fn delete_secret(&self, name: SecretName) -> Result<Option<SecretRecord>, StoreError> {
        secrets::delete(self, &name).await
    }
}
