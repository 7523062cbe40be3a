//! The route table: for each listen address its route (current backend, mode, owner), and for
//! each generation of a backend behind it the traffic in flight.
//!
//! Traffic enters through [`Table::enter`], which picks the current backend and counts the
//! connection (tcp) or request (http) in the same critical section, so a switch never lets a
//! new one slip to the previous backend. Each generation of a backend has its own counter and
//! cancellation token: switching away from a backend and back later starts a new generation,
//! and draining the old one never cuts traffic of the new.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use brine_common::proxy_control::{BackendInFlight, ProxyMode, Route, RouteStatus};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a drain that cut its traffic waits for the cut connections to close.
const CUT_GRACE: Duration = Duration::from_secs(1);

/// Why the table refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("{listen} is routed for {owner}; only {owner} can change or release it")]
    Owned { listen: SocketAddr, owner: String },
    #[error("no route listens on {0}")]
    NoRoute(SocketAddr),
    #[error(
        "{backend} is the current backend of {listen}: route {listen} to another backend before draining it"
    )]
    Current {
        listen: SocketAddr,
        backend: SocketAddr,
    },
}

/// The traffic of one generation of a backend through one listener.
#[derive(Debug)]
pub struct Traffic {
    backend: SocketAddr,
    in_flight: watch::Sender<u64>,
    cut: CancellationToken,
}

impl Traffic {
    fn new(backend: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            backend,
            in_flight: watch::Sender::new(0),
            cut: CancellationToken::new(),
        })
    }

    pub fn backend(&self) -> SocketAddr {
        self.backend
    }

    /// Connections or requests open now.
    pub fn in_flight(&self) -> u64 {
        *self.in_flight.borrow()
    }

    fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.send_modify(|n| *n += 1);
        InFlight {
            traffic: Arc::clone(self),
        }
    }

    /// Waits until nothing is in flight, at most `timeout`; then cuts what remains and
    /// answers how many were cut (after giving them a moment to close).
    pub async fn drain(&self, timeout: Duration) -> u64 {
        let mut count = self.in_flight.subscribe();
        if tokio::time::timeout(timeout, count.wait_for(|n| *n == 0))
            .await
            .is_ok()
        {
            return 0;
        }
        let cut = self.in_flight();
        self.cut.cancel();
        let _ = tokio::time::timeout(CUT_GRACE, count.wait_for(|n| *n == 0)).await;
        cut
    }
}

/// Drains every generation in `traffic` at once; answers how many were cut in all.
pub async fn drain_all(traffic: &[Arc<Traffic>], timeout: Duration) -> u64 {
    futures::future::join_all(traffic.iter().map(|t| t.drain(timeout)))
        .await
        .into_iter()
        .sum()
}

/// One connection or request in flight, counted until dropped.
#[derive(Debug)]
pub struct InFlight {
    traffic: Arc<Traffic>,
}

impl InFlight {
    pub fn backend(&self) -> SocketAddr {
        self.traffic.backend
    }

