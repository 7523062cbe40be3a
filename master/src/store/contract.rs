//! The store's contract as tests: every implementation must pass each check here, run on a
//! fresh, empty store.
//!
//! The checks speak only the [`Store`] trait. An implementation runs them with
//! [`contract_tests!`], which defines one test per check (see `redb/tests.rs`); a check that
//! is not listed there is dead code, so none is forgotten. What only one implementation
//! promises (redb: its file, reopening it) is tested beside that implementation.

use std::collections::BTreeMap;
use std::time::Duration;

use brine_common::host::HostEvent;
use brine_common::identity::CertRole;
use brine_common::names::MinionId;
use brine_common::outcome::{
    ContainerAction, ContainerResult, HostReport, HostStatus, JobId, JobSummary,
};

use super::*;
use crate::pki::SignedCertificate;
use crate::release::Pins;

/// Defines a `#[tokio::test]` for every check of the contract, each on a fresh store that
/// `$open` gives (an expression, awaited if need be), as a pair: the store (or a pointer to it)
/// and whatever must live as long as the store (its directory or its etcd cluster, say).
macro_rules! contract_tests {
    ($open:expr) => {
        $crate::store::contract::contract_tests!(
            $open;
            hosts_tokens_jobs_and_releases_are_recorded,
            hosts_are_listed_by_id_a_page_at_a_time,
            a_token_with_uses_is_used_up_and_a_revoked_one_is_gone,
            a_renewed_certificate_replaces_the_old_one_once_it_is_used,
            an_enrolled_id_is_taken_over_only_with_a_token_made_to_replace_it,
            a_pending_replacement_leaves_the_host_alone_until_accepted,
            host_events_keep_the_newest_and_go_with_their_host,
            failed_hook_deliveries_keep_the_newest,
            a_job_left_running_is_interrupted_for_the_hosts_without_a_report,
            a_late_report_replaces_only_a_verdict_given_without_the_host,
            job_history_keeps_the_newest_and_the_recent_but_never_a_running_job,
            jobs_are_listed_newest_first_a_page_at_a_time_and_found_by_request_id,
            a_certificate_revocation_is_replaced_by_a_later_one,
            the_lock_refuses_a_second_holder_until_released_or_expired,
            a_store_holds_the_fleet_that_claimed_it_first,
            a_master_sharing_the_store_finishes_only_the_jobs_it_ran,
            roles_files_are_versioned_and_the_newest_are_kept,
            a_master_is_listed_while_its_announcement_holds,
            an_imported_host_is_kept_as_it_was_and_never_over_an_enrolled_one,
            a_secret_is_replaced_listed_and_deleted_with_what_it_held,
        );
    };
    ($open:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (store, _lives_as_long) = $open;
                let store: &dyn $crate::store::Store = &store;
                $crate::store::contract::$check(store).await;
            }
        )*
    };
}
pub(super) use contract_tests;

pub(super) fn id(s: &str) -> MinionId {
    MinionId::new(s).unwrap()
}

/// `host`'s report of a `web` container created.
pub(super) fn created_report(host: &str) -> HostReport {
    HostReport {
        minion_id: id(host),
        status: HostStatus::Changed,
        containers: vec![ContainerResult {
            name: "web".parse().unwrap(),
            role: Some("web".parse().unwrap()),
            action: ContainerAction::Created,
            image: "app:1".into(),
            image_digest: "app@sha256:1".into(),
            error: None,
            previous_restored: false,
            needs_pull: false,
        }],
        error: None,
        duration_ms: 3,
        timings: Default::default(),
        reported_late: false,
    }
}

fn hello_at(at_unix_ms: i64) -> HostHello {
    HostHello {
        at_unix_ms,
        ..HostHello::default()
    }
}

pub(super) const KEEP_ALL: JobRetention = JobRetention {
    keep: usize::MAX,
    max_age: Duration::MAX,
};

fn cert(sha256: &str) -> SignedCertificate {
    SignedCertificate {
        sha256: sha256.into(),
        expires_unix_ms: 1_000,
    }
}

fn token(secret_sha256: &str, uses_left: Option<u32>) -> TokenRecord {
    TokenRecord {
        secret_sha256: secret_sha256.into(),
        created_at_unix_ms: 0,
        expires_at_unix_ms: 100,
        uses_left,
        uses: 0,
        labels: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
        replaces: None,
    }
}

/// Joins `who` with certificate `sha` through a fresh single-use token (made to replace
/// `who` if `replacing`), as the enrolment service does.
async fn join_with_new_token(
    store: &dyn Store,
    who: &str,
    sha: &str,
    replacing: bool,
    approval: Approval,
) -> JoinOutcome {
    let secret_hash = brine_common::token::sha256_hex(format!("{who}/{sha}").as_bytes());
    let mut record = token(&secret_hash, Some(1));
    record.replaces = replacing.then(|| id(who));
    store.add_token(record).await.unwrap();
    store
        .join(JoinAttempt {
            secret_hash,
            id: id(who),
            certificate: cert(sha),
            now_unix_ms: 1,
            approval,
        })
        .await
        .unwrap()
}

