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
use crate::metrics::JoinOutcomeLabel;
use crate::state::{Master, now_unix_ms};
use crate::store::{Approval, JoinAttempt, JoinOutcome, JoinRefusal, TokenCheck};

/// Failed join attempts allowed per source address within [`THROTTLE_WINDOW`].
const MAX_FAILED_JOINS: u32 = 10;
const THROTTLE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; beyond that, stale entries are dropped first.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// Counts join attempts per source address, failed ones and those under way, so guessing
/// tokens is slow and cheap to refuse. Attempts under way count as failures until they succeed,
/// so a burst of concurrent guesses cannot slip past the count.
#[derive(Debug, Default)]
pub struct JoinThrottle {
    // A std mutex: it is never held across an await.
    addresses: Mutex<HashMap<IpAddr, Attempts>>,
}

#[derive(Debug, Clone, Copy)]
struct Attempts {
    failed: u32,
    under_way: u32,
    /// When the window of `failed` began.
    since: Instant,
}

/// One join under way, counted against its address until it ends; it counts as a failure
/// unless [`JoinTicket::succeeded`] is called.
pub struct JoinTicket<'a> {
    throttle: &'a JoinThrottle,
    address: IpAddr,
    succeeded: bool,
}

impl JoinTicket<'_> {
    pub fn succeeded(mut self) {
        self.succeeded = true;
    }
}

impl Drop for JoinTicket<'_> {
    fn drop(&mut self) {
        self.throttle
            .end(self.address, self.succeeded, Instant::now());
    }
}

impl JoinThrottle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Attempts>> {
        self.addresses.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets a join from `address` begin, or says how long it must wait.
    fn begin(&self, address: IpAddr, now: Instant) -> Result<JoinTicket<'_>, Duration> {
        let mut addresses = self.lock();
        if addresses.len() >= MAX_TRACKED_ADDRESSES {
            addresses
                .retain(|_, a| a.under_way > 0 || now.duration_since(a.since) < THROTTLE_WINDOW);
        }
        let attempts = addresses.entry(address).or_insert(Attempts {
            failed: 0,
            under_way: 0,
            since: now,
        });
        if now.duration_since(attempts.since) >= THROTTLE_WINDOW {
            attempts.failed = 0;
            attempts.since = now;
        }
        if attempts.failed.saturating_add(attempts.under_way) >= MAX_FAILED_JOINS {
            let left = THROTTLE_WINDOW.saturating_sub(now.duration_since(attempts.since));
            // Attempts under way free their place within seconds.
            let wait = if attempts.failed >= MAX_FAILED_JOINS {
                left
            } else {
                Duration::from_secs(1)
            };
            return Err(wait.max(Duration::from_secs(1)));
        }
        attempts.under_way += 1;
        Ok(JoinTicket {
            throttle: self,
            address,
            succeeded: false,
        })
    }

    fn end(&self, address: IpAddr, succeeded: bool, now: Instant) {
        let mut addresses = self.lock();
        if let Some(attempts) = addresses.get_mut(&address) {
            attempts.under_way = attempts.under_way.saturating_sub(1);
            if !succeeded {
                if now.duration_since(attempts.since) >= THROTTLE_WINDOW {
                    attempts.failed = 0;
                    attempts.since = now;
                }
                attempts.failed = attempts.failed.saturating_add(1);
            }
        }
    }
}

/// The `Enrolment` service.
pub struct EnrolmentService {
    pub master: Arc<Master>,
    pub throttle: JoinThrottle,
}

