//! Validated names: minion ids, role names and container names.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("is {0} characters long; at most 63 are allowed")]
    TooLong(usize),
    #[error("must start with a letter or digit")]
    BadStart,
    #[error("contains {0:?}; only letters, digits, '.', '-' and '_' are allowed")]
    BadChar(char),
}

/// Checks the one name syntax brine uses everywhere: it fits Docker container names, DNS labels
/// and certificate common names alike, so a name valid in one place is valid in all of them.
fn check_name(name: &str) -> Result<(), NameError> {
    let first = name.chars().next().ok_or(NameError::Empty)?;
    if name.len() > 63 {
        return Err(NameError::TooLong(name.len()));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(NameError::BadStart);
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        Some(bad) => Err(NameError::BadChar(bad)),
        None => Ok(()),
    }
}

/// Checks a host label (`env=prod`): key and value follow the name syntax, so labels can be
/// written in target expressions without quoting.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    check_name(key).map_err(|err| format!("label key {key:?} {err}"))?;
    check_name(value).map_err(|err| format!("label {key}: value {value:?} {err}"))
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// Validates `name`.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check_name(&name)?;
                Ok(Self(name))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(name: String) -> Result<Self, NameError> {
                Self::new(name)
            }
        }

        impl From<$ty> for String {
            fn from(name: $ty) -> String {
                name.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $ty {
            type Err = NameError;
            fn from_str(name: &str) -> Result<Self, NameError> {
                Self::new(name)
            }
        }
    };
}

name_type!(
    /// A host's identity: the common name of its certificate.
    MinionId
);
name_type!(
    /// The name of a role in the roles file.
    RoleName
);
name_type!(
    /// The name of a container, unique on its host.
    ContainerName
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_docker_style_names() {
        for good in ["web-1", "db_2", "a", "Web.example.com", &"x".repeat(63)] {
            assert!(MinionId::new(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn refuses_names_that_docker_or_dns_would_refuse() {
        assert_eq!(MinionId::new(""), Err(NameError::Empty));
        assert_eq!(MinionId::new("-web"), Err(NameError::BadStart));
        assert_eq!(MinionId::new("web/1"), Err(NameError::BadChar('/')));
        assert_eq!(MinionId::new("wéb"), Err(NameError::BadChar('é')));
        assert_eq!(MinionId::new("x".repeat(64)), Err(NameError::TooLong(64)));
    }
}
