//! The local protocol between a minion and `brine-proxy`, the host's proxy for published
//! ports: over a unix socket, one JSON object per line, each request answered by one line.
//!
//! The proxy owns a host port for as long as a route names it; the minion points the route at
//! a container generation's private address, switches it to the next generation once that one
//! is healthy, and asks the proxy to drain the previous one before it stops it.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Where the proxy listens for its minion unless configured otherwise.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/brine-proxy/control.sock";

/// The longest line either side accepts; a longer one is refused, not buffered.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// How the proxy carries a port's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyMode {
    /// Whole TCP connections, any protocol: a switch applies to new connections, and a
    /// connection drains by ending.
    #[default]
    Tcp,
    /// HTTP/1.1 requests: a switch applies to the next request, also on a kept-alive
    /// connection; upgraded connections (websockets) and streamed responses (SSE) drain by
    /// ending.
    Http,
}

impl ProxyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Tcp => "tcp",
            ProxyMode::Http => "http",
        }
    }
}

/// One host port the proxy owns, and where its traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The published address: `0.0.0.0:80`, `127.0.0.1:8080`, `[::]:443`.
    pub listen: SocketAddr,
    /// The container generation that gets new traffic.
    pub backend: SocketAddr,
    pub mode: ProxyMode,
    /// Who set the route, `NAMESPACE/CONTAINER`: another owner cannot take the port over.
    pub owner: String,
}

/// What a minion asks of the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Sends new traffic arriving at `route.listen` to `route.backend`, listening first if
    /// the port is new. Traffic in flight to a previous backend carries on until drained.
    Route { route: Route },
    /// Answers once nothing is in flight to `backend` through `listen`, or after `timeout_ms`,
    /// when what remains is cut.
    Drain {
        listen: SocketAddr,
        backend: SocketAddr,
        timeout_ms: u64,
    },
    /// Stops listening on `listen` at once (the port is free when this is answered) and drains
    /// what is in flight, cutting what remains after `timeout_ms`, in the background.
    Release { listen: SocketAddr, timeout_ms: u64 },
    /// Every route, with what is in flight.
    List,
}

/// The proxy's answer to one [`ControlRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ControlResponse {
    /// The route is in place; `previous` is the backend it replaced, if any.
    Routed {
        previous: Option<SocketAddr>,
    },
    /// The backend is drained: `cut` connections or requests were still open at the timeout.
    Drained {
        cut: u64,
        waited_ms: u64,
    },
    /// The port is free.
    Released,
    Routes {
        routes: Vec<RouteStatus>,
    },
    /// The request was not carried out, and why, for an operator to read.
    Error {
        message: String,
    },
}

/// A route and what flows through it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub route: Route,
    /// Connections (tcp) or requests (http) open to the current backend.
    pub in_flight: u64,
    /// Previous backends that still have traffic in flight.
    pub draining: Vec<BackendInFlight>,
}

/// A previous backend still finishing its traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInFlight {
    pub backend: SocketAddr,
    pub in_flight: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_read_as_documented() {
        let request: ControlRequest = serde_json::from_str(
            r#"{"op":"route","route":{"listen":"0.0.0.0:80","backend":"172.17.0.5:8000","mode":"http","owner":"prod/web"}}"#,
        )
        .expect("a route request");
        assert_eq!(
            request,
            ControlRequest::Route {
                route: Route {
                    listen: "0.0.0.0:80".parse().expect("address"),
                    backend: "172.17.0.5:8000".parse().expect("address"),
                    mode: ProxyMode::Http,
                    owner: "prod/web".into(),
                }
            }
        );
        let drained = serde_json::to_string(&ControlResponse::Drained {
            cut: 0,
            waited_ms: 12,
        })
        .expect("serializes");
        assert_eq!(drained, r#"{"result":"drained","cut":0,"waited_ms":12}"#);
        assert!(serde_json::from_str::<ControlRequest>(r#"{"op":"shutdown"}"#).is_err());
    }
}
