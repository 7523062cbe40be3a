//! The `FleetService`: jobs, hosts, join tokens and the lock, for operators and CI.
//!
//! This file holds the service and its table of RPCs; each RPC is answered in the module of
//! what it acts on: `jobs.rs` (highstate, deploy, rollback, following and recorded jobs) with
//! `job_options.rs` (what every job request carries, and what a refused job tells its caller),
//! `releases.rs`, `hosts.rs` (listing and admission), `credentials.rs` (join tokens,
//! certificate revocations), `lock.rs` (the fleet lock), `sessions.rs` (a role's containers'
//! logs, and commands run in them) and `events.rs` (the fleet's events and failed hook
//! deliveries) and `dashboard.rs` (the web dashboard's sign-in links and sessions), with
//! `paging.rs` for long answers.

use std::pin::Pin;
use std::sync::Arc;

use brine_proto::{errors, pb};
use futures::Stream;
use tonic::{Code, Request, Response, Status};

use crate::state::Master;

mod credentials;
mod dashboard;
mod events;
mod hosts;
mod job_options;
mod jobs;
mod lock;
mod paging;
mod releases;
mod roles;
mod secrets;
mod sessions;
#[cfg(test)]
mod tests;

pub use job_options::PlanRate;

/// A job's events as one RPC streams them, each wrapped in that RPC's response message.
type JobStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The `FleetService`.
pub struct FleetService {
    pub master: Arc<Master>,
    /// Plans take no lock, so nothing else stops a caller from running them back to back.
    pub plan_rate: PlanRate,
}

/// What a remote caller is told of a store failure: whether the master's disk is full, which an
/// operator must fix, and otherwise only that the store failed; the details go to the master's
/// log.
pub(crate) fn store_failure(err: crate::store::StoreError) -> Status {
    tracing::error!("{err}");
    if err.is_disk_full() {
        errors::failure(
            Code::ResourceExhausted,
            pb::ErrorReason::DiskFull,
            "the master's disk is full: it can record nothing (so it starts no job and enrols no \
             host) until space is freed where its data directory is",
            [],
        )
    } else {
        errors::failure(
            Code::Unavailable,
            pb::ErrorReason::StoreFailed,
            "the master's store failed; see the master's log",
            [],
        )
    }
}

#[tonic::async_trait]
impl pb::fleet_service_server::FleetService for FleetService {
    type HighstateStream = JobStream<pb::HighstateResponse>;

    async fn highstate(
        &self,
        request: Request<pb::HighstateRequest>,
    ) -> Result<Response<Self::HighstateStream>, Status> {
        jobs::highstate(self, request).await
    }

    type DeployStream = JobStream<pb::DeployResponse>;

    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<Self::DeployStream>, Status> {
        jobs::deploy(self, request).await
    }

    type RollbackStream = JobStream<pb::RollbackResponse>;

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<Self::RollbackStream>, Status> {
        jobs::rollback(self, request).await
    }

    type ContainerLogsStream = JobStream<pb::ContainerLogsResponse>;

    async fn container_logs(
        &self,
        request: Request<pb::ContainerLogsRequest>,
    ) -> Result<Response<Self::ContainerLogsStream>, Status> {
        sessions::container_logs(self, request).await
    }

    type ExecStream = JobStream<pb::ExecResponse>;

    async fn exec(
        &self,
        request: Request<pb::ExecRequest>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        sessions::exec(self, request).await
    }

