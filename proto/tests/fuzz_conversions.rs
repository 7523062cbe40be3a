//! Fuzz targets for every conversion of a message from the wire into the domain model.
//!
//! Each input is used twice: decoded as the message's protobuf encoding, as a peer would send
//! it, and read as a recipe for a message whose fields are often valid (so conversions get past
//! their first check). Each test replays its regression corpus (`tests/corpus/<test name>/`, one
//! input per file), then runs bolero: random inputs for a second under `cargo test`,
//! coverage-guided libFuzzer under `cargo bolero test` (`bench/fuzz.sh`). A conversion must refuse
//! with a named field or accept; what it accepts must survive domain -> wire -> domain unchanged.

use std::fmt::Debug;
use std::path::Path;

use arbitrary::Unstructured;
use brine_common::fleet_event::{FleetEvent, HookFailure};
use brine_common::host::{Facts, HostEvent, RunningContainer};
use brine_common::limits::{MAX_CONTAINERS, MAX_ERROR_TEXT, MAX_FACT_TEXT, MAX_LABELS};
use brine_common::outcome::{ContainerResult, HighstateEvent, HostReport, JobResult};
use brine_common::progress::Progress;
use brine_common::session::{SessionMessage, SessionRequest, SessionsEvent, SessionsRequest};
use brine_common::spec::{ContainerSpec, DesiredState, HealthCheck};
use brine_proto::{InvalidField, pb};
use prost::Message;

/// Runs `check` on every file of `tests/corpus/<target>/`, naming the file it fails on.
fn replay_corpus(target: &str, check: impl Fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.expect("a readable corpus directory").path())
        .collect();
    files.sort();
    for file in files {
        let input = std::fs::read(&file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        // Shown with the failure: the test harness prints a failed test's output.
        eprintln!("replaying {}", file.display());
        check(&input);
    }
}

/// Converts `message` and checks what came of it.
fn check_conversion<W, D>(message: W)
where
    D: TryFrom<W, Error = InvalidField> + Into<W> + Clone + PartialEq + Debug,
{
    match D::try_from(message) {
        Ok(domain) => {
            let again = D::try_from(domain.clone().into());
            assert_eq!(again.as_ref(), Ok(&domain), "domain -> wire -> domain");
        }
        Err(err) => {
            assert!(!err.field.is_empty() && !err.message.is_empty(), "{err:?}");
            let status = tonic::Status::from(err);
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
        }
    }
}

macro_rules! conversion_target {
    ($test:ident: $wire:ty => $domain:ty, built by $build:ident) => {
        #[test]
        fn $test() {
            let check = |input: &[u8]| {
                if let Ok(message) = <$wire>::decode(input) {
                    check_conversion::<$wire, $domain>(message);
                }
                // Inputs too short for a whole recipe are simply skipped.
                if let Ok(message) = $build(&mut Unstructured::new(input)) {
                    check_conversion::<$wire, $domain>(message);
                }
            };
            replay_corpus(stringify!($test), check);
            bolero::check!().for_each(check);
        }
    };
}

conversion_target!(container_spec: pb::ContainerSpec => ContainerSpec, built by container_spec_message);
conversion_target!(health_check: pb::HealthCheck => HealthCheck, built by health_check_message);
conversion_target!(desired_state: pb::DesiredState => DesiredState, built by desired_state_message);
conversion_target!(facts: pb::Facts => Facts, built by facts_message);
conversion_target!(running_container: pb::RunningContainer => RunningContainer, built by running_container_message);
conversion_target!(progress: pb::Progress => Progress, built by progress_message);
conversion_target!(host_event: pb::HostEvent => HostEvent, built by host_event_message);
conversion_target!(container_result: pb::ContainerResult => ContainerResult, built by container_result_message);
conversion_target!(job_result: pb::JobResult => JobResult, built by job_result_message);
conversion_target!(host_report: pb::HostReport => HostReport, built by host_report_message);
conversion_target!(highstate_event: pb::JobEvent => HighstateEvent, built by highstate_event_message);
conversion_target!(start_session: pb::StartSession => SessionRequest, built by start_session_message);
conversion_target!(exec_request: pb::ExecRequest => SessionsRequest, built by exec_request_message);
conversion_target!(logs_request: pb::ContainerLogsRequest => SessionsRequest, built by logs_request_message);
conversion_target!(exec_response: pb::ExecResponse => SessionsEvent, built by exec_response_message);

