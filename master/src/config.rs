//! The master's configuration: `master.toml` in the data directory, overridden by
//! `BRINE_MASTER_*` environment variables (e.g. `BRINE_MASTER_LISTEN=0.0.0.0:4700`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use brine_common::toml_span::ConfigFileError;
use brine_daemon::config::Overrides;
use serde::Deserialize;

use crate::registry::RegistrySettings;
use crate::store::{JobRetention, StoreLocation};

mod etcd;
mod hooks;

pub use etcd::{
    DEFAULT_PREFIX as DEFAULT_ETCD_PREFIX, endpoint_uses_tls as etcd_endpoint_uses_tls,
    table as etcd_table,
};
pub use hooks::{HookConfig, HookTarget};

/// The default port of the master.
pub const DEFAULT_PORT: u16 = 4700;

/// The file name of the configuration inside the data directory.
pub const CONFIG_FILE: &str = "master.toml";

/// `BRINE_MASTER_<KEY>` overrides `<key>` of master.toml.
pub const ENV_PREFIX: &str = "BRINE_MASTER";
/// `BRINE_MASTER_*` variables that are not keys of master.toml: the data directory is where
/// master.toml is, given to every subcommand (`--data-dir`).
pub const NOT_CONFIG_VARIABLES: &[&str] = &["DATA_DIR"];

/// A configuration that could not be loaded, located in its file where possible.
pub type ConfigError = ConfigFileError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
    dashboard_listen: Option<SocketAddr>,
    name: Option<String>,
    advertise_address: Option<String>,
    address: Option<String>,
    #[serde(default = "default_roles_file")]
    roles_file: PathBuf,
    #[serde(default = "default_highstate_timeout", with = "humantime_serde")]
    highstate_timeout: Duration,
    #[serde(default)]
    registries: BTreeMap<String, RegistrySettings>,
    #[serde(default)]
    join_approval: JoinApproval,
    #[serde(
        default = "default_minion_certificate_lifetime",
        with = "humantime_serde"
    )]
    minion_certificate_lifetime: Duration,
    #[serde(default = "default_ci_lock_limit", with = "humantime_serde")]
    ci_lock_limit: Duration,
    #[serde(default = "default_keep_jobs")]
    keep_jobs: usize,
    #[serde(default = "default_keep_jobs_for", with = "humantime_serde")]
    keep_jobs_for: Duration,
    etcd: Option<etcd::RawEtcd>,
    #[serde(default)]
    hooks: Vec<hooks::RawHook>,
}

fn default_ci_lock_limit() -> Duration {
    Duration::from_secs(3600)
}

fn default_keep_jobs() -> usize {
    1000
}

fn default_keep_jobs_for() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}

/// Whether a host that joins with a valid token is admitted at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinApproval {
    /// A valid token is enough.
    #[default]
    Auto,
    /// The host waits until `brine-master minions accept ID`.
    Manual,
}

fn default_roles_file() -> PathBuf {
    PathBuf::from("roles.toml")
}

fn default_minion_certificate_lifetime() -> Duration {
    crate::pki::MINION_VALIDITY
}

/// Minions renew between half and four fifths of their certificate's lifetime; anything
/// shorter than this would keep them renewing more than they work.
const SHORTEST_MINION_CERTIFICATE_LIFETIME: Duration = Duration::from_secs(10);

fn default_highstate_timeout() -> Duration {
    Duration::from_secs(600)
}

