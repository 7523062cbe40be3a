//! The `brine-minion` binary: argument parsing around the library.

use brine_daemon::entry::{self, Threads};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use brine_common::names::MinionId;
use brine_common::token::JoinToken;
use brine_daemon::config::Overrides;
use brine_daemon::logging::LogArgs;
use brine_minion::config::{
    DEFAULT_DATA_DIR, DataDir, ENV_PREFIX, MinionConfig, NOT_CONFIG_VARIABLES,
};
use brine_minion::enrol::{JoinRequest, join};
use brine_minion::runtime::docker::DockerRuntime;
use clap::{Parser, Subcommand};

/// brine-minion: the agent on each Docker host.
///
/// It dials the brine master over mutual TLS (the host needs no inbound port), reports the
/// host's facts, and when the master runs a highstate it pulls the images of the host's roles
/// and creates, replaces or removes exactly the containers that changed.
#[derive(Debug, Parser)]
#[command(version = brine_daemon::VERSION, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    logging: LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enrol this host with a join token from `brine-master token create`.
    Join {
        /// The master's address, HOST:PORT.
        #[arg(long)]
        master: String,
        /// The join token; it pins the master's CA, so a wrong master is refused.
        #[arg(long, env = "BRINE_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// This host's id in the fleet; defaults to the host name.
        #[arg(long)]
        id: Option<String>,
        #[arg(long, env = "BRINE_MINION_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Prefix container names with this, so several minions can share one Docker engine.
        #[arg(long, default_value = "")]
        namespace: String,
        /// A label reported with the host's facts (KEY=VALUE); repeat, or separate with commas,
        /// for several.
        #[arg(long = "label", value_name = "KEY=VALUE", value_delimiter = ',', value_parser = brine_common::names::parse_label)]
        labels: Vec<(String, String)>,
        /// Dial the master from this local address (kept in minion.toml for the agent); by
        /// default the system chooses.
        #[arg(long, value_name = "IP")]
        source_address: Option<std::net::IpAddr>,
    },
    /// Show the configuration in effect: minion.toml with the BRINE_MINION_* environment
    /// variables applied (registry passwords redacted).
    Config {
        #[arg(long, env = "BRINE_MINION_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Run the agent: connect to the master and apply what it sends, reconnecting forever.
    Run {
        #[arg(long, env = "BRINE_MINION_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Override minion.toml's namespace.
        #[arg(long)]
        namespace: Option<String>,
    },
}

fn main() -> ExitCode {
    brine_proto::tls::install_crypto_provider();
    let cli = Cli::parse();
    brine_daemon::logging::init(cli.logging.log_format, "info");
    // One thread is plenty for one stream and one Docker engine, and keeps the agent small.
    let runtime = match entry::runtime(Threads::One) {
        Ok(runtime) => runtime,
        Err(status) => return status,
    };
    entry::exit_status(runtime.block_on(execute(cli.command)))
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Join {
            master,
            token,
            id,
            data_dir,
            namespace,
            labels,
            source_address,
        } => {
            let token: JoinToken = token.parse()?;
            validate_namespace(&namespace)?;
            let id = match id {
                Some(id) => id,
                None => {
                    sysinfo::System::host_name().context("read the host name (or give --id)")?
                }
            };
            let id = MinionId::new(id.clone()).with_context(|| format!("minion id {id:?}"))?;
            let data = DataDir::new(&data_dir);
            let request = JoinRequest {
                master,
                token,
                id: id.clone(),
                namespace,
                labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
                source_address,
            };
            join(&data, request).await?;
            println!(
                "joined as {id}; start the agent with:\n  brine-minion run --data-dir {}",
                data_dir.display()
            );
        }
        Command::Config { data_dir } => {
            let data = DataDir::new(&data_dir);
            let config = MinionConfig::load(&data)?;
            print!(
                "{}",
                config.describe(
                    &data,
                    &Overrides::from_environment(ENV_PREFIX, NOT_CONFIG_VARIABLES)
                )
            );
        }
        Command::Run {
            data_dir,
            namespace,
        } => {
            let data = DataDir::new(&data_dir);
            let mut config = MinionConfig::load(&data)?;
            if let Some(namespace) = namespace {
                config.namespace = namespace;
            }
            validate_namespace(&config.namespace)?;
            let docker = DockerRuntime::from_environment().with_logins(config.registries.clone());
            brine_minion::link::run(
                data,
                config,
                docker,
                brine_daemon::shutdown::signal_received(),
            )
            .await?;
        }
    }
    Ok(())
}

/// A namespace prefixes Docker container names, so it follows the rules of a container name.
fn validate_namespace(namespace: &str) -> anyhow::Result<()> {
    if !namespace.is_empty() {
        brine_common::names::ContainerName::new(namespace)
            .with_context(|| format!("namespace {namespace:?}"))?;
    }
    Ok(())
}
