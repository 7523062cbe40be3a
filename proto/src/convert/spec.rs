//! The desired state a master sends: container specs with their ports, volumes, restart policy
//! and health check. Separate because it is what the minion validates before it changes any
//! container.

use brine_common::names::{ContainerName, RoleName, SecretName};
use brine_common::proxy_control::ProxyMode;
use brine_common::spec::{
    ContainerSpec, DesiredState, HealthCheck, ImageRef, PortMapping, Probe, Protocol, ProxySpec,
    RestartPolicy, RolloutHooks, SecretRef, VolumeMount,
};

use super::{InvalidField, field, optional_string, required};
use crate::{pb, time};

impl TryFrom<pb::ContainerSpec> for ContainerSpec {
    type Error = InvalidField;

    fn try_from(spec: pb::ContainerSpec) -> Result<Self, InvalidField> {
        let protocol = |p: i32| match pb::Protocol::try_from(p) {
            Ok(pb::Protocol::Tcp) => Ok(Protocol::Tcp),
            Ok(pb::Protocol::Udp) => Ok(Protocol::Udp),
            _ => Err(format!("unknown protocol {p}")),
        };
        let port = |p: u32| -> Result<u16, String> {
            u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{p} is not a port number from 1 to 65535"))
        };
        let ports = spec
            .ports
            .into_iter()
            .enumerate()
            .map(|(i, p)| -> Result<PortMapping, InvalidField> {
                let at = |name: &str| format!("ports[{i}].{name}");
                Ok(PortMapping {
                    host_ip: match optional_string(p.host_ip) {
                        Some(ip) => Some(field(&at("host_ip"), ip.parse())?),
                        None => None,
                    },
                    host_port: match p.host_port {
                        0 => None,
                        other => Some(field(&at("host_port"), port(other))?),
                    },
                    container_port: field(&at("container_port"), port(p.container_port))?,
                    protocol: field(&at("protocol"), protocol(p.protocol))?,
                })
            })
            .collect::<Result<_, _>>()?;
        let volumes = spec
            .volumes
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let text = format!(
                    "{}:{}:{}",
                    v.source,
                    v.target,
                    if v.read_only { "ro" } else { "rw" }
                );
                field(&format!("volumes[{i}]"), text.parse::<VolumeMount>())
            })
            .collect::<Result<_, _>>()?;
        let restart = match pb::RestartPolicy::try_from(spec.restart) {
            Ok(pb::RestartPolicy::No) => RestartPolicy::No,
            Ok(pb::RestartPolicy::Always) => RestartPolicy::Always,
            Ok(pb::RestartPolicy::UnlessStopped) => RestartPolicy::UnlessStopped,
            Ok(pb::RestartPolicy::OnFailure) => RestartPolicy::OnFailure,
            _ => return Err(InvalidField::new("restart", "unknown restart policy")),
        };
        if let Some(key) = spec.env.keys().find(|k| k.is_empty() || k.contains('=')) {
            return Err(InvalidField::new(
                format!("env[{key:?}]"),
                "a variable name must be non-empty and without '='",
            ));
        }
        let secret_env = spec
            .secret_env
            .into_iter()
            .map(|(key, reference)| -> Result<_, InvalidField> {
                let at = |name: &str| format!("secret_env[{key:?}].{name}");
                if key.is_empty() || key.contains('=') {
                    return Err(InvalidField::new(
                        format!("secret_env[{key:?}]"),
                        "a variable name must be non-empty and without '='",
                    ));
                }
                if spec.env.contains_key(&key) {
                    return Err(InvalidField::new(
                        format!("secret_env[{key:?}]"),
                        "the variable is also in env",
                    ));
                }
                let fingerprint = reference.fingerprint;
                if fingerprint.is_empty()
                    || fingerprint.len() > 64
                    || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(InvalidField::new(
                        at("fingerprint"),
                        "a fingerprint is 1 to 64 hex digits",
                    ));
                }
                Ok((
                    key.clone(),
                    SecretRef {
                        secret: field(&at("secret"), SecretName::new(reference.secret))?,
                        fingerprint,
                        value: None,
                    },
                ))
            })
            .collect::<Result<_, _>>()?;
        let converted = ContainerSpec {
            role: field("role", RoleName::new(spec.role))?,
            name: field("name", ContainerName::new(spec.name))?,
            image: field("image", ImageRef::new(spec.image))?,
            command: spec.command,
            env: spec.env.into_iter().collect(),
            ports,
            volumes,
            restart,
            stop_timeout_seconds: whole_seconds("stop_timeout", spec.stop_timeout)?,
            health: HealthCheck::try_from(required("health", spec.health)?)
                .map_err(|e| e.within("health"))?,
            secret_env,
            proxy: match spec.proxy {
                Some(proxy) => Some(ProxySpec {
                    mode: match pb::ProxyMode::try_from(proxy.mode) {
                        Ok(pb::ProxyMode::Unspecified | pb::ProxyMode::Tcp) => ProxyMode::Tcp,
                        Ok(pb::ProxyMode::Http) => ProxyMode::Http,
                        Err(_) => return Err(InvalidField::new("proxy.mode", "unknown mode")),
                    },
                    drain_ms: short_ms("proxy.drain", proxy.drain)?,
                }),
                None => None,
            },
            hooks: match spec.hooks {
                Some(hooks) => {
                    let hooks = RolloutHooks {
                        before_replace: hooks.before_replace,
                        after_healthy: hooks.after_healthy,
                        timeout_ms: short_ms("hooks.timeout", hooks.timeout)?,
                    };
                    field("hooks", hooks.validate().map(|()| hooks.clone()))?;
                    Some(hooks)
                }
                None => None,
            },
        };
        field("proxy", converted.check_proxy())?;
        Ok(converted)
    }
}

