//! The `Enrolment` service: a join token and a CSR become a minion certificate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brine_common::names::MinionId;
use brine_common::token::JoinToken;
use brine_proto::pb;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::config::JoinApproval;
use crate::state::{Master, now_unix_ms};
use crate::store::{Approval, TokenCheck};

/// Failed join attempts allowed per source address within [`THROTTLE_WINDOW`].
const MAX_FAILED_JOINS: u32 = 10;
const THROTTLE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; beyond that, stale entries are dropped first.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// Counts failed joins per source address, so guessing tokens is slow and cheap to refuse.
#[derive(Debug, Default)]
pub struct JoinThrottle {
    // A std mutex: it is never held across an await.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl JoinThrottle {
    /// How long `address` must wait before it may try again, if it must.
    fn wait_for(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (count, since) = failures.get(&address)?;
        let left = THROTTLE_WINDOW
            .checked_sub(now.duration_since(*since))
            .filter(|left| !left.is_zero())?;
        (*count >= MAX_FAILED_JOINS).then_some(left)
    }

    fn record_failure(&self, address: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED_ADDRESSES {
            failures.retain(|_, (_, since)| now.duration_since(*since) < THROTTLE_WINDOW);
        }
        let entry = failures.entry(address).or_insert((0, now));
        if now.duration_since(entry.1) >= THROTTLE_WINDOW {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
    }
}

/// The `Enrolment` service.
pub struct EnrolmentService {
    pub master: Arc<Master>,
    pub throttle: JoinThrottle,
}

#[tonic::async_trait]
impl pb::enrolment_server::Enrolment for EnrolmentService {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let peer = Caller::of(&request)?.peer;
        let address = peer.map(|p| p.ip());
        if let Some(wait) = address.and_then(|a| self.throttle.wait_for(a, Instant::now())) {
            tracing::warn!(peer = ?peer, "join refused: too many failed attempts");
            return Err(Status::resource_exhausted(format!(
                "too many failed join attempts from this address; try again in {} s",
                wait.as_secs().max(1)
            )));
        }
        let result = self.enrol(peer, request.into_inner()).await;
        if result.is_err()
            && let Some(address) = address
        {
            self.throttle.record_failure(address, Instant::now());
        }
        result.map(Response::new)
    }
}

impl EnrolmentService {
    /// Checks the token and signs the host's certificate.
    async fn enrol(
        &self,
        peer: Option<std::net::SocketAddr>,
        request: pb::JoinRequest,
    ) -> Result<pb::JoinResponse, Status> {
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
        let store_failure = |err: crate::store::StoreError| {
            tracing::error!("{err}");
            Status::unavailable("the master's store failed")
        };
        let token_refusal = |check: TokenCheck| match check {
            TokenCheck::Valid => None,
            TokenCheck::Unknown => Some("unknown token"),
            TokenCheck::Expired => Some("the token has expired"),
            TokenCheck::UsedUp => Some("the token has been used up"),
        };
        // Checked first, so that nothing is done for a bad token; used up only once the request
        // is known to be good, in the same transaction that checks it again.
        let check = self
            .master
            .store
            .check_token(token.secret_hash(), now_unix_ms())
            .await
            .map_err(store_failure)?;
        if let Some(reason) = token_refusal(check) {
            return Err(refuse(reason));
        }
        let minion_id = MinionId::new(request.minion_id.clone())
            .map_err(|err| Status::invalid_argument(format!("minion_id: {err}")))?;
        let certificate = self
            .master
            .ca
            .sign_minion_csr(
                &request.csr_pem,
                &minion_id,
                self.master.config.minion_certificate_lifetime,
            )
            .map_err(|err| Status::invalid_argument(format!("csr_pem: {err}")))?;
        let approval = match self.master.config.join_approval {
            JoinApproval::Auto => Approval::Accepted,
            JoinApproval::Manual => Approval::Pending,
        };
        let join_labels = match self
            .master
            .store
            .consume_token(token.secret_hash(), now_unix_ms())
            .await
            .map_err(store_failure)?
        {
            Ok(labels) => labels,
            Err(check) => return Err(refuse(token_refusal(check).unwrap_or("invalid token"))),
        };
        self.master
            .store
            .enrol_minion(
                minion_id.clone(),
                certificate.signed,
                now_unix_ms(),
                approval,
                join_labels,
            )
            .await
            .map_err(store_failure)?;
        tracing::info!(minion.id = %minion_id, peer = ?peer, ?approval, "minion enrolled");
        Ok(pb::JoinResponse {
            certificate_pem: certificate.pem,
            ca_certificate_pem: self.master.ca.cert_pem().to_owned(),
            minion_id: minion_id.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_throttled_after_too_many_failures_for_a_while() {
        let throttle = JoinThrottle::default();
        let (guesser, other) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let start = Instant::now();
        for _ in 0..MAX_FAILED_JOINS {
            assert!(throttle.wait_for(guesser, start).is_none());
            throttle.record_failure(guesser, start);
        }
        assert!(throttle.wait_for(guesser, start).is_some());
        assert!(throttle.wait_for(other, start).is_none());
        assert!(
            throttle
                .wait_for(guesser, start + THROTTLE_WINDOW)
                .is_none()
        );
        // A new window starts counting afresh.
        throttle.record_failure(guesser, start + THROTTLE_WINDOW);
        assert!(
            throttle
                .wait_for(guesser, start + THROTTLE_WINDOW)
                .is_none()
        );
    }
}
