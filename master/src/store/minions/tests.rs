//! The rules of a hello: which writes must survive a crash; and of a job's report: which change a
//! host's record.

use super::*;

fn record(previous: Option<&str>, last_renewal_pem: Option<&str>) -> MinionRecord {
    MinionRecord {
        id: MinionId::new("web-1").unwrap(),
        enrolled_at_unix_ms: 1,
        certificate_sha256: "new".into(),
        previous_certificate_sha256: previous.map(str::to_owned),
        certificate_expires_unix_ms: i64::MAX,
        join_labels: BTreeMap::new(),
        last_seen_unix_ms: 0,
        facts: Facts::default(),
        running: vec![],
        approval: Approval::Accepted,
        pending_replacement: None,
        last_renewal_pem: last_renewal_pem.map(str::to_owned),
        clock_offset_ms: 0,
    }
}

fn hello_at(at_unix_ms: i64) -> HostHello {
    HostHello {
        at_unix_ms,
        ..HostHello::default()
    }
}

#[test]
fn the_first_hello_with_a_renewed_certificate_settles_it_and_must_be_flushed() {
    let renewed = record(Some("old"), Some("pem of new"));
    let (check, write) = hello(Some(renewed), "new", hello_at(5));
    assert_eq!(check, CertificateCheck::Recorded);
    let write = write.expect("written");
    assert!(write.settles_certificate);
    assert_eq!(write.record.previous_certificate_sha256, None);
    assert_eq!(write.record.last_renewal_pem, None);
    assert_eq!(write.record.last_seen_unix_ms, 5);
}

#[test]
fn a_routine_hello_settles_nothing() {
    let (_, write) = hello(Some(record(None, None)), "new", hello_at(5));
    assert!(!write.expect("written").settles_certificate);
    // The previous certificate, still accepted until the new one is used, settles nothing
    // either: the host did not get its renewal yet.
    let (check, write) = hello(Some(record(Some("old"), Some("pem"))), "old", hello_at(6));
    assert_eq!(check, CertificateCheck::Recorded);
    let write = write.expect("written");
    assert!(!write.settles_certificate);
    assert_eq!(
        write.record.previous_certificate_sha256.as_deref(),
        Some("old")
    );
}

/// `report` with its one container's action set to `action`.
fn with_action(mut report: HostReport, action: ContainerAction) -> HostReport {
    report.containers[0].action = action;
    report
}

#[test]
fn a_report_that_keeps_every_container_as_it_was_changes_no_record() {
    let created = crate::store::contract::created_report("web-1");
    let mut host = record(None, None);
    assert!(host.apply_report(&created), "a new container is news");
    let before = host.clone();
    // A job that changed nothing: writing the record again would cost a write per host.
    assert!(!host.apply_report(&with_action(created.clone(), ContainerAction::Kept)));
    assert_eq!(host, before);
    // A failure leaves what runs as it was.
    assert!(!host.apply_report(&with_action(created.clone(), ContainerAction::Failed)));
    // A kept container whose image differs from the record (the record was stale) is news.
    let mut moved = with_action(created.clone(), ContainerAction::Kept);
    moved.containers[0].image_digest = "app@sha256:2".into();
    assert!(host.apply_report(&moved));
    assert_eq!(host.running[0].image_digest, "app@sha256:2");
    assert!(host.apply_report(&with_action(created, ContainerAction::Removed)));
    assert!(host.running.is_empty());
}