impl TryFrom<pb::HealthCheck> for HealthCheck {
    type Error = InvalidField;

    fn try_from(check: pb::HealthCheck) -> Result<Self, InvalidField> {
        let port = |name: &str, p: u32| {
            field(
                name,
                u16::try_from(p).map_err(|_| format!("{p} is not a port number")),
            )
        };
        let probe = match check.probe {
            None => None,
            Some(pb::health_check::Probe::Http(http)) => Some(Probe::Http {
                port: port("http.port", http.port)?,
                path: http.path,
            }),
            Some(pb::health_check::Probe::Tcp(tcp)) => Some(Probe::Tcp {
                port: port("tcp.port", tcp.port)?,
            }),
            Some(pb::health_check::Probe::Exec(exec)) => Some(Probe::Exec {
                command: exec.command,
            }),
        };
        let check = HealthCheck {
            probe,
            interval_ms: short_ms("interval", check.interval)?,
            min_healthy_ms: short_ms("min_healthy", check.min_healthy)?,
            deadline_ms: short_ms("deadline", check.deadline)?,
        };
        check
            .validate()
            .map_err(|err| InvalidField::new("probe", err))?;
        Ok(check)
    }
}

impl From<HealthCheck> for pb::HealthCheck {
    fn from(check: HealthCheck) -> Self {
        pb::HealthCheck {
            probe: check.probe.map(|probe| match probe {
                Probe::Http { port, path } => pb::health_check::Probe::Http(pb::HttpProbe {
                    port: u32::from(port),
                    path,
                }),
                Probe::Tcp { port } => pb::health_check::Probe::Tcp(pb::TcpProbe {
                    port: u32::from(port),
                }),
                Probe::Exec { command } => pb::health_check::Probe::Exec(pb::ExecProbe { command }),
            }),
            interval: Some(time::duration_of_ms(u64::from(check.interval_ms))),
            min_healthy: Some(time::duration_of_ms(u64::from(check.min_healthy_ms))),
            deadline: Some(time::duration_of_ms(u64::from(check.deadline_ms))),
        }
    }
}

