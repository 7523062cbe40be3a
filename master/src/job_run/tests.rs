//! The rollout rules, driven by hand: every event and every instant is the test's.

use std::collections::BTreeMap;
use std::time::Duration;

use brine_common::names::{ContainerName, MinionId, RoleName};
use brine_common::outcome::{HostReport, HostStatus, JobId, JobResult, Timings};
use brine_common::spec::{ContainerSpec, DesiredState, HealthCheck, ImageRef, RestartPolicy};
use tokio::time::Instant;

use super::{JobPlan, JobRun, RECONNECT_GRACE, Step};
use crate::release::{Pins, Release};
use crate::rollout::{BatchSize, Rollout};

const TIMEOUT: Duration = Duration::from_secs(60);

fn host(n: usize) -> MinionId {
    MinionId::new(format!("h{n}")).unwrap()
}

fn image(tag: &str) -> ImageRef {
    ImageRef::new(format!("registry.example.com/app:{tag}")).unwrap()
}

/// One `web` container on `tag`.
fn web_on(tag: &str) -> DesiredState {
    DesiredState {
        containers: vec![ContainerSpec {
            role: RoleName::new("web").unwrap(),
            name: ContainerName::new("web").unwrap(),
            image: image(tag),
            command: vec![],
            env: BTreeMap::new(),
            ports: vec![],
            volumes: vec![],
            restart: RestartPolicy::default(),
            stop_timeout_seconds: 10,
            health: HealthCheck::default(),
            secret_env: Default::default(),
            proxy: None,
            hooks: None,
        }],
    }
}

fn plan(hosts: usize, rollout: Rollout) -> JobPlan {
    JobPlan {
        job_id: JobId::new("j-1").unwrap(),
        rollout,
        timeout: TIMEOUT,
        plan: false,
        desired: (1..=hosts).map(|n| (host(n), web_on("v2"))).collect(),
        blocked: BTreeMap::new(),
        previous_release: None,
    }
}

fn result(status: HostStatus) -> JobResult {
    JobResult {
        job_id: JobId::new("j-1").unwrap(),
        status,
        containers: vec![],
        error: (status == HostStatus::Failed).then(|| "it broke".to_owned()),
        timings: Timings::default(),
    }
}

/// The hosts each `Send` step addresses, and its job id.
fn sent(steps: &[Step]) -> Vec<(String, Vec<MinionId>)> {
    steps
        .iter()
        .filter_map(|step| match step {
            Step::Send { job_id, hosts, .. } => {
                Some((job_id.to_string(), hosts.keys().cloned().collect()))
            }
            _ => None,
        })
        .collect()
}

/// The final reports among `steps`, by host.
fn finished(steps: &[Step]) -> BTreeMap<MinionId, HostReport> {
    steps
        .iter()
        .filter_map(|step| match step {
            Step::Finished(report) => Some((report.minion_id.clone(), report.clone())),
            _ => None,
        })
        .collect()
}

fn statuses(run: &JobRun) -> Vec<(String, HostStatus)> {
    run.reports()
        .values()
        .map(|r| (r.minion_id.to_string(), r.status))
        .collect()
}

fn hosts(ns: &[usize]) -> Vec<MinionId> {
    ns.iter().copied().map(host).collect()
}

#[test]
fn a_job_taken_over_sends_nothing_again_to_hosts_that_reported_and_goes_on_from_its_batch() {
    let rollout = Rollout {
        batch: BatchSize::Count(2),
        max_failures: 5,
        ..Rollout::default()
    };
    // Hosts 1 and 2 (the first batch) and 3 (of the second) had reported.
    let done: BTreeMap<MinionId, HostReport> = [1, 2, 3]
        .into_iter()
        .map(|n| {
            let report = HostReport::from_result(host(n), result(HostStatus::Changed), 5, false);
            (host(n), report)
        })
        .collect();
    let mut run = JobRun::resume(plan(5, rollout), done);
    let t0 = Instant::now();
    // The second batch goes on with its host that had not reported; the first is not sent.
    let steps = run.start(t0);
    assert_eq!(sent(&steps), [("j-1".into(), hosts(&[4]))]);
    let Step::Send { batch, .. } = &steps[0] else {
        panic!("not a send first: {steps:?}");
    };
    assert_eq!(*batch, Some((2, 3)));
    let steps = run.result(host(4), result(HostStatus::Unchanged), t0);
    assert_eq!(sent(&steps), [("j-1".into(), hosts(&[5]))]);
    let steps = run.result(host(5), result(HostStatus::Changed), t0);
    assert_eq!(steps.last(), Some(&Step::Done));
    // Every host reported once: the three from before, two since.
    assert_eq!(run.reports().len(), 5);
    assert_eq!(finished(&steps).len(), 1);
}

