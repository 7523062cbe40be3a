//! The `Enrolment` service: a join token and a CSR become a minion certificate.

use std::sync::Arc;

use brine_common::names::MinionId;
use brine_common::token::{JoinToken, sha256_hex};
use brine_proto::pb;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::state::{Master, now_unix_ms};
use crate::store::TokenCheck;

/// The `Enrolment` service.
pub struct EnrolmentService {
    pub master: Arc<Master>,
}

#[tonic::async_trait]
impl pb::enrolment_server::Enrolment for EnrolmentService {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let peer = Caller::of(&request)?.peer;
        let request = request.into_inner();
        let refuse = |reason: &str| {
            tracing::warn!(peer = ?peer, minion.id = %request.minion_id, reason, "join refused");
            Status::unauthenticated(format!("join refused: {reason}"))
        };
        let token: JoinToken = request
            .token
            .parse()
            .map_err(|err| Status::invalid_argument(format!("token: {err}")))?;
        if token.ca_digest != self.master.ca.digest() {
            return Err(refuse("the token was issued by another master"));
        }
        let check = self
            .master
            .store
            .check_token(token.secret_hash(), now_unix_ms())
            .await
            .map_err(|err| {
                tracing::error!("{err}");
                Status::unavailable("the master's store failed")
            })?;
        match check {
            TokenCheck::Valid => {}
            TokenCheck::Unknown => return Err(refuse("unknown token")),
            TokenCheck::Expired => return Err(refuse("the token has expired")),
        }
        let minion_id = MinionId::new(request.minion_id.clone())
            .map_err(|err| Status::invalid_argument(format!("minion_id: {err}")))?;
        let cert_pem = self
            .master
            .ca
            .sign_minion_csr(&request.csr_pem, &minion_id)
            .map_err(|err| Status::invalid_argument(format!("csr_pem: {err}")))?;
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|err| {
            Status::internal(format!("the signed certificate is unreadable: {err}"))
        })?;
        self.master
            .store
            .enrol_minion(minion_id.clone(), sha256_hex(&der), now_unix_ms())
            .await
            .map_err(|err| {
                tracing::error!("{err}");
                Status::unavailable("the master's store failed")
            })?;
        tracing::info!(minion.id = %minion_id, peer = ?peer, "minion enrolled");
        Ok(Response::new(pb::JoinResponse {
            certificate_pem: cert_pem,
            ca_certificate_pem: self.master.ca.cert_pem().to_owned(),
            minion_id: minion_id.into(),
        }))
    }
}