/// Everything the master daemon and its CLI need to know.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub data_dir: PathBuf,
    /// Where the daemon listens.
    pub listen: SocketAddr,
    /// Where the Prometheus endpoint listens (plain HTTP), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the web dashboard listens (HTTPS with the master's certificate), if anywhere.
    pub dashboard_listen: Option<SocketAddr>,
    /// This master's name among the masters that share a store (it names the jobs it runs):
    /// `HOSTNAME:PORT` unless master.toml says otherwise.
    pub name: String,
    /// `HOST:PORT` where minions reach this master, told to minions when masters share a
    /// store (so that they move to another master when theirs is gone).
    pub advertise_address: Option<String>,
    /// Where the CLI on this host reaches the daemon (`HOST:PORT`).
    pub address: String,
    /// The roles file, absolute.
    pub roles_file: PathBuf,
    /// How long a highstate waits for its hosts unless the caller says otherwise.
    pub highstate_timeout: Duration,
    /// Credentials and protocol per registry (`HOST:PORT`), for resolving tags to digests.
    pub registries: BTreeMap<String, RegistrySettings>,
    pub join_approval: JoinApproval,
    /// How long the certificates signed for minions (at join and at renewal) are valid.
    pub minion_certificate_lifetime: Duration,
    /// How long a job started with a `ci` certificate may hold the fleet lock at most.
    pub ci_lock_limit: Duration,
    /// How much job history is kept.
    pub job_retention: JobRetention,
    /// Where the hosts, tokens, jobs and the rest are kept.
    pub store: StoreLocation,
    /// Commands to run and URLs to POST to on the fleet's events (`[[hooks]]`).
    pub hooks: Vec<HookConfig>,
}

impl MasterConfig {
    /// Whether other masters may share the store (it is in etcd), or it is this master's alone.
    pub fn store_is_shared(&self) -> bool {
        matches!(self.store, StoreLocation::Etcd(_))
    }

