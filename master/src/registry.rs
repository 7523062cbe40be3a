//! Resolving image tags to digests through the registry's HTTP API, once per highstate, so every
//! host runs identical bits even if CI moves the tag in the middle of a rollout.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use brine_common::spec::ImageRef;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use tokio::sync::OnceCell;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// How to reach one registry, from `[registries."HOST:PORT"]` in master.toml.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// User for basic or token authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// Its password; never logged.
    #[serde(default)]
    pub password: Option<String>,
    /// Speak plain HTTP. Loopback registries always do, as Docker does.
    #[serde(default)]
    pub insecure: bool,
}

/// The password never reaches a log through `Debug`.
impl fmt::Debug for RegistrySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrySettings")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// Why an image could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The registry did not answer: nothing can be deployed safely.
    #[error("image {image}: the registry {registry} cannot be reached: {message}")]
    Unreachable {
        image: String,
        registry: String,
        message: String,
    },
    /// The master's own setup keeps it from asking any registry: fixed on the master, not by
    /// retrying.
    #[error("image {image}: {message}")]
    Unusable { image: String, message: String },
    /// The registry answered, but not with a digest: the tag does not exist, or access was
    /// refused.
    #[error("image {image}: {message}")]
    Refused { image: String, message: String },
}

/// Resolves tags with the registry settings of the master's configuration.
#[derive(Debug, Default)]
pub struct Resolver {
    registries: BTreeMap<String, RegistrySettings>,
    /// Whether the system's trust roots could be loaded, checked once per resolver (one per job,
    /// so installing them helps the next job).
    trust_roots: OnceCell<bool>,
}

/// Docker Hub's names for references that name no registry.
const DOCKER_HUB: &str = "docker.io";

impl Resolver {
    pub fn new(registries: BTreeMap<String, RegistrySettings>) -> Self {
        Self {
            registries,
            trust_roots: OnceCell::new(),
        }
    }

    /// The registry client panics when it is created on a machine without CA certificates,
    /// whatever the protocol; this looks first, so a job fails with a clear error instead.
    async fn trust_roots_available(&self) -> bool {
        *self
            .trust_roots
            .get_or_init(|| async {
                tokio::task::spawn_blocking(|| {
                    !rustls_native_certs::load_native_certs().certs.is_empty()
                })
                .await
                .unwrap_or(false)
            })
            .await
    }

    /// Returns `image` pinned to the digest its tag points to now. A reference that already
    /// carries a digest is returned as it is once the registry confirms it holds it.
    pub async fn resolve(&self, image: &ImageRef) -> Result<ImageRef, ResolveError> {
        let parts = image.parts();
        let registry = parts.domain.unwrap_or(DOCKER_HUB);
        let repository = match (parts.domain, parts.path.contains('/')) {
            (None, false) => format!("library/{}", parts.path),
            _ => parts.path.to_owned(),
        };
        // A reference that carries a digest is checked too: the registry must hold exactly
        // that manifest, so nobody can send hosts a digest the registry never had.
        let reference = match parts.digest {
            Some(digest) => {
                Reference::with_digest(registry.to_owned(), repository, digest.to_owned())
            }
            None => Reference::with_tag(
                registry.to_owned(),
                repository,
                parts.tag.unwrap_or("latest").to_owned(),
            ),
        };
        let settings = self.registries.get(registry).cloned().unwrap_or_default();
        if !self.trust_roots_available().await {
            return Err(ResolveError::Unusable {
                image: image.to_string(),
                message: "this machine has no CA certificates, which the registry client needs \
                          even for plain-HTTP registries: install Debian's ca-certificates"
                    .to_owned(),
            });
        }
        let client = Client::try_from(ClientConfig {
            protocol: if settings.insecure || is_loopback(registry) {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            ..ClientConfig::default()
        })
        .map_err(|err| ResolveError::Unreachable {
            image: image.to_string(),
            registry: registry.to_owned(),
            message: format!("cannot set up a client for it: {err}"),
        })?;
        let auth = match (settings.username, settings.password) {
            (Some(user), Some(password)) => RegistryAuth::Basic(user, password),
            _ => RegistryAuth::Anonymous,
        };
        let digest = client
            .fetch_manifest_digest(&reference, &auth)
            .await
            .map_err(|err| classify(image, registry, err))?;
        if let Some(pinned) = parts.digest {
            if digest != pinned {
                return Err(ResolveError::Refused {
                    image: image.to_string(),
                    message: format!("the registry holds {digest} under that digest"),
                });
            }
            return Ok(image.clone());
        }
        image.pinned(&digest).map_err(|err| ResolveError::Refused {
            image: image.to_string(),
            message: format!("the registry returned an unusable digest: {err}"),
        })
    }
}

/// Registries on this machine speak plain HTTP, as Docker allows for 127.0.0.0/8.
fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn classify(image: &ImageRef, registry: &str, err: OciDistributionError) -> ResolveError {
    let refused = |message: String| ResolveError::Refused {
        image: image.to_string(),
        message,
    };
    match err {
        OciDistributionError::RequestError(err) if err.is_connect() || err.is_timeout() => {
            ResolveError::Unreachable {
                image: image.to_string(),
                registry: registry.to_owned(),
                message: brine_proto::tls::error_chain(&err),
            }
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let messages: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect();
            refused(format!("the registry says {}", messages.join("; ")))
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => refused(format!(
            "the registry {registry} refused access; check [registries.\"{registry}\"] in master.toml"
        )),
        other => refused(format!("the registry {registry} answered: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_recognized() {
        for local in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(local), "{local}");
        }
        for remote in ["registry.example.com:5000", "10.0.0.1:5000", "docker.io"] {
            assert!(!is_loopback(remote), "{remote}");
        }
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let settings = RegistrySettings {
            username: Some("ci".into()),
            password: Some("hunter2".into()),
            insecure: false,
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_reported_as_such() {
        brine_proto::tls::install_crypto_provider();
        // Port 1 on loopback: nothing listens there.
        let image = ImageRef::new("127.0.0.1:1/app:tested").unwrap();
        let err = Resolver::default().resolve(&image).await.unwrap_err();
        assert!(matches!(err, ResolveError::Unreachable { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_pinned_reference_is_checked_with_its_registry_too() {
        brine_proto::tls::install_crypto_provider();
        let digest = format!("sha256:{}", "a".repeat(64));
        let image = ImageRef::new(format!("127.0.0.1:1/app:tested@{digest}")).unwrap();
        let err = Resolver::default().resolve(&image).await.unwrap_err();
        assert!(
            matches!(err, ResolveError::Unreachable { .. }),
            "a digest nobody confirmed is not passed on: {err}"
        );
    }
}