/// What a minion says about a session (three messages of the link), checked as
/// [`check_conversion`] does, through the link's message kind.
#[test]
fn session_message() {
    use pb::connect_request::Kind;
    let check_kind = |kind: Kind| {
        let converted = match kind.clone() {
            Kind::SessionAccepted(m) => SessionMessage::try_from(m),
            Kind::SessionOutput(m) => SessionMessage::try_from(m),
            Kind::SessionEnded(m) => SessionMessage::try_from(m),
            _ => return,
        };
        match converted {
            Ok(domain) => {
                let again = match Kind::from(domain.clone()) {
                    Kind::SessionAccepted(m) => SessionMessage::try_from(m),
                    Kind::SessionOutput(m) => SessionMessage::try_from(m),
                    Kind::SessionEnded(m) => SessionMessage::try_from(m),
                    other => panic!("a session message became {other:?}"),
                };
                assert_eq!(again, Ok(domain), "domain -> wire -> domain");
            }
            Err(err) => assert!(!err.field.is_empty() && !err.message.is_empty(), "{err:?}"),
        }
    };
    let check = |input: &[u8]| {
        if let Ok(pb::ConnectRequest { kind: Some(kind) }) = pb::ConnectRequest::decode(input) {
            check_kind(kind);
        }
        if let Ok(kind) = session_message_kind(&mut Unstructured::new(input)) {
            check_kind(kind);
        }
    };
    replay_corpus("session_message", check);
    bolero::check!().for_each(check);
}
conversion_target!(fleet_event: pb::FleetEvent => FleetEvent, built by fleet_event_message);
conversion_target!(hook_failure: pb::HookFailure => HookFailure, built by hook_failure_message);

type Built<T> = arbitrary::Result<T>;

/// True one time in 16, and false for an input that has run out (`Unstructured::ratio` is true).
fn rarely(u: &mut Unstructured<'_>) -> Built<bool> {
    Ok(u.int_in_range(0..=15)? == 15)
}

/// Mostly one of `good`, sometimes one of `bad`, now and then any text or a long one: valid
/// values reach the checks behind the first, and a message with several fields is often whole.
fn text(u: &mut Unstructured<'_>, good: &[&str], bad: &[&str]) -> Built<String> {
    // An input that runs out reads as zeros: that picks the first good value.
    Ok(match u.int_in_range(0..=15)? {
        0..=11 => (*u.choose(good)?).to_owned(),
        12 | 13 => (*u.choose(bad)?).to_owned(),
        14 => u.arbitrary()?,
        _ => "x".repeat(u.int_in_range(0..=MAX_ERROR_TEXT + 1)?),
    })
}

/// Likewise for numbers.
fn number(u: &mut Unstructured<'_>, good: &[u32], bad: &[u32]) -> Built<u32> {
    Ok(match u.int_in_range(0..=15)? {
        0..=11 => *u.choose(good)?,
        12..=14 => *u.choose(bad)?,
        _ => u.arbitrary()?,
    })
}

/// An enum's value: mostly one of `good`, otherwise unspecified (0), unknown or any number.
fn enum_value(u: &mut Unstructured<'_>, good: std::ops::RangeInclusive<i32>) -> Built<i32> {
    Ok(match u.int_in_range(0..=15)? {
        0..=12 => u.int_in_range(good)?,
        13 => 0,
        14 => good.end() + 1,
        _ => u.arbitrary()?,
    })
}

fn name(u: &mut Unstructured<'_>) -> Built<String> {
    const GOOD: &[&str] = &["web", "web-1", "db_2", "worker"];
    const BAD: &[&str] = &[
        "web.v2",
        "next",
        "",
        "-web",
        "wéb",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ];
    text(u, GOOD, BAD)
}

fn image(u: &mut Unstructured<'_>) -> Built<String> {
    const GOOD: &[&str] = &[
        "app:1",
        "127.0.0.1:5000/mynames/app:tested",
        "app@sha256:0123456789abcdef0123456789abcdef",
    ];
    text(u, GOOD, &["Bad Image", ""])
}

fn job_id(u: &mut Unstructured<'_>) -> Built<String> {
    text(u, &["j-1", "20261126T120000Z-ab12"], &["", "j 1"])
}

fn word(u: &mut Unstructured<'_>) -> Built<String> {
    const GOOD: &[&str] = &["", "running", "exited", "0.1.0", "debian", "a message"];
    text(u, GOOD, &["\u{1b}[2J", "\0"])
}

