//! Http mode: HTTP/1.1 with keep-alive toward clients; each request goes to the backend current
//! when it arrives (so a switch applies to the next request of a kept-alive connection),
//! through a pool of connections per backend. Response bodies are streamed frame by frame,
//! never buffered, and a request counts as in flight until its response body has ended. An
//! upgrade (websocket) is forwarded, and on `101 Switching Protocols` both sides are spliced,
//! counted in flight until they close.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::Shared;
use crate::routes::InFlight;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a pooled connection to a backend may stay idle.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle pooled connections kept per backend.
const POOL_MAX_IDLE: usize = 64;
/// How long a client may take to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection accepted before the proxy began to stop may still take to send its
/// first request.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// The headers of one hop (RFC 9110, 7.6.1), never forwarded as they are.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A pooled client per backend.
#[derive(Debug)]
pub struct Clients {
    connect_timeout: Duration,
    by_backend: Mutex<HashMap<SocketAddr, Client<HttpConnector, Incoming>>>,
}

impl Clients {
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            by_backend: Mutex::default(),
        }
    }

    fn get(&self, backend: SocketAddr) -> Client<HttpConnector, Incoming> {
        let mut clients = self
            .by_backend
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        clients
            .entry(backend)
            .or_insert_with(|| {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(self.connect_timeout));
                connector.set_nodelay(true);
                Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .pool_max_idle_per_host(POOL_MAX_IDLE)
                    .build(connector)
            })
            .clone()
    }

    /// Drops the pool of `backend`: its idle connections close (those in use close when their
    /// request ends).
    pub fn forget(&self, backend: SocketAddr) {
        self.by_backend
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&backend);
    }
}

/// Serves one client connection until it closes, or until `stop`: then the request in flight
/// finishes and the connection closes. A connection that has sent nothing yet when `stop`
/// comes gets [`FIRST_REQUEST_GRACE`] to send its first request, which is answered.
pub async fn serve(
    shared: Arc<Shared>,
    listen: SocketAddr,
    stream: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    // A graceful shutdown closes at once a connection that has read nothing, so a client that
    // connected just before a stop (a restart of the proxy, say) and sends its request a moment
    // later would see its connection closed without an answer. Its first bytes are awaited
    // here (a peek: `readable()` can be ready before any byte is), and read before the stop is
    // looked at.
    let first_request = async {
        let mut first = [0u8; 1];
        matches!(
            tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)).await,
            Ok(Ok(n)) if n > 0
        )
    };
    let stop_and_grace = async {
        stop.cancelled().await;
        tokio::time::sleep(FIRST_REQUEST_GRACE).await;
    };
    let has_request = tokio::select! {
        biased;
        readable = first_request => readable,
        () = stop_and_grace => false,
    };
    if !has_request {
        return;
    }
    let service = hyper::service::service_fn(move |request| {
        forward(Arc::clone(&shared), listen, peer.ip(), request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let served = tokio::select! {
        // The connection first: with its first bytes there, it reads the request before a stop
        // already signalled can close it.
        biased;
        served = connection.as_mut() => served,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = served {
        tracing::debug!(%listen, %peer, "client connection ended: {err}");
    }
}

/// Forwards one request to the current backend of `listen`. An error closes the client's
/// connection (a drain cut the request).
async fn forward(
    shared: Arc<Shared>,
    listen: SocketAddr,
    client_ip: IpAddr,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, BoxError> {
    let Some(flight) = shared.table.enter(listen) else {
        return Ok(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "brine-proxy: this port is no longer routed\n",
        ));
    };
    let backend = flight.backend();
    let upgrade = upgrade_protocol(request.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));

    let (mut parts, body) = request.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = &upgrade {
        set_upgrade(&mut parts.headers, protocol.clone());
    }
    append_forwarded_for(&mut parts.headers, client_ip.to_canonical());
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = match Uri::builder()
        .scheme("http")
        .authority(backend.to_string())
        .path_and_query(path)
        .build()
    {
        Ok(uri) => uri,
        Err(_) => {
            return Ok(plain(
                StatusCode::BAD_REQUEST,
                "brine-proxy: the request's target is not valid\n",
            ));
        }
    };
    parts.version = Version::HTTP_11;

    let client = shared.clients.get(backend);
    let sent = tokio::select! {
        sent = client.request(Request::from_parts(parts, body)) => sent,
        () = flight.cut().cancelled() => return Err("cut by a drain".into()),
    };
    let mut response = match sent {
        Ok(response) => response,
        Err(err) => {
            shared
                .connect_failures
                .warn(|| format!("{listen}: request to {backend} failed: {}", chain(&err)));
            return Ok(plain(
                StatusCode::BAD_GATEWAY,
                "brine-proxy: the backend of this port cannot be reached\n",
            ));
        }
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Ok(plain(
                StatusCode::BAD_GATEWAY,
                "brine-proxy: the backend switched protocols unasked\n",
            ));
        };
        let backend_upgrade = hyper::upgrade::on(&mut response);
        shared
            .tracker
            .spawn(splice(client_upgrade, backend_upgrade, flight, listen));
        let (mut parts, _) = response.into_parts();
        let protocol = parts.headers.get(header::UPGRADE).cloned();
        remove_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = protocol {
            set_upgrade(&mut parts.headers, protocol);
        }
        return Ok(Response::from_parts(parts, ProxyBody::full(Bytes::new())));
    }

    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        ProxyBody::streamed(body, flight),
    ))
}

