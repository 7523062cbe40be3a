//! Container specs and the desired state of a host.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::names::{ContainerName, RoleName};

/// A validated image reference such as `127.0.0.1:5000/mynames/app:tested`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef(String);

/// Why an image reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reference:?} is not a valid image reference: {reason}")]
pub struct ImageRefError {
    reference: String,
    reason: String,
}

impl ImageRef {
    /// Validates `reference` with the distribution reference grammar
    /// (`name[:tag][@digest]`, see [`parse_reference`]).
    pub fn new(reference: impl Into<String>) -> Result<Self, ImageRefError> {
        let reference = reference.into();
        match parse_reference(&reference) {
            Err(reason) => Err(ImageRefError {
                reference,
                reason: reason.to_owned(),
            }),
            Ok(_) => Ok(Self(reference)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The reference's registry, repository, tag and digest.
    pub fn parts(&self) -> ImageParts<'_> {
        parse_reference(&self.0).expect("an ImageRef was valid when it was made")
    }

    /// This reference pinned to `digest` (`repo:tag@sha256:...`): Docker then runs exactly
    /// those bits whatever the tag points to later; the tag stays for people to read.
    pub fn pinned(&self, digest: &str) -> Result<ImageRef, ImageRefError> {
        let unpinned = self
            .0
            .split_once('@')
            .map_or(self.0.as_str(), |(name, _)| name);
        ImageRef::new(format!("{unpinned}@{digest}"))
    }
}

/// The parts of an image reference, as written (not normalized: no registry means Docker Hub).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageParts<'a> {
    /// The registry host and port, if the reference names one.
    pub domain: Option<&'a str>,
    /// The repository path within the registry, e.g. `mynames/app`.
    pub path: &'a str,
    pub tag: Option<&'a str>,
    /// `algorithm:hex`.
    pub digest: Option<&'a str>,
}

impl ImageParts<'_> {
    /// The repository as written, registry included (`registry.example.com:5000/mynames/app`),
    /// without tag or digest.
    pub fn repository(&self) -> String {
        match self.domain {
            Some(domain) => format!("{domain}/{}", self.path),
            None => self.path.to_owned(),
        }
    }
}

