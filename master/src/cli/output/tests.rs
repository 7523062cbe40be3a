//! The renderer fed events by hand: the words for hosts, statuses and durations, the JSON
//! document, and what the plain and JSON modes write, captured in a buffer instead of stdout.

use std::io::Write;
use std::sync::{Arc, Mutex};

use brine_common::names::{ContainerName, RoleName};
use brine_common::outcome::{ContainerAction, ContainerResult, HostStatus};
use brine_common::progress::{Phase, Progress};

use super::json::json_report;
use super::text::{describe_host, format_duration, host_line, no_result_line, status_counts};
use super::*;

fn id(name: &str) -> MinionId {
    MinionId::new(name).expect("test ids are valid")
}

fn job_id() -> JobId {
    JobId::new("20261126T101500Z-4f2a").expect("test job id is valid")
}

fn container(name: &str, action: ContainerAction) -> ContainerResult {
    ContainerResult {
        name: ContainerName::new(name).expect("test names are valid"),
        role: Some(RoleName::new(name).expect("test names are valid")),
        action,
        image: "127.0.0.1:5000/app:tested".to_owned(),
        image_digest: "127.0.0.1:5000/app@sha256:abc".to_owned(),
        error: (action == ContainerAction::Failed).then(|| "manifest unknown".to_owned()),
        previous_restored: false,
        needs_pull: false,
    }
}

fn report(
    host: &str,
    status: HostStatus,
    containers: Vec<ContainerResult>,
    error: Option<&str>,
) -> HostReport {
    HostReport {
        minion_id: id(host),
        status,
        containers,
        error: error.map(str::to_owned),
        duration_ms: 1234,
        timings: Default::default(),
        reported_late: false,
    }
}

fn changed(host: &str) -> HostReport {
    report(
        host,
        HostStatus::Changed,
        vec![
            container("web", ContainerAction::Replaced),
            container("worker", ContainerAction::Kept),
        ],
        None,
    )
}

fn pulling(host: &str, image: &str, done: u64) -> HighstateEvent {
    HighstateEvent::Progress {
        minion_id: id(host),
        progress: Progress {
            phase: Phase::Pulling,
            subject: image.to_owned(),
            bytes_done: done,
            bytes_total: 1000,
        },
    }
}

fn step(host: &str, phase: Phase, subject: &str) -> HighstateEvent {
    HighstateEvent::Progress {
        minion_id: id(host),
        progress: Progress {
            phase,
            subject: subject.to_owned(),
            bytes_done: 0,
            bytes_total: 0,
        },
    }
}

/// A writer the test keeps a handle on, standing in for stdout.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("test buffer lock").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("test buffer lock").clone())
            .expect("output is UTF-8")
    }
}

fn plain_renderer() -> (Renderer, Captured) {
    let out = Captured::default();
    let renderer = Renderer::with_mode(Mode::Plain(PlainMode::new(Box::new(out.clone()))));
    (renderer, out)
}

fn json_renderer() -> (Renderer, Captured) {
    let out = Captured::default();
    let renderer = Renderer::with_mode(Mode::Json(JsonMode {
        out: Box::new(out.clone()),
    }));
    (renderer, out)
}

fn summary(hosts: Vec<HostReport>) -> JobSummary {
    JobSummary {
        job_id: job_id(),
        hosts,
        started_at_unix_ms: 1_000,
        finished_at_unix_ms: 2_234,
        resolve_ms: 5,
        cancelled_by: None,
    }
}

/// The caller may hold a renderer across `.await` in a spawned task.
#[test]
fn renderer_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Renderer>();
}

