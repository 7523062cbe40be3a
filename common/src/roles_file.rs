//! The roles file: which containers each role runs, and which hosts run which roles.
//!
//! ```toml
//! [roles.web]
//! image = "127.0.0.1:5000/mynames/app:tested"
//! [[roles.web.containers]]
//! name = "web"
//! command = ["httpd", "-f", "-p", "8000"]
//! ports = ["80:8000"]
//!
//! [assign]
//! "web-*" = ["web"]
//! ```
//!
//! Parsing validates everything it can without knowing the hosts and reports every problem (up to
//! [`MAX_PROBLEMS`]) with its file, line, column and key. What depends on a host's set of roles (duplicate container
//! names, port clashes) is checked by [`RolesFile::desired_state_for`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::names::{ContainerName, MinionId, RoleName, SecretName};
use crate::proxy_control::ProxyMode;
use crate::spec::{
    ContainerSpec, DEFAULT_DRAIN_MS, DEFAULT_HOOK_TIMEOUT_MS, DEFAULT_STOP_TIMEOUT_SECONDS,
    DesiredState, DesiredStateError, HealthCheck, ImageRef, MAX_ROLLOUT_WAIT_MS, PortMapping,
    Probe, ProxySpec, RestartPolicy, RolloutHooks, SecretRef, VolumeMount,
};
use crate::toml_span::{Problem, locate_all};

/// A validated roles file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolesFile {
    roles: BTreeMap<RoleName, Vec<ContainerSpec>>,
    assignments: Vec<Assignment>,
    /// The repositories each role may be deployed from (`brine-master deploy`): those of its
    /// images, and those its `deploy_from` adds.
    deployable: BTreeMap<RoleName, BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Assignment {
    pattern: glob::Pattern,
    roles: Vec<RoleName>,
}

/// The most problems a roles file's error lists: locating each costs a search of the whole file,
/// and a person fixes the first ones first.
pub const MAX_PROBLEMS: usize = 100;

/// The problems found in a roles file: the first [`MAX_PROBLEMS`], in the order of the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RolesFileError {
    pub problems: Vec<Problem>,
    /// How many more problems were found but not listed.
    pub omitted: usize,
}

impl fmt::Display for RolesFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut problems = self.problems.iter();
        if let Some(first) = problems.next() {
            write!(f, "{first}")?;
        }
        for problem in problems {
            write!(f, "\n{problem}")?;
        }
        if self.omitted > 0 {
            write!(f, "\n... and {} more problems", self.omitted)?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    roles: BTreeMap<Spanned<String>, RawRole>,
    #[serde(default)]
    assign: BTreeMap<Spanned<String>, Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    image: Spanned<String>,
    containers: Spanned<Vec<RawContainer>>,
    /// More repositories a deploy may bring this role's image from.
    #[serde(default)]
    deploy_from: Vec<Spanned<String>>,
    /// Commands run on the host around a replacement of this role's containers.
    hooks: Option<Spanned<RawHooks>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    #[serde(default)]
    before_replace: Vec<String>,
    #[serde(default)]
    after_healthy: Vec<String>,
    timeout: Option<Spanned<String>>,
}

