//! Secrets: values the master keeps encrypted outside the roles file, which containers receive
//! as environment variables (`DB_PASSWORD = { secret = "db" }`).
//!
//! A container spec names a secret and carries its fingerprint (which value), never the value:
//! specs are hashed, recorded with jobs and kept in the store. The value travels only beside a
//! command to a host whose containers use it, as a [`SecretValue`], which never prints itself.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest secret value: an environment variable, not a file.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// A secret's value. Its `Debug` hides it and it has no `Display`, so it cannot reach a log or
/// an error message by accident; [`SecretValue::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretValue(String);

/// Why a value cannot be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretValueError {
    #[error("a secret is at most {MAX_SECRET_BYTES} bytes; this one has {0}")]
    TooLong(usize),
    #[error("a secret cannot hold a NUL character: environment variables cannot carry one")]
    Nul,
}

impl SecretValue {
    pub fn new(value: String) -> Result<Self, SecretValueError> {
        if value.len() > MAX_SECRET_BYTES {
            return Err(SecretValueError::TooLong(value.len()));
        }
        if value.contains('\0') {
            return Err(SecretValueError::Nul);
        }
        Ok(Self(value))
    }

    /// The value itself, for the one place that needs it: the container's environment.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SecretValue {
    type Error = SecretValueError;
    fn try_from(value: String) -> Result<Self, SecretValueError> {
        Self::new(value)
    }
}

impl From<SecretValue> for String {
    fn from(value: SecretValue) -> String {
        value.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(hidden)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_never_shows_in_debug_output() {
        let value = SecretValue::new("hunter2".into()).unwrap();
        assert!(!format!("{value:?}").contains("hunter2"));
        assert!(!format!("{:?}", Some(&value)).contains("hunter2"));
        assert_eq!(value.expose(), "hunter2");
    }

    #[test]
    fn refuses_values_an_environment_cannot_carry() {
        assert_eq!(SecretValue::new("a\0b".into()), Err(SecretValueError::Nul));
        assert_eq!(
            SecretValue::new("x".repeat(MAX_SECRET_BYTES + 1)),
            Err(SecretValueError::TooLong(MAX_SECRET_BYTES + 1))
        );
        assert!(SecretValue::new("x".repeat(MAX_SECRET_BYTES)).is_ok());
    }
}