/// Joins an upgraded client connection to the upgraded backend connection until either closes
/// or a drain cuts them.
async fn splice(client: OnUpgrade, backend: OnUpgrade, flight: InFlight, listen: SocketAddr) {
    let (client, backend_io) = match tokio::try_join!(client, backend) {
        Ok(both) => both,
        Err(err) => {
            tracing::debug!(%listen, "upgrade failed: {err}");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut backend_io = TokioIo::new(backend_io);
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut backend_io) => {
            if let Err(err) = copied {
                tracing::debug!(%listen, backend = %flight.backend(), "upgraded connection ended: {err}");
            }
        }
        () = flight.cut().cancelled() => {
            tracing::debug!(%listen, backend = %flight.backend(), "upgraded connection cut by a drain");
        }
    }
}

/// The protocol asked for when the request asks to upgrade (`Connection: upgrade`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    connection_options(headers)
        .contains(&header::UPGRADE)
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::UPGRADE, protocol);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// The headers `Connection` names.
fn connection_options(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    for name in connection_options(headers) {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Appends the client's address to `X-Forwarded-For`, after what earlier proxies put there.
fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    let mut value = Vec::new();
    for earlier in headers.get_all("x-forwarded-for") {
        value.extend_from_slice(earlier.as_bytes());
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(client.to_string().as_bytes());
    let value = HeaderValue::from_bytes(&value).unwrap_or_else(|_| {
        HeaderValue::from_str(&client.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
    });
    headers.insert("x-forwarded-for", value);
}

/// An error with its causes, for a log line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A one-line answer of the proxy's own.
fn plain(status: StatusCode, line: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(Bytes::from_static(line.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A response body: the proxy's own, or a backend's streamed through, counted in flight until
/// it ends and cut (the client's connection closed) when a drain times out.
pub struct ProxyBody {
    inner: Inner,
}

enum Inner {
    Full(Option<Bytes>),
    Streamed {
        body: Incoming,
        cut: Pin<Box<WaitForCancellationFutureOwned>>,
        flight: Option<InFlight>,
    },
}

impl ProxyBody {
    fn full(bytes: Bytes) -> Self {
        Self {
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    fn streamed(body: Incoming, flight: InFlight) -> Self {
        Self {
            inner: Inner::Streamed {
                body,
                cut: Box::pin(flight.cut().clone().cancelled_owned()),
                flight: Some(flight),
            },
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().inner {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Streamed { body, cut, flight } => {
                if flight.is_none() {
                    return Poll::Ready(None);
                }
                if cut.as_mut().poll(cx).is_ready() {
                    *flight = None;
                    return Poll::Ready(Some(Err("cut by a drain".into())));
                }
                match Pin::new(body).poll_frame(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                    Poll::Ready(Some(Err(err))) => {
                        *flight = None;
                        Poll::Ready(Some(Err(err.into())))
                    }
                    Poll::Ready(None) => {
                        *flight = None;
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Streamed { body, flight, .. } => flight.is_none() || body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Streamed { body, .. } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("content-type"));
    }

    #[test]
    fn an_upgrade_needs_connection_upgrade() {
        let mut headers = HeaderMap::new();
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_protocol(&headers), None);
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(
            upgrade_protocol(&headers),
            Some(HeaderValue::from_static("websocket"))
        );
    }

    #[test]
    fn the_client_is_appended_to_forwarded_for() {
        let mut headers = HeaderMap::new();
        append_forwarded_for(&mut headers, "10.0.0.1".parse().expect("ip"));
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1");
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        append_forwarded_for(&mut headers, "::1".parse().expect("ip"));
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 10.0.0.2, ::1");
        assert_eq!(headers.get_all("x-forwarded-for").iter().count(), 1);
    }
}