/// A container's proxy: `proxy = "http"` (or `"tcp"`), or a table with `mode` and `drain`.
struct RawProxy {
    mode: Option<Spanned<String>>,
    drain: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainer {
    name: Spanned<String>,
    /// Overrides the role's image for this container.
    image: Option<Spanned<String>>,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, RawEnvValue>,
    #[serde(default)]
    ports: Vec<Spanned<String>>,
    #[serde(default)]
    volumes: Vec<Spanned<String>>,
    restart: Option<Spanned<String>>,
    stop_timeout: Option<Spanned<String>>,
    health: Option<Spanned<RawHealth>>,
    proxy: Option<Spanned<RawProxy>>,
}

/// An environment variable's value: written out, or a secret the master keeps.
enum RawEnvValue {
    Plain(String),
    Secret(Spanned<String>),
}

/// Read by hand rather than as an untagged enum: that would buffer the value and lose the
/// position a wrong secret name is reported at.
impl<'de> Deserialize<'de> for RawEnvValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawEnvValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, or a secret reference such as { secret = \"db\" }")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<RawEnvValue, E> {
                Ok(RawEnvValue::Plain(value.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawEnvValue, A::Error> {
                let mut secret = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "secret" || secret.is_some() {
                        return Err(serde::de::Error::custom(format!(
                            "a secret reference has one key, `secret`, not {key:?}"
                        )));
                    }
                    secret = Some(map.next_value::<Spanned<String>>()?);
                }
                secret
                    .map(RawEnvValue::Secret)
                    .ok_or_else(|| serde::de::Error::missing_field("secret"))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Read by hand, as [`RawEnvValue`], to accept both forms and keep the positions.
impl<'de> Deserialize<'de> for RawProxy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawProxy;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "\"tcp\", \"http\", or a table such as { mode = \"http\", drain = \"30s\" }",
                )
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<RawProxy, E> {
                Ok(RawProxy {
                    mode: Some(Spanned::new(0..0, value.to_owned())),
                    drain: None,
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawProxy, A::Error> {
                let mut proxy = RawProxy {
                    mode: None,
                    drain: None,
                };
                while let Some(key) = map.next_key::<String>()? {
                    let slot = match key.as_str() {
                        "mode" => &mut proxy.mode,
                        "drain" => &mut proxy.drain,
                        other => {
                            return Err(serde::de::Error::custom(format!(
                                "unknown key {other:?} in proxy (mode, drain)"
                            )));
                        }
                    };
                    if slot.is_some() {
                        return Err(serde::de::Error::custom(format!("{key} is given twice")));
                    }
                    *slot = Some(map.next_value::<Spanned<String>>()?);
                }
                Ok(proxy)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    /// `http://127.0.0.1:PORT/PATH`: the address is the container's own.
    http: Option<Spanned<String>>,
    tcp: Option<Spanned<u16>>,
    exec: Option<Spanned<Vec<String>>>,
    interval: Option<Spanned<String>>,
    min_healthy: Option<Spanned<String>>,
    deadline: Option<Spanned<String>>,
}

/// Collects problems by byte span while the file is checked; they are located at the end.
#[derive(Default)]
struct Problems(Vec<(Range<usize>, String)>);

impl Problems {
    fn push(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.0.push((span, message.into()));
    }

    fn check<T, E: fmt::Display>(&mut self, span: Range<usize>, result: Result<T, E>) -> Option<T> {
        result.map_err(|err| self.push(span, err.to_string())).ok()
    }
}

impl RolesFile {
    /// Parses and validates the text of a roles file; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, RolesFileError> {
        let locate = |mut problems: Vec<(Range<usize>, String)>| {
            let omitted = problems.len().saturating_sub(MAX_PROBLEMS);
            problems.truncate(MAX_PROBLEMS);
            RolesFileError {
                problems: locate_all(file, text, problems),
                omitted,
            }
        };
        let raw: RawFile = toml::from_str(text).map_err(|err| {
            let span = err.span().unwrap_or(0..0);
            locate(vec![(span, err.message().to_owned())])
        })?;
        let mut problems = Problems::default();
        let (roles, deployable) = check_roles(raw.roles, &mut problems);
        let assignments = check_assignments(raw.assign, &roles, &mut problems);
        if problems.0.is_empty() {
            Ok(Self {
                roles,
                assignments,
                deployable,
            })
        } else {
            problems.0.sort_by_key(|(span, _)| span.start);
            Err(locate(problems.0))
        }
    }

    /// The roles assigned to a host, sorted and without repeats.
    pub fn roles_for(&self, minion: &MinionId) -> BTreeSet<&RoleName> {
        self.assignments
            .iter()
            .filter(|a| a.pattern.matches(minion.as_str()))
            .flat_map(|a| &a.roles)
            .collect()
    }

    /// Every container a host should run.
    pub fn desired_state_for(&self, minion: &MinionId) -> Result<DesiredState, DesiredStateError> {
        let containers = self
            .roles_for(minion)
            .into_iter()
            .flat_map(|role| self.roles.get(role).into_iter().flatten().cloned())
            .collect();
        DesiredState::new(containers)
    }

    /// The containers whose environment uses secret `name`, as `ROLE/CONTAINER`, sorted.
    pub fn secret_users(&self, name: &SecretName) -> Vec<String> {
        self.roles
            .values()
            .flatten()
            .filter(|c| c.secret_env.values().any(|r| &r.secret == name))
            .map(|c| format!("{}/{}", c.role, c.name))
            .collect()
    }

    /// The names of the containers `role` declares, in order; `None` for an undeclared role.
    pub fn containers_of(&self, role: &RoleName) -> Option<Vec<&ContainerName>> {
        self.roles
            .get(role)
            .map(|specs| specs.iter().map(|spec| &spec.name).collect())
    }

    /// The declared roles, sorted.
    pub fn role_names(&self) -> impl Iterator<Item = &RoleName> {
        self.roles.keys()
    }

    /// The repositories `role` may be deployed from: those of the images the roles file gives
    /// it, and those its `deploy_from` lists. Empty for an undeclared role.
    pub fn deployable_from(&self, role: &RoleName) -> BTreeSet<String> {
        self.deployable.get(role).cloned().unwrap_or_default()
    }
}

/// The roles' containers, and the repositories each may be deployed from.
type CheckedRoles = (
    BTreeMap<RoleName, Vec<ContainerSpec>>,
    BTreeMap<RoleName, BTreeSet<String>>,
);

fn check_roles(raw: BTreeMap<Spanned<String>, RawRole>, problems: &mut Problems) -> CheckedRoles {
    let mut roles = BTreeMap::new();
    let mut deployable = BTreeMap::new();
    for (name, role) in raw {
        let span = name.span();
        let Some(name) = problems.check(span, RoleName::new(name.into_inner())) else {
            continue;
        };
        let image = problems.check(role.image.span(), ImageRef::new(role.image.into_inner()));
        let hooks = role.hooks.and_then(|hooks| check_hooks(hooks, problems));
        if role.containers.get_ref().is_empty() {
            problems.push(
                role.containers.span(),
                "a role needs at least one container",
            );
        }
        let containers_span = role.containers.span();
        let mut specs: Vec<ContainerSpec> = vec![];
        // Where each container's name is written, to report a port clash there.
        let mut name_spans: BTreeMap<ContainerName, Range<usize>> = BTreeMap::new();
        for raw in role.containers.into_inner() {
            let name_span = raw.name.span();
            let Some(spec) = check_container(&name, image.as_ref(), hooks.as_ref(), raw, problems)
            else {
                continue;
            };
            if name_spans.contains_key(&spec.name) {
                problems.push(
                    name_span,
                    format!(
                        "container name {:?} is used twice in this role",
                        spec.name.as_str()
                    ),
                );
                continue;
            }
            name_spans.insert(spec.name.clone(), name_span);
            specs.push(spec);
        }
        // Checked once for the whole role: checking again as each container was added made a
        // role with many containers take cubic time. A clash is reported where the later of its
        // two containers is named.
        if let Err(err) = DesiredState::new(specs.clone()) {
            let span = |name: &ContainerName| name_spans.get(name).cloned();
            let span = match &err {
                DesiredStateError::PortConflict { first, second, .. } => span(first)
                    .into_iter()
                    .chain(span(second))
                    .max_by_key(|s| s.start),
                DesiredStateError::DuplicateName { name, .. } => span(name),
            };
            problems.push(span.unwrap_or(containers_span), err.to_string());
        }
        let mut sources: BTreeSet<String> = specs
            .iter()
            .map(|spec| spec.image.parts().repository())
            .collect();
        for source in role.deploy_from {
            let span = source.span();
            let text = source.into_inner();
            match ImageRef::new(text.clone()) {
                Ok(image) if image.parts().tag.is_none() && image.parts().digest.is_none() => {
                    sources.insert(image.parts().repository());
                }
                Ok(_) => problems.push(
                    span,
                    format!("{text:?}: a repository, without a tag or digest"),
                ),
                Err(err) => problems.push(span, err.to_string()),
            }
        }
        deployable.insert(name.clone(), sources);
        roles.insert(name, specs);
    }
    (roles, deployable)
}

fn check_container(
    role: &RoleName,
    role_image: Option<&ImageRef>,
    role_hooks: Option<&RolloutHooks>,
    raw: RawContainer,
    problems: &mut Problems,
) -> Option<ContainerSpec> {
    let name = problems.check(raw.name.span(), ContainerName::new(raw.name.into_inner()));
    let image = match raw.image {
        Some(image) => problems.check(image.span(), ImageRef::new(image.into_inner())),
        None => role_image.cloned(),
    };
    let mut env = BTreeMap::new();
    let mut secret_env = BTreeMap::new();
    for (key, value) in raw.env {
        if key.get_ref().is_empty() || key.get_ref().contains('=') {
            problems.push(
                key.span(),
                "an environment variable name must be non-empty and without '='",
            );
            continue;
        }
        match value {
            RawEnvValue::Plain(value) => {
                env.insert(key.into_inner(), value);
            }
            RawEnvValue::Secret(name) => {
                if let Some(secret) =
                    problems.check(name.span(), SecretName::new(name.into_inner()))
                {
                    secret_env.insert(key.into_inner(), SecretRef::to(secret));
                }
            }
        }
    }
    let ports: Vec<Option<PortMapping>> = raw
        .ports
        .into_iter()
        .map(|port| problems.check(port.span(), port.get_ref().parse::<PortMapping>()))
        .collect();
    let volumes: Vec<Option<VolumeMount>> = raw
        .volumes
        .into_iter()
        .map(|volume| problems.check(volume.span(), volume.get_ref().parse::<VolumeMount>()))
        .collect();
    let restart = match raw.restart {
        Some(restart) => problems.check(restart.span(), restart.get_ref().parse::<RestartPolicy>()),
        None => Some(RestartPolicy::default()),
    };
    let stop_timeout_seconds = match raw.stop_timeout {
        Some(timeout) => problems
            .check(timeout.span(), humantime::parse_duration(timeout.get_ref()))
            .and_then(|d| {
                u32::try_from(d.as_secs())
                    .map_err(|_| problems.push(timeout.span(), "the stop timeout is too long"))
                    .ok()
            }),
        None => Some(DEFAULT_STOP_TIMEOUT_SECONDS),
    };
    let health = match raw.health {
        Some(health) => check_health(health, problems),
        None => Some(HealthCheck::default()),
    };
    let proxy_span = raw.proxy.as_ref().map(Spanned::span);
    let proxy = raw.proxy.map(|proxy| check_proxy(proxy, problems));
    let spec = ContainerSpec {
        role: role.clone(),
        name: name?,
        image: image?,
        command: raw.command,
        env,
        secret_env,
        ports: ports.into_iter().collect::<Option<_>>()?,
        volumes: volumes.into_iter().collect::<Option<_>>()?,
        restart: restart?,
        stop_timeout_seconds: stop_timeout_seconds?,
        health: health?,
        proxy: match proxy {
            Some(proxy) => Some(proxy?),
            None => None,
        },
        hooks: role_hooks.cloned(),
    };
    if let Some(span) = proxy_span {
        problems.check(span, spec.check_proxy())?;
    }
    Some(spec)
}

/// A duration in milliseconds, at most `max`; `default` when not given.
fn checked_millis(
    value: Option<Spanned<String>>,
    default: u32,
    max: u32,
    problems: &mut Problems,
) -> Option<u32> {
    let Some(value) = value else {
        return Some(default);
    };
    let duration = problems.check(value.span(), humantime::parse_duration(value.get_ref()))?;
    match u32::try_from(duration.as_millis()) {
        Ok(ms) if ms <= max => Some(ms),
        _ => {
            problems.push(
                value.span(),
                format!(
                    "the duration must be at most {}",
                    humantime::format_duration(std::time::Duration::from_millis(max.into()))
                ),
            );
            None
        }
    }
}

/// `span` is where the proxy key is written, for the string form whose value has no position.
fn check_proxy(raw: Spanned<RawProxy>, problems: &mut Problems) -> Option<ProxySpec> {
    let span = raw.span();
    let raw = raw.into_inner();
    let mode = match raw.mode {
        None => Some(ProxyMode::Tcp),
        Some(mode) => {
            let at = if mode.span().is_empty() {
                span.clone()
            } else {
                mode.span()
            };
            match mode.get_ref().as_str() {
                "tcp" => Some(ProxyMode::Tcp),
                "http" => Some(ProxyMode::Http),
                other => {
                    problems.push(at, format!("unknown proxy mode {other:?} (tcp or http)"));
                    None
                }
            }
        }
    };
    let drain_ms = checked_millis(raw.drain, DEFAULT_DRAIN_MS, MAX_ROLLOUT_WAIT_MS, problems);
    Some(ProxySpec {
        mode: mode?,
        drain_ms: drain_ms?,
    })
}

fn check_hooks(raw: Spanned<RawHooks>, problems: &mut Problems) -> Option<RolloutHooks> {
    let span = raw.span();
    let raw = raw.into_inner();
    let timeout_ms = checked_millis(
        raw.timeout,
        DEFAULT_HOOK_TIMEOUT_MS,
        MAX_ROLLOUT_WAIT_MS,
        problems,
    )?;
    let hooks = RolloutHooks {
        before_replace: raw.before_replace,
        after_healthy: raw.after_healthy,
        timeout_ms,
    };
    problems.check(span, hooks.validate())?;
    Some(hooks)
}

fn check_health(raw: Spanned<RawHealth>, problems: &mut Problems) -> Option<HealthCheck> {
    let span = raw.span();
    let raw = raw.into_inner();
    let defaults = HealthCheck::default();
    let mut millis = |value: Option<Spanned<String>>, default: u32| match value {
        None => Some(default),
        Some(value) => problems
            .check(value.span(), humantime::parse_duration(value.get_ref()))
            .and_then(|d| {
                u32::try_from(d.as_millis())
                    .map_err(|_| problems.push(value.span(), "the duration is too long"))
                    .ok()
            }),
    };
    let interval_ms = millis(raw.interval, defaults.interval_ms);
    let min_healthy_ms = millis(raw.min_healthy, defaults.min_healthy_ms);
    let deadline_ms = millis(raw.deadline, defaults.deadline_ms);
    let probes = [raw.http.is_some(), raw.tcp.is_some(), raw.exec.is_some()];
    if probes.iter().filter(|p| **p).count() > 1 {
        problems.push(span.clone(), "give at most one of http, tcp and exec");
        return None;
    }
    let probe = if let Some(url) = raw.http {
        Some(problems.check(url.span(), http_probe(url.get_ref()))?)
    } else if let Some(port) = raw.tcp {
        Some(Probe::Tcp {
            port: *port.get_ref(),
        })
    } else {
        raw.exec.map(|command| Probe::Exec {
            command: command.into_inner(),
        })
    };
    let check = HealthCheck {
        probe,
        interval_ms: interval_ms?,
        min_healthy_ms: min_healthy_ms?,
        deadline_ms: deadline_ms?,
    };
    problems.check(span, check.validate())?;
    Some(check)
}

/// Reads `http://127.0.0.1:PORT/PATH` (or `localhost`): the probe connects to the container's
/// own address, as the URL would from inside the container.
fn http_probe(url: &str) -> Result<Probe, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} must start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("{url:?} needs a port (http://127.0.0.1:PORT/PATH)"))?;
    if !matches!(host, "127.0.0.1" | "localhost") {
        return Err(format!(
            "{url:?}: the host must be 127.0.0.1 or localhost, the container itself"
        ));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{port:?} is not a port number from 1 to 65535"))?;
    Ok(Probe::Http {
        port,
        path: path.to_owned(),
    })
}

fn check_assignments(
    raw: BTreeMap<Spanned<String>, Vec<Spanned<String>>>,
    roles: &BTreeMap<RoleName, Vec<ContainerSpec>>,
    problems: &mut Problems,
) -> Vec<Assignment> {
    let mut assignments = vec![];
    for (pattern, names) in raw {
        let pattern_span = pattern.span();
        let pattern = problems.check(pattern_span, glob::Pattern::new(pattern.get_ref()));
        let mut assigned = vec![];
        for name in names {
            let span = name.span();
            let Some(role) = problems.check(span.clone(), RoleName::new(name.into_inner())) else {
                continue;
            };
            if roles.contains_key(&role) {
                assigned.push(role);
            } else {
                problems.push(span, format!("role {role:?} is not declared under [roles]"));
            }
        }
        if let Some(pattern) = pattern {
            assignments.push(Assignment {
                pattern,
                roles: assigned,
            });
        }
    }
    assignments
}

#[cfg(test)]
mod tests;
