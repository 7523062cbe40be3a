//! `DockerRuntime` against the host's real Docker engine.
//!
//! Nothing is downloaded from the internet: images are built locally from the static busybox
//! binary, and the pull tests use an unreachable registry or a throwaway local one. Every name
//! carries a random suffix so the tests can run in parallel, and a guard removes what a test
//! created even when an assertion fails.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brine_common::names::{ContainerName, RoleName};
use brine_common::spec::{
    ContainerSpec, HealthCheck, ImageRef, PortMapping, Probe, Protocol, RestartPolicy, VolumeMount,
};
use brine_minion::reconcile::health::{RuntimeTarget, Unhealthy, wait_until_healthy};
use brine_minion::runtime::docker::DockerRuntime;
use brine_minion::runtime::view::EngineView;
use brine_minion::runtime::{
    ContainerRuntime, ContainerStatus, CreateRequest, DockerHealth, PullProgress, RuntimeError,
    labels,
};
use serde_json::Value;

const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

fn unique_prefix() -> String {
    format!("brine-test-rt-{:016x}", rand::random::<u64>())
}

/// Runs the docker CLI and returns its trimmed stdout, failing the test when it fails.
fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Removes the containers and images a test created, whether or not it passed.
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Errors are ignored: the test may have removed some of these itself.
        if !self.containers.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&self.containers)
                .output();
        }
        if !self.images.is_empty() {
            let _ = Command::new("docker")
                .args(["rmi", "-f"])
                .args(&self.images)
                .output();
        }
    }
}

/// Builds an image holding busybox, tagged `tag`, and returns its id. The single layer also holds
/// `marker`, so no other test's image shares the layer (a pull must really download it) and
/// removing this image never touches another test's.
fn build_image(tag: &str, marker: &str, cleanup: &mut Cleanup) -> String {
    build_image_with(tag, marker, "", cleanup)
}

/// [`build_image`] with `extra` Dockerfile instructions (a HEALTHCHECK, say).
fn build_image_with(tag: &str, marker: &str, extra: &str, cleanup: &mut Cleanup) -> String {
    let context = tempfile::tempdir().expect("a temp dir");
    let root = context.path().join("rootfs");
    std::fs::create_dir_all(root.join("bin")).expect("rootfs/bin");
    std::fs::create_dir_all(root.join("etc")).expect("rootfs/etc");
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox is installed");
    std::fs::write(root.join("etc/brine-test"), marker).expect("marker file");
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM scratch\nCOPY rootfs/ /\nCMD [\"/bin/busybox\",\"sleep\",\"3600\"]\n{extra}"),
    )
    .expect("Dockerfile");
    cleanup.images.push(tag.to_owned());
    let context_path = context.path().to_str().expect("a UTF-8 temp path");
    docker(&["build", "-q", "-t", tag, context_path])
}

fn spec(image: &str, data_dir: &Path) -> ContainerSpec {
    ContainerSpec {
        role: RoleName::new("frontend").expect("role name"),
        name: ContainerName::new("web").expect("container name"),
        image: ImageRef::new(image).expect("image reference"),
        command: vec!["/bin/busybox".into(), "sleep".into(), "300".into()],
        env: BTreeMap::from([("GREETING".into(), "hello world".into())]),
        ports: vec![
            PortMapping {
                host_ip: Some(Ipv4Addr::LOCALHOST.into()),
                host_port: None,
                container_port: 8080,
                protocol: Protocol::Tcp,
            },
            PortMapping {
                host_ip: None,
                host_port: None,
                container_port: 8080,
                protocol: Protocol::Tcp,
            },
        ],
        volumes: vec![VolumeMount {
            source: data_dir.to_str().expect("a UTF-8 temp path").to_owned(),
            target: "/data".into(),
            read_only: true,
        }],
        restart: RestartPolicy::No,
        stop_timeout_seconds: 7,
        health: HealthCheck::default(),
        secret_env: Default::default(),
        proxy: None,
        hooks: None,
    }
}

