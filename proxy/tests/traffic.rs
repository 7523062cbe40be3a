//! Traffic through the real `brine-proxy` binary: switching under load, drains, streamed
//! responses.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use brine_common::proxy_control::{ControlRequest, ControlResponse, ProxyMode};
use common::{Backend, KeptAlive, ProxyProcess, free_address, get_once, next_chunk};

/// Switches the route between two backends ten times while a client makes requests, draining
/// the previous backend each time; answers the failures and the names the client saw.
async fn switch_under_load(mode: ProxyMode) -> (Vec<String>, BTreeSet<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = ProxyProcess::start(dir.path()).await;
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let listen = free_address();
    let mut control = proxy.control().await;
    assert_eq!(
        control.route(listen, blue.address, mode).await,
        ControlResponse::Routed { previous: None }
    );

    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut seen = BTreeSet::new();
            let mut kept = match mode {
                ProxyMode::Http => Some(KeptAlive::connect(listen).await.expect("connect")),
                ProxyMode::Tcp => None,
            };
            while !stop.load(Ordering::Relaxed) {
                let answer = match &mut kept {
                    Some(kept) => kept.get("/").await,
                    None => get_once(listen, "/").await,
                };
                match answer {
                    Ok((status, body)) if status.is_success() => {
                        seen.insert(body);
                    }
                    Ok((status, body)) => failures.push(format!("{status}: {body}")),
                    Err(err) => failures.push(err),
                }
            }
            (failures, seen)
        })
    };

    let mut current = &blue;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let next = if current.address == blue.address {
            &green
        } else {
            &blue
        };
        assert_eq!(
            control.route(listen, next.address, mode).await,
            ControlResponse::Routed {
                previous: Some(current.address)
            }
        );
        match control.drain(listen, current.address, 2000).await {
            ControlResponse::Drained { cut: 0, .. } => {}
            other => panic!("drain of {}: {other:?}", current.name),
        }
        current = next;
    }
    tokio::time::sleep(Duration::from_millis(40)).await;
    stop.store(true, Ordering::Relaxed);
    let answer = client.await.expect("the client task");
    if !answer.0.is_empty() {
        eprintln!("{}", proxy.log());
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_switches_under_load_without_a_failed_request() {
    let (failures, seen) = switch_under_load(ProxyMode::Tcp).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(seen, BTreeSet::from(["blue".into(), "green".into()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_switches_a_kept_alive_connection_without_a_failed_request() {
    let (failures, seen) = switch_under_load(ProxyMode::Http).await;
    assert!(failures.is_empty(), "{failures:?}");
    // One connection all along, and it reached both generations.
    assert_eq!(seen, BTreeSet::from(["blue".into(), "green".into()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_waits_for_a_slow_response_and_cuts_one_slower_than_its_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = ProxyProcess::start(dir.path()).await;
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let listen = free_address();
    let mut control = proxy.control().await;
    control.route(listen, blue.address, ProxyMode::Http).await;

    // A response of 300 ms is waited for.
    let slow = tokio::spawn(get_once(listen, "/slow/300"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    control.route(listen, green.address, ProxyMode::Http).await;
    match control.drain(listen, blue.address, 5000).await {
        ControlResponse::Drained { cut: 0, waited_ms } => {
            assert!(waited_ms >= 150, "waited only {waited_ms} ms");
        }
        other => panic!("{other:?}"),
    }
    let (status, body) = slow.await.expect("task").expect("the slow answer");
    assert_eq!((status.as_u16(), body.as_str()), (200, "blue"));

    // One of 10 s is cut at the drain's timeout, and its client connection with it.
    let mut kept = KeptAlive::connect(listen).await.expect("connect");
    let slower = tokio::spawn(async move {
        let answer = kept.get("/slow/10000").await;
        (answer, kept)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    control.route(listen, blue.address, ProxyMode::Http).await;
    match control.drain(listen, green.address, 200).await {
        ControlResponse::Drained { cut: 1, waited_ms } => {
            assert!((200..2000).contains(&waited_ms), "waited {waited_ms} ms");
        }
        other => panic!("{other:?}"),
    }
    let (answer, kept) = tokio::time::timeout(Duration::from_secs(2), slower)
        .await
        .expect("the cut request ends at once")
        .expect("task");
    assert!(answer.is_err(), "{answer:?}");
    assert!(kept.is_closed());
    // New requests go on, to the current backend.
    let (_, body) = get_once(listen, "/").await.expect("served");
    assert_eq!(body, "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tcp_drain_cuts_a_connection_that_outlasts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = ProxyProcess::start(dir.path()).await;
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let listen = free_address();
    let mut control = proxy.control().await;
    control.route(listen, blue.address, ProxyMode::Tcp).await;
    let mut idle = KeptAlive::connect(listen).await.expect("connect");
    assert_eq!(idle.get("/").await.expect("served").1, "blue");
    control.route(listen, green.address, ProxyMode::Tcp).await;
    // The kept-alive connection is one connection in flight to blue until cut.
    match control.drain(listen, blue.address, 100).await {
        ControlResponse::Drained { cut: 1, .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(
        idle.get("/").await.is_err(),
        "the cut connection still answers"
    );
    assert_eq!(get_once(listen, "/").await.expect("served").1, "green");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_response_arrives_chunk_by_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = ProxyProcess::start(dir.path()).await;
    let backend = Backend::start("blue").await;
    let listen = free_address();
    let mut control = proxy.control().await;
    control
        .route(listen, backend.address, ProxyMode::Http)
        .await;

    let mut client = KeptAlive::connect(listen).await.expect("connect");
    let plain = client.send("/").await.expect("served");
    assert_eq!(plain.headers()["x-seen-forwarded-for"], "127.0.0.1");
    drop(plain);
    let response = client.send("/stream").await.expect("the head");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    // The backend holds the second chunk until told: the first must come through alone.
    let first = tokio::time::timeout(Duration::from_secs(2), next_chunk(&mut body))
        .await
        .expect("the first chunk is not held back");
    assert_eq!(first.as_deref(), Some("first\n"));
    match control.send(&ControlRequest::List).await {
        ControlResponse::Routes { routes } => assert_eq!(routes[0].in_flight, 1, "{routes:?}"),
        other => panic!("{other:?}"),
    }
    backend.gate.notify_one();
    let second = tokio::time::timeout(Duration::from_secs(2), next_chunk(&mut body))
        .await
        .expect("the second chunk");
    assert_eq!(second.as_deref(), Some("second\n"));
    // The stream counted as in flight until it ended.
    assert_eq!(next_chunk(&mut body).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgraded_connection_is_spliced_and_drained_by_closing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = ProxyProcess::start(dir.path()).await;
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let listen = free_address();
    let mut control = proxy.control().await;
    control.route(listen, blue.address, ProxyMode::Http).await;

    let mut stream = tokio::net::TcpStream::connect(listen)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("send");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.expect("the head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    stream.write_all(b"ping").await.expect("send");
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).await.expect("the echo");
    assert_eq!(&echoed, b"ping");

    // Counted in flight while open; a drain that times out cuts it.
    match control.send(&ControlRequest::List).await {
        ControlResponse::Routes { routes } => assert_eq!(routes[0].in_flight, 1, "{routes:?}"),
        other => panic!("{other:?}"),
    }
    control.route(listen, green.address, ProxyMode::Http).await;
    match control.drain(listen, blue.address, 100).await {
        ControlResponse::Drained { cut: 1, .. } => {}
        other => panic!("{other:?}"),
    }
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest))
        .await
        .expect("the cut connection closes");
    assert!(read.is_err() || rest.is_empty(), "{read:?} {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_is_a_502_in_http_and_a_closed_connection_in_tcp() {
    use tokio::io::AsyncReadExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = ProxyProcess::start(dir.path()).await;
    let nobody = free_address();
    let (web, raw) = (free_address(), free_address());
    let mut control = proxy.control().await;
    control.route(web, nobody, ProxyMode::Http).await;
    control.route(raw, nobody, ProxyMode::Tcp).await;

    let (status, body) = get_once(web, "/").await.expect("answered");
    assert_eq!(status.as_u16(), 502);
    assert_eq!(
        body,
        "brine-proxy: the backend of this port cannot be reached\n"
    );

    let mut stream = tokio::net::TcpStream::connect(raw).await.expect("accepted");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest))
        .await
        .expect("closed");
    assert!(read.is_err() || rest.is_empty(), "{read:?}");
    // Logged once; the tcp failure just after is within the same 10 s and only counted.
    let log = proxy.log();
    assert!(
        log.contains(&format!("{web}: request to {nobody} failed")),
        "{log}"
    );
    assert!(!log.contains(&format!("{raw}: cannot connect")), "{log}");
}
