//! The proxy's operations, as the control socket asks for them: route, drain, release, list;
//! and its listeners, restored at start and stopped at the end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brine_common::proxy_control::{ControlRequest, ControlResponse, Route};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Shared, listener, routes, state, systemd};

/// The longest owner name accepted (`NAMESPACE/CONTAINER` is far shorter).
const MAX_OWNER_BYTES: usize = 512;

/// One listening socket's accept loop.
struct ListenerTask {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

pub struct Proxy {
    shared: Arc<Shared>,
    /// The listeners, by address. Its lock also orders the changes of routes and their saving.
    listeners: Mutex<HashMap<SocketAddr, ListenerTask>>,
    state_file: PathBuf,
    max_connections: usize,
    /// Cancelled when the proxy stops: every accept loop ends, HTTP connections close once
    /// their request in flight is answered.
    stopping: CancellationToken,
}

impl Proxy {
    pub fn new(shared: Arc<Shared>, state_file: PathBuf, max_connections: usize) -> Self {
        Self {
            shared,
            listeners: Mutex::default(),
            state_file,
            max_connections,
            stopping: CancellationToken::new(),
        }
    }

    /// Carries out one request.
    pub async fn handle(&self, request: ControlRequest) -> ControlResponse {
        let answered = match request {
            ControlRequest::Route { route } => self.route(route).await,
            ControlRequest::Drain {
                listen,
                backend,
                timeout_ms,
            } => self.drain(listen, backend, timeout_ms).await,
            ControlRequest::Release { listen, timeout_ms } => {
                self.release(listen, timeout_ms).await;
                Ok(ControlResponse::Released)
            }
            ControlRequest::List => Ok(ControlResponse::Routes {
                routes: self.shared.table.status(),
            }),
        };
        answered.unwrap_or_else(|message| ControlResponse::Error { message })
    }

    async fn route(&self, route: Route) -> Result<ControlResponse, String> {
        validate(&route)?;
        let mut listeners = self.listeners.lock().await;
        let listen = route.listen;
        let existing = self.shared.table.check(&route).map_err(|e| e.to_string())?;
        if existing.is_none() {
            let socket = listener::bind(listen)
                .map_err(|err| format!("cannot listen on {listen}: {err}"))?;
            self.shared
                .table
                .set(route.clone())
                .map_err(|e| e.to_string())?;
            self.start_listener(&mut listeners, listen, socket);
        } else {
            self.shared
                .table
                .set(route.clone())
                .map_err(|e| e.to_string())?;
        }
        self.save();
        tracing::info!(
            %listen,
            backend = %route.backend,
            mode = route.mode.as_str(),
            owner = %route.owner,
            previous = ?existing,
            "routed"
        );
        Ok(ControlResponse::Routed { previous: existing })
    }

    async fn drain(
        &self,
        listen: SocketAddr,
        backend: SocketAddr,
        timeout_ms: u64,
    ) -> Result<ControlResponse, String> {
        let traffic = self
            .shared
            .table
            .draining(listen, backend)
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        let cut = routes::drain_all(&traffic, Duration::from_millis(timeout_ms)).await;
        self.shared.table.forget(listen, &traffic);
        if !self.shared.table.is_current(backend) {
            self.shared.clients.forget(backend);
        }
        let waited_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        if cut > 0 {
            tracing::warn!(%listen, %backend, cut, waited_ms, "drained, cutting what outlasted the timeout");
        } else {
            tracing::info!(%listen, %backend, waited_ms, "drained");
        }
        Ok(ControlResponse::Drained { cut, waited_ms })
    }

