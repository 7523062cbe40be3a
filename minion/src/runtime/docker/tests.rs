//! The translations to and from bollard's models, on documents shaped like the engine's; the
//! calls themselves are tested against a real engine in `minion/tests/docker_runtime.rs`.

use bollard::models::{
    ContainerInspectResponse, CreateImageInfo, PortSummary, PortSummaryTypeEnum,
};
use brine_common::spec::PortMapping;

use super::translate::{EngineReference, PullTally, familiar, ip_address, published, status};
use super::*;
use crate::runtime::DockerHealth;

#[test]
fn references_become_repository_and_tag_or_digest() {
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let engine = |image: &str| EngineReference::of(&ImageRef::new(image).unwrap()).to_string();
    assert_eq!(engine("busybox"), "busybox:latest");
    assert_eq!(engine("busybox:1.36"), "busybox:1.36");
    assert_eq!(engine("127.0.0.1:5000/a/b:tag"), "127.0.0.1:5000/a/b:tag");
    assert_eq!(engine("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
    assert_eq!(
        engine(&format!("127.0.0.1:5000/app@{digest}")),
        format!("127.0.0.1:5000/app@{digest}")
    );
    assert_eq!(engine(&format!("app:1@{digest}")), format!("app@{digest}"));
}

#[test]
fn repositories_compare_in_their_familiar_form() {
    assert_eq!(familiar("docker.io/library/nginx"), "nginx");
    assert_eq!(familiar("index.docker.io/team/app"), "team/app");
    assert_eq!(familiar("library/nginx"), "nginx");
    assert_eq!(
        familiar("127.0.0.1:5000/library/app"),
        "127.0.0.1:5000/library/app"
    );
}

fn inspected(state: serde_json::Value, healthcheck: serde_json::Value) -> ContainerStatus {
    let response: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
        "State": state,
        "RestartCount": 2,
        "Config": { "Healthcheck": healthcheck },
        "NetworkSettings": { "Networks": {
            "aaa": { "IPAddress": "10.0.0.5" },
            "bridge": { "IPAddress": "172.17.0.9" },
            "none": { "IPAddress": "" },
        }},
    }))
    .unwrap();
    status(response)
}

#[test]
fn inspect_reads_running_health_and_address() {
    let up = inspected(
        serde_json::json!({"Status": "running", "Running": true, "ExitCode": 0}),
        serde_json::Value::Null,
    );
    assert_eq!(
        up,
        ContainerStatus {
            running: true,
            exit_code: 0,
            restart_count: 2,
            docker_health: None,
            ip_address: Some("172.17.0.9".parse().unwrap()),
        }
    );
    // Docker keeps `Running` true while it restarts a crashed process.
    let restarting = inspected(
        serde_json::json!({"Status": "restarting", "Running": true, "Restarting": true, "ExitCode": 3}),
        serde_json::Value::Null,
    );
    assert_eq!((restarting.running, restarting.exit_code), (false, 3));

    let checked = serde_json::json!({"Test": ["CMD", "/bin/busybox", "true"]});
    let before_first_check = inspected(serde_json::json!({"Status": "running"}), checked.clone());
    assert_eq!(
        before_first_check.docker_health,
        Some(DockerHealth::Starting)
    );
    let healthy = inspected(
        serde_json::json!({"Status": "running", "Health": {"Status": "healthy"}}),
        checked,
    );
    assert_eq!(healthy.docker_health, Some(DockerHealth::Healthy));
    let switched_off = inspected(
        serde_json::json!({"Status": "running"}),
        serde_json::json!({"Test": ["NONE"]}),
    );
    assert_eq!(switched_off.docker_health, None);

    assert_eq!(
        ip_address(Some(HashMap::from([(
            "zzz".to_owned(),
            bollard::models::EndpointSettings {
                ip_address: Some("10.1.2.3".into()),
                ..Default::default()
            }
        )]))),
        Some("10.1.2.3".parse().unwrap()),
        "without the bridge network, another one's address"
    );
    assert!(!status(ContainerInspectResponse::default()).running);
}

#[test]
fn published_ports_treat_every_address_as_overlapping() {
    let port = |ip: &str, public: Option<u16>, typ| PortSummary {
        ip: Some(ip.into()),
        private_port: 8080,
        public_port: public,
        typ: Some(typ),
    };
    let everywhere = published(&port("0.0.0.0", Some(80), PortSummaryTypeEnum::TCP)).unwrap();
    assert_eq!(everywhere.host_ip, None);
    assert_eq!(everywhere.to_string(), "80:8080/tcp");
    assert_eq!(
        published(&port("::", Some(80), PortSummaryTypeEnum::TCP))
            .unwrap()
            .host_ip,
        None
    );
    let loopback = published(&port("127.0.0.1", Some(81), PortSummaryTypeEnum::UDP)).unwrap();
    assert_eq!(loopback.to_string(), "127.0.0.1:81:8080/udp");
    assert_eq!(published(&port("", None, PortSummaryTypeEnum::TCP)), None);
    assert_eq!(
        published(&port("0.0.0.0", Some(80), PortSummaryTypeEnum::SCTP)),
        None
    );
    let wanted: PortMapping = "127.0.0.1:80:9000".parse().unwrap();
    assert!(wanted.conflicts_with(&everywhere));
}

fn layer(id: &str, status: &str, current: Option<i64>, total: Option<i64>) -> CreateImageInfo {
    CreateImageInfo {
        id: Some(id.into()),
        status: Some(status.into()),
        progress_detail: Some(bollard::models::ProgressDetail { current, total }),
        ..Default::default()
    }
}

#[test]
fn progress_sums_downloads_and_ignores_extraction() {
    let mut tally = PullTally::default();
    tally.record(&layer("a", "Downloading", Some(10), Some(100)));
    tally.record(&layer("b", "Downloading", Some(5), Some(50)));
    tally.record(&layer("a", "Downloading", Some(40), Some(100)));
    assert_eq!(
        tally.sum(),
        PullProgress {
            bytes_done: 45,
            bytes_total: 150
        }
    );
    tally.record(&layer("a", "Download complete", None, None));
    tally.record(&layer("a", "Extracting", Some(1), Some(100)));
    tally.record(&layer("b", "Downloading", Some(7), Some(-1)));
    assert_eq!(
        tally.sum(),
        PullProgress {
            bytes_done: 107,
            bytes_total: 107
        }
    );
}

/// The engine does not always say "Download complete": a layer can go from its last progress
/// message straight to extraction, and a pull that succeeded is whole anyway.
#[test]
fn a_layer_is_downloaded_once_anything_after_its_download_is_said_and_at_the_end() {
    let mut tally = PullTally::default();
    tally.record(&layer("a", "Downloading", Some(36), Some(1000)));
    tally.record(&layer("b", "Downloading", Some(10), Some(20)));
    tally.record(&layer("a", "Verifying Checksum", None, None));
    assert_eq!(
        tally.sum(),
        PullProgress {
            bytes_done: 1010,
            bytes_total: 1020
        }
    );
    tally.complete();
    assert_eq!(
        tally.sum(),
        PullProgress {
            bytes_done: 1020,
            bytes_total: 1020
        }
    );
}
