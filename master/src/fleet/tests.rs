//! The pages of long answers and the fitting of a job's summary into one message, with hosts
//! large enough to reach the byte limit.

use brine_common::names::MinionId;
use brine_common::outcome::{ContainerResult, HostReport, HostStatus};

use super::jobs::fitted;
use super::paging::paged;
use super::*;

fn host(id: &str, image_bytes: usize) -> HostReport {
    HostReport {
        minion_id: MinionId::new(id).unwrap(),
        status: HostStatus::Changed,
        containers: vec![ContainerResult {
            name: brine_common::names::ContainerName::new("web").unwrap(),
            role: None,
            action: brine_common::outcome::ContainerAction::Kept,
            image: "i".repeat(image_bytes),
            image_digest: String::new(),
            error: None,
            previous_restored: false,
            needs_pull: false,
        }],
        error: None,
        duration_ms: 1,
        timings: Default::default(),
        reported_late: false,
    }
}

#[test]
fn job_hosts_come_in_pages_by_count_and_by_size() {
    let page_after = |hosts: &[HostReport], after: &str, size: usize| {
        let wire = hosts
            .iter()
            .cloned()
            .map(pb::HostReport::from)
            .filter(|h| h.minion_id.as_str() > after);
        let (page, token) = paged(wire, size, |h| h.minion_id.clone());
        let ids: Vec<String> = page.into_iter().map(|h| h.minion_id).collect();
        (ids, token)
    };
    let hosts: Vec<HostReport> = (0..5).map(|n| host(&format!("web-{n}"), 10)).collect();
    assert_eq!(
        page_after(&hosts, "", 2),
        (vec!["web-0".into(), "web-1".into()], "web-1".into())
    );
    assert_eq!(
        page_after(&hosts, "web-1", 2),
        (vec!["web-2".into(), "web-3".into()], "web-3".into())
    );
    assert_eq!(
        page_after(&hosts, "web-3", 2),
        (vec!["web-4".into()], String::new())
    );

    // Reports of a megabyte each: two to a page of at most 3 MiB, whatever the page size.
    let big: Vec<HostReport> = (0..5).map(|n| host(&format!("big-{n}"), 1 << 20)).collect();
    let (page, token) = page_after(&big, "", 1000);
    assert_eq!((page.len(), token.as_str()), (2, "big-1"));
}

#[test]
fn a_summary_too_large_for_one_message_leaves_its_hosts_to_the_events() {
    let hosts: Vec<pb::HostReport> = (0..5)
        .map(|n| pb::HostReport::from(host(&format!("big-{n}"), 1 << 20)))
        .collect();
    let event = pb::JobEvent {
        kind: Some(pb::job_event::Kind::Summary(pb::JobSummary {
            job_id: "j".into(),
            hosts,
            ..Default::default()
        })),
    };
    let Some(pb::job_event::Kind::Summary(sent)) = fitted(event).kind else {
        panic!("a summary");
    };
    assert!(
        sent.hosts.is_empty() && sent.hosts_in_events,
        "{}",
        sent.hosts.len()
    );
    assert!(prost::Message::encoded_len(&sent) < 4 * 1024 * 1024);
}
