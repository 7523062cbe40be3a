//! Conversions both ways: a spec survives the wire unchanged, and what does not convert names
//! its field.

use brine_common::host::RunningContainer;
use brine_common::names::{ContainerName, RoleName};
use brine_common::outcome::{ContainerResult, JobResult};
use brine_common::spec::{
    ContainerSpec, DesiredState, HealthCheck, ImageRef, Probe, RestartPolicy,
};

use crate::pb;

fn spec() -> ContainerSpec {
    ContainerSpec {
        role: RoleName::new("web").unwrap(),
        name: ContainerName::new("web").unwrap(),
        image: ImageRef::new("127.0.0.1:5000/app:tested").unwrap(),
        command: vec!["httpd".into()],
        env: [("A".to_owned(), "1".to_owned())].into(),
        ports: vec![
            "127.0.0.1:80:8000/udp".parse().unwrap(),
            "9000".parse().unwrap(),
        ],
        volumes: vec!["/srv:/data:ro".parse().unwrap()],
        restart: RestartPolicy::OnFailure,
        stop_timeout_seconds: 4,
        health: HealthCheck {
            probe: Some(Probe::Http {
                port: 8000,
                path: "/health".into(),
            }),
            ..HealthCheck::default()
        },
        secret_env: Default::default(),
        proxy: None,
        hooks: None,
    }
}

#[test]
fn specs_survive_the_wire_unchanged() {
    let wire = pb::ContainerSpec::from(spec());
    let back = ContainerSpec::try_from(wire).unwrap();
    assert_eq!(back, spec());
    assert_eq!(back.hash(), spec().hash());
}

#[test]
fn invalid_fields_are_named() {
    let mut wire = pb::ContainerSpec::from(spec());
    wire.ports[1].container_port = 70000;
    let err = ContainerSpec::try_from(wire).unwrap_err();
    assert_eq!(err.field, "ports[1].container_port");

    let mut wire = pb::ContainerSpec::from(spec());
    wire.image = "NOT VALID".into();
    assert_eq!(ContainerSpec::try_from(wire).unwrap_err().field, "image");

    let mut state = pb::DesiredState::from(DesiredState::new(vec![spec()]).unwrap());
    state.containers[0].name = "../etc".into();
    let err = DesiredState::try_from(state).unwrap_err();
    assert_eq!(err.field, "containers[0].name");
}

#[test]
fn only_reports_may_name_a_container_made_before_dots_were_reserved() {
    let mut wire = pb::ContainerSpec::from(spec());
    wire.name = "web.v2".into();
    assert_eq!(ContainerSpec::try_from(wire).unwrap_err().field, "name");
    let running = pb::RunningContainer {
        name: "web.v2".into(),
        role: "web".into(),
        ..Default::default()
    };
    assert_eq!(
        RunningContainer::try_from(running).unwrap().name.as_str(),
        "web.v2"
    );
    let removed = pb::ContainerResult {
        name: "web.v2".into(),
        action: pb::ContainerAction::Removed.into(),
        ..Default::default()
    };
    assert_eq!(
        ContainerResult::try_from(removed).unwrap().name.as_str(),
        "web.v2"
    );
}

#[test]
fn minions_cannot_claim_unreachable() {
    let result = pb::JobResult {
        job_id: "j-1".into(),
        status: pb::HostStatus::Unreachable.into(),
        ..Default::default()
    };
    assert_eq!(JobResult::try_from(result).unwrap_err().field, "status");
}

mod fleet_events {
    use brine_common::fleet_event::{FleetEvent, FleetEventKind, HookFailure, WatchRequest};
    use brine_common::host::{HostEvent, HostEventKind};
    use brine_common::names::MinionId;
    use brine_common::outcome::{HostReport, HostStatus, JobId, JobSummary};

    use crate::pb;

    fn host(id: &str, status: HostStatus) -> HostReport {
        HostReport {
            minion_id: MinionId::new(id).unwrap(),
            status,
            containers: vec![],
            error: None,
            duration_ms: 0,
            timings: Default::default(),
            reported_late: false,
        }
    }

