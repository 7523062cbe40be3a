//! A throwaway etcd cluster on loopback: Debian's `etcd` processes, one per member, each with
//! its own data directory and free ports, stopped and removed when the guard drops.
//!
//! It needs nothing but std, tempfile and serde_json, so the master's unit tests (the store's contract on
//! etcd) include this file as well as the end-to-end tests.

#![allow(dead_code)] // every test uses a different part of the cluster

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a cluster may take to elect a leader and answer.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How many times a cluster is started again when a port it picked was taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// One member: its name, ports and process (none while stopped).
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// A running etcd cluster of one or more members.
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    tls: Option<Tls>,
}

/// The PEM files of a cluster that serves clients over TLS and requires their certificates:
/// the CA that signed both sides, the members' certificate and key, and a client's.
#[derive(Debug, Clone)]
pub struct Tls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("a bound address").port()
}

impl EtcdCluster {
    /// Starts a cluster of `members` members and waits until every one answers.
    pub fn start(members: usize) -> Self {
        Self::start_with(members, None)
    }

    /// Starts a cluster that serves clients over TLS only, requiring a client certificate
    /// signed by `tls.ca`.
    pub fn start_tls(members: usize, tls: Tls) -> Self {
        Self::start_with(members, Some(tls))
    }

    fn start_with(members: usize, tls: Option<Tls>) -> Self {
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(members, tls.clone()) {
                Ok(cluster) => return cluster,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("etcd did not start: {last_failure}");
    }

    fn try_start(count: usize, tls: Option<Tls>) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("a temporary directory for etcd");
        let members = (0..count)
            .map(|n| Member {
                name: format!("member{n}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = Self { members, dir, tls };
        for index in 0..count {
            cluster.spawn(index, "new");
        }
        let endpoints = cluster.endpoints();
        match cluster.wait_healthy(&endpoints) {
            Ok(()) => Ok(cluster),
            Err(failure) => Err(format!("{failure}\n{}", cluster.logs())),
        }
    }

    /// Every member's client URL, `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.client_url(self.tls.is_some()))
            .collect()
    }

    /// The client URLs joined with commas, as `--etcd` takes them.
    pub fn endpoint_list(&self) -> String {
        self.endpoints().join(",")
    }

    /// Kills member `index` at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `index` again after [`EtcdCluster::kill`], on its data directory, and
    /// waits until it answers.
    pub fn restart(&mut self, index: usize) {
        self.spawn(index, "existing");
        let endpoint = vec![self.members[index].client_url(self.tls.is_some())];
        if let Err(failure) = self.wait_healthy(&endpoint) {
            panic!(
                "etcd member {index} did not come back: {failure}\n{}",
                self.logs()
            );
        }
    }

    /// The index of the member that leads the cluster now.
    pub fn leader(&self) -> usize {
        let running: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client_url(self.tls.is_some()))
            .collect();
        let output = self
            .etcdctl()
            .args(["--endpoints", &running.join(",")])
            .args(["endpoint", "status", "--write-out", "json"])
            .output()
            .expect("run etcdctl endpoint status");
        let statuses: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| panic!("etcdctl endpoint status printed no JSON: {err}"));
        statuses
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["Status"]["header"]["member_id"] == s["Status"]["leader"])
            .and_then(|s| s["Endpoint"].as_str())
            .and_then(|url| {
                self.members
                    .iter()
                    .position(|m| m.client_url(self.tls.is_some()) == url)
            })
            .unwrap_or_else(|| panic!("no member leads: {statuses}"))
    }

    /// The process id of member `index`, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.members[index].child.as_ref().map(Child::id)
    }

    fn spawn(&mut self, index: usize, state: &str) {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let member = &self.members[index];
        let data = self.dir.path().join(&member.name);
        let log = File::create(self.log_path(index)).expect("an etcd log file");
        let client_url = member.client_url(self.tls.is_some());
        let mut etcd = Command::new("etcd");
        if let Some(tls) = &self.tls {
            etcd.arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = etcd
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &member.peer_url()])
            .args(["--initial-advertise-peer-urls", &member.peer_url()])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "brine-test"])
            // Fast elections on loopback; the defaults are sized for real networks.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("an etcd log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot run etcd ({err}); install Debian's etcd-server and etcd-client")
            });
        self.members[index].child = Some(child);
    }

    fn log_path(&self, index: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[index].name))
    }

    /// Waits until `etcdctl endpoint health` says every endpoint of `endpoints` is healthy (a
    /// member with a leader, committing proposals).
    fn wait_healthy(&mut self, endpoints: &[String]) -> Result<(), String> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < START_DEADLINE {
            for member in &mut self.members {
                if let Some(child) = &mut member.child
                    && let Ok(Some(status)) = child.try_wait()
                {
                    return Err(format!("{} exited ({status})", member.name));
                }
            }
            let output = self
                .etcdctl()
                .args(["--endpoints", &endpoints.join(",")])
                .args(["--dial-timeout", "1s", "--command-timeout", "2s"])
                .args(["endpoint", "health"])
                .output()
                .map_err(|err| format!("cannot run etcdctl ({err}); install etcd-client"))?;
            if output.status.success() {
                return Ok(());
            }
            last = String::from_utf8_lossy(&output.stderr).into_owned();
            thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "not healthy within {START_DEADLINE:?}: {}",
            last.trim()
        ))
    }

    /// `etcdctl`, with the client certificate when the cluster wants one.
    fn etcdctl(&self) -> Command {
        let mut etcdctl = Command::new("etcdctl");
        etcdctl.env("ETCDCTL_API", "3");
        if let Some(tls) = &self.tls {
            etcdctl
                .arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.client_cert)
                .arg("--key")
                .arg(&tls.client_key);
        }
        etcdctl
    }

    /// The end of every member's log, for a failure message.
    pub fn logs(&self) -> String {
        (0..self.members.len())
            .map(|index| {
                format!(
                    "--- etcd {} ---\n{}",
                    self.members[index].name,
                    tail(&self.log_path(index), 20)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Member {
    fn client_url(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}