#[tonic::async_trait]
impl pb::enrolment_service_server::EnrolmentService for EnrolmentService {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let peer = Caller::of(&request)?.peer;
        let ticket = match peer.map(|p| self.throttle.begin(p.ip(), Instant::now())) {
            Some(Err(wait)) => {
                self.master.metrics.join(JoinOutcomeLabel::Throttled);
                tracing::warn!(peer = ?peer, "join refused: too many failed attempts");
                let wait = wait.max(std::time::Duration::from_secs(1));
                return Err(brine_proto::errors::retry_after(
                    tonic::Code::ResourceExhausted,
                    pb::ErrorReason::Throttled,
                    format!(
                        "too many failed join attempts from this address; try again in {} s",
                        wait.as_secs()
                    ),
                    wait,
                ));
            }
            Some(Ok(ticket)) => Some(ticket),
            None => None,
        };
        let result = self.enrol(peer, request.into_inner()).await;
        self.master.metrics.join(if result.is_ok() {
            JoinOutcomeLabel::Enrolled
        } else {
            JoinOutcomeLabel::Refused
        });
        if result.is_ok()
            && let Some(ticket) = ticket
        {
            ticket.succeeded();
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
        // Validated first, so that only a valid id is ever logged.
        let minion_id = MinionId::new(request.minion_id.clone())
            .map_err(|err| Status::invalid_argument(format!("minion_id: {err}")))?;
        let refuse = |reason: &str| {
            tracing::warn!(peer = ?peer, minion.id = %minion_id, reason, "join refused");
            Status::unauthenticated(format!("join refused: {reason}"))
        };
        let token: JoinToken = request
            .token
            .parse()
            .map_err(|err| Status::invalid_argument(format!("token: {err}")))?;
        if token.ca_digest != self.master.ca.digest() {
            return Err(refuse("the token was issued by another master"));
        }
        let store_failure = crate::fleet::store_failure;
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
        let outcome = self
            .master
            .store
            .join(JoinAttempt {
                secret_hash: token.secret_hash(),
                id: minion_id.clone(),
                certificate: certificate.signed,
                now_unix_ms: now_unix_ms(),
                approval,
            })
            .await
            .map_err(store_failure)?;
        match outcome {
            JoinOutcome::Refused(JoinRefusal::Token(check)) => {
                return Err(refuse(token_refusal(check).unwrap_or("invalid token")));
            }
            JoinOutcome::Refused(JoinRefusal::AlreadyEnrolled) => {
                tracing::warn!(peer = ?peer, minion.id = %minion_id, "join refused: the id is enrolled");
                return Err(Status::already_exists(format!(
                    "join refused: {minion_id} is already enrolled, and an id belongs to the \
                     certificate it enrolled with. To enrol a rebuilt host under this id, create \
                     a token for it on the master with `brine-master token create --replace \
                     {minion_id}`, or forget the old host first with `brine-master minions \
                     delete {minion_id}`"
                )));
            }
            JoinOutcome::Refused(JoinRefusal::TokenForAnotherHost(only)) => {
                return Err(refuse(&format!(
                    "this token re-enrols {only} only, not {minion_id}"
                )));
            }
            JoinOutcome::Enrolled { approval, .. } => {
                tracing::info!(minion.id = %minion_id, peer = ?peer, ?approval, "minion enrolled");
            }
            JoinOutcome::Replaced { .. } => {
                let disconnected = self.master.links.disconnect(&minion_id);
                tracing::warn!(minion.id = %minion_id, peer = ?peer, disconnected, "minion re-enrolled with a replacing token; its previous certificate is refused");
            }
            JoinOutcome::ReplacementPending { .. } => {
                tracing::warn!(minion.id = %minion_id, peer = ?peer, "a machine joined to replace an enrolled minion; it waits for `minions accept`, the enrolled one is untouched");
            }
        }
        Ok(pb::JoinResponse {
            certificate_pem: certificate.pem,
            ca_certificate_pem: self.master.ca.cert_pem().to_owned(),
            minion_id: minion_id.into(),
            master_addresses: self.master.peers.addresses(),
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
            drop(throttle.begin(guesser, start).expect("not throttled yet"));
        }
        assert!(throttle.begin(guesser, start).is_err());
        assert!(throttle.begin(other, start).is_ok());
        // A new window starts counting afresh.
        let later = start + THROTTLE_WINDOW;
        let ticket = throttle.begin(guesser, later).expect("a new window");
        ticket.succeeded();
        assert!(throttle.begin(guesser, later).is_ok());
    }

    #[test]
    fn attempts_under_way_count_until_they_end() {
        let throttle = JoinThrottle::default();
        let address = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        let under_way: Vec<JoinTicket<'_>> = (0..MAX_FAILED_JOINS)
            .map(|_| throttle.begin(address, now).expect("room for one more"))
            .collect();
        assert!(
            throttle.begin(address, now).is_err(),
            "concurrent attempts beyond the limit are refused before any of them ends"
        );
        for ticket in under_way {
            ticket.succeeded();
        }
        assert!(
            throttle.begin(address, now).is_ok(),
            "successes free their place"
        );
    }

    #[test]
    fn an_abandoned_attempt_counts_as_a_failure() {
        let throttle = JoinThrottle::default();
        let address = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..MAX_FAILED_JOINS {
            drop(throttle.begin(address, now).expect("room for one more"));
        }
        assert!(throttle.begin(address, now).is_err());
    }
}