    /// Loads `DATA_DIR/master.toml` and the `BRINE_MASTER_*` environment variables.
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        Self::load_with(
            data_dir,
            &Overrides::from_environment(ENV_PREFIX, NOT_CONFIG_VARIABLES),
        )
    }

    /// Loads `DATA_DIR/master.toml` with `overrides` instead of the process's environment.
    pub fn load_with(data_dir: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let path = data_dir.join(CONFIG_FILE);
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|err| ConfigError {
            file: file.clone(),
            line: None,
            key: None,
            message: format!("cannot read it ({err}); run `brine-master init` first"),
        })?;
        let raw: RawConfig = brine_daemon::config::load(&file, &text, overrides)?;
        if raw.keep_jobs == 0 {
            return Err(brine_daemon::config::invalid(
                &file,
                &text,
                overrides,
                "keep_jobs",
                "must be at least 1".to_owned(),
            ));
        }
        if raw.minion_certificate_lifetime < SHORTEST_MINION_CERTIFICATE_LIFETIME {
            return Err(brine_daemon::config::invalid(
                &file,
                &text,
                overrides,
                "minion_certificate_lifetime",
                format!(
                    "must be at least {}",
                    humantime::format_duration(SHORTEST_MINION_CERTIFICATE_LIFETIME)
                ),
            ));
        }
        let source = etcd::Source {
            file: &file,
            text: &text,
            overrides,
        };
        let hooks = hooks::settings(raw.hooks, &source)?;
        let store = match raw.etcd {
            Some(etcd) => StoreLocation::Etcd(etcd::settings(etcd, data_dir, &source)?),
            None => StoreLocation::File(crate::data_dir::DataDir::new(data_dir).store()),
        };
        let name = match raw.name {
            // The name is part of the master's keys in a shared store: no '/'.
            Some(name)
                if name.trim().is_empty() || name.chars().any(|c| c.is_control() || c == '/') =>
            {
                return Err(brine_daemon::config::invalid(
                    &file,
                    &text,
                    overrides,
                    "name",
                    "must be a name of printable characters without '/', e.g. \"master-1\""
                        .to_owned(),
                ));
            }
            Some(name) => name,
            None => default_name(raw.listen),
        };
        if let Some(address) = &raw.advertise_address
            && !brine_common::address::is_host_and_port(address)
        {
            return Err(brine_daemon::config::invalid(
                &file,
                &text,
                overrides,
                "advertise_address",
                format!("{address:?} is not HOST:PORT, e.g. \"master-1.example.com:4700\""),
            ));
        }
        let address = raw
            .address
            .unwrap_or_else(|| local_address(raw.listen).to_string());
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            listen: raw.listen,
            metrics_listen: raw.metrics_listen,
            dashboard_listen: raw.dashboard_listen,
            name,
            advertise_address: raw.advertise_address,
            address,
            roles_file: data_dir.join(raw.roles_file),
            highstate_timeout: raw.highstate_timeout,
            registries: raw.registries,
            join_approval: raw.join_approval,
            minion_certificate_lifetime: raw.minion_certificate_lifetime,
            ci_lock_limit: raw.ci_lock_limit,
            job_retention: JobRetention {
                keep: raw.keep_jobs,
                max_age: raw.keep_jobs_for,
            },
            store,
            hooks,
        })
    }

    /// The configuration in effect, as TOML, naming the variables that set keys (for
    /// `brine-master config`). Registry passwords are shown as `<redacted>`.
    pub fn describe(&self, overrides: &Overrides) -> String {
        let mut table = toml::Table::new();
        let mut put = |key: &str, value: toml::Value| {
            table.insert(key.to_owned(), value);
        };
        let text = |value: String| toml::Value::String(value);
        put("listen", text(self.listen.to_string()));
        if let Some(address) = self.metrics_listen {
            put("metrics_listen", text(address.to_string()));
        }
        if let Some(address) = self.dashboard_listen {
            put("dashboard_listen", text(address.to_string()));
        }
        put("name", text(self.name.clone()));
        if let Some(address) = &self.advertise_address {
            put("advertise_address", text(address.clone()));
        }
        put("address", text(self.address.clone()));
        put("roles_file", text(self.roles_file.display().to_string()));
        let duration = |d: Duration| text(whole_units(d));
        put("highstate_timeout", duration(self.highstate_timeout));
        put(
            "join_approval",
            text(
                match self.join_approval {
                    JoinApproval::Auto => "auto",
                    JoinApproval::Manual => "manual",
                }
                .to_owned(),
            ),
        );
        put(
            "minion_certificate_lifetime",
            duration(self.minion_certificate_lifetime),
        );
        put(
            "keep_jobs",
            toml::Value::Integer(i64::try_from(self.job_retention.keep).unwrap_or(i64::MAX)),
        );
        put("keep_jobs_for", duration(self.job_retention.max_age));
        put("ci_lock_limit", duration(self.ci_lock_limit));
        let registries = self
            .registries
            .iter()
            .map(|(host, settings)| {
                let mut entry = toml::Table::new();
                if let Some(username) = &settings.username {
                    entry.insert("username".into(), text(username.clone()));
                }
                if settings.password.is_some() {
                    entry.insert("password".into(), text("<redacted>".into()));
                }
                entry.insert("insecure".into(), toml::Value::Boolean(settings.insecure));
                (host.clone(), toml::Value::Table(entry))
            })
            .collect();
        if !self.registries.is_empty() {
            put("registries", toml::Value::Table(registries));
        }
        if let StoreLocation::Etcd(settings) = &self.store {
            put("etcd", etcd::described(settings));
        }
        if !self.hooks.is_empty() {
            put("hooks", hooks::described(&self.hooks));
        }
        let mut out = format!(
            "# The configuration in effect: {}",
            self.data_dir.join(CONFIG_FILE).display()
        );
        for (key, variable) in overrides.keys() {
            out.push_str(&format!("\n# {key}: from {variable}"));
        }
        out.push_str("\n\n");
        out.push_str(&toml::to_string(&table).expect("a table of strings serializes"));
        out
    }

    /// The configuration `brine-master init` writes: the store in the data directory, or in
    /// etcd as `etcd` says.
    pub fn default_file(
        listen: SocketAddr,
        etcd: Option<&crate::store::EtcdSettings>,
        advertise_address: Option<&str>,
    ) -> String {
        let store = match etcd {
            Some(settings) => etcd::table(settings),
            None => etcd::COMMENTED_TABLE.to_owned(),
        };
        let advertise_address = match advertise_address {
            Some(address) => format!("advertise_address = {}", toml::Value::from(address)),
            None => "# advertise_address = \"master-1.example.com:4700\"".to_owned(),
        };
        let mut file = format!(
            "# brine-master configuration. Every key can be overridden by an environment variable\n\
             # BRINE_MASTER_<KEY>, e.g. BRINE_MASTER_LISTEN.\n\n\
             # Where the master listens for minions, the CLI and CI.\n\
             listen = \"{listen}\"\n\n\
             # Where the Prometheus endpoint listens (plain HTTP, GET /metrics); off unless set.\n\
             # metrics_listen = \"127.0.0.1:9470\"\n\n\
             # Where the web dashboard listens (HTTPS, with the master's certificate); off unless\n\
             # set. Browsers sign in with a link from `brine-master dashboard login`.\n\
             # dashboard_listen = \"127.0.0.1:4443\"\n\n\
             # This master's name among the masters that share a store in etcd: the jobs it runs\n\
             # carry it (defaults to HOSTNAME:PORT).\n\
             # name = \"master-1\"\n\n\
             # Where minions reach this master (HOST:PORT, a name its certificate holds). Masters\n\
             # that share a store tell their minions each other's, so that a minion whose master\n\
             # is gone links to another; `init --advertise HOST --etcd ...` sets it.\n\
             {advertise_address}\n\n\
             # Where the CLI on this host reaches the master (defaults to the listen address,\n\
             # with 127.0.0.1 for an unspecified address).\n\
             # address = \"{local}\"\n\n\
             # The roles file, relative to this directory.\n\
             roles_file = \"roles.toml\"\n\n\
             # How long a highstate waits for the hosts to report.\n\
             highstate_timeout = \"10m\"\n\n\
             # \"auto\": a host with a valid join token is admitted at once; \"manual\": it waits\n\
             # for `brine-master minions accept ID`.\n\
             join_approval = \"auto\"\n\n\
             # How long minion certificates are valid. Each minion renews its own over its\n\
             # link, at a random point between half and four fifths of that time; a host that\n\
             # stays offline past the end must join again with a token.\n\
             minion_certificate_lifetime = \"30d\"\n\n\
             # How much job history is kept: the newest keep_jobs jobs, of those only the ones\n\
             # that finished within keep_jobs_for.\n\
             keep_jobs = 1000\n\
             keep_jobs_for = \"90d\"\n\n\
             # The longest a job started with a ci certificate may hold the fleet lock (its\n\
             # timeout times its batches, plus the waits between them); longer ones are refused.\n\
             ci_lock_limit = \"1h\"\n\n\
             # Registries that need credentials, or plain HTTP (registries on 127.0.0.0/8 always\n\
             # use plain HTTP). The master resolves each image's tag to a digest there once per\n\
             # highstate, so every host runs the same bits.\n\
             # [registries.\"registry.example.com:5000\"]\n\
             # username = \"deploy\"\n\
             # password = \"...\"\n\
             # insecure = false\n\n\
             # Hooks: a command to run, or a URL to POST to, with the JSON of each fleet event\n\
             # they take (README, \"Events and hooks\"). A slow or failing hook never holds up a\n\
             # job; a delivery that still fails after its retries is kept for\n\
             # `brine-master hooks failures`.\n\
             # [[hooks]]\n\
             # name = \"chat\"\n\
             # on = [\"job_finished\"]\n\
             # status = [\"failed\", \"partial\"]\n\
             # url = \"https://chat.example/hook\"\n\
             # timeout = \"10s\"\n\
             # retries = 3\n\
             #\n\
             # [[hooks]]\n\
             # name = \"crash-pager\"\n\
             # on = [\"host_event\"]\n\
             # status = [\"crash_looping\"]\n\
             # command = [\"/usr/local/bin/page-oncall\", \"--team\", \"web\"]\n",
            local = local_address(listen)
        );
        file.push('\n');
        file.push_str(&store);
        file
    }
}

