//! The etcd store's tests on a real etcd (Debian's `etcd`, one member per test unless a test
//! needs more): the store's contract, and what only a store shared by several masters promises
//! (writes racing from two stores, records split over many keys, a cluster that goes away).

use std::sync::Arc;
use std::time::{Duration, Instant};

use brine_common::host::{HostEvent, HostEventKind};
use brine_common::outcome::JobSummary;

use super::*;
use crate::store::contract::{KEEP_ALL, created_report, enrol, id};
use crate::store::{Approval, HostChange, JoinRefusal};

#[path = "../../../tests/support/etcd.rs"]
mod cluster;

use cluster::EtcdCluster;

/// The settings of a store under a prefix of its own on `cluster`.
fn settings(cluster: &EtcdCluster) -> EtcdSettings {
    EtcdSettings {
        endpoints: cluster.endpoints(),
        prefix: format!("/brine-test/{:x}/", rand::random::<u64>()),
        tls: None,
        quota_bytes: DEFAULT_QUOTA_BYTES,
    }
}

async fn start(members: usize) -> EtcdCluster {
    tokio::task::spawn_blocking(move || EtcdCluster::start(members))
        .await
        .unwrap()
}

/// A store on a new one-member cluster, and the cluster.
async fn fresh() -> (EtcdStore, EtcdCluster) {
    let cluster = start(1).await;
    let store = EtcdStore::connect(&settings(&cluster)).await.unwrap();
    (store, cluster)
}

mod contract {
    crate::store::contract::contract_tests!(super::fresh().await);
}

fn job(job_id: &str, hosts: &[String], running: bool) -> JobRecord {
    JobRecord {
        summary: JobSummary {
            job_id: JobId::new(job_id).unwrap(),
            hosts: hosts.iter().map(|h| created_report(h)).collect(),
            started_at_unix_ms: 1,
            finished_at_unix_ms: if running { 0 } else { 2 },
            resolve_ms: 0,
            cancelled_by: None,
        },
        target: String::new(),
        caller: "admin".into(),
        plan: false,
        running,
        targets: hosts.iter().map(|h| id(h)).collect(),
        request: None,
        master: None,
        lease: None,
        kind: None,
        command: None,
    }
}

/// How many keys the cluster holds under `prefix`.
async fn keys_under(store: &EtcdStore, prefix: String) -> usize {
    store.under(prefix).await.unwrap().len()
}

