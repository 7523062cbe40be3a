//! Jobs as data: what a caller asks for ([`JobKind`]) and what that means in images, given the
//! releases recorded so far ([`JobKind::images`]). Pure; the gRPC handlers only convert their
//! requests into a [`JobKind`], and the job engine (`highstate.rs`) runs it.

use std::collections::BTreeSet;

use brine_common::names::RoleName;
use brine_common::spec::ImageRef;

use crate::release::{self, Pins, Release};

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// Every targeted host converges to the roles file, with its tags resolved now. A dry run
    /// only reports what would change: no lock, no release.
    Highstate { plan: bool },
    /// `roles` run `image` instead of the roles file's, on the targeted hosts that run one of
    /// them; every other role keeps what the current release runs.
    Deploy {
        roles: BTreeSet<RoleName>,
        image: ImageRef,
    },
    /// Back to `release` (or, when `None`, to the newest earlier release that ran something
    /// else), for `role` or every role; every other role keeps what the current release runs.
    Rollback {
        role: Option<RoleName>,
        release: Option<u64>,
    },
}

/// What a job does, without its arguments: how its record, its metrics and its events name it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobType {
    #[default]
    Highstate,
    /// A highstate's dry run.
    Plan,
    Deploy,
    Rollback,
    /// A command run in containers (`brine-master exec`).
    Exec,
    /// Containers' logs read (`brine-master logs`).
    Logs,
}

impl JobType {
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Highstate => "highstate",
            JobType::Plan => "plan",
            JobType::Deploy => "deploy",
            JobType::Rollback => "rollback",
            JobType::Exec => "exec",
            JobType::Logs => "logs",
        }
    }
}

/// The images a job runs, beyond what the roles file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobImages {
    /// Images to use instead of resolving tags; `None` resolves every tag.
    pub pins: Option<Pins>,
    /// A deploy: only hosts running one of these roles, whose containers run this image.
    pub deploy: Option<(BTreeSet<RoleName>, ImageRef)>,
    /// What the fleet lock says while the job runs, when the caller gives no reason.
    pub lock_message: Option<String>,
}

/// Why a rollback cannot be made of the releases recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    #[error("no release is recorded yet; there is nothing to roll back")]
    NoRelease,
    #[error("no earlier release ran anything else{}", .0.as_ref().map(|r| format!(" for role {r}")).unwrap_or_default())]
    NothingEarlier(Option<RoleName>),
    #[error("to_release: there is no release {0}")]
    UnknownRelease(u64),
    #[error("role: release {release} has no role {role}")]
    RoleNotInRelease { release: u64, role: RoleName },
}

impl JobKind {
    pub fn job_type(&self) -> JobType {
        match self {
            JobKind::Highstate { plan: false } => JobType::Highstate,
            JobKind::Highstate { plan: true } => JobType::Plan,
            JobKind::Deploy { .. } => JobType::Deploy,
            JobKind::Rollback { .. } => JobType::Rollback,
        }
    }

    /// A dry run changes nothing, so it neither takes nor needs the fleet lock.
    pub fn is_plan(&self) -> bool {
        matches!(self, JobKind::Highstate { plan: true })
    }

    /// Whether [`JobKind::images`] needs every release recorded (else the newest is enough).
    pub fn needs_every_release(&self) -> bool {
        matches!(self, JobKind::Rollback { .. })
    }

