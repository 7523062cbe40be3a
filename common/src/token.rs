//! Join tokens: `BRINE-1-<CA SHA-256 digest, hex>-<secret>`.
//!
//! The digest lets a joining host check that it talks to the right master before it sends
//! anything (it pins the CA); the secret proves to the master that the host may join.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

const PREFIX: &str = "BRINE-1-";

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the CA certificate (DER), lowercase hex.
    pub ca_digest: String,
    /// The random secret, lowercase hex.
    pub secret: String,
}

/// Why a join token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a brine join token (expected BRINE-1-<64 hex digits>-<secret>): {0}")]
pub struct TokenFormatError(&'static str);

/// The secret must be long enough that guessing it is hopeless.
const MIN_SECRET_LEN: usize = 32;

impl JoinToken {
    /// The hash under which the master stores the secret; the secret itself is never stored.
    pub fn secret_hash(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }

    /// The id a token is listed and revoked by: the start of its secret's hash, which tells
    /// nothing about the secret.
    pub fn public_id(&self) -> String {
        self.secret_hash()[..12].to_owned()
    }
}

/// SHA-256 of DER bytes, lowercase hex: the form used for CA digests and fingerprints.
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

impl FromStr for JoinToken {
    type Err = TokenFormatError;

    fn from_str(text: &str) -> Result<Self, TokenFormatError> {
        let rest = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(TokenFormatError("wrong prefix"))?;
        let (digest, secret) = rest
            .split_once('-')
            .ok_or(TokenFormatError("missing secret"))?;
        let is_hex = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        };
        if digest.len() != 64 || !is_hex(digest) {
            return Err(TokenFormatError(
                "the CA digest is not 64 lowercase hex digits",
            ));
        }
        if secret.len() < MIN_SECRET_LEN || !is_hex(secret) {
            return Err(TokenFormatError("the secret is too short or not hex"));
        }
        Ok(Self {
            ca_digest: digest.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}-{}", self.ca_digest, self.secret)
    }
}

/// The secret never reaches a log through `Debug`.
impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_digest", &self.ca_digest)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_hides_its_secret() {
        let token = JoinToken {
            ca_digest: "a".repeat(64),
            secret: "0123456789abcdef".repeat(2),
        };
        let parsed: JoinToken = token.to_string().parse().unwrap();
        assert_eq!(parsed, token);
        assert!(!format!("{token:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn refuses_malformed_tokens() {
        let secret = "0".repeat(32);
        for bad in [
            String::new(),
            format!("SWMTKN-1-{}-{secret}", "a".repeat(64)),
            format!("BRINE-1-{}-{secret}", "a".repeat(63)),
            format!("BRINE-1-{}-{secret}", "A".repeat(64)),
            format!("BRINE-1-{}-short", "a".repeat(64)),
            format!("BRINE-1-{}", "a".repeat(64)),
        ] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad}");
        }
    }
}