/// Enrols a new host `who`, accepted, with certificate `sha`.
pub(super) async fn enrol(store: &dyn Store, who: &str, sha: &str) {
    let outcome = join_with_new_token(store, who, sha, false, Approval::Accepted).await;
    assert!(
        matches!(outcome, JoinOutcome::Enrolled { .. }),
        "{outcome:?}"
    );
}

/// Hosts enrol, say hello, are revoked and replaced; tokens are checked; a job records what
/// its hosts run; releases are numbered in order.
pub(super) async fn hosts_tokens_jobs_and_releases_are_recorded(store: &dyn Store) {
    enrol(store, "web-1", "ab").await;
    let hello = |who: &str, cert: &str| store.record_hello(id(who), cert.into(), hello_at(5));
    assert_eq!(
        hello("web-1", "ab").await.unwrap(),
        CertificateCheck::Recorded
    );
    assert_eq!(
        hello("ghost", "ab").await.unwrap(),
        CertificateCheck::NotEnrolled
    );
    assert_eq!(
        hello("web-1", "old").await.unwrap(),
        CertificateCheck::CertificateReplaced
    );
    assert_eq!(
        store
            .set_approval(id("web-1"), Approval::Revoked)
            .await
            .unwrap(),
        ApprovalChange::Changed
    );
    // A revoked host cannot be let back in without joining again.
    assert_eq!(
        store
            .set_approval(id("web-1"), Approval::Accepted)
            .await
            .unwrap(),
        ApprovalChange::Refused(Approval::Revoked)
    );
    assert_eq!(
        hello("web-1", "ab").await.unwrap(),
        CertificateCheck::NotAdmitted(Approval::Revoked)
    );
    assert_eq!(
        store
            .set_approval(id("ghost"), Approval::Revoked)
            .await
            .unwrap(),
        ApprovalChange::NotFound
    );
    // Enrolling again with a token made to replace it lifts the revocation, for the
    // new certificate only.
    assert!(matches!(
        join_with_new_token(store, "web-1", "new", true, Approval::Accepted).await,
        JoinOutcome::Replaced { .. }
    ));
    assert_eq!(
        hello("web-1", "ab").await.unwrap(),
        CertificateCheck::CertificateReplaced
    );
    assert_eq!(
        hello("web-1", "new").await.unwrap(),
        CertificateCheck::Recorded
    );
    store
        .add_token(token(&"0d".repeat(32), None))
        .await
        .unwrap();
    let report = created_report("web-1");
    let summary = JobSummary {
        job_id: JobId::new("j-1").unwrap(),
        hosts: vec![report],
        started_at_unix_ms: 1,
        finished_at_unix_ms: 2,
        resolve_ms: 0,
        cancelled_by: None,
    };
    store
        .record_job(
            JobRecord {
                summary,
                target: String::new(),
                caller: "admin".into(),
                plan: false,
                running: false,
                targets: vec![id("web-1")],
                request: None,
                master: None,
                lease: None,
                kind: None,
                command: None,
            },
            KEEP_ALL,
        )
        .await
        .unwrap();
    // A check records nothing (the hello above is the last seen).
    let check = |who: &str, cert: &str| store.certificate_check(id(who), cert.into());
    assert_eq!(
        check("web-1", "new").await.unwrap(),
        CertificateCheck::Recorded
    );
    assert_eq!(
        check("web-1", "ab").await.unwrap(),
        CertificateCheck::CertificateReplaced
    );
    assert_eq!(
        check("ghost", "ab").await.unwrap(),
        CertificateCheck::NotEnrolled
    );
    let minions = store.minions().await.unwrap();
    assert_eq!(minions.len(), 1);
    assert_eq!(minions[0].last_seen_unix_ms, 5);
    assert_eq!(minions[0].running[0].image_digest, "app@sha256:1");
    assert_eq!(
        store.check_token("0d".repeat(32), 50).await.unwrap(),
        TokenCheck::Valid
    );
    assert_eq!(
        store.check_token("0d".repeat(32), 100).await.unwrap(),
        TokenCheck::Expired
    );
    assert_eq!(
        store.check_token("x".into(), 0).await.unwrap(),
        TokenCheck::Unknown
    );
    // The same public id with another secret is not the token.
    assert_eq!(
        store
            .check_token(format!("{}{}", "0d".repeat(6), "ff".repeat(26)), 0)
            .await
            .unwrap(),
        TokenCheck::Unknown
    );
    assert!(store.job("j-1".into()).await.unwrap().is_some());
    assert_eq!(store.jobs_before(None, 10).await.unwrap().len(), 1);
    assert!(store.latest_release().await.unwrap().is_none());
    let first = store
        .add_release("j-1".into(), "admin".into(), 1, Pins::new())
        .await
        .unwrap();
    let second = store
        .add_release("j-2".into(), "admin".into(), 2, Pins::new())
        .await
        .unwrap();
    assert_eq!((first.id, second.id), (1, 2));
    let ids: Vec<u64> = store
        .releases()
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(store.latest_release().await.unwrap(), Some(second));
}

