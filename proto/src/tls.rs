//! TLS for everything that calls the master: minions, the CLI and CI.
//!
//! A caller trusts either the master's CA certificate (from its data directory) or, while it
//! joins, only the CA whose SHA-256 digest its join token pins. Either way the server must also
//! hold a certificate with the `master` role, so a minion or CI certificate issued by the same CA
//! cannot pose as the master.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use brine_common::identity::{CertRole, identity_from_der};
use brine_common::token::sha256_hex;
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::{TcpSocket, TcpStream, lookup_host};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

/// The one crypto provider brine uses; a second one compiled in makes rustls refuse to choose.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs [`crypto_provider`] as the process default. Call it first in every `main` and test.
pub fn install_crypto_provider() {
    // Installing twice (a second test in the same process) is harmless: the first one stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate or key that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} holds no usable PEM certificate: {message}")]
    Certificate { what: String, message: String },
    #[error("{what} holds no usable PEM private key: {message}")]
    Key { what: String, message: String },
    #[error("invalid TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid master address {0:?}: expected HOST:PORT")]
    Address(String),
    #[error("cannot connect to the master at {address}: {message}")]
    Connect { address: String, message: String },
}

/// Reads every certificate in a PEM document; `what` names its source in errors.
pub fn certs_from_pem(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Certificate {
            what: what.to_owned(),
            message: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificate {
            what: what.to_owned(),
            message: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// Reads the private key in a PEM document; `what` names its source in errors.
pub fn key_from_pem(what: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|err| TlsError::Key {
        what: what.to_owned(),
        message: err.to_string(),
    })
}

/// What a caller trusts as the master's CA.
#[derive(Debug, Clone)]
pub enum MasterTrust {
    /// The CA certificate, as stored in a data directory.
    Ca(CertificateDer<'static>),
    /// Only the CA certificate whose SHA-256 digest (hex) this is; the master sends it in its
    /// chain. Used while joining, before the host has the CA.
    PinnedDigest(String),
}

/// A client certificate chain and its key.
#[derive(Debug)]
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl ClientIdentity {
    /// Loads a PEM certificate and key; the names appear in errors.
    pub fn from_pem(
        cert_what: &str,
        cert_pem: &[u8],
        key_what: &str,
        key_pem: &[u8],
    ) -> Result<Self, TlsError> {
        Ok(Self {
            chain: certs_from_pem(cert_what, cert_pem)?,
            key: key_from_pem(key_what, key_pem)?,
        })
    }
}

/// Builds the TLS configuration of a caller of the master.
pub fn client_config(
    trust: MasterTrust,
    identity: Option<ClientIdentity>,
) -> Result<ClientConfig, TlsError> {
    let provider = crypto_provider();
    let verifier = Arc::new(MasterVerifier {
        trust,
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(identity) => builder.with_client_auth_cert(identity.chain, identity.key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Verifies the chain against the trusted CA with webpki, then requires the `master` role.
#[derive(Debug)]
struct MasterVerifier {
    trust: MasterTrust,
    provider: Arc<CryptoProvider>,
}

impl MasterVerifier {
    fn webpki(
        &self,
        ca: CertificateDer<'static>,
    ) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(ca)?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|err| rustls::Error::General(err.to_string()))
    }
}

impl ServerCertVerifier for MasterVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = match &self.trust {
            MasterTrust::Ca(ca) => ca.clone(),
            MasterTrust::PinnedDigest(digest) => intermediates
                .iter()
                .find(|cert| sha256_hex(cert) == *digest)
                .map(|cert| cert.clone().into_owned())
                .ok_or_else(|| {
                    rustls::Error::General(
                        "the master's CA does not match the digest in the join token".into(),
                    )
                })?,
        };
        self.webpki(ca)?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match identity_from_der(end_entity) {
            Ok(identity) if identity.role == CertRole::Master => {
                Ok(ServerCertVerified::assertion())
            }
            Ok(identity) => Err(rustls::Error::General(format!(
                "the server's certificate holds the {} role, not master",
                identity.role
            ))),
            Err(err) => Err(rustls::Error::General(format!(
                "the server's certificate has no brine identity: {err}"
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Splits `HOST:PORT` (or `[V6]:PORT`) and returns the host as a TLS server name.
fn server_name(address: &str) -> Result<ServerName<'static>, TlsError> {
    let bad = || TlsError::Address(address.to_owned());
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| bad())
}

/// Opens a gRPC channel to the master at `address` over mutual TLS.
pub async fn connect(
    address: &str,
    config: ClientConfig,
    timeout: Duration,
) -> Result<Channel, TlsError> {
    connect_from(address, None, config, timeout).await
}

/// Like [`connect`], dialling from the local address `source` when one is given (a host with
/// several addresses whose firewall expects one of them; many simulated hosts on one machine).
pub async fn connect_from(
    address: &str,
    source: Option<IpAddr>,
    config: ClientConfig,
    timeout: Duration,
) -> Result<Channel, TlsError> {
    let name = server_name(address)?;
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|_| TlsError::Address(address.to_owned()))?
        .connect_timeout(timeout)
        // A master that vanished without a word (a silent partition) is noticed within 10 s,
        // so the minion dials again as soon as the network lets it.
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    let connector = TlsConnector::from(Arc::new(config));
    let tcp_address = address.to_owned();
    let dialer = tower::service_fn(move |_: Uri| {
        let (connector, name, tcp_address) = (connector.clone(), name.clone(), tcp_address.clone());
        async move {
            let tcp = dial(&tcp_address, source).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    tokio::time::timeout(timeout, endpoint.connect_with_connector(dialer))
        .await
        .map_err(|_| TlsError::Connect {
            address: address.to_owned(),
            message: format!("no answer within {timeout:?}"),
        })?
        .map_err(|err| TlsError::Connect {
            address: address.to_owned(),
            message: error_chain(&err),
        })
}

/// A TCP connection to `address`, from `source` when one is given.
async fn dial(address: &str, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(address).await;
    };
    let mut last_error = None;
    // Only the master's addresses of the source's family can be reached from it.
    for target in lookup_host(address)
        .await?
        .filter(|a| a.is_ipv4() == source.is_ipv4())
    {
        let socket = match target {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(source, 0))?;
        match socket.connect(target).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{address} has no address reachable from {source}"),
        )
    }))
}

/// Renders an error with its sources, the innermost last: transport errors hide the TLS alert
/// that explains them several levels down.
pub fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = inner.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    };

    use super::*;

    #[tokio::test]
    async fn a_connection_comes_from_the_source_address_asked_for() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let source: IpAddr = "127.0.0.9".parse().unwrap();
        let (dialled, accepted) = tokio::join!(dial(&address, Some(source)), listener.accept());
        dialled.unwrap();
        assert_eq!(accepted.unwrap().1.ip(), source);
        let unreachable = dial(&address, Some("::1".parse().unwrap())).await;
        assert_eq!(
            unreachable.unwrap_err().kind(),
            std::io::ErrorKind::AddrNotAvailable,
            "an IPv4 master is not reachable from an IPv6 source"
        );
    }

    /// A CA and a server certificate for `localhost` holding `role`.
    fn ca_and_server(role: &str) -> (CertificateDer<'static>, CertificateDer<'static>) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, "server");
        subject.push(DnType::OrganizationalUnitName, role);
        params.distinguished_name = subject;
        let server = params
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap();
        (ca.der().clone(), server.der().clone())
    }

    fn verify(
        trust: MasterTrust,
        server: &CertificateDer<'_>,
        chain: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        let verifier = MasterVerifier {
            trust,
            provider: crypto_provider(),
        };
        let name = ServerName::try_from("localhost").unwrap();
        verifier
            .verify_server_cert(server, chain, &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn only_a_master_certificate_from_the_trusted_ca_is_accepted() {
        let (ca, master) = ca_and_server("master");
        assert!(verify(MasterTrust::Ca(ca.clone()), &master, &[]).is_ok());

        let (ca, minion) = ca_and_server("minion");
        let err = verify(MasterTrust::Ca(ca), &minion, &[]).unwrap_err();
        assert!(err.to_string().contains("minion role, not master"), "{err}");

        let (other_ca, _) = ca_and_server("master");
        assert!(verify(MasterTrust::Ca(other_ca), &master, &[]).is_err());
    }

    #[test]
    fn a_pinned_digest_accepts_only_the_ca_it_names() {
        let (ca, master) = ca_and_server("master");
        let pinned = MasterTrust::PinnedDigest(sha256_hex(&ca));
        assert!(verify(pinned.clone(), &master, std::slice::from_ref(&ca)).is_ok());

        let wrong = MasterTrust::PinnedDigest("0".repeat(64));
        let err = verify(wrong, &master, std::slice::from_ref(&ca)).unwrap_err();
        assert!(
            err.to_string().contains("does not match the digest"),
            "{err}"
        );
        // A chain without the pinned CA is refused even though the server certificate is fine.
        assert!(verify(pinned, &master, &[]).is_err());
    }

    #[test]
    fn server_names_come_from_the_address() {
        assert!(server_name("127.0.0.1:4700").is_ok());
        assert!(server_name("[::1]:4700").is_ok());
        assert!(server_name("master.example.com:4700").is_ok());
        for bad in ["master", "master:port", ":4700", "a b:1"] {
            assert!(server_name(bad).is_err(), "{bad}");
        }
    }
}