#[tokio::test]
async fn a_job_over_more_hosts_than_a_transaction_carries_is_kept_whole_and_forgotten_whole() {
    let (store, _cluster) = fresh().await;
    // 2.5 transactions' worth of reports, and of hosts whose records the job's end updates.
    let hosts: Vec<String> = (0..250).map(|n| format!("host-{n:03}")).collect();
    for host in &hosts {
        enrol(&store, host, host).await;
    }
    let mut running = job("20260101-000000-000001", &hosts[..120], true);
    running.targets = hosts.iter().map(|h| id(h)).collect();
    store.record_job_progress(running).await.unwrap();
    let so_far = store
        .job("20260101-000000-000001".into())
        .await
        .unwrap()
        .unwrap();
    assert!(so_far.running);
    assert_eq!(so_far.summary.hosts.len(), 120);
    assert_eq!(so_far.targets.len(), 250);

    let finished = job("20260101-000000-000001", &hosts, false);
    store.record_job(finished.clone(), KEEP_ALL).await.unwrap();
    assert_eq!(
        store.job("20260101-000000-000001".into()).await.unwrap(),
        Some(finished)
    );
    // Every host's record says what it runs now, the last one's as the first one's.
    for host in [&hosts[0], &hosts[249]] {
        let record = store.minion(id(host)).await.unwrap().unwrap();
        assert_eq!(record.running.len(), 1, "{host}");
    }
    // No value holds the whole job: each report is a key of its own.
    assert_eq!(
        keys_under(&store, store.keys.job_hosts("20260101-000000-000001")).await,
        250
    );

    // A newer job pushes it out of a history of one, with every key it had.
    let retention = JobRetention {
        keep: 1,
        max_age: Duration::MAX,
    };
    store
        .record_job(job("20260101-000000-000002", &hosts[..1], false), retention)
        .await
        .unwrap();
    assert_eq!(
        store.job("20260101-000000-000001".into()).await.unwrap(),
        None
    );
    assert_eq!(
        keys_under(&store, store.keys.job_hosts("20260101-000000-000001")).await,
        0
    );
    assert!(
        store
            .read(store.keys.job_targets("20260101-000000-000001"))
            .await
            .unwrap()
            .value
            .is_none()
    );
    let listed = store.jobs_before(None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
}

#[tokio::test]
async fn two_masters_writing_at_once_lose_nothing_and_share_a_single_use_token_once() {
    let cluster = start(1).await;
    let settings = settings(&cluster);
    let first = Arc::new(EtcdStore::connect(&settings).await.unwrap());
    let second = Arc::new(EtcdStore::connect(&settings).await.unwrap());
    enrol(first.as_ref(), "web-1", "ab").await;

    // Events, releases and renewed hellos from both masters at once.
    let mut writers = vec![];
    for (n, store) in [first.clone(), second.clone()]
        .into_iter()
        .cycle()
        .take(20)
        .enumerate()
    {
        writers.push(tokio::spawn(async move {
            let at = i64::try_from(n).unwrap();
            assert!(
                store
                    .record_host_event(
                        id("web-1"),
                        HostEvent::new(at, HostEventKind::Repaired, "repaired")
                    )
                    .await
                    .unwrap()
            );
            store
                .add_release(format!("job-{n}"), "admin".into(), at, Pins::default())
                .await
                .unwrap()
                .id
        }));
    }
    let mut release_ids = vec![];
    for writer in writers {
        release_ids.push(writer.await.unwrap());
    }
    release_ids.sort_unstable();
    assert_eq!(release_ids, (1..=20).collect::<Vec<u64>>());
    assert_eq!(
        second.host_events(id("web-1"), 100).await.unwrap().len(),
        20
    );
    assert_eq!(first.releases().await.unwrap().len(), 20);

    // A token good for one host, used by two joins through two masters at once.
    first
        .add_token(TokenRecord {
            secret_sha256: "f".repeat(64),
            created_at_unix_ms: 0,
            expires_at_unix_ms: i64::MAX,
            uses_left: Some(1),
            uses: 0,
            labels: Default::default(),
            replaces: None,
        })
        .await
        .unwrap();
    let join = |store: Arc<EtcdStore>, who: &'static str| {
        tokio::spawn(async move {
            store
                .join(JoinAttempt {
                    secret_hash: "f".repeat(64),
                    id: id(who),
                    certificate: SignedCertificate {
                        sha256: who.into(),
                        expires_unix_ms: 1_000,
                    },
                    now_unix_ms: 1,
                    approval: Approval::Accepted,
                })
                .await
                .unwrap()
        })
    };
    let outcomes = [
        join(first.clone(), "db-1").await.unwrap(),
        join(second.clone(), "db-2").await.unwrap(),
    ];
    let enrolled = outcomes
        .iter()
        .filter(|o| matches!(o, JoinOutcome::Enrolled { .. }))
        .count();
    assert_eq!(enrolled, 1, "{outcomes:?}");
    assert!(
        outcomes.contains(&JoinOutcome::Refused(JoinRefusal::Token(
            TokenCheck::UsedUp
        ))),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn a_cluster_that_went_away_fails_calls_in_seconds_and_serves_again_when_it_is_back() {
    let cluster = start(1).await;
    let store = EtcdStore::connect(&settings(&cluster)).await.unwrap();
    enrol(&store, "web-1", "ab").await;
    let mut cluster = cluster;
    cluster.kill(0);

    let asked = Instant::now();
    let err = store.minion(id("web-1")).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        asked.elapsed() < RETRY_WINDOW + REQUEST_TIMEOUT,
        "failed after {:?}",
        asked.elapsed()
    );

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart(0);
        cluster
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.minion(id("web-1")).await {
            Ok(found) => {
                assert!(found.is_some());
                break;
            }
            Err(err) if Instant::now() < deadline => {
                assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("the store did not come back: {err}\n{}", cluster.logs()),
        }
    }
}

#[tokio::test]
async fn connecting_to_no_cluster_fails_with_what_was_asked() {
    let settings = EtcdSettings {
        // Nothing listens on a port that was just free.
        endpoints: vec![format!(
            "http://127.0.0.1:{}",
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        )],
        prefix: "/brine/".into(),
        tls: None,
        quota_bytes: DEFAULT_QUOTA_BYTES,
    };
    let err = EtcdStore::connect(&settings).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[test]
fn only_a_write_etcd_certainly_did_not_apply_is_sent_again() {
    let status =
        |code, message: &str| etcd_client::Error::GRpcStatus(tonic::Status::new(code, message));
    // Refused before anything was proposed.
    assert!(never_applied(&status(
        tonic::Code::Unavailable,
        "etcdserver: no leader"
    )));
    assert!(never_applied(&status(
        tonic::Code::Unavailable,
        "etcdserver: leader changed"
    )));
    // A timeout may come after the write was applied: sending it again could apply it twice.
    assert!(!never_applied(&status(
        tonic::Code::Unavailable,
        "etcdserver: request timed out"
    )));
    assert!(!never_applied(&status(
        tonic::Code::DeadlineExceeded,
        "deadline exceeded"
    )));
    // A read may be asked again after any of them.
    assert!(unreachable(&status(
        tonic::Code::Unavailable,
        "etcdserver: request timed out"
    )));
    assert!(!unreachable(&status(
        tonic::Code::InvalidArgument,
        "etcdserver: too many operations in txn request"
    )));
}

#[tokio::test]
async fn a_master_sees_the_host_changes_another_master_makes() {
    use futures::StreamExt;

    let cluster = start(1).await;
    let settings = settings(&cluster);
    let first = EtcdStore::connect(&settings).await.unwrap();
    let second = EtcdStore::connect(&settings).await.unwrap();
    enrol(&first, "web-1", "ab").await;
    let mut changes = first.follow_host_changes().await.unwrap();
    let next = async |changes: &mut HostChanges| {
        tokio::time::timeout(Duration::from_secs(5), changes.next())
            .await
            .expect("a change within 5 s")
            .expect("the changes go on")
            .unwrap()
    };

    second
        .set_approval(id("web-1"), Approval::Revoked)
        .await
        .unwrap();
    match next(&mut changes).await {
        HostChange::Changed(record) => {
            assert_eq!(record.id, id("web-1"));
            assert!(
                !record.admits("ab"),
                "a revoked host is admitted: {record:?}"
            );
        }
        other => panic!("not the revocation: {other:?}"),
    }
    assert!(second.delete_minion(id("web-1")).await.unwrap());
    assert!(matches!(next(&mut changes).await, HostChange::Deleted(gone) if gone == id("web-1")));
}

#[tokio::test]
async fn masters_see_who_holds_each_link_and_pass_each_message_once() {
    use futures::StreamExt;

    use crate::store::{HostAnswer, LinkChange, Relayed};

    let cluster = start(1).await;
    let settings = settings(&cluster);
    let first = EtcdStore::connect(&settings).await.unwrap();
    let second = EtcdStore::connect(&settings).await.unwrap();
    let within = Duration::from_secs(5);

    // A link recorded before following is seen first, then each change.
    first.record_link(id("web-1"), "m1".into()).await.unwrap();
    let mut links = second.follow_links().await.unwrap();
    let mut next_link = async || {
        tokio::time::timeout(within, links.next())
            .await
            .expect("a change within 5 s")
            .expect("the changes go on")
            .unwrap()
    };
    assert_eq!(
        next_link().await,
        LinkChange::Linked {
            host: id("web-1"),
            master: "m1".into()
        }
    );
    // The host moves to the second master; the first's late word that its link ended does
    // not undo that.
    second.record_link(id("web-1"), "m2".into()).await.unwrap();
    first.forget_link(id("web-1"), "m1".into()).await.unwrap();
    first.record_link(id("web-2"), "m1".into()).await.unwrap();
    assert_eq!(
        next_link().await,
        LinkChange::Linked {
            host: id("web-1"),
            master: "m2".into()
        }
    );
    assert_eq!(
        next_link().await,
        LinkChange::Linked {
            host: id("web-2"),
            master: "m1".into()
        }
    );
    // A master that starts again forgets the links it held, only those.
    first.forget_links_of("m1".into()).await.unwrap();
    assert_eq!(next_link().await, LinkChange::Unlinked(id("web-2")));
    second.forget_link(id("web-1"), "m2".into()).await.unwrap();
    assert_eq!(next_link().await, LinkChange::Unlinked(id("web-1")));

    // Messages: one left before following and one after reach their master, once each.
    let answer = |n: u64| Relayed::Answer {
        job: JobId::new("job-1").unwrap(),
        host: id(&format!("web-{n}")),
        answer: HostAnswer::Undeliverable {
            prefetch: false,
            reason: format!("reason {n}"),
        },
    };
    first.relay("m2".into(), answer(1)).await.unwrap();
    first.relay("m3".into(), answer(9)).await.unwrap();
    let mut messages = second.follow_relayed("m2".into()).await.unwrap();
    first.relay("m2".into(), answer(2)).await.unwrap();
    for n in [1, 2] {
        let message = tokio::time::timeout(within, messages.next())
            .await
            .expect("a message within 5 s")
            .expect("the messages go on")
            .unwrap();
        assert_eq!(message, answer(n));
    }
    drop(messages);
    // Read messages are gone; another master's wait for it.
    let mut again = second.follow_relayed("m2".into()).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), again.next())
            .await
            .is_err(),
        "a message was delivered twice"
    );
    let mut third = first.follow_relayed("m3".into()).await.unwrap();
    let message = tokio::time::timeout(within, third.next())
        .await
        .expect("a message within 5 s")
        .expect("the messages go on")
        .unwrap();
    assert_eq!(message, answer(9));
}

