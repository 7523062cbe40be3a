//! How CLI subcommands reach a running master: the connection flags every subcommand accepts,
//! and the channel they open with what `connection::resolve` picks (a context of the client
//! configuration, the flags, or the data directory on the master host).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use brine_proto::tls::{ClientIdentity, MasterTrust, certs_from_pem, client_config, connect};
use clap::parser::ValueSource;
use tonic::transport::Channel;

use super::client_config::{ConfigFile, locate_from_environment};
use super::connection::{self, Given, Origin, Request, Resolved, Setting, Source};
use crate::config::MasterConfig;
use crate::data_dir::{DEFAULT_DATA_DIR, DataDir};

/// How long the CLI waits to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the master is and which certificate to call it with: flags of the top-level command,
/// accepted before or after any subcommand.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Connection")]
pub struct ClientArgs {
    /// The master's data directory. `init` creates it and `serve` runs on it; on the master host,
    /// other commands read the master's address and the admin certificate from it when no
    /// context is in use (given here, it is used over `current_context`).
    #[arg(long, global = true, env = "BRINE_MASTER_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Call the master of this context of the client configuration (`~/.config/brine/config.toml`;
    /// `brine-master context list` shows them); default its `current_context`.
    #[arg(long, global = true, env = "BRINE_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    /// The master's address (HOST:PORT); overrides the context's, or master.toml's in the data
    /// directory.
    #[arg(
        long,
        global = true,
        env = "BRINE_MASTER_ADDRESS",
        value_name = "HOST:PORT"
    )]
    pub master: Option<String>,
    /// The CA certificate (PEM); overrides the context's, or ca.pem in the data directory.
    #[arg(long, global = true, env = "BRINE_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// The client certificate (PEM); overrides the context's, or admin.pem in the data directory.
    #[arg(long, global = true, env = "BRINE_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM); overrides the context's, or admin.key in the data
    /// directory.
    #[arg(long, global = true, env = "BRINE_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Which of the above the command line or the environment gave: [`ClientArgs::note_sources`].
    #[arg(skip)]
    sources: Sources,
}

/// How each flag was given; `None` for a default or nothing.
#[derive(Debug, Clone, Default)]
struct Sources {
    data_dir: Option<Given>,
    context: Option<Given>,
    master: Option<Given>,
    ca: Option<Given>,
    cert: Option<Given>,
    key: Option<Given>,
}

impl Default for ClientArgs {
    /// No flag given. (Job subcommands skip these flags in their own arguments, as they are the
    /// top-level command's, and are handed the parsed ones.)
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            context: None,
            master: None,
            ca: None,
            cert: None,
            key: None,
            sources: Sources::default(),
        }
    }
}

impl ClientArgs {
    /// Records which flags came from the command line and which from the environment (clap's
    /// `matches` know; the parsed struct does not): the command line's `--data-dir` picks the
    /// data directory over `current_context`, and `context show` tells where each setting came
    /// from.
    pub fn note_sources(&mut self, matches: &clap::ArgMatches) {
        let given =
            |id: &str, flag: &'static str, variable: &'static str| match matches.value_source(id) {
                Some(ValueSource::CommandLine) => Some(Given::Flag(flag)),
                Some(ValueSource::EnvVariable) => Some(Given::Env(variable)),
                _ => None,
            };
        self.sources = Sources {
            data_dir: given("data_dir", "--data-dir", "BRINE_MASTER_DATA_DIR"),
            context: given("context", "--context", "BRINE_CONTEXT"),
            master: given("master", "--master", "BRINE_MASTER_ADDRESS"),
            ca: given("ca", "--ca", "BRINE_CA"),
            cert: given("cert", "--cert", "BRINE_CERT"),
            key: given("key", "--key", "BRINE_KEY"),
        };
    }