#[test]
fn batches_go_out_one_after_the_other_as_hosts_report() {
    let rollout = Rollout {
        batch: BatchSize::Count(2),
        max_failures: 5,
        ..Rollout::default()
    };
    let mut run = JobRun::new(plan(5, rollout));
    let t0 = Instant::now();
    let steps = run.start(t0);
    assert_eq!(sent(&steps), [("j-1".into(), hosts(&[1, 2]))]);
    assert!(sent(&run.result(host(1), result(HostStatus::Changed), t0)).is_empty());
    let steps = run.result(host(2), result(HostStatus::Changed), t0);
    assert_eq!(steps[1], Step::BatchOver);
    assert_eq!(sent(&steps), [("j-1".into(), hosts(&[3, 4]))]);
    run.result(host(3), result(HostStatus::Unchanged), t0);
    let steps = run.result(host(4), result(HostStatus::Failed), t0);
    assert_eq!(sent(&steps), [("j-1".into(), hosts(&[5]))]);
    let steps = run.result(host(5), result(HostStatus::Changed), t0);
    assert_eq!(steps.last(), Some(&Step::Done));
    assert!(run.is_done());
    assert_eq!(run.reports().len(), 5);
}

#[test]
fn a_canary_goes_first_alone() {
    let rollout = Rollout {
        batch: BatchSize::All,
        canary: true,
        ..Rollout::default()
    };
    let mut run = JobRun::new(plan(3, rollout));
    let t0 = Instant::now();
    assert_eq!(sent(&run.start(t0)), [("j-1".into(), hosts(&[1]))]);
    let steps = run.result(host(1), result(HostStatus::Changed), t0);
    assert_eq!(sent(&steps), [("j-1".into(), hosts(&[2, 3]))]);
}

#[test]
fn too_many_failures_stop_the_rollout_and_skip_the_rest() {
    let rollout = Rollout {
        batch: BatchSize::Count(1),
        max_failures: 1,
        ..Rollout::default()
    };
    let mut run = JobRun::new(plan(4, rollout));
    let t0 = Instant::now();
    run.start(t0);
    // One failure is tolerated...
    let steps = run.result(host(1), result(HostStatus::Failed), t0);
    assert_eq!(sent(&steps), [("j-1".into(), hosts(&[2]))]);
    // ...the second stops it before the next batch.
    let steps = run.result(host(2), result(HostStatus::Failed), t0);
    assert!(sent(&steps).is_empty());
    let mut skipped = finished(&steps);
    assert_eq!(skipped.remove(&host(2)).unwrap().status, HostStatus::Failed);
    assert_eq!(skipped.keys().cloned().collect::<Vec<_>>(), hosts(&[3, 4]));
    for report in skipped.values() {
        assert_eq!(report.status, HostStatus::Skipped);
        assert!(
            report
                .error
                .as_deref()
                .unwrap()
                .starts_with("the rollout stopped after 2 hosts failed (1 allowed)"),
            "{report:?}"
        );
    }
    assert_eq!(steps.last(), Some(&Step::Done));
}

#[test]
fn a_host_that_never_reports_times_out_at_the_deadline() {
    let mut run = JobRun::new(plan(2, Rollout::default()));
    let t0 = Instant::now();
    run.start(t0);
    run.result(host(1), result(HostStatus::Unchanged), t0);
    assert_eq!(run.wake_at(), Some(t0 + TIMEOUT));
    assert!(
        run.time_passed(t0 + TIMEOUT - Duration::from_millis(1))
            .is_empty()
    );
    let steps = run.time_passed(t0 + TIMEOUT);
    let report = &finished(&steps)[&host(2)];
    assert_eq!(report.status, HostStatus::TimedOut);
    assert_eq!(report.error.as_deref(), Some("no report within 1m"));
    assert_eq!(report.duration_ms, 60_000);
    assert!(run.is_done());
}

