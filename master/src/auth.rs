//! Authorization, deny by default: one table maps every RPC to the certificate roles that may
//! call it. The layer runs before any handler; a request for a method that is not in the table,
//! or from a caller whose certificate role is not allowed, never reaches one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use brine_common::identity::{CertIdentity, CertRole, identity_from_der};
use brine_common::token::sha256_hex;
use futures::future::{BoxFuture, Either, Ready, ready};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use crate::metrics::{Metrics, Refusal};
use crate::pki::LEAF_VALIDITY;

/// Who may call a method.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// Callers without a certificate too: only enrolment, which checks a join token instead.
    Anyone,
    /// Callers whose certificate holds one of these roles.
    Roles(&'static [CertRole]),
}

use CertRole::{Admin, Ci, Minion};

/// The authorization table. A method missing here is refused for everyone.
const METHODS: &[(&str, Access)] = &[
    ("/brine.v1.EnrolmentService/Join", Access::Anyone),
    (
        "/brine.v1.MinionLinkService/Connect",
        Access::Roles(&[Minion]),
    ),
    (
        "/brine.v1.MinionLinkService/Renew",
        Access::Roles(&[Minion]),
    ),
    (
        "/brine.v1.FleetService/Highstate",
        Access::Roles(&[Admin, Ci]),
    ),
    ("/brine.v1.FleetService/Deploy", Access::Roles(&[Admin, Ci])),
    (
        "/brine.v1.FleetService/Rollback",
        Access::Roles(&[Admin, Ci]),
    ),
    (
        "/brine.v1.FleetService/WatchJob",
        Access::Roles(&[Admin, Ci]),
    ),
    ("/brine.v1.FleetService/CancelJob", Access::Roles(&[Admin])),
    ("/brine.v1.FleetService/GetJob", Access::Roles(&[Admin, Ci])),
    (
        "/brine.v1.FleetService/ListJobs",
        Access::Roles(&[Admin, Ci]),
    ),
    (
        "/brine.v1.FleetService/ListReleases",
        Access::Roles(&[Admin, Ci]),
    ),
    (
        "/brine.v1.FleetService/ListMinions",
        Access::Roles(&[Admin, Ci]),
    ),
    (
        "/brine.v1.FleetService/GetMinion",
        Access::Roles(&[Admin, Ci]),
    ),
    (
        "/brine.v1.FleetService/AcceptMinion",
        Access::Roles(&[Admin]),
    ),
    (
        "/brine.v1.FleetService/RejectMinion",
        Access::Roles(&[Admin]),
    ),
    (
        "/brine.v1.FleetService/RevokeMinion",
        Access::Roles(&[Admin]),
    ),
    (
        "/brine.v1.FleetService/DeleteMinion",
        Access::Roles(&[Admin]),
    ),
    (
        "/brine.v1.FleetService/RevokeCertificate",
        Access::Roles(&[Admin]),
    ),
    (
        "/brine.v1.FleetService/CreateJoinToken",
        Access::Roles(&[Admin]),
    ),
    (
        "/brine.v1.FleetService/ListJoinTokens",
        Access::Roles(&[Admin]),
    ),
    (
        "/brine.v1.FleetService/RevokeJoinToken",
        Access::Roles(&[Admin]),
    ),
    (
        "/brine.v1.FleetService/GetLock",
        Access::Roles(&[Admin, Ci]),
    ),
    (
        "/brine.v1.FleetService/AcquireLock",
        Access::Roles(&[Admin]),
    ),
    (
        "/brine.v1.FleetService/ReleaseLock",
        Access::Roles(&[Admin]),
    ),
    (
        "/brine.v1.FleetService/GetVersion",
        Access::Roles(&[Admin, Ci]),
    ),
    (
        "/brine.v1.FleetService/ApplyRoles",
        Access::Roles(&[Admin, Ci]),
    ),
    (
        "/brine.v1.FleetService/GetRoles",
        Access::Roles(&[Admin, Ci]),
    ),
    (
        "/brine.v1.FleetService/ListRolesVersions",
        Access::Roles(&[Admin, Ci]),
    ),
    // Secrets are an operator's: CI deploys with them but never sets or lists them.
    ("/brine.v1.FleetService/SetSecret", Access::Roles(&[Admin])),
    (
        "/brine.v1.FleetService/ListSecrets",
        Access::Roles(&[Admin]),
    ),
    (
        "/brine.v1.FleetService/DeleteSecret",
        Access::Roles(&[Admin]),
    ),
    // A container's logs and a shell in it are an operator's, never a pipeline's.
    (
        "/brine.v1.FleetService/ContainerLogs",
        Access::Roles(&[Admin]),
    ),
    ("/brine.v1.FleetService/Exec", Access::Roles(&[Admin])),
    ("/brine.v1.FleetService/Watch", Access::Roles(&[Admin, Ci])),
    (
        "/brine.v1.FleetService/ListHookFailures",
        Access::Roles(&[Admin, Ci]),
    ),
    // Signing browsers in to the dashboard, and out, is an operator's.
    (
        "/brine.v1.FleetService/CreateDashboardLogin",
        Access::Roles(&[Admin]),
    ),
    (
        "/brine.v1.FleetService/ListDashboardSessions",
        Access::Roles(&[Admin]),
    ),
    (
        "/brine.v1.FleetService/RevokeDashboardSession",
        Access::Roles(&[Admin]),
    ),
    (
        "/grpc.health.v1.Health/Check",
        Access::Roles(&[Admin, Ci, Minion]),
    ),
    (
        "/grpc.health.v1.Health/Watch",
        Access::Roles(&[Admin, Ci, Minion]),
    ),
    // Describes the API to generic clients; hosts have no use for it.
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Access::Roles(&[Admin, Ci]),
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Access::Roles(&[Admin, Ci]),
    ),
];

