//! Identities carried by certificates: the common name is the identity, the organizational unit
//! is the role.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

/// What a certificate's holder may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertRole {
    /// The master's server certificate.
    Master,
    /// A host's agent.
    Minion,
    /// An operator: everything.
    Admin,
    /// A CI pipeline: deploys and reads.
    Ci,
}

impl CertRole {
    pub fn as_str(self) -> &'static str {
        match self {
            CertRole::Master => "master",
            CertRole::Minion => "minion",
            CertRole::Admin => "admin",
            CertRole::Ci => "ci",
        }
    }
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CertRole {
    type Err = IdentityError;
    fn from_str(text: &str) -> Result<Self, IdentityError> {
        match text {
            "master" => Ok(CertRole::Master),
            "minion" => Ok(CertRole::Minion),
            "admin" => Ok(CertRole::Admin),
            "ci" => Ok(CertRole::Ci),
            other => Err(IdentityError::UnknownRole(other.to_owned())),
        }
    }
}

/// Who holds a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertIdentity {
    /// The certificate's common name: a minion id, or a name for other roles.
    pub name: String,
    pub role: CertRole,
    /// When the certificate's validity begins and ends, in seconds since the Unix epoch.
    pub not_before_unix_s: i64,
    pub not_after_unix_s: i64,
}

impl fmt::Display for CertIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.role)
    }
}

/// Why a certificate carries no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("the certificate has no common name")]
    NoCommonName,
    #[error("the certificate has no role (organizational unit)")]
    NoRole,
    #[error("the certificate has an unknown role {0:?}")]
    UnknownRole(String),
}

/// Reads the identity from a DER certificate that TLS already verified against the CA.
pub fn identity_from_der(der: &[u8]) -> Result<CertIdentity, IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|err| IdentityError::Unparsable(err.to_string()))?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or(IdentityError::NoCommonName)?
        .to_owned();
    let role = subject
        .iter_organizational_unit()
        .next()
        .and_then(|ou| ou.as_str().ok())
        .ok_or(IdentityError::NoRole)?
        .parse()?;
    let validity = cert.validity();
    Ok(CertIdentity {
        name,
        role,
        not_before_unix_s: validity.not_before.timestamp(),
        not_after_unix_s: validity.not_after.timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn cert(cn: Option<&str>, ou: Option<&str>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        if let Some(ou) = ou {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, ou);
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_name_and_role() {
        let id = identity_from_der(&cert(Some("web-1"), Some("minion"))).unwrap();
        assert_eq!(id.name, "web-1");
        assert_eq!(id.role, CertRole::Minion);
    }

    #[test]
    fn refuses_certificates_without_a_known_role() {
        assert_eq!(
            identity_from_der(&cert(Some("x"), None)),
            Err(IdentityError::NoRole)
        );
        assert_eq!(
            identity_from_der(&cert(None, Some("admin"))),
            Err(IdentityError::NoCommonName)
        );
        assert!(matches!(
            identity_from_der(&cert(Some("x"), Some("root"))),
            Err(IdentityError::UnknownRole(_))
        ));
        assert!(identity_from_der(b"junk").is_err());
    }
}