#[test]
fn a_host_whose_link_drops_has_the_grace_to_report_then_is_unreachable() {
    let mut run = JobRun::new(plan(2, Rollout::default()));
    let t0 = Instant::now();
    run.start(t0);
    let lost = t0 + Duration::from_secs(1);
    run.link_lost(&host(1), lost);
    run.link_lost(&host(2), lost);
    assert_eq!(run.wake_at(), Some(lost + RECONNECT_GRACE));
    // One comes back in time and reports; the other does not.
    let steps = run.result(
        host(1),
        result(HostStatus::Changed),
        lost + RECONNECT_GRACE / 2,
    );
    assert_eq!(finished(&steps)[&host(1)].status, HostStatus::Changed);
    assert!(
        run.time_passed(lost + RECONNECT_GRACE - Duration::from_millis(1))
            .is_empty()
    );
    let steps = run.time_passed(lost + RECONNECT_GRACE);
    let report = &finished(&steps)[&host(2)];
    assert_eq!(report.status, HostStatus::Unreachable);
    assert!(
        report
            .error
            .as_deref()
            .unwrap()
            .contains("did not come back")
    );
    assert!(run.is_done());
}

#[test]
fn a_host_given_up_on_that_reports_later_is_recorded_as_reported_late() {
    let rollout = Rollout {
        batch: BatchSize::Count(1),
        max_failures: 5,
        ..Rollout::default()
    };
    let mut run = JobRun::new(plan(2, rollout));
    let t0 = Instant::now();
    run.start(t0);
    let steps = run.time_passed(t0 + TIMEOUT);
    assert_eq!(finished(&steps)[&host(1)].status, HostStatus::TimedOut);
    assert_eq!(sent(&steps), [("j-1".into(), hosts(&[2]))]);
    // During the next batch, the first host's result arrives after all.
    let steps = run.result(host(1), result(HostStatus::Changed), t0 + TIMEOUT * 2);
    let late = &finished(&steps)[&host(1)];
    assert_eq!(late.status, HostStatus::Changed);
    assert!(late.reported_late);
    // A second copy of it changes nothing more.
    assert!(finished(&run.result(host(1), result(HostStatus::Changed), t0)).is_empty());
}

#[test]
fn an_unreachable_host_fails_at_once_and_a_blocked_one_without_a_command() {
    let mut plan = plan(2, Rollout::default());
    plan.blocked.insert(
        host(3),
        HostReport {
            minion_id: host(3),
            status: HostStatus::Failed,
            containers: vec![],
            error: Some("the tag does not resolve".into()),
            duration_ms: 0,
            timings: Timings::default(),
            reported_late: false,
        },
    );
    let mut run = JobRun::new(plan);
    let t0 = Instant::now();
    let steps = run.start(t0);
    assert_eq!(finished(&steps)[&host(3)].status, HostStatus::Failed);
    assert_eq!(sent(&steps), [("j-1".into(), hosts(&[1, 2]))]);
    let steps = run.undeliverable(host(1), "the minion is not connected", t0);
    assert_eq!(finished(&steps)[&host(1)].status, HostStatus::Unreachable);
    run.result(host(2), result(HostStatus::Unchanged), t0);
    assert!(run.is_done());
    assert_eq!(run.targets(), hosts(&[1, 2, 3]));
}

#[test]
fn a_cancel_during_the_batch_wait_skips_the_rest_and_reverts_nothing() {
    let rollout = Rollout {
        batch: BatchSize::Count(1),
        batch_wait: Duration::from_secs(30),
        auto_revert: true,
        max_failures: 5,
        ..Rollout::default()
    };
    let mut plan = plan(3, rollout);
    plan.previous_release = Some(release_on("v1"));
    let mut run = JobRun::new(plan);
    let t0 = Instant::now();
    run.start(t0);
    // The batch wait holds the next batch back.
    assert!(
        run.result(host(1), result(HostStatus::Failed), t0)
            .contains(&Step::BatchOver)
    );
    assert_eq!(run.wake_at(), Some(t0 + Duration::from_secs(30)));
    let steps = run.cancel("admin (admin)", t0 + Duration::from_secs(5));
    assert!(
        sent(&steps).is_empty(),
        "nothing more is sent, not even a revert"
    );
    let skipped = finished(&steps);
    assert_eq!(skipped.keys().cloned().collect::<Vec<_>>(), hosts(&[2, 3]));
    assert!(skipped.values().all(|r| {
        r.status == HostStatus::Skipped
            && r.error
                .as_deref()
                .unwrap()
                .contains("cancelled by admin (admin)")
    }));
    assert_eq!(run.cancelled_by(), Some("admin (admin)"));
    assert!(run.is_done());
}

