//! The `brine-fleet-sim` binary: argument parsing around the library.

use brine_daemon::entry::{self, Threads};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use brine_common::token::JoinToken;
use brine_daemon::logging::LogFormat;
use brine_fleet_sim::fleet::Fleet;
use brine_fleet_sim::hosts::{enrol, fleet};
use brine_fleet_sim::runtime::Behaviour;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// brine-fleet-sim: many brine hosts in one process, for scale benchmarks.
///
/// Every simulated host is a real minion (its own certificate, its own mutual-TLS link to the
/// master, the agent's own code) whose containers live in memory instead of Docker. `enrol`
/// joins them with a join token; `run` links them all and prints one JSON line per event on
/// standard output: when every host is linked, when some are not any more, and a count every
/// `--report-every`.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join the hosts that have not joined yet, through the master's Join with a join token;
    /// prints one JSON line with what it took.
    Enrol {
        #[command(flatten)]
        hosts: HostArgs,
        /// The master's address, HOST:PORT.
        #[arg(long)]
        master: String,
        /// A join token with uses for every host (`brine-master token create --uses N`).
        #[arg(long, env = "BRINE_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// Joins under way at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Run every host until interrupted (SIGINT or SIGTERM).
    Run {
        #[command(flatten)]
        hosts: HostArgs,
        /// How long pulling an image the host does not have takes.
        #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
        pull_delay: Duration,
        /// How long creating, starting, stopping or removing a container takes.
        #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
        call_delay: Duration,
        /// The share of pulls and container changes that fail, from 0 to 1.
        #[arg(long, default_value_t = 0.0, value_parser = failure_rate)]
        failure_rate: f64,
        /// How often to print the count of linked hosts.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        report_every: Duration,
    },
}

#[derive(Debug, Args)]
struct HostArgs {
    /// How many hosts.
    #[arg(long)]
    hosts: usize,
    /// Where the hosts' data directories are (one per host, as `brine-minion join` writes it).
    #[arg(long)]
    data_dir: PathBuf,
    /// Host ids are this prefix and a five-digit number from 00001.
    #[arg(long, default_value = "sim-")]
    prefix: String,
    /// Spread the hosts' connections over this many loopback source addresses (127.0.1.1 and
    /// up), as hosts of a real fleet come from many addresses; 0 lets the system choose.
    #[arg(long, default_value_t = 32)]
    sources: u8,
}

fn failure_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.parse().map_err(|err| format!("{err}"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err("must be between 0 and 1".into())
    }
}

fn main() -> ExitCode {
    brine_proto::tls::install_crypto_provider();
    let cli = Cli::parse();
    // Thousands of minions log the same thing at once: only errors unless RUST_LOG says more.
    brine_daemon::logging::init(LogFormat::Plain, "error");
    let runtime = match entry::runtime(Threads::PerCore) {
        Ok(runtime) => runtime,
        Err(status) => return status,
    };
    entry::exit_status(runtime.block_on(execute(cli.command)))
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Enrol {
            hosts,
            master,
            token,
            concurrency,
        } => {
            let token: JoinToken = token.parse()?;
            let hosts = fleet(&hosts.data_dir, &hosts.prefix, hosts.hosts, hosts.sources)?;
            let enrolment = enrol(&hosts, &master, &token, concurrency).await?;
            println!(
                "{}",
                serde_json::json!({
                    "event": "enrolled",
                    "joined": enrolment.joined,
                    "already": enrolment.already,
                    "refused": enrolment.refused,
                    "seconds": enrolment.seconds,
                })
            );
        }
        Command::Run {
            hosts,
            pull_delay,
            call_delay,
            failure_rate,
            report_every,
        } => {
            let hosts = fleet(&hosts.data_dir, &hosts.prefix, hosts.hosts, hosts.sources)?;
            let behaviour = Behaviour {
                pull_delay,
                call_delay,
                failure_rate,
            };
            let shutdown = CancellationToken::new();
            let fleet = Fleet::start(&hosts, behaviour, &shutdown).context("start the hosts")?;
            let signal = shutdown.clone();
            tokio::spawn(async move {
                brine_daemon::shutdown::signal_received().await;
                signal.cancel();
            });
            fleet
                .report(std::io::stdout(), report_every, shutdown)
                .await?;
        }
    }
    Ok(())
}