    /// Closes the listener of `listen` (also systemd's copy) and forgets its route; its traffic
    /// drains in the background. Releasing a port not routed changes nothing.
    async fn release(&self, listen: SocketAddr, timeout_ms: u64) {
        let mut listeners = self.listeners.lock().await;
        let removed = self.shared.table.remove(listen);
        if let Some(task) = listeners.remove(&listen) {
            task.stop.cancel();
            let _ = task.task.await;
            systemd::remove_listener(listen).await;
        }
        let Some((route, traffic)) = removed else {
            return;
        };
        self.save();
        tracing::info!(%listen, owner = %route.owner, "released");
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let cut = routes::drain_all(&traffic, Duration::from_millis(timeout_ms)).await;
            for t in &traffic {
                if !shared.table.is_current(t.backend()) {
                    shared.clients.forget(t.backend());
                }
            }
            if cut > 0 {
                tracing::warn!(%listen, cut, "released port drained, cutting what outlasted the timeout");
            }
        });
    }

    /// Serves the routes saved by a previous run, on the sockets it left to systemd where
    /// there are some; inherited sockets no route needs are closed.
    pub async fn restore(
        &self,
        saved: Vec<Route>,
        mut inherited: HashMap<SocketAddr, std::net::TcpListener>,
    ) {
        let mut listeners = self.listeners.lock().await;
        for route in saved {
            let listen = route.listen;
            if let Err(message) = validate(&route) {
                tracing::error!(%listen, "saved route dropped: {message}");
                continue;
            }
            if self.shared.table.mode(listen).is_some() {
                tracing::error!(%listen, "saved route dropped: the port is routed twice");
                continue;
            }
            let (socket, how) = match inherited.remove(&listen) {
                Some(socket) => (listener::adopt(socket), "inherited"),
                None => (listener::bind(listen), "bound"),
            };
            match socket {
                Ok(socket) => {
                    if let Err(err) = self.shared.table.set(route.clone()) {
                        tracing::error!(%listen, "saved route dropped: {err}");
                        continue;
                    }
                    self.start_listener(&mut listeners, listen, socket);
                    tracing::info!(
                        %listen,
                        backend = %route.backend,
                        mode = route.mode.as_str(),
                        owner = %route.owner,
                        "restored route ({how} socket)"
                    );
                }
                Err(err) => {
                    tracing::error!(%listen, owner = %route.owner, "saved route dropped: cannot listen: {err}");
                }
            }
        }
        for (address, socket) in inherited {
            tracing::info!(%address, "closing an inherited socket no route needs");
            drop(socket);
            systemd::remove_listener(address).await;
        }
        self.save();
    }

    /// Stops every accept loop. The sockets stay in systemd's store (under systemd), so
    /// connections wait in their backlog for the next run.
    pub async fn stop(&self) {
        self.stopping.cancel();
        let mut listeners = self.listeners.lock().await;
        for (_, task) in listeners.drain() {
            let _ = task.task.await;
        }
    }

    /// A line for `systemctl status`.
    pub fn status_line(&self) -> String {
        let routes = self.shared.table.routes();
        match routes.len() {
            1 => "1 port routed".to_owned(),
            n => format!("{n} ports routed"),
        }
    }

    fn start_listener(
        &self,
        listeners: &mut HashMap<SocketAddr, ListenerTask>,
        listen: SocketAddr,
        socket: TcpListener,
    ) {
        systemd::store_listener(listen, &socket);
        let stop = self.stopping.child_token();
        let task = tokio::spawn(listener::accept_loop(
            Arc::clone(&self.shared),
            listen,
            socket,
            self.max_connections,
            stop.clone(),
        ));
        listeners.insert(listen, ListenerTask { stop, task });
    }

    /// Writes the routes to the state file. A failure is logged: the routes are in effect,
    /// and only a restart before the next successful save would lose them.
    fn save(&self) {
        if let Err(err) = state::save(&self.state_file, &self.shared.table.routes()) {
            tracing::error!("{err}");
        }
        brine_daemon::systemd::status(&self.status_line());
    }
}

/// Refuses routes that cannot work.
fn validate(route: &Route) -> Result<(), String> {
    if route.listen.port() == 0 {
        return Err(format!(
            "listen {}: port 0 is not a port to publish",
            route.listen
        ));
    }
    if route.backend.port() == 0 || route.backend.ip().is_unspecified() {
        return Err(format!(
            "backend {} is not an address to connect to",
            route.backend
        ));
    }
    if route.backend == route.listen {
        return Err(format!("{} cannot be routed to itself", route.listen));
    }
    if route.owner.trim().is_empty() {
        return Err("the route has no owner".to_owned());
    }
    if route.owner.len() > MAX_OWNER_BYTES {
        return Err(format!("the owner is longer than {MAX_OWNER_BYTES} bytes"));
    }
    Ok(())
}
