//! End-to-end harness: a throwaway registry, test images, a real `brine-master serve` and real
//! `brine-minion run` processes sharing the host's Docker engine.
//!
//! Everything a test starts is owned by a guard whose `Drop` stops the process and removes what
//! it created (containers, images, temp dirs), also when the test panics. When it panics, the
//! guards print the tail of the master's and the minions' logs, so a failure shows both sides.
//!
//! Every name carries a unique id (pid, counter, random) so tests can run in parallel: each test
//! has its own registry, master and minions; the minions share the one Docker engine, each with
//! its own namespace (its id).

#![allow(dead_code)] // every test file uses a different part of the harness

pub mod etcd;
pub mod load;
pub mod netns;
pub mod prometheus;
pub mod systemd;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The registry binary of Debian's `docker-registry` package.
const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";
/// The static busybox of Debian's `busybox-static` package.
const BUSYBOX: &str = "/bin/busybox";
/// How many lines of a log a failing test prints.
const LOG_TAIL_LINES: usize = 50;
/// How often waits poll.
const POLL: Duration = Duration::from_millis(100);
/// How long a minion may take to show up connected (or disconnected).
const LINK_DEADLINE: Duration = Duration::from_secs(20);
/// The `--timeout` every highstate gets, and how long the CLI may take beyond it.
const HIGHSTATE_TIMEOUT: &str = "60s";
const HIGHSTATE_DEADLINE: Duration = Duration::from_secs(90);
/// Labels brine puts on its containers.
pub const LABEL_MANAGED: &str = "io.brine.managed";
pub const LABEL_NAMESPACE: &str = "io.brine.namespace";
pub const LABEL_ROLE: &str = "io.brine.role";
pub const LABEL_CONTAINER: &str = "io.brine.container";
pub const LABEL_SPEC_HASH: &str = "io.brine.spec-hash";
pub const LABEL_JOB: &str = "io.brine.job";

// ------------------------------------------------------------------------------------------------
// Small tools

/// A short id unique to this process and call: pid, a counter and random bits, in hex.
pub fn unique_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{n:x}{:04x}", std::process::id(), rand::random::<u16>())
}

/// A loopback port that was free a moment ago (the caller retries if it is taken meanwhile).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("a bound address").port()
}

/// The `brine-master` binary cargo built for this test.
pub fn master_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_brine-master"))
}

/// The `brine-minion` binary, built next to the master's by `cargo build --bins`.
pub fn minion_binary() -> PathBuf {
    static CHECKED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHECKED
        .get_or_init(|| sibling_binary("brine-minion", &["minion", "common", "proto"]))
        .clone()
}

/// The `brine-proxy` binary, built next to the master's by `cargo build --bins`.
pub fn proxy_binary() -> PathBuf {
    sibling_binary("brine-proxy", &["proxy", "common"])
}

/// The `brine-fleet-sim` binary, built next to the master's by `cargo build --bins`.
pub fn fleet_sim_binary() -> PathBuf {
    sibling_binary(
        "brine-fleet-sim",
        &["bench/fleet-sim", "minion", "common", "proto"],
    )
}

/// The binary `name` of another package, built next to the master's by `cargo build --bins`.
/// Cargo builds the master for its own tests, but not other packages' binaries: one older than
/// its sources (the directories `sources` of the workspace) would test yesterday's code, so it
/// is refused.
fn sibling_binary(name: &str, sources: &[&str]) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_brine-master")).with_file_name(name);
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `cargo build --bins` in the workspace first",
                path.display()
            )
        });
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // Only code: cargo relinks a binary when its code changes, but not for a manifest change
    // that leaves it as it was.
    if let Some(newer) = sources
        .iter()
        .find_map(|p| newer_than(&workspace.join(p), built))
    {
        panic!(
            "{} is older than {}: run `cargo build --bins` (scripts/test.sh does)",
            path.display(),
            newer.display()
        );
    }
    path
}

/// A source file under `path` (Rust or proto, outside tests) modified after `built`, if any.
fn newer_than(path: &Path, built: std::time::SystemTime) -> Option<PathBuf> {
    let metadata = std::fs::metadata(path).ok()?;
    if metadata.is_dir() {
        if path
            .file_name()
            .is_some_and(|n| n == "target" || n == "tests")
        {
            return None;
        }
        return std::fs::read_dir(path)
            .ok()?
            .flatten()
            .find_map(|entry| newer_than(&entry.path(), built));
    }
    let source = path.extension().is_some_and(|e| e == "rs" || e == "proto");
    (source && metadata.modified().ok()? > built).then(|| path.to_owned())
}

/// A command for one of our binaries, without `BRINE_*` variables of the caller's environment
/// (they override config files) and without stdin.
fn brine_command(binary: &Path) -> Command {
    brine_command_in(None, binary)
}

/// As [`brine_command`], run inside network namespace `netns` if one is given.
fn brine_command_in(netns: Option<&str>, binary: &Path) -> Command {
    let mut command = match netns {
        Some(netns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", netns]).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BRINE_") {
            command.env_remove(key);
        }
    }
    // Plain logs, without colour escapes.
    command.env("NO_COLOR", "1").stdin(Stdio::null());
    command
}

