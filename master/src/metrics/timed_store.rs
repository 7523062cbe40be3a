//! The store with each call timed into `brine_store_operation_duration_seconds`, by
//! operation: wrapped around whichever store master.toml chose, so redb and etcd are measured
//! the same way and neither knows about metrics.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brine_common::fleet_event::HookFailure;
use brine_common::host::HostEvent;
use brine_common::identity::CertRole;
use brine_common::names::{MinionId, SecretName};
use brine_common::outcome::{HostReport, JobId};

use super::Metrics;
use crate::pki::SignedCertificate;
use crate::release::{Pins, Release};
use crate::store::{
    Approval, ApprovalChange, CertificateCheck, CertificateRevocation, FleetClaim, HostChanges,
    HostHello, JobOwner, JobPlanRecord, JobRecord, JobRetention, JoinAttempt, JoinOutcome, Lease,
    LinkChanges, ListedToken, LockRecord, MasterAnnouncement, MinionRecord, NewRoles, Relayed,
    RelayedMessages, ReleasedJobs, Renewal, RolesApplied, RolesVersion, SecretRecord, Store,
    StoreError, TokenCheck, TokenRecord,
};

/// A [`Store`] that times every call of the one it wraps.
pub struct TimedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl TimedStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(&self, operation: &'static str, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = call.await;
        self.metrics.store_call(operation, started.elapsed());
        result
    }
}

#[async_trait::async_trait]
impl Store for TimedStore {
    async fn available_bytes(&self) -> Result<u64, StoreError> {
        self.timed("available_bytes", self.inner.available_bytes())
            .await
    }

    async fn claim_fleet(&self, ca_sha256: String) -> Result<FleetClaim, StoreError> {
        self.timed("claim_fleet", self.inner.claim_fleet(ca_sha256))
            .await
    }

    async fn join(&self, attempt: JoinAttempt) -> Result<JoinOutcome, StoreError> {
        self.timed("join", self.inner.join(attempt)).await
    }

    async fn record_hello(
        &self,
        id: MinionId,
        certificate_sha256: String,
        hello: HostHello,
    ) -> Result<CertificateCheck, StoreError> {
        self.timed(
            "record_hello",
            self.inner.record_hello(id, certificate_sha256, hello),
        )
        .await
    }

    async fn renew_certificate(
        &self,
        id: MinionId,
        caller_sha256: String,
        renewed: SignedCertificate,
        renewed_pem: String,
    ) -> Result<Renewal, StoreError> {
        self.timed(
            "renew_certificate",
            self.inner
                .renew_certificate(id, caller_sha256, renewed, renewed_pem),
        )
        .await
    }

    async fn certificate_check(
        &self,
        id: MinionId,
        certificate_sha256: String,
    ) -> Result<CertificateCheck, StoreError> {
        self.timed(
            "certificate_check",
            self.inner.certificate_check(id, certificate_sha256),
        )
        .await
    }

    async fn set_approval(
        &self,
        id: MinionId,
        approval: Approval,
    ) -> Result<ApprovalChange, StoreError> {
        self.timed("set_approval", self.inner.set_approval(id, approval))
            .await
    }

    async fn follow_host_changes(&self) -> Result<HostChanges, StoreError> {
        self.timed("follow_host_changes", self.inner.follow_host_changes())
            .await
    }

    async fn import_minion(&self, record: MinionRecord) -> Result<bool, StoreError> {
        self.timed("import_minion", self.inner.import_minion(record))
            .await
    }

    async fn delete_minion(&self, id: MinionId) -> Result<bool, StoreError> {
        self.timed("delete_minion", self.inner.delete_minion(id))
            .await
    }

    async fn minion(&self, id: MinionId) -> Result<Option<MinionRecord>, StoreError> {
        self.timed("minion", self.inner.minion(id)).await
    }

    async fn minions_after(
        &self,
        after: Option<MinionId>,
        limit: usize,
    ) -> Result<Vec<MinionRecord>, StoreError> {
        self.timed("minions_after", self.inner.minions_after(after, limit))
            .await
    }

    async fn minions(&self) -> Result<Vec<MinionRecord>, StoreError> {
        self.timed("minions", self.inner.minions()).await
    }