/// Revoked operator and CI certificates: for each role and name, the moment up to which issued
/// certificates are refused. Minion certificates are checked against the store at every
/// connection instead (see `link`).
#[derive(Debug, Default)]
pub struct CertificateRevocations {
    // A std lock: it is never held across an await. Keyed by role, then name, so a request is
    // checked without building a key.
    revoked_at_unix_ms: RwLock<HashMap<CertRole, HashMap<String, i64>>>,
}

impl CertificateRevocations {
    pub fn new(revocations: impl IntoIterator<Item = (CertRole, String, i64)>) -> Self {
        let this = Self::default();
        for (role, name, at) in revocations {
            this.revoke(role, name, at);
        }
        this
    }

    /// Refuses `role` certificates for `name` issued up to `at_unix_ms`.
    pub fn revoke(&self, role: CertRole, name: String, at_unix_ms: i64) {
        self.revoked_at_unix_ms
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(role)
            .or_default()
            .insert(name, at_unix_ms);
    }

    /// Whether `identity`'s certificate was issued before its name was revoked. Operator and CI
    /// certificates are all issued for [`LEAF_VALIDITY`], so their issue time is their expiry
    /// minus that.
    fn is_revoked(&self, identity: &CertIdentity) -> bool {
        let revoked = self
            .revoked_at_unix_ms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&identity.role)
            .and_then(|names| names.get(&identity.name))
            .copied();
        let Some(revoked_at_unix_ms) = revoked else {
            return false;
        };
        let lifetime_s = i64::try_from(LEAF_VALIDITY.as_secs()).unwrap_or(i64::MAX);
        let issued_at_unix_s = identity.not_after_unix_s.saturating_sub(lifetime_s);
        issued_at_unix_s.saturating_mul(1000) <= revoked_at_unix_ms
    }
}

/// The authenticated caller of an RPC, for handlers (from the request extensions).
#[derive(Debug, Clone)]
pub struct Caller {
    /// `None` only for methods open to [`Access::Anyone`] called without a certificate.
    pub identity: Option<CertIdentity>,
    /// SHA-256 of the caller's certificate, hex.
    pub certificate_sha256: Option<String>,
    pub peer: Option<SocketAddr>,
}

impl Caller {
    /// Reads the caller that [`Authorize`] attached to a request.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
        request
            .extensions()
            .get::<Caller>()
            .ok_or_else(|| Status::internal("the request bypassed authorization"))
    }

    /// The caller's certificate identity, for handlers that require one.
    pub fn identity(&self) -> Result<&CertIdentity, Status> {
        self.identity.as_ref().ok_or_else(|| {
            brine_proto::errors::certificate_refused("a client certificate is required")
        })
    }
}