/// Checks the grammar of Docker's distribution references:
///
/// ```text
/// reference      := name [ ":" tag ] [ "@" digest ]
/// name           := [domain "/"] path-component ["/" path-component]*      (at most 255 chars)
/// domain         := domain-component ["." domain-component]* [":" port]  (or "[" IPv6 "]")
/// path-component := [a-z0-9]+ (separator [a-z0-9]+)*   separator := [_.] | "__" | "-"+
/// tag            := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
/// digest         := algorithm ":" hex{32,}              algorithm := [A-Za-z][A-Za-z0-9]* ([+._-] ...)*
/// ```
///
/// Written out rather than taken from a crate: the crates that implement it compile one large
/// regular expression per process, which costs the minion ~10 MiB of memory for its lifetime.
fn parse_reference(reference: &str) -> Result<ImageParts<'_>, &'static str> {
    if reference.is_empty() {
        return Err("it is empty");
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest
        && !is_digest(digest)
    {
        return Err("the digest must be ALGORITHM:HEX with at least 32 hex digits");
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag
        && !is_tag(tag)
    {
        return Err(
            "a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        );
    }
    if name.len() > 255 {
        return Err("the name is longer than 255 characters");
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, path)) if looks_like_domain(first) => {
            if !is_domain(first) {
                return Err("the registry host or port is invalid");
            }
            (Some(first), path)
        }
        _ => (None, name),
    };
    if !path.split('/').all(is_path_component) {
        return Err(
            "each part of the name is lowercase letters and digits, joined by '.', '_', '__' or '-'",
        );
    }
    Ok(ImageParts {
        domain,
        path,
        tag,
        digest,
    })
}

/// Like Docker, treats a first component with a dot, a port or `localhost` as a registry host.
fn looks_like_domain(component: &str) -> bool {
    component.contains(['.', ':']) || component == "localhost" || component.starts_with('[')
}

fn is_domain(domain: &str) -> bool {
    let (host, port) = match domain.strip_prefix('[') {
        // An IPv6 address: `[::1]` or `[::1]:5000`.
        Some(v6) => match v6.split_once(']') {
            Some((ip, "")) if ip.parse::<std::net::Ipv6Addr>().is_ok() => (None, None),
            Some((ip, rest)) if ip.parse::<std::net::Ipv6Addr>().is_ok() => {
                match rest.strip_prefix(':') {
                    Some(port) => (None, Some(port)),
                    None => return false,
                }
            }
            _ => return false,
        },
        None => match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        },
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = host.is_none_or(|host| {
        host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
    });
    port_ok && host_ok
}

fn is_path_component(component: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Between alphanumeric runs: one '.', one or two '_', or any number of '-'.
    component
        .split(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        .filter(|separator| !separator.is_empty())
        .all(|separator| {
            matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-')
        })
}

fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

fn is_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm.split(['+', '.', '_', '-']).all(|component| {
        let mut bytes = component.bytes();
        bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric())
    });
    algorithm_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

impl TryFrom<String> for ImageRef {
    type Error = ImageRefError;
    fn try_from(reference: String) -> Result<Self, ImageRefError> {
        Self::new(reference)
    }
}

impl From<ImageRef> for String {
    fn from(image: ImageRef) -> String {
        image.0
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A port published on the host, written `[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address to bind; `None` binds every address.
    pub host_ip: Option<IpAddr>,
    /// The host port; `None` lets Docker pick a free one.
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PortMapping {
    /// Whether both mappings would bind the same host port, which Docker refuses at start.
    pub fn conflicts_with(&self, other: &PortMapping) -> bool {
        let same_port = self.host_port.is_some() && self.host_port == other.host_port;
        let overlapping_ip = match (self.host_ip, other.host_ip) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        same_port && overlapping_ip && self.protocol == other.protocol
    }
}

impl FromStr for PortMapping {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, protocol) = match text.rsplit_once('/') {
            Some((addr, "tcp")) => (addr, Protocol::Tcp),
            Some((addr, "udp")) => (addr, Protocol::Udp),
            Some((_, other)) => return Err(format!("unknown protocol {other:?} (tcp or udp)")),
            None => (text, Protocol::Tcp),
        };
        let port = |part: &str| -> Result<u16, String> {
            match part.parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("{part:?} is not a port number from 1 to 65535")),
                Ok(port) => Ok(port),
            }
        };
        // An IPv6 host address is written in brackets: `[::1]:80:8000`.
        let (host_ip, rest) = if let Some(stripped) = addr.strip_prefix('[') {
            let (ip, rest) = stripped.split_once("]:").ok_or_else(|| {
                format!("{text:?}: an IPv6 address needs the form [ADDR]:HOST:CONTAINER")
            })?;
            let ip = ip
                .parse::<IpAddr>()
                .map_err(|_| format!("{ip:?} is not an IP address"))?;
            (Some(ip), rest)
        } else {
            let parts: Vec<&str> = addr.split(':').collect();
            if parts.len() == 3 {
                let ip = parts[0]
                    .parse::<IpAddr>()
                    .map_err(|_| format!("{:?} is not an IP address", parts[0]))?;
                (Some(ip), &addr[parts[0].len() + 1..])
            } else {
                (None, addr)
            }
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (host_port, container_port) = match parts.as_slice() {
            [container] => (None, port(container)?),
            [host, container] => (Some(port(host)?), port(container)?),
            _ => {
                return Err(format!(
                    "{text:?} is not of the form [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp]"
                ));
            }
        };
        Ok(PortMapping {
            host_ip,
            host_port,
            container_port,
            protocol,
        })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        if let Some(host_port) = self.host_port {
            write!(f, "{host_port}:")?;
        }
        write!(f, "{}/{}", self.container_port, self.protocol.as_str())
    }
}

/// A volume mounted into a container, written `SOURCE:TARGET[:ro|:rw]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VolumeMount {
    /// An absolute host path (a bind mount) or the name of a Docker volume.
    pub source: String,
    /// An absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

impl FromStr for VolumeMount {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [source, target] => (*source, *target, false),
            [source, target, "ro"] => (*source, *target, true),
            [source, target, "rw"] => (*source, *target, false),
            [_, _, mode] => return Err(format!("unknown mode {mode:?} (ro or rw)")),
            _ => {
                return Err(format!(
                    "{text:?} is not of the form SOURCE:TARGET[:ro|:rw]"
                ));
            }
        };
        if source.is_empty() {
            return Err(format!("{text:?} has an empty source"));
        }
        if !target.starts_with('/') {
            return Err(format!("the target {target:?} must be an absolute path"));
        }
        Ok(VolumeMount {
            source: source.to_owned(),
            target: target.to_owned(),
            read_only,
        })
    }
}

/// What Docker does when a container exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    Always,
    #[default]
    UnlessStopped,
    OnFailure,
}

impl FromStr for RestartPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "no" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            other => Err(format!(
                "unknown restart policy {other:?} (no, always, unless-stopped or on-failure)"
            )),
        }
    }
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::OnFailure => "on-failure",
        }
    }
}

