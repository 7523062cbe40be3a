//! The daemon: `run(config, listener, shutdown)` serves until `shutdown` resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use brine_proto::pb;
use brine_proto::tls::{certs_from_pem, crypto_provider};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthorizeLayer, CertificateRevocations};
use crate::config::MasterConfig;
use crate::connections::{ConnectionLimits, HANDSHAKE_TIMEOUT, Limited, Refused, Watched};
use crate::data_dir::{DataDir, read};
use crate::enrolment::{EnrolmentService, JoinThrottle};
use crate::fleet::{FleetService, PlanRate};
use crate::link::{JobRouter, Links, MinionLinkService};
use crate::metrics::{Metrics, Refusal, TimedStore};
use crate::server_cert::ServerCertificate;
use crate::state::Master;
use crate::store;

/// How many accepted connections may wait for the gRPC server.
const ACCEPT_QUEUE: usize = 128;
/// How many connections the kernel holds for the master before it accepts them (capped by
/// `net.core.somaxconn`, 4096 by default). A fleet reconnecting at once waits here while the
/// master handshakes with those before it; the standard library's 128 made the rest of it time
/// out and back off for seconds.
pub const LISTEN_BACKLOG: u32 = 4096;
/// How often an idle connection is probed, and how long the probe may take: a link whose peer
/// vanished without a word (power cut, silent partition) is noticed within their sum.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest messages each service accepts: a join is a token and a CSR; a minion's hello
/// lists its containers; a fleet request is small. Anything larger is refused before it is read.
const ENROLMENT_MESSAGE_LIMIT: usize = 64 * 1024;
const LINK_MESSAGE_LIMIT: usize = 1024 * 1024;
const FLEET_MESSAGE_LIMIT: usize = 64 * 1024;
/// Streams one connection may have open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 32;
/// The largest request headers accepted (gRPC's are small).
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// How long a handler may take to answer (a highstate answers once it has resolved its images
/// and taken the lock).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long in-flight requests get to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Builds the server TLS configuration: the master's certificate (reloaded when it is renewed)
/// and optional client certificates, which authorization then requires for everything but
/// enrolment.
fn tls_acceptor(
    data: &DataDir,
    certificate: Arc<ServerCertificate>,
) -> anyhow::Result<TlsAcceptor> {
    let provider = crypto_provider();
    let ca_pem = read(&data.ca_cert())?;
    let ca = certs_from_pem(&data.ca_cert().display().to_string(), ca_pem.as_bytes())?;
    let mut roots = RootCertStore::empty();
    for cert in &ca {
        roots.add(cert.clone()).context("load the CA certificate")?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("build the client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Listens on `address` for the master's gRPC service, with room for a reconnecting fleet in
/// the listen queue ([`LISTEN_BACKLOG`]).
pub fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As the standard library does: a restarted master binds again at once.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts TCP connections within the [`ConnectionLimits`] and completes TLS handshakes off
/// the accept loop, so a slow or hostile client delays only itself.
fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: Arc<ConnectionLimits>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> ReceiverStream<Result<Limited<TlsStream<Watched<TcpStream>>>, std::io::Error>> {
    let (connections, incoming) = mpsc::channel(ACCEPT_QUEUE);
    tokio::spawn(async move {
        let mut refusals = RefusalLog::default();
        loop {
            // At a fleet's reconnection, connections wait in the listen queue for their turn.
            tokio::select! {
                () = stop.cancelled() => break,
                () = limits.room() => {}
            }
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let admitted = match limits.admit(peer.ip()) {
                Ok(admitted) => admitted,
                Err(refused) => {
                    metrics.refused(match refused {
                        Refused::Full => Refusal::ConnectionsFull,
                        Refused::SourceBusy | Refused::Busy => Refusal::UnauthenticatedBusy,
                    });
                    refusals.note(peer, refused);
                    continue;
                }
            };
            let (acceptor, connections, metrics) =
                (acceptor.clone(), connections.clone(), metrics.clone());
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let handshake =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(admitted.watch(tcp)));
                let tls = tokio::select! {
                    done = handshake => done,
                    () = admitted.cut() => {
                        tracing::debug!(%peer, "TLS handshake cut to make room");
                        return;
                    }
                };
                match tls {
                    Ok(Ok(tls)) => {
                        metrics.handshake_completed();
                        let authenticated = tls.get_ref().1.peer_certificates().is_some();
                        let _ = connections
                            .send(Ok(admitted.into_stream(tls, authenticated)))
                            .await;
                    }
                    Ok(Err(err)) => {
                        metrics.refused(Refusal::HandshakeFailed);
                        tracing::warn!(%peer, "TLS handshake refused: {err}");
                    }
                    Err(_) => {
                        metrics.refused(Refusal::HandshakeTimedOut);
                        tracing::warn!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(incoming)
}

/// Logs refused connections at most once per [`REFUSAL_LOG_INTERVAL`], with how many there
/// were, so a flood does not flood the log too.
#[derive(Debug, Default)]
struct RefusalLog {
    since: Option<tokio::time::Instant>,
    count: u64,
}

const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl RefusalLog {
    fn note(&mut self, peer: std::net::SocketAddr, refused: crate::connections::Refused) {
        self.count += 1;
        let now = tokio::time::Instant::now();
        if self
            .since
            .is_none_or(|since| now.duration_since(since) >= REFUSAL_LOG_INTERVAL)
        {
            tracing::warn!(%peer, refused = self.count, "connection refused: {refused}");
            self.since = Some(now);
            self.count = 0;
        }
    }
}

/// How soon an operator or CI certificate revoked through another master sharing the store is
/// refused by this one.
const REVOCATIONS_REFRESH: Duration = Duration::from_secs(1);

/// Reads the store's certificate revocations every [`REVOCATIONS_REFRESH`], for those made
/// through the other masters that share it, until `stopping`.
async fn follow_revocations(
    store: Arc<dyn store::Store>,
    revocations: Arc<CertificateRevocations>,
    stopping: CancellationToken,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            () = tokio::time::sleep(REVOCATIONS_REFRESH) => {}
        }
        match store.certificate_revocations().await {
            Ok(all) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("certificate revocations are read from the store again");
                }
                for revocation in all {
                    revocations.revoke(
                        revocation.role,
                        revocation.name,
                        revocation.revoked_at_unix_ms,
                    );
                }
            }
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(
                    "cannot read the certificate revocations other masters made: {err}; \
                     those made here still apply"
                );
            }
            Err(_) => {}
        }
    }
}

/// gRPC server reflection, in its current version and the older `v1alpha` many clients (grpcio's
/// among them) still ask first: brine's services and the health service, described to any
/// caller the authorization table lets in, so generic clients list and call them without the
/// .proto files.
fn reflection_services() -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(brine_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((
        builder()
            .build_v1()
            .context("describe the services for reflection")?,
        builder()
            .build_v1alpha()
            .context("describe the services for reflection")?,
    ))
}

/// Serves the Prometheus endpoint until `stopping`: each scrape reads the hosts from the store
/// to count them by link and approval.
async fn serve_metrics(master: Arc<Master>, listener: TcpListener, stopping: CancellationToken) {
    let address = listener.local_addr().ok();
    let render: brine_daemon::metrics::Render = Arc::new(move || {
        let master = master.clone();
        Box::pin(async move {
            let hosts = match master.store.minions().await {
                Ok(hosts) => hosts,
                Err(err) => {
                    tracing::warn!("metrics: cannot read the hosts: {err}");
                    vec![]
                }
            };
            let linked = hosts
                .iter()
                .map(|h| (h, crate::relay::link_holder(&master, &h.id).is_some()));
            master.metrics.render(linked, master.router.running_jobs())
        })
    });
    tracing::info!(address = ?address, "serving Prometheus metrics at /metrics");
    if let Err(err) =
        brine_daemon::metrics::serve(listener, render, stopping.cancelled_owned()).await
    {
        tracing::error!("the Prometheus endpoint stopped: {err}");
    }
}

/// Serves the master on `listener` until `shutdown` resolves, then shuts down in order: stop
/// accepting, end the minion links, give running requests a grace period.
pub async fn run(
    config: MasterConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data = DataDir::new(&config.data_dir);
    // Bound first, so that an address in use stops the start before anything else happens.
    let metrics_listener = match config.metrics_listen {
        Some(address) => Some(TcpListener::bind(address).await.with_context(|| {
            format!("listen for Prometheus on {address} (metrics_listen in master.toml)")
        })?),
        None => None,
    };
    let dashboard_listener = match config.dashboard_listen {
        Some(address) => Some(TcpListener::bind(address).await.with_context(|| {
            format!("listen for the dashboard on {address} (dashboard_listen in master.toml)")
        })?),
        None => None,
    };
    for warning in data.tighten_permissions(&config.roles_file)? {
        tracing::warn!("{warning}");
    }
    let certificate = Arc::new(ServerCertificate::load(&data)?);
    let acceptor = tls_acceptor(&data, certificate.clone())?;
    let ca = data.load_ca()?;
    let metrics = Metrics::new();
    let store: Arc<dyn store::Store> = Arc::new(TimedStore::new(
        store::open(&config.store).await.context("open the store")?,
        metrics.clone(),
    ));
    // A store that holds another fleet (a master set up with a new CA, pointed at the etcd
    // of another fleet) is never served.
    if let store::FleetClaim::Other { ca_sha256 } =
        store.claim_fleet(ca.digest().to_owned()).await?
    {
        anyhow::bail!(
            "the store holds another fleet: its CA certificate's SHA-256 is {ca_sha256}, this \
             master's ({}) is {}; copy ca.pem and ca.key from a master of that fleet",
            data.ca_cert().display(),
            ca.digest()
        );
    }
    // A key made here would open none of the secrets other masters sealed: a master without
    // one makes it only while the store holds no secret.
    if !data.secrets_key().exists() && !store.secrets().await?.is_empty() {
        anyhow::bail!(
            "{} is missing and the store holds secrets sealed with another master's key: copy \
             secrets.key from a master of the fleet",
            data.secrets_key().display()
        );
    }
    let vault = crate::secrets::Vault::open_or_create(&data.secrets_key())?;
    // Of masters that share a store, each finishes only the jobs it ran itself: the others'
    // are running.
    let shared = config.store_is_shared();
    if shared {
        // Links this master held before it stopped are gone. Its jobs are taken over, by any
        // master, once its lease runs out (`takeover`).
        store.forget_links_of(config.name.clone()).await?;
    } else {
        for job in store
            .interrupt_running_jobs(crate::state::now_unix_ms(), None)
            .await?
        {
            tracing::warn!(
                job.id = %job,
                "a job was still running when the master stopped; its hosts that had not reported are marked interrupted"
            );
        }
    }
    let revocations = Arc::new(CertificateRevocations::new(
        store
            .certificate_revocations()
            .await?
            .into_iter()
            .map(|r| (r.role, r.name, r.revoked_at_unix_ms)),
    ));

    let stopping = CancellationToken::new();
    let peers = crate::peers::Peers::new(config.advertise_address.clone());
    let (hook_queues, hooks) = crate::hooks::prepare(&config.hooks, store.clone(), metrics.clone());
    let events = Arc::new(crate::events::EventBus::new(hook_queues));
    hooks.spawn(events.clone());
    let master = Arc::new(Master {
        config,
        ca,
        store,
        links: Links::new(stopping.clone()),
        router: JobRouter::default(),
        sessions: Default::default(),
        feeds: Default::default(),
        requests: Default::default(),
        revocations: revocations.clone(),
        activity: crate::status::Activity::default(),
        late_reports: Default::default(),
        peers,
        remote_links: Default::default(),
        fence: Default::default(),
        metrics: metrics.clone(),
        vault,
        events,
        dashboard: Default::default(),
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::fleet_service_server::FleetServiceServer<FleetService>>()
        .await;

    let (reflection_v1, reflection_v1alpha) = reflection_services()?;

    let address = listener.local_addr().context("read the listen address")?;
    let limits = Arc::new(ConnectionLimits::default());
    let incoming = tls_incoming(
        listener,
        acceptor,
        limits,
        metrics.clone(),
        stopping.clone(),
    );
    if let Some(metrics_listener) = metrics_listener {
        tokio::spawn(serve_metrics(
            master.clone(),
            metrics_listener,
            stopping.clone(),
        ));
    }
    let dashboard = match dashboard_listener {
        Some(listener) => Some(tokio::spawn(crate::dashboard::serve(
            master.clone(),
            listener,
            crate::dashboard::tls_config(certificate.clone())?,
            stopping.clone(),
        ))),
        None => None,
    };
    tokio::spawn(certificate.keep_fresh(data.clone(), stopping.clone()));
    if shared {
        tokio::spawn(crate::peers::keep_announced(
            master.clone(),
            stopping.clone(),
        ));
        tokio::spawn(crate::link::admission::follow(
            master.clone(),
            stopping.clone(),
        ));
        tokio::spawn(crate::takeover::keep_lease(
            master.clone(),
            stopping.clone(),
        ));
        tokio::spawn(crate::takeover::take_over_jobs(
            master.clone(),
            stopping.clone(),
        ));
        tokio::spawn(crate::relay::follow_links(master.clone(), stopping.clone()));
        tokio::spawn(crate::relay::follow_messages(
            master.clone(),
            stopping.clone(),
        ));
        tokio::spawn(follow_revocations(
            master.store.clone(),
            master.revocations.clone(),
            stopping.clone(),
        ));
    }
    {
        let stopping = stopping.clone();
        let events = master.events.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down");
            brine_daemon::systemd::stopping("shutting down: ending minion links");
            events.close();
            stopping.cancel();
        });
    }
    tracing::info!(%address, "brine-master serving");
    tokio::spawn(crate::status::report_to_systemd(
        master.clone(),
        address.to_string(),
        stopping.clone(),
    ));
    brine_daemon::systemd::spawn_watchdog();

    let server = tonic::transport::Server::builder()
        // Detects links whose host vanished without closing them (power loss, network cut), so
        // a highstate reports them unreachable instead of waiting for its deadline.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        // A link uses two streams at most, the CLI one or two: many more is a peer that wants
        // to tie the master up.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_max_header_list_size(Some(MAX_HEADER_LIST_SIZE))
        // Until a handler answers; streams (links, job progress) then run as long as they need.
        .timeout(REQUEST_TIMEOUT)
        .layer(AuthorizeLayer {
            revocations,
            metrics,
        })
        .add_service(
            pb::enrolment_service_server::EnrolmentServiceServer::new(EnrolmentService {
                master: master.clone(),
                throttle: JoinThrottle::default(),
            })
            .max_decoding_message_size(ENROLMENT_MESSAGE_LIMIT),
        )
        .add_service(
            pb::minion_link_service_server::MinionLinkServiceServer::new(MinionLinkService {
                master: master.clone(),
            })
            .max_decoding_message_size(LINK_MESSAGE_LIMIT),
        )
        .add_service(
            pb::fleet_service_server::FleetServiceServer::new(FleetService {
                master: master.clone(),
                plan_rate: PlanRate::default(),
            })
            .max_decoding_message_size(FLEET_MESSAGE_LIMIT),
        )
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, stopping.clone().cancelled_owned());

    let grace = async {
        stopping.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = server => result.context("serve gRPC")?,
        () = grace => tracing::warn!("requests still running after the grace period were cut"),
    }
    if let Some(dashboard) = dashboard {
        // It stops with the rest: its listener first, then its connections, within its grace.
        let _ = dashboard.await;
    }
    tracing::info!("brine-master stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    /// A fleet reconnecting at once waits in the listen queue while the master handshakes with
    /// those before it. With the standard library's queue of 128, every connection beyond it
    /// lost its SYN and waited a second or more to retry, and many timed out.
    #[tokio::test]
    async fn a_thousand_connections_wait_in_the_listen_queue() {
        let listener = super::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = listener.local_addr().unwrap();
        // The master is busy: nothing is accepted while they connect.
        let connected = futures::stream::iter(0..1000)
            .map(|_| {
                tokio::time::timeout(
                    Duration::from_millis(800),
                    tokio::net::TcpStream::connect(address),
                )
            })
            .buffer_unordered(1000)
            .collect::<Vec<_>>()
            .await;
        let waited = connected.iter().filter(|c| matches!(c, Ok(Ok(_)))).count();
        assert_eq!(waited, 1000, "connections held in the listen queue");
    }
}
