//! The host's proxy as a process, and a steady HTTP load on a port measured with Debian's
//! `wrk`: what the zero-downtime tests and `bench/zero-downtime.sh` put on a published port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::{proxy_binary, terminate, wait_for};

/// A `brine-proxy` with its control socket, state and log in a temp dir; stopped on drop.
pub struct Proxy {
    dir: TempDir,
    child: Option<Child>,
}

impl Proxy {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("brine-e2e-proxy-")
            .tempdir()
            .expect("a temp dir");
        let mut proxy = Self { dir, child: None };
        proxy.start_again();
        proxy
    }

    /// The control socket a minion is pointed at (`BRINE_MINION_PROXY_SOCKET`).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("proxy.log")
    }

    /// Starts the process (again, after [`Proxy::stop`]) and waits for its control socket.
    pub fn start_again(&mut self) {
        let config = self.dir.path().join("proxy.toml");
        std::fs::write(
            &config,
            format!(
                "control_socket = {:?}\nstate_file = {:?}\nstop_drain = \"5s\"\n",
                self.socket(),
                self.dir.path().join("routes.json"),
            ),
        )
        .expect("write proxy.toml");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the proxy's log");
        let child = Command::new(proxy_binary())
            .args(["run", "--config"])
            .arg(&config)
            .env("NO_COLOR", "1")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start brine-proxy");
        self.child = Some(child);
        let socket = self.socket();
        wait_for(
            "the proxy's control socket",
            Duration::from_secs(10),
            || {
                std::os::unix::net::UnixStream::connect(&socket)
                    .map(drop)
                    .map_err(|err| err.to_string())
            },
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What `wrk` counted over one or more runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadCount {
    pub requests: u64,
    /// Responses other than 2xx or 3xx.
    pub bad_status: u64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    /// Latency percentiles of the last run, in microseconds.
    pub p50_us: f64,
    pub p99_us: f64,
}

impl LoadCount {
    /// Every request that did not get a good answer.
    pub fn failures(&self) -> u64 {
        self.bad_status + self.connect_errors + self.read_errors + self.write_errors + self.timeouts
    }

    fn add(&mut self, run: &LoadCount) {
        self.requests += run.requests;
        self.bad_status += run.bad_status;
        self.connect_errors += run.connect_errors;
        self.read_errors += run.read_errors;
        self.write_errors += run.write_errors;
        self.timeouts += run.timeouts;
        self.p50_us = run.p50_us;
        self.p99_us = run.p99_us;
    }
}

/// The script that makes wrk print its counts as one JSON line, and (with `delay_ms`) pace
/// each connection, so a test's load leaves the machine's cores to the rest.
fn script(dir: &Path, delay_ms: u32) -> PathBuf {
    let path = dir.join("count.lua");
    std::fs::write(
        &path,
        format!(
            r#"
function delay()
  return {delay_ms}
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{{"requests":%d,"bad_status":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"p50":%f,"p99":%f}}\n',
    summary.requests, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"#
        ),
    )
    .expect("write the wrk script");
    path
}

/// Runs wrk once against `url` for `duration` with `connections`; its counts.
pub fn wrk_once(url: &str, duration: Duration, connections: u32, delay_ms: u32) -> LoadCount {
    let dir = tempfile::tempdir().expect("a temp dir");
    let script = script(dir.path(), delay_ms);
    let output = Command::new("wrk")
        .args(["-t1", "--timeout", "5s"])
        .arg(format!("-c{connections}"))
        // wrk counts in whole seconds.
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("-s")
        .arg(&script)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("wrk is missing: apt-get install wrk");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // wrk gives up at once, without counts, when its first connection is refused: that is one
    // refused connection, and the run is the shortest wrk makes.
    if format!("{stdout}{stderr}").contains("unable to connect") {
        thread::sleep(duration);
        return LoadCount {
            connect_errors: 1,
            ..LoadCount::default()
        };
    }
    let line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("wrk printed no counts: {stdout}{stderr}"));
    let counts: Value = serde_json::from_str(line).expect("wrk's counts are JSON");
    let number = |key: &str| counts[key].as_f64().unwrap_or(0.0);
    LoadCount {
        requests: number("requests") as u64,
        bad_status: number("bad_status") as u64,
        connect_errors: number("connect") as u64,
        read_errors: number("read") as u64,
        write_errors: number("write") as u64,
        timeouts: number("timeout") as u64,
        p50_us: number("p50"),
        p99_us: number("p99"),
    }
}

/// wrk run after run against a URL, from a thread, until stopped: a load that lasts as long
/// as whatever the test does meanwhile.
pub struct SteadyLoad {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<LoadCount>>,
}

impl SteadyLoad {
    pub fn start(url: &str, connections: u32, delay_ms: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let url = url.to_owned();
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            let mut total = LoadCount::default();
            while !stopping.load(Ordering::Relaxed) {
                total.add(&wrk_once(
                    &url,
                    Duration::from_secs(2),
                    connections,
                    delay_ms,
                ));
            }
            total
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Ends the load after the run in progress and returns what every run counted.
    pub fn finish(mut self) -> LoadCount {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("finished once")
            .join()
            .expect("the load thread")
    }
}

impl Drop for SteadyLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