fn brine_labels(namespace: &str, spec: &ContainerSpec) -> HashMap<String, String> {
    HashMap::from([
        (labels::MANAGED.to_owned(), "true".to_owned()),
        (labels::NAMESPACE.to_owned(), namespace.to_owned()),
        (labels::ROLE.to_owned(), spec.role.to_string()),
        (labels::CONTAINER.to_owned(), spec.name.to_string()),
        (labels::SPEC_HASH.to_owned(), spec.hash().to_string()),
    ])
}

fn inspect_container(id: &str) -> Value {
    let text = docker(&["inspect", "--type", "container", id]);
    let mut all: Vec<Value> = serde_json::from_str(&text).expect("docker inspect prints JSON");
    all.pop().expect("one inspected container")
}

#[tokio::test]
async fn container_lifecycle_against_the_engine() {
    let runtime = DockerRuntime::from_environment();
    let version = runtime.version().await.expect("engine version");
    assert!(!version.is_empty());

    let prefix = unique_prefix();
    let mut cleanup = Cleanup::default();
    let tag = format!("{prefix}:1");
    let image_id = build_image(&tag, &prefix, &mut cleanup);
    let data_dir = tempfile::tempdir().expect("a temp dir");

    let spec = spec(&tag, data_dir.path());
    let request = CreateRequest {
        docker_name: format!("{prefix}.web"),
        labels: brine_labels(&prefix, &spec),
        spec,
    };
    let id = runtime.create(&request).await.expect("create");
    cleanup.containers.push(id.clone());

    let inspected = inspect_container(&id);
    let config = &inspected["Config"];
    let host = &inspected["HostConfig"];
    assert_eq!(config["Image"], tag.as_str());
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["/bin/busybox", "sleep", "300"])
    );
    assert!(
        config["Env"]
            .as_array()
            .expect("an env list")
            .contains(&"GREETING=hello world".into())
    );
    assert_eq!(config["StopTimeout"], 7);
    assert_eq!(config["Labels"][labels::NAMESPACE], prefix.as_str());
    assert!(config["ExposedPorts"]["8080/tcp"].is_object());
    assert_eq!(host["Init"], true);
    assert_eq!(host["RestartPolicy"]["Name"], "no");
    let bind = format!("{}:/data:ro", data_dir.path().display());
    assert_eq!(host["Binds"], serde_json::json!([bind]));
    assert_eq!(
        host["PortBindings"]["8080/tcp"],
        serde_json::json!([
            {"HostIp": "127.0.0.1", "HostPort": ""},
            {"HostIp": "", "HostPort": ""},
        ])
    );

    let taken = runtime.create(&request).await;
    assert_eq!(
        taken,
        Err(RuntimeError::NameTaken(request.docker_name.clone()))
    );

    runtime.start(&id).await.expect("start");
    runtime
        .start(&id)
        .await
        .expect("starting a running container");
    let observed = runtime.list_managed(&prefix).await.expect("list");
    let web = observed
        .iter()
        .find(|c| c.id == id)
        .expect("the new container is listed");
    assert!(web.is_running(), "{web:?}");
    assert_eq!(web.docker_name, request.docker_name);
    assert_eq!(web.image, tag);
    assert_eq!(web.image_id, image_id);
    assert_eq!(web.labels, request.labels);
    // Both bindings got a port from Docker; the one on every address overlaps any address.
    assert!(
        web.published
            .iter()
            .any(|p| p.host_ip == Some(Ipv4Addr::LOCALHOST.into()) && p.host_port.is_some()),
        "{web:?}"
    );
    assert!(
        web.published
            .iter()
            .all(|p| p.container_port == 8080 && p.protocol == Protocol::Tcp),
        "{web:?}"
    );
    assert!(web.published.iter().any(|p| p.host_ip.is_none()), "{web:?}");
    assert!(
        observed.iter().all(|c| c.label(labels::MANAGED).is_some()),
        "only managed containers are listed"
    );
    // Reading one container says what the listing says of it.
    let mut looked_at = runtime
        .observe(&prefix, &id)
        .await
        .expect("observe")
        .expect("the new container is found");
    let mut listed = web.clone();
    for container in [&mut looked_at, &mut listed] {
        container
            .published
            .sort_by_key(|p| (p.container_port, p.host_port, p.host_ip));
    }
    assert_eq!(looked_at, listed);
    assert_eq!(runtime.observe("another-namespace", &id).await, Ok(None));

    let old_name = format!("{prefix}.web.old");
    runtime.rename(&id, &old_name).await.expect("rename");
    let renamed = runtime.list_managed(&prefix).await.expect("list");
    let web = renamed.iter().find(|c| c.id == id).expect("still listed");
    assert_eq!(web.docker_name, old_name);

    // The image's PID 1 would ignore SIGTERM without the init process brine asks for.
    let stopping = Instant::now();
    runtime.stop(&id, 7).await.expect("stop");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        stopping.elapsed()
    );
    runtime
        .stop(&id, 7)
        .await
        .expect("stopping a stopped container");
    let stopped = runtime.list_managed(&prefix).await.expect("list");
    let web = stopped.iter().find(|c| c.id == id).expect("still listed");
    assert_eq!(web.state, "exited");
    assert!(
        web.published.is_empty(),
        "a stopped container holds no port: {web:?}"
    );

    runtime.remove(&id).await.expect("remove");
    runtime
        .remove(&id)
        .await
        .expect("removing a removed container");
    let gone = runtime.list_managed(&prefix).await.expect("list");
    assert!(gone.iter().all(|c| c.id != id));
    assert_eq!(runtime.observe(&prefix, &id).await, Ok(None));
    assert!(matches!(
        runtime.start(&id).await,
        Err(RuntimeError::Other(message)) if message.contains("No such container")
    ));
}

