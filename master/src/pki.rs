//! The master's certificate authority: issues every certificate of the fleet.
//!
//! Identities live in the certificate subject: the common name is the identity and the
//! organizational unit is the role (see `brine_common::identity`). Keys are generated where they
//! are used: here only for the master's own server certificate and for admin or CI certificates
//! written to local files; a minion sends a certificate signing request and keeps its key.

use std::time::Duration;

use brine_common::identity::CertRole;
use brine_common::names::MinionId;
use brine_common::token::sha256_hex;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;

/// How long the CA certificate is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long the certificates of the master, operators and CI are valid.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long minion certificates are valid unless master.toml says otherwise. Minions renew
/// theirs over their link well before that.
pub const MINION_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// How far back validity starts, so that hosts whose clock is up to an hour slow accept a new
/// certificate; never more than a tenth of the lifetime, so short-lived certificates stay useful.
const MAX_BACKDATE: Duration = Duration::from_secs(3600);

/// A failure to create or use a certificate.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("the certificate signing request is invalid: {0}")]
    InvalidCsr(String),
    #[error("the CA certificate or key cannot be loaded: {0}")]
    InvalidCa(String),
    #[error("cannot create a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate and its freshly generated private key, both PEM.
#[derive(Debug)]
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A minion certificate this CA signed: PEM for the host, fingerprint and expiry for the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinionCertificate {
    pub pem: String,
    pub signed: SignedCertificate,
}

/// What the master remembers of a certificate it signed for a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCertificate {
    /// SHA-256 of the certificate (DER), hex.
    pub sha256: String,
    pub expires_unix_ms: i64,
}

/// The CA: its certificate and the issuer that signs with its key.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    digest: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

fn subject(name: &str, role: CertRole) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    dn
}

/// Sets validity from now for `lifetime`, backdated a little (see [`MAX_BACKDATE`]).
fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - MAX_BACKDATE.min(lifetime / 10);
    params.not_after = now + lifetime;
}

fn leaf_params(
    name: &str,
    role: CertRole,
    sans: &[String],
    lifetime: Duration,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(sans.to_vec())?;
    params.distinguished_name = subject(name, role);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match role {
        CertRole::Master => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        CertRole::Minion | CertRole::Admin | CertRole::Ci => {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        }
    };
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, lifetime);
    Ok(params)
}

impl CertificateAuthority {
    /// Creates a new CA; returns it with its private key in PEM.
    pub fn generate() -> Result<(Self, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "brine CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        let ca = Self {
            digest: sha256_hex(cert.der()),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        };
        Ok((ca, key_pem))
    }

    /// Loads the CA from its PEM certificate and key.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::InvalidCa(e.to_string()))?;
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| PkiError::InvalidCa(e.to_string()))?;
        let digest = sha256_hex(&der);
        let issuer =
            Issuer::from_ca_cert_der(&der, key).map_err(|e| PkiError::InvalidCa(e.to_string()))?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_owned(),
            digest,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 of the CA certificate (DER), hex: what join tokens pin.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Issues a certificate with a new key, for identities whose key is generated here.
    pub fn issue(
        &self,
        name: &str,
        role: CertRole,
        sans: &[String],
    ) -> Result<IssuedCertificate, PkiError> {
        let key = KeyPair::generate()?;
        let cert = leaf_params(name, role, sans, LEAF_VALIDITY)?.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a minion's certificate signing request for `minion`, valid for `lifetime`. Only the
    /// public key is taken from the request: subject, role, extensions and validity are the
    /// CA's decision.
    pub fn sign_minion_csr(
        &self,
        csr_pem: &str,
        minion: &MinionId,
        lifetime: Duration,
    ) -> Result<MinionCertificate, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::InvalidCsr(e.to_string()))?;
        let params = leaf_params(minion.as_str(), CertRole::Minion, &[], lifetime)?;
        let expires_unix_ms =
            i64::try_from(params.not_after.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let request = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        let cert = request.signed_by(&self.issuer)?;
        Ok(MinionCertificate {
            pem: cert.pem(),
            signed: SignedCertificate {
                sha256: sha256_hex(cert.der()),
                expires_unix_ms,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use brine_common::identity::identity_from_der;

    use super::*;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn issued_certificates_carry_name_and_role() {
        let (ca, _) = CertificateAuthority::generate().unwrap();
        let admin = ca.issue("admin", CertRole::Admin, &[]).unwrap();
        let id = identity_from_der(&der(&admin.cert_pem)).unwrap();
        assert_eq!((id.name.as_str(), id.role), ("admin", CertRole::Admin));
    }

    #[test]
    fn a_csr_subject_cannot_choose_its_identity() {
        let (ca, _) = CertificateAuthority::generate().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = subject("evil", CertRole::Admin);
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let minion = MinionId::new("web-1").unwrap();
        let cert = ca.sign_minion_csr(&csr, &minion, MINION_VALIDITY).unwrap();
        let id = identity_from_der(&der(&cert.pem)).unwrap();
        assert_eq!(cert.signed.sha256, sha256_hex(&der(&cert.pem)));
        assert_eq!(
            cert.signed.expires_unix_ms / 1000,
            id.not_after_unix_s,
            "the recorded expiry is the certificate's"
        );
        assert_eq!((id.name.as_str(), id.role), ("web-1", CertRole::Minion));
    }

    #[test]
    fn a_reloaded_ca_keeps_its_digest() {
        let (ca, key) = CertificateAuthority::generate().unwrap();
        let again = CertificateAuthority::load(ca.cert_pem(), &key).unwrap();
        assert_eq!(again.digest(), ca.digest());
        assert!(CertificateAuthority::load("junk", &key).is_err());
        assert!(
            ca.sign_minion_csr("junk", &MinionId::new("a").unwrap(), MINION_VALIDITY)
                .is_err()
        );
    }
}