    #[test]
    fn every_kind_of_event_survives_the_wire() {
        let id = MinionId::new("web-1").unwrap();
        let job_id = JobId::new("j-1").unwrap();
        let summary = JobSummary {
            job_id: job_id.clone(),
            hosts: vec![
                host("web-1", HostStatus::Changed),
                host("web-2", HostStatus::Failed),
            ],
            started_at_unix_ms: 1_000,
            finished_at_unix_ms: 2_000,
            resolve_ms: 0,
            cancelled_by: None,
        };
        let kinds = vec![
            FleetEventKind::HostLinked {
                minion_id: id.clone(),
            },
            FleetEventKind::HostLost {
                minion_id: id.clone(),
            },
            FleetEventKind::HostAccepted {
                minion_id: id.clone(),
                by: "admin".into(),
            },
            FleetEventKind::HostRejected {
                minion_id: id.clone(),
                by: "admin".into(),
            },
            FleetEventKind::HostRevoked {
                minion_id: id.clone(),
                by: "admin".into(),
            },
            FleetEventKind::HostDeleted {
                minion_id: id.clone(),
                by: "admin".into(),
            },
            FleetEventKind::JobStarted {
                job_id: job_id.clone(),
                job_type: "deploy".into(),
                caller: "ci-1".into(),
                targets: vec![id.clone()],
            },
            FleetEventKind::HostReported {
                job_id: job_id.clone(),
                minion_id: id.clone(),
                status: HostStatus::Failed,
                error: Some("pull failed".into()),
            },
            FleetEventKind::job_finished("deploy", &summary),
            FleetEventKind::HostEvent {
                minion_id: id,
                event: HostEvent::new(5_000, HostEventKind::CrashLooping, "web keeps exiting"),
            },
            FleetEventKind::HookFailed {
                hook: "chat".into(),
                event_sequence: 3,
                event_kind: "job_finished".into(),
                attempts: 4,
                error: "connection refused".into(),
            },
            FleetEventKind::Missed { count: 12 },
        ];
        for (sequence, what) in kinds.into_iter().enumerate() {
            let event = FleetEvent {
                sequence: sequence as u64,
                at_unix_ms: 1_700_000_000_123,
                what,
            };
            let back = FleetEvent::try_from(pb::FleetEvent::from(event.clone())).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn a_failure_record_survives_the_wire_and_a_bad_one_names_its_field() {
        let failure = HookFailure {
            hook: "chat".into(),
            event_sequence: 9,
            event_kind: "job_finished".into(),
            attempts: 3,
            error: "HTTP 500".into(),
            failed_at_unix_ms: 1_700_000_000_000,
        };
        let wire = pb::HookFailure::from(failure.clone());
        assert_eq!(HookFailure::try_from(wire.clone()).unwrap(), failure);
        let err = HookFailure::try_from(pb::HookFailure {
            event_kind: "nonsense".into(),
            ..wire
        })
        .unwrap_err();
        assert_eq!(err.field, "event_kind");
    }

    #[test]
    fn a_watch_request_names_kinds_and_refuses_unknown_ones() {
        let request = WatchRequest::try_from(pb::WatchRequest {
            replay_recent: true,
            follow: false,
            kinds: vec![pb::FleetEventKind::JobFinished.into()],
        })
        .unwrap();
        assert!(request.replay_recent && !request.follow);
        assert!(request.wants(&FleetEventKind::Missed { count: 1 }));
        assert!(!request.wants(&FleetEventKind::HostLost {
            minion_id: MinionId::new("web-1").unwrap()
        }));
        for kind in [0, 99] {
            let err = WatchRequest::try_from(pb::WatchRequest {
                kinds: vec![kind],
                ..Default::default()
            })
            .unwrap_err();
            assert_eq!(err.field, "kinds");
        }
    }
}