/// Decides whether a request may proceed, and who makes it.
fn authorize(
    path: &str,
    connection: Option<&TlsConnectInfo<TcpConnectInfo>>,
    revocations: &CertificateRevocations,
) -> Result<Caller, (Refusal, Status)> {
    let peer = connection.and_then(|c| c.get_ref().remote_addr());
    let leaf = connection
        .and_then(TlsConnectInfo::peer_certs)
        .and_then(|chain| chain.first().cloned());
    let (identity, certificate_sha256) = match &leaf {
        Some(der) => {
            let identity = identity_from_der(der).map_err(|err| {
                refused(
                    path,
                    peer,
                    None,
                    &format!("unusable client certificate: {err}"),
                );
                (
                    Refusal::UnusableCertificate,
                    brine_proto::errors::certificate_refused(format!(
                        "the client certificate is not usable: {err}"
                    )),
                )
            })?;
            (Some(identity), Some(sha256_hex(der)))
        }
        None => (None, None),
    };
    let Some((_, access)) = METHODS.iter().find(|(method, _)| *method == path) else {
        refused(path, peer, identity.as_ref(), "no such method");
        // Whoever asks, an unknown method does nothing; saying so is what gRPC clients expect.
        return Err((
            Refusal::UnknownMethod,
            Status::unimplemented(format!("{path} is not a method of this master")),
        ));
    };
    match (access, &identity) {
        (Access::Anyone, _) => {}
        (Access::Roles(_), None) => {
            refused(path, peer, None, "no client certificate");
            return Err((
                Refusal::NoCertificate,
                brine_proto::errors::certificate_refused(
                    "a client certificate issued by the master's CA is required",
                ),
            ));
        }
        (Access::Roles(roles), Some(id)) if !roles.contains(&id.role) => {
            refused(path, peer, Some(id), "role not allowed");
            return Err((
                Refusal::NotAllowed,
                brine_proto::errors::not_allowed(format!(
                    "a certificate with the {} role may not call {path}",
                    id.role
                )),
            ));
        }
        (Access::Roles(_), Some(id))
            if matches!(id.role, Admin | Ci) && revocations.is_revoked(id) =>
        {
            refused(path, peer, Some(id), "certificate revoked");
            return Err((
                Refusal::RevokedCertificate,
                brine_proto::errors::certificate_refused(format!(
                    "this {} certificate for {} was revoked; ask an operator for a new one",
                    id.role, id.name
                )),
            ));
        }
        (Access::Roles(_), Some(_)) => {}
    }
    Ok(Caller {
        identity,
        certificate_sha256,
        peer,
    })
}

fn refused(path: &str, peer: Option<SocketAddr>, identity: Option<&CertIdentity>, reason: &str) {
    tracing::warn!(
        method = path,
        peer = ?peer,
        identity = identity.map(ToString::to_string),
        reason,
        "request refused"
    );
}

/// The tower layer that applies [`METHODS`] and the revocations to every request.
#[derive(Debug, Clone)]
pub struct AuthorizeLayer {
    pub revocations: Arc<CertificateRevocations>,
    pub metrics: Arc<Metrics>,
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            revocations: self.revocations.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`AuthorizeLayer`].
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    revocations: Arc<CertificateRevocations>,
    metrics: Arc<Metrics>,
}

impl<S, B, R> Service<http::Request<B>> for Authorize<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<
        BoxFuture<'static, Result<S::Response, S::Error>>,
        Ready<Result<S::Response, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let connection = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
        match authorize(request.uri().path(), connection, &self.revocations) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Left(Box::pin(self.inner.call(request)))
            }
            Err((why, status)) => {
                self.metrics.refused(why);
                Either::Right(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_are_unimplemented_even_without_checking_the_caller() {
        let err = authorize(
            "/brine.v1.FleetService/DropEverything",
            None,
            &Default::default(),
        )
        .unwrap_err()
        .1;
        assert_eq!(err.code(), tonic::Code::Unimplemented);
    }

    #[test]
    fn only_enrolment_is_open_without_a_certificate() {
        let revocations = CertificateRevocations::default();
        assert!(authorize("/brine.v1.EnrolmentService/Join", None, &revocations).is_ok());
        for (method, access) in METHODS {
            if matches!(access, Access::Roles(_)) {
                let (_, err) = authorize(method, None, &revocations).unwrap_err();
                assert_eq!(err.code(), tonic::Code::Unauthenticated, "{method}");
            }
        }
    }

    #[test]
    fn a_revocation_refuses_certificates_issued_before_it_only() {
        let lifetime_s = i64::try_from(LEAF_VALIDITY.as_secs()).unwrap();
        let issued_at = |unix_s: i64| CertIdentity {
            name: "gitlab".into(),
            role: Ci,
            not_before_unix_s: unix_s - 300,
            not_after_unix_s: unix_s + lifetime_s,
        };
        let revocations = CertificateRevocations::default();
        assert!(!revocations.is_revoked(&issued_at(1_000)));
        revocations.revoke(Ci, "gitlab".into(), 2_000_000);
        assert!(revocations.is_revoked(&issued_at(1_000)));
        assert!(revocations.is_revoked(&issued_at(2_000)));
        assert!(!revocations.is_revoked(&issued_at(2_001)));
        let other = CertIdentity {
            name: "jenkins".into(),
            ..issued_at(1_000)
        };
        assert!(!revocations.is_revoked(&other));
        let admin = CertIdentity {
            role: Admin,
            ..issued_at(1_000)
        };
        assert!(!revocations.is_revoked(&admin));
    }
}
