//! The `Fleet` service: highstate, minion listing and join tokens for operators and CI.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use brine_common::identity::CertRole;
use brine_common::names::{MinionId, RoleName, check_label};
use brine_common::outcome::{HighstateEvent, HostStatus, JobId, JobSummary};
use brine_common::spec::ImageRef;
use brine_common::target::Target;
use brine_common::token::JoinToken;
use brine_proto::pb;
use futures::Stream;
use rand::RngCore;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::highstate::{self, HighstateError, JobRequest};
use crate::job::{JobKind, RollbackError};
use crate::rollout::{BatchSize, MAX_BATCH_WAIT, Rollout};
use crate::state::{Master, now_unix_ms};
use crate::store::{
    Approval, ApprovalChange, EVENTS_KEPT, JobRecord, LockRecord, MinionRecord, TokenRecord,
};

/// Join tokens live one hour unless the caller asks otherwise, and 30 days at most.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// A lock taken by hand lasts an hour unless the caller asks otherwise, and 7 days at most.
const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(3600);
const MAX_LOCK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// A highstate waits 24 hours at most, whatever the caller asks.
const MAX_HIGHSTATE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

type HighstateStream = Pin<Box<dyn Stream<Item = Result<pb::HighstateEvent, Status>> + Send>>;

/// Hosts in a page of `ListMinions` unless the caller asks for fewer, and at most.
const DEFAULT_PAGE_SIZE: usize = 500;
const MAX_PAGE_SIZE: usize = 1000;
/// A page ends before it passes this, well under gRPC's default 4 MiB message limit.
const MAX_PAGE_BYTES: usize = 3 * 1024 * 1024;

/// The `Fleet` service.
pub struct FleetService {
    pub master: Arc<Master>,
    /// Plans take no lock, so nothing else stops a caller from running them back to back.
    pub plan_rate: PlanRate,
}

/// How many plans may start per minute, fleet-wide: each one asks every targeted host's
/// Docker engine about its containers.
const PLANS_PER_MINUTE: usize = 12;

/// The plans started within the last minute.
#[derive(Debug, Default)]
pub struct PlanRate {
    // A std mutex: never held across an await.
    started: std::sync::Mutex<std::collections::VecDeque<Instant>>,
}

impl PlanRate {
    /// Lets a plan start now, or says when one may.
    fn admit(&self, now: Instant) -> Result<(), Status> {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        while started
            .front()
            .is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(60))
        {
            started.pop_front();
        }
        if let Some(oldest) = started
            .front()
            .filter(|_| started.len() >= PLANS_PER_MINUTE)
        {
            let wait = Duration::from_secs(60).saturating_sub(now.duration_since(*oldest));
            return Err(Status::resource_exhausted(format!(
                "{PLANS_PER_MINUTE} plans started within the last minute; try again in {} s",
                wait.as_secs().max(1)
            )));
        }
        started.push_back(now);
        Ok(())
    }
}

impl From<HighstateError> for Status {
    fn from(err: HighstateError) -> Self {
        match err {
            HighstateError::Roles(_)
            | HighstateError::ImpossibleHosts(_)
            | HighstateError::Registry(_)
            | HighstateError::Locked(_) => Status::failed_precondition(err.to_string()),
            HighstateError::NoTargets(_) => Status::not_found(err.to_string()),
            HighstateError::UnknownRole(_) => Status::invalid_argument(err.to_string()),
            HighstateError::NotDeployable { .. } | HighstateError::TooLongForCi { .. } => {
                Status::permission_denied(err.to_string())
            }
            HighstateError::Rollback(ref rollback) => match rollback {
                RollbackError::NoRelease | RollbackError::NothingEarlier(_) => {
                    Status::failed_precondition(err.to_string())
                }
                RollbackError::UnknownRelease(_) => Status::not_found(err.to_string()),
                RollbackError::RoleNotInRelease { .. } => Status::invalid_argument(err.to_string()),
            },
            HighstateError::Store(err) => err.to_status(),
            HighstateError::DiskFull { .. } => {
                tracing::error!("refused a job: {err}");
                Status::resource_exhausted(err.to_string())
            }
        }
    }
}