    /// Cancelled when a drain's timeout cuts this generation's traffic.
    pub fn cut(&self) -> &CancellationToken {
        &self.traffic.cut
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.traffic
            .in_flight
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[derive(Debug)]
struct Entry {
    route: Route,
    current: Arc<Traffic>,
    /// Previous generations that had traffic in flight when last looked at.
    previous: Vec<Arc<Traffic>>,
}

/// Every route, by listen address.
#[derive(Debug, Default)]
pub struct Table {
    entries: Mutex<HashMap<SocketAddr, Entry>>,
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Entry>> {
        // Nothing under the lock can panic halfway through a change.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `route` may be set: `Ok(None)` for a new listen address, `Ok(Some(current
    /// backend))` for one of the same owner.
    pub fn check(&self, route: &Route) -> Result<Option<SocketAddr>, RouteError> {
        match self.lock().get(&route.listen) {
            None => Ok(None),
            Some(entry) if entry.route.owner == route.owner => Ok(Some(entry.route.backend)),
            Some(entry) => Err(RouteError::Owned {
                listen: route.listen,
                owner: entry.route.owner.clone(),
            }),
        }
    }

    /// Sets `route`: new traffic goes to its backend from now on. Answers the backend it
    /// replaced, if any.
    pub fn set(&self, route: Route) -> Result<Option<SocketAddr>, RouteError> {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(&route.listen) else {
            let current = Traffic::new(route.backend);
            entries.insert(
                route.listen,
                Entry {
                    route,
                    current,
                    previous: Vec::new(),
                },
            );
            return Ok(None);
        };
        if entry.route.owner != route.owner {
            return Err(RouteError::Owned {
                listen: route.listen,
                owner: entry.route.owner.clone(),
            });
        }
        let previous = entry.route.backend;
        if previous != route.backend {
            let old = std::mem::replace(&mut entry.current, Traffic::new(route.backend));
            entry.previous.retain(|t| t.in_flight() > 0);
            entry.previous.push(old);
        }
        entry.route = route;
        Ok(Some(previous))
    }

    /// The mode new connections to `listen` are served in.
    pub fn mode(&self, listen: SocketAddr) -> Option<ProxyMode> {
        self.lock().get(&listen).map(|e| e.route.mode)
    }

    /// Counts a connection or request to the current backend of `listen`.
    pub fn enter(&self, listen: SocketAddr) -> Option<InFlight> {
        self.lock().get(&listen).map(|e| e.current.enter())
    }

    /// The generations of `backend` behind `listen` that a drain waits for (none when nothing
    /// was routed to it there). Refuses the current backend.
    pub fn draining(
        &self,
        listen: SocketAddr,
        backend: SocketAddr,
    ) -> Result<Vec<Arc<Traffic>>, RouteError> {
        let entries = self.lock();
        let entry = entries.get(&listen).ok_or(RouteError::NoRoute(listen))?;
        if entry.route.backend == backend {
            return Err(RouteError::Current { listen, backend });
        }
        Ok(entry
            .previous
            .iter()
            .filter(|t| t.backend == backend)
            .cloned()
            .collect())
    }

    /// Forgets drained generations.
    pub fn forget(&self, listen: SocketAddr, drained: &[Arc<Traffic>]) {
        if let Some(entry) = self.lock().get_mut(&listen) {
            entry
                .previous
                .retain(|t| !drained.iter().any(|d| Arc::ptr_eq(d, t)));
        }
    }

    /// Removes the route of `listen`; answers it with every generation still to drain.
    pub fn remove(&self, listen: SocketAddr) -> Option<(Route, Vec<Arc<Traffic>>)> {
        self.lock().remove(&listen).map(|entry| {
            let mut traffic = entry.previous;
            traffic.push(entry.current);
            (entry.route, traffic)
        })
    }

    /// Whether `backend` is the current backend of any route.
    pub fn is_current(&self, backend: SocketAddr) -> bool {
        self.lock().values().any(|e| e.route.backend == backend)
    }

    /// Every route, by listen address.
    pub fn routes(&self) -> Vec<Route> {
        let mut routes: Vec<Route> = self.lock().values().map(|e| e.route.clone()).collect();
        routes.sort_by_key(|r| r.listen);
        routes
    }

    /// Every route with its traffic in flight.
    pub fn status(&self) -> Vec<RouteStatus> {
        let mut status: Vec<RouteStatus> = self
            .lock()
            .values()
            .map(|e| {
                let mut draining: Vec<BackendInFlight> = Vec::new();
                for t in e.previous.iter().filter(|t| t.in_flight() > 0) {
                    match draining.iter_mut().find(|d| d.backend == t.backend) {
                        Some(d) => d.in_flight += t.in_flight(),
                        None => draining.push(BackendInFlight {
                            backend: t.backend,
                            in_flight: t.in_flight(),
                        }),
                    }
                }
                RouteStatus {
                    route: e.route.clone(),
                    in_flight: e.current.in_flight(),
                    draining,
                }
            })
            .collect();
        status.sort_by_key(|s| s.route.listen);
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn route(backend: u16, owner: &str) -> Route {
        Route {
            listen: addr(80),
            backend: addr(backend),
            mode: ProxyMode::Http,
            owner: owner.into(),
        }
    }

    #[test]
    fn a_switch_sends_new_traffic_to_the_new_backend() {
        let table = Table::default();
        assert_eq!(table.set(route(1, "a/web")), Ok(None));
        let old = table.enter(addr(80)).expect("routed");
        assert_eq!(old.backend(), addr(1));
        assert_eq!(table.set(route(2, "a/web")), Ok(Some(addr(1))));
        let new = table.enter(addr(80)).expect("routed");
        assert_eq!(new.backend(), addr(2));

        let status = table.status();
        assert_eq!(status[0].in_flight, 1);
        assert_eq!(
            status[0].draining,
            vec![BackendInFlight {
                backend: addr(1),
                in_flight: 1
            }]
        );
        drop(old);
        assert!(table.status()[0].draining.is_empty());
    }

    #[test]
    fn another_owner_cannot_take_a_port() {
        let table = Table::default();
        table.set(route(1, "a/web")).expect("new");
        let err = table.set(route(2, "b/api")).expect_err("owned");
        assert_eq!(
            err.to_string(),
            "127.0.0.1:80 is routed for a/web; only a/web can change or release it"
        );
        assert_eq!(table.check(&route(2, "b/api")), Err(err));
        assert_eq!(table.check(&route(2, "a/web")), Ok(Some(addr(1))));
        assert_eq!(table.routes(), vec![route(1, "a/web")]);
    }

    #[test]
    fn the_current_backend_cannot_be_drained() {
        let table = Table::default();
        table.set(route(1, "a/web")).expect("new");
        assert!(matches!(
            table.draining(addr(80), addr(1)),
            Err(RouteError::Current { .. })
        ));
        assert_eq!(
            table.draining(addr(81), addr(1)).map(|t| t.len()),
            Err(RouteError::NoRoute(addr(81)))
        );
        assert_eq!(table.draining(addr(80), addr(9)).map(|t| t.len()), Ok(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_waits_for_the_traffic_to_end() {
        let table = Table::default();
        table.set(route(1, "a/web")).expect("new");
        let flight = table.enter(addr(80)).expect("routed");
        table.set(route(2, "a/web")).expect("switch");
        let traffic = table.draining(addr(80), addr(1)).expect("previous");
        assert_eq!(traffic.len(), 1);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(flight);
        });
        assert_eq!(drain_all(&traffic, Duration::from_secs(5)).await, 0);
        table.forget(addr(80), &traffic);
        assert!(table.draining(addr(80), addr(1)).expect("ok").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_cuts_what_outlasts_its_timeout_and_only_that_generation() {
        let table = Table::default();
        table.set(route(1, "a/web")).expect("new");
        let old = table.enter(addr(80)).expect("routed");
        table.set(route(2, "a/web")).expect("switch");
        table.set(route(1, "a/web")).expect("switch back");
        let new = table.enter(addr(80)).expect("routed");
        table.set(route(2, "a/web")).expect("switch again");
        // Both generations of backend 1 are drained, the old one holding traffic.
        let traffic = table.draining(addr(80), addr(1)).expect("previous");
        let waiter = {
            let cut = old.cut().clone();
            tokio::spawn(async move {
                cut.cancelled().await;
                drop(old);
            })
        };
        drop(new);
        assert_eq!(drain_all(&traffic, Duration::from_millis(100)).await, 1);
        waiter.await.expect("the cut traffic ends");
        // The generation now current was not cut.
        assert!(!table.enter(addr(80)).expect("routed").cut().is_cancelled());
    }

    #[test]
    fn a_removed_route_hands_over_all_its_traffic() {
        let table = Table::default();
        table.set(route(1, "a/web")).expect("new");
        let _old = table.enter(addr(80)).expect("routed");
        table.set(route(2, "a/web")).expect("switch");
        let (removed, traffic) = table.remove(addr(80)).expect("routed");
        assert_eq!(removed, route(2, "a/web"));
        assert_eq!(traffic.len(), 2);
        assert!(table.enter(addr(80)).is_none());
        assert!(!table.is_current(addr(2)));
    }
}