/// The default seconds Docker waits after SIGTERM before it kills a container.
pub const DEFAULT_STOP_TIMEOUT_SECONDS: u32 = 10;

/// How a container's health is probed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// An HTTP GET to the container's own address; 2xx or 3xx is healthy.
    Http { port: u16, path: String },
    /// A TCP connection to the container's own address.
    Tcp { port: u16 },
    /// A command run inside the container, without a shell; exit status 0 is healthy.
    Exec { command: Vec<String> },
}

/// When a new container counts as healthy, and how long it may take.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HealthCheck {
    /// `None`: the image's Docker HEALTHCHECK if it has one, else staying up for `min_healthy`.
    pub probe: Option<Probe>,
    pub interval_ms: u32,
    /// How long the container must stay healthy (and running) to count.
    pub min_healthy_ms: u32,
    /// How long after the start it may take at most; then the replacement is undone.
    pub deadline_ms: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            probe: None,
            interval_ms: 1_000,
            min_healthy_ms: 2_000,
            deadline_ms: 60_000,
        }
    }
}

impl HealthCheck {
    /// Refuses timings that cannot work: a deadline shorter than the time to prove health.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval_ms == 0 {
            return Err("the interval must be longer than 0".into());
        }
        if self.deadline_ms < self.min_healthy_ms {
            return Err(format!(
                "the deadline ({} ms) is shorter than min_healthy ({} ms), so no container could pass",
                self.deadline_ms, self.min_healthy_ms
            ));
        }
        match &self.probe {
            Some(Probe::Http { port: 0, .. } | Probe::Tcp { port: 0 }) => {
                Err("the probe needs a port from 1 to 65535".into())
            }
            Some(Probe::Http { path, .. }) if !path.starts_with('/') => {
                Err(format!("the HTTP path {path:?} must start with '/'"))
            }
            Some(Probe::Exec { command }) if command.is_empty() => {
                Err("the exec probe needs a command".into())
            }
            _ => Ok(()),
        }
    }
}

/// One container a host should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub role: RoleName,
    pub name: ContainerName,
    pub image: ImageRef,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub ports: Vec<PortMapping>,
    pub volumes: Vec<VolumeMount>,
    pub restart: RestartPolicy,
    pub stop_timeout_seconds: u32,
    pub health: HealthCheck,
}

/// The hash that tells whether a running container still matches its spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SpecHash(String);

impl SpecHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpecHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ContainerSpec {
    /// The canonical hash of everything that defines the container.
    ///
    /// It is computed from a JSON rendering whose field and key order is fixed by the struct and
    /// `BTreeMap`, so the same spec hashes the same on every host and across releases. The version
    /// prefix changes when the rendering does, which replaces containers once, deliberately.
    pub fn hash(&self) -> SpecHash {
        let canonical = serde_json::to_vec(self).expect("a spec always serializes to JSON");
        let mut hasher = Sha256::new();
        hasher.update(b"brine-spec-v1\n");
        hasher.update(&canonical);
        SpecHash(hex::encode(&hasher.finalize()[..16]))
    }
}

/// Every container one host should run, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    pub containers: Vec<ContainerSpec>,
}

/// Why a host's desired state is impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesiredStateError {
    #[error("container name {name:?} is declared by both role {first} and role {second}")]
    DuplicateName {
        name: ContainerName,
        first: RoleName,
        second: RoleName,
    },
    #[error(
        "containers {first} and {second} both publish host port {port}; Docker can start only one of them"
    )]
    PortConflict {
        first: ContainerName,
        second: ContainerName,
        port: PortMapping,
    },
}

