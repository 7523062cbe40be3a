//! `TryFrom<pb::X> for X` (validation at the edge) and `From<X> for pb::X`.

use std::fmt::Display;

use brine_common::host::{Facts, HostEvent, HostEventKind, RunningContainer};
use brine_common::limits::{
    MAX_CONTAINERS, MAX_ERROR_TEXT, MAX_FACT_TEXT, MAX_IMAGE_TEXT, MAX_LABELS, MAX_SHORT_TEXT,
    check_len, truncate,
};
use brine_common::names::{ContainerName, MinionId, RoleName, check_label};
use brine_common::outcome::{
    ContainerAction, ContainerResult, HostReport, HostStatus, JobId, JobResult, Timings,
};
use brine_common::progress::{Phase, Progress};
use brine_common::spec::{
    ContainerSpec, DesiredState, HealthCheck, ImageRef, PortMapping, Probe, Protocol,
    RestartPolicy, VolumeMount,
};

use crate::pb;

/// A field of a message from the wire that does not hold a valid value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    pub field: String,
    pub message: String,
}

impl InvalidField {
    pub fn new(field: impl Into<String>, message: impl Display) -> Self {
        Self {
            field: field.into(),
            message: message.to_string(),
        }
    }

    /// Prefixes the field with the name of the message that holds it.
    fn within(self, parent: impl Display) -> Self {
        Self {
            field: format!("{parent}.{}", self.field),
            message: self.message,
        }
    }
}

impl From<InvalidField> for tonic::Status {
    fn from(err: InvalidField) -> Self {
        tonic::Status::invalid_argument(err.to_string())
    }
}

fn field<T, E: Display>(name: &str, result: Result<T, E>) -> Result<T, InvalidField> {
    result.map_err(|err| InvalidField::new(name, err))
}

fn required<T>(name: &str, value: Option<T>) -> Result<T, InvalidField> {
    value.ok_or_else(|| InvalidField::new(name, "is required"))
}