#[test]
fn describes_each_status() {
    let cases = [
        (
            report(
                "a",
                HostStatus::Unchanged,
                vec![container("web", ContainerAction::Kept)],
                None,
            ),
            "unchanged (web: kept)",
        ),
        (changed("a"), "changed (web: replaced, worker: kept)"),
        (
            report(
                "a",
                HostStatus::Failed,
                vec![container("web", ContainerAction::Failed)],
                Some("container web: manifest unknown"),
            ),
            "failed: container web: manifest unknown (web: failed)",
        ),
        (
            report("a", HostStatus::Failed, vec![], Some("manifest unknown")),
            "failed: manifest unknown",
        ),
        (
            report(
                "a",
                HostStatus::Unreachable,
                vec![],
                Some("minion not connected"),
            ),
            "unreachable: minion not connected",
        ),
        (
            report("a", HostStatus::Unreachable, vec![], None),
            "unreachable",
        ),
        (report("a", HostStatus::TimedOut, vec![], None), "timed out"),
    ];
    for (report, expected) in cases {
        assert_eq!(describe_host(&report), expected);
    }
}

#[test]
fn host_lines_carry_a_mark_an_aligned_id_and_the_duration() {
    assert_eq!(
        host_line(&changed("web-1"), 6),
        "✔ web-1   changed (web: replaced, worker: kept)  1.2s"
    );
    assert_eq!(
        host_line(&report("web-2", HostStatus::TimedOut, vec![], None), 5),
        "✘ web-2  timed out  1.2s"
    );
    assert_eq!(no_result_line(&id("db"), 5), "? db     no result");
}

#[test]
fn errors_are_kept_on_one_line_without_escape_sequences() {
    let failed = report(
        "a",
        HostStatus::Failed,
        vec![],
        Some("pull failed:\r\n  \u{1b}[31mdenied\u{1b}[0m"),
    );
    assert_eq!(
        describe_host(&failed),
        "failed: pull failed: [31mdenied [0m"
    );
}

#[test]
fn durations_read_naturally() {
    assert_eq!(format_duration(0), "0.0s");
    assert_eq!(format_duration(1234), "1.2s");
    assert_eq!(format_duration(59_999), "59.9s");
    assert_eq!(format_duration(125_000), "2m05s");
}

#[test]
fn counts_list_nonzero_statuses_from_best_to_worst() {
    let statuses = [
        HostStatus::Failed,
        HostStatus::Changed,
        HostStatus::Unchanged,
    ];
    assert_eq!(
        status_counts(statuses, 0),
        "3 hosts: 1 unchanged, 1 changed, 1 failed"
    );
    assert_eq!(
        status_counts(
            [
                HostStatus::TimedOut,
                HostStatus::Unreachable,
                HostStatus::Changed,
                HostStatus::Changed
            ],
            0
        ),
        "4 hosts: 2 changed, 1 unreachable, 1 timed out"
    );
    assert_eq!(status_counts([HostStatus::Changed], 0), "1 host: 1 changed");
    assert_eq!(
        status_counts([HostStatus::Changed], 2),
        "3 hosts: 1 changed, 2 without a result"
    );
    assert_eq!(status_counts([], 0), "0 hosts");
}

#[test]
fn json_report_of_a_finished_job_has_the_documented_fields() {
    let mut state = JobState::new(0);
    let done = summary(vec![
        changed("web-1"),
        report(
            "web-2",
            HostStatus::Failed,
            vec![],
            Some("manifest unknown"),
        ),
    ]);
    state.record(&HighstateEvent::Summary(done), 5);
    let value = serde_json::to_value(json_report(&state, 99)).expect("serializes");

    let keys = |v: &serde_json::Value| {
        let mut keys: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&value),
        [
            "cancelled_by",
            "error",
            "finished_at_unix_ms",
            "hosts",
            "job_id",
            "not_accepted",
            "resolve_ms",
            "started_at_unix_ms",
            "success"
        ]
    );
    assert_eq!(value["job_id"], "20261126T101500Z-4f2a");
    assert_eq!(value["success"], false);
    assert_eq!(value["error"], serde_json::Value::Null);
    assert_eq!(value["started_at_unix_ms"], 1_000);
    assert_eq!(value["finished_at_unix_ms"], 2_234);

    let host = &value["hosts"][0];
    assert_eq!(
        keys(host),
        [
            "containers",
            "duration_ms",
            "error",
            "minion_id",
            "reported_late",
            "status",
            "timings"
        ]
    );
    assert_eq!(host["minion_id"], "web-1");
    assert_eq!(host["status"], "changed");
    assert_eq!(host["duration_ms"], 1234);
    assert_eq!(host["error"], serde_json::Value::Null);
    let web = &host["containers"][0];
    assert_eq!(
        keys(web),
        [
            "action",
            "error",
            "image",
            "image_digest",
            "name",
            "needs_pull",
            "previous_restored",
            "role"
        ]
    );
    assert_eq!(web["name"], "web");
    assert_eq!(web["role"], "web");
    assert_eq!(web["action"], "replaced");
    assert_eq!(value["hosts"][1]["status"], "failed");
    assert_eq!(value["hosts"][1]["error"], "manifest unknown");
}

