//! The real `brine-proxy` binary's control socket and life: bad requests, releases, restarts
//! with saved routes, sockets inherited through socket activation.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use brine_common::proxy_control::{
    ControlRequest, ControlResponse, MAX_LINE_BYTES, ProxyMode, Route,
};
use common::{Backend, ProxyProcess, free_address, get_once, terminate, write_config};

fn error_of(response: ControlResponse) -> String {
    match response {
        ControlResponse::Error { message } => message,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_the_proxy_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = ProxyProcess::start(dir.path()).await;
    let mode = std::fs::metadata(&proxy.control)
        .expect("the socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the control socket is private");
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let listen = free_address();
    let mut control = proxy.control().await;
    control.route(listen, blue.address, ProxyMode::Http).await;

    let message = error_of(control.raw("{not json").await.expect("an answer"));
    assert!(
        message.starts_with("cannot read the request: "),
        "{message}"
    );
    let message = error_of(
        control
            .raw(r#"{"op":"shutdown"}"#)
            .await
            .expect("an answer"),
    );
    assert!(message.contains("unknown variant `shutdown`"), "{message}");

    let taken = control
        .send(&ControlRequest::Route {
            route: Route {
                listen,
                backend: green.address,
                mode: ProxyMode::Http,
                owner: "other/api".into(),
            },
        })
        .await;
    let message = error_of(taken);
    assert!(
        message.contains("is routed for test/web") && message.contains(&listen.to_string()),
        "{message}"
    );

    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = held.local_addr().expect("address");
    let message = error_of(control.route(busy, blue.address, ProxyMode::Tcp).await);
    assert!(
        message.starts_with(&format!("cannot listen on {busy}: ")) && message.contains("in use"),
        "{message}"
    );

    let message = error_of(control.drain(listen, blue.address, 100).await);
    assert!(message.contains("is the current backend"), "{message}");
    let message = error_of(control.drain(busy, blue.address, 100).await);
    assert_eq!(message, format!("no route listens on {busy}"));

    // The connection is still usable after all of these, and the traffic flows.
    match control.send(&ControlRequest::List).await {
        ControlResponse::Routes { routes } => {
            assert_eq!(routes.len(), 1, "{routes:?}");
            assert_eq!(routes[0].route.backend, blue.address);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(get_once(listen, "/").await.expect("served").1, "blue");

    // An overlong line is refused, and that connection closed.
    let long = "a".repeat(MAX_LINE_BYTES + 10);
    let message = error_of(control.raw(&long).await.expect("an answer"));
    assert!(message.contains("longer than"), "{message}");
    assert_eq!(control.read().await, None, "the connection is closed");
    let mut control = proxy.control().await;
    assert!(matches!(
        control.send(&ControlRequest::List).await,
        ControlResponse::Routes { .. }
    ));
    assert_eq!(get_once(listen, "/").await.expect("served").1, "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_proxy_on_the_same_socket_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _proxy = ProxyProcess::start(dir.path()).await;
    let output = Command::new(common::BIN)
        .args(["run", "--config"])
        .arg(dir.path().join("proxy.toml"))
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("another brine-proxy answers on it"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_frees_the_port_before_it_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = ProxyProcess::start(dir.path()).await;
    let blue = Backend::start("blue").await;
    let listen = free_address();
    let mut control = proxy.control().await;
    control.route(listen, blue.address, ProxyMode::Http).await;
    // A kept-alive client connection stays open across the release; it holds no port.
    let mut kept = common::KeptAlive::connect(listen).await.expect("connect");
    assert_eq!(kept.get("/").await.expect("served").1, "blue");
    assert_eq!(
        control
            .send(&ControlRequest::Release {
                listen,
                timeout_ms: 1000
            })
            .await,
        ControlResponse::Released
    );
    let rebound = std::net::TcpListener::bind(listen);
    assert!(rebound.is_ok(), "{rebound:?}");
    match control.send(&ControlRequest::List).await {
        ControlResponse::Routes { routes } => assert!(routes.is_empty(), "{routes:?}"),
        other => panic!("{other:?}"),
    }
    // Releasing again changes nothing.
    assert_eq!(
        control
            .send(&ControlRequest::Release {
                listen,
                timeout_ms: 1000
            })
            .await,
        ControlResponse::Released
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_come_back_after_a_restart_and_a_stop_finishes_what_is_in_flight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proxy = ProxyProcess::start(dir.path()).await;
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let (web, raw) = (free_address(), free_address());
    let mut control = proxy.control().await;
    control.route(web, blue.address, ProxyMode::Http).await;
    control.route(raw, green.address, ProxyMode::Tcp).await;

    // A request in flight when SIGTERM comes is answered before the proxy exits.
    let slow = tokio::spawn(get_once(web, "/slow/400"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = proxy.stop();
        (status, proxy)
    })
    .await
    .expect("stop");
    let (status, proxy) = status;
    assert!(status.success(), "{status}\n{}", proxy.log());
    let (code, body) = slow.await.expect("task").expect("answered while stopping");
    assert_eq!((code.as_u16(), body.as_str()), (200, "blue"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stop_drain is not waited out"
    );
    drop(proxy);

    let proxy = ProxyProcess::start(dir.path()).await;
    let mut control = proxy.control().await;
    match control.send(&ControlRequest::List).await {
        ControlResponse::Routes { routes } => {
            let routes: Vec<(_, _, _)> = routes
                .iter()
                .map(|s| (s.route.listen, s.route.backend, s.route.mode))
                .collect();
            let mut expected = vec![
                (web, blue.address, ProxyMode::Http),
                (raw, green.address, ProxyMode::Tcp),
            ];
            expected.sort_by_key(|r| r.0);
            assert_eq!(routes, expected);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(get_once(web, "/").await.expect("served").1, "blue");
    assert_eq!(get_once(raw, "/").await.expect("served").1, "green");
}

/// A restart's race: a client connected (and accepted) just before SIGTERM, which sends its
/// request a moment later, is answered, not closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_accepted_before_a_stop_has_its_request_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().expect("tempdir");
    let mut proxy = ProxyProcess::start(dir.path()).await;
    let blue = Backend::start("blue").await;
    let web = free_address();
    let mut control = proxy.control().await;
    control.route(web, blue.address, ProxyMode::Http).await;

    let mut stream = tokio::net::TcpStream::connect(web).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::task::spawn_blocking(move || {
        let status = proxy.stop();
        (status, proxy)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the request");
    let mut answer = String::new();
    let read = stream.read_to_string(&mut answer).await;
    let (status, proxy) = stopping.await.expect("stop");
    assert!(status.success(), "{status}\n{}", proxy.log());
    assert!(
        answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("blue"),
        "{read:?} {answer:?}\n{}",
        proxy.log()
    );
}

/// `systemd-socket-activate`, on PATH or where Debian puts it.
fn socket_activate() -> Option<std::path::PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("systemd-socket-activate"));
    on_path
        .chain([Path::new("/usr/bin/systemd-socket-activate").to_owned()])
        .find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inherited_socket_serves_its_saved_route() {
    let Some(activate) = socket_activate() else {
        panic!(
            "systemd-socket-activate is not installed: install systemd (apt-get install systemd) \
             to test sockets inherited from systemd"
        );
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let blue = Backend::start("blue").await;
    let listen = free_address();
    let routes = serde_json::json!({"routes": [Route {
        listen,
        backend: blue.address,
        mode: ProxyMode::Http,
        owner: "test/web".into(),
    }]});
    std::fs::write(dir.path().join("routes.json"), routes.to_string()).expect("write");
    let log = dir.path().join("activate.log");
    let mut child = Command::new(activate)
        .arg(format!("--listen={listen}"))
        .arg("--setenv=RUST_LOG=brine_proxy=debug")
        .args([common::BIN, "--log-format", "plain", "run", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start systemd-socket-activate");

    // The activator listens first; the first connection waits in the backlog while the proxy
    // starts, which then accepts it on the socket it inherited.
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        match get_once(listen, "/").await {
            Ok(answer) => break answer,
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "{err}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(answer.1, "blue");
    common::wait_for_socket(&dir.path().join("control.sock"), &log).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("restored route (inherited socket)"), "{text}");
    let status = tokio::task::spawn_blocking(move || terminate(&mut child))
        .await
        .expect("stop");
    assert!(status.success(), "{status}");
}