    type WatchJobStream = JobStream<pb::WatchJobResponse>;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        jobs::watch_job(self, request).await
    }

    async fn list_releases(
        &self,
        request: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<pb::ListReleasesResponse>, Status> {
        releases::list_releases(self, request).await
    }

    async fn list_minions(
        &self,
        request: Request<pb::ListMinionsRequest>,
    ) -> Result<Response<pb::ListMinionsResponse>, Status> {
        hosts::list_minions(self, request).await
    }

    async fn get_minion(
        &self,
        request: Request<pb::GetMinionRequest>,
    ) -> Result<Response<pb::GetMinionResponse>, Status> {
        hosts::get_minion(self, request).await
    }

    async fn create_join_token(
        &self,
        request: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
        credentials::create_join_token(self, request).await
    }

    async fn list_join_tokens(
        &self,
        request: Request<pb::ListJoinTokensRequest>,
    ) -> Result<Response<pb::ListJoinTokensResponse>, Status> {
        credentials::list_join_tokens(self, request).await
    }

    async fn revoke_join_token(
        &self,
        request: Request<pb::RevokeJoinTokenRequest>,
    ) -> Result<Response<pb::RevokeJoinTokenResponse>, Status> {
        credentials::revoke_join_token(self, request).await
    }

    async fn revoke_minion(
        &self,
        request: Request<pb::RevokeMinionRequest>,
    ) -> Result<Response<pb::RevokeMinionResponse>, Status> {
        hosts::revoke_minion(self, request).await
    }

    async fn delete_minion(
        &self,
        request: Request<pb::DeleteMinionRequest>,
    ) -> Result<Response<pb::DeleteMinionResponse>, Status> {
        hosts::delete_minion(self, request).await
    }

    async fn revoke_certificate(
        &self,
        request: Request<pb::RevokeCertificateRequest>,
    ) -> Result<Response<pb::RevokeCertificateResponse>, Status> {
        credentials::revoke_certificate(self, request).await
    }

    async fn accept_minion(
        &self,
        request: Request<pb::AcceptMinionRequest>,
    ) -> Result<Response<pb::AcceptMinionResponse>, Status> {
        hosts::accept_minion(self, request).await
    }

    async fn reject_minion(
        &self,
        request: Request<pb::RejectMinionRequest>,
    ) -> Result<Response<pb::RejectMinionResponse>, Status> {
        hosts::reject_minion(self, request).await
    }

    async fn get_lock(
        &self,
        request: Request<pb::GetLockRequest>,
    ) -> Result<Response<pb::GetLockResponse>, Status> {
        lock::get_lock(self, request).await
    }

    async fn acquire_lock(
        &self,
        request: Request<pb::AcquireLockRequest>,
    ) -> Result<Response<pb::AcquireLockResponse>, Status> {
        lock::acquire_lock(self, request).await
    }

    async fn release_lock(
        &self,
        request: Request<pb::ReleaseLockRequest>,
    ) -> Result<Response<pb::ReleaseLockResponse>, Status> {
        lock::release_lock(self, request).await
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        jobs::list_jobs(self, request).await
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        jobs::cancel_job(self, request).await
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        jobs::get_job(self, request).await
    }

    async fn get_version(
        &self,
        _request: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::GetVersionResponse>, Status> {
        Ok(Response::new(pb::GetVersionResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            api: "brine.v1".to_owned(),
            commit: brine_daemon::COMMIT.to_owned(),
        }))
    }

    async fn apply_roles(
        &self,
        request: Request<pb::ApplyRolesRequest>,
    ) -> Result<Response<pb::ApplyRolesResponse>, Status> {
        roles::apply_roles(self, request).await
    }

    async fn get_roles(
        &self,
        request: Request<pb::GetRolesRequest>,
    ) -> Result<Response<pb::GetRolesResponse>, Status> {
        roles::get_roles(self, request).await
    }

    async fn list_roles_versions(
        &self,
        request: Request<pb::ListRolesVersionsRequest>,
    ) -> Result<Response<pb::ListRolesVersionsResponse>, Status> {
        roles::list_roles_versions(self, request).await
    }

    async fn set_secret(
        &self,
        request: Request<pb::SetSecretRequest>,
    ) -> Result<Response<pb::SetSecretResponse>, Status> {
        secrets::set_secret(self, request).await
    }

    async fn list_secrets(
        &self,
        request: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsResponse>, Status> {
        secrets::list_secrets(self, request).await
    }

    async fn delete_secret(
        &self,
        request: Request<pb::DeleteSecretRequest>,
    ) -> Result<Response<pb::DeleteSecretResponse>, Status> {
        secrets::delete_secret(self, request).await
    }

    type WatchStream = JobStream<pb::WatchResponse>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        events::watch(self, request).await
    }

    async fn list_hook_failures(
        &self,
        request: Request<pb::ListHookFailuresRequest>,
    ) -> Result<Response<pb::ListHookFailuresResponse>, Status> {
        events::list_hook_failures(self, request).await
    }

    async fn create_dashboard_login(
        &self,
        request: Request<pb::CreateDashboardLoginRequest>,
    ) -> Result<Response<pb::CreateDashboardLoginResponse>, Status> {
        dashboard::create_dashboard_login(self, request).await
    }

    async fn list_dashboard_sessions(
        &self,
        request: Request<pb::ListDashboardSessionsRequest>,
    ) -> Result<Response<pb::ListDashboardSessionsResponse>, Status> {
        dashboard::list_dashboard_sessions(self, request).await
    }

    async fn revoke_dashboard_session(
        &self,
        request: Request<pb::RevokeDashboardSessionRequest>,
    ) -> Result<Response<pb::RevokeDashboardSessionResponse>, Status> {
        dashboard::revoke_dashboard_session(self, request).await
    }
}