/// Validates rollout options at the edge.
fn rollout_from_wire(rollout: pb::Rollout) -> Result<Rollout, Status> {
    let batch = rollout
        .batch
        .parse::<BatchSize>()
        .map_err(|err| Status::invalid_argument(format!("rollout.batch: {err}")))?;
    let batch_wait = Duration::from_millis(rollout.batch_wait_ms);
    if batch_wait > MAX_BATCH_WAIT {
        return Err(Status::invalid_argument(
            "rollout.batch_wait_ms: at most one hour",
        ));
    }
    Ok(Rollout {
        batch,
        batch_wait,
        canary: rollout.canary,
        max_failures: rollout.max_failures,
        auto_revert: rollout.auto_revert,
    })
}

/// Parses a request's target expression; an empty one targets every host.
fn parse_target(text: &str) -> Result<Option<Target>, Status> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    Target::parse(text)
        .map(Some)
        .map_err(|err| Status::invalid_argument(format!("target: {err}")))
}

fn store_failure(err: crate::store::StoreError) -> Status {
    err.to_status()
}

impl FleetService {
    /// Validates a job's timeout and rollout at the edge.
    fn job_options(
        &self,
        timeout_seconds: u32,
        rollout: Option<pb::Rollout>,
    ) -> Result<(Duration, Rollout), Status> {
        let timeout = match timeout_seconds {
            0 => self.master.config.highstate_timeout,
            seconds => Duration::from_secs(u64::from(seconds)),
        };
        if timeout > MAX_HIGHSTATE_TIMEOUT {
            return Err(Status::invalid_argument("timeout_seconds: at most 86400"));
        }
        let rollout = match rollout {
            Some(rollout) => rollout_from_wire(rollout)?,
            None => Rollout::default(),
        };
        Ok((timeout, rollout))
    }

    /// Answers `AcceptMinion` and `RejectMinion`.
    async fn approve(
        &self,
        request: Request<pb::MinionApprovalRequest>,
        approval: Approval,
    ) -> Result<Response<pb::MinionApprovalResponse>, Status> {
        let caller = Caller::of(&request)?.identity()?.to_string();
        self.set_approval(&caller, request.into_inner().minion_id, approval)
            .await?;
        Ok(Response::new(pb::MinionApprovalResponse {}))
    }

    /// Admits, rejects or revokes a host; a host no longer admitted loses its live link at once.
    /// Returns whether a link was dropped.
    async fn set_approval(
        &self,
        caller: &str,
        id: String,
        approval: Approval,
    ) -> Result<bool, Status> {
        let id = MinionId::new(id)
            .map_err(|err| Status::invalid_argument(format!("minion_id: {err}")))?;
        // The store first, so a reconnect racing with the drop is refused too.
        match self
            .master
            .store
            .set_approval(id.clone(), approval)
            .await
            .map_err(store_failure)?
        {
            ApprovalChange::Changed => {}
            ApprovalChange::ReplacementAccepted => {
                let disconnected = self.master.links.disconnect(&id);
                tracing::warn!(%caller, minion.id = %id, disconnected, "the replacing machine is accepted; the host's previous certificate is refused");
                return Ok(disconnected);
            }
            ApprovalChange::ReplacementRejected => {
                tracing::warn!(%caller, minion.id = %id, "the replacing machine is turned away; the host keeps its certificate");
                return Ok(false);
            }
            ApprovalChange::NotFound => {
                return Err(Status::not_found(format!("no enrolled minion {id}")));
            }
            ApprovalChange::Refused(current) => {
                return Err(Status::failed_precondition(format!(
                    "{id} is {}; it must join again with a token",
                    match current {
                        Approval::Rejected => "rejected",
                        _ => "revoked",
                    }
                )));
            }
        }
        let disconnected = approval != Approval::Accepted && self.master.links.disconnect(&id);
        tracing::warn!(%caller, minion.id = %id, ?approval, disconnected, "minion approval changed");
        Ok(disconnected)
    }

