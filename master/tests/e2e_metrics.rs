//! End to end: both daemons serve Prometheus metrics on `metrics_listen` (set here through the
//! documented `BRINE_MASTER_METRICS_LISTEN` and `BRINE_MINION_METRICS_LISTEN`), a real
//! Prometheus (Debian's) scrapes them, and its query API shows what a highstate, a refused
//! connection and a repair did.
//!
//! Needs Docker, Debian's `docker-registry`, `busybox-static` and `prometheus`, and the binaries.

mod support;

use std::io::Write;
use std::time::Duration;

use support::prometheus::Prometheus;
use support::{Images, Master, Minion, Registry, docker, free_port, quoted, unique_id, wait_for};

/// Reads `/metrics` at `address` as a scraper would.
fn scrape(address: &str) -> String {
    ureq::get(format!("http://{address}/metrics"))
        .call()
        .unwrap_or_else(|err| panic!("GET http://{address}/metrics: {err}"))
        .body_mut()
        .read_to_string()
        .expect("a text answer")
}

#[test]
fn prometheus_scrapes_both_daemons_and_sees_jobs_hosts_refusals_and_repairs() {
    let uniq = unique_id();
    let registry = Registry::start();
    let mut images = Images::new(&registry, &uniq);
    let app = images.push_variant("app", 1);
    let master_metrics = format!("127.0.0.1:{}", free_port());
    let minion_metrics = format!("127.0.0.1:{}", free_port());
    let master = Master::start_with_env(&[("BRINE_MASTER_METRICS_LISTEN", &master_metrics)]);
    let id = format!("e2e-{uniq}-a");
    let mut minion = Minion::start_with(
        &master,
        &id,
        &[],
        &[("BRINE_MINION_METRICS_LISTEN", &minion_metrics)],
        "",
    );
    minion.wait_connected(&master);

    master.write_roles(&format!(
        "[roles.web]\nimage = {}\n[[roles.web.containers]]\nname = \"web\"\n\
         command = [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\"]\n\n\
         [assign]\n{} = [\"web\"]\n",
        quoted(&app.reference),
        quoted(&id)
    ));
    let (code, report) = master.highstate(None);
    assert_eq!(code, 0, "{report:#}");

    // Someone who is not a TLS client at all: refused, and counted.
    let mut stranger =
        std::net::TcpStream::connect(master.address()).expect("connect to the master");
    stranger
        .write_all(b"GET / HTTP/1.1\r\nHost: brine\r\n\r\n")
        .expect("send garbage");
    drop(stranger);

    // OpenMetrics text, ending as the format wants.
    for endpoint in [&master_metrics, &minion_metrics] {
        let text = scrape(endpoint);
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    let prometheus = Prometheus::start(&[
        ("brine-master", &master_metrics),
        ("brine-minion", &minion_metrics),
    ]);
    let one = |v: f64| v == 1.0;
    let some = |v: f64| v >= 1.0;
    prometheus.wait_value(r#"up{job="brine-master"}"#, one);
    prometheus.wait_value(r#"up{job="brine-minion"}"#, one);
    // Every family is described: a type and a help text, with the unit in the name.
    let metadata = prometheus.metadata();
    for (family, kind) in [
        ("brine_hosts", "gauge"),
        ("brine_jobs", "counter"),
        ("brine_job_duration_seconds", "histogram"),
        ("brine_host_phase_duration_seconds", "histogram"),
        ("brine_refusals", "counter"),
        ("brine_store_operation_duration_seconds", "histogram"),
        ("brine_minion_link_up", "gauge"),
        ("brine_minion_jobs", "counter"),
    ] {
        let described = &metadata[family][0];
        assert_eq!(described["type"], kind, "{family}: {metadata:#}");
        assert_ne!(described["help"], "", "{family}: {metadata:#}");
    }
    // The master: the host, the job and its phases, the refusal, the store.
    prometheus.wait_value(r#"brine_hosts{link="linked",approval="accepted"}"#, one);
    prometheus.wait_value(r#"brine_hosts{link="unlinked",approval="accepted"}"#, |v| {
        v == 0.0
    });
    prometheus.wait_value(
        r#"brine_jobs_total{kind="highstate",status="succeeded"}"#,
        one,
    );
    prometheus.wait_value(r#"brine_job_duration_seconds_count{kind="highstate"}"#, one);
    prometheus.wait_value(r#"brine_host_reports_total{status="changed"}"#, one);
    for phase in ["pull", "containers", "health"] {
        prometheus.wait_value(
            &format!(r#"brine_host_phase_duration_seconds_count{{phase="{phase}"}}"#),
            one,
        );
    }
    prometheus.wait_value(r#"brine_refusals_total{reason="handshake_failed"}"#, some);
    prometheus.wait_value("brine_tls_handshakes_total", some);
    prometheus.wait_value(
        r#"brine_store_operation_duration_seconds_count{operation="record_job"}"#,
        one,
    );
    prometheus.wait_value("brine_jobs_running", |v| v == 0.0);
    // The minion: its link, the job it applied and how long each phase took.
    prometheus.wait_value("brine_minion_link_up", one);
    prometheus.wait_value("brine_minion_links_total", some);
    prometheus.wait_value(r#"brine_minion_jobs_total{status="changed"}"#, one);
    prometheus.wait_value(
        r#"brine_minion_job_phase_duration_seconds_count{phase="pull"}"#,
        one,
    );

    // A container removed behind the minion's back comes back: a repair, on both sides.
    docker(&["rm", "-f", &format!("{id}.web")]);
    prometheus.wait_value(r#"brine_minion_host_events_total{kind="repaired"}"#, one);
    prometheus.wait_value(r#"brine_host_events_total{kind="repaired"}"#, one);

    // The host goes away: the master counts it unlinked.
    minion.stop();
    prometheus.wait_value(r#"brine_hosts{link="unlinked",approval="accepted"}"#, one);
    wait_for(
        "the minion's endpoint to close",
        Duration::from_secs(10),
        || match std::net::TcpStream::connect(&minion_metrics) {
            Ok(_) => Err("still open".to_owned()),
            Err(_) => Ok(()),
        },
    );
}
