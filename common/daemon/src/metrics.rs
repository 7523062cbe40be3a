//! The Prometheus endpoint both daemons serve on `metrics_listen`: plain HTTP on an address of
//! its own, `GET /metrics` in the OpenMetrics text format and nothing else. It is apart from
//! the gRPC port because a scraper holds no certificate, and what it reads (counts and
//! durations, never a name of a secret or its value) is safe to show to the network it is on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use brine_common::outcome::Timings;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The content type of the OpenMetrics text format.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Produces the text of one scrape: a daemon refreshes what it counts only when asked (the
/// hosts by state, say) and encodes its registry.
pub type Render = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

/// A `status` label: of a job, a host's report, a join.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

/// A `kind` label: of a job, a host event.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// A `phase` label: the phases of a job on a host.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: &'static str,
}

/// Observes the time a job spent on a host in each phase (pull, containers, health), in seconds.
pub fn observe_phases(phases: &Family<PhaseLabel, Histogram>, timings: &Timings) {
    for (phase, ms) in [
        ("pull", timings.pull_ms),
        ("containers", timings.containers_ms),
        ("health", timings.health_ms),
    ] {
        phases
            .get_or_create(&PhaseLabel { phase })
            .observe(ms as f64 / 1000.0);
    }
}

/// `registry` in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// Serves `GET /metrics` on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    render: Render,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move { ([(CONTENT_TYPE, OPENMETRICS_TEXT)], render().await) }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(address: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    }

    #[tokio::test]
    async fn serves_the_rendered_text_at_metrics_only() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("an address");
        let render: Render = Arc::new(|| Box::pin(async { "brine_up 1\n# EOF\n".to_owned() }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, render, async {
            let _ = stopped.await;
        }));

        let answer = get(address, "/metrics").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(OPENMETRICS_TEXT), "{answer}");
        assert!(answer.ends_with("brine_up 1\n# EOF\n"), "{answer}");
        let answer = get(address, "/").await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

        let _ = stop.send(());
        server.await.expect("the server task").expect("served");
    }
}