#[tokio::test]
async fn a_job_is_held_under_a_lease_and_let_go_when_the_lease_runs_out() {
    use futures::StreamExt;

    use crate::rollout::Rollout;
    use crate::store::{JobOwner, JobPlanRecord};

    let cluster = start(1).await;
    let settings = settings(&cluster);
    let first = EtcdStore::connect(&settings).await.unwrap();
    let second = EtcdStore::connect(&settings).await.unwrap();
    let hosts = ["web-1".to_owned(), "web-2".to_owned()];
    let job_id = JobId::new("20261203T000000-00000001").unwrap();
    let lease = first.grant_lease(Duration::from_secs(1)).await.unwrap();
    let owner = JobOwner {
        master: "m1".into(),
        lease: lease.id(),
    };
    let plan = JobPlanRecord {
        job_id: job_id.clone(),
        job_type: crate::job::JobType::Highstate,
        target: String::new(),
        rollout: Rollout::default(),
        timeout_ms: 60_000,
        plan: false,
        desired: hosts.iter().map(|h| (id(h), Default::default())).collect(),
        blocked: Default::default(),
        deployed: Default::default(),
        previous_release: None,
        caller: "admin".into(),
        resolve_ms: 0,
        not_accepted: 0,
        request: None,
    };
    assert!(
        first
            .claim_job(job_id.clone(), owner.clone(), Some(plan.clone()))
            .await
            .unwrap()
    );
    let mut held = job(job_id.as_str(), &hosts[..1], true);
    held.master = Some("m1".into());
    held.lease = Some(lease.id());
    first.record_job_progress(held.clone()).await.unwrap();
    // Held: another master's claim fails, and it sees the job, its holder and its plan.
    let other = second.grant_lease(Duration::from_secs(30)).await.unwrap();
    let claimant = JobOwner {
        master: "m2".into(),
        lease: other.id(),
    };
    assert!(
        !second
            .claim_job(job_id.clone(), claimant.clone(), None)
            .await
            .unwrap()
    );
    assert_eq!(
        second.running_jobs().await.unwrap(),
        [(job_id.clone(), Some(owner))]
    );
    assert_eq!(second.job_plan(job_id.clone()).await.unwrap(), Some(plan));

    // The first master stops renewing: the job is let go of, and the second claims it.
    let mut released = second.follow_released_jobs().await.unwrap();
    drop(lease);
    let gone = tokio::time::timeout(Duration::from_secs(10), released.next())
        .await
        .expect("let go of within the lease's time and etcd's check")
        .expect("the following goes on")
        .unwrap();
    assert_eq!(gone, job_id);
    assert!(
        second
            .claim_job(job_id.clone(), claimant.clone(), None)
            .await
            .unwrap()
    );
    // The first master's late write is refused: it no longer holds the job.
    let refused = first.record_job_progress(held).await.unwrap_err();
    assert!(refused.to_string().contains("no longer held"), "{refused}");
    // The new holder's end of the job lets go of it and forgets its plan.
    let mut finished = job(job_id.as_str(), &hosts, false);
    finished.master = Some("m2".into());
    finished.lease = Some(other.id());
    second
        .record_job(finished, crate::store::contract::KEEP_ALL)
        .await
        .unwrap();
    assert!(second.running_jobs().await.unwrap().is_empty());
    assert_eq!(second.job_plan(job_id.clone()).await.unwrap(), None);
    assert_eq!(keys_under(&second, second.keys.job_owners()).await, 0);
}