#[test]
fn the_batch_wait_passes_before_the_next_batch() {
    let rollout = Rollout {
        batch: BatchSize::Count(1),
        batch_wait: Duration::from_secs(30),
        ..Rollout::default()
    };
    let mut run = JobRun::new(plan(2, rollout));
    let t0 = Instant::now();
    run.start(t0);
    run.result(host(1), result(HostStatus::Changed), t0);
    assert!(run.time_passed(t0 + Duration::from_secs(29)).is_empty());
    let steps = run.time_passed(t0 + Duration::from_secs(30));
    assert_eq!(sent(&steps), [("j-1".into(), hosts(&[2]))]);
}

/// Release 7, running `web` on `tag`.
fn release_on(tag: &str) -> Release {
    let mut pins = Pins::new();
    pins.insert(
        RoleName::new("web").unwrap(),
        BTreeMap::from([(ContainerName::new("web").unwrap(), image(tag))]),
    );
    Release {
        id: 7,
        job_id: "j-0".into(),
        caller: "admin (admin)".into(),
        created_at_unix_ms: 0,
        pins,
    }
}

#[test]
fn a_failed_rollout_returns_the_changed_hosts_to_the_previous_release() {
    let rollout = Rollout {
        auto_revert: true,
        max_failures: 5,
        ..Rollout::default()
    };
    let mut plan = plan(3, rollout);
    plan.previous_release = Some(release_on("v1"));
    let mut run = JobRun::new(plan);
    let t0 = Instant::now();
    run.start(t0);
    run.result(host(1), result(HostStatus::Changed), t0);
    run.result(host(2), result(HostStatus::Failed), t0);
    let steps = run.result(
        host(3),
        result(HostStatus::Unchanged),
        t0 + Duration::from_secs(2),
    );
    // Only the changed host goes back, to the previous release's image, under its own job id.
    let Some(Step::Send {
        job_id,
        hosts: reverted,
        plan: false,
        batch: None,
        ..
    }) = steps.iter().find(|s| matches!(s, Step::Send { .. }))
    else {
        panic!("no revert in {steps:?}");
    };
    assert_eq!(job_id.as_str(), "j-1-revert");
    assert_eq!(reverted.keys().cloned().collect::<Vec<_>>(), hosts(&[1]));
    assert_eq!(reverted[&host(1)], web_on("v1"));
    assert!(
        !run.shows_progress_of(&host(1)),
        "a revert's progress is not shown"
    );

    let steps = run.result(
        host(1),
        result(HostStatus::Changed),
        t0 + Duration::from_secs(5),
    );
    let report = &finished(&steps)[&host(1)];
    assert_eq!(report.status, HostStatus::Failed);
    assert_eq!(
        report.error.as_deref(),
        Some(
            "changed, then returned to release 7 because the rollout failed; the revert \
             succeeded"
        )
    );
    assert_eq!(steps.last(), Some(&Step::Done));
    assert_eq!(
        statuses(&run),
        [
            ("h1".into(), HostStatus::Failed),
            ("h2".into(), HostStatus::Failed),
            ("h3".into(), HostStatus::Unchanged)
        ]
    );
}

#[test]
fn nothing_is_reverted_without_an_earlier_release_or_for_a_dry_run() {
    let rollout = Rollout {
        auto_revert: true,
        max_failures: 5,
        ..Rollout::default()
    };
    let mut run = JobRun::new(plan(2, rollout.clone()));
    let t0 = Instant::now();
    run.start(t0);
    run.result(host(1), result(HostStatus::Changed), t0);
    let steps = run.result(host(2), result(HostStatus::Failed), t0);
    assert!(sent(&steps).is_empty());
    assert!(run.is_done());

    let mut dry = plan(2, rollout);
    dry.plan = true;
    dry.previous_release = Some(release_on("v1"));
    let mut run = JobRun::new(dry);
    let steps = run.start(t0);
    assert!(matches!(steps[0], Step::Send { plan: true, .. }));
    run.result(host(1), result(HostStatus::Changed), t0);
    let steps = run.result(host(2), result(HostStatus::Failed), t0);
    assert!(sent(&steps).is_empty());
    assert!(run.is_done());
}

#[test]
fn progress_is_shown_only_for_hosts_of_the_running_batch_that_have_not_reported() {
    let rollout = Rollout {
        batch: BatchSize::Count(1),
        ..Rollout::default()
    };
    let mut run = JobRun::new(plan(2, rollout));
    let t0 = Instant::now();
    run.start(t0);
    assert!(run.shows_progress_of(&host(1)));
    assert!(!run.shows_progress_of(&host(2)));
    run.result(host(1), result(HostStatus::Changed), t0);
    assert!(!run.shows_progress_of(&host(1)));
    assert!(run.shows_progress_of(&host(2)));
}

