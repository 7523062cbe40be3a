//! brine-proxy: the host's proxy for published ports.
//!
//! A container that publishes a host port used to be replaced by stopping it and starting the
//! next one, and requests in between failed. Instead, brine-proxy owns such ports: it listens
//! on them and forwards each connection ([`tcp`]) or each HTTP/1.1 request ([`http`]) to the
//! private address (bridge IP and container port) of the container generation its route
//! names. The minion configures it over a local unix socket ([`control`], the protocol is
//! `brine_common::proxy_control`): it points a port's route at a new generation once that one
//! is healthy, asks the proxy to drain the previous one (wait until nothing is in flight to it,
//! cut what remains at a timeout), and only then stops the old container. The route table
//! ([`routes`]) counts what is in flight per generation.
//!
//! It is a process of its own, with its own systemd unit, so that restarting or upgrading the
//! minion drops no connection; and it survives its own restarts too: routes are saved after
//! every change ([`state`]), and under systemd each listening socket is handed to the unit's
//! file-descriptor store ([`systemd`]) and inherited again at start ([`listener`]), so the
//! ports stay open and new connections wait in the backlog while the proxy restarts.

pub mod config;
pub mod control;
pub mod http;
pub mod listener;
mod log_limit;
pub mod proxy;
pub mod routes;
pub mod state;
pub mod systemd;
pub mod tcp;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::ProxyConfig;

use crate::log_limit::RateLimitedLog;
use crate::proxy::Proxy;

/// How often a warning that can come with every connection is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("state file {path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("control socket {path}: {message}")]
    Control { path: PathBuf, message: String },
}

/// What every connection's task needs.
#[derive(Debug)]
pub struct Shared {
    pub table: routes::Table,
    pub clients: http::Clients,
    /// Every connection, so a stopping proxy can wait for them.
    pub tracker: TaskTracker,
    pub connect_timeout: Duration,
    connect_failures: RateLimitedLog,
    accept_failures: RateLimitedLog,
}

impl Shared {
    fn new(config: &ProxyConfig) -> Self {
        Self {
            table: routes::Table::default(),
            clients: http::Clients::new(config.connect_timeout),
            tracker: TaskTracker::new(),
            connect_timeout: config.connect_timeout,
            connect_failures: RateLimitedLog::new(WARN_EVERY),
            accept_failures: RateLimitedLog::new(WARN_EVERY),
        }
    }
}

/// Runs the proxy until `shutdown` resolves: restores the saved routes (on inherited sockets
/// where there are some), serves the control socket `control` (see [`control::bind`]), and at
/// the end stops accepting and lets the traffic in flight finish, up to `stop_drain`.
pub async fn run(
    config: ProxyConfig,
    control: UnixListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProxyError> {
    // Polled once before anything is served: a shutdown future that installs signal handlers
    // when first polled has them in place from here on.
    let mut shutdown = std::pin::pin!(shutdown);
    if shutdown.as_mut().now_or_never().is_some() {
        return Ok(());
    }
    let saved = state::load(&config.state_file)?;
    let shared = Arc::new(Shared::new(&config));
    let proxy = Arc::new(Proxy::new(
        Arc::clone(&shared),
        config.state_file.clone(),
        config.max_connections,
    ));
    proxy.restore(saved, listener::inherited()).await;

    let control_stop = CancellationToken::new();
    let control_task = tokio::spawn(control::serve(
        control,
        Arc::clone(&proxy),
        control_stop.clone(),
    ));
    brine_daemon::systemd::ready(&proxy.status_line());
    tracing::info!(
        control = %config.control_socket.display(),
        "brine-proxy {} ready: {}",
        brine_daemon::VERSION,
        proxy.status_line()
    );

    shutdown.await;
    brine_daemon::systemd::stopping("stopping: letting the traffic in flight finish");
    tracing::info!(
        "stopping: no new connections; waiting up to {} for those in flight",
        humantime::format_duration(config.stop_drain)
    );
    control_stop.cancel();
    proxy.stop().await;
    shared.tracker.close();
    if tokio::time::timeout(config.stop_drain, shared.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = shared.tracker.len(),
            "connections still open after stop_drain are cut"
        );
    }
    let _ = control_task.await;
    tracing::info!("stopped");
    Ok(())
}
