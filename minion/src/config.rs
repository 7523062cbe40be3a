//! The minion's data directory and configuration: `minion.toml`, written by `brine-minion join`
//! and overridden by `BRINE_MINION_*` environment variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use brine_common::names::ContainerName;
use brine_common::toml_span::ConfigFileError;
use brine_daemon::config::Overrides;
use serde::{Deserialize, Serialize};

/// Where the data directory is unless `--data-dir` or `BRINE_MINION_DATA_DIR` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/brine-minion";
const CONFIG_FILE: &str = "minion.toml";

/// `BRINE_MINION_<KEY>` overrides `<key>` of minion.toml.
pub const ENV_PREFIX: &str = "BRINE_MINION";
/// `BRINE_MINION_*` variables that are not keys of minion.toml: the data directory is where
/// minion.toml is, given to every subcommand (`--data-dir`).
pub const NOT_CONFIG_VARIABLES: &[&str] = &["DATA_DIR"];

/// The files of a minion's data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }

    /// The master's CA certificate, checked against the join token's digest.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    pub fn cert(&self) -> PathBuf {
        self.root.join("minion.pem")
    }

    /// The minion's private key: generated on this host, never sent anywhere.
    pub fn key(&self) -> PathBuf {
        self.root.join("minion.key")
    }

    /// The key of a renewal under way, kept until its certificate is installed: asking again
    /// after a lost answer must be for the same key, as the master then hands out the same
    /// certificate again rather than a new one.
    pub fn renewing_key(&self) -> PathBuf {
        self.root.join("minion.key.renewing")
    }
}

/// What `minion.toml` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinionConfig {
    /// The master's address, `HOST:PORT`.
    pub master: String,
    /// Prefixes container names and scopes brine's labels, so several minions can share one
    /// Docker engine. Empty for the usual one minion per host.
    #[serde(default)]
    pub namespace: String,
    /// Labels reported to the master with the host's facts.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How often the minion checks its containers against its desired state even without an
    /// event from Docker (which it follows for died, stopped and removed containers).
    #[serde(default = "default_reconcile_interval", with = "humantime_serde")]
    pub reconcile_interval: std::time::Duration,
    /// How many releases before the current one keep their images on the host (rollback
    /// targets that need no download); older images are removed after a successful job.
    #[serde(default = "default_keep_releases")]
    pub keep_releases: usize,
    /// Credentials for registries that require them, by `HOST[:PORT]` as image references
    /// name them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registries: BTreeMap<String, RegistryLogin>,
    /// The local address to dial the master from; unset, the system chooses. For a host with
    /// several addresses when the master's firewall expects one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<std::net::IpAddr>,
    /// Where the Prometheus endpoint listens (plain HTTP), if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The control socket of the host's proxy (brine-proxy), asked only for containers whose
    /// roles turn the proxy on.
    #[serde(default = "default_proxy_socket")]
    pub proxy_socket: std::path::PathBuf,
}

/// Where brine-proxy listens unless minion.toml says otherwise.
pub fn default_proxy_socket() -> std::path::PathBuf {
    brine_common::proxy_control::DEFAULT_CONTROL_SOCKET.into()
}

/// A registry account. Its password is never printed (see the `Debug` impl).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How many previous releases keep their images unless minion.toml says otherwise.
pub fn default_keep_releases() -> usize {
    3
}

/// How often the minion checks its containers unless minion.toml says otherwise.
pub fn default_reconcile_interval() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

impl MinionConfig {
    /// Loads `DATA_DIR/minion.toml` and the `BRINE_MINION_*` environment variables.
    pub fn load(data: &DataDir) -> Result<Self, ConfigFileError> {
        Self::load_with(
            data,
            &Overrides::from_environment(ENV_PREFIX, NOT_CONFIG_VARIABLES),
        )
    }