/// A duration in the largest unit that divides it (`90d`, `36h`, `90s`), as written in
/// configuration files; humantime's own rendering counts months of 30.44 days.
fn whole_units(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if duration.subsec_nanos() != 0 {
        return format!("{}ms", duration.as_millis());
    }
    match seconds {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `HOST:PORT` for `host` (bracketed if it is an IPv6 address) and `port`.
pub fn host_and_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `HOSTNAME:PORT` of a master listening on `listen`: distinct for masters on distinct hosts,
/// and for masters on one host.
fn default_name(listen: SocketAddr) -> String {
    let uname = rustix::system::uname();
    let host = uname.nodename().to_string_lossy();
    format!("{host}:{}", listen.port())
}

/// The address a local client uses for a listen address: `0.0.0.0` is not a destination.
fn local_address(listen: SocketAddr) -> SocketAddr {
    let mut local = listen;
    if listen.ip().is_unspecified() {
        local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    local
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<MasterConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), text).unwrap();
        MasterConfig::load(dir.path())
    }

    #[test]
    fn the_default_file_loads() {
        let config = load(&MasterConfig::default_file(
            "0.0.0.0:4700".parse().unwrap(),
            None,
            None,
        ))
        .unwrap();
        assert_eq!(config.address, "127.0.0.1:4700");
        assert_eq!(config.highstate_timeout, Duration::from_secs(600));
        assert!(config.roles_file.ends_with("roles.toml"));
    }

    #[test]
    fn a_bad_value_names_file_line_and_key() {
        let err = load("roles_file = \"r.toml\"\nlisten = \"nowhere\"\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("listen"));
        assert_eq!(err.line, Some(2));
        assert!(err.to_string().contains("master.toml:2: listen: "), "{err}");
    }

    #[test]
    fn registries_take_credentials() {
        let config = load(
            "listen = \"127.0.0.1:1\"\n[registries.\"r.example:5000\"]\nusername = \"u\"\npassword = \"p\"\n",
        )
        .unwrap();
        let registry = &config.registries["r.example:5000"];
        assert_eq!(registry.password.as_deref(), Some("p"));
        let err = load("listen = \"127.0.0.1:1\"\n[registries.x]\nuser = \"u\"\n").unwrap_err();
        assert!(err.to_string().contains("user"), "{err}");
    }

    #[test]
    fn minion_certificates_last_thirty_days_unless_configured() {
        let config = load("listen = \"127.0.0.1:1\"\n").unwrap();
        assert_eq!(
            config.minion_certificate_lifetime,
            crate::pki::MINION_VALIDITY
        );
        let config =
            load("listen = \"127.0.0.1:1\"\nminion_certificate_lifetime = \"2h\"\n").unwrap();
        assert_eq!(
            config.minion_certificate_lifetime,
            Duration::from_secs(7200)
        );
        let err =
            load("listen = \"127.0.0.1:1\"\nminion_certificate_lifetime = \"1s\"\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.to_string().contains("at least"), "{err}");
    }

    #[test]
    fn the_example_in_deploy_is_the_file_init_writes() {
        let example = include_str!("../../deploy/master.toml.example");
        let (header, body) = example.split_once('\n').expect("a header line");
        assert!(header.starts_with("# "), "{header}");
        assert_eq!(
            body,
            MasterConfig::default_file("0.0.0.0:4700".parse().unwrap(), None, None),
            "deploy/master.toml.example is out of date: regenerate it with `brine-master init`"
        );
    }

    #[test]
    fn an_etcd_table_keeps_the_fleet_in_etcd_and_bad_ones_name_their_key() {
        let config = load(
            "listen = \"127.0.0.1:1\"\n[etcd]\nendpoints = [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]\n",
        )
        .unwrap();
        let StoreLocation::Etcd(settings) = &config.store else {
            panic!("not on etcd: {:?}", config.store);
        };
        assert_eq!(settings.endpoints.len(), 2);
        assert_eq!(settings.prefix, DEFAULT_ETCD_PREFIX);
        assert_eq!(settings.tls, None);
        // What init writes loads back as it was.
        let written = MasterConfig::default_file(
            "127.0.0.1:1".parse().unwrap(),
            Some(settings),
            Some("m1.example:4700"),
        );
        assert!(matches!(load(&written).unwrap().store, StoreLocation::Etcd(s) if s == *settings));

        let tls = load(
            "listen = \"127.0.0.1:1\"\n[etcd]\nendpoints = [\"https://e:2379\"]\n\
             ca_file = \"ca.crt\"\ncert_file = \"c.crt\"\nkey_file = \"c.key\"\n",
        )
        .unwrap();
        let StoreLocation::Etcd(settings) = &tls.store else {
            panic!("not on etcd");
        };
        let files = settings.tls.as_ref().expect("TLS files");
        assert!(files.ca_file.is_absolute() && files.ca_file.ends_with("ca.crt"));

        for (table, key, says) in [
            ("endpoints = []", "etcd.endpoints", "names no member"),
            (
                "endpoints = [\"10.0.0.1:2379\"]",
                "etcd.endpoints",
                "is not a URL",
            ),
            (
                "endpoints = [\"https://e:2379\"]",
                "etcd.endpoints",
                "needs ca_file, cert_file and key_file",
            ),
            (
                "endpoints = [\"http://e:2379\"]\nca_file = \"ca.crt\"",
                "etcd.ca_file",
                "go together",
            ),
            (
                "endpoints = [\"http://e:2379\"]\nprefix = \"brine\"",
                "etcd.prefix",
                "must start with '/'",
            ),
        ] {
            let err = load(&format!("listen = \"127.0.0.1:1\"\n[etcd]\n{table}\n")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{table}: {err}");
            assert!(err.line.is_some(), "{table}: {err}");
            assert!(err.to_string().contains(says), "{table}: {err}");
        }
    }

    #[test]
    fn a_master_is_named_after_its_host_and_port_unless_named() {
        let config = load("listen = \"127.0.0.1:4711\"\n").unwrap();
        assert!(config.name.ends_with(":4711"), "{}", config.name);
        assert!(config.name.len() > ":4711".len(), "{}", config.name);
        let config = load("listen = \"127.0.0.1:1\"\nname = \"master-2\"\n").unwrap();
        assert_eq!(config.name, "master-2");
        let err = load("listen = \"127.0.0.1:1\"\nname = \" \"\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("name"), "{err}");
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let err = load("listen = \"127.0.0.1:1\"\nlisten_typo = 3\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn a_missing_file_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = MasterConfig::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("brine-master init"), "{err}");
    }

    const HOOKS: &str = "listen = \"127.0.0.1:1\"\n\
                         \n\
                         [[hooks]]\n\
                         name = \"chat\"\n\
                         on = [\"job_finished\"]\n\
                         status = [\"failed\", \"partial\"]\n\
                         url = \"https://user:secret@chat.example/hook?token=abc\"\n\
                         \n\
                         [[hooks]]\n\
                         name = \"pager\"\n\
                         on = [\"host_event\", \"hook_failed\"]\n\
                         command = [\"/usr/local/bin/page\", \"--team\", \"web\"]\n\
                         timeout = \"2s\"\n\
                         retries = 0\n";

    #[test]
    fn hooks_take_a_command_or_a_url_with_defaults() {
        let config = load(HOOKS).unwrap();
        let [chat, pager] = &config.hooks[..] else {
            panic!("two hooks: {:?}", config.hooks);
        };
        assert_eq!(chat.name, "chat");
        assert_eq!(chat.timeout, Duration::from_secs(10));
        assert_eq!(chat.retries, 3);
        assert_eq!(chat.target.describe(), "https://chat.example/hook");
        assert_eq!(
            pager.target,
            HookTarget::Command(vec![
                "/usr/local/bin/page".into(),
                "--team".into(),
                "web".into()
            ])
        );
        assert_eq!(pager.timeout, Duration::from_secs(2));
        assert_eq!(pager.retries, 0);
        let described = config.describe(&Default::default());
        assert!(
            !described.contains("secret") && !described.contains("token"),
            "{described}"
        );
    }

    #[test]
    fn a_bad_hook_names_its_line_and_key() {
        let cases = [
            (
                "url = \"https://user",
                "url = \"ftp://chat.example/\"\n#",
                7,
                "hooks[0].url",
            ),
            (
                "on = [\"host_event\"",
                "on = [\"host_evnt\"",
                11,
                "hooks[1].on",
            ),
            (
                "status = [\"failed\"",
                "status = [\"broken\"",
                6,
                "hooks[0].status",
            ),
            (
                "timeout = \"2s\"",
                "timeout = \"0s\"",
                13,
                "hooks[1].timeout",
            ),
            ("retries = 0", "retries = 11", 14, "hooks[1].retries"),
            ("name = \"pager\"", "name = \"chat\"", 10, "hooks[1].name"),
            ("name = \"pager\"", "name = \"Pager!\"", 10, "hooks[1].name"),
            (
                "command = [\"/usr",
                "url = \"http://x/\"\ncommand = [\"/usr",
                10,
                "hooks[1].name",
            ),
            (
                "command = [\"/usr/local/bin/page\", \"--team\", \"web\"]",
                "command = []",
                12,
                "hooks[1].command",
            ),
        ];
        for (from, to, line, key) in cases {
            let text = HOOKS.replacen(from, to, 1);
            let err = load(&text).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{text}: {err}");
            assert_eq!(err.line, Some(line), "{text}: {err}");
            assert!(err.to_string().starts_with(&err.file), "{err}");
        }
        let err = load(&HOOKS.replacen("retries = 0", "retry = 0", 1)).unwrap_err();
        assert!(err.to_string().contains("retry"), "{err}");
    }

    #[test]
    fn a_hook_takes_the_kinds_and_statuses_it_names_and_never_its_own_failures() {
        use brine_common::fleet_event::{FleetEvent, FleetEventKind, JobOutcome};
        use brine_common::outcome::{JobId, JobSummary};
        let config = load(HOOKS).unwrap();
        let [chat, pager] = &config.hooks[..] else {
            panic!("two hooks");
        };
        let event = |what| FleetEvent {
            sequence: 1,
            at_unix_ms: 0,
            what,
        };
        let finished = |outcome: JobOutcome| {
            let mut what = FleetEventKind::job_finished(
                "deploy",
                &JobSummary {
                    job_id: JobId::new("j").unwrap(),
                    hosts: vec![],
                    started_at_unix_ms: 0,
                    finished_at_unix_ms: 0,
                    resolve_ms: 0,
                    cancelled_by: None,
                },
            );
            if let FleetEventKind::JobFinished { outcome: o, .. } = &mut what {
                *o = outcome;
            }
            event(what)
        };
        assert!(chat.wants(&finished(JobOutcome::Failed)));
        assert!(chat.wants(&finished(JobOutcome::Partial)));
        assert!(!chat.wants(&finished(JobOutcome::Succeeded)));
        assert!(!pager.wants(&finished(JobOutcome::Failed)));
        let failed = |hook: &str| {
            event(FleetEventKind::HookFailed {
                hook: hook.into(),
                event_sequence: 1,
                event_kind: "job_finished".into(),
                attempts: 4,
                error: "HTTP 500".into(),
            })
        };
        assert!(pager.wants(&failed("chat")));
        assert!(!pager.wants(&failed("pager")), "not its own failures");
    }
}
