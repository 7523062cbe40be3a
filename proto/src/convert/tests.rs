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