    /// The flags, as `connection::resolve` takes them. A value whose source was not noted
    /// counts as a flag.
    fn request(&self) -> Request {
        fn with<T: Clone>(
            value: &Option<T>,
            given: Option<Given>,
            flag: &'static str,
        ) -> Option<(T, Given)> {
            value
                .clone()
                .map(|value| (value, given.unwrap_or(Given::Flag(flag))))
        }
        let s = &self.sources;
        Request {
            data_dir: self.data_dir.clone(),
            data_dir_given: s.data_dir,
            context: with(&self.context, s.context, "--context"),
            master: with(&self.master, s.master, "--master"),
            ca: with(&self.ca, s.ca, "--ca"),
            cert: with(&self.cert, s.cert, "--cert"),
            key: with(&self.key, s.key, "--key"),
        }
    }

    /// The connection in effect: the client configuration, if there is one, read and applied.
    pub fn connection(&self) -> anyhow::Result<Connection> {
        let file = match locate_from_environment() {
            Some(path) => Some(ConfigFile::load(&path)?),
            None => None,
        };
        let resolved = connection::resolve(&self.request(), file.as_ref())?;
        let address = match resolved.address.clone() {
            Some(address) => address,
            None => Setting {
                value: address_in_data_dir(&self.data_dir, file.as_ref())?,
                origin: Origin::DataDir(self.data_dir.clone()),
            },
        };
        Ok(Connection {
            file: file.map(|file| file.path().to_owned()),
            address,
            resolved,
        })
    }

    /// The master's address: `--master`, the context's, or the one in the data directory.
    pub fn address(&self) -> anyhow::Result<String> {
        Ok(self.connection()?.address.value)
    }

    /// Opens a mutual-TLS channel to the master.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        let connection = self.connection()?;
        let resolved = &connection.resolved;
        let ca_pem = read_setting(&resolved.ca, "--ca FILE (or BRINE_CA)")?;
        let ca =
            certs_from_pem(&resolved.ca.value.display().to_string(), ca_pem.as_bytes())?.remove(0);
        let identity = ClientIdentity::from_pem(
            &resolved.cert.value.display().to_string(),
            read_setting(&resolved.cert, "--cert FILE (or BRINE_CERT)")?.as_bytes(),
            &resolved.key.value.display().to_string(),
            read_setting(&resolved.key, "--key FILE (or BRINE_KEY)")?.as_bytes(),
        )?;
        let config = client_config(MasterTrust::Ca(ca), Some(identity))?;
        Ok(connect(&connection.address.value, config, CONNECT_TIMEOUT).await?)
    }
}

/// The connection in effect, for `context show` and `connect`.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The client configuration file, if the environment locates one (it may not exist).
    pub file: Option<PathBuf>,
    pub address: Setting<String>,
    pub resolved: Resolved,
}

impl Connection {
    pub fn source(&self) -> &Source {
        &self.resolved.source
    }
}

/// The `address` of master.toml in `data_dir`, or, without a master.toml, the error that lists
/// every way to point the CLI at a master.
fn address_in_data_dir(data_dir: &Path, file: Option<&ConfigFile>) -> anyhow::Result<String> {
    let config = DataDir::new(data_dir).config();
    match std::fs::metadata(&config) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            Err(connection::no_master_error(data_dir, file))
        }
        _ => Ok(MasterConfig::load(data_dir)
            .context("find the master's address (or give --master HOST:PORT)")?
            .address),
    }
}

/// Reads the file of a setting. A file the data directory was to hold but does not (the
/// master's address came from elsewhere) is an error that names the flag to give instead.
fn read_setting(setting: &Setting<PathBuf>, flag: &str) -> anyhow::Result<String> {
    let path = &setting.value;
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(err)
            if err.kind() == std::io::ErrorKind::NotFound
                && matches!(setting.origin, Origin::DataDir(_)) =>
        {
            anyhow::bail!(
                "{} does not exist: give {flag}, or use a context (--context NAME)",
                path.display()
            )
        }
        Err(err) => {
            Err(err).with_context(|| format!("read {} ({})", path.display(), setting.origin))
        }
    }
}