    /// Loads `DATA_DIR/minion.toml` with `overrides` instead of the process's environment.
    pub fn load_with(data: &DataDir, overrides: &Overrides) -> Result<Self, ConfigFileError> {
        let path = data.config();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|err| ConfigFileError {
            file: file.clone(),
            line: None,
            key: None,
            message: format!("cannot read it ({err}); run `brine-minion join` first"),
        })?;
        let config: Self = brine_daemon::config::load(&file, &text, overrides)?;
        if !config.namespace.is_empty()
            && let Err(err) = ContainerName::new(config.namespace.clone())
        {
            return Err(brine_daemon::config::invalid(
                &file,
                &text,
                overrides,
                "namespace",
                format!("{:?} {err}", config.namespace),
            ));
        }
        Ok(config)
    }

    /// The configuration in effect, as TOML, naming the variables that set keys (for
    /// `brine-minion config`). Registry passwords are shown as `<redacted>`.
    pub fn describe(&self, data: &DataDir, overrides: &Overrides) -> String {
        let mut shown = self.clone();
        for login in shown.registries.values_mut() {
            login.password = "<redacted>".into();
        }
        let mut out = format!("# The configuration in effect: {}", data.config().display());
        for (key, variable) in overrides.keys() {
            out.push_str(&format!("\n# {key}: from {variable}"));
        }
        out.push_str("\n\n");
        out.push_str(&toml::to_string(&shown).expect("the minion configuration serializes"));
        out
    }

    /// The file `join` writes.
    pub fn to_file(&self) -> String {
        let mut text = String::from(
            "# brine-minion configuration, written by `brine-minion join`. Every key can be\n\
             # overridden by an environment variable BRINE_MINION_<KEY>.\n\n",
        );
        text.push_str(&toml::to_string(self).expect("the minion configuration serializes"));
        text
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_in_deploy_loads() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        std::fs::write(
            data.config(),
            include_str!("../../deploy/minion.toml.example"),
        )
        .unwrap();
        let config = MinionConfig::load_with(&data, &Overrides::default())
            .unwrap_or_else(|err| panic!("deploy/minion.toml.example: {err}"));
        assert_eq!(config.master, "brine-master.example.com:4700");
    }

    use super::*;

    #[test]
    fn the_written_file_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let config = MinionConfig {
            master: "127.0.0.1:4700".into(),
            namespace: "web-1".into(),
            labels: [("zone".to_owned(), "a".to_owned())].into(),
            reconcile_interval: std::time::Duration::from_secs(45),
            keep_releases: 5,
            registries: BTreeMap::from([(
                "registry.example.com:5000".to_owned(),
                RegistryLogin {
                    username: "deploy".into(),
                    password: "s3cret".into(),
                },
            )]),
            source_address: Some("127.0.0.7".parse().unwrap()),
            metrics_listen: Some("127.0.0.1:9471".parse().unwrap()),
            proxy_socket: "/run/brine-proxy/test.sock".into(),
        };
        std::fs::write(data.config(), config.to_file()).unwrap();
        let loaded = MinionConfig::load(&data).unwrap();
        assert_eq!(loaded, config);
        assert!(!format!("{loaded:?}").contains("s3cret"), "{loaded:?}");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        std::fs::write(data.config(), "master = \"m:1\"\nnamespace = \"bad/ns\"\n").unwrap();
        let err = MinionConfig::load(&data).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(2), Some("namespace")),
            "{err}"
        );
        std::fs::write(data.config(), "master = \"m:1\"\nlabel = {}\n").unwrap();
        let err = MinionConfig::load(&data).unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn a_namespace_follows_the_container_name_grammar() {
        // `a` with container `b.c` and `a.b` with container `c` would share a Docker name.
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        std::fs::write(data.config(), "master = \"m:1\"\nnamespace = \"a.b\"\n").unwrap();
        let err = MinionConfig::load(&data).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(2), Some("namespace")),
            "{err}"
        );
        assert!(err.message.contains("contains '.'"), "{err}");
        std::fs::write(data.config(), "master = \"m:1\"\nnamespace = \"a-b\"\n").unwrap();
        assert_eq!(MinionConfig::load(&data).unwrap().namespace, "a-b");
    }
}