/// The hosts each `Prefetch` step asks, in order.
fn fetched(steps: &[Step]) -> Vec<MinionId> {
    steps
        .iter()
        .filter_map(|step| match step {
            Step::Prefetch { hosts, .. } => Some(hosts.iter().map(|(id, _)| id.clone())),
            _ => None,
        })
        .flatten()
        .collect()
}

fn fetching_ahead(concurrent_pulls: u32) -> Rollout {
    Rollout {
        batch: BatchSize::Count(2),
        max_failures: 5,
        concurrent_pulls,
        ..Rollout::default()
    }
}

#[test]
fn later_batches_fetch_ahead_a_few_at_a_time_and_the_first_in_its_turn() {
    let mut run = JobRun::new(plan(7, fetching_ahead(3)));
    let t0 = Instant::now();
    let steps = run.start(t0);
    assert_eq!(sent(&steps), [("j-1".into(), hosts(&[1, 2]))]);
    assert_eq!(fetched(&steps), hosts(&[3, 4, 5]));
    let Some(Step::Prefetch { hosts: asked, .. }) = steps.last() else {
        panic!("{steps:?}");
    };
    assert_eq!(asked[0].1, [image("v2")]);
    assert_eq!(fetched(&run.prefetched(&host(4), Ok(()), t0)), hosts(&[6]));
    // A host that cannot be asked gives its slot to the next one.
    assert_eq!(fetched(&run.prefetch_unanswered(&host(3), t0)), hosts(&[7]));
    run.result(host(1), result(HostStatus::Changed), t0);
    let steps = run.result(host(2), result(HostStatus::Changed), t0);
    assert_eq!(sent(&steps), [("j-1".into(), hosts(&[3, 4]))]);
    assert!(fetched(&steps).is_empty(), "nobody waits to fetch");
}

#[test]
fn a_host_whose_fetch_failed_is_skipped_in_its_turn_and_the_rest_go_on() {
    let mut run = JobRun::new(plan(4, fetching_ahead(8)));
    let t0 = Instant::now();
    assert_eq!(fetched(&run.start(t0)), hosts(&[3, 4]));
    run.prefetched(
        &host(3),
        Err("image x could not be pulled: denied".into()),
        t0,
    );
    run.prefetched(&host(4), Ok(()), t0);
    run.result(host(1), result(HostStatus::Changed), t0);
    let steps = run.result(host(2), result(HostStatus::Changed), t0);
    assert_eq!(sent(&steps), [("j-1".into(), hosts(&[4]))]);
    let skipped = &finished(&steps)[&host(3)];
    assert_eq!(skipped.status, HostStatus::Skipped);
    assert_eq!(
        skipped.error.as_deref(),
        Some(
            "its images could not be fetched ahead of its batch: image x could not be pulled: \
             denied; nothing was sent to this host"
        )
    );
}

#[test]
fn nothing_is_fetched_ahead_for_one_batch_a_plan_or_a_cap_of_zero() {
    let t0 = Instant::now();
    let one_batch = Rollout {
        concurrent_pulls: 8,
        ..Rollout::default()
    };
    assert!(fetched(&JobRun::new(plan(4, one_batch)).start(t0)).is_empty());
    let mut dry = plan(4, fetching_ahead(8));
    dry.plan = true;
    assert!(fetched(&JobRun::new(dry).start(t0)).is_empty());
    assert!(fetched(&JobRun::new(plan(4, fetching_ahead(0))).start(t0)).is_empty());
}

#[test]
fn an_unanswered_fetch_wakes_the_job_to_free_its_slot() {
    let rollout = Rollout {
        batch: BatchSize::Count(1),
        concurrent_pulls: 1,
        batch_wait: Duration::from_secs(3600),
        ..Rollout::default()
    };
    let mut run = JobRun::new(plan(3, rollout));
    let t0 = Instant::now();
    assert_eq!(fetched(&run.start(t0)), hosts(&[2]));
    run.result(host(1), result(HostStatus::Changed), t0);
    // Between batches for an hour: the fetch's deadline comes first.
    assert_eq!(run.wake_at(), Some(t0 + TIMEOUT));
    assert_eq!(fetched(&run.time_passed(t0 + TIMEOUT)), hosts(&[3]));
}