fn port_number(u: &mut Unstructured<'_>) -> Built<u32> {
    number(u, &[1, 80, 8000, 65_535], &[0, 65_536, u32::MAX])
}

/// A duration: mostly sensible milliseconds, now and then unset or malformed (negative,
/// nanos out of range, mixed signs, beyond any range).
fn duration(u: &mut Unstructured<'_>) -> Built<Option<prost_types::Duration>> {
    Ok(match u.int_in_range(0..=9)? {
        0 => None,
        1 => Some(prost_types::Duration {
            seconds: u.arbitrary()?,
            nanos: u.arbitrary()?,
        }),
        _ => {
            let ms = number(u, &[1, 500, 1_000, 2_000, 60_000], &[0, u32::MAX])?;
            Some(prost_types::Duration {
                seconds: i64::from(ms / 1000),
                nanos: i32::try_from(ms % 1000).unwrap_or(0) * 1_000_000,
            })
        }
    })
}

/// A timestamp: mostly a time of this century, now and then unset or any bits at all.
fn timestamp(u: &mut Unstructured<'_>) -> Built<Option<prost_types::Timestamp>> {
    Ok(match u.int_in_range(0..=9)? {
        0 => None,
        1 => Some(prost_types::Timestamp {
            seconds: u.arbitrary()?,
            nanos: u.arbitrary()?,
        }),
        _ => Some(prost_types::Timestamp {
            seconds: u.int_in_range(1_700_000_000..=1_900_000_000)?,
            nanos: u.int_in_range(0..=999_999_999)?,
        }),
    })
}

/// Up to `max` items mostly; now and then one more than `limit`, the bound the conversion enforces.
fn list<T>(
    u: &mut Unstructured<'_>,
    max: usize,
    limit: usize,
    mut item: impl FnMut(&mut Unstructured<'_>) -> Built<T>,
) -> Built<Vec<T>> {
    let len = if rarely(u)? {
        limit + 1
    } else {
        u.int_in_range(0..=max)?
    };
    // Past the end of the input every item is the same; that is enough to test a bound.
    (0..len).map(|_| item(u)).collect()
}

fn health_check_message(u: &mut Unstructured<'_>) -> Built<pb::HealthCheck> {
    use pb::health_check::Probe;
    let probe = match u.int_in_range(0..=3)? {
        0 => None,
        1 => Some(Probe::Http(pb::HttpProbe {
            port: port_number(u)?,
            path: text(u, &["/health", "/"], &["health", ""])?,
        })),
        2 => Some(Probe::Tcp(pb::TcpProbe {
            port: port_number(u)?,
        })),
        _ => Some(Probe::Exec(pb::ExecProbe {
            command: list(u, 3, 3, word)?,
        })),
    };
    Ok(pb::HealthCheck {
        probe,
        interval: duration(u)?,
        min_healthy: duration(u)?,
        deadline: duration(u)?,
    })
}

fn container_spec_message(u: &mut Unstructured<'_>) -> Built<pb::ContainerSpec> {
    const IPS: &[&str] = &["", "127.0.0.1", "::1", "::ffff:1.2.3.4", "0.0.0.0"];
    Ok(pb::ContainerSpec {
        role: name(u)?,
        name: name(u)?,
        image: image(u)?,
        command: list(u, 3, 3, word)?,
        env: list(u, 3, 3, |u| {
            Ok((text(u, &["A", "APP_ENV"], &["", "A=B"])?, word(u)?))
        })?
        .into_iter()
        .collect(),
        ports: list(u, 3, 3, |u| {
            Ok(pb::PortMapping {
                host_ip: text(u, IPS, &["1.2.3", "[::1]"])?,
                // 0 publishes on a port Docker picks.
                host_port: number(u, &[0, 80, 8080], &[65_536, u32::MAX])?,
                container_port: port_number(u)?,
                protocol: enum_value(u, 1..=2)?,
            })
        })?,
        volumes: list(u, 2, 2, |u| {
            Ok(pb::VolumeMount {
                source: text(u, &["/srv", "data"], &["", "a:b"])?,
                target: text(u, &["/data", "/"], &["data", "/a:b", ""])?,
                read_only: u.arbitrary()?,
            })
        })?,
        restart: enum_value(u, 1..=4)?,
        stop_timeout: duration(u)?,
        health: if rarely(u)? {
            None
        } else {
            Some(health_check_message(u)?)
        },
        secret_env: list(u, 2, 2, |u| {
            Ok((
                text(u, &["DB_PASSWORD", "APP_ENV"], &["", "A=B"])?,
                pb::SecretRef {
                    secret: text(u, &["db", "api-key"], &["", "a/b"])?,
                    fingerprint: text(u, &["0123abcd", "ff"], &["", "xyz"])?,
                },
            ))
        })?
        .into_iter()
        .collect(),
        proxy: if u.arbitrary()? {
            None
        } else {
            Some(pb::ProxySpec {
                mode: enum_value(u, 0..=2)?,
                drain: duration(u)?,
            })
        },
        hooks: if u.arbitrary()? {
            None
        } else {
            Some(pb::RolloutHooks {
                before_replace: list(u, 2, 2, word)?,
                after_healthy: list(u, 2, 2, word)?,
                timeout: duration(u)?,
            })
        },
    })
}

fn desired_state_message(u: &mut Unstructured<'_>) -> Built<pb::DesiredState> {
    Ok(pb::DesiredState {
        containers: list(u, 4, 4, container_spec_message)?,
    })
}

fn facts_message(u: &mut Unstructured<'_>) -> Built<pb::Facts> {
    let fact = |u: &mut Unstructured<'_>| -> Built<String> {
        if rarely(u)? {
            Ok("x".repeat(MAX_FACT_TEXT + u.int_in_range(0..=1)?))
        } else {
            word(u)
        }
    };
    Ok(pb::Facts {
        hostname: fact(u)?,
        os: fact(u)?,
        kernel: fact(u)?,
        docker_version: fact(u)?,
        cpus: u.arbitrary()?,
        memory_bytes: u.arbitrary()?,
        labels: list(u, 3, MAX_LABELS, |u| Ok((name(u)?, name(u)?)))?
            .into_iter()
            .collect(),
        os_id: fact(u)?,
    })
}

