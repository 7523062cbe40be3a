//! The proxy's configuration: `/etc/brine/proxy.toml` (optional: every key has a default),
//! overridden by `BRINE_PROXY_*` environment variables.

use std::path::{Path, PathBuf};
use std::time::Duration;

use brine_common::proxy_control::DEFAULT_CONTROL_SOCKET;
use brine_common::toml_span::ConfigFileError;
use brine_daemon::config::Overrides;
use serde::{Deserialize, Serialize};

/// Where the configuration is unless `--config` or `BRINE_PROXY_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/brine/proxy.toml";
/// Where the routes are kept across restarts unless configured otherwise.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/brine-proxy/routes.json";

/// `BRINE_PROXY_<KEY>` overrides `<key>` of proxy.toml.
pub const ENV_PREFIX: &str = "BRINE_PROXY";
/// `BRINE_PROXY_*` variables that are not keys of proxy.toml: the file's own path.
pub const NOT_CONFIG_VARIABLES: &[&str] = &["CONFIG"];

/// What `proxy.toml` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// The unix socket the minion configures the proxy through (created mode 0600).
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    /// Where the routes are written after every change and read back at start.
    #[serde(default = "default_state_file")]
    pub state_file: PathBuf,
    /// How long connecting to a backend may take before the client's connection is closed
    /// (tcp) or answered `502` (http).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a stopping proxy lets the traffic in flight finish before it exits.
    #[serde(default = "default_stop_drain", with = "humantime_serde")]
    pub stop_drain: Duration,
    /// Connections open at once through one listener; above it, accepting waits.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_control_socket() -> PathBuf {
    PathBuf::from(DEFAULT_CONTROL_SOCKET)
}

fn default_state_file() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_FILE)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Below the unit's `TimeoutStopSec=`, so systemd does not kill a proxy still draining.
fn default_stop_drain() -> Duration {
    Duration::from_secs(30)
}

fn default_max_connections() -> usize {
    10_000
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            control_socket: default_control_socket(),
            state_file: default_state_file(),
            connect_timeout: default_connect_timeout(),
            stop_drain: default_stop_drain(),
            max_connections: default_max_connections(),
        }
    }
}

impl ProxyConfig {
    /// Loads `path` and the `BRINE_PROXY_*` environment variables. A missing file is an empty
    /// one unless `required` (the operator named it).
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigFileError> {
        Self::load_with(
            path,
            required,
            &Overrides::from_environment(ENV_PREFIX, NOT_CONFIG_VARIABLES),
        )
    }

    /// Loads `path` with `overrides` instead of the process's environment.
    pub fn load_with(
        path: &Path,
        required: bool,
        overrides: &Overrides,
    ) -> Result<Self, ConfigFileError> {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
            Err(err) => {
                return Err(ConfigFileError {
                    file,
                    line: None,
                    key: None,
                    message: format!("cannot read it ({err})"),
                });
            }
        };
        let config: Self = brine_daemon::config::load(&file, &text, overrides)?;
        let invalid = |key: &str, message: &str| {
            brine_daemon::config::invalid(&file, &text, overrides, key, message.to_owned())
        };
        if config.connect_timeout.is_zero() {
            return Err(invalid("connect_timeout", "must be more than 0s"));
        }
        if config.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        if config.control_socket.as_os_str().is_empty() {
            return Err(invalid("control_socket", "must name a path"));
        }
        if config.state_file.as_os_str().is_empty() {
            return Err(invalid("state_file", "must name a path"));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> Overrides {
        Overrides::from_variables(
            ENV_PREFIX,
            NOT_CONFIG_VARIABLES,
            pairs
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
    }

    #[test]
    fn no_file_means_the_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.toml");
        let config = ProxyConfig::load_with(&path, false, &overrides(&[])).expect("defaults");
        assert_eq!(config, ProxyConfig::default());
        let err = ProxyConfig::load_with(&path, true, &overrides(&[])).expect_err("named");
        assert!(err.to_string().contains("cannot read it"), "{err}");
    }

    /// deploy/proxy.toml.example shows every key with its default, commented out: as shipped it
    /// is an empty file, and with every key uncommented it is the defaults still.
    #[test]
    fn the_example_in_deploy_shows_every_key_with_its_default() {
        let example = include_str!("../../deploy/proxy.toml.example");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, example).expect("write");
        let config = ProxyConfig::load_with(&path, true, &overrides(&[])).expect("the example");
        assert_eq!(config, ProxyConfig::default());

        let uncommented: String = example
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.contains(" = "))
            .map(|line| format!("{line}\n"))
            .collect();
        std::fs::write(&path, &uncommented).expect("write");
        let config = ProxyConfig::load_with(&path, true, &overrides(&[]))
            .unwrap_or_else(|err| panic!("the example's keys: {err}"));
        assert_eq!(config, ProxyConfig::default());
        let keys = uncommented.lines().count();
        let all = toml_keys(&ProxyConfig::default());
        assert_eq!(
            keys, all,
            "the example shows {keys} keys of {all}:\n{uncommented}"
        );
    }

    fn toml_keys(config: &ProxyConfig) -> usize {
        match serde_json::to_value(config).expect("serializes") {
            serde_json::Value::Object(map) => map.len(),
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn the_file_and_variables_set_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, "connect_timeout = \"2s\"\nstop_drain = \"1m\"\n").expect("write");
        let config = ProxyConfig::load_with(
            &path,
            true,
            &overrides(&[
                ("BRINE_PROXY_STATE_FILE", "/tmp/routes.json"),
                ("BRINE_PROXY_CONFIG", "/elsewhere.toml"),
            ]),
        )
        .expect("loads");
        assert_eq!(config.connect_timeout, Duration::from_secs(2));
        assert_eq!(config.stop_drain, Duration::from_secs(60));
        assert_eq!(config.state_file, PathBuf::from("/tmp/routes.json"));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, "stop_drain = \"1s\"\nconnect_timeout = \"0s\"\n").expect("write");
        let err = ProxyConfig::load_with(&path, true, &overrides(&[])).expect_err("zero");
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(2), Some("connect_timeout")),
            "{err}"
        );
        std::fs::write(&path, "\nconect_timeout = \"1s\"\n").expect("write");
        let err = ProxyConfig::load_with(&path, true, &overrides(&[])).expect_err("typo");
        assert_eq!(err.line, Some(2), "{err}");
    }
}