pub(super) async fn hosts_are_listed_by_id_a_page_at_a_time(store: &dyn Store) {
    for host in ["web-2", "db-1", "web-10", "web-1"] {
        enrol(store, host, host).await;
    }
    let ids = |records: Vec<MinionRecord>| -> Vec<String> {
        records.iter().map(|r| r.id.as_str().to_owned()).collect()
    };
    let after = |after: Option<&str>, limit| store.minions_after(after.map(id), limit);
    assert_eq!(
        ids(store.minions().await.unwrap()),
        ["db-1", "web-1", "web-10", "web-2"]
    );
    assert_eq!(ids(after(None, 2).await.unwrap()), ["db-1", "web-1"]);
    assert_eq!(
        ids(after(Some("web-1"), 2).await.unwrap()),
        ["web-10", "web-2"]
    );
    assert_eq!(ids(after(Some("web-10"), 5).await.unwrap()), ["web-2"]);
    assert!(after(Some("web-2"), 5).await.unwrap().is_empty());
    // After a host that is gone (deleted since the last page): from the next one.
    assert_eq!(ids(after(Some("web-0"), 1).await.unwrap()), ["web-1"]);
    let found = store.minion(id("web-10")).await.unwrap().unwrap();
    assert_eq!(
        (found.id.as_str(), found.certificate_sha256.as_str()),
        ("web-10", "web-10")
    );
    assert!(store.minion(id("ghost")).await.unwrap().is_none());
}

pub(super) async fn a_token_with_uses_is_used_up_and_a_revoked_one_is_gone(store: &dyn Store) {
    let hash = "ab".repeat(32);
    store.add_token(token(&hash, Some(2))).await.unwrap();
    let attempt = |who: &str| JoinAttempt {
        secret_hash: hash.clone(),
        id: id(who),
        certificate: cert(who),
        now_unix_ms: 1,
        approval: Approval::Accepted,
    };
    let JoinOutcome::Enrolled { labels, .. } = store.join(attempt("web-1")).await.unwrap() else {
        panic!("the first join enrols");
    };
    assert_eq!(labels["env"], "prod");
    // A refused join does not use the token up.
    assert_eq!(
        store.join(attempt("web-1")).await.unwrap(),
        JoinOutcome::Refused(JoinRefusal::AlreadyEnrolled)
    );
    assert!(matches!(
        store.join(attempt("web-2")).await.unwrap(),
        JoinOutcome::Enrolled { .. }
    ));
    assert_eq!(
        store.join(attempt("web-3")).await.unwrap(),
        JoinOutcome::Refused(JoinRefusal::Token(TokenCheck::UsedUp))
    );
    assert_eq!(
        store.check_token(hash.clone(), 1).await.unwrap(),
        TokenCheck::UsedUp
    );
    let listed = store.tokens().await.unwrap();
    assert_eq!(
        (listed[0].id.as_str(), listed[0].record.uses),
        ("abababababab", 2)
    );
    assert!(store.revoke_token("abababababab".into()).await.unwrap());
    assert_eq!(
        store.check_token(hash, 1).await.unwrap(),
        TokenCheck::Unknown
    );
    assert!(!store.revoke_token("abababababab".into()).await.unwrap());
}

pub(super) async fn a_renewed_certificate_replaces_the_old_one_once_it_is_used(store: &dyn Store) {
    let web = || id("web-1");
    enrol(store, "web-1", "one").await;
    let renew = |caller: &str, new: &str| {
        store.renew_certificate(web(), caller.into(), cert(new), format!("pem of {new}"))
    };
    let hello = |cert: &str| store.record_hello(web(), cert.into(), hello_at(5));
    assert_eq!(
        renew("stranger", "x").await.unwrap(),
        Renewal::Refused(CertificateCheck::CertificateReplaced)
    );
    assert_eq!(renew("one", "two").await.unwrap(), Renewal::Issued);
    // The answer may have been lost: the old certificate still connects, and asking again
    // gets the same new certificate, never another one.
    assert_eq!(hello("one").await.unwrap(), CertificateCheck::Recorded);
    assert_eq!(
        renew("one", "three").await.unwrap(),
        Renewal::Reissued("pem of two".into())
    );
    // Once the newest is used, the one before is refused, for links and renewals alike.
    assert_eq!(hello("two").await.unwrap(), CertificateCheck::Recorded);
    assert_eq!(
        hello("one").await.unwrap(),
        CertificateCheck::CertificateReplaced
    );
    assert_eq!(
        renew("one", "four").await.unwrap(),
        Renewal::Refused(CertificateCheck::CertificateReplaced)
    );
    store.set_approval(web(), Approval::Revoked).await.unwrap();
    assert_eq!(
        renew("two", "five").await.unwrap(),
        Renewal::Refused(CertificateCheck::NotAdmitted(Approval::Revoked))
    );
    assert!(store.delete_minion(web()).await.unwrap());
    assert!(!store.delete_minion(web()).await.unwrap());
    assert_eq!(hello("two").await.unwrap(), CertificateCheck::NotEnrolled);
    assert_eq!(
        renew("two", "six").await.unwrap(),
        Renewal::Refused(CertificateCheck::NotEnrolled)
    );
}

