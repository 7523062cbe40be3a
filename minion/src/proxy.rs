//! The minion's side of `brine-proxy`, the host's proxy for published ports: one request per
//! connection to its control socket (see `brine_common::proxy_control`).
//!
//! A connection per request keeps the client stateless: the proxy may restart between two
//! requests (it keeps its routes and its listening sockets), and a minion that restarts has
//! nothing to resume.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use brine_common::proxy_control::{
    ControlRequest, ControlResponse, MAX_LINE_BYTES, Route, RouteStatus,
};
use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LinesCodec};

/// How long the proxy may take to answer anything but a drain.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the proxy did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "brine-proxy does not answer at {socket}: {reason} (is brine-proxy.service running on this host?)"
    )]
    Unavailable { socket: PathBuf, reason: String },
    #[error("brine-proxy refused: {0}")]
    Refused(String),
    #[error("brine-proxy answered {0}, which does not answer the request")]
    Unexpected(String),
}

/// A drain that ended: how long it took and what was still open at its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub cut: u64,
    pub waited_ms: u64,
}

/// Talks to the proxy at one control socket.
#[derive(Debug, Clone)]
pub struct ProxyClient {
    socket: PathBuf,
}

impl ProxyClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Points `route.listen` at `route.backend`; returns the backend it replaced.
    pub async fn route(&self, route: Route) -> Result<Option<SocketAddr>, ProxyError> {
        match self
            .ask(&ControlRequest::Route { route }, ANSWER_TIMEOUT)
            .await?
        {
            ControlResponse::Routed { previous } => Ok(previous),
            other => Err(unexpected(other)),
        }
    }

    /// Waits until nothing is in flight to `backend` through `listen`, cutting what remains
    /// after `timeout`.
    pub async fn drain(
        &self,
        listen: SocketAddr,
        backend: SocketAddr,
        timeout: Duration,
    ) -> Result<Drained, ProxyError> {
        let request = ControlRequest::Drain {
            listen,
            backend,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        match self.ask(&request, timeout + ANSWER_TIMEOUT).await? {
            ControlResponse::Drained { cut, waited_ms } => Ok(Drained { cut, waited_ms }),
            other => Err(unexpected(other)),
        }
    }

    /// Gives the port back: the proxy stops listening at once and finishes what is in flight
    /// within `timeout` on its own.
    pub async fn release(&self, listen: SocketAddr, timeout: Duration) -> Result<(), ProxyError> {
        let request = ControlRequest::Release {
            listen,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        match self.ask(&request, ANSWER_TIMEOUT).await? {
            ControlResponse::Released => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Every route the proxy holds.
    pub async fn routes(&self) -> Result<Vec<RouteStatus>, ProxyError> {
        match self.ask(&ControlRequest::List, ANSWER_TIMEOUT).await? {
            ControlResponse::Routes { routes } => Ok(routes),
            other => Err(unexpected(other)),
        }
    }

    async fn ask(
        &self,
        request: &ControlRequest,
        within: Duration,
    ) -> Result<ControlResponse, ProxyError> {
        let unavailable = |reason: String| ProxyError::Unavailable {
            socket: self.socket.clone(),
            reason,
        };
        let exchange = async {
            let stream = UnixStream::connect(&self.socket)
                .await
                .map_err(|err| unavailable(err.to_string()))?;
            let mut lines = Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
            let line = serde_json::to_string(request)
                .map_err(|err| ProxyError::Unexpected(err.to_string()))?;
            lines
                .send(line)
                .await
                .map_err(|err| unavailable(err.to_string()))?;
            let answer = lines
                .next()
                .await
                .ok_or_else(|| unavailable("it closed the connection without an answer".into()))?
                .map_err(|err| unavailable(err.to_string()))?;
            serde_json::from_str::<ControlResponse>(&answer)
                .map_err(|err| ProxyError::Unexpected(format!("{answer:?} ({err})")))
        };
        match tokio::time::timeout(within, exchange).await {
            Err(_) => Err(unavailable(format!(
                "no answer within {}",
                humantime::format_duration(within)
            ))),
            Ok(Ok(ControlResponse::Error { message })) => Err(ProxyError::Refused(message)),
            Ok(answer) => answer,
        }
    }
}

fn unexpected(answer: ControlResponse) -> ProxyError {
    ProxyError::Unexpected(format!("{answer:?}"))
}
