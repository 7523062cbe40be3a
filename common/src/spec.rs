//! Container specs and the desired state of a host.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::names::{ContainerName, RoleName, SecretName};
use crate::proxy_control::ProxyMode;
use crate::secret::SecretValue;

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
    /// Environment variables whose values are secrets the master keeps. Left out of the
    /// rendering when empty, so the hash of a spec without secrets is what it always was.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, SecretRef>,
    /// The host's proxy owns the container's published TCP ports, so a replacement switches
    /// traffic instead of freeing the port. Left out of the rendering when off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxySpec>,
    /// Commands the host runs around a replacement of its role's containers. Not part of the
    /// spec's hash: changing a hook changes how the next replacement goes, not the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<RolloutHooks>,
}

/// The default time a replaced container gets to finish the traffic in flight to it.
pub const DEFAULT_DRAIN_MS: u32 = 30_000;

/// The longest drain or hook timeout a roles file may set.
pub const MAX_ROLLOUT_WAIT_MS: u32 = 3_600_000;

/// How the host's proxy carries a container's published ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProxySpec {
    pub mode: ProxyMode,
    /// How long the previous container keeps the traffic in flight to it after the switch,
    /// before what remains is cut and it is stopped.
    pub drain_ms: u32,
}

impl Default for ProxySpec {
    fn default() -> Self {
        Self {
            mode: ProxyMode::Tcp,
            drain_ms: DEFAULT_DRAIN_MS,
        }
    }
}

/// The default time a rollout hook may take.
pub const DEFAULT_HOOK_TIMEOUT_MS: u32 = 60_000;

/// Commands run on the host, without a shell, around the replacement of a role's containers
/// in a job: e.g. taking the host out of an external load balancer and putting it back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RolloutHooks {
    /// Runs once before the role's first container is replaced; failing, it stops the
    /// replacements (nothing was touched).
    pub before_replace: Vec<String>,
    /// Runs once after the role's last replacement, when its containers serve again (the new
    /// ones healthy, or the previous ones restored).
    pub after_healthy: Vec<String>,
    /// How long each command may take before it is killed and counted as failed.
    pub timeout_ms: u32,
}

impl RolloutHooks {
    /// Refuses hooks that cannot run: none at all, or a timeout outside what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        if self.before_replace.is_empty() && self.after_healthy.is_empty() {
            return Err("give before_replace, after_healthy or both".into());
        }
        if [&self.before_replace, &self.after_healthy]
            .iter()
            .any(|command| command.first().is_some_and(String::is_empty))
        {
            return Err("a hook's program must not be empty".into());
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_ROLLOUT_WAIT_MS {
            return Err("a hook's timeout must be between 1ms and 1h".into());
        }
        Ok(())
    }
}

/// An environment variable's reference to a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    pub secret: SecretName,
    /// Which value of the secret: the master's keyed digest of it, empty until the master fills
    /// it in for a job. It is part of the spec's hash, so a new value replaces the containers
    /// that use it, while the hash tells nothing of the value.
    pub fingerprint: String,
    /// The value, attached only on its way to a host that runs the container and on that host.
    /// Never serialized: not into a hash, a record, a job or the store.
    #[serde(skip)]
    pub value: Option<SecretValue>,
}

impl SecretRef {
    /// A reference as the roles file writes it, before the master knows which value.
    pub fn to(secret: SecretName) -> Self {
        Self {
            secret,
            fingerprint: String::new(),
            value: None,
        }
    }
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
    /// The ports Docker publishes for the container: none when the host's proxy owns them.
    pub fn docker_ports(&self) -> &[PortMapping] {
        if self.proxy.is_some() {
            &[]
        } else {
            &self.ports
        }
    }

    /// Refuses a proxy that could not carry the container's ports: it needs at least one, and
    /// each a TCP port with a host port.
    pub fn check_proxy(&self) -> Result<(), String> {
        let Some(proxy) = &self.proxy else {
            return Ok(());
        };
        if self.ports.is_empty() {
            return Err("the proxy needs a published port (ports = [\"80:8000\"])".into());
        }
        if let Some(port) = self
            .ports
            .iter()
            .find(|p| p.protocol != Protocol::Tcp || p.host_port.is_none())
        {
            return Err(format!(
                "the proxy carries TCP ports with a host port, not {port}"
            ));
        }
        if proxy.drain_ms > MAX_ROLLOUT_WAIT_MS {
            return Err("the drain time must be at most 1h".into());
        }
        Ok(())
    }

    /// The container's environment as Docker takes it (`KEY=VALUE`): its plain variables and
    /// its secrets' values, those attached.
    pub fn environment(&self) -> Vec<String> {
        let plain = self.env.iter().map(|(k, v)| format!("{k}={v}"));
        let secret = self.secret_env.iter().filter_map(|(k, reference)| {
            reference
                .value
                .as_ref()
                .map(|value| format!("{k}={}", value.expose()))
        });
        plain.chain(secret).collect()
    }

    /// The canonical hash of everything that defines the container.
    ///
    /// It is computed from a JSON rendering whose field and key order is fixed by the struct and
    /// `BTreeMap`, so the same spec hashes the same on every host and across releases. The version
    /// prefix changes when the rendering does, which replaces containers once, deliberately.
    pub fn hash(&self) -> SpecHash {
        let canonical = if self.hooks.is_some() {
            let without_hooks = Self {
                hooks: None,
                ..self.clone()
            };
            serde_json::to_vec(&without_hooks)
        } else {
            serde_json::to_vec(self)
        }
        .expect("a spec always serializes to JSON");
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
    /// The distinct images its containers run, in order.
    pub fn images(&self) -> Vec<&ImageRef> {
        let mut images: Vec<&ImageRef> = self.containers.iter().map(|c| &c.image).collect();
        images.sort();
        images.dedup();
        images
    }

    /// The secrets its containers' environments refer to.
    pub fn secret_names(&self) -> BTreeSet<&SecretName> {
        self.secret_refs().map(|r| &r.secret).collect()
    }

    /// Every reference to a secret, in container order.
    pub fn secret_refs(&self) -> impl Iterator<Item = &SecretRef> {
        self.containers.iter().flat_map(|c| c.secret_env.values())
    }

    /// Every reference to a secret, to fill in.
    pub fn secret_refs_mut(&mut self) -> impl Iterator<Item = &mut SecretRef> {
        self.containers
            .iter_mut()
            .flat_map(|c| c.secret_env.values_mut())
    }

    /// The values attached to its references, one per secret.
    pub fn secret_values(&self) -> BTreeMap<SecretName, SecretValue> {
        self.secret_refs()
            .filter_map(|r| Some((r.secret.clone(), r.value.clone()?)))
            .collect()
    }

    /// Attaches to each reference its secret's value from `values`; the first secret without
    /// one is the error, and nothing is attached then.
    pub fn attach_secret_values(
        &mut self,
        values: &BTreeMap<SecretName, SecretValue>,
    ) -> Result<(), SecretName> {
        if let Some(missing) = self
            .secret_names()
            .into_iter()
            .find(|n| !values.contains_key(n))
        {
            return Err(missing.clone());
        }
        for reference in self.secret_refs_mut() {
            reference.value = values.get(&reference.secret).cloned();
        }
        Ok(())
    }

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
pub(crate) mod tests;
