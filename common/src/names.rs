//! Validated names: minion ids, role names and container names.
//!
//! Minion ids (often host names), role names and labels may contain '.'; container names and
//! namespaces may not, as '.' joins them into Docker names.

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
    #[error("contains {0:?}; only letters, digits, '-' and '_' are allowed")]
    BadContainerChar(char),
    #[error(
        "contains '.', which separates a namespace, a name and brine's temporary suffixes; \
         use '-' or '_'"
    )]
    ReservedDot,
    #[error(
        "is reserved for the temporary names brine gives containers it replaces \
         (NAME.next, NAME.replaced)"
    )]
    ReservedWord,
}

/// The suffix of the temporary Docker name (`NAME.next`) of a new container that a replacement
/// starts beside the old one.
pub const NEXT_SUFFIX: &str = "next";

/// The suffix of the temporary Docker name (`NAME.replaced`) a replacement sets the old
/// container aside under.
pub const REPLACED_SUFFIX: &str = "replaced";

/// Checks the name syntax every brine name shares: it fits Docker container names, DNS labels
/// and certificate common names alike, so a name valid in one place is valid in all of them.
/// Container names are stricter still ([`check_container_name`]).
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

/// Checks a container name (or a namespace, which prefixes container names): the shared syntax
/// without '.', because brine joins `NAMESPACE.NAME` and its temporary `NAME.next` and
/// `NAME.replaced` with it; a dot inside a name could make one container's Docker name equal
/// another's. The suffixes themselves are refused too: on an engine shared by namespaces, the
/// container `next` of namespace `web` would be named `web.next`, the temporary name of the
/// container `web` of a minion without a namespace.
fn check_container_name(name: &str) -> Result<(), NameError> {
    check_name(name).map_err(|err| match err {
        NameError::BadChar(bad) => NameError::BadContainerChar(bad),
        other => other,
    })?;
    if name.contains('.') {
        return Err(NameError::ReservedDot);
    }
    if [NEXT_SUFFIX, REPLACED_SUFFIX].contains(&name) {
        return Err(NameError::ReservedWord);
    }
    Ok(())
}

/// Checks a host label (`env=prod`): key and value follow the name syntax, so labels can be
/// written in target expressions without quoting.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    check_name(key).map_err(|err| format!("label key {key:?} {err}"))?;
    check_name(value).map_err(|err| format!("label {key}: value {value:?} {err}"))
}

/// A label as the command lines take it, `KEY=VALUE`, checked as [`check_label`] does.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    check_label(key, value)?;
    Ok((key.to_owned(), value.to_owned()))
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, checked by $check:path, read back by $read_back:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// Validates `name`.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                $check(&name)?;
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

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = String::deserialize(deserializer)?;
                $read_back(&name).map_err(serde::de::Error::custom)?;
                Ok(Self(name))
            }
        }
    };
}

name_type!(
    /// A host's identity: the common name of its certificate.
    MinionId,
    checked by check_name,
    read back by check_name
);
name_type!(
    /// The name of a role in the roles file.
    RoleName,
    checked by check_name,
    read back by check_name
);
name_type!(
    /// The name of a container, unique on its host. It has no '.' and is not a temporary
    /// suffix, so no two containers' Docker names can meet; only [`ContainerName::existing`]
    /// and records read back (brine's own files and store) may hold a '.', for containers made
    /// before it was reserved.
    ContainerName,
    checked by check_container_name,
    read back by check_name
);

name_type!(
    /// The name of a secret the master keeps, which a container's environment refers to.
    SecretName,
    checked by check_name,
    read back by check_name
);

impl ContainerName {
    /// The name of a container that already exists, as a host reports it or a container's label
    /// holds it: such a container may have been created when names could contain '.'. Accepting
    /// those names keeps older hosts, records and containers readable, so the next highstate
    /// can remove them; nothing can declare such a name any more.
    pub fn existing(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        check_name(&name)?;
        Ok(Self(name))
    }
}

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

    #[test]
    fn container_names_may_not_contain_a_dot() {
        for dotted in ["web.next", "web.replaced", "a.b", "web.", "x.y.z"] {
            assert_eq!(
                ContainerName::new(dotted),
                Err(NameError::ReservedDot),
                "{dotted}"
            );
        }
        let message = ContainerName::new("web.v2").unwrap_err().to_string();
        assert!(message.contains("contains '.'"), "{message}");
        assert!(message.contains("use '-' or '_'"), "{message}");
        for good in ["web", "web-v2", "web_v2", "Web2", &"x".repeat(63)] {
            assert!(ContainerName::new(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn the_temporary_suffixes_are_not_container_names() {
        assert_eq!(ContainerName::new("next"), Err(NameError::ReservedWord));
        assert_eq!(ContainerName::new("replaced"), Err(NameError::ReservedWord));
        for good in ["next-1", "replaced_old", "Next"] {
            assert!(ContainerName::new(good).is_ok(), "{good}");
        }
        assert!(MinionId::new("next").is_ok());
        assert!(RoleName::new("replaced").is_ok());
    }

    #[test]
    fn container_names_keep_the_shared_rules_otherwise() {
        assert_eq!(ContainerName::new(""), Err(NameError::Empty));
        assert_eq!(ContainerName::new("-web"), Err(NameError::BadStart));
        assert_eq!(ContainerName::new(".web"), Err(NameError::BadStart));
        assert_eq!(
            ContainerName::new("x".repeat(64)),
            Err(NameError::TooLong(64))
        );
        // The list of allowed characters does not offer the '.' a container name cannot have.
        let slash = ContainerName::new("web/1").unwrap_err();
        assert_eq!(slash, NameError::BadContainerChar('/'));
        assert!(!slash.to_string().contains("'.'"), "{slash}");
    }

    #[test]
    fn command_line_labels_are_key_equals_value() {
        assert_eq!(
            parse_label("env=prod"),
            Ok(("env".to_owned(), "prod".to_owned()))
        );
        assert!(parse_label("envprod").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_label("env=pr od").is_err());
        assert!(parse_label("=prod").is_err());
    }

    #[test]
    fn minion_ids_role_names_and_labels_keep_their_dots() {
        assert!(MinionId::new("web-1.example.com").is_ok());
        assert!(RoleName::new("web.v2").is_ok());
        assert!(check_label("zone", "eu.west-1").is_ok());
        assert_eq!(
            "web.example.com".parse::<MinionId>().map(String::from),
            Ok("web.example.com".to_owned())
        );
    }

    #[test]
    fn a_recorded_dotted_container_name_reads_back_but_cannot_be_declared() {
        let recorded: ContainerName = serde_json::from_str("\"web.v2\"").unwrap();
        assert_eq!(recorded.as_str(), "web.v2");
        assert_eq!(ContainerName::existing("web.v2"), Ok(recorded));
        assert!("web.v2".parse::<ContainerName>().is_err());
        // What the shared rules refuse stays refused, also when read back.
        assert!(serde_json::from_str::<ContainerName>("\"web/1\"").is_err());
        assert!(ContainerName::existing("-web").is_err());
    }
}
