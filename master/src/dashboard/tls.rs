//! The dashboard's HTTPS server: HTTP/1.1 (hyper) over TLS (tokio-rustls) with the master's own
//! certificate, served from the same resolver as its gRPC port, and no client certificates
//! (browsers sign in with a link instead). Handshakes and connections run in tasks of their
//! own, at most [`MAX_CONNECTIONS`] at once; when the master stops, the listener closes and
//! each connection finishes its request in flight.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::{Dashboard, LastJobs, router};
use crate::server_cert::ServerCertificate;
use crate::state::Master;

/// Browsers open a few connections each.
const MAX_CONNECTIONS: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection gets to finish its request once the master stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The TLS configuration of the dashboard: the master's certificate, no client certificates,
/// HTTP/1.1.
pub fn tls_config(certificate: Arc<ServerCertificate>) -> anyhow::Result<rustls::ServerConfig> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(brine_proto::tls::crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves the dashboard on `listener` until `stopping`, then waits (a short grace at most) for
/// the connections to finish.
pub async fn serve(
    master: Arc<Master>,
    listener: TcpListener,
    tls: rustls::ServerConfig,
    stopping: CancellationToken,
) {
    let last_jobs = Arc::new(LastJobs::default());
    tokio::spawn(last_jobs.clone().keep(master.clone(), stopping.clone()));
    let app = router(Arc::new(Dashboard { master, last_jobs }));
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let room = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "serving the dashboard over HTTPS");
    }
    loop {
        let permit = tokio::select! {
            () = stopping.cancelled() => break,
            permit = room.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = stopping.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!("dashboard: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, app, stopping) = (acceptor.clone(), app.clone(), stopping.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, "dashboard: TLS handshake refused: {err}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "dashboard: TLS handshake timed out");
                    return;
                }
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(err) = served {
                        tracing::debug!(%peer, "dashboard: connection ended: {err}");
                    }
                }
                () = stopping.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
                }
            }
        });
    }
    drop(listener);
    // The connections hold their permits until they end.
    let _ = tokio::time::timeout(
        SHUTDOWN_GRACE + Duration::from_secs(1),
        room.acquire_many(MAX_CONNECTIONS as u32),
    )
    .await;
    tracing::info!("the dashboard stopped");
}