pub(super) async fn an_enrolled_id_is_taken_over_only_with_a_token_made_to_replace_it(
    store: &dyn Store,
) {
    let hello = |cert: &str| store.record_hello(id("victim"), cert.into(), hello_at(5));
    enrol(store, "victim", "real").await;
    for approval in [Approval::Accepted, Approval::Pending] {
        assert_eq!(
            join_with_new_token(store, "victim", "thief", false, approval).await,
            JoinOutcome::Refused(JoinRefusal::AlreadyEnrolled)
        );
    }
    assert_eq!(hello("real").await.unwrap(), CertificateCheck::Recorded);
    assert_eq!(
        hello("thief").await.unwrap(),
        CertificateCheck::CertificateReplaced
    );

    // A replacing token is for its host only.
    let secret_hash = brine_common::token::sha256_hex(b"for web-9");
    let mut only_web_9 = token(&secret_hash, Some(1));
    only_web_9.replaces = Some(id("web-9"));
    store.add_token(only_web_9).await.unwrap();
    assert_eq!(
        store
            .join(JoinAttempt {
                secret_hash,
                id: id("victim"),
                certificate: cert("thief"),
                now_unix_ms: 1,
                approval: Approval::Accepted,
            })
            .await
            .unwrap(),
        JoinOutcome::Refused(JoinRefusal::TokenForAnotherHost(id("web-9")))
    );

    // With one, the new certificate is the host's and the old one is refused at once.
    assert!(matches!(
        join_with_new_token(store, "victim", "rebuilt", true, Approval::Accepted).await,
        JoinOutcome::Replaced { .. }
    ));
    assert_eq!(
        hello("real").await.unwrap(),
        CertificateCheck::CertificateReplaced
    );
    assert_eq!(hello("rebuilt").await.unwrap(), CertificateCheck::Recorded);
}

pub(super) async fn a_pending_replacement_leaves_the_host_alone_until_accepted(store: &dyn Store) {
    let hello = |cert: &str| store.record_hello(id("web-1"), cert.into(), hello_at(5));
    enrol(store, "web-1", "old").await;
    assert!(matches!(
        join_with_new_token(store, "web-1", "new", true, Approval::Pending).await,
        JoinOutcome::ReplacementPending { .. }
    ));
    assert_eq!(hello("old").await.unwrap(), CertificateCheck::Recorded);
    assert_eq!(
        hello("new").await.unwrap(),
        CertificateCheck::NotAdmitted(Approval::Pending)
    );
    let record = store.minion(id("web-1")).await.unwrap().unwrap();
    assert_eq!(
        (record.approval, record.certificate_sha256.as_str()),
        (Approval::Accepted, "old")
    );

    // Rejected: the machine is turned away, the host keeps going.
    assert_eq!(
        store
            .set_approval(id("web-1"), Approval::Rejected)
            .await
            .unwrap(),
        ApprovalChange::ReplacementRejected
    );
    assert_eq!(hello("old").await.unwrap(), CertificateCheck::Recorded);
    assert_eq!(
        hello("new").await.unwrap(),
        CertificateCheck::CertificateReplaced
    );

    // Accepted: the new machine is the host, the old certificate is refused.
    assert!(matches!(
        join_with_new_token(store, "web-1", "newer", true, Approval::Pending).await,
        JoinOutcome::ReplacementPending { .. }
    ));
    assert_eq!(
        store
            .set_approval(id("web-1"), Approval::Accepted)
            .await
            .unwrap(),
        ApprovalChange::ReplacementAccepted
    );
    assert_eq!(hello("newer").await.unwrap(), CertificateCheck::Recorded);
    assert_eq!(
        hello("old").await.unwrap(),
        CertificateCheck::CertificateReplaced
    );
}

pub(super) async fn host_events_keep_the_newest_and_go_with_their_host(store: &dyn Store) {
    use brine_common::host::HostEventKind;
    let event = |n: i64| HostEvent::new(n, HostEventKind::Repaired, format!("repair {n}"));
    assert!(
        !store
            .record_host_event(id("ghost"), event(0))
            .await
            .unwrap()
    );
    for host in ["web-1", "web-10"] {
        enrol(store, host, host).await;
    }
    let total = i64::try_from(EVENTS_KEPT).unwrap() + 5;
    for n in 0..total {
        assert!(
            store
                .record_host_event(id("web-1"), event(n))
                .await
                .unwrap()
        );
    }
    store
        .record_host_event(id("web-10"), event(-1))
        .await
        .unwrap();
    let events = store.host_events(id("web-1"), 1_000).await.unwrap();
    assert_eq!(events.len(), EVENTS_KEPT);
    assert_eq!(events[0].at_unix_ms, total - 1, "newest first");
    assert_eq!(events.last().unwrap().at_unix_ms, 5, "the oldest went");
    assert_eq!(store.host_events(id("web-1"), 3).await.unwrap().len(), 3);
    assert!(store.delete_minion(id("web-1")).await.unwrap());
    assert!(store.host_events(id("web-1"), 10).await.unwrap().is_empty());
    assert_eq!(store.host_events(id("web-10"), 10).await.unwrap().len(), 1);
}