impl DesiredState {
    /// Builds a host's desired state, refusing what Docker would refuse half-way through.
    pub fn new(mut containers: Vec<ContainerSpec>) -> Result<Self, DesiredStateError> {
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        for pair in containers.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(DesiredStateError::DuplicateName {
                    name: pair[0].name.clone(),
                    first: pair[0].role.clone(),
                    second: pair[1].role.clone(),
                });
            }
        }
        // Sorted, the bindings of one host port and protocol are adjacent, those on every address
        // (no host IP) first, and equal addresses next to each other: a clash is found in one
        // pass instead of comparing every pair, which a host with many ports made quadratic.
        let mut bindings: Vec<(&ContainerName, &PortMapping)> = containers
            .iter()
            .flat_map(|c| c.ports.iter().map(move |p| (&c.name, p)))
            .filter(|(_, p)| p.host_port.is_some())
            .collect();
        bindings.sort_by_key(|(_, p)| (p.host_port, p.protocol.as_str(), p.host_ip));
        let same_port = |a: &(_, &PortMapping), b: &(_, &PortMapping)| {
            (a.1.host_port, a.1.protocol) == (b.1.host_port, b.1.protocol)
        };
        for group in bindings.chunk_by(same_port) {
            let clash = match group {
                [every_address, other, ..] if every_address.1.host_ip.is_none() => {
                    Some((every_address, other))
                }
                _ => group
                    .windows(2)
                    .find(|pair| pair[0].1.host_ip == pair[1].1.host_ip)
                    .map(|pair| (&pair[0], &pair[1])),
            };
            if let Some(((first, _), (second, port))) = clash {
                return Err(DesiredStateError::PortConflict {
                    first: (*first).clone(),
                    second: (*second).clone(),
                    port: (*port).clone(),
                });
            }
        }
        Ok(Self { containers })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec(role: &str, name: &str, image: &str) -> ContainerSpec {
        ContainerSpec {
            role: RoleName::new(role).unwrap(),
            name: ContainerName::new(name).unwrap(),
            image: ImageRef::new(image).unwrap(),
            command: vec![],
            env: BTreeMap::new(),
            ports: vec![],
            volumes: vec![],
            restart: RestartPolicy::UnlessStopped,
            stop_timeout_seconds: DEFAULT_STOP_TIMEOUT_SECONDS,
            health: HealthCheck::default(),
        }
    }

    #[test]
    fn image_references_follow_the_distribution_grammar() {
        for good in [
            "busybox",
            "127.0.0.1:5000/app:tested",
            "registry.example.com/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(ImageRef::new(good).is_ok(), "{good}");
        }
        for good in [
            "localhost/app",
            "localhost:5000/a/b_c__d-e---f.g:v1.2-rc_3",
            "[::1]:5000/app:1",
            "a.b-c.example:443/x",
            "app@sha256:0123456789abcdef0123456789abcdef",
        ] {
            assert!(ImageRef::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "App:Tested",
            "app:",
            "app::x",
            " app",
            "a/b:c:d:e",
            "app:.tag",
            "app@sha256:short",
            "app@:0123456789abcdef0123456789abcdef",
            "-bad.example/app",
            "host.example:port/app",
            "a//b",
            "a___b",
            "a.-b",
            "app/",
            "[::zz]:5000/app",
            "[::1]x:5000/app",
        ] {
            assert!(ImageRef::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn references_split_into_their_parts_and_pin() {
        let image = ImageRef::new("127.0.0.1:5000/mynames/app:tested").unwrap();
        let parts = image.parts();
        assert_eq!(parts.domain, Some("127.0.0.1:5000"));
        assert_eq!(
            (parts.path, parts.tag, parts.digest),
            ("mynames/app", Some("tested"), None)
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = image.pinned(&digest).unwrap();
        assert_eq!(
            pinned.as_str(),
            format!("127.0.0.1:5000/mynames/app:tested@{digest}")
        );
        assert_eq!(pinned.parts().digest, Some(digest.as_str()));
        assert_eq!(pinned.pinned(&digest).unwrap(), pinned);
        let hub = ImageRef::new("busybox").unwrap();
        let hub = hub.parts();
        assert_eq!((hub.domain, hub.path, hub.tag), (None, "busybox", None));
        assert!(image.pinned("sha256:short").is_err());
    }

    #[test]
    fn ports_parse_every_documented_form() {
        let p: PortMapping = "127.0.0.1:80:8000/udp".parse().unwrap();
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            (p.host_port, p.container_port, p.protocol),
            (Some(80), 8000, Protocol::Udp)
        );
        let p: PortMapping = "80:8000".parse().unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.protocol),
            (None, Some(80), Protocol::Tcp)
        );
        let p: PortMapping = "8000".parse().unwrap();
        assert_eq!(p.host_port, None);
        let p: PortMapping = "[::1]:80:8000".parse().unwrap();
        assert_eq!(p.to_string(), "[::1]:80:8000/tcp");
        for bad in [
            "",
            "0:80",
            "80:70000",
            "x:80",
            "1.2.3:80:80",
            "80:80/sctp",
            "1:2:3:4",
        ] {
            assert!(bad.parse::<PortMapping>().is_err(), "{bad}");
        }
    }

    #[test]
    fn port_conflicts_consider_address_and_protocol() {
        let p = |s: &str| s.parse::<PortMapping>().unwrap();
        assert!(p("80:8000").conflicts_with(&p("80:9000")));
        assert!(p("80:8000").conflicts_with(&p("127.0.0.1:80:9000")));
        assert!(!p("127.0.0.2:80:8000").conflicts_with(&p("127.0.0.1:80:9000")));
        assert!(!p("80:8000/udp").conflicts_with(&p("80:8000")));
        assert!(!p("8000").conflicts_with(&p("8000")));
    }

    #[test]
    fn health_checks_refuse_impossible_timings_and_probes() {
        assert!(HealthCheck::default().validate().is_ok());
        let check = |f: fn(&mut HealthCheck)| {
            let mut c = HealthCheck::default();
            f(&mut c);
            c.validate()
        };
        assert!(check(|c| c.deadline_ms = 1).is_err());
        assert!(check(|c| c.interval_ms = 0).is_err());
        assert!(check(|c| c.probe = Some(Probe::Tcp { port: 0 })).is_err());
        assert!(
            check(|c| c.probe = Some(Probe::Http {
                port: 80,
                path: "health".into()
            }))
            .is_err()
        );
        assert!(check(|c| c.probe = Some(Probe::Exec { command: vec![] })).is_err());
    }

    #[test]
    fn volumes_need_an_absolute_target() {
        let v: VolumeMount = "/srv/data:/data:ro".parse().unwrap();
        assert!(v.read_only);
        assert!("data:/data".parse::<VolumeMount>().is_ok());
        for bad in ["/data", "/srv:data", ":/data", "/a:/b:rx"] {
            assert!(bad.parse::<VolumeMount>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hash_is_stable_and_sensitive_to_every_field() {
        let base = spec("web", "web", "127.0.0.1:5000/app:tested");
        assert_eq!(base.hash(), base.clone().hash());
        let mut variants = vec![];
        let mut s = base.clone();
        s.image = ImageRef::new("127.0.0.1:5000/app:v2").unwrap();
        variants.push(s);
        let mut s = base.clone();
        s.command = vec!["httpd".into()];
        variants.push(s);
        let mut s = base.clone();
        s.env.insert("A".into(), "1".into());
        variants.push(s);
        let mut s = base.clone();
        s.ports.push("80:80".parse().unwrap());
        variants.push(s);
        let mut s = base.clone();
        s.volumes.push("/a:/b".parse().unwrap());
        variants.push(s);
        let mut s = base.clone();
        s.restart = RestartPolicy::Always;
        variants.push(s);
        let mut s = base.clone();
        s.stop_timeout_seconds = 3;
        variants.push(s);
        let mut s = base.clone();
        s.health.probe = Some(Probe::Tcp { port: 80 });
        variants.push(s);
        let mut s = base.clone();
        s.role = RoleName::new("api").unwrap();
        variants.push(s);
        let mut s = base.clone();
        s.name = ContainerName::new("web-2").unwrap();
        variants.push(s);
        let mut s = base.clone();
        s.health.interval_ms += 1;
        variants.push(s);
        let mut s = base.clone();
        s.health.min_healthy_ms += 1;
        variants.push(s);
        let mut s = base.clone();
        s.health.deadline_ms += 1;
        variants.push(s);
        let hashes: std::collections::BTreeSet<SpecHash> =
            variants.iter().map(ContainerSpec::hash).collect();
        assert_eq!(hashes.len(), variants.len(), "two variants hash the same");
        for variant in variants {
            assert_ne!(variant.hash(), base.hash(), "{variant:?}");
        }
    }

    /// Every host compares the hash its containers were created with to the one of the spec it
    /// receives: a hash that changed between releases would replace every container of the
    /// fleet at the first highstate after an upgrade. This golden value catches that; if the
    /// rendering must change, change the version prefix too and say so in the release notes.
    #[test]
    fn hash_is_the_same_across_releases() {
        let mut full = spec("web", "web", "127.0.0.1:5000/app:tested");
        full.command = vec!["/bin/busybox".into(), "httpd".into(), "-f".into()];
        full.env.insert("MODE".into(), "production".into());
        full.env.insert("EMPTY".into(), String::new());
        full.ports.push("127.0.0.1:8080:80".parse().unwrap());
        full.ports.push("53:53/udp".parse().unwrap());
        full.volumes.push("/srv/data:/data:ro".parse().unwrap());
        full.restart = RestartPolicy::OnFailure;
        full.stop_timeout_seconds = 30;
        full.health = HealthCheck {
            probe: Some(Probe::Http {
                port: 80,
                path: "/health".into(),
            }),
            interval_ms: 500,
            min_healthy_ms: 3_000,
            deadline_ms: 45_000,
        };
        assert_eq!(full.hash().as_str(), "a8af4c109919d2970fb55b1e0b2ca162");
        let minimal = spec("worker", "worker", "busybox");
        assert_eq!(minimal.hash().as_str(), "ac97772fdd2ea02300a94932021cc348");
    }

    #[test]
    fn hash_ignores_env_insertion_order() {
        let mut a = spec("web", "web", "app:1");
        let mut b = a.clone();
        a.env.insert("A".into(), "1".into());
        a.env.insert("B".into(), "2".into());
        b.env.insert("B".into(), "2".into());
        b.env.insert("A".into(), "1".into());
        assert_eq!(a.hash(), b.hash());
    }

    #[test]
    fn desired_state_refuses_duplicate_names_and_port_clashes() {
        let a = spec("web", "app", "app:1");
        let b = spec("worker", "app", "app:1");
        assert!(matches!(
            DesiredState::new(vec![a.clone(), b]),
            Err(DesiredStateError::DuplicateName { .. })
        ));
        let mut a = a;
        a.ports.push("80:8000".parse().unwrap());
        let mut c = spec("worker", "other", "app:1");
        c.ports.push("80:9000".parse().unwrap());
        assert!(matches!(
            DesiredState::new(vec![a.clone(), c]),
            Err(DesiredStateError::PortConflict { .. })
        ));
        let state = DesiredState::new(vec![spec("w", "zz", "app:1"), a]).unwrap();
        assert_eq!(state.containers[0].name.as_str(), "app");
    }

    #[test]
    fn port_clashes_are_found_among_the_ports_of_one_container_too() {
        let mut a = spec("web", "app", "app:1");
        a.ports = vec![
            "80:8000".parse().unwrap(),
            "127.0.0.1:80:9000".parse().unwrap(),
        ];
        assert!(matches!(
            DesiredState::new(vec![a.clone()]),
            Err(DesiredStateError::PortConflict { .. })
        ));
        a.ports = vec![
            "127.0.0.1:80:8000".parse().unwrap(),
            "127.0.0.2:80:8000".parse().unwrap(),
            "80:8000/udp".parse().unwrap(),
            "8000".parse().unwrap(),
            "8000".parse().unwrap(),
        ];
        assert!(DesiredState::new(vec![a]).is_ok());
    }

    #[test]
    fn many_ports_are_checked_without_comparing_every_pair() {
        // 65,536 bindings of one host port, each on its own address: no clash. Comparing every
        // pair took half a minute in a debug build; one sorted pass takes milliseconds.
        let mut a = spec("web", "app", "app:1");
        a.ports = (0..=u16::MAX)
            .map(|i| PortMapping {
                host_ip: Some(IpAddr::from([10, 0, (i >> 8) as u8, i as u8])),
                host_port: Some(80),
                container_port: 80,
                protocol: Protocol::Tcp,
            })
            .collect();
        let started = std::time::Instant::now();
        assert!(DesiredState::new(vec![a.clone()]).is_ok());
        assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
        let mut b = spec("worker", "worker", "app:1");
        b.ports.push("10.0.255.255:80:80".parse().unwrap());
        assert!(matches!(
            DesiredState::new(vec![a, b]),
            Err(DesiredStateError::PortConflict { .. })
        ));
    }
}