fn optional_string(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// `text` from the wire, if it fits `max` bytes.
fn bounded(name: &str, text: String, max: usize) -> Result<String, InvalidField> {
    check_len(&text, max).map_err(|err| InvalidField::new(name, err))?;
    Ok(text)
}

/// A list from the wire, if it holds at most `max` items.
fn bounded_list<T>(name: &str, items: Vec<T>, max: usize) -> Result<Vec<T>, InvalidField> {
    if items.len() > max {
        return Err(InvalidField::new(
            name,
            format!("holds {} items; at most {max} are accepted", items.len()),
        ));
    }
    Ok(items)
}

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
        Ok(ContainerSpec {
            role: field("role", RoleName::new(spec.role))?,
            name: field("name", ContainerName::new(spec.name))?,
            image: field("image", ImageRef::new(spec.image))?,
            command: spec.command,
            env: spec.env.into_iter().collect(),
            ports,
            volumes,
            restart,
            stop_timeout_seconds: spec.stop_timeout_seconds,
            health: HealthCheck::try_from(required("health", spec.health)?)
                .map_err(|e| e.within("health"))?,
        })
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
            interval_ms: check.interval_ms,
            min_healthy_ms: check.min_healthy_ms,
            deadline_ms: check.deadline_ms,
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
            interval_ms: check.interval_ms,
            min_healthy_ms: check.min_healthy_ms,
            deadline_ms: check.deadline_ms,
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
            stop_timeout_seconds: spec.stop_timeout_seconds,
            health: Some(spec.health.into()),
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

impl TryFrom<pb::Facts> for Facts {
    type Error = InvalidField;

    fn try_from(facts: pb::Facts) -> Result<Self, InvalidField> {
        if facts.labels.len() > MAX_LABELS {
            return Err(InvalidField::new(
                "labels",
                format!(
                    "{} labels; at most {MAX_LABELS} are accepted",
                    facts.labels.len()
                ),
            ));
        }
        for (key, value) in &facts.labels {
            check_label(key, value).map_err(|err| InvalidField::new("labels", err))?;
        }
        Ok(Facts {
            hostname: bounded("hostname", facts.hostname, MAX_FACT_TEXT)?,
            os: bounded("os", facts.os, MAX_FACT_TEXT)?,
            os_id: bounded("os_id", facts.os_id, MAX_FACT_TEXT)?,
            kernel: bounded("kernel", facts.kernel, MAX_FACT_TEXT)?,
            docker_version: bounded("docker_version", facts.docker_version, MAX_FACT_TEXT)?,
            cpus: facts.cpus,
            memory_bytes: facts.memory_bytes,
            labels: facts.labels.into_iter().collect(),
        })
    }
}

impl From<Facts> for pb::Facts {
    fn from(facts: Facts) -> Self {
        pb::Facts {
            hostname: truncate(facts.hostname, MAX_FACT_TEXT),
            os: truncate(facts.os, MAX_FACT_TEXT),
            os_id: truncate(facts.os_id, MAX_FACT_TEXT),
            kernel: truncate(facts.kernel, MAX_FACT_TEXT),
            docker_version: truncate(facts.docker_version, MAX_FACT_TEXT),
            cpus: facts.cpus,
            memory_bytes: facts.memory_bytes,
            labels: facts.labels.into_iter().collect(),
        }
    }
}

impl TryFrom<pb::RunningContainer> for RunningContainer {
    type Error = InvalidField;

    fn try_from(c: pb::RunningContainer) -> Result<Self, InvalidField> {
        Ok(RunningContainer {
            // A report describes containers that exist, maybe from before '.' was reserved.
            name: field("name", ContainerName::existing(c.name))?,
            role: field("role", RoleName::new(c.role))?,
            image: bounded("image", c.image, MAX_IMAGE_TEXT)?,
            image_digest: bounded("image_digest", c.image_digest, MAX_IMAGE_TEXT)?,
            state: bounded("state", c.state, MAX_SHORT_TEXT)?,
            container_id: bounded("container_id", c.container_id, MAX_SHORT_TEXT)?,
        })
    }
}

impl From<RunningContainer> for pb::RunningContainer {
    fn from(c: RunningContainer) -> Self {
        pb::RunningContainer {
            name: c.name.into(),
            role: c.role.into(),
            image: c.image,
            image_digest: c.image_digest,
            state: c.state,
            container_id: c.container_id,
        }
    }
}

impl TryFrom<pb::Progress> for Progress {
    type Error = InvalidField;

    fn try_from(p: pb::Progress) -> Result<Self, InvalidField> {
        let phase = match pb::Phase::try_from(p.phase) {
            Ok(pb::Phase::Pulling) => Phase::Pulling,
            Ok(pb::Phase::Creating) => Phase::Creating,
            Ok(pb::Phase::Starting) => Phase::Starting,
            Ok(pb::Phase::Stopping) => Phase::Stopping,
            Ok(pb::Phase::Removing) => Phase::Removing,
            _ => return Err(InvalidField::new("phase", "unknown phase")),
        };
        Ok(Progress {
            phase,
            subject: bounded("subject", p.subject, MAX_IMAGE_TEXT)?,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
        })
    }
}

impl From<Progress> for pb::Progress {
    fn from(p: Progress) -> Self {
        pb::Progress {
            phase: match p.phase {
                Phase::Pulling => pb::Phase::Pulling,
                Phase::Creating => pb::Phase::Creating,
                Phase::Starting => pb::Phase::Starting,
                Phase::Stopping => pb::Phase::Stopping,
                Phase::Removing => pb::Phase::Removing,
            }
            .into(),
            subject: p.subject,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
        }
    }
}

impl TryFrom<pb::HostEvent> for HostEvent {
    type Error = InvalidField;

    fn try_from(event: pb::HostEvent) -> Result<Self, InvalidField> {
        let kind = match pb::HostEventKind::try_from(event.kind) {
            Ok(pb::HostEventKind::Repaired) => HostEventKind::Repaired,
            Ok(pb::HostEventKind::RepairFailed) => HostEventKind::RepairFailed,
            Ok(pb::HostEventKind::CrashLooping) => HostEventKind::CrashLooping,
            Ok(pb::HostEventKind::DockerUnavailable) => HostEventKind::DockerUnavailable,
            Ok(pb::HostEventKind::DockerAvailable) => HostEventKind::DockerAvailable,
            Ok(pb::HostEventKind::ImagesRemoved) => HostEventKind::ImagesRemoved,
            Ok(pb::HostEventKind::PruneFailed) => HostEventKind::PruneFailed,
            _ => {
                return Err(InvalidField::new(
                    "kind",
                    format!("unknown event kind {}", event.kind),
                ));
            }
        };
        Ok(HostEvent::new(event.at_unix_ms, kind, event.message))
    }
}

impl From<HostEvent> for pb::HostEvent {
    fn from(event: HostEvent) -> Self {
        pb::HostEvent {
            at_unix_ms: event.at_unix_ms,
            kind: match event.kind {
                HostEventKind::Repaired => pb::HostEventKind::Repaired,
                HostEventKind::RepairFailed => pb::HostEventKind::RepairFailed,
                HostEventKind::CrashLooping => pb::HostEventKind::CrashLooping,
                HostEventKind::DockerUnavailable => pb::HostEventKind::DockerUnavailable,
                HostEventKind::DockerAvailable => pb::HostEventKind::DockerAvailable,
                HostEventKind::ImagesRemoved => pb::HostEventKind::ImagesRemoved,
                HostEventKind::PruneFailed => pb::HostEventKind::PruneFailed,
            }
            .into(),
            message: event.message,
        }
    }
}

fn host_status_from_wire(status: i32) -> Result<HostStatus, InvalidField> {
    match pb::HostStatus::try_from(status) {
        Ok(pb::HostStatus::Unchanged) => Ok(HostStatus::Unchanged),
        Ok(pb::HostStatus::Changed) => Ok(HostStatus::Changed),
        Ok(pb::HostStatus::Failed) => Ok(HostStatus::Failed),
        Ok(pb::HostStatus::Unreachable) => Ok(HostStatus::Unreachable),
        Ok(pb::HostStatus::TimedOut) => Ok(HostStatus::TimedOut),
        Ok(pb::HostStatus::Skipped) => Ok(HostStatus::Skipped),
        Ok(pb::HostStatus::Interrupted) => Ok(HostStatus::Interrupted),
        _ => Err(InvalidField::new(
            "status",
            format!("unknown host status {status}"),
        )),
    }
}

impl From<HostStatus> for pb::HostStatus {
    fn from(status: HostStatus) -> Self {
        match status {
            HostStatus::Unchanged => pb::HostStatus::Unchanged,
            HostStatus::Changed => pb::HostStatus::Changed,
            HostStatus::Failed => pb::HostStatus::Failed,
            HostStatus::Unreachable => pb::HostStatus::Unreachable,
            HostStatus::TimedOut => pb::HostStatus::TimedOut,
            HostStatus::Skipped => pb::HostStatus::Skipped,
            HostStatus::Interrupted => pb::HostStatus::Interrupted,
        }
    }
}

impl TryFrom<pb::ContainerResult> for ContainerResult {
    type Error = InvalidField;

    fn try_from(c: pb::ContainerResult) -> Result<Self, InvalidField> {
        let action = match pb::ContainerAction::try_from(c.action) {
            Ok(pb::ContainerAction::Kept) => ContainerAction::Kept,
            Ok(pb::ContainerAction::Created) => ContainerAction::Created,
            Ok(pb::ContainerAction::Replaced) => ContainerAction::Replaced,
            Ok(pb::ContainerAction::Removed) => ContainerAction::Removed,
            Ok(pb::ContainerAction::Failed) => ContainerAction::Failed,
            _ => return Err(InvalidField::new("action", "unknown container action")),
        };
        Ok(ContainerResult {
            // A removed container may have been made before '.' was reserved.
            name: field("name", ContainerName::existing(c.name))?,
            role: match optional_string(c.role) {
                Some(role) => Some(field("role", RoleName::new(role))?),
                None => None,
            },
            action,
            image: bounded("image", c.image, MAX_IMAGE_TEXT)?,
            image_digest: bounded("image_digest", c.image_digest, MAX_IMAGE_TEXT)?,
            error: optional_string(bounded("error", c.error, MAX_ERROR_TEXT)?),
            previous_restored: c.previous_restored,
            needs_pull: c.needs_pull,
        })
    }
}

impl From<ContainerResult> for pb::ContainerResult {
    fn from(c: ContainerResult) -> Self {
        pb::ContainerResult {
            name: c.name.into(),
            role: c.role.map(String::from).unwrap_or_default(),
            action: match c.action {
                ContainerAction::Kept => pb::ContainerAction::Kept,
                ContainerAction::Created => pb::ContainerAction::Created,
                ContainerAction::Replaced => pb::ContainerAction::Replaced,
                ContainerAction::Removed => pb::ContainerAction::Removed,
                ContainerAction::Failed => pb::ContainerAction::Failed,
            }
            .into(),
            image: c.image,
            image_digest: c.image_digest,
            error: truncate(c.error.unwrap_or_default(), MAX_ERROR_TEXT),
            previous_restored: c.previous_restored,
            needs_pull: c.needs_pull,
        }
    }
}

fn container_results(
    results: Vec<pb::ContainerResult>,
) -> Result<Vec<ContainerResult>, InvalidField> {
    bounded_list("containers", results, MAX_CONTAINERS)?
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            ContainerResult::try_from(c).map_err(|e| e.within(format!("containers[{i}]")))
        })
        .collect()
}