pub(super) async fn failed_hook_deliveries_keep_the_newest(store: &dyn Store) {
    use brine_common::fleet_event::HookFailure;
    let failure = |n: u64| HookFailure {
        hook: "chat".into(),
        event_sequence: n,
        event_kind: "job_finished".into(),
        attempts: 4,
        error: format!("HTTP 500 for {n}"),
        failed_at_unix_ms: 1_000,
    };
    assert!(store.hook_failures(10).await.unwrap().is_empty());
    let total = HOOK_FAILURES_KEPT as u64 + 3;
    for n in 0..total {
        store.record_hook_failure(failure(n)).await.unwrap();
    }
    let kept = store.hook_failures(10_000).await.unwrap();
    assert_eq!(kept.len(), HOOK_FAILURES_KEPT);
    assert_eq!(kept[0], failure(total - 1), "newest first");
    assert_eq!(kept.last().unwrap().event_sequence, 3, "the oldest went");
    assert_eq!(store.hook_failures(2).await.unwrap().len(), 2);
}

pub(super) async fn a_job_left_running_is_interrupted_for_the_hosts_without_a_report(
    store: &dyn Store,
) {
    let reported = HostReport {
        minion_id: id("web-1"),
        status: HostStatus::Changed,
        containers: vec![],
        error: None,
        duration_ms: 1,
        timings: Default::default(),
        reported_late: false,
    };
    let job = |job_id: &str, running: bool| JobRecord {
        summary: JobSummary {
            job_id: JobId::new(job_id).unwrap(),
            hosts: vec![reported.clone()],
            started_at_unix_ms: 1,
            finished_at_unix_ms: 0,
            resolve_ms: 0,
            cancelled_by: None,
        },
        target: String::new(),
        caller: "admin".into(),
        plan: false,
        running,
        request: None,
        master: None,
        lease: None,
        kind: None,
        command: None,
        targets: vec![id("web-1"), id("web-2")],
    };
    store.record_job_progress(job("j-1", true)).await.unwrap();
    store.record_job(job("j-2", false), KEEP_ALL).await.unwrap();
    let lock = LockRecord {
        holder: "admin".into(),
        message: "highstate".into(),
        acquired_at_unix_ms: 0,
        expires_at_unix_ms: i64::MAX,
        job_id: Some("j-1".into()),
    };
    assert!(store.try_lock(lock, 0).await.unwrap().is_ok());

    assert_eq!(
        store.interrupt_running_jobs(9, None).await.unwrap(),
        ["j-1"]
    );
    let interrupted = store.job("j-1".into()).await.unwrap().unwrap();
    assert!(!interrupted.running);
    assert_eq!(interrupted.summary.finished_at_unix_ms, 9);
    let statuses: Vec<HostStatus> = interrupted.summary.hosts.iter().map(|h| h.status).collect();
    assert_eq!(statuses, [HostStatus::Changed, HostStatus::Interrupted]);
    assert!(
        store.current_lock(0).await.unwrap().is_none(),
        "its lock was released"
    );
    let finished = store.job("j-2".into()).await.unwrap().unwrap();
    assert_eq!(
        finished.summary.hosts.len(),
        1,
        "a finished job is left alone"
    );
    assert!(
        store
            .interrupt_running_jobs(10, None)
            .await
            .unwrap()
            .is_empty()
    );
}

pub(super) async fn a_master_sharing_the_store_finishes_only_the_jobs_it_ran(store: &dyn Store) {
    let job = |job_id: &str, master: Option<&str>| JobRecord {
        summary: JobSummary {
            job_id: JobId::new(job_id).unwrap(),
            hosts: vec![],
            started_at_unix_ms: 1,
            finished_at_unix_ms: 0,
            resolve_ms: 0,
            cancelled_by: None,
        },
        target: String::new(),
        caller: "admin".into(),
        plan: false,
        running: true,
        request: None,
        master: master.map(Into::into),
        lease: None,
        kind: None,
        command: None,
        targets: vec![id("web-1")],
    };
    store
        .record_job_progress(job("j-a", Some("master-a:4700")))
        .await
        .unwrap();
    store
        .record_job_progress(job("j-b", Some("master-b:4700")))
        .await
        .unwrap();
    store.record_job_progress(job("j-old", None)).await.unwrap();

    // Master b starting again leaves master a's job running.
    assert_eq!(
        store
            .interrupt_running_jobs(5, Some("master-b:4700".into()))
            .await
            .unwrap(),
        ["j-b"]
    );
    assert!(store.job("j-a".into()).await.unwrap().unwrap().running);
    assert!(!store.job("j-b".into()).await.unwrap().unwrap().running);
    // A master alone with its store finishes every job left running.
    let mut rest = store.interrupt_running_jobs(6, None).await.unwrap();
    rest.sort();
    assert_eq!(rest, ["j-a", "j-old"]);
}