/// PEM files for a TLS cluster: a CA, the members' certificate (for 127.0.0.1) and a client's,
/// all written to `dir`; and a client certificate from another CA.
fn tls_files(dir: &std::path::Path) -> (cluster::Tls, EtcdTls) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };

    let authority = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        (pem, Issuer::new(params, key))
    };
    let leaf = |issuer: &Issuer<'_, KeyPair>, name: &str, usages| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = usages;
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let (ca_pem, ca) = authority("etcd CA");
    let (server_cert, server_key) = leaf(
        &ca,
        "etcd",
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    );
    let (client_cert, client_key) = leaf(
        &ca,
        "brine-master",
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    );
    let (_, other) = authority("another CA");
    let (stranger_cert, stranger_key) = leaf(
        &other,
        "stranger",
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    );
    let files = cluster::Tls {
        ca: write("ca.pem", &ca_pem),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server.key", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client.key", &client_key),
    };
    let stranger = EtcdTls {
        ca_file: files.ca.clone(),
        cert_file: write("stranger.pem", &stranger_cert),
        key_file: write("stranger.key", &stranger_key),
    };
    (files, stranger)
}

#[tokio::test]
async fn etcd_over_tls_serves_a_master_with_its_client_certificate_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let (files, stranger) = tls_files(dir.path());
    let cluster = {
        let files = files.clone();
        tokio::task::spawn_blocking(move || EtcdCluster::start_tls(1, files))
            .await
            .unwrap()
    };
    let with = |tls: Option<EtcdTls>| EtcdSettings {
        tls,
        ..settings(&cluster)
    };
    let master = EtcdTls {
        ca_file: files.ca.clone(),
        cert_file: files.client_cert.clone(),
        key_file: files.client_key.clone(),
    };
    assert!(cluster.endpoints()[0].starts_with("https://"));
    let store = EtcdStore::connect(&with(Some(master.clone())))
        .await
        .unwrap();
    assert!(matches!(
        store.claim_fleet("ab".repeat(32)).await.unwrap(),
        FleetClaim::New
    ));
    // Without a client certificate, or with one another CA signed, etcd lets nobody in.
    for refused in [None, Some(stranger)] {
        let attempt =
            tokio::time::timeout(Duration::from_secs(30), EtcdStore::connect(&with(refused)))
                .await
                .expect("a refusal within 30 s");
        assert!(
            attempt.is_err(),
            "etcd let a master in without its certificate"
        );
    }
}