impl From<pb::Timings> for Timings {
    fn from(t: pb::Timings) -> Self {
        Timings {
            pull_ms: t.pull_ms,
            containers_ms: t.containers_ms,
            health_ms: t.health_ms,
        }
    }
}

impl From<Timings> for pb::Timings {
    fn from(t: Timings) -> Self {
        pb::Timings {
            pull_ms: t.pull_ms,
            containers_ms: t.containers_ms,
            health_ms: t.health_ms,
        }
    }
}

impl TryFrom<pb::JobResult> for JobResult {
    type Error = InvalidField;

    fn try_from(r: pb::JobResult) -> Result<Self, InvalidField> {
        let status = host_status_from_wire(r.status)?;
        if !matches!(
            status,
            HostStatus::Unchanged | HostStatus::Changed | HostStatus::Failed
        ) {
            return Err(InvalidField::new(
                "status",
                "a minion reports only unchanged, changed or failed",
            ));
        }
        Ok(JobResult {
            job_id: field("job_id", JobId::new(r.job_id))?,
            status,
            containers: container_results(r.containers)?,
            error: optional_string(bounded("error", r.error, MAX_ERROR_TEXT)?),
            timings: r.timings.map(Into::into).unwrap_or_default(),
        })
    }
}

impl From<JobResult> for pb::JobResult {
    fn from(r: JobResult) -> Self {
        pb::JobResult {
            job_id: r.job_id.into(),
            status: pb::HostStatus::from(r.status).into(),
            containers: r.containers.into_iter().map(Into::into).collect(),
            error: truncate(r.error.unwrap_or_default(), MAX_ERROR_TEXT),
            timings: Some(r.timings.into()),
        }
    }
}