#[tokio::test]
async fn renaming_onto_a_taken_name_is_reported() {
    let runtime = DockerRuntime::from_environment();
    let prefix = unique_prefix();
    let mut cleanup = Cleanup::default();
    let tag = format!("{prefix}:1");
    build_image(&tag, &prefix, &mut cleanup);
    let data_dir = tempfile::tempdir().expect("a temp dir");
    let mut spec = spec(&tag, data_dir.path());
    spec.command.clear();
    spec.ports.clear();
    spec.volumes.clear();
    spec.restart = RestartPolicy::OnFailure;

    let mut ids = vec![];
    for name in ["a", "b"] {
        let request = CreateRequest {
            docker_name: format!("{prefix}.{name}"),
            labels: brine_labels(&prefix, &spec),
            spec: spec.clone(),
        };
        let id = runtime.create(&request).await.expect("create");
        cleanup.containers.push(id.clone());
        ids.push(id);
    }
    let inspected = inspect_container(&ids[0]);
    assert_eq!(
        inspected["Config"]["Cmd"],
        serde_json::json!(["/bin/busybox", "sleep", "3600"]),
        "an empty command keeps the image's"
    );
    assert_eq!(
        inspected["HostConfig"]["RestartPolicy"]["Name"],
        "on-failure"
    );

    let target = format!("{prefix}.b");
    assert_eq!(
        runtime.rename(&ids[0], &target).await,
        Err(RuntimeError::NameTaken(target))
    );
}

