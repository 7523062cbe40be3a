//! The `brine-proxy` binary: argument parsing around the library.

use brine_daemon::entry::{self, Threads};
use std::path::PathBuf;
use std::process::ExitCode;

use brine_daemon::logging::LogArgs;
use brine_proxy::ProxyConfig;
use brine_proxy::config::DEFAULT_CONFIG_FILE;
use clap::{Parser, Subcommand};
use futures::FutureExt;

/// brine-proxy: the host's proxy for the ports brine's containers publish.
///
/// It listens on published ports and forwards their traffic to the container generation each
/// route names, so the minion can switch a port to a new container and drain the old one
/// without dropping a connection. The minion configures it over a local unix socket.
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
    /// Run the proxy: serve the saved routes and the control socket until SIGTERM.
    Run {
        /// The configuration file (optional: every key has a default) [default:
        /// /etc/brine/proxy.toml].
        #[arg(long, env = "BRINE_PROXY_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    brine_daemon::logging::init(cli.logging.log_format, "info");
    let runtime = match entry::runtime(Threads::PerCore) {
        Ok(runtime) => runtime,
        Err(status) => return status,
    };
    let result = runtime.block_on(execute(cli.command));
    // Connections cut after stop_drain must not hold the exit up.
    runtime.shutdown_background();
    entry::exit_status(result)
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            // Polled once now, the signal handlers are installed before the control socket
            // exists: a SIGTERM right after start stops the proxy in order, not by default.
            let mut shutdown = Box::pin(brine_daemon::shutdown::signal_received());
            if shutdown.as_mut().now_or_never().is_some() {
                return Ok(());
            }
            let (path, required) = match config {
                Some(path) => (path, true),
                None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
            };
            let config = ProxyConfig::load(&path, required)?;
            let control = brine_proxy::control::bind(&config.control_socket).await?;
            brine_proxy::run(config, control, shutdown).await?;
        }
    }
    Ok(())
}
