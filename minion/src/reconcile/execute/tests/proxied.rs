//! Containers whose ports the host's proxy carries, and rollout hooks: the executor against
//! the recording runtime and a fake proxy on a real unix socket, which records its requests in
//! the runtime's list of calls so that their order shows.
//!
//! These run in real time (a socket's answer and a paused clock race), with health checks of
//! a few milliseconds.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use brine_common::proxy_control::{ControlRequest, ControlResponse, ProxyMode};
use brine_common::spec::{ProxySpec, RolloutHooks};
use futures::{SinkExt, StreamExt};
use tokio::net::UnixListener;
use tokio_util::codec::{Framed, LinesCodec};

use super::*;

/// A proxy that answers like brine-proxy and records each request as a call.
struct FakeProxy {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
}

impl FakeProxy {
    fn start(state: Arc<Mutex<FakeState>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let routes: Arc<Mutex<BTreeMap<SocketAddr, SocketAddr>>> = Arc::default();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                let routes = routes.clone();
                tokio::spawn(async move {
                    let mut lines = Framed::new(stream, LinesCodec::new());
                    while let Some(Ok(line)) = lines.next().await {
                        let request: ControlRequest = serde_json::from_str(&line).unwrap();
                        let answer = answer(&state, &routes, request);
                        let reply = serde_json::to_string(&answer).unwrap();
                        if lines.send(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { _dir: dir, socket }
    }
}

fn answer(
    state: &Mutex<FakeState>,
    routes: &Mutex<BTreeMap<SocketAddr, SocketAddr>>,
    request: ControlRequest,
) -> ControlResponse {
    let mut routes = routes.lock().unwrap();
    let mut state = state.lock().unwrap();
    match request {
        ControlRequest::Route { route } => {
            state
                .calls
                .push(format!("route {} {}", route.listen, route.backend));
            ControlResponse::Routed {
                previous: routes.insert(route.listen, route.backend),
            }
        }
        ControlRequest::Drain {
            listen, backend, ..
        } => {
            state.calls.push(format!("drain {listen} {backend}"));
            ControlResponse::Drained {
                cut: 0,
                waited_ms: 0,
            }
        }
        ControlRequest::Release { listen, .. } => {
            state.calls.push(format!("release {listen}"));
            routes.remove(&listen);
            ControlResponse::Released
        }
        ControlRequest::List => ControlResponse::Routes { routes: vec![] },
    }
}

/// A proxied `web` on host port 8080, healthy after a few milliseconds.
fn proxied(image: &str) -> ContainerSpec {
    ContainerSpec {
        ports: vec!["8080:80".parse().unwrap()],
        proxy: Some(ProxySpec {
            mode: ProxyMode::Http,
            drain_ms: 5_000,
        }),
        health: HealthCheck {
            probe: Some(Probe::Exec {
                command: vec!["/check".into()],
            }),
            interval_ms: 5,
            min_healthy_ms: 10,
            deadline_ms: 200,
        },
        ..spec("web", image)
    }
}

/// Applies `spec`, which must replace the container; the calls the job made.
async fn replaced(exec: &Executor<Recording>, spec: ContainerSpec) -> Vec<String> {
    let result = apply(exec, vec![spec]).await;
    assert_eq!(
        result.containers[0].action,
        ContainerAction::Replaced,
        "{result:?}"
    );
    exec.runtime.calls()
}

fn with_proxy(exec: Executor<Recording>) -> (Executor<Recording>, FakeProxy) {
    let proxy = FakeProxy::start(exec.runtime.state.clone());
    let exec = exec.with_proxy(ProxyClient::new(proxy.socket.clone()));
    (exec, proxy)
}

#[tokio::test]
async fn a_proxied_replacement_switches_traffic_once_healthy_then_drains_and_stops_the_old_one() {
    let (exec, _proxy) = with_proxy(executor(&[("app:1", "sha256:a")]));
    let old = deployed_then_moved(&exec, vec![proxied("app:1")], true).await;
    assert_eq!(old, "c1");

    let calls = replaced(&exec, proxied("app:1")).await;
    let expected_order = [
        "create host.web.next",
        "start c2",
        "exec c2",
        "route 0.0.0.0:8080 10.0.0.2:80",
        "drain 0.0.0.0:8080 10.0.0.1:80",
        "stop c1",
        "remove c1",
        "rename c2 host.web",
    ];
    assert_in_order(&calls, &expected_order);
    // Docker publishes nothing: the proxy owns the port.
    assert!(exec.runtime.state.lock().unwrap().ports["c2"].is_empty());
    let new = exec.runtime.container("host.web").unwrap();
    assert_eq!(new.label(labels::PROXY), Some("0.0.0.0:8080>80"));
    assert_eq!(new.label(labels::PROXY_MODE), Some("http"));
}

#[tokio::test]
async fn an_unhealthy_proxied_replacement_never_gets_traffic() {
    let (exec, _proxy) = with_proxy(executor(&[("app:1", "sha256:a")]));
    deployed_then_moved(&exec, vec![proxied("app:1")], false).await;

    let result = apply(&exec, vec![proxied("app:1")]).await;
    assert_eq!(result.containers[0].action, ContainerAction::Failed);
    assert!(result.containers[0].previous_restored);
    let calls = exec.runtime.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("route") || c.starts_with("drain")),
        "{calls:?}"
    );
    assert!(!calls.contains(&"stop c1".to_owned()), "{calls:?}");
}

#[tokio::test]
async fn a_proxied_container_on_a_host_without_a_proxy_is_refused_and_removed() {
    let exec = executor(&[("app:1", "sha256:a")])
        .with_proxy(ProxyClient::new("/nonexistent/brine-proxy.sock"));

    let result = apply(&exec, vec![proxied("app:1")]).await;
    assert_eq!(result.containers[0].action, ContainerAction::Failed);
    let error = result.containers[0].error.clone().unwrap();
    assert!(
        error.contains("brine-proxy does not answer at /nonexistent/brine-proxy.sock")
            && error.contains("brine-proxy.service"),
        "{error}"
    );
    assert!(exec.runtime.state.lock().unwrap().containers.is_empty());
}

#[tokio::test]
async fn a_removed_proxied_container_gives_its_port_back_first() {
    let (exec, _proxy) = with_proxy(executor(&[("app:1", "sha256:a")]));
    apply(&exec, vec![proxied("app:1"), spec("other", "app:1")]).await;
    let web = exec.runtime.container("host.web").unwrap().id;

    let result = apply(&exec, vec![spec("other", "app:1")]).await;
    assert_eq!(result.status, HostStatus::Changed, "{result:?}");
    let calls = exec.runtime.calls();
    assert!(
        position(&calls, "release 0.0.0.0:8080") < position(&calls, &format!("remove {web}")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn turning_the_proxy_off_gives_the_port_back_before_docker_publishes_it() {
    let (exec, _proxy) = with_proxy(executor(&[("app:1", "sha256:a")]));
    apply(&exec, vec![proxied("app:1")]).await;
    exec.runtime.state.lock().unwrap().calls.clear();

    let plain = ContainerSpec {
        proxy: None,
        ..proxied("app:1")
    };
    let calls = replaced(&exec, plain).await;
    assert!(
        position(&calls, "release 0.0.0.0:8080") < position(&calls, "create host.web"),
        "{calls:?}"
    );
    let new = exec.runtime.container("host.web").unwrap();
    assert_eq!(new.published.len(), 1, "Docker publishes the port again");
}

#[tokio::test]
async fn a_kept_proxied_container_is_routed_again() {
    let (exec, _proxy) = with_proxy(executor(&[("app:1", "sha256:a")]));
    apply(&exec, vec![proxied("app:1")]).await;
    exec.runtime.state.lock().unwrap().calls.clear();

    let result = apply(&exec, vec![proxied("app:1")]).await;
    assert_eq!(result.containers[0].action, ContainerAction::Kept);
    let calls: Vec<String> = exec
        .runtime
        .calls()
        .into_iter()
        .filter(|c| !c.starts_with("pull"))
        .collect();
    assert_eq!(
        calls,
        ["route 0.0.0.0:8080 10.0.0.1:80"],
        "a proxy that lost its routes gets them back at the next job"
    );
}

/// Hooks that append their point and containers to `log`, failing at `fail_at`.
fn hooked(image: &str, log: &std::path::Path, fail_before: bool) -> ContainerSpec {
    let script = |point: &str, exit: u8| {
        vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            format!(
                "echo \"{point} $BRINE_CONTAINERS\" >> {}; echo deregistration refused >&2; exit {exit}",
                log.display()
            ),
        ]
    };
    ContainerSpec {
        hooks: Some(RolloutHooks {
            before_replace: script("before", u8::from(fail_before)),
            after_healthy: script("after", 0),
            timeout_ms: 5_000,
        }),
        ..proxied(image)
    }
}

#[tokio::test]
async fn hooks_run_around_a_replacement_and_not_at_the_first_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hooks.log");
    let (exec, _proxy) = with_proxy(executor(&[("app:1", "sha256:a")]));
    deployed_then_moved(&exec, vec![hooked("app:1", &log, false)], true).await;
    assert!(!log.exists(), "a first deploy replaces nothing");

    let result = apply(&exec, vec![hooked("app:1", &log, false)]).await;
    assert_eq!(
        result.containers[0].action,
        ContainerAction::Replaced,
        "{result:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "before web\nafter web\n"
    );
}

#[tokio::test]
async fn a_failing_before_replace_hook_leaves_the_role_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hooks.log");
    let (exec, _proxy) = with_proxy(executor(&[("app:1", "sha256:a")]));
    deployed_then_moved(&exec, vec![hooked("app:1", &log, true)], true).await;

    let result = apply(&exec, vec![hooked("app:1", &log, true)]).await;
    assert_eq!(result.status, HostStatus::Failed);
    let entry = &result.containers[0];
    assert_eq!(entry.action, ContainerAction::Failed);
    assert!(entry.previous_restored);
    let error = entry.error.clone().unwrap();
    assert!(
        error.contains("not replaced: the before_replace hook")
            && error.contains("exit status: 1")
            && error.contains("deregistration refused"),
        "{error}"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "before web\n");
    let calls = exec.runtime.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("create") || c.starts_with("stop")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn turning_the_proxy_on_stops_the_container_docker_published_the_port_for_first() {
    let (exec, _proxy) = with_proxy(executor(&[("app:1", "sha256:a")]));
    let plain = ContainerSpec {
        proxy: None,
        ..proxied("app:1")
    };
    apply(&exec, vec![plain]).await;
    exec.runtime.state.lock().unwrap().calls.clear();

    let calls = replaced(&exec, proxied("app:1")).await;
    let expected_order = [
        "stop c1",
        "create host.web",
        "route 0.0.0.0:8080 10.0.0.2:80",
        "remove c1",
    ];
    assert_in_order(&calls, &expected_order);
}

#[tokio::test]
async fn a_replacement_a_crash_interrupted_moves_the_proxy_when_it_finishes() {
    let (exec, _proxy) = with_proxy(executor(&[("app:1", "sha256:a")]));
    apply(&exec, vec![proxied("app:1")]).await;
    // The minion died with the new container started beside the old one, before the switch.
    {
        let mut state = exec.runtime.state.lock().unwrap();
        let mut next = state.containers[0].clone();
        next.id = "c2".into();
        next.docker_name = "host.web.next".into();
        state.containers.push(next);
        state.calls.clear();
    }

    let desired = DesiredState::new(vec![proxied("app:1")]).unwrap();
    let results = exec.finish_interrupted(&desired).await.unwrap();
    assert_eq!(results[0].containers[0].action, ContainerAction::Replaced);
    let calls = exec.runtime.calls();
    let expected_order = [
        "route 0.0.0.0:8080 10.0.0.2:80",
        "drain 0.0.0.0:8080 10.0.0.1:80",
        "stop c1",
        "rename c2 host.web",
    ];
    assert_in_order(&calls, &expected_order);
}