fn running_container_message(u: &mut Unstructured<'_>) -> Built<pb::RunningContainer> {
    Ok(pb::RunningContainer {
        name: name(u)?,
        role: name(u)?,
        image: image(u)?,
        image_digest: image(u)?,
        state: word(u)?,
        container_id: word(u)?,
    })
}

fn progress_message(u: &mut Unstructured<'_>) -> Built<pb::Progress> {
    Ok(pb::Progress {
        phase: enum_value(u, 1..=5)?,
        subject: image(u)?,
        bytes_done: u.arbitrary()?,
        bytes_total: u.arbitrary()?,
    })
}

fn host_event_message(u: &mut Unstructured<'_>) -> Built<pb::HostEvent> {
    Ok(pb::HostEvent {
        at: timestamp(u)?,
        kind: enum_value(u, 1..=7)?,
        message: word(u)?,
    })
}

fn container_result_message(u: &mut Unstructured<'_>) -> Built<pb::ContainerResult> {
    Ok(pb::ContainerResult {
        name: name(u)?,
        role: name(u)?,
        action: enum_value(u, 1..=5)?,
        image: image(u)?,
        image_digest: image(u)?,
        error: word(u)?,
        previous_restored: u.arbitrary()?,
        needs_pull: u.arbitrary()?,
    })
}

fn timings_message(u: &mut Unstructured<'_>) -> Built<Option<pb::Timings>> {
    Ok(if u.arbitrary()? {
        Some(pb::Timings {
            pull: duration(u)?,
            containers: duration(u)?,
            health: duration(u)?,
        })
    } else {
        None
    })
}

fn job_result_message(u: &mut Unstructured<'_>) -> Built<pb::JobResult> {
    Ok(pb::JobResult {
        job_id: job_id(u)?,
        status: enum_value(u, 1..=7)?,
        containers: list(u, 3, MAX_CONTAINERS, container_result_message)?,
        error: word(u)?,
        timings: timings_message(u)?,
    })
}

fn host_report_message(u: &mut Unstructured<'_>) -> Built<pb::HostReport> {
    Ok(pb::HostReport {
        minion_id: name(u)?,
        status: enum_value(u, 1..=7)?,
        containers: list(u, 3, MAX_CONTAINERS, container_result_message)?,
        error: word(u)?,
        duration: duration(u)?,
        timings: timings_message(u)?,
        reported_late: u.arbitrary()?,
    })
}

fn hook_failure_message(u: &mut Unstructured<'_>) -> Built<pb::HookFailure> {
    Ok(pb::HookFailure {
        hook: name(u)?,
        event_sequence: u.arbitrary()?,
        event_kind: text(u, &["job_finished", "host_event"], &["", "missed!"])?,
        attempts: u.arbitrary()?,
        error: word(u)?,
        failed_at: timestamp(u)?,
    })
}