pub(super) async fn a_late_report_replaces_only_a_verdict_given_without_the_host(
    store: &dyn Store,
) {
    enrol(store, "web-1", "one").await;
    enrol(store, "web-2", "two").await;
    let report = |host: &str, status, containers: Vec<ContainerResult>| HostReport {
        minion_id: id(host),
        status,
        containers,
        error: None,
        duration_ms: 1,
        timings: Default::default(),
        reported_late: false,
    };
    let job = |job_id: &str, running, hosts| JobRecord {
        summary: JobSummary {
            job_id: JobId::new(job_id).unwrap(),
            hosts,
            started_at_unix_ms: 1,
            finished_at_unix_ms: 2,
            resolve_ms: 0,
            cancelled_by: None,
        },
        target: String::new(),
        caller: "admin".into(),
        plan: false,
        request: None,
        master: None,
        lease: None,
        kind: None,
        command: None,
        running,
        targets: vec![id("web-1"), id("web-2")],
    };
    let created = vec![ContainerResult {
        name: "web".parse().unwrap(),
        role: Some("web".parse().unwrap()),
        action: ContainerAction::Created,
        image: "app:2".into(),
        image_digest: "app@sha256:2".into(),
        error: None,
        previous_restored: false,
        needs_pull: false,
    }];
    let given_up = || {
        vec![
            report("web-1", HostStatus::Unreachable, vec![]),
            report("web-2", HostStatus::Unchanged, vec![]),
        ]
    };
    store
        .record_job(job("j-1", false, given_up()), KEEP_ALL)
        .await
        .unwrap();
    store
        .record_job_progress(job("j-2", true, given_up()))
        .await
        .unwrap();
    let late = |job_id: &str, host: &str| {
        store.record_late_report(
            JobId::new(job_id).unwrap(),
            report(host, HostStatus::Changed, created.clone()),
        )
    };

    // No such job, no such host in it, a host it heard from, a job still running: nothing.
    assert!(!late("j-9", "web-1").await.unwrap());
    assert!(!late("j-1", "web-3").await.unwrap());
    assert!(!late("j-1", "web-2").await.unwrap());
    assert!(!late("j-2", "web-1").await.unwrap());
    assert_eq!(
        store.job("j-1".into()).await.unwrap().unwrap(),
        job("j-1", false, given_up())
    );
    assert!(
        store
            .minion(id("web-1"))
            .await
            .unwrap()
            .unwrap()
            .running
            .is_empty()
    );

    // The host the job gave up on: its result is the record, and what it runs is known.
    assert!(late("j-1", "web-1").await.unwrap());
    let recorded = store.job("j-1".into()).await.unwrap().unwrap();
    let web_1 = &recorded.summary.hosts[0];
    assert_eq!(
        (web_1.status, web_1.reported_late, web_1.containers.len()),
        (HostStatus::Changed, true, 1)
    );
    assert_eq!(recorded.summary.hosts[1], given_up()[1]);
    let running = store.minion(id("web-1")).await.unwrap().unwrap().running;
    assert_eq!(running[0].image_digest, "app@sha256:2");
    // Once only: the late report is not replaced again.
    assert!(!late("j-1", "web-1").await.unwrap());
}

pub(super) async fn jobs_are_listed_newest_first_a_page_at_a_time_and_found_by_request_id(
    store: &dyn Store,
) {
    let job = |n: u32, request: Option<&str>| JobRecord {
        summary: JobSummary {
            job_id: JobId::new(format!("20260101T0000{n:02}-0000")).unwrap(),
            hosts: vec![],
            started_at_unix_ms: 1,
            finished_at_unix_ms: 2,
            resolve_ms: 0,
            cancelled_by: None,
        },
        target: String::new(),
        caller: "ci".into(),
        request: request.map(|id| RequestRecord {
            id: id.into(),
            fingerprint: format!("f{n}"),
        }),
        master: None,
        lease: None,
        kind: None,
        command: None,
        plan: false,
        running: false,
        targets: vec![],
    };
    for n in 1..=5 {
        let request = match n {
            2 | 4 => Some("pipeline-7"),
            3 => Some("pipeline-8"),
            _ => None,
        };
        store.record_job(job(n, request), KEEP_ALL).await.unwrap();
    }
    let ids = |jobs: Vec<JobRecord>| -> Vec<String> {
        jobs.iter().map(|j| j.summary.job_id.to_string()).collect()
    };
    let first = store.jobs_before(None, 2).await.unwrap();
    assert_eq!(ids(first), ["20260101T000005-0000", "20260101T000004-0000"]);
    let second = store
        .jobs_before(Some("20260101T000004-0000".into()), 2)
        .await
        .unwrap();
    assert_eq!(
        ids(second),
        ["20260101T000003-0000", "20260101T000002-0000"]
    );
    let last = store
        .jobs_before(Some("20260101T000002-0000".into()), 2)
        .await
        .unwrap();
    assert_eq!(ids(last), ["20260101T000001-0000"]);

    let found = store
        .job_with_request("pipeline-7".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        found.summary.job_id.as_str(),
        "20260101T000004-0000",
        "the newest"
    );
    assert_eq!(found.request.unwrap().fingerprint, "f4");
    assert!(
        store
            .job_with_request("pipeline-9".into())
            .await
            .unwrap()
            .is_none()
    );
}