    async fn record_host_event(&self, id: MinionId, event: HostEvent) -> Result<bool, StoreError> {
        self.timed("record_host_event", self.inner.record_host_event(id, event))
            .await
    }

    async fn host_events(&self, id: MinionId, limit: usize) -> Result<Vec<HostEvent>, StoreError> {
        self.timed("host_events", self.inner.host_events(id, limit))
            .await
    }

    async fn record_hook_failure(&self, failure: HookFailure) -> Result<(), StoreError> {
        self.timed(
            "record_hook_failure",
            self.inner.record_hook_failure(failure),
        )
        .await
    }

    async fn hook_failures(&self, limit: usize) -> Result<Vec<HookFailure>, StoreError> {
        self.timed("hook_failures", self.inner.hook_failures(limit))
            .await
    }

    async fn add_token(&self, record: TokenRecord) -> Result<(), StoreError> {
        self.timed("add_token", self.inner.add_token(record)).await
    }

    async fn check_token(
        &self,
        secret_hash: String,
        now_unix_ms: i64,
    ) -> Result<TokenCheck, StoreError> {
        self.timed(
            "check_token",
            self.inner.check_token(secret_hash, now_unix_ms),
        )
        .await
    }

    async fn tokens(&self) -> Result<Vec<ListedToken>, StoreError> {
        self.timed("tokens", self.inner.tokens()).await
    }

    async fn revoke_token(&self, id: String) -> Result<bool, StoreError> {
        self.timed("revoke_token", self.inner.revoke_token(id))
            .await
    }

    async fn record_job(&self, job: JobRecord, retention: JobRetention) -> Result<(), StoreError> {
        self.timed("record_job", self.inner.record_job(job, retention))
            .await
    }

    async fn record_late_report(
        &self,
        job_id: JobId,
        report: HostReport,
    ) -> Result<bool, StoreError> {
        self.timed(
            "record_late_report",
            self.inner.record_late_report(job_id, report),
        )
        .await
    }

    async fn record_job_progress(&self, job: JobRecord) -> Result<(), StoreError> {
        self.timed("record_job_progress", self.inner.record_job_progress(job))
            .await
    }

    async fn interrupt_running_jobs(
        &self,
        now_unix_ms: i64,
        run_by: Option<String>,
    ) -> Result<Vec<String>, StoreError> {
        self.timed(
            "interrupt_running_jobs",
            self.inner.interrupt_running_jobs(now_unix_ms, run_by),
        )
        .await
    }

    async fn jobs_before(
        &self,
        before: Option<String>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        self.timed("jobs_before", self.inner.jobs_before(before, limit))
            .await
    }

    async fn job_with_request(&self, request_id: String) -> Result<Option<JobRecord>, StoreError> {
        self.timed("job_with_request", self.inner.job_with_request(request_id))
            .await
    }

    async fn job(&self, id: String) -> Result<Option<JobRecord>, StoreError> {
        self.timed("job", self.inner.job(id)).await
    }

    async fn try_lock(
        &self,
        lock: LockRecord,
        now_unix_ms: i64,
    ) -> Result<Result<(), LockRecord>, StoreError> {
        self.timed("try_lock", self.inner.try_lock(lock, now_unix_ms))
            .await
    }

    async fn current_lock(&self, now_unix_ms: i64) -> Result<Option<LockRecord>, StoreError> {
        self.timed("current_lock", self.inner.current_lock(now_unix_ms))
            .await
    }

    async fn release_lock(&self, job_id: Option<String>) -> Result<Option<LockRecord>, StoreError> {
        self.timed("release_lock", self.inner.release_lock(job_id))
            .await
    }

    async fn add_release(
        &self,
        job_id: String,
        caller: String,
        created_at_unix_ms: i64,
        pins: Pins,
    ) -> Result<Release, StoreError> {
        self.timed(
            "add_release",
            self.inner
                .add_release(job_id, caller, created_at_unix_ms, pins),
        )
        .await
    }

    async fn latest_release(&self) -> Result<Option<Release>, StoreError> {
        self.timed("latest_release", self.inner.latest_release())
            .await
    }

    async fn releases(&self) -> Result<Vec<Release>, StoreError> {
        self.timed("releases", self.inner.releases()).await
    }

    async fn announce_master(&self, announcement: MasterAnnouncement) -> Result<(), StoreError> {
        self.timed("announce_master", self.inner.announce_master(announcement))
            .await
    }