#[tokio::test]
async fn pulling_from_an_unreachable_registry_fails_readably() {
    let runtime = DockerRuntime::from_environment();
    let image = ImageRef::new("127.0.0.1:1/nope/nope:missing").expect("image reference");
    match runtime.pull(&image, &|_| {}).await {
        Err(RuntimeError::Pull {
            image: pulled,
            message,
        }) => {
            assert_eq!(pulled, image.as_str());
            assert!(message.contains("127.0.0.1:1"), "{message}");
        }
        other => panic!("expected a pull error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_absent_engine_is_unavailable() {
    // Nothing is asked of the engine until a call: the runtime is made, calls fail.
    let absent = DockerRuntime::at_socket("/nonexistent.sock");
    assert!(matches!(
        absent.version().await,
        Err(RuntimeError::Unavailable(message)) if message.contains("/nonexistent.sock")
    ));

    // A socket file nobody listens on anymore: the connection itself is refused.
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind a unix socket"));
    let path = path.to_str().expect("a UTF-8 temp path");
    let refused = DockerRuntime::at_socket(path);
    match refused.version().await {
        Err(RuntimeError::Unavailable(message)) => {
            assert!(message.to_lowercase().contains("refused"), "{message}");
        }
        other => panic!("expected the engine to be unavailable, got {other:?}"),
    }
}

/// A `docker-registry` on a free loopback port (Docker allows plain HTTP there), stopped on drop.
struct Registry {
    child: Child,
    port: u16,
    _storage: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let storage = tempfile::tempdir().expect("a temp dir");
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.path().join("data").display()
            ),
        )
        .expect("registry config");
        let child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        let registry = Registry {
            child,
            port,
            _storage: storage,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn pulling_from_a_registry_reports_progress_and_digest() {
    assert!(
        Path::new(REGISTRY_BINARY).exists(),
        "{REGISTRY_BINARY} is missing: run scripts/test-deps.sh (apt-get install docker-registry)"
    );
    let runtime = DockerRuntime::from_environment();
    let registry = Registry::start();
    let prefix = unique_prefix();
    let repository = format!("127.0.0.1:{}/{prefix}/app", registry.port);
    let tag = format!("{repository}:1");
    let mut cleanup = Cleanup::default();
    let image_id = build_image(&tag, &prefix, &mut cleanup);
    cleanup.images.push(image_id.clone());
    docker(&["push", "-q", &tag]);
    // Only a pull that downloads reports bytes.
    docker(&["rmi", &tag]);

    let reports = Mutex::new(Vec::<PullProgress>::new());
    let record = |progress| reports.lock().expect("reports lock").push(progress);
    let pulled = runtime
        .pull(
            &ImageRef::new(tag.clone()).expect("image reference"),
            &record,
        )
        .await
        .expect("pull");
    assert_eq!(pulled.image_id, image_id);
    let repo_digest = pulled.repo_digest.expect("the registry reported a digest");
    assert!(
        repo_digest.starts_with(&format!("{repository}@sha256:")),
        "{repo_digest}"
    );
    let reports = reports.into_inner().expect("reports lock");
    let last = reports.last().expect("at least the final report");
    assert!(last.bytes_total > 0, "{reports:?}");
    assert_eq!(last.bytes_done, last.bytes_total, "{reports:?}");
    assert!(
        reports
            .windows(2)
            .all(|w| w[0].bytes_done <= w[1].bytes_done),
        "progress never goes backwards: {reports:?}"
    );

    let pinned = ImageRef::new(repo_digest.clone()).expect("digest reference");
    let again = runtime
        .pull(&pinned, &|_| {})
        .await
        .expect("pull by digest");
    assert_eq!(again.image_id, image_id);
    assert_eq!(again.repo_digest, Some(repo_digest));

    let missing = ImageRef::new(format!("{repository}:missing")).expect("image reference");
    match runtime.pull(&missing, &|_| {}).await {
        Err(RuntimeError::Pull { message, .. }) => {
            assert!(message.contains("manifest unknown"), "{message}");
        }
        other => panic!("expected a pull error, got {other:?}"),
    }
}

/// Creates and starts a container `NAME` from `tag` running `command` (the image's when empty),
/// without ports or volumes, and returns its id.
async fn run_container(
    runtime: &DockerRuntime,
    prefix: &str,
    name: &str,
    tag: &str,
    command: &[&str],
    restart: RestartPolicy,
    cleanup: &mut Cleanup,
) -> String {
    let data_dir = tempfile::tempdir().expect("a temp dir");
    let mut spec = spec(tag, data_dir.path());
    spec.command = command.iter().map(|arg| (*arg).to_owned()).collect();
    spec.ports.clear();
    spec.volumes.clear();
    spec.restart = restart;
    let request = CreateRequest {
        docker_name: format!("{prefix}.{name}"),
        labels: brine_labels(prefix, &spec),
        spec,
    };
    let id = runtime.create(&request).await.expect("create");
    cleanup.containers.push(id.clone());
    runtime.start(&id).await.expect("start");
    id
}

/// Polls `inspect` until `done` holds (20 s at most) and returns that status.
async fn inspect_until(
    runtime: &DockerRuntime,
    id: &str,
    what: &str,
    done: impl Fn(&ContainerStatus) -> bool,
) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = runtime.inspect(id).await.expect("inspect");
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last seen: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn inspect_reports_running_exit_code_and_address() {
    let runtime = DockerRuntime::from_environment();
    let prefix = unique_prefix();
    let mut cleanup = Cleanup::default();
    let tag = format!("{prefix}:1");
    build_image(&tag, &prefix, &mut cleanup);

    let up = run_container(
        &runtime,
        &prefix,
        "up",
        &tag,
        &[],
        RestartPolicy::No,
        &mut cleanup,
    )
    .await;
    let status = runtime.inspect(&up).await.expect("inspect");
    assert!(status.running, "{status:?}");
    assert_eq!(
        (status.exit_code, status.restart_count, status.docker_health),
        (0, 0, None)
    );
    let ip = status.ip_address.expect("an address on the bridge network");
    let docker_ip = docker(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &up,
    ]);
    assert_eq!(ip.to_string(), docker_ip);

    let exits = ["/bin/busybox", "sh", "-c", "exit 3"];
    let down = run_container(
        &runtime,
        &prefix,
        "down",
        &tag,
        &exits,
        RestartPolicy::No,
        &mut cleanup,
    )
    .await;
    let status = inspect_until(&runtime, &down, "the container to exit", |s| !s.running).await;
    assert_eq!(status.exit_code, 3, "{status:?}");

    // Docker brings it back by its restart policy: it is either restarting or counted.
    let crashing = ["/bin/busybox", "sh", "-c", "exit 4"];
    let looping = run_container(
        &runtime,
        &prefix,
        "loop",
        &tag,
        &crashing,
        RestartPolicy::Always,
        &mut cleanup,
    )
    .await;
    inspect_until(&runtime, &looping, "a restart", |s| s.restart_count > 0).await;

    // A missing container is told apart from other failures, so a health wait ends at once.
    let missing = runtime.inspect(&format!("{prefix}-missing")).await;
    assert!(
        matches!(&missing, Err(RuntimeError::Gone(_)))
            && missing
                .as_ref()
                .is_err_and(|err| err.to_string().contains("no such container")),
        "{missing:?}"
    );
}

#[tokio::test]
async fn inspect_follows_the_image_healthcheck() {
    let runtime = DockerRuntime::from_environment();
    let prefix = unique_prefix();
    let mut cleanup = Cleanup::default();
    let tag = format!("{prefix}:1");
    build_image_with(
        &tag,
        &prefix,
        "HEALTHCHECK --interval=1s CMD [\"/bin/busybox\",\"true\"]\n",
        &mut cleanup,
    );
    let id = run_container(
        &runtime,
        &prefix,
        "checked",
        &tag,
        &[],
        RestartPolicy::No,
        &mut cleanup,
    )
    .await;
    let first = runtime.inspect(&id).await.expect("inspect");
    assert!(
        first.docker_health.is_some(),
        "the HEALTHCHECK is not seen: {first:?}"
    );
    inspect_until(&runtime, &id, "healthy", |s| {
        s.docker_health == Some(DockerHealth::Healthy)
    })
    .await;

    // An image without a HEALTHCHECK has no Docker health.
    let unchecked_tag = format!("{prefix}:plain");
    build_image(&unchecked_tag, &format!("{prefix}-plain"), &mut cleanup);
    let plain = run_container(
        &runtime,
        &prefix,
        "plain",
        &unchecked_tag,
        &[],
        RestartPolicy::No,
        &mut cleanup,
    )
    .await;
    assert_eq!(
        runtime
            .inspect(&plain)
            .await
            .expect("inspect")
            .docker_health,
        None
    );
}

#[tokio::test]
async fn exec_returns_the_exit_code() {
    let runtime = DockerRuntime::from_environment();
    let prefix = unique_prefix();
    let mut cleanup = Cleanup::default();
    let tag = format!("{prefix}:1");
    build_image(&tag, &prefix, &mut cleanup);
    let id = run_container(
        &runtime,
        &prefix,
        "exec",
        &tag,
        &[],
        RestartPolicy::No,
        &mut cleanup,
    )
    .await;

    let exec = |command: &[&str]| {
        let command: Vec<String> = command.iter().map(|arg| (*arg).to_owned()).collect();
        let runtime = runtime.clone();
        let id = id.clone();
        async move { runtime.exec(&id, &command).await }
    };
    assert_eq!(exec(&["/bin/busybox", "true"]).await, Ok(0));
    assert_eq!(exec(&["/bin/busybox", "sh", "-c", "exit 7"]).await, Ok(7));
    // Arguments are not split by a shell.
    assert_eq!(
        exec(&["/bin/busybox", "test", "a b", "=", "a b"]).await,
        Ok(0)
    );
    let missing = exec(&["/does-not-exist"]).await;
    assert!(!matches!(missing, Ok(0)), "{missing:?}");

    runtime.stop(&id, 1).await.expect("stop");
    assert!(
        exec(&["/bin/busybox", "true"]).await.is_err(),
        "exec in a stopped container"
    );
}

fn health(probe: Probe, deadline_ms: u32) -> HealthCheck {
    HealthCheck {
        probe: Some(probe),
        interval_ms: 200,
        min_healthy_ms: 400,
        deadline_ms,
    }
}

#[tokio::test]
async fn probes_reach_the_container_on_its_network() {
    let runtime = DockerRuntime::from_environment();
    let prefix = unique_prefix();
    let mut cleanup = Cleanup::default();
    let tag = format!("{prefix}:1");
    build_image(&tag, &prefix, &mut cleanup);
    let httpd = ["/bin/busybox", "httpd", "-f", "-p", "8080"];
    let id = run_container(
        &runtime,
        &prefix,
        "web",
        &tag,
        &httpd,
        RestartPolicy::No,
        &mut cleanup,
    )
    .await;
    let wait = |probe: Probe, deadline_ms: u32| {
        let runtime = runtime.clone();
        let id = id.clone();
        async move {
            let check = health(probe, deadline_ms);
            let target = RuntimeTarget {
                runtime: &runtime,
                id: &id,
                probe: check.probe.as_ref(),
            };
            wait_until_healthy(&check, &target).await
        }
    };

    let http = |path: &str| Probe::Http {
        port: 8080,
        path: path.into(),
    };
    // busybox httpd serves the root directory: /bin/busybox exists, / has no index.
    assert_eq!(wait(http("/bin/busybox"), 10_000).await, Ok(()));
    assert_eq!(wait(Probe::Tcp { port: 8080 }, 10_000).await, Ok(()));
    let exec = |args: &[&str]| Probe::Exec {
        command: args.iter().map(|arg| (*arg).to_owned()).collect(),
    };
    assert_eq!(wait(exec(&["/bin/busybox", "true"]), 10_000).await, Ok(()));

    // The failing checks each wait out their deadline; side by side they take one. It leaves
    // room for a probe's own 200 ms timeout on a busy machine, so the last answer seen is the
    // container's, not the clock's.
    let (not_found, refused, failing) = futures::join!(
        wait(http("/"), 3_000),
        wait(Probe::Tcp { port: 9 }, 3_000),
        wait(exec(&["/bin/busybox", "false"]), 3_000),
    );
    assert!(
        matches!(&not_found, Err(Unhealthy::Deadline { last, .. }) if last.contains("404")),
        "{not_found:?}"
    );
    assert!(
        matches!(&refused, Err(Unhealthy::Deadline { last, .. }) if last.to_lowercase().contains("refused")),
        "{refused:?}"
    );
    assert!(
        matches!(&failing, Err(Unhealthy::Deadline { last, .. }) if last.contains("status 1")),
        "{failing:?}"
    );

    let exits = ["/bin/busybox", "sh", "-c", "sleep 1; exit 5"];
    let short = run_container(
        &runtime,
        &prefix,
        "short",
        &tag,
        &exits,
        RestartPolicy::No,
        &mut cleanup,
    )
    .await;
    let check = health(Probe::Tcp { port: 8080 }, 20_000);
    let target = RuntimeTarget {
        runtime: &runtime,
        id: &short,
        probe: check.probe.as_ref(),
    };
    assert_eq!(
        wait_until_healthy(&check, &target).await,
        Err(Unhealthy::Exited(5))
    );
}

/// Waits up to 10 s for `condition` to hold of what the view answers.
async fn view_until<F: std::future::Future<Output = bool>>(what: &str, condition: impl Fn() -> F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "the view never showed {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_engine_view_sees_changes_made_behind_its_back() {
    let prefix = unique_prefix();
    let mut cleanup = Cleanup::default();
    let tag = format!("{prefix}:1");
    build_image(&tag, &prefix, &mut cleanup);
    let image = ImageRef::new(&tag).expect("image reference");
    let data_dir = tempfile::tempdir().expect("a temp dir");

    let view = Arc::new(EngineView::new(
        DockerRuntime::from_environment(),
        prefix.clone(),
    ));
    let ended = Arc::new(AtomicUsize::new(0));
    let following = tokio::spawn({
        let (view, ended) = (view.clone(), ended.clone());
        async move {
            let count = move || {
                ended.fetch_add(1, Ordering::SeqCst);
            };
            view.follow(&count).await
        }
    });
    view_until("that it follows the events", || async { view.is_current() }).await;

    let spec = spec(&tag, data_dir.path());
    let request = CreateRequest {
        docker_name: format!("{prefix}.web"),
        labels: brine_labels(&prefix, &spec),
        spec,
    };
    let id = view.create(&request).await.expect("create");
    cleanup.containers.push(id.clone());
    view.start(&id).await.expect("start");
    let states = || async {
        view.list_managed(&prefix)
            .await
            .expect("list")
            .into_iter()
            .map(|c| (c.id, c.state))
            .collect::<Vec<_>>()
    };
    assert_eq!(states().await, [(id.clone(), "running".to_owned())]);
    assert!(view.local_image(&image).await.expect("lookup").is_some());

    docker(&["stop", "-t", "1", &id]);
    view_until("the container stopped by hand", || async {
        states().await == [(id.clone(), "exited".to_owned())]
    })
    .await;
    docker(&["rm", &id]);
    view_until("the container removed by hand", || async {
        states().await.is_empty()
    })
    .await;
    assert!(
        ended.load(Ordering::SeqCst) >= 2,
        "the keeper heard of both"
    );

    docker(&["rmi", &tag]);
    view_until("the image deleted by hand", || async {
        view.local_image(&image).await.expect("lookup").is_none()
    })
    .await;
    // Every answer above came from the view, not from a listing made because it was in doubt.
    assert!(view.is_current());
    following.abort();
}
