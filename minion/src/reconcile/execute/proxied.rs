//! Containers whose published ports the host's proxy owns: pointing the proxy's routes at a
//! container generation, draining the previous one, and giving the ports back. Separate
//! because it is the one place the executor talks to the proxy.
//!
//! Which ports the proxy holds for a container is written on the container itself, in the
//! [`labels::PROXY`] label, so a later job (or a minion restarted since) knows what to drain
//! or release without asking the proxy or keeping state of its own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use brine_common::proxy_control::{ProxyMode, Route};
use brine_common::spec::{ContainerSpec, DEFAULT_DRAIN_MS, PortMapping};

use super::Executor;
use crate::runtime::{ContainerRuntime, ObservedContainer, labels};

/// One port the proxy holds for a container: where it listens, and the container's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProxiedPort {
    pub listen: SocketAddr,
    pub container_port: u16,
}

impl ProxiedPort {
    fn of(port: &PortMapping) -> Option<Self> {
        Some(Self {
            listen: SocketAddr::new(
                port.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                port.host_port?,
            ),
            container_port: port.container_port,
        })
    }
}

/// The ports the proxy carries for `spec`: none unless its proxy is on.
pub(crate) fn proxied_ports(spec: &ContainerSpec) -> Vec<ProxiedPort> {
    if spec.proxy.is_none() {
        return vec![];
    }
    spec.ports.iter().filter_map(ProxiedPort::of).collect()
}

/// The label value that records `ports` on the container: `LISTEN>PORT`, comma-separated.
pub(crate) fn proxy_label(ports: &[ProxiedPort]) -> String {
    ports
        .iter()
        .map(|p| format!("{}>{}", p.listen, p.container_port))
        .collect::<Vec<_>>()
        .join(",")
}

/// The ports the proxy holds for a container brine created, read from its label. A label that
/// does not read (written by hand) counts as none: such a container is only ever stopped.
pub(crate) fn held_ports(observed: &ObservedContainer) -> Vec<ProxiedPort> {
    let Some(label) = observed.label(labels::PROXY) else {
        return vec![];
    };
    label
        .split(',')
        .filter_map(|entry| {
            let (listen, port) = entry.split_once('>')?;
            Some(ProxiedPort {
                listen: listen.parse().ok()?,
                container_port: port.parse().ok()?,
            })
        })
        .collect()
}

/// The held ports as Docker would publish them, so a replacement sees that its successor,
/// published by Docker, needs them back first.
pub(crate) fn held_as_published(held: &[ProxiedPort]) -> Vec<PortMapping> {
    held.iter()
        .map(|p| PortMapping {
            host_ip: Some(p.listen.ip()).filter(|ip| !ip.is_unspecified()),
            host_port: Some(p.listen.port()),
            container_port: p.container_port,
            protocol: brine_common::spec::Protocol::Tcp,
        })
        .collect()
}

impl<R: ContainerRuntime> Executor<R> {
    /// Points the proxy's routes for `spec` at the container `id`. All or nothing: when one
    /// route fails, those already switched go back to what they were.
    pub(crate) async fn route_to(&self, spec: &ContainerSpec, id: &str) -> Result<(), String> {
        let Some(proxy) = &spec.proxy else {
            return Ok(());
        };
        let ip = self.address_of(id).await?;
        let owner = format!("{}/{}", self.namespace, spec.name);
        let mut switched: Vec<(SocketAddr, Option<SocketAddr>)> = vec![];
        for port in proxied_ports(spec) {
            let route = Route {
                listen: port.listen,
                backend: SocketAddr::new(ip, port.container_port),
                mode: proxy.mode,
                owner: owner.clone(),
            };
            match self.proxy.route(route).await {
                Ok(previous) => switched.push((port.listen, previous)),
                Err(err) => {
                    self.undo_routes(&owner, proxy.mode, switched).await;
                    return Err(format!(
                        "route port {} through the proxy: {err}",
                        port.listen
                    ));
                }
            }
        }
        Ok(())
    }

    /// Puts routes back to their previous backends, or gives back those that had none.
    async fn undo_routes(
        &self,
        owner: &str,
        mode: ProxyMode,
        switched: Vec<(SocketAddr, Option<SocketAddr>)>,
    ) {
        for (listen, previous) in switched {
            let undone = match previous {
                Some(backend) => self
                    .proxy
                    .route(Route {
                        listen,
                        backend,
                        mode,
                        owner: owner.to_owned(),
                    })
                    .await
                    .map(|_| ()),
                None => self.proxy.release(listen, Duration::ZERO).await,
            };
            if let Err(err) = undone {
                tracing::error!(%listen, "cannot undo a proxy route: {err}");
            }
        }
    }