fn fleet_event_message(u: &mut Unstructured<'_>) -> Built<pb::FleetEvent> {
    use pb::fleet_event::Kind;
    let change = |u: &mut Unstructured<'_>| -> Built<pb::HostChange> {
        Ok(pb::HostChange {
            minion_id: name(u)?,
            changed_by: word(u)?,
        })
    };
    let kind = match u.int_in_range(0..=12)? {
        0 => Some(Kind::HostLinked(change(u)?)),
        1 => Some(Kind::HostLost(change(u)?)),
        2 => Some(Kind::HostAccepted(change(u)?)),
        3 => Some(Kind::HostRejected(change(u)?)),
        4 => Some(Kind::HostRevoked(change(u)?)),
        5 => Some(Kind::HostDeleted(change(u)?)),
        6 => Some(Kind::JobStarted(pb::JobStartedEvent {
            job_id: job_id(u)?,
            job_type: word(u)?,
            caller: word(u)?,
            minion_ids: list(u, 3, 3, name)?,
        })),
        7 => Some(Kind::HostReported(pb::HostReportedEvent {
            job_id: job_id(u)?,
            minion_id: name(u)?,
            status: enum_value(u, 1..=7)?,
            error: word(u)?,
        })),
        8 => Some(Kind::JobFinished(pb::JobFinishedEvent {
            job_id: job_id(u)?,
            job_type: word(u)?,
            outcome: enum_value(u, 1..=4)?,
            counts: if rarely(u)? {
                None
            } else {
                Some(pb::JobCounts {
                    unchanged: u.arbitrary()?,
                    changed: u.arbitrary()?,
                    failed: u.arbitrary()?,
                    unreachable: u.arbitrary()?,
                    timed_out: u.arbitrary()?,
                    skipped: u.arbitrary()?,
                    interrupted: u.arbitrary()?,
                })
            },
            hosts: list(u, 3, 3, |u| {
                Ok(pb::HostOutcome {
                    minion_id: name(u)?,
                    status: enum_value(u, 1..=7)?,
                })
            })?,
            cancelled_by: word(u)?,
            duration: duration(u)?,
        })),
        9 => Some(Kind::HostEvent(pb::HostEventReported {
            minion_id: name(u)?,
            event: if rarely(u)? {
                None
            } else {
                Some(host_event_message(u)?)
            },
        })),
        10 => Some(Kind::HookFailed(hook_failure_message(u)?)),
        11 => Some(Kind::Missed(pb::EventsMissed {
            count: u.arbitrary()?,
        })),
        _ => None,
    };
    Ok(pb::FleetEvent {
        sequence: u.arbitrary()?,
        at: timestamp(u)?,
        kind,
    })
}

fn highstate_event_message(u: &mut Unstructured<'_>) -> Built<pb::JobEvent> {
    use pb::job_event::Kind;
    let kind = match u.int_in_range(0..=4)? {
        0 => Some(Kind::Started(pb::JobStarted {
            job_id: job_id(u)?,
            minion_ids: list(u, 3, 3, name)?,
            attached: u.arbitrary()?,
            not_accepted: u.arbitrary()?,
        })),
        1 => Some(Kind::Progress(pb::HostProgress {
            minion_id: name(u)?,
            progress: if rarely(u)? {
                None
            } else {
                Some(progress_message(u)?)
            },
        })),
        2 => Some(Kind::HostFinished(host_report_message(u)?)),
        3 => Some(Kind::Summary(pb::JobSummary {
            job_id: job_id(u)?,
            hosts: list(u, 3, 3, host_report_message)?,
            started_at: timestamp(u)?,
            finished_at: timestamp(u)?,
            resolve: duration(u)?,
            cancelled_by: name(u)?,
            hosts_in_events: u.arbitrary()?,
            // Sent by the master; a client reads them from the wire as they are.
            counts: None,
        })),
        _ => None,
    };
    Ok(pb::JobEvent { kind })
}

fn session_id(u: &mut Unstructured<'_>) -> Built<String> {
    text(
        u,
        &["j-1-0", "20261203T120000-ab12cd34-3"],
        &["", "j 1", "a/b"],
    )
}