    /// A host as the fleet API shows it.
    fn minion_info(&self, m: MinionRecord) -> pb::MinionInfo {
        pb::MinionInfo {
            connected: self.master.links.is_connected(&m.id),
            id: m.id.into(),
            last_seen_unix_ms: m.last_seen_unix_ms,
            facts: Some(m.facts.into()),
            running: m.running.into_iter().map(Into::into).collect(),
            certificate_sha256: m.certificate_sha256,
            certificate_expires_unix_ms: m.certificate_expires_unix_ms,
            replacement_pending: m.pending_replacement.is_some(),
            clock_offset_ms: m.clock_offset_ms,
            join_labels: m.join_labels.into_iter().collect(),
            approval: match m.approval {
                Approval::Accepted => pb::Approval::Accepted,
                Approval::Pending => pb::Approval::Pending,
                Approval::Rejected => pb::Approval::Rejected,
                Approval::Revoked => pb::Approval::Revoked,
            }
            .into(),
        }
    }

    /// Runs a prepared job and streams its events to the caller.
    fn stream_job(&self, job: highstate::PreparedJob) -> Response<HighstateStream> {
        let events = highstate::spawn(self.master.clone(), job);
        let stream = ReceiverStream::new(events).map(|event| Ok(fitted(event.into())));
        Response::new(Box::pin(stream))
    }
}

#[tonic::async_trait]
impl pb::fleet_server::Fleet for FleetService {
    type HighstateStream = HighstateStream;

    async fn highstate(
        &self,
        request: Request<pb::HighstateRequest>,
    ) -> Result<Response<Self::HighstateStream>, Status> {
        let identity = Caller::of(&request)?.identity()?.clone();
        let request = request.into_inner();
        if request.plan {
            self.plan_rate.admit(Instant::now())?;
        }
        let target = parse_target(&request.target)?;
        let (timeout, rollout) = self.job_options(request.timeout_seconds, request.rollout)?;
        let job = highstate::prepare(
            &self.master,
            JobRequest {
                kind: JobKind::Highstate {
                    dry_run: request.plan,
                },
                target,
                timeout,
                rollout,
                caller: identity.to_string(),
                caller_role: identity.role,
                lock_message: request.lock_message,
            },
        )
        .await?;
        Ok(self.stream_job(job))
    }