    /// Lets the traffic in flight to `old` end (at most `drain`) after its ports were switched
    /// to its successor. A proxy that cannot drain is logged and the replacement goes on: the
    /// switch already took the new traffic away from `old`.
    pub(crate) async fn drain(&self, old: &ObservedContainer, drain: Duration) {
        let held = held_ports(old);
        if held.is_empty() {
            return;
        }
        let ip = match self.address_of(&old.id).await {
            Ok(ip) => ip,
            Err(err) => {
                tracing::warn!(container = %old.docker_name, "cannot drain the previous container: {err}");
                return;
            }
        };
        for port in held {
            let backend = SocketAddr::new(ip, port.container_port);
            match self.proxy.drain(port.listen, backend, drain).await {
                Ok(drained) if drained.cut > 0 => tracing::warn!(
                    container = %old.docker_name,
                    listen = %port.listen,
                    cut = drained.cut,
                    "the drain timed out; the rest of the previous container's traffic was cut"
                ),
                Ok(drained) => tracing::debug!(
                    container = %old.docker_name,
                    listen = %port.listen,
                    waited_ms = drained.waited_ms,
                    "drained"
                ),
                Err(err) => tracing::warn!(
                    container = %old.docker_name,
                    listen = %port.listen,
                    "cannot drain the previous container: {err}"
                ),
            }
        }
    }

    /// Gives back the ports the proxy holds for `old` (a container that goes away or is
    /// replaced by one Docker publishes). The traffic in flight ends within the default drain
    /// time, the proxy seeing to it.
    pub(crate) async fn release(&self, old: &ObservedContainer) -> Result<(), String> {
        self.release_ports(held_ports(old)).await
    }

    /// Gives back the ports the proxy holds for `old` that its successor `spec` does not take
    /// over, so that no route points at a container that is going away. A failure is logged:
    /// the successor already serves.
    pub(crate) async fn release_unclaimed(&self, old: &ObservedContainer, spec: &ContainerSpec) {
        let claimed = proxied_ports(spec);
        let unclaimed = held_ports(old)
            .into_iter()
            .filter(|port| !claimed.iter().any(|c| c.listen == port.listen));
        for port in unclaimed {
            if let Err(err) = self.release_ports(vec![port]).await {
                tracing::warn!(container = %old.docker_name, "{err}");
            }
        }
    }

    async fn release_ports(&self, ports: Vec<ProxiedPort>) -> Result<(), String> {
        let drain = Duration::from_millis(DEFAULT_DRAIN_MS.into());
        for port in ports {
            self.proxy
                .release(port.listen, drain)
                .await
                .map_err(|err| format!("give port {} back from the proxy: {err}", port.listen))?;
        }
        Ok(())
    }

    /// Points the proxy back at `old`, restored after its successor failed, for the ports it
    /// held.
    pub(crate) async fn reroute(&self, old: &ObservedContainer) -> Result<(), String> {
        let held = held_ports(old);
        if held.is_empty() {
            return Ok(());
        }
        let mode = match old.label(labels::PROXY_MODE) {
            Some("http") => ProxyMode::Http,
            _ => ProxyMode::Tcp,
        };
        let owner = old
            .label(labels::CONTAINER)
            .map(|name| format!("{}/{name}", self.namespace))
            .unwrap_or_else(|| old.docker_name.clone());
        let ip = self.address_of(&old.id).await?;
        for port in held {
            let route = Route {
                listen: port.listen,
                backend: SocketAddr::new(ip, port.container_port),
                mode,
                owner: owner.clone(),
            };
            self.proxy
                .route(route)
                .await
                .map_err(|err| format!("route port {} back to it: {err}", port.listen))?;
        }
        Ok(())
    }

    async fn address_of(&self, id: &str) -> Result<IpAddr, String> {
        let status = self
            .runtime
            .inspect(id)
            .await
            .map_err(|err| format!("inspect the container: {err}"))?;
        status
            .ip_address
            .ok_or_else(|| "the container has no IP address for the proxy to reach".into())
    }
}