impl TryFrom<pb::HostReport> for HostReport {
    type Error = InvalidField;

    fn try_from(r: pb::HostReport) -> Result<Self, InvalidField> {
        Ok(HostReport {
            minion_id: field("minion_id", MinionId::new(r.minion_id))?,
            status: host_status_from_wire(r.status)?,
            containers: container_results(r.containers)?,
            error: optional_string(r.error),
            duration_ms: r.duration_ms,
            timings: r.timings.map(Into::into).unwrap_or_default(),
            reported_late: r.reported_late,
        })
    }
}

impl From<HostReport> for pb::HostReport {
    fn from(r: HostReport) -> Self {
        pb::HostReport {
            minion_id: r.minion_id.into(),
            status: pb::HostStatus::from(r.status).into(),
            containers: r.containers.into_iter().map(Into::into).collect(),
            error: r.error.unwrap_or_default(),
            duration_ms: r.duration_ms,
            timings: Some(r.timings.into()),
            reported_late: r.reported_late,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            role: RoleName::new("web").unwrap(),
            name: ContainerName::new("web").unwrap(),
            image: ImageRef::new("127.0.0.1:5000/app:tested").unwrap(),
            command: vec!["httpd".into()],
            env: [("A".to_owned(), "1".to_owned())].into(),
            ports: vec![
                "127.0.0.1:80:8000/udp".parse().unwrap(),
                "9000".parse().unwrap(),
            ],
            volumes: vec!["/srv:/data:ro".parse().unwrap()],
            restart: RestartPolicy::OnFailure,
            stop_timeout_seconds: 4,
            health: HealthCheck {
                probe: Some(Probe::Http {
                    port: 8000,
                    path: "/health".into(),
                }),
                ..HealthCheck::default()
            },
        }
    }

    #[test]
    fn specs_survive_the_wire_unchanged() {
        let wire = pb::ContainerSpec::from(spec());
        let back = ContainerSpec::try_from(wire).unwrap();
        assert_eq!(back, spec());
        assert_eq!(back.hash(), spec().hash());
    }

    #[test]
    fn invalid_fields_are_named() {
        let mut wire = pb::ContainerSpec::from(spec());
        wire.ports[1].container_port = 70000;
        let err = ContainerSpec::try_from(wire).unwrap_err();
        assert_eq!(err.field, "ports[1].container_port");

        let mut wire = pb::ContainerSpec::from(spec());
        wire.image = "NOT VALID".into();
        assert_eq!(ContainerSpec::try_from(wire).unwrap_err().field, "image");

        let mut state = pb::DesiredState::from(DesiredState::new(vec![spec()]).unwrap());
        state.containers[0].name = "../etc".into();
        let err = DesiredState::try_from(state).unwrap_err();
        assert_eq!(err.field, "containers[0].name");
    }