/// What a finished command left.
#[derive(Debug)]
pub struct Finished {
    /// The exit code; -1 when a signal ended it.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Finished {
    /// `what`, its code and its output, for failure messages.
    pub fn describe(&self, what: &str) -> String {
        format!(
            "{what} exited {} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            self.elapsed,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Runs `command` to its end, killing it and panicking if it takes longer than `deadline`.
pub fn run_with_deadline(command: &mut Command, deadline: Duration, what: &str) -> Finished {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {what}: {err}"));
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = stdout.join().unwrap_or_default();
                let stderr = stderr.join().unwrap_or_default();
                panic!(
                    "{what} did not finish within {deadline:?}; killed it\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
                );
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(err) => panic!("cannot wait for {what}: {err}"),
        }
    };
    Finished {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    }
}

fn read_in_background<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = vec![];
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs the docker CLI and returns its trimmed stdout; panics when it fails.
pub fn docker(args: &[&str]) -> String {
    let finished = try_docker(args);
    assert!(
        finished.code == 0,
        "{}",
        finished.describe(&format!("docker {}", args.join(" ")))
    );
    finished.stdout.trim().to_owned()
}

/// Runs the docker CLI (two minutes at most) and returns what it left, whatever its exit code.
pub fn try_docker(args: &[&str]) -> Finished {
    run_with_deadline(
        Command::new("docker").args(args),
        Duration::from_secs(120),
        &format!("docker {}", args.join(" ")),
    )
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(err) => return format!("(cannot read {}: {err})", path.display()),
    };
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn print_log_tail(title: &str, path: &Path, lines: usize) {
    eprintln!(
        "----- {title}: last {lines} lines of {} -----\n{}\n----- end of {title} -----",
        path.display(),
        tail(path, lines)
    );
}

/// Polls `check` until it gives a value, panicking with `what` (and the last observation) at the
/// deadline.
pub fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if started.elapsed() > deadline => {
                panic!("timed out after {deadline:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// Sends SIGTERM and waits up to `grace` for the child to exit, then kills it.
pub fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let started = Instant::now();
    while started.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn log_file(path: &Path) -> File {
    File::create(path).unwrap_or_else(|err| panic!("cannot create {}: {err}", path.display()))
}

// ------------------------------------------------------------------------------------------------
// Registry

/// Debian's `docker-registry` on a free loopback port, without auth, with its own storage.
pub struct Registry {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with(None, None)
    }

    /// A registry that keeps its images in `storage` (which outlives it) and, with `auth`,
    /// requires that user and password (htpasswd, basic authentication).
    pub fn start_with(storage: Option<&Path>, auth: Option<(&str, &str)>) -> Self {
        assert!(
            Path::new(REGISTRY_BINARY).is_file(),
            "{REGISTRY_BINARY} is missing: apt-get install docker-registry"
        );
        let mut last_failure = String::new();
        for _attempt in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("brine-e2e-registry-")
                .tempdir()
                .expect("a temp dir");
            let port = free_port();
            let storage = storage
                .map(Path::to_path_buf)
                .unwrap_or_else(|| dir.path().join("storage"));
            std::fs::create_dir_all(&storage).expect("registry storage dir");
            let config = dir.path().join("config.yml");
            let mut text = format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            );
            if let Some((user, password)) = auth {
                let htpasswd = dir.path().join("htpasswd");
                let hash = bcrypt::hash(password, 4).expect("hash the test password");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("htpasswd");
                text.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: brine-test\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            std::fs::write(&config, text).expect("registry config");
            let log = dir.path().join("registry.log");
            let log_handle = log_file(&log);
            let mut child = Command::new(REGISTRY_BINARY)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log_handle.try_clone().expect("log handle"))
                .stderr(log_handle)
                .spawn()
                .unwrap_or_else(|err| panic!("cannot start {REGISTRY_BINARY}: {err}"));
            let started = Instant::now();
            let ready = loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_failure = format!("it exited ({status}): {}", tail(&log, 20));
                    break false;
                }
                if registry_answers(port, auth.is_some()) {
                    // Another process could own the port: ours must still be alive.
                    break child.try_wait().map(|s| s.is_none()).unwrap_or(false);
                }
                if started.elapsed() > Duration::from_secs(15) {
                    last_failure = format!("no answer on /v2/ in 15 s: {}", tail(&log, 20));
                    let _ = child.kill();
                    let _ = child.wait();
                    break false;
                }
                thread::sleep(Duration::from_millis(50));
            };
            if ready {
                return Self { child, port, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the registry did not start after 5 attempts; last: {last_failure}");
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }
}

impl Registry {
    /// Stops the registry, as if it became unreachable.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a stopped registry again on the same port, with the same storage and settings.
    pub fn start_again(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the registry log");
        self.child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {REGISTRY_BINARY} again: {err}"));
        let port = self.port;
        wait_for(
            "the registry to answer again",
            Duration::from_secs(15),
            || {
                if registry_answers(port, false) || registry_answers(port, true) {
                    Ok(())
                } else {
                    Err("no answer on /v2/".to_owned())
                }
            },
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if thread::panicking() {
            // Its access log shows what was pushed and pulled.
            print_log_tail("registry log", &self.log_path(), 20);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /v2/` on the port answers 200 (plain HTTP/1.0 over a TcpStream).
/// Whether the registry answers `/v2/`: 200, or 401 when it requires authentication.
fn registry_answers(port: u16, with_auth: bool) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = vec![];
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let expected = if with_auth { " 401" } else { " 200" };
    response.starts_with("HTTP/1.")
        && response
            .lines()
            .next()
            .is_some_and(|l| l.contains(expected))
}

// ------------------------------------------------------------------------------------------------
// Images

/// An image the harness built and pushed.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `127.0.0.1:PORT/brine-e2e-UNIQ/NAME:TAG`.
    pub reference: String,
    /// The image id (`sha256:...`), which a container created from it reports.
    pub id: String,
    /// `127.0.0.1:PORT/brine-e2e-UNIQ/NAME@sha256:...` as the registry stored it.
    pub repo_digest: String,
}

/// Builds busybox images and pushes them; removes every image it made on drop.
///
/// After a push, the local tag is removed again, as if CI had built the image elsewhere, so the
/// minions really pull from the registry (a pulled image keeps its id).
pub struct Images {
    registry: String,
    uniq: String,
    tags: Vec<String>,
    ids: Vec<String>,
}

impl Images {
    pub fn new(registry: &Registry, uniq: &str) -> Self {
        assert!(
            Path::new(BUSYBOX).is_file(),
            "{BUSYBOX} is missing: apt-get install busybox-static"
        );
        Self {
            registry: registry.host(),
            uniq: uniq.to_owned(),
            tags: vec![],
            ids: vec![],
        }
    }

    /// `127.0.0.1:PORT/brine-e2e-UNIQ/NAME`.
    pub fn repo(&self, name: &str) -> String {
        format!("{}/brine-e2e-{}/{name}", self.registry, self.uniq)
    }

    /// `127.0.0.1:PORT/brine-e2e-UNIQ/NAME:TAG`.
    pub fn reference(&self, name: &str, tag: &str) -> String {
        format!("{}:{tag}", self.repo(name))
    }

    /// Builds "variant N" of repository `name` and pushes it as `NAME:tested`, replacing what the
    /// tag pointed at (as CI does with a new build).
    pub fn push_variant(&mut self, name: &str, variant: u32) -> Pushed {
        self.push_variant_with(name, variant, "")
    }

    /// As [`Images::push_variant`], with `extra` lines added to the Dockerfile (a
    /// `HEALTHCHECK`, say).
    pub fn push_variant_with(&mut self, name: &str, variant: u32, extra: &str) -> Pushed {
        let reference = self.reference(name, "tested");
        let context = tempfile::Builder::new()
            .prefix("brine-e2e-image-")
            .tempdir()
            .expect("a temp dir");
        std::fs::copy(BUSYBOX, context.path().join("busybox"))
            .unwrap_or_else(|err| panic!("cannot copy {BUSYBOX}: {err}"));
        std::fs::write(
            context.path().join("variant.txt"),
            format!("{reference} variant {variant} of test {}\n", self.uniq),
        )
        .expect("variant.txt");
        std::fs::write(
            context.path().join("Dockerfile"),
            format!(
                "FROM scratch\nCOPY busybox /bin/busybox\nLABEL brine.test.variant={variant}\nCOPY variant.txt /variant.txt\nCMD [\"/bin/busybox\",\"sleep\",\"3600\"]\n{extra}\n"
            ),
        )
        .expect("Dockerfile");
        self.tags.push(reference.clone());
        let context_path = context.path().to_str().expect("a UTF-8 temp path");
        // No build cache: parallel tests would otherwise share intermediate images, and one
        // test's cleanup could remove a parent another test's build is using.
        docker(&["build", "--no-cache", "-q", "-t", &reference, context_path]);
        let id = docker(&["image", "inspect", "--format", "{{.Id}}", &reference]);
        self.ids.push(id.clone());
        docker(&["push", &reference]);
        let digests: Vec<String> = serde_json::from_str(&docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            &reference,
        ]))
        .expect("RepoDigests is a JSON list");
        let prefix = format!("{}@sha256:", self.repo(name));
        let repo_digest = digests
            .iter()
            .find(|d| d.starts_with(&prefix))
            .unwrap_or_else(|| {
                panic!("no {prefix}... in the RepoDigests of {reference}: {digests:?}")
            })
            .clone();
        // Forget the local tag: the minions must pull it.
        docker(&["rmi", &reference]);
        Pushed {
            reference,
            id,
            repo_digest,
        }
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        // Errors are ignored: some of these are gone already.
        let all: Vec<&str> = self
            .tags
            .iter()
            .chain(&self.ids)
            .map(String::as_str)
            .collect();
        if !all.is_empty() {
            let mut args = vec!["rmi", "-f"];
            args.extend(all);
            let _ = Command::new("docker")
                .args(&args)
                .stdin(Stdio::null())
                .output();
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Docker state

/// A container as `docker inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Docker's name without the leading `/`: `NAMESPACE.NAME`.
    pub name: String,
    pub id: String,
    /// The id of the image it runs (`sha256:...`).
    pub image_id: String,
    /// The image reference it was created from.
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// `running`, `exited`, `created`, ...
    pub state: String,
}

impl Container {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// Every container (running or not) labelled with brine's `namespace`, sorted by name.
pub fn containers(namespace: &str) -> Vec<Container> {
    let filter = format!("label={LABEL_NAMESPACE}={namespace}");
    let mut last = String::new();
    for _ in 0..5 {
        let ids = docker(&["ps", "-aq", "--no-trunc", "--filter", &filter]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return vec![];
        }
        let mut args = vec!["inspect", "--type", "container"];
        args.extend(&ids);
        let inspected = try_docker(&args);
        if inspected.code != 0 {
            // A container went away between ps and inspect; look again.
            last = inspected.stderr;
            thread::sleep(POLL);
            continue;
        }
        let all: Vec<Value> =
            serde_json::from_str(&inspected.stdout).expect("docker inspect prints a JSON list");
        let mut containers: Vec<Container> = all
            .iter()
            .map(|c| Container {
                name: c["Name"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned(),
                id: c["Id"].as_str().unwrap_or_default().to_owned(),
                image_id: c["Image"].as_str().unwrap_or_default().to_owned(),
                image: c["Config"]["Image"].as_str().unwrap_or_default().to_owned(),
                labels: c["Config"]["Labels"]
                    .as_object()
                    .map(|labels| {
                        labels
                            .iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
                state: c["State"]["Status"].as_str().unwrap_or_default().to_owned(),
            })
            .collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        return containers;
    }
    panic!("cannot inspect the containers of namespace {namespace}: {last}");
}

/// Force-removes every container of the namespace.
pub fn remove_containers(namespace: &str) {
    let filter = format!("label={LABEL_NAMESPACE}={namespace}");
    let Ok(listed) = Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter", &filter])
        .stdin(Stdio::null())
        .output()
    else {
        return;
    };
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let ids: Vec<&str> = listed.split_whitespace().collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .stdin(Stdio::null())
            .output();
    }
}

// ------------------------------------------------------------------------------------------------
// Master

/// What `brine-master highstate --output json` left.
#[derive(Debug)]
pub struct HighstateRun {
    pub code: i32,
    /// The JSON document, or `Null` when stdout held none.
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl HighstateRun {
    /// The exit code, time and output, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "highstate exited {} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            self.elapsed,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// `brine-master serve` on a free loopback port with its own data directory.
/// Where a test master keeps its fleet.
pub enum FleetStore {
    /// In its data directory (redb).
    DataDir,
    /// In etcd, under `prefix`; with `ca_from`, the data directory of a master whose CA files
    /// are copied in first (one more master of its fleet).
    Etcd {
        endpoints: String,
        prefix: String,
        ca_from: Option<PathBuf>,
    },
}

impl FleetStore {
    /// Prepares data directory `data` and `init`'s arguments.
    pub fn prepare(&self, data: &Path, init: &mut Command) {
        let FleetStore::Etcd {
            endpoints,
            prefix,
            ca_from,
        } = self
        else {
            return;
        };
        // Minions reach it on loopback, and are told so, to move to it from another master.
        init.args([
            "--etcd",
            endpoints,
            "--etcd-prefix",
            prefix,
            "--advertise",
            "127.0.0.1",
        ]);
        if let Some(from) = ca_from {
            std::fs::create_dir_all(data).expect("create the data directory");
            for file in ["ca.pem", "ca.key", "secrets.key"] {
                std::fs::copy(from.join(file), data.join(file))
                    .unwrap_or_else(|err| panic!("copy {file} from the first master: {err}"));
            }
        }
    }
}

pub struct Master {
    root: TempDir,
    /// `HOST:PORT` where it listens.
    address: String,
    /// The network namespace it runs in (its CLI too), if not this machine's.
    netns: Option<String>,
    child: Child,
}

impl Master {
    pub fn start() -> Self {
        Self::start_with_env(&[])
    }

    /// Starts a master whose daemon has `env` set (`BRINE_MASTER_*` overrides master.toml).
    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        Self::start_on(None, env)
    }

    /// Starts a master inside network namespace `netns` on `ip` (port 4700), or on a free
    /// loopback port without one; `env` as for [`Master::start_with_env`].
    pub fn start_on(place: Option<(&str, std::net::IpAddr)>, env: &[(&str, &str)]) -> Self {
        Self::start_with(place, env, &FleetStore::DataDir)
    }

    /// Starts a master on a free loopback port whose fleet is kept in etcd at `endpoints`
    /// (`--etcd`), under `prefix`: a new fleet, or, with `ca_from`, the fleet of that master,
    /// whose CA files are copied in before `init` as the README says.
    pub fn start_on_etcd(endpoints: &str, prefix: &str, ca_from: Option<&Master>) -> Self {
        let store = FleetStore::Etcd {
            endpoints: endpoints.to_owned(),
            prefix: prefix.to_owned(),
            ca_from: ca_from.map(|m| m.data_dir()),
        };
        Self::start_with(None, &[], &store)
    }

    fn start_with(
        place: Option<(&str, std::net::IpAddr)>,
        env: &[(&str, &str)],
        store: &FleetStore,
    ) -> Self {
        let binary = master_binary();
        let mut last_failure = String::new();
        for _attempt in 0..3 {
            let root = tempfile::Builder::new()
                .prefix("brine-e2e-master-")
                .tempdir()
                .expect("a temp dir");
            let data = root.path().join("data");
            let (netns, listen) = match place {
                Some((netns, ip)) => (Some(netns.to_owned()), format!("{ip}:4700")),
                None => (None, format!("127.0.0.1:{}", free_port())),
            };
            let mut init = brine_command(&binary);
            init.args(["init", "--data-dir"])
                .arg(&data)
                .args(["--listen", &listen]);
            if let Some((_, ip)) = place {
                init.args(["--advertise", &ip.to_string()]);
            }
            store.prepare(&data, &mut init);
            let init = run_with_deadline(&mut init, Duration::from_secs(30), "brine-master init");
            assert!(init.code == 0, "{}", init.describe("brine-master init"));
            let log = root.path().join("master.log");
            let child = brine_command_in(netns.as_deref(), &binary)
                .envs(env.iter().copied())
                .args(["serve", "--data-dir"])
                .arg(&data)
                .stdout(log_file(&root.path().join("master.stdout")))
                .stderr(log_file(&log))
                .spawn()
                .unwrap_or_else(|err| panic!("cannot start brine-master serve: {err}"));
            let mut master = Self {
                root,
                address: listen,
                netns,
                child,
            };
            match master.wait_ready() {
                Ok(()) => return master,
                Err(failure) => {
                    last_failure = failure;
                    // Drop stops it; a port taken meanwhile is retried with a new one.
                }
            }
        }
        panic!("brine-master serve did not start after 3 attempts; last: {last_failure}");
    }

    /// Polls `brine-master minions` until it succeeds (15 s at most).
    fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "serve exited ({status}):\n{}",
                    tail(&self.log_path(), 20)
                ));
            }
            let listed = run_with_deadline(
                &mut self.cli(&["minions", "--output", "json"]),
                Duration::from_secs(20),
                "brine-master minions",
            );
            if listed.code == 0 {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(15) {
                return Err(format!(
                    "`minions` still fails after 15 s: {}\nserve log:\n{}",
                    listed.describe("brine-master minions"),
                    tail(&self.log_path(), 20)
                ));
            }
            thread::sleep(POLL);
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// `HOST:PORT`, where minions dial.
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// The network namespace the master runs in, if not this machine's.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("master.log")
    }

    pub fn roles_path(&self) -> PathBuf {
        self.data_dir().join("roles.toml")
    }

    /// `brine-master ARGS --data-dir DIR`.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut command = brine_command_in(self.netns(), &master_binary());
        command.args(args).arg("--data-dir").arg(self.data_dir());
        command
    }

    /// Runs `brine-master ARGS` and panics unless it exits 0; returns stdout.
    fn cli_ok(&self, args: &[&str]) -> String {
        let what = format!("brine-master {}", args.join(" "));
        let finished = run_with_deadline(&mut self.cli(args), Duration::from_secs(30), &what);
        assert!(finished.code == 0, "{}", finished.describe(&what));
        finished.stdout
    }

    /// A fresh join token.
    pub fn token(&self) -> String {
        let token = self.cli_ok(&["token", "create", "--ttl", "1h"]);
        let token = token.trim().to_owned();
        assert!(
            !token.is_empty() && !token.contains(char::is_whitespace),
            "`token create` printed more than a token: {token:?}"
        );
        token
    }

    /// `brine-master minions --output json`.
    pub fn minions(&self) -> Value {
        let text = self.cli_ok(&["minions", "--output", "json"]);
        serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("`minions --output json` printed no JSON ({err}): {text}"))
    }

    /// Whether `minions` lists `id` as linked to this master; `None` if it is not listed.
    pub fn connected(&self, id: &str) -> Option<bool> {
        let name = self.name();
        let minions = self.minions();
        minions
            .as_array()
            .expect("`minions --output json` prints an array")
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| m["connected"] == true && m["linked_to"] == name.as_str())
    }

    /// The master's name (`name` in master.toml, `HOSTNAME:PORT` unless set there).
    pub fn name(&self) -> String {
        let config =
            std::fs::read_to_string(self.data_dir().join("master.toml")).expect("read master.toml");
        // A top-level key: before the first table (`[[hooks]]` have names of their own).
        let set = config
            .lines()
            .take_while(|line| !line.starts_with('['))
            .find_map(|line| {
                let value = line.strip_prefix("name = ")?;
                serde_json::from_str::<String>(value).ok()
            });
        set.unwrap_or_else(|| {
            let host =
                std::fs::read_to_string("/proc/sys/kernel/hostname").expect("read the host name");
            let port = self.address.rsplit_once(':').expect("HOST:PORT").1;
            format!("{}:{port}", host.trim())
        })
    }

    /// Replaces the roles file.
    pub fn write_roles(&self, text: &str) {
        std::fs::write(self.roles_path(), text).expect("write roles.toml");
    }

    /// Runs a highstate (`--timeout 60s --output json`), over `target` or every host.
    pub fn highstate_run(&self, target: Option<&str>) -> HighstateRun {
        match target {
            Some(target) => self.highstate_run_with(&["--target", target]),
            None => self.highstate_run_with(&[]),
        }
    }

    /// Starts `brine-master highstate --output json` with `extra` arguments, without waiting
    /// for it; its output is piped.
    pub fn start_highstate(&self, extra: &[&str]) -> Child {
        self.cli(&["highstate"])
            .args(extra)
            .args(["--output", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start brine-master highstate")
    }

    /// Runs `brine-master highstate --output json` with `extra` arguments.
    pub fn highstate_run_with(&self, extra: &[&str]) -> HighstateRun {
        let mut args = vec![
            "highstate",
            "--timeout",
            HIGHSTATE_TIMEOUT,
            "--output",
            "json",
        ];
        args.extend(extra);
        let finished = run_with_deadline(
            &mut self.cli(&args),
            HIGHSTATE_DEADLINE,
            "brine-master highstate",
        );
        let json = serde_json::from_str(&finished.stdout).unwrap_or(Value::Null);
        HighstateRun {
            code: finished.code,
            json,
            stdout: finished.stdout,
            stderr: finished.stderr,
            elapsed: finished.elapsed,
        }
    }

    /// Runs a highstate; returns its exit code and its JSON document (`Null` if it printed none).
    pub fn highstate(&self, target: Option<&str>) -> (i32, Value) {
        let run = self.highstate_run(target);
        if run.json.is_null() && !run.stderr.is_empty() {
            eprintln!("highstate printed no JSON; stderr:\n{}", run.stderr);
        }
        (run.code, run.json)
    }
}

impl Master {
    /// Stops the daemon (SIGTERM, then SIGKILL after 5 s).
    pub fn stop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }

    /// Kills the daemon with SIGKILL, as a crash or a power cut would: no shutdown at all.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the daemon again on the same data directory and port, appending to its log.
    pub fn start_again(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the master log");
        self.child = brine_command_in(self.netns.as_deref(), &master_binary())
            .args(["serve", "--data-dir"])
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start brine-master serve again: {err}"));
        if let Err(failure) = self.wait_ready() {
            panic!("brine-master serve did not start again: {failure}");
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
        if thread::panicking() {
            print_log_tail("master log", &self.log_path(), LOG_TAIL_LINES);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Minion

/// `brine-minion run --namespace ID` after `join`, with its own data directory. Its containers
/// are removed on drop.
pub struct Minion {
    id: String,
    root: TempDir,
    child: Option<Child>,
    /// Set for the daemon (not for `join`).
    env: Vec<(String, String)>,
    /// The network namespace it runs in, if not this machine's.
    netns: Option<String>,
}

impl Minion {
    /// Joins `master` as `id` and starts the daemon; see [`Minion::wait_connected`].
    pub fn start(master: &Master, id: &str) -> Self {
        Self::start_labelled(master, id, &[])
    }

    /// As [`Minion::start`], with `KEY=VALUE` labels in the minion's configuration.
    pub fn start_labelled(master: &Master, id: &str, labels: &[&str]) -> Self {
        Self::start_with(master, id, labels, &[], "")
    }

    /// As [`Minion::start`], with labels, `env` set for the daemon (e.g. `DOCKER_HOST`) and
    /// `extra_config` appended to its minion.toml after the join.
    pub fn start_with(
        master: &Master,
        id: &str,
        labels: &[&str],
        env: &[(&str, &str)],
        extra_config: &str,
    ) -> Self {
        Self::start_in(None, master, id, labels, env, extra_config)
    }

    /// As [`Minion::start_with`], joining and running inside network namespace `netns`.
    pub fn start_in(
        netns: Option<&str>,
        master: &Master,
        id: &str,
        labels: &[&str],
        env: &[(&str, &str)],
        extra_config: &str,
    ) -> Self {
        let binary = minion_binary();
        let root = tempfile::Builder::new()
            .prefix("brine-e2e-minion-")
            .tempdir()
            .expect("a temp dir");
        let data = root.path().join("data");
        let mut minion = Self {
            id: id.to_owned(),
            root,
            child: None,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            netns: netns.map(str::to_owned),
        };
        let token = master.token();
        let join = run_with_deadline(
            brine_command_in(netns, &binary)
                .args(["join", "--master", &master.address(), "--token", &token])
                .args(["--id", id, "--data-dir"])
                .arg(&data)
                .args(["--namespace", id])
                .args(labels.iter().flat_map(|label| ["--label", label])),
            Duration::from_secs(30),
            "brine-minion join",
        );
        assert!(
            join.code == 0,
            "{}",
            join.describe(&format!("brine-minion join --id {id}"))
        );
        if !extra_config.is_empty() {
            let path = data.join("minion.toml");
            let mut config = std::fs::read_to_string(&path).expect("read minion.toml");
            config.push_str(extra_config);
            std::fs::write(&path, config).expect("write minion.toml");
        }
        minion.spawn();
        minion
    }

    fn spawn(&mut self) {
        let log = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|err| panic!("cannot open {}: {err}", log.display()));
        let child = brine_command_in(self.netns.as_deref(), &minion_binary())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["run", "--data-dir"])
            .arg(self.data_dir())
            .args(["--namespace", &self.id])
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start brine-minion run: {err}"));
        self.child = Some(child);
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("minion.log")
    }

    /// The containers of this minion's namespace.
    pub fn containers(&self) -> Vec<Container> {
        containers(&self.id)
    }

    /// Starts the daemon again after [`Minion::stop`].
    pub fn start_again(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Kills the daemon (as a crash would); its containers stay.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the master lists this minion as connected (20 s at most).
    pub fn wait_connected(&mut self, master: &Master) {
        let id = self.id.clone();
        wait_for(
            &format!("minion {id} to show as connected"),
            LINK_DEADLINE,
            || {
                if let Some(child) = self.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!(
                        "brine-minion run for {id} exited ({status}) before connecting:\n{}",
                        tail(&self.log_path(), LOG_TAIL_LINES)
                    );
                }
                match master.connected(&id) {
                    Some(true) => Ok(()),
                    Some(false) => Err("listed, not connected".into()),
                    None => Err("not listed".into()),
                }
            },
        );
    }

    /// Waits until the master lists this minion as not connected (20 s at most).
    pub fn wait_disconnected(&self, master: &Master) {
        wait_for(
            &format!("minion {} to show as disconnected", self.id),
            LINK_DEADLINE,
            || match master.connected(&self.id) {
                Some(false) => Ok(()),
                Some(true) => Err("still connected".into()),
                None => Err("not listed".into()),
            },
        );
    }
}

impl Drop for Minion {
    fn drop(&mut self) {
        self.stop();
        remove_containers(&self.id);
        if thread::panicking() {
            print_log_tail(
                &format!("minion {} log", self.id),
                &self.log_path(),
                LOG_TAIL_LINES,
            );
        }
    }
}

// ------------------------------------------------------------------------------------------------
// A whole fleet

/// A registry with `app:tested` (variant 1) pushed, a master, and connected minions named
/// `e2e-UNIQ-SUFFIX`.
///
/// Fields drop in order: minions (and their containers), master, images, registry.
pub struct Fleet {
    pub minions: Vec<Minion>,
    pub master: Master,
    pub images: Images,
    pub registry: Registry,
    pub uniq: String,
    /// Variant 1 of `app:tested`.
    pub app_v1: Pushed,
}

impl Fleet {
    /// Starts everything and waits until every minion is connected. The roles file is the one
    /// `init` wrote (no roles).
    pub fn start(suffixes: &[&str]) -> Self {
        let uniq = unique_id();
        let registry = Registry::start();
        let mut images = Images::new(&registry, &uniq);
        let app_v1 = images.push_variant("app", 1);
        let master = Master::start();
        let mut minions: Vec<Minion> = suffixes
            .iter()
            .map(|suffix| Minion::start(&master, &format!("e2e-{uniq}-{suffix}")))
            .collect();
        for minion in &mut minions {
            minion.wait_connected(&master);
        }
        Self {
            minions,
            master,
            images,
            registry,
            uniq,
            app_v1,
        }
    }

    /// `e2e-UNIQ-SUFFIX`.
    pub fn minion_id(&self, suffix: &str) -> String {
        format!("e2e-{}-{suffix}", self.uniq)
    }

    pub fn minion(&self, suffix: &str) -> &Minion {
        let id = self.minion_id(suffix);
        self.minions
            .iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no minion {id} in this fleet"))
    }

    pub fn minion_mut(&mut self, suffix: &str) -> &mut Minion {
        let id = self.minion_id(suffix);
        self.minions
            .iter_mut()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no minion {id} in this fleet"))
    }

    /// Every container of every minion of the fleet, by Docker name.
    pub fn all_containers(&self) -> BTreeMap<String, Container> {
        self.minions
            .iter()
            .flat_map(|m| m.containers())
            .map(|c| (c.name.clone(), c))
            .collect()
    }
}

// ------------------------------------------------------------------------------------------------
// Reading a highstate document

/// The entry of `hosts` for `minion_id`; panics with the document if there is none.
pub fn host<'a>(report: &'a Value, minion_id: &str) -> &'a Value {
    report["hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("no `hosts` array in {report:#}"))
        .iter()
        .find(|h| h["minion_id"] == minion_id)
        .unwrap_or_else(|| panic!("no host {minion_id} in {report:#}"))
}

/// The entry of a host's `containers` named `name`; panics with the host if there is none.
pub fn container<'a>(host: &'a Value, name: &str) -> &'a Value {
    host["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("no `containers` array in {host:#}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {host:#}"))
}

/// The host's status.
pub fn status(report: &Value, minion_id: &str) -> String {
    host(report, minion_id)["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A TOML basic string (JSON's escapes are valid TOML for these plain values).
pub fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// Runs a highstate over every host and asserts its exit code.
pub fn highstate_expecting(fleet: &Fleet, code: i32) -> HighstateRun {
    let run = fleet.master.highstate_run(None);
    assert_eq!(run.code, code, "unexpected exit code: {}", run.describe());
    assert!(
        run.json.is_object(),
        "highstate printed no JSON document: {}",
        run.describe()
    );
    run
}

// ------------------------------------------------------------------------------------------------
// A Docker engine that can go away

/// A unix socket that forwards to the host's Docker engine while it is up: a minion pointed at
/// it (`DOCKER_HOST`) sees Docker go away and come back, while the real engine and its
/// containers stay untouched.
pub struct DockerProxy {
    dir: TempDir,
    running: Option<ProxyRun>,
}

struct ProxyRun {
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<UnixStream>>>,
    acceptor: thread::JoinHandle<()>,
}

const DOCKER_SOCKET: &str = "/var/run/docker.sock";

impl DockerProxy {
    /// A proxy that is down until [`DockerProxy::up`].
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("brine-e2e-docker-")
                .tempdir()
                .expect("a temp dir"),
            running: None,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// `DOCKER_HOST` for clients of the proxy.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Starts forwarding.
    pub fn up(&mut self) {
        assert!(self.running.is_none(), "the proxy is already up");
        let listener = UnixListener::bind(self.socket()).expect("bind the proxy socket");
        let stop = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let acceptor = {
            let (stop, connections) = (stop.clone(), connections.clone());
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(engine) = UnixStream::connect(DOCKER_SOCKET) else {
                        continue;
                    };
                    let mut held = connections.lock().expect("the connection list");
                    for stream in [&client, &engine] {
                        if let Ok(clone) = stream.try_clone() {
                            held.push(clone);
                        }
                    }
                    drop(held);
                    forward(&client, &engine);
                    forward(&engine, &client);
                }
            })
        };
        self.running = Some(ProxyRun {
            stop,
            connections,
            acceptor,
        });
    }

    /// Stops forwarding: open connections are cut and the socket disappears.
    pub fn down(&mut self) {
        let Some(run) = self.running.take() else {
            return;
        };
        run.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor so it sees the flag.
        let _ = UnixStream::connect(self.socket());
        let _ = run.acceptor.join();
        for stream in run
            .connections
            .lock()
            .expect("the connection list")
            .drain(..)
        {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(self.socket());
    }
}

impl Default for DockerProxy {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.down();
    }
}

/// Copies `from` to `to` on a thread of its own until either side closes.
fn forward(from: &UnixStream, to: &UnixStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

// ------------------------------------------------------------------------------------------------
// A unix socket that reaches a TCP service

/// Forwards connections on a unix socket to a TCP address, one thread pair per connection.
pub struct UnixForwarder {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl UnixForwarder {
    pub fn start(socket: &Path, target: String) -> Self {
        let listener = UnixListener::bind(socket).expect("bind the forwarder's socket");
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let stop = stop.clone();
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let (Ok(client), Ok(server)) = (client, TcpStream::connect(&target)) else {
                        continue;
                    };
                    copy_between(client, server);
                }
            })
        };
        Self {
            socket: socket.to_path_buf(),
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor so it sees the flag.
        let _ = UnixStream::connect(&self.socket);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Copies both ways between a unix and a TCP stream until either side closes.
fn copy_between(client: UnixStream, server: TcpStream) {
    let (Ok(mut client_read), Ok(mut server_read)) = (client.try_clone(), server.try_clone())
    else {
        return;
    };
    let (mut client_write, mut server_write) = (client, server);
    thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut server_write);
        let _ = server_write.shutdown(std::net::Shutdown::Write);
    });
    thread::spawn(move || {
        let _ = std::io::copy(&mut server_read, &mut client_write);
        let _ = client_write.shutdown(std::net::Shutdown::Write);
    });
}

// ------------------------------------------------------------------------------------------------
// A network path that can be cut

/// A TCP forwarder on a free loopback port: a minion dialling it reaches `target`, and
/// [`TcpProxy::cut`] drops every open connection (as a network blip would) while new ones still
/// get through; [`TcpProxy::partition`] also drops every new one until [`TcpProxy::heal`].
pub struct TcpProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    blocked: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl TcpProxy {
    pub fn start(target: &str) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let blocked = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let target = target.to_owned();
        let acceptor = {
            let (stop, blocked, connections) = (stop.clone(), blocked.clone(), connections.clone());
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    if blocked.load(Ordering::SeqCst) {
                        let _ = client.shutdown(std::net::Shutdown::Both);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(&target) else {
                        continue;
                    };
                    let mut held = connections.lock().expect("the connection list");
                    for stream in [&client, &server] {
                        if let Ok(clone) = stream.try_clone() {
                            held.push(clone);
                        }
                    }
                    drop(held);
                    forward_tcp(&client, &server);
                    forward_tcp(&server, &client);
                }
            })
        };
        Self {
            port,
            stop,
            blocked,
            connections,
            acceptor: Some(acceptor),
        }
    }

    /// Drops every open connection and every new one, until [`TcpProxy::heal`].
    pub fn partition(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        self.cut();
    }

    /// Lets new connections through again.
    pub fn heal(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Drops every connection open now.
    pub fn cut(&self) {
        for stream in self
            .connections
            .lock()
            .expect("the connection list")
            .drain(..)
        {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.cut();
    }
}

/// Copies `from` to `to` on a thread of its own until either side closes.
fn forward_tcp(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

// ------------------------------------------------------------------------------------------------
// A small filesystem

/// A tmpfs of a fixed size mounted over a directory (needs root); lazily unmounted on drop, so
/// a process still using it does not keep it mounted.
pub struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_kib` over `at`, keeping what `at` held (copied in).
    pub fn mount_over(at: &Path, size_kib: u64) -> Self {
        let saved = tempfile::Builder::new()
            .prefix("brine-e2e-tmpfs-saved-")
            .tempdir()
            .expect("a temp dir");
        let copy = |from: &Path, to: &Path| {
            let status = Command::new("cp")
                .arg("-a")
                .arg(from.join("."))
                .arg(to)
                .status()
                .expect("run cp");
            assert!(
                status.success(),
                "cp -a {} {}",
                from.display(),
                to.display()
            );
        };
        copy(at, saved.path());
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k,mode=0700")])
            .arg(format!("brine-e2e-{}", unique_id()))
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount a tmpfs over {} (root needed)",
            at.display()
        );
        let tmpfs = Self { at: at.to_owned() };
        copy(saved.path(), at);
        tmpfs
    }

    /// Fills it up with a file named `filler`; returns that file's path.
    pub fn fill(&self) -> PathBuf {
        let filler = self.at.join("filler");
        let mut file = File::create(&filler).expect("create the filler");
        let block = vec![0u8; 64 * 1024];
        loop {
            if let Err(err) = file.write_all(&block).and_then(|()| file.sync_all()) {
                assert_eq!(
                    err.raw_os_error(),
                    Some(28),
                    "filling {} failed otherwise: {err}",
                    self.at.display()
                );
                break;
            }
        }
        // Whatever a partial block left is taken too.
        for size in [4096, 512, 1] {
            while file
                .write_all(&vec![0u8; size])
                .and_then(|()| file.sync_all())
                .is_ok()
            {}
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}