pub(super) async fn job_history_keeps_the_newest_and_the_recent_but_never_a_running_job(
    store: &dyn Store,
) {
    let job = |n: u32, finished: i64, running: bool| JobRecord {
        summary: JobSummary {
            job_id: JobId::new(format!("20260101T0000{n:02}-0000")).unwrap(),
            hosts: vec![],
            started_at_unix_ms: finished,
            finished_at_unix_ms: finished,
            resolve_ms: 0,
            cancelled_by: None,
        },
        target: String::new(),
        caller: "admin".into(),
        request: None,
        master: None,
        lease: None,
        kind: None,
        command: None,
        plan: false,
        running,
        targets: vec![],
    };
    let day = 24 * 3600 * 1000;
    let retention = JobRetention {
        keep: 3,
        max_age: Duration::from_secs(10 * 24 * 3600),
    };
    store.record_job_progress(job(0, 0, true)).await.unwrap();
    for n in 1..=5 {
        store
            .record_job(job(n, i64::from(n) * day, false), retention)
            .await
            .unwrap();
    }
    let kept = |jobs: Vec<JobRecord>| -> Vec<String> {
        jobs.iter().map(|j| j.summary.job_id.to_string()).collect()
    };
    assert_eq!(
        kept(store.jobs_before(None, 100).await.unwrap()),
        [
            "20260101T000005-0000",
            "20260101T000004-0000",
            "20260101T000000-0000"
        ],
        "three: the newest, and the running one however old"
    );
    // Forty days on, only what finished within ten days stays.
    store
        .record_job(job(6, 40 * day, false), retention)
        .await
        .unwrap();
    assert_eq!(
        kept(store.jobs_before(None, 100).await.unwrap()),
        ["20260101T000006-0000", "20260101T000000-0000"]
    );
}

pub(super) async fn a_certificate_revocation_is_replaced_by_a_later_one(store: &dyn Store) {
    assert!(store.certificate_revocations().await.unwrap().is_empty());
    store
        .revoke_certificates(CertRole::Ci, "gitlab".into(), 7)
        .await
        .unwrap();
    store
        .revoke_certificates(CertRole::Ci, "gitlab".into(), 9)
        .await
        .unwrap();
    store
        .revoke_certificates(CertRole::Admin, "gitlab".into(), 8)
        .await
        .unwrap();
    let mut revocations = store.certificate_revocations().await.unwrap();
    revocations.sort_by_key(|r| r.revoked_at_unix_ms);
    assert_eq!(
        revocations,
        [
            CertificateRevocation {
                role: CertRole::Admin,
                name: "gitlab".into(),
                revoked_at_unix_ms: 8
            },
            CertificateRevocation {
                role: CertRole::Ci,
                name: "gitlab".into(),
                revoked_at_unix_ms: 9
            }
        ]
    );
}

pub(super) async fn the_lock_refuses_a_second_holder_until_released_or_expired(store: &dyn Store) {
    let lock = |holder: &str, job: Option<&str>, expires| LockRecord {
        holder: holder.into(),
        message: "deploying".into(),
        acquired_at_unix_ms: 0,
        expires_at_unix_ms: expires,
        job_id: job.map(Into::into),
    };
    assert_eq!(
        store.try_lock(lock("a", Some("j1"), 100), 0).await.unwrap(),
        Ok(())
    );
    let held = store
        .try_lock(lock("b", Some("j2"), 100), 50)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(held.holder, "a");
    // Another job cannot release it; its own can.
    assert!(
        store
            .release_lock(Some("j2".into()))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .release_lock(Some("j1".into()))
            .await
            .unwrap()
            .is_some()
    );
    assert!(store.current_lock(0).await.unwrap().is_none());
    // An expired lock is taken over.
    store
        .try_lock(lock("a", None, 100), 0)
        .await
        .unwrap()
        .unwrap();
    assert!(store.current_lock(100).await.unwrap().is_none());
    assert_eq!(
        store.try_lock(lock("b", None, 500), 100).await.unwrap(),
        Ok(())
    );
    assert_eq!(store.current_lock(100).await.unwrap().unwrap().holder, "b");
}

pub(super) async fn a_store_holds_the_fleet_that_claimed_it_first(store: &dyn Store) {
    assert_eq!(
        store.claim_fleet("ca-1".into()).await.unwrap(),
        FleetClaim::New
    );
    assert_eq!(
        store.claim_fleet("ca-1".into()).await.unwrap(),
        FleetClaim::Same
    );
    // A master with another CA is told whose fleet it is, and changes nothing.
    assert_eq!(
        store.claim_fleet("ca-2".into()).await.unwrap(),
        FleetClaim::Other {
            ca_sha256: "ca-1".into()
        }
    );
    assert_eq!(
        store.claim_fleet("ca-1".into()).await.unwrap(),
        FleetClaim::Same
    );
}