impl From<ContainerSpec> for pb::ContainerSpec {
    fn from(spec: ContainerSpec) -> Self {
        pb::ContainerSpec {
            role: spec.role.into(),
            name: spec.name.into(),
            image: spec.image.into(),
            command: spec.command,
            env: spec.env.into_iter().collect(),
            ports: spec
                .ports
                .into_iter()
                .map(|p| pb::PortMapping {
                    host_ip: p.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    host_port: p.host_port.map(u32::from).unwrap_or(0),
                    container_port: u32::from(p.container_port),
                    protocol: match p.protocol {
                        Protocol::Tcp => pb::Protocol::Tcp,
                        Protocol::Udp => pb::Protocol::Udp,
                    }
                    .into(),
                })
                .collect(),
            volumes: spec
                .volumes
                .into_iter()
                .map(|v| pb::VolumeMount {
                    source: v.source,
                    target: v.target,
                    read_only: v.read_only,
                })
                .collect(),
            restart: match spec.restart {
                RestartPolicy::No => pb::RestartPolicy::No,
                RestartPolicy::Always => pb::RestartPolicy::Always,
                RestartPolicy::UnlessStopped => pb::RestartPolicy::UnlessStopped,
                RestartPolicy::OnFailure => pb::RestartPolicy::OnFailure,
            }
            .into(),
            stop_timeout: Some(time::duration(std::time::Duration::from_secs(u64::from(
                spec.stop_timeout_seconds,
            )))),
            health: Some(spec.health.into()),
            // The values never travel in a spec: only beside it, in `Apply.secrets`.
            secret_env: spec
                .secret_env
                .into_iter()
                .map(|(key, reference)| {
                    (
                        key,
                        pb::SecretRef {
                            secret: reference.secret.into(),
                            fingerprint: reference.fingerprint,
                        },
                    )
                })
                .collect(),
            proxy: spec.proxy.map(|proxy| pb::ProxySpec {
                mode: match proxy.mode {
                    ProxyMode::Tcp => pb::ProxyMode::Tcp,
                    ProxyMode::Http => pb::ProxyMode::Http,
                }
                .into(),
                drain: Some(time::duration(std::time::Duration::from_millis(u64::from(
                    proxy.drain_ms,
                )))),
            }),
            hooks: spec.hooks.map(|hooks| pb::RolloutHooks {
                before_replace: hooks.before_replace,
                after_healthy: hooks.after_healthy,
                timeout: Some(time::duration(std::time::Duration::from_millis(u64::from(
                    hooks.timeout_ms,
                )))),
            }),
        }
    }
}

impl TryFrom<pb::DesiredState> for DesiredState {
    type Error = InvalidField;

    fn try_from(state: pb::DesiredState) -> Result<Self, InvalidField> {
        let containers = state
            .containers
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                ContainerSpec::try_from(c).map_err(|e| e.within(format!("containers[{i}]")))
            })
            .collect::<Result<_, _>>()?;
        field("containers", DesiredState::new(containers))
    }
}

impl From<DesiredState> for pb::DesiredState {
    fn from(state: DesiredState) -> Self {
        pb::DesiredState {
            containers: state.containers.into_iter().map(Into::into).collect(),
        }
    }
}

/// A health check's duration from the wire, in milliseconds (0 when unset), if it fits.
fn short_ms(name: &str, value: Option<prost_types::Duration>) -> Result<u32, InvalidField> {
    let ms = time::ms_or_zero(name, value)?;
    u32::try_from(ms).map_err(|_| InvalidField::new(name, "is too long"))
}

/// A stop timeout from the wire in whole seconds (0 when unset), if it fits.
fn whole_seconds(name: &str, value: Option<prost_types::Duration>) -> Result<u32, InvalidField> {
    let ms = time::ms_or_zero(name, value)?;
    u32::try_from(ms / 1000).map_err(|_| InvalidField::new(name, "is too long"))
}
