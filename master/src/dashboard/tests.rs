//! The dashboard's pages served in process, over a real redb store holding a fleet of 1,000
//! hosts and 50 jobs over all of them: each page within its budget, and what a browser without
//! a session gets.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use brine_common::host::{Facts, RunningContainer};
use brine_common::names::{ContainerName, MinionId, RoleName};
use brine_common::outcome::{HostReport, HostStatus, JobId, JobSummary, Timings};
use tower::ServiceExt;

use super::*;
use crate::config::MasterConfig;
use crate::data_dir::DataDir;
use crate::link::Links;
use crate::store::{Approval, JobRecord, JobRetention, MinionRecord};

/// The fleet's size: 1,000, or `BRINE_BENCH_HOSTS` when `bench/dashboard.sh` measures another.
fn fleet_size() -> usize {
    std::env::var("BRINE_BENCH_HOSTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}
const JOBS: usize = 50;

async fn master(dir: &std::path::Path) -> Arc<Master> {
    let data = DataDir::new(dir.join("data"));
    let ca = data.fleet_ca(false).unwrap();
    data.init(
        &ca,
        &["localhost".into()],
        "127.0.0.1:4700".parse().unwrap(),
        None,
        None,
    )
    .unwrap();
    let config = MasterConfig::load_with(
        &dir.join("data"),
        &brine_daemon::config::Overrides::default(),
    )
    .unwrap();
    let store = crate::store::open(&config.store).await.unwrap();
    Arc::new(Master {
        ca: data.load_ca().unwrap(),
        store,
        links: Links::new(CancellationToken::new()),
        router: Default::default(),
        sessions: Default::default(),
        feeds: Default::default(),
        requests: Default::default(),
        revocations: Default::default(),
        activity: Default::default(),
        late_reports: Default::default(),
        peers: crate::peers::Peers::new(None),
        remote_links: Default::default(),
        fence: Default::default(),
        metrics: crate::metrics::Metrics::new(),
        vault: crate::secrets::Vault::open_or_create(&data.secrets_key()).unwrap(),
        events: Default::default(),
        dashboard: Default::default(),
        config,
    })
}

fn host_id(n: usize) -> MinionId {
    MinionId::new(format!("web-{n:04}")).unwrap()
}

async fn fill(master: &Master) {
    for n in 0..fleet_size() {
        let running = (0..3)
            .map(|c| RunningContainer {
                name: ContainerName::new(format!("app{c}")).unwrap(),
                role: RoleName::new("web").unwrap(),
                image: "registry.example:5000/app:1".into(),
                image_digest: format!("sha256:{:064}", c),
                state: if c == 2 && n % 10 == 0 {
                    "exited"
                } else {
                    "running"
                }
                .into(),
                container_id: format!("{n:012}{c}"),
            })
            .collect();
        let record = MinionRecord {
            id: host_id(n),
            enrolled_at_unix_ms: 1,
            certificate_sha256: format!("{n:064}"),
            previous_certificate_sha256: None,
            certificate_expires_unix_ms: 2,
            join_labels: [("env".to_owned(), "prod".to_owned())].into(),
            last_seen_unix_ms: 3,
            facts: Facts {
                hostname: format!("web-{n}"),
                cpus: 4,
                ..Facts::default()
            },
            running,
            approval: Approval::Accepted,
            pending_replacement: None,
            last_renewal_pem: None,
            clock_offset_ms: 0,
        };
        assert!(master.store.import_minion(record).await.unwrap());
    }
    for j in 0..JOBS {
        let job_id = JobId::new(format!("20260101T{:06}-0000abcd", j)).unwrap();
        let hosts: Vec<HostReport> = (0..fleet_size())
            .map(|n| HostReport {
                minion_id: host_id(n),
                status: HostStatus::Changed,
                containers: vec![],
                error: None,
                duration_ms: 1200,
                timings: Timings {
                    pull_ms: 300,
                    containers_ms: 400,
                    health_ms: 500,
                },
                reported_late: false,
            })
            .collect();
        let record = JobRecord {
            summary: JobSummary {
                job_id,
                hosts,
                started_at_unix_ms: 1_767_225_600_000 + j as i64,
                finished_at_unix_ms: 1_767_225_600_000 + j as i64 + 5000,
                resolve_ms: 0,
                cancelled_by: None,
            },
            target: String::new(),
            caller: "admin".into(),
            plan: false,
            running: false,
            targets: (0..fleet_size()).map(host_id).collect(),
            request: None,
            master: None,
            lease: None,
            kind: None,
            command: None,
        };
        let retention = JobRetention {
            keep: 1000,
            max_age: Duration::from_secs(1 << 40),
        };
        master.store.record_job(record, retention).await.unwrap();
    }
    // Two releases: the second moved app0 to another image.
    for digit in [0, 1] {
        let pins = [(
            RoleName::new("web").unwrap(),
            [(
                ContainerName::new("app0").unwrap(),
                brine_common::spec::ImageRef::new(format!(
                    "registry.example:5000/app@sha256:{}",
                    digit.to_string().repeat(64)
                ))
                .unwrap(),
            )]
            .into(),
        )]
        .into();
        master
            .store
            .add_release("20260101T000049-0000abcd".into(), "admin".into(), 1, pins)
            .await
            .unwrap();
    }
}

async fn get(app: &Router, path: &str, cookie: Option<&str>) -> (StatusCode, String, Duration) {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, format!("{COOKIE_NAME}={cookie}"));
    }
    let started = Instant::now();
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .unwrap();
    let took = started.elapsed();
    (status, String::from_utf8(body.to_vec()).unwrap(), took)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_of_a_fleet_of_a_thousand_hosts_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let master = master(dir.path()).await;
    fill(&master).await;
    let last_jobs = Arc::new(LastJobs::default());
    let stopping = CancellationToken::new();
    tokio::spawn(last_jobs.clone().keep(master.clone(), stopping.clone()));
    let app = router(Arc::new(Dashboard {
        master: master.clone(),
        last_jobs: last_jobs.clone(),
    }));
    let (token, _) = master
        .dashboard
        .create_login(
            Duration::from_secs(3600),
            false,
            "admin".into(),
            now_unix_ms(),
        )
        .unwrap();
    let cookie = master
        .dashboard
        .redeem(&token, now_unix_ms())
        .unwrap()
        .cookie;
    // The last jobs are read once, at start.
    let newest = format!("20260101T{:06}-0000abcd", JOBS - 1);
    for _ in 0..100 {
        if last_jobs.get(&host_id(0)).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // What each page costs is printed, for `bench/dashboard.sh`; a test asserts no timing.
    let pages = [
        "/".to_owned(),
        format!("/?page={}", fleet_size().div_ceil(100)),
        "/?target=label%3Aenv%3Dprod+and+not+web-0001".to_owned(),
        "/jobs".to_owned(),
        format!("/jobs/{newest}"),
        "/hosts/web-0500".to_owned(),
        "/lock".to_owned(),
        "/releases".to_owned(),
    ];
    for path in &pages {
        let (status, body, took) = get(&app, path, Some(&cookie)).await;
        eprintln!(
            "page {path}: {} bytes in {:.1} ms",
            body.len(),
            took.as_secs_f64() * 1000.0
        );
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(body.contains("<nav>") && body.contains("<main>"), "{path}");
    }
    let (_, fleet, _) = get(&app, "/", Some(&cookie)).await;
    assert_eq!(fleet.matches("<tr data-host=").count(), 100);
    assert!(fleet.contains("rel=\"next\""));
    assert!(fleet.contains(&format!(
        "<td class=\"last-job\"><a href=\"/jobs/{newest}\">"
    )));
    assert!(
        fleet.contains("3 (1 unhealthy)"),
        "web-0000 has an exited container"
    );
    let last_page = format!("/?page={}", fleet_size().div_ceil(100));
    let (_, last, _) = get(&app, &last_page, Some(&cookie)).await;
    assert!(last.contains("rel=\"prev\"") && !last.contains("rel=\"next\""));
    let (_, jobs, _) = get(&app, "/jobs", Some(&cookie)).await;
    assert_eq!(jobs.matches("<tr data-job=").count(), JOBS_PER_PAGE);
    assert!(jobs.contains("rel=\"next\""));
    let (_, job, _) = get(&app, &format!("/jobs/{newest}"), Some(&cookie)).await;
    assert_eq!(job.matches("<g data-host=").count(), fleet_size());
    assert_eq!(
        job.matches("<rect class=\"phase pull\"").count(),
        fleet_size()
    );
    assert!(job.contains("data-state=\"finished\""));
    let (_, releases, _) = get(&app, "/releases", Some(&cookie)).await;
    assert!(
        releases.contains("brine-master rollback --role web --to 1"),
        "{releases}"
    );
    let (_, compared, _) = get(&app, "/releases?from=1&to=2", Some(&cookie)).await;
    assert!(
        compared.contains("<tr data-role=\"web\" data-container=\"app0\">")
            && compared.contains(&format!("app@sha256:{}", "1".repeat(64))),
        "{compared}"
    );

    for path in ["/", "/jobs", "/static/live.js", "/hosts/web-0001", "/nope"] {
        let (status, body, _) = get(&app, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(body.contains("id=\"signed-out\""), "{path}");
    }
    stopping.cancel();
}
