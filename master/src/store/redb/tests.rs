//! The redb store's tests: the store's contract, and what only redb promises (its file, read
//! again after a reopen or as an older master wrote it).

use brine_common::host::{HostEvent, HostEventKind};
use brine_common::outcome::JobSummary;
use redb::TableDefinition;

use super::*;
use crate::store::contract::{KEEP_ALL, enrol, id};

/// A store in a new file, and the directory that holds it.
fn fresh() -> (RedbStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
    (store, dir)
}

mod contract {
    crate::store::contract::contract_tests!(super::fresh());
}

/// Writes a record to every table.
async fn fill(store: &dyn Store) {
    enrol(store, "web-1", "ab").await;
    let hello = HostHello {
        at_unix_ms: 5,
        clock_offset_ms: -3,
        ..HostHello::default()
    };
    store
        .record_hello(id("web-1"), "ab".into(), hello)
        .await
        .unwrap();
    store
        .record_host_event(
            id("web-1"),
            HostEvent::new(3, HostEventKind::Repaired, "repaired"),
        )
        .await
        .unwrap();
    let report = crate::store::contract::created_report("web-1");
    let job = JobRecord {
        summary: JobSummary {
            job_id: JobId::new("j-1").unwrap(),
            hosts: vec![report],
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
        request: None,
        master: None,
        lease: None,
        kind: None,
        command: None,
    };
    store.record_job(job, KEEP_ALL).await.unwrap();
    store
        .add_release("j-1".into(), "admin".into(), 1, Pins::new())
        .await
        .unwrap();
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
}

/// What every table holds.
type Tables = (
    Vec<MinionRecord>,
    Vec<ListedToken>,
    Vec<HostEvent>,
    Vec<Release>,
    Vec<JobRecord>,
    Option<LockRecord>,
    Vec<CertificateRevocation>,
);

/// Everything the store holds of what [`fill`] wrote, as read.
async fn read_back(store: &dyn Store) -> Tables {
    (
        store.minions().await.unwrap(),
        store.tokens().await.unwrap(),
        store.host_events(id("web-1"), 10).await.unwrap(),
        store.releases().await.unwrap(),
        store.jobs_before(None, 10).await.unwrap(),
        store.current_lock(0).await.unwrap(),
        store.certificate_revocations().await.unwrap(),
    )
}

#[tokio::test]
async fn every_table_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let written = {
        let store = RedbStore::open(&path).unwrap();
        fill(&store).await;
        read_back(&store).await
    };
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(read_back(&store).await, written);
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
    let (store, _dir) = fresh();
    fill(&store).await;
    let written = read_back(&store).await;

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
    assert_eq!(read_back(&store).await, written);
}

#[tokio::test]
async fn an_unreadable_record_is_corrupt_naming_its_table_and_key() {
    let (store, _dir) = fresh();
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

/// Before approvals existed, a revoked host's record said `"revoked": true` and had no
/// `approval`; read as accepted, it would let a revoked host back in after an upgrade.
#[tokio::test]
async fn a_host_revoked_before_approvals_existed_stays_revoked() {
    let (store, _dir) = fresh();
    let old_record = br#"{"id":"web-1","enrolled_at_unix_ms":1,"certificate_sha256":"ab",
        "last_seen_unix_ms":0,"facts":{"hostname":"","os":"","kernel":"","docker_version":"",
        "cpus":0,"memory_bytes":0,"labels":{}},"running":[],"revoked":true}"#;
    let old_accepted = br#"{"id":"web-2","enrolled_at_unix_ms":1,"certificate_sha256":"cd",
        "last_seen_unix_ms":0,"facts":{"hostname":"","os":"","kernel":"","docker_version":"",
        "cpus":0,"memory_bytes":0,"labels":{}},"running":[],"revoked":false}"#;
    write_raw(&store, |tx| {
        let mut minions = tx.open_table(minions::TABLE)?;
        minions.insert("web-1", old_record.as_slice())?;
        minions.insert("web-2", old_accepted.as_slice())?;
        Ok(())
    });
    let approval = |record: Option<MinionRecord>| record.unwrap().approval;
    assert_eq!(
        approval(store.minion(id("web-1")).await.unwrap()),
        Approval::Revoked
    );
    assert_eq!(
        approval(store.minion(id("web-2")).await.unwrap()),
        Approval::Accepted
    );
    let listed: Vec<Approval> = store
        .minions()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.approval)
        .collect();
    assert_eq!(listed, [Approval::Revoked, Approval::Accepted]);
    assert!(matches!(
        store
            .certificate_check(id("web-1"), "ab".into())
            .await
            .unwrap(),
        CertificateCheck::NotAdmitted(Approval::Revoked)
    ));
}