    /// The images this job runs, given `releases` recorded so far, oldest first (the newest is
    /// the one in force).
    pub fn images(&self, releases: &[Release]) -> Result<JobImages, RollbackError> {
        let current = releases.last();
        match self {
            JobKind::Highstate { .. } => Ok(JobImages {
                pins: None,
                deploy: None,
                lock_message: None,
            }),
            JobKind::Deploy { roles, image } => {
                let mut pins = current.map(|r| r.pins.clone()).unwrap_or_default();
                pins.retain(|role, _| !roles.contains(role));
                Ok(JobImages {
                    pins: Some(pins),
                    deploy: Some((roles.clone(), image.clone())),
                    lock_message: Some(format!("deploy {image}")),
                })
            }
            JobKind::Rollback { role, release } => {
                let current = current.ok_or(RollbackError::NoRelease)?;
                let target = match release {
                    None => release::previous_release(releases, current, role.as_ref())
                        .ok_or_else(|| RollbackError::NothingEarlier(role.clone()))?,
                    Some(id) => releases
                        .iter()
                        .find(|r| r.id == *id)
                        .ok_or(RollbackError::UnknownRelease(*id))?,
                };
                if let Some(role) = role
                    && !target.pins.contains_key(role)
                {
                    return Err(RollbackError::RoleNotInRelease {
                        release: target.id,
                        role: role.clone(),
                    });
                }
                Ok(JobImages {
                    pins: Some(release::rollback_pins(Some(current), target, role.as_ref())),
                    deploy: None,
                    lock_message: Some(format!("rollback to release {}", target.id)),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use brine_common::names::ContainerName;

    use super::*;

    fn role(name: &str) -> RoleName {
        RoleName::new(name).unwrap()
    }

    fn image(tag: &str) -> ImageRef {
        ImageRef::new(format!("registry.example.com/app:{tag}")).unwrap()
    }

    /// Release `id` running each role's single container at `tag`.
    fn release(id: u64, roles: &[(&str, &str)]) -> Release {
        let mut pins = Pins::new();
        for (name, tag) in roles {
            pins.insert(
                role(name),
                BTreeMap::from([(ContainerName::new(*name).unwrap(), image(tag))]),
            );
        }
        Release {
            id,
            job_id: format!("job-{id}"),
            caller: "admin (admin)".into(),
            created_at_unix_ms: 0,
            pins,
        }
    }

    fn tags(pins: &Pins) -> Vec<(String, String)> {
        pins.iter()
            .flat_map(|(role, containers)| {
                containers.values().map(move |image| {
                    (
                        role.to_string(),
                        image.as_str().rsplit(':').next().unwrap().to_owned(),
                    )
                })
            })
            .collect()
    }

    fn pairs(entries: &[(&str, &str)]) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn a_highstate_resolves_every_tag_and_only_a_dry_run_skips_the_lock() {
        let images = JobKind::Highstate { plan: false }.images(&[]).unwrap();
        assert_eq!(images.pins, None);
        assert_eq!(images.deploy, None);
        assert!(JobKind::Highstate { plan: true }.is_plan());
        assert!(!JobKind::Highstate { plan: false }.is_plan());
    }

    #[test]
    fn a_deploy_changes_its_roles_and_keeps_every_other_role_of_the_current_release() {
        let releases = [release(1, &[("web", "v1"), ("worker", "v1")])];
        let kind = JobKind::Deploy {
            roles: BTreeSet::from([role("web")]),
            image: image("v2"),
        };
        let images = kind.images(&releases).unwrap();
        assert_eq!(tags(&images.pins.unwrap()), pairs(&[("worker", "v1")]));
        assert_eq!(
            images.deploy,
            Some((BTreeSet::from([role("web")]), image("v2")))
        );
        assert_eq!(
            images.lock_message.as_deref(),
            Some("deploy registry.example.com/app:v2")
        );
        // With no release yet, nothing else is pinned.
        assert_eq!(kind.images(&[]).unwrap().pins, Some(Pins::new()));
    }

    #[test]
    fn a_rollback_goes_to_the_newest_release_that_ran_something_else() {
        let releases = [
            release(1, &[("web", "v1"), ("worker", "v1")]),
            release(2, &[("web", "v2"), ("worker", "v1")]),
            release(3, &[("web", "v2"), ("worker", "v3")]),
        ];
        let every = JobKind::Rollback {
            role: None,
            release: None,
        };
        let images = every.images(&releases).unwrap();
        assert_eq!(
            tags(&images.pins.unwrap()),
            pairs(&[("web", "v2"), ("worker", "v1")])
        );
        assert_eq!(
            images.lock_message.as_deref(),
            Some("rollback to release 2")
        );

        // For one role: the newest release where that role ran something else; the other
        // roles keep what runs now.
        let web = JobKind::Rollback {
            role: Some(role("web")),
            release: None,
        };
        let images = web.images(&releases).unwrap();
        assert_eq!(
            tags(&images.pins.unwrap()),
            pairs(&[("web", "v1"), ("worker", "v3")])
        );
        assert_eq!(
            images.lock_message.as_deref(),
            Some("rollback to release 1")
        );

        // A named release.
        let named = JobKind::Rollback {
            role: None,
            release: Some(1),
        };
        assert_eq!(
            tags(&named.images(&releases).unwrap().pins.unwrap()),
            pairs(&[("web", "v1"), ("worker", "v1")])
        );
    }

    #[test]
    fn impossible_rollbacks_are_refused_with_the_reason() {
        let rollback = |role: Option<&str>, release: Option<u64>| JobKind::Rollback {
            role: role.map(super::tests::role),
            release,
        };
        assert_eq!(
            rollback(None, None).images(&[]),
            Err(RollbackError::NoRelease)
        );
        let only = [release(1, &[("web", "v1")])];
        assert_eq!(
            rollback(None, None).images(&only),
            Err(RollbackError::NothingEarlier(None))
        );
        assert_eq!(
            rollback(Some("web"), None)
                .images(&only)
                .unwrap_err()
                .to_string(),
            "no earlier release ran anything else for role web"
        );
        assert_eq!(
            rollback(None, Some(7)).images(&only),
            Err(RollbackError::UnknownRelease(7))
        );
        assert_eq!(
            rollback(Some("worker"), Some(1)).images(&only),
            Err(RollbackError::RoleNotInRelease {
                release: 1,
                role: role("worker")
            })
        );
    }
}