pub(super) async fn roles_files_are_versioned_and_the_newest_are_kept(store: &dyn Store) {
    let roles = |text: &str, at| NewRoles {
        text: text.into(),
        sha256: format!("sha-{text}"),
        applied_by: "ci (ci)".into(),
        applied_at_unix_ms: at,
    };
    assert_eq!(store.roles_version(None).await.unwrap(), None);
    let RolesApplied::Added { version, previous } = store.apply_roles(roles("a", 1)).await.unwrap()
    else {
        panic!("the first roles file is not added");
    };
    assert_eq!((version.version, previous), (1, None));
    // The same text again adds nothing.
    assert_eq!(
        store.apply_roles(roles("a", 2)).await.unwrap(),
        RolesApplied::Unchanged(version.clone())
    );
    let RolesApplied::Added { version, previous } = store.apply_roles(roles("b", 3)).await.unwrap()
    else {
        panic!("a changed roles file is not added");
    };
    assert_eq!((version.version, previous), (2, Some(1)));
    assert_eq!(store.roles_version(None).await.unwrap(), Some(version));
    assert_eq!(
        store.roles_version(Some(1)).await.unwrap().unwrap().text,
        "a"
    );
    assert_eq!(store.roles_version(Some(3)).await.unwrap(), None);

    // The newest ROLES_VERSIONS_KEPT are kept, newest first.
    for n in 3..=ROLES_VERSIONS_KEPT as u64 + 2 {
        store
            .apply_roles(roles(&format!("v{n}"), 10))
            .await
            .unwrap();
    }
    let kept = store.roles_versions().await.unwrap();
    assert_eq!(kept.len(), ROLES_VERSIONS_KEPT);
    assert_eq!(kept[0].version, ROLES_VERSIONS_KEPT as u64 + 2);
    assert_eq!(kept.last().unwrap().version, 3);
    assert_eq!(store.roles_version(Some(2)).await.unwrap(), None);
}

pub(super) async fn a_master_is_listed_while_its_announcement_holds(store: &dyn Store) {
    let announce = |name: &str, until| MasterAnnouncement {
        name: name.into(),
        address: Some(format!("{name}.example:4700")),
        until_unix_ms: until,
    };
    store.announce_master(announce("m1", 100)).await.unwrap();
    store.announce_master(announce("m2", 50)).await.unwrap();
    let names = |listed: Vec<MasterAnnouncement>| -> Vec<String> {
        listed.into_iter().map(|m| m.name).collect()
    };
    assert_eq!(names(store.masters(10).await.unwrap()), ["m1", "m2"]);
    assert_eq!(names(store.masters(50).await.unwrap()), ["m1"]);
    // Renewed, it holds again.
    store.announce_master(announce("m2", 200)).await.unwrap();
    assert_eq!(names(store.masters(150).await.unwrap()), ["m2"]);
}

pub(super) async fn an_imported_host_is_kept_as_it_was_and_never_over_an_enrolled_one(
    store: &dyn Store,
) {
    enrol(store, "web-1", "aa").await;
    let mut record = store.minion(id("web-1")).await.unwrap().unwrap();
    record.id = id("web-2");
    record.certificate_sha256 = "bb".into();
    assert!(store.import_minion(record.clone()).await.unwrap());
    assert_eq!(
        store.minion(id("web-2")).await.unwrap(),
        Some(record.clone())
    );
    // An enrolled id stays as it is.
    record.id = id("web-1");
    assert!(!store.import_minion(record).await.unwrap());
    let kept = store.minion(id("web-1")).await.unwrap().unwrap();
    assert_eq!(kept.certificate_sha256, "aa");
}

pub(super) async fn a_secret_is_replaced_listed_and_deleted_with_what_it_held(store: &dyn Store) {
    let name = |s: &str| brine_common::names::SecretName::new(s).unwrap();
    let record = |fingerprint: &str| SecretRecord {
        fingerprint: fingerprint.into(),
        key_id: "k1".into(),
        nonce: "00".into(),
        sealed: "ab".into(),
        updated_at_unix_ms: 5,
        updated_by: "admin".into(),
    };
    assert!(store.secrets().await.unwrap().is_empty());
    assert_eq!(store.secret(name("db")).await.unwrap(), None);
    assert_eq!(
        store.put_secret(name("db"), record("f1")).await.unwrap(),
        None
    );
    assert_eq!(
        store.put_secret(name("db"), record("f2")).await.unwrap(),
        Some(record("f1"))
    );
    store
        .put_secret(name("api-key"), record("f3"))
        .await
        .unwrap();
    assert_eq!(store.secret(name("db")).await.unwrap(), Some(record("f2")));
    assert_eq!(
        store.secrets().await.unwrap(),
        [(name("api-key"), record("f3")), (name("db"), record("f2"))]
    );
    assert_eq!(
        store.delete_secret(name("db")).await.unwrap(),
        Some(record("f2"))
    );
    assert_eq!(store.delete_secret(name("db")).await.unwrap(), None);
    assert_eq!(store.secrets().await.unwrap().len(), 1);
}
