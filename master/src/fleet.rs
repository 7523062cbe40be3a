//! The `Fleet` service: highstate, minion listing and join tokens for operators and CI.
//!
//! This file holds the service and its table of RPCs; each RPC is answered in the module of
//! what it acts on: `jobs.rs` (highstate, deploy, rollback, releases, recorded jobs),
//! `hosts.rs` (listing and admission), `credentials.rs` (join tokens, certificate
//! revocations) and `lock.rs` (the fleet lock), with `paging.rs` for long answers.

use std::pin::Pin;
use std::sync::Arc;

use brine_proto::pb;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::state::Master;

mod credentials;
mod hosts;
mod jobs;
mod lock;
mod paging;
#[cfg(test)]
mod tests;

pub use jobs::PlanRate;

type HighstateStream = Pin<Box<dyn Stream<Item = Result<pb::HighstateEvent, Status>> + Send>>;

/// The `Fleet` service.
pub struct FleetService {
    pub master: Arc<Master>,
    /// Plans take no lock, so nothing else stops a caller from running them back to back.
    pub plan_rate: PlanRate,
}

fn store_failure(err: crate::store::StoreError) -> Status {
    err.to_status()
}

#[tonic::async_trait]
impl pb::fleet_server::Fleet for FleetService {
    type HighstateStream = HighstateStream;

    async fn highstate(
        &self,
        request: Request<pb::HighstateRequest>,
    ) -> Result<Response<Self::HighstateStream>, Status> {
        jobs::highstate(self, request).await
    }

    type DeployStream = HighstateStream;

    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<Self::DeployStream>, Status> {
        jobs::deploy(self, request).await
    }

    type RollbackStream = HighstateStream;

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<Self::RollbackStream>, Status> {
        jobs::rollback(self, request).await
    }

    async fn list_releases(
        &self,
        request: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<pb::ListReleasesResponse>, Status> {
        jobs::list_releases(self, request).await
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
    ) -> Result<Response<pb::MinionDetail>, Status> {
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
    ) -> Result<Response<pb::RevokeMinionResponse>, Status> {
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
        request: Request<pb::MinionApprovalRequest>,
    ) -> Result<Response<pb::MinionApprovalResponse>, Status> {
        hosts::accept_minion(self, request).await
    }

    async fn reject_minion(
        &self,
        request: Request<pb::MinionApprovalRequest>,
    ) -> Result<Response<pb::MinionApprovalResponse>, Status> {
        hosts::reject_minion(self, request).await
    }

    async fn get_lock(
        &self,
        request: Request<pb::GetLockRequest>,
    ) -> Result<Response<pb::LockStatus>, Status> {
        lock::get_lock(self, request).await
    }

    async fn acquire_lock(
        &self,
        request: Request<pb::AcquireLockRequest>,
    ) -> Result<Response<pb::LockStatus>, Status> {
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
    ) -> Result<Response<pb::JobRecord>, Status> {
        jobs::get_job(self, request).await
    }
}
