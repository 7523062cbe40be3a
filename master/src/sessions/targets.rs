//! Which hosts and containers a `logs` or `exec` call reaches: the hosts the roles file assigns
//! the role to (among those the caller's target picked), and on each the role's containers, or
//! the one named. Pure.

use brine_common::names::{ContainerName, MinionId, RoleName};
use brine_common::roles_file::RolesFile;

/// Why a call reaches nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetsError {
    #[error("the roles file declares no role {0}")]
    UnknownRole(RoleName),
    #[error("role {role} declares no container {container} (it declares {declared})")]
    UnknownContainer {
        role: RoleName,
        container: ContainerName,
        declared: String,
    },
    #[error("no accepted host that the target picks runs role {0}")]
    NoHosts(RoleName),
}

/// The containers to reach on each of `hosts` (the accepted hosts the target picked, in
/// order) that runs `role`: `container`, or every container of the role.
pub fn resolve(
    roles: &RolesFile,
    hosts: impl IntoIterator<Item = MinionId>,
    role: &RoleName,
    container: Option<&ContainerName>,
) -> Result<Vec<(MinionId, Vec<ContainerName>)>, TargetsError> {
    let declared = roles
        .containers_of(role)
        .ok_or_else(|| TargetsError::UnknownRole(role.clone()))?;
    let containers: Vec<ContainerName> = match container {
        Some(wanted) if declared.contains(&wanted) => vec![wanted.clone()],
        Some(wanted) => {
            return Err(TargetsError::UnknownContainer {
                role: role.clone(),
                container: wanted.clone(),
                declared: declared
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        None => declared.into_iter().cloned().collect(),
    };
    let reached: Vec<_> = hosts
        .into_iter()
        .filter(|host| roles.roles_for(host).contains(role))
        .map(|host| (host, containers.clone()))
        .collect();
    if reached.is_empty() {
        return Err(TargetsError::NoHosts(role.clone()));
    }
    Ok(reached)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLES: &str = r#"
[roles.web]
image = "127.0.0.1:5000/app:1"
[[roles.web.containers]]
name = "app"
[[roles.web.containers]]
name = "sidecar"

[roles.db]
image = "127.0.0.1:5000/db:1"
[[roles.db.containers]]
name = "db"

[assign]
"web-*" = ["web"]
"db-1" = ["db"]
"#;

    fn id(text: &str) -> MinionId {
        MinionId::new(text).unwrap()
    }

    fn name(text: &str) -> ContainerName {
        ContainerName::new(text).unwrap()
    }

    #[test]
    fn only_hosts_running_the_role_are_reached_with_its_containers() {
        let roles = RolesFile::parse("roles.toml", ROLES).unwrap();
        let web = RoleName::new("web").unwrap();
        let hosts = [id("web-1"), id("db-1"), id("web-2")];
        let every = resolve(&roles, hosts.clone(), &web, None).unwrap();
        assert_eq!(
            every,
            vec![
                (id("web-1"), vec![name("app"), name("sidecar")]),
                (id("web-2"), vec![name("app"), name("sidecar")]),
            ]
        );
        let one = resolve(&roles, hosts, &web, Some(&name("sidecar"))).unwrap();
        assert_eq!(one[0].1, vec![name("sidecar")]);
    }

    #[test]
    fn a_role_or_container_the_roles_file_does_not_declare_reaches_nothing() {
        let roles = RolesFile::parse("roles.toml", ROLES).unwrap();
        let web = RoleName::new("web").unwrap();
        let cache = RoleName::new("cache").unwrap();
        assert_eq!(
            resolve(&roles, [id("web-1")], &cache, None),
            Err(TargetsError::UnknownRole(cache))
        );
        let err = resolve(&roles, [id("web-1")], &web, Some(&name("db"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "role web declares no container db (it declares app, sidecar)"
        );
        assert_eq!(
            resolve(&roles, [id("db-1")], &web, None),
            Err(TargetsError::NoHosts(web))
        );
    }
}