#[test]
fn json_report_of_a_successful_job_says_so() {
    let mut state = JobState::new(0);
    state.record(&HighstateEvent::Summary(summary(vec![changed("a")])), 5);
    let report = json_report(&state, 99);
    assert!(report.success);
    assert_eq!(report.error, None);
}

#[test]
fn a_summary_that_left_its_hosts_to_the_events_is_judged_on_them() {
    let mut state = JobState::new(0);
    state.record(&HighstateEvent::HostFinished(changed("web-1")), 10);
    let failed = report("web-2", HostStatus::Failed, vec![], Some("no"));
    state.record(&HighstateEvent::HostFinished(failed), 11);
    let mut done = summary(vec![]);
    done.hosts.clear();
    state.record(&HighstateEvent::Summary(done), 20);
    let report = json_report(&state, 30);
    assert_eq!(report.hosts.len(), 2, "{report:?}");
    assert!(!report.success, "a failed host in the events fails the job");
}

#[test]
fn json_report_without_a_summary_fails_with_the_hosts_that_finished() {
    let mut state = JobState::new(0);
    state.record(
        &HighstateEvent::Started {
            job_id: job_id(),
            targets: vec![id("web-1"), id("web-2")],
            not_accepted: 0,
        },
        10,
    );
    state.record(&HighstateEvent::HostFinished(changed("web-1")), 20);
    let report = json_report(&state, 30);
    assert!(!report.success);
    assert_eq!(report.error.as_deref(), Some(STREAM_ENDED));
    assert_eq!(report.job_id, Some(job_id()));
    assert_eq!(report.hosts, vec![changed("web-1")]);
    assert_eq!(
        (report.started_at_unix_ms, report.finished_at_unix_ms),
        (10, 30)
    );

    let value = serde_json::to_value(&report).expect("serializes");
    assert_eq!(value["success"], false);
    assert_eq!(
        value["error"],
        "the master ended the stream before the job finished"
    );
}