    async fn masters(&self, now_unix_ms: i64) -> Result<Vec<MasterAnnouncement>, StoreError> {
        self.timed("masters", self.inner.masters(now_unix_ms)).await
    }

    async fn record_link(&self, host: MinionId, master: String) -> Result<(), StoreError> {
        self.timed("record_link", self.inner.record_link(host, master))
            .await
    }

    async fn forget_link(&self, host: MinionId, master: String) -> Result<(), StoreError> {
        self.timed("forget_link", self.inner.forget_link(host, master))
            .await
    }

    async fn forget_links_of(&self, master: String) -> Result<(), StoreError> {
        self.timed("forget_links_of", self.inner.forget_links_of(master))
            .await
    }

    async fn follow_links(&self) -> Result<LinkChanges, StoreError> {
        self.timed("follow_links", self.inner.follow_links()).await
    }

    async fn relay(&self, to: String, message: Relayed) -> Result<(), StoreError> {
        self.timed("relay", self.inner.relay(to, message)).await
    }

    async fn follow_relayed(&self, master: String) -> Result<RelayedMessages, StoreError> {
        self.timed("follow_relayed", self.inner.follow_relayed(master))
            .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Box<dyn Lease>, StoreError> {
        self.timed("grant_lease", self.inner.grant_lease(ttl)).await
    }

    async fn claim_job(
        &self,
        job: JobId,
        owner: JobOwner,
        plan: Option<JobPlanRecord>,
    ) -> Result<bool, StoreError> {
        self.timed("claim_job", self.inner.claim_job(job, owner, plan))
            .await
    }

    async fn job_plan(&self, job: JobId) -> Result<Option<JobPlanRecord>, StoreError> {
        self.timed("job_plan", self.inner.job_plan(job)).await
    }

    async fn running_jobs(&self) -> Result<Vec<(JobId, Option<JobOwner>)>, StoreError> {
        self.timed("running_jobs", self.inner.running_jobs()).await
    }

    async fn follow_released_jobs(&self) -> Result<ReleasedJobs, StoreError> {
        self.timed("follow_released_jobs", self.inner.follow_released_jobs())
            .await
    }

    async fn interrupt_job(&self, job: JobId, now_unix_ms: i64) -> Result<bool, StoreError> {
        self.timed("interrupt_job", self.inner.interrupt_job(job, now_unix_ms))
            .await
    }

    async fn apply_roles(&self, new: NewRoles) -> Result<RolesApplied, StoreError> {
        self.timed("apply_roles", self.inner.apply_roles(new)).await
    }

    async fn roles_version(
        &self,
        version: Option<u64>,
    ) -> Result<Option<RolesVersion>, StoreError> {
        self.timed("roles_version", self.inner.roles_version(version))
            .await
    }

    async fn roles_versions(&self) -> Result<Vec<RolesVersion>, StoreError> {
        self.timed("roles_versions", self.inner.roles_versions())
            .await
    }

    async fn revoke_certificates(
        &self,
        role: CertRole,
        name: String,
        now_unix_ms: i64,
    ) -> Result<(), StoreError> {
        self.timed(
            "revoke_certificates",
            self.inner.revoke_certificates(role, name, now_unix_ms),
        )
        .await
    }

    async fn certificate_revocations(&self) -> Result<Vec<CertificateRevocation>, StoreError> {
        self.timed(
            "certificate_revocations",
            self.inner.certificate_revocations(),
        )
        .await
    }

    async fn put_secret(
        &self,
        name: SecretName,
        record: SecretRecord,
    ) -> Result<Option<SecretRecord>, StoreError> {
        self.timed("put_secret", self.inner.put_secret(name, record))
            .await
    }

    async fn secret(&self, name: SecretName) -> Result<Option<SecretRecord>, StoreError> {
        self.timed("secret", self.inner.secret(name)).await
    }

    async fn secrets(&self) -> Result<Vec<(SecretName, SecretRecord)>, StoreError> {
        self.timed("secrets", self.inner.secrets()).await
    }

    async fn delete_secret(&self, name: SecretName) -> Result<Option<SecretRecord>, StoreError> {
        self.timed("delete_secret", self.inner.delete_secret(name))
            .await
    }
}
