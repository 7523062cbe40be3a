//! The redb store's tests.

use std::collections::BTreeMap;
use std::time::Duration;

use brine_common::outcome::{ContainerAction, ContainerResult, HostStatus, JobSummary};
use redb::TableDefinition;

use super::*;
use crate::store::{EVENTS_KEPT, JoinRefusal};

fn id(s: &str) -> MinionId {
    MinionId::new(s).unwrap()
}

fn hello_at(at_unix_ms: i64) -> HostHello {
    HostHello {
        at_unix_ms,
        ..HostHello::default()
    }
}

const KEEP_ALL: JobRetention = JobRetention {
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
    store: &RedbStore,
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
async fn enrol(store: &RedbStore, who: &str, sha: &str) {
    let outcome = join_with_new_token(store, who, sha, false, Approval::Accepted).await;
    assert!(
        matches!(outcome, JoinOutcome::Enrolled { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn minions_tokens_and_jobs_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        enrol(&store, "web-1", "ab").await;
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
            join_with_new_token(&store, "web-1", "new", true, Approval::Accepted).await,
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
        let report = HostReport {
            minion_id: id("web-1"),
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
        };
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
                },
                KEEP_ALL,
            )
            .await
            .unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
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
    assert_eq!(store.jobs(10).await.unwrap().len(), 1);
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
}

#[tokio::test]
async fn a_token_with_uses_is_used_up_and_a_revoked_one_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
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

#[tokio::test]
async fn a_renewed_certificate_replaces_the_old_one_once_it_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
    let web = || id("web-1");
    enrol(&store, "web-1", "one").await;
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

#[tokio::test]
async fn an_enrolled_id_is_taken_over_only_with_a_token_made_to_replace_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
    let hello = |cert: &str| store.record_hello(id("victim"), cert.into(), hello_at(5));
    enrol(&store, "victim", "real").await;
    for approval in [Approval::Accepted, Approval::Pending] {
        assert_eq!(
            join_with_new_token(&store, "victim", "thief", false, approval).await,
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
        join_with_new_token(&store, "victim", "rebuilt", true, Approval::Accepted).await,
        JoinOutcome::Replaced { .. }
    ));
    assert_eq!(
        hello("real").await.unwrap(),
        CertificateCheck::CertificateReplaced
    );
    assert_eq!(hello("rebuilt").await.unwrap(), CertificateCheck::Recorded);
}

#[tokio::test]
async fn a_pending_replacement_leaves_the_host_alone_until_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
    let hello = |cert: &str| store.record_hello(id("web-1"), cert.into(), hello_at(5));
    enrol(&store, "web-1", "old").await;
    assert!(matches!(
        join_with_new_token(&store, "web-1", "new", true, Approval::Pending).await,
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
        join_with_new_token(&store, "web-1", "newer", true, Approval::Pending).await,
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

#[tokio::test]
async fn host_events_keep_the_newest_and_go_with_their_host() {
    use brine_common::host::HostEventKind;
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
    let event = |n: i64| HostEvent::new(n, HostEventKind::Repaired, format!("repair {n}"));
    assert!(
        !store
            .record_host_event(id("ghost"), event(0))
            .await
            .unwrap()
    );
    for host in ["web-1", "web-10"] {
        enrol(&store, host, host).await;
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

#[tokio::test]
async fn a_job_left_running_is_interrupted_for_the_hosts_without_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
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

    assert_eq!(store.interrupt_running_jobs(9).await.unwrap(), ["j-1"]);
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
    assert!(store.interrupt_running_jobs(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn job_history_keeps_the_newest_and_the_recent_but_never_a_running_job() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
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
        kept(store.jobs(100).await.unwrap()),
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
        kept(store.jobs(100).await.unwrap()),
        ["20260101T000006-0000", "20260101T000000-0000"]
    );
}

#[tokio::test]
async fn certificate_revocations_persist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        store
            .revoke_certificates(CertRole::Ci, "gitlab".into(), 7)
            .await
            .unwrap();
        store
            .revoke_certificates(CertRole::Ci, "gitlab".into(), 9)
            .await
            .unwrap();
    }
    let revocations = RedbStore::open(&path)
        .unwrap()
        .certificate_revocations()
        .await
        .unwrap();
    assert_eq!(
        revocations,
        [CertificateRevocation {
            role: CertRole::Ci,
            name: "gitlab".into(),
            revoked_at_unix_ms: 9
        }]
    );
}

/// Changes the database file as an older master, or damage, left it.
fn write_raw(
    store: &RedbStore,
    write: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
) {
    store
        .db
        .with(|db| {
            let tx = db.begin_write()?;
            write(&tx)?;
            tx.commit()?;
            Ok(())
        })
        .unwrap();
}

/// A stored record as the master wrote it before records carried a format.
fn without_format(bytes: &[u8]) -> Vec<u8> {
    let mut record: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    assert_eq!(record["format"], 1, "written with its format");
    record.as_object_mut().unwrap().remove("format");
    serde_json::to_vec(&record).unwrap()
}

/// Rewrites every record of `table` without its format.
fn strip_formats(
    tx: &redb::WriteTransaction,
    table: TableDefinition<&str, &[u8]>,
) -> Result<(), StoreError> {
    let mut table = tx.open_table(table)?;
    let records: Vec<(String, Vec<u8>)> = table
        .iter()?
        .map(|entry| {
            let (key, value) = entry?;
            Ok((key.value().to_owned(), without_format(value.value())))
        })
        .collect::<Result<_, StoreError>>()?;
    for (key, record) in records {
        table.insert(key.as_str(), record.as_slice())?;
    }
    Ok(())
}

#[tokio::test]
async fn records_written_before_records_carried_a_format_still_read() {
    use brine_common::host::HostEventKind;
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
    enrol(&store, "web-1", "ab").await;
    store
        .record_host_event(
            id("web-1"),
            HostEvent::new(3, HostEventKind::Repaired, "repaired"),
        )
        .await
        .unwrap();
    store
        .add_release("j-1".into(), "admin".into(), 1, Pins::new())
        .await
        .unwrap();
    let job = JobRecord {
        summary: JobSummary {
            job_id: JobId::new("j-1").unwrap(),
            hosts: vec![],
            started_at_unix_ms: 1,
            finished_at_unix_ms: 2,
            resolve_ms: 0,
            cancelled_by: None,
        },
        target: String::new(),
        caller: "admin".into(),
        plan: false,
        running: false,
        targets: vec![id("web-1")],
    };
    store.record_job(job, KEEP_ALL).await.unwrap();
    let lock = LockRecord {
        holder: "admin".into(),
        message: "by hand".into(),
        acquired_at_unix_ms: 0,
        expires_at_unix_ms: 100,
        job_id: None,
    };
    store.try_lock(lock, 0).await.unwrap().unwrap();
    store
        .revoke_certificates(CertRole::Ci, "gitlab".into(), 9)
        .await
        .unwrap();
    let everything = || async {
        (
            store.minions().await.unwrap(),
            store.tokens().await.unwrap(),
            store.host_events(id("web-1"), 10).await.unwrap(),
            store.releases().await.unwrap(),
            store.jobs(10).await.unwrap(),
            store.current_lock(0).await.unwrap(),
            store.certificate_revocations().await.unwrap(),
        )
    };
    let written = everything().await;

    write_raw(&store, |tx| {
        for table in [minions::TABLE, tokens::TABLE, jobs::TABLE, lock::TABLE] {
            strip_formats(tx, table)?;
        }
        let mut releases = tx.open_table(releases::TABLE)?;
        let release = without_format(releases.get(1)?.unwrap().value());
        releases.insert(1, release.as_slice())?;
        let mut events = tx.open_table(events::TABLE)?;
        let event = without_format(events.get(("web-1", 0))?.unwrap().value());
        events.insert(("web-1", 0), event.as_slice())?;
        // A revocation was the moment alone.
        tx.open_table(revocations::TABLE)?
            .insert("ci/gitlab", b"9".as_slice())?;
        Ok(())
    });
    assert_eq!(everything().await, written);
}

#[tokio::test]
async fn an_unreadable_record_is_corrupt_naming_its_table_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
    let names = |err: StoreError| match err {
        StoreError::Corrupt { table, key, .. } => (table, key),
        other => panic!("not Corrupt: {other:?}"),
    };
    write_raw(&store, |tx| {
        let newer = br#"{"format":2,"id":"web-1"}"#.as_slice();
        tx.open_table(minions::TABLE)?.insert("web-1", newer)?;
        tx.open_table(jobs::TABLE)?
            .insert("j-9", b"{\"summary\":".as_slice())?;
        tx.open_table(releases::TABLE)?
            .insert(4, b"[]".as_slice())?;
        tx.open_table(events::TABLE)?
            .insert(("web-1", 7), br#"{"format":1}"#.as_slice())?;
        tx.open_table(revocations::TABLE)?
            .insert("ci/gitlab", br#"{"format":1}"#.as_slice())?;
        Ok(())
    });
    let web_1 = ("minions", "web-1".to_owned());
    assert_eq!(names(store.minion(id("web-1")).await.unwrap_err()), web_1);
    assert_eq!(names(store.minions().await.unwrap_err()), web_1);
    assert_eq!(
        names(store.job("j-9".into()).await.unwrap_err()),
        ("jobs", "j-9".to_owned())
    );
    assert_eq!(
        names(store.releases().await.unwrap_err()),
        ("releases", "4".to_owned())
    );
    assert_eq!(
        names(store.host_events(id("web-1"), 10).await.unwrap_err()),
        ("host_events", "web-1/7".to_owned())
    );
    let err = store.certificate_revocations().await.unwrap_err();
    assert!(err.to_string().contains(r#""ci/gitlab""#), "{err}");
    assert_eq!(
        names(err),
        ("certificate_revocations", "ci/gitlab".to_owned())
    );
}

#[tokio::test]
async fn the_lock_refuses_a_second_holder_until_released_or_expired() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
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
