//! A fleet sending its results again costs one read of each job; hosts the job gave up on stay
//! awaited until their result is recorded.

use std::sync::atomic::{AtomicUsize, Ordering};

use brine_common::outcome::{HostReport, HostStatus, JobSummary};

use super::*;

fn host(name: &str) -> MinionId {
    MinionId::new(name).unwrap()
}

fn report(name: &str, status: HostStatus) -> HostReport {
    HostReport {
        minion_id: host(name),
        status,
        containers: vec![],
        error: None,
        duration_ms: 0,
        timings: Default::default(),
        reported_late: false,
    }
}

fn job(running: bool) -> JobRecord {
    JobRecord {
        summary: JobSummary {
            job_id: JobId::new("job-1").unwrap(),
            hosts: vec![
                report("web-1", HostStatus::Changed),
                report("web-2", HostStatus::Unreachable),
                report("web-3", HostStatus::Interrupted),
            ],
            started_at_unix_ms: 1,
            finished_at_unix_ms: if running { 0 } else { 2 },
            resolve_ms: 0,
            cancelled_by: None,
        },
        target: String::new(),
        caller: "ci".into(),
        plan: false,
        running,
        targets: vec![host("web-1"), host("web-2"), host("web-3")],
        request: None,
        master: None,
        lease: None,
        kind: None,
        command: None,
    }
}

#[tokio::test]
async fn a_fleet_sending_its_results_again_costs_one_read_of_the_job() {
    let late = LateReports::default();
    let reads = AtomicUsize::new(0);
    let id = JobId::new("job-1").unwrap();
    let load = || async {
        reads.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        Ok(Some(job(false)))
    };
    let hosts = ["web-1", "web-2", "web-3", "web-1", "web-4"].map(host);
    let asked =
        futures::future::join_all(hosts.iter().map(|name| late.awaited(&id, name, load))).await;
    assert_eq!(asked, [false, true, true, false, false]);
    assert_eq!(reads.load(Ordering::SeqCst), 1, "the job was read once");

    late.settled(&id, &host("web-2"));
    assert!(
        !late.awaited(&id, &host("web-2"), load).await,
        "recorded once"
    );
    assert!(late.awaited(&id, &host("web-3"), load).await);
    assert_eq!(reads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_running_job_or_a_failed_read_is_asked_again() {
    let late = LateReports::default();
    let id = JobId::new("job-1").unwrap();
    let web_1 = host("web-1");
    assert!(
        late.awaited(&id, &web_1, || async { Ok(Some(job(true))) })
            .await
    );
    assert!(
        late.awaited(&id, &web_1, || async {
            Err(StoreError::Backend("unavailable".into()))
        })
        .await
    );
    assert!(
        !late
            .awaited(&id, &web_1, || async { Ok(Some(job(false))) })
            .await
    );
}

#[tokio::test]
async fn an_unknown_job_awaits_nobody_and_old_jobs_are_forgotten() {
    let late = LateReports::default();
    let web_2 = host("web-2");
    let gone = JobId::new("job-gone").unwrap();
    assert!(!late.awaited(&gone, &web_2, || async { Ok(None) }).await);
    for n in 0..JOBS_KEPT {
        let id = JobId::new(format!("job-{n}")).unwrap();
        late.awaited(&id, &web_2, || async { Ok(Some(job(false))) })
            .await;
    }
    // Forgotten, the job is read again.
    assert!(
        late.awaited(&gone, &web_2, || async { Ok(Some(job(false))) })
            .await
    );
}