#[test]
fn ndjson_mode_prints_each_event_as_it_comes() {
    let out = Captured::default();
    let mut renderer =
        Renderer::with_mode(Mode::Ndjson(super::NdjsonMode::new(Box::new(out.clone()))));
    renderer.event(&HighstateEvent::Started {
        job_id: job_id(),
        targets: vec![id("a")],
        not_accepted: 0,
    });
    renderer.event(&pulling("a", "app:1", 10));
    assert_eq!(out.text().lines().count(), 2, "printed as they come");
    renderer.event(&HighstateEvent::HostFinished(changed("a")));
    renderer.event(&HighstateEvent::Summary(summary(vec![changed("a")])));
    renderer.finish();
    let lines: Vec<serde_json::Value> = out
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect();
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    assert_eq!(kinds, ["started", "progress", "host_finished", "summary"]);
    assert_eq!(lines[0]["minion_ids"][0], "a");
    assert_eq!(lines[1]["phase"], "pulling");
    assert_eq!(lines[2]["status"], "changed");
    assert_eq!(lines[3]["job_id"], lines[0]["job_id"]);

    // A stream that stops early ends with a line that says so.
    let out = Captured::default();
    let mut renderer =
        Renderer::with_mode(Mode::Ndjson(super::NdjsonMode::new(Box::new(out.clone()))));
    renderer.event(&HighstateEvent::Started {
        job_id: job_id(),
        targets: vec![id("a")],
        not_accepted: 0,
    });
    renderer.finish();
    let last = out
        .text()
        .lines()
        .last()
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(last.contains(r#""event":"incomplete""#), "{last}");
}

#[test]
fn json_mode_prints_one_document_only_at_the_end() {
    let (mut renderer, out) = json_renderer();
    renderer.event(&HighstateEvent::Started {
        job_id: job_id(),
        targets: vec![id("a")],
        not_accepted: 0,
    });
    renderer.event(&pulling("a", "app:1", 10));
    renderer.event(&HighstateEvent::HostFinished(changed("a")));
    assert_eq!(out.text(), "");
    renderer.finish();
    renderer.finish();
    let value: serde_json::Value = serde_json::from_str(&out.text()).expect("one document");
    assert_eq!(value["success"], false);
    assert_eq!(value["hosts"][0]["minion_id"], "a");
}

#[test]
fn plain_mode_prints_one_line_per_step() {
    let (mut renderer, out) = plain_renderer();
    let events = [
        HighstateEvent::Started {
            job_id: job_id(),
            targets: vec![id("web-2"), id("web-1"), id("db")],
            not_accepted: 0,
        },
        pulling("web-1", "127.0.0.1:5000/app:tested", 0),
        pulling("web-1", "127.0.0.1:5000/app:tested", 500),
        pulling("web-1", "127.0.0.1:5000/app:tested", 1000),
        pulling("web-1", "127.0.0.1:5000/side:1", 10),
        pulling("web-1", "127.0.0.1:5000/app:tested", 1000),
        pulling("web-2", "127.0.0.1:5000/app:tested", 10),
        step("web-1", Phase::Creating, "web"),
        step("web-1", Phase::Creating, "web"),
        step("web-1", Phase::Starting, "web"),
        HighstateEvent::HostFinished(report(
            "web-1",
            HostStatus::Changed,
            vec![container("web", ContainerAction::Replaced)],
            None,
        )),
        // Stale progress after the verdict is dropped.
        step("web-1", Phase::Removing, "old"),
        // A host the job did not announce.
        step("cache", Phase::Stopping, "redis"),
        HighstateEvent::HostFinished(report(
            "web-2",
            HostStatus::Failed,
            vec![],
            Some("manifest unknown"),
        )),
        HighstateEvent::Summary(summary(vec![
            report("db", HostStatus::Unchanged, vec![], None),
            report(
                "web-1",
                HostStatus::Changed,
                vec![container("web", ContainerAction::Replaced)],
                None,
            ),
            report(
                "web-2",
                HostStatus::Failed,
                vec![],
                Some("manifest unknown"),
            ),
        ])),
    ];
    for event in &events {
        renderer.event(event);
    }
    renderer.finish();
    let expected = "\
job 20261126T101500Z-4f2a: 3 hosts
web-1: pulling 127.0.0.1:5000/app:tested
web-1: pulling 127.0.0.1:5000/side:1
web-2: pulling 127.0.0.1:5000/app:tested
web-1: creating web
web-1: starting web
web-1: changed (web: replaced)
cache: stopping redis
web-2: failed: manifest unknown
? cache  no result
✔ db     unchanged  1.2s
✔ web-1  changed (web: replaced)  1.2s
✘ web-2  failed: manifest unknown  1.2s
4 hosts: 1 unchanged, 1 changed, 1 failed, 1 without a result
";
    let text = out.text();
    assert_eq!(text, expected);
    assert!(!text.contains('\r') && !text.contains('\u{1b}'));
}

#[test]
fn plain_mode_reports_a_stream_that_ended_early() {
    let (mut renderer, out) = plain_renderer();
    renderer.event(&HighstateEvent::Started {
        job_id: job_id(),
        targets: vec![id("a"), id("b")],
        not_accepted: 0,
    });
    renderer.event(&HighstateEvent::HostFinished(changed("a")));
    renderer.finish();
    renderer.event(&HighstateEvent::HostFinished(changed("b")));
    renderer.finish();
    let expected = "\
job 20261126T101500Z-4f2a: 2 hosts
a: changed (web: replaced, worker: kept)
✔ a  changed (web: replaced, worker: kept)  1.2s
? b  no result
2 hosts: 1 changed, 1 without a result
error: the master ended the stream before the job finished
";
    assert_eq!(out.text(), expected);
}