fn argv(u: &mut Unstructured<'_>) -> Built<Vec<String>> {
    list(u, 4, brine_common::session::MAX_COMMAND_ARGS, |u| {
        text(u, &["sh", "-c", "echo hi; exit 3", "id"], &["", "a\0b"])
    })
}

fn bytes(u: &mut Unstructured<'_>) -> Built<Vec<u8>> {
    Ok(if rarely(u)? {
        vec![b'x'; brine_common::limits::MAX_OUTPUT_CHUNK + 1]
    } else {
        u.arbitrary()?
    })
}

fn start_session_message(u: &mut Unstructured<'_>) -> Built<pb::StartSession> {
    use pb::start_session::Kind;
    let kind = match u.int_in_range(0..=2)? {
        0 => Some(Kind::Logs(pb::LogsSession {
            since: timestamp(u)?,
            tail: number(u, &[0, 100, 10_000], &[10_001, u32::MAX])?,
            follow: u.arbitrary()?,
        })),
        1 => Some(Kind::Exec(pb::ExecSession { command: argv(u)? })),
        _ => None,
    };
    Ok(pb::StartSession {
        session_id: session_id(u)?,
        minion_id: name(u)?,
        role: name(u)?,
        container: name(u)?,
        ends_at: timestamp(u)?,
        limits: if rarely(u)? {
            None
        } else {
            Some(pb::SessionLimits {
                max_bytes: u.arbitrary()?,
                bytes_per_second: u.arbitrary()?,
                burst_bytes: u.arbitrary()?,
            })
        },
        kind,
    })
}

fn exec_request_message(u: &mut Unstructured<'_>) -> Built<pb::ExecRequest> {
    Ok(pb::ExecRequest {
        role: name(u)?,
        container: name(u)?,
        target: word(u)?,
        command: argv(u)?,
        timeout: duration(u)?,
    })
}

fn logs_request_message(u: &mut Unstructured<'_>) -> Built<pb::ContainerLogsRequest> {
    Ok(pb::ContainerLogsRequest {
        role: name(u)?,
        container: name(u)?,
        target: word(u)?,
        follow: u.arbitrary()?,
        since: timestamp(u)?,
        tail: if rarely(u)? {
            None
        } else {
            Some(number(u, &[0, 100, 10_000], &[10_001, u32::MAX])?)
        },
    })
}

fn session_ended_message(u: &mut Unstructured<'_>) -> Built<(Option<i64>, String, bool)> {
    Ok((
        if rarely(u)? {
            None
        } else {
            Some(u.arbitrary()?)
        },
        word(u)?,
        u.arbitrary()?,
    ))
}

fn exec_response_message(u: &mut Unstructured<'_>) -> Built<pb::ExecResponse> {
    use pb::exec_response::Kind;
    let kind = match u.int_in_range(0..=3)? {
        0 => Some(Kind::Started(pb::SessionsStarted {
            job_id: job_id(u)?,
            targets: list(u, 3, 3, |u| {
                Ok(pb::SessionTarget {
                    minion_id: name(u)?,
                    container: name(u)?,
                })
            })?,
        })),
        1 => Some(Kind::Output(pb::HostOutput {
            minion_id: name(u)?,
            container: name(u)?,
            stream: enum_value(u, 1..=2)?,
            data: bytes(u)?,
            dropped_bytes: u.arbitrary()?,
        })),
        2 => {
            let (exit_code, error, truncated) = session_ended_message(u)?;
            Some(Kind::Ended(pb::HostSessionEnded {
                minion_id: name(u)?,
                container: name(u)?,
                exit_code,
                error,
                truncated,
            }))
        }
        _ => None,
    };
    Ok(pb::ExecResponse { kind })
}

fn session_message_kind(u: &mut Unstructured<'_>) -> Built<pb::connect_request::Kind> {
    use pb::connect_request::Kind;
    Ok(match u.int_in_range(0..=2)? {
        0 => Kind::SessionAccepted(pb::SessionAccepted {
            session_id: session_id(u)?,
        }),
        1 => Kind::SessionOutput(pb::SessionOutput {
            session_id: session_id(u)?,
            stream: enum_value(u, 1..=2)?,
            data: bytes(u)?,
            dropped_bytes: u.arbitrary()?,
        }),
        _ => {
            let (exit_code, error, truncated) = session_ended_message(u)?;
            Kind::SessionEnded(pb::SessionEnded {
                session_id: session_id(u)?,
                exit_code,
                error,
                truncated,
                timed_out: u.arbitrary()?,
            })
        }
    })
}