    type DeployStream = HighstateStream;

    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<Self::DeployStream>, Status> {
        let identity = Caller::of(&request)?.identity()?.clone();
        let caller = identity.to_string();
        let request = request.into_inner();
        if request.roles.is_empty() {
            return Err(Status::invalid_argument("roles: name at least one role"));
        }
        let roles = request
            .roles
            .iter()
            .map(|role| {
                RoleName::new(role.trim())
                    .map_err(|err| Status::invalid_argument(format!("roles: {role:?} {err}")))
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        let image = ImageRef::new(request.image)
            .map_err(|err| Status::invalid_argument(format!("image: {err}")))?;
        let (timeout, rollout) = self.job_options(request.timeout_seconds, request.rollout)?;
        let job = highstate::prepare(
            &self.master,
            JobRequest {
                kind: JobKind::Deploy { roles, image },
                target: parse_target(&request.target)?,
                timeout,
                rollout,
                caller,
                caller_role: identity.role,
                lock_message: request.lock_message,
            },
        )
        .await?;
        Ok(self.stream_job(job))
    }

    type RollbackStream = HighstateStream;

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<Self::RollbackStream>, Status> {
        let identity = Caller::of(&request)?.identity()?.clone();
        let caller = identity.to_string();
        let request = request.into_inner();
        let role = match request.role.trim() {
            "" => None,
            role => Some(
                RoleName::new(role)
                    .map_err(|err| Status::invalid_argument(format!("role: {err}")))?,
            ),
        };
        let (timeout, rollout) = self.job_options(request.timeout_seconds, request.rollout)?;
        let job = highstate::prepare(
            &self.master,
            JobRequest {
                kind: JobKind::Rollback {
                    role,
                    release: (request.to_release != 0).then_some(request.to_release),
                },
                target: parse_target(&request.target)?,
                timeout,
                rollout,
                caller,
                caller_role: identity.role,
                lock_message: request.lock_message,
            },
        )
        .await?;
        Ok(self.stream_job(job))
    }

    async fn list_releases(
        &self,
        _request: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<pb::ListReleasesResponse>, Status> {
        let releases = self
            .master
            .store
            .releases()
            .await
            .map_err(store_failure)?
            .into_iter()
            .map(|r| pb::Release {
                id: r.id,
                job_id: r.job_id,
                caller: r.caller,
                created_at_unix_ms: r.created_at_unix_ms,
                pins: r
                    .pins
                    .into_iter()
                    .flat_map(|(role, containers)| {
                        containers
                            .into_iter()
                            .map(move |(container, image)| pb::Pin {
                                role: role.to_string(),
                                container: container.into(),
                                image: image.into(),
                            })
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListReleasesResponse { releases }))
    }

    async fn list_minions(
        &self,
        request: Request<pb::ListMinionsRequest>,
    ) -> Result<Response<pb::ListMinionsResponse>, Status> {
        let request = request.into_inner();
        let page_size = page_size(request.page_size);
        let after = page_token(&request.page_token)?;
        // One more than the page, to tell whether another page follows.
        let records = self
            .master
            .store
            .minions_after(after, page_size + 1)
            .await
            .map_err(store_failure)?;
        let (minions, next_page_token) = paged(
            records.into_iter().map(|record| self.minion_info(record)),
            page_size,
            |info| &info.id,
        );
        Ok(Response::new(pb::ListMinionsResponse {
            minions,
            next_page_token,
        }))
    }

    async fn get_minion(
        &self,
        request: Request<pb::GetMinionRequest>,
    ) -> Result<Response<pb::MinionDetail>, Status> {
        let id = MinionId::new(request.into_inner().minion_id)
            .map_err(|err| Status::invalid_argument(format!("minion_id: {err}")))?;
        let record = self
            .master
            .store
            .minion(id.clone())
            .await
            .map_err(store_failure)?
            .ok_or_else(|| Status::not_found(format!("no enrolled minion {id}")))?;
        let events = self
            .master
            .store
            .host_events(id, EVENTS_KEPT)
            .await
            .map_err(store_failure)?;
        Ok(Response::new(pb::MinionDetail {
            minion: Some(self.minion_info(record)),
            events: events.into_iter().map(Into::into).collect(),
        }))
    }

    async fn create_join_token(
        &self,
        request: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
        let caller = Caller::of(&request)?.identity()?.to_string();
        let request = request.into_inner();
        let ttl = match request.ttl_seconds {
            0 => DEFAULT_TOKEN_TTL,
            seconds => Duration::from_secs(seconds),
        };
        if ttl > MAX_TOKEN_TTL {
            return Err(Status::invalid_argument("ttl_seconds: at most 30 days"));
        }
        for (key, value) in &request.labels {
            check_label(key, value)
                .map_err(|err| Status::invalid_argument(format!("labels: {err}")))?;
        }
        let replaces =
            match request.replaces_minion_id.as_str() {
                "" => None,
                id => Some(MinionId::new(id).map_err(|err| {
                    Status::invalid_argument(format!("replaces_minion_id: {err}"))
                })?),
            };
        // A replacing token re-enrols one machine.
        let uses = if replaces.is_some() { 1 } else { request.uses };
        let mut secret = [0u8; 20];
        rand::rng().fill_bytes(&mut secret);
        let token = JoinToken {
            ca_digest: self.master.ca.digest().to_owned(),
            secret: hex::encode(secret),
        };
        let now = now_unix_ms();
        let expires_at_unix_ms = now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.master
            .store
            .add_token(TokenRecord {
                secret_sha256: token.secret_hash(),
                created_at_unix_ms: now,
                expires_at_unix_ms,
                uses_left: (uses > 0).then_some(uses),
                uses: 0,
                labels: request.labels.into_iter().collect(),
                replaces: replaces.clone(),
            })
            .await
            .map_err(store_failure)?;
        let id = token.public_id();
        tracing::info!(%caller, token.id = %id, ttl = %humantime::format_duration(ttl), uses, replaces = replaces.as_ref().map(MinionId::as_str), "join token created");
        Ok(Response::new(pb::CreateJoinTokenResponse {
            token: token.to_string(),
            expires_at_unix_ms,
            id,
        }))
    }

    async fn list_join_tokens(
        &self,
        _request: Request<pb::ListJoinTokensRequest>,
    ) -> Result<Response<pb::ListJoinTokensResponse>, Status> {
        let tokens = self
            .master
            .store
            .tokens()
            .await
            .map_err(store_failure)?
            .into_iter()
            .map(|t| pb::JoinTokenInfo {
                id: t.id,
                created_at_unix_ms: t.record.created_at_unix_ms,
                expires_at_unix_ms: t.record.expires_at_unix_ms,
                uses: t.record.uses,
                uses_left: t.record.uses_left,
                labels: t.record.labels.into_iter().collect(),
                replaces_minion_id: t.record.replaces.map(String::from).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ListJoinTokensResponse { tokens }))
    }

    async fn revoke_join_token(
        &self,
        request: Request<pb::RevokeJoinTokenRequest>,
    ) -> Result<Response<pb::RevokeJoinTokenResponse>, Status> {
        let caller = Caller::of(&request)?.identity()?.to_string();
        let id = request.into_inner().id;
        if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Status::invalid_argument(
                "id: a token id is 12 hex digits, as `token list` shows it",
            ));
        }
        match self
            .master
            .store
            .revoke_token(id.clone())
            .await
            .map_err(store_failure)?
        {
            false => Err(Status::not_found(format!("no join token {id}"))),
            true => {
                tracing::warn!(%caller, token.id = %id, "join token revoked");
                Ok(Response::new(pb::RevokeJoinTokenResponse {}))
            }
        }
    }

    async fn revoke_minion(
        &self,
        request: Request<pb::RevokeMinionRequest>,
    ) -> Result<Response<pb::RevokeMinionResponse>, Status> {
        let caller = Caller::of(&request)?.identity()?.to_string();
        let id = request.into_inner().minion_id;
        let disconnected = self.set_approval(&caller, id, Approval::Revoked).await?;
        Ok(Response::new(pb::RevokeMinionResponse { disconnected }))
    }

    async fn delete_minion(
        &self,
        request: Request<pb::DeleteMinionRequest>,
    ) -> Result<Response<pb::RevokeMinionResponse>, Status> {
        let caller = Caller::of(&request)?.identity()?.to_string();
        let id = MinionId::new(request.into_inner().minion_id)
            .map_err(|err| Status::invalid_argument(format!("minion_id: {err}")))?;
        // The store first, so a reconnect racing with the drop is refused too.
        if !self
            .master
            .store
            .delete_minion(id.clone())
            .await
            .map_err(store_failure)?
        {
            return Err(Status::not_found(format!("no enrolled minion {id}")));
        }
        let disconnected = self.master.links.disconnect(&id);
        tracing::warn!(%caller, minion.id = %id, disconnected, "minion deleted");
        Ok(Response::new(pb::RevokeMinionResponse { disconnected }))
    }

    async fn revoke_certificate(
        &self,
        request: Request<pb::RevokeCertificateRequest>,
    ) -> Result<Response<pb::RevokeCertificateResponse>, Status> {
        let caller = Caller::of(&request)?.identity()?.to_string();
        let request = request.into_inner();
        let role = match request.role.parse() {
            Ok(role @ (CertRole::Admin | CertRole::Ci)) => role,
            _ => {
                return Err(Status::invalid_argument(
                    "role: `admin` or `ci` (revoke a minion with RevokeMinion)",
                ));
            }
        };
        let name = MinionId::new(request.name)
            .map_err(|err| Status::invalid_argument(format!("name: {err}")))?;
        let now = now_unix_ms();
        self.master
            .store
            .revoke_certificates(role, name.to_string(), now)
            .await
            .map_err(store_failure)?;
        self.master.revocations.revoke(role, name.to_string(), now);
        tracing::warn!(%caller, name = %name, %role, "certificates revoked");
        Ok(Response::new(pb::RevokeCertificateResponse {
            revoked_at_unix_ms: now,
        }))
    }

    async fn accept_minion(
        &self,
        request: Request<pb::MinionApprovalRequest>,
    ) -> Result<Response<pb::MinionApprovalResponse>, Status> {
        self.approve(request, Approval::Accepted).await
    }

    async fn reject_minion(
        &self,
        request: Request<pb::MinionApprovalRequest>,
    ) -> Result<Response<pb::MinionApprovalResponse>, Status> {
        self.approve(request, Approval::Rejected).await
    }

    async fn get_lock(
        &self,
        _request: Request<pb::GetLockRequest>,
    ) -> Result<Response<pb::LockStatus>, Status> {
        let lock = self
            .master
            .store
            .current_lock(now_unix_ms())
            .await
            .map_err(store_failure)?;
        Ok(Response::new(lock_status(lock)))
    }

    async fn acquire_lock(
        &self,
        request: Request<pb::AcquireLockRequest>,
    ) -> Result<Response<pb::LockStatus>, Status> {
        let caller = Caller::of(&request)?.identity()?.to_string();
        let request = request.into_inner();
        if request.message.trim().is_empty() {
            return Err(Status::invalid_argument(
                "message: say why the fleet is locked",
            ));
        }
        let ttl = match request.ttl_seconds {
            0 => DEFAULT_LOCK_TTL,
            seconds => Duration::from_secs(seconds),
        };
        if ttl > MAX_LOCK_TTL {
            return Err(Status::invalid_argument("ttl_seconds: at most 7 days"));
        }
        let now = now_unix_ms();
        let lock = LockRecord {
            holder: caller.clone(),
            message: request.message,
            acquired_at_unix_ms: now,
            expires_at_unix_ms: now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            job_id: None,
        };
        match self
            .master
            .store
            .try_lock(lock.clone(), now)
            .await
            .map_err(store_failure)?
        {
            Ok(()) => {
                tracing::info!(%caller, message = %lock.message, "fleet locked");
                Ok(Response::new(lock_status(Some(lock))))
            }
            Err(held) => Err(Status::failed_precondition(highstate::describe_lock(&held))),
        }
    }

    async fn release_lock(
        &self,
        request: Request<pb::ReleaseLockRequest>,
    ) -> Result<Response<pb::ReleaseLockResponse>, Status> {
        let caller = Caller::of(&request)?.identity()?.to_string();
        let released = self
            .master
            .store
            .release_lock(None)
            .await
            .map_err(store_failure)?;
        if let Some(lock) = &released {
            tracing::warn!(%caller, holder = %lock.holder, "fleet lock released");
        }
        Ok(Response::new(pb::ReleaseLockResponse {
            released: Some(lock_status(released)),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => 50,
            n @ 1..=1000 => n,
            _ => return Err(Status::invalid_argument("limit: at most 1000")),
        };
        let jobs = self
            .master
            .store
            .jobs(usize::try_from(limit).unwrap_or(usize::MAX))
            .await
            .map_err(store_failure)?
            .into_iter()
            .map(|job| job_to_wire(job, HostPage::None))
            .collect();
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let caller = Caller::of(&request)?.identity()?.to_string();
        let id = JobId::new(request.into_inner().job_id)
            .map_err(|err| Status::invalid_argument(format!("job_id: {err}")))?;
        if !self.master.router.cancel(&id, &caller) {
            return Err(Status::not_found(format!("no job {id} is running")));
        }
        tracing::warn!(%caller, job.id = %id, "job cancelled");
        Ok(Response::new(pb::CancelJobResponse {}))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::JobRecord>, Status> {
        let request = request.into_inner();
        let id = JobId::new(request.job_id)
            .map_err(|err| Status::invalid_argument(format!("job_id: {err}")))?;
        let hosts = HostPage::After {
            after: page_token(&request.page_token)?,
            size: page_size(request.page_size),
        };
        match self
            .master
            .store
            .job(id.to_string())
            .await
            .map_err(store_failure)?
        {
            Some(job) => Ok(Response::new(job_to_wire(job, hosts))),
            None => Err(Status::not_found(format!("no job {id}"))),
        }
    }
}

fn lock_status(lock: Option<LockRecord>) -> pb::LockStatus {
    match lock {
        Some(lock) => pb::LockStatus {
            locked: true,
            holder: lock.holder,
            message: lock.message,
            acquired_at_unix_ms: lock.acquired_at_unix_ms,
            expires_at_unix_ms: lock.expires_at_unix_ms,
            job_id: lock.job_id.unwrap_or_default(),
        },
        None => pb::LockStatus::default(),
    }
}

/// `event` as it can be sent: a job's closing summary leaves out the host reports when they
/// would not fit one message (each came in its own `HostFinished` event).
fn fitted(mut event: pb::HighstateEvent) -> pb::HighstateEvent {
    if let Some(pb::highstate_event::Kind::Summary(summary)) = &mut event.kind
        && prost::Message::encoded_len(summary) > MAX_PAGE_BYTES
    {
        summary.hosts.clear();
        summary.hosts_in_events = true;
    }
    event
}

/// A recorded job for the wire: its counts, and `hosts` of its host reports (in id order).
fn job_to_wire(job: JobRecord, hosts: HostPage) -> pb::JobRecord {
    let counts = job_counts(&job.summary);
    let summary = pb::HighstateEvent::from(HighstateEvent::Summary(job.summary));
    let mut summary = match summary.kind {
        Some(pb::highstate_event::Kind::Summary(summary)) => summary,
        _ => pb::JobSummary::default(),
    };
    let all_hosts = std::mem::take(&mut summary.hosts);
    let (page, next_page_token) = match hosts {
        HostPage::None => (vec![], String::new()),
        HostPage::After { after, size } => paged(
            all_hosts.into_iter().filter(|h| {
                after
                    .as_ref()
                    .is_none_or(|after| h.minion_id.as_str() > after.as_str())
            }),
            size,
            |host| &host.minion_id,
        ),
    };
    summary.hosts = page;
    pb::JobRecord {
        caller: job.caller,
        target: job.target,
        plan: job.plan,
        running: job.running,
        summary: Some(summary),
        counts: Some(counts),
        next_page_token,
    }
}

/// Which of a job's host reports to send.
enum HostPage {
    None,
    /// Up to `size` reports after host `after` (from the first without it).
    After {
        after: Option<MinionId>,
        size: usize,
    },
}

/// The first `items` that make one page: at most `size` of them, ending before
/// [`MAX_PAGE_BYTES`] (a first item larger than that still goes alone). The token of the next
/// page is the `key` of the last item sent, or empty when nothing is left.
fn paged<T: prost::Message>(
    items: impl IntoIterator<Item = T>,
    size: usize,
    key: impl Fn(&T) -> &String,
) -> (Vec<T>, String) {
    let mut page = vec![];
    let mut bytes = 0;
    let mut more = false;
    for item in items {
        let item_bytes = item.encoded_len();
        if page.len() == size || (!page.is_empty() && bytes + item_bytes > MAX_PAGE_BYTES) {
            more = true;
            break;
        }
        bytes += item_bytes;
        page.push(item);
    }
    let token = match page.last() {
        Some(last) if more => key(last).clone(),
        _ => String::new(),
    };
    (page, token)
}

fn job_counts(summary: &JobSummary) -> pb::JobCounts {
    let mut counts = pb::JobCounts::default();
    for host in &summary.hosts {
        let count = match host.status {
            HostStatus::Unchanged => &mut counts.unchanged,
            HostStatus::Changed => &mut counts.changed,
            HostStatus::Failed => &mut counts.failed,
            HostStatus::Unreachable => &mut counts.unreachable,
            HostStatus::TimedOut => &mut counts.timed_out,
            HostStatus::Skipped => &mut counts.skipped,
            HostStatus::Interrupted => &mut counts.interrupted,
        };
        *count += 1;
    }
    counts
}

/// A page size from a request: 0 means the default; never more than the maximum.
fn page_size(requested: u32) -> usize {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => usize::try_from(n)
            .unwrap_or(MAX_PAGE_SIZE)
            .min(MAX_PAGE_SIZE),
    }
}

/// The host id a page token names.
fn page_token(token: &str) -> Result<Option<MinionId>, Status> {
    match token {
        "" => Ok(None),
        token => MinionId::new(token).map(Some).map_err(|err| {
            Status::invalid_argument(format!("page_token: not one this master gave: {err}"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use brine_common::outcome::{ContainerResult, HostReport};

    use super::*;

    fn host(id: &str, image_bytes: usize) -> HostReport {
        HostReport {
            minion_id: MinionId::new(id).unwrap(),
            status: HostStatus::Changed,
            containers: vec![ContainerResult {
                name: brine_common::names::ContainerName::new("web").unwrap(),
                role: None,
                action: brine_common::outcome::ContainerAction::Kept,
                image: "i".repeat(image_bytes),
                image_digest: String::new(),
                error: None,
                previous_restored: false,
                needs_pull: false,
            }],
            error: None,
            duration_ms: 1,
            timings: Default::default(),
            reported_late: false,
        }
    }

    #[test]
    fn job_hosts_come_in_pages_by_count_and_by_size() {
        let page_after = |hosts: &[HostReport], after: &str, size: usize| {
            let wire = hosts
                .iter()
                .cloned()
                .map(pb::HostReport::from)
                .filter(|h| h.minion_id.as_str() > after);
            let (page, token) = paged(wire, size, |h| &h.minion_id);
            let ids: Vec<String> = page.into_iter().map(|h| h.minion_id).collect();
            (ids, token)
        };
        let hosts: Vec<HostReport> = (0..5).map(|n| host(&format!("web-{n}"), 10)).collect();
        assert_eq!(
            page_after(&hosts, "", 2),
            (vec!["web-0".into(), "web-1".into()], "web-1".into())
        );
        assert_eq!(
            page_after(&hosts, "web-1", 2),
            (vec!["web-2".into(), "web-3".into()], "web-3".into())
        );
        assert_eq!(
            page_after(&hosts, "web-3", 2),
            (vec!["web-4".into()], String::new())
        );

        // Reports of a megabyte each: two to a page of at most 3 MiB, whatever the page size.
        let big: Vec<HostReport> = (0..5).map(|n| host(&format!("big-{n}"), 1 << 20)).collect();
        let (page, token) = page_after(&big, "", 1000);
        assert_eq!((page.len(), token.as_str()), (2, "big-1"));
    }

    #[test]
    fn a_summary_too_large_for_one_message_leaves_its_hosts_to_the_events() {
        let hosts: Vec<pb::HostReport> = (0..5)
            .map(|n| pb::HostReport::from(host(&format!("big-{n}"), 1 << 20)))
            .collect();
        let event = pb::HighstateEvent {
            kind: Some(pb::highstate_event::Kind::Summary(pb::JobSummary {
                job_id: "j".into(),
                hosts,
                ..Default::default()
            })),
        };
        let Some(pb::highstate_event::Kind::Summary(sent)) = fitted(event).kind else {
            panic!("a summary");
        };
        assert!(
            sent.hosts.is_empty() && sent.hosts_in_events,
            "{}",
            sent.hosts.len()
        );
        assert!(prost::Message::encoded_len(&sent) < 4 * 1024 * 1024);
    }
}