    #[test]
    fn only_reports_may_name_a_container_made_before_dots_were_reserved() {
        let mut wire = pb::ContainerSpec::from(spec());
        wire.name = "web.v2".into();
        assert_eq!(ContainerSpec::try_from(wire).unwrap_err().field, "name");
        let running = pb::RunningContainer {
            name: "web.v2".into(),
            role: "web".into(),
            ..Default::default()
        };
        assert_eq!(
            RunningContainer::try_from(running).unwrap().name.as_str(),
            "web.v2"
        );
        let removed = pb::ContainerResult {
            name: "web.v2".into(),
            action: pb::ContainerAction::Removed.into(),
            ..Default::default()
        };
        assert_eq!(
            ContainerResult::try_from(removed).unwrap().name.as_str(),
            "web.v2"
        );
    }

    #[test]
    fn minions_cannot_claim_unreachable() {
        let result = pb::JobResult {
            job_id: "j-1".into(),
            status: pb::HostStatus::Unreachable.into(),
            ..Default::default()
        };
        assert_eq!(JobResult::try_from(result).unwrap_err().field, "status");
    }
}

mod events {
    use brine_common::names::MinionId;
    use brine_common::outcome::{HighstateEvent, HostReport, JobId, JobSummary};
    use brine_common::progress::Progress;

    use super::{InvalidField, field, required};
    use crate::pb;
    use crate::pb::highstate_event::Kind;

    impl TryFrom<pb::HighstateEvent> for HighstateEvent {
        type Error = InvalidField;

        fn try_from(event: pb::HighstateEvent) -> Result<Self, InvalidField> {
            Ok(match required("kind", event.kind)? {
                Kind::Started(started) => HighstateEvent::Started {
                    job_id: field("started.job_id", JobId::new(started.job_id))?,
                    targets: started
                        .targets
                        .into_iter()
                        .map(|t| field("started.targets", MinionId::new(t)))
                        .collect::<Result<_, _>>()?,
                    not_accepted: started.not_accepted,
                },
                Kind::Progress(p) => HighstateEvent::Progress {
                    minion_id: field("progress.minion_id", MinionId::new(p.minion_id))?,
                    progress: Progress::try_from(required("progress.progress", p.progress)?)
                        .map_err(|e| e.within("progress"))?,
                },
                Kind::HostFinished(report) => HighstateEvent::HostFinished(
                    HostReport::try_from(report).map_err(|e| e.within("host_finished"))?,
                ),
                Kind::Summary(summary) => HighstateEvent::Summary(JobSummary {
                    job_id: field("summary.job_id", JobId::new(summary.job_id))?,
                    hosts: summary
                        .hosts
                        .into_iter()
                        .map(|h| HostReport::try_from(h).map_err(|e| e.within("summary.hosts")))
                        .collect::<Result<_, _>>()?,
                    started_at_unix_ms: summary.started_at_unix_ms,
                    finished_at_unix_ms: summary.finished_at_unix_ms,
                    resolve_ms: summary.resolve_ms,
                    cancelled_by: super::optional_string(summary.cancelled_by),
                }),
            })
        }
    }

    impl From<HighstateEvent> for pb::HighstateEvent {
        fn from(event: HighstateEvent) -> Self {
            let kind = match event {
                HighstateEvent::Started {
                    job_id,
                    targets,
                    not_accepted,
                } => Kind::Started(pb::JobStarted {
                    job_id: job_id.into(),
                    targets: targets.into_iter().map(Into::into).collect(),
                    not_accepted,
                }),
                HighstateEvent::Progress {
                    minion_id,
                    progress,
                } => Kind::Progress(pb::HostProgress {
                    minion_id: minion_id.into(),
                    progress: Some(progress.into()),
                }),
                HighstateEvent::HostFinished(report) => Kind::HostFinished(report.into()),
                HighstateEvent::Summary(summary) => Kind::Summary(pb::JobSummary {
                    job_id: summary.job_id.into(),
                    hosts: summary.hosts.into_iter().map(Into::into).collect(),
                    started_at_unix_ms: summary.started_at_unix_ms,
                    finished_at_unix_ms: summary.finished_at_unix_ms,
                    resolve_ms: summary.resolve_ms,
                    cancelled_by: summary.cancelled_by.unwrap_or_default(),
                    hosts_in_events: false,
                }),
            };
            pb::HighstateEvent { kind: Some(kind) }
        }
    }
}
