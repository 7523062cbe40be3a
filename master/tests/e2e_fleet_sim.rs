//! End to end at scale: a real `brine-master serve`, a real registry, and 200 hosts simulated
//! by one `brine-fleet-sim` process (real minions, each with its own certificate and mutual-TLS
//! link, over in-memory container engines). The short version of `bench/scale.sh`.
//!
//! Needs Debian's `docker-registry`, Docker (to build the image) and the binaries
//! (`cargo build --bins`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    Images, Master, Registry, fleet_sim_binary, quoted, run_with_deadline, terminate, unique_id,
};

const HOSTS: usize = 200;
/// A restarted master must have every host back within this; the benchmark's target at 10,000.
const RELINK_DEADLINE: Duration = Duration::from_secs(30);

/// `brine-fleet-sim run`, stopped on drop; its report lines go to a file.
struct Simulator {
    child: Child,
    report: PathBuf,
}

impl Simulator {
    /// Runs `hosts` hosts from `hosts_dir`, with `extra` arguments (engine delays, say).
    fn start(hosts: usize, hosts_dir: &Path, extra: &[&str]) -> Self {
        let report = hosts_dir.join("report.jsonl");
        let child = Command::new(fleet_sim_binary())
            .args(["run", "--hosts", &hosts.to_string(), "--sources", "8"])
            .arg("--data-dir")
            .arg(hosts_dir)
            .args(["--report-every", "1s"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&report).expect("create the report file"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start brine-fleet-sim run");
        Self { child, report }
    }

    /// The report lines so far.
    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.report)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
            .collect()
    }

    /// How many lines with event `event` there are so far.
    fn count(&self, event: &str) -> usize {
        self.lines()
            .iter()
            .filter(|line| line["event"] == event)
            .count()
    }

    /// Waits until the `n`-th line (0-based) with event `event` appears; returns it.
    fn wait_for(&mut self, event: &str, n: usize, deadline: Duration) -> Value {
        let start = Instant::now();
        loop {
            if let Some(line) = self
                .lines()
                .into_iter()
                .filter(|line| line["event"] == event)
                .nth(n)
            {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("brine-fleet-sim exited ({status}): {:#?}", self.lines());
            }
            assert!(
                start.elapsed() < deadline,
                "no {event:?} line #{n} within {deadline:?}: {:#?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(10));
    }
}

/// Every host of the report has `expected` as its status.
fn assert_every_host(report: &Value, expected: &str) {
    let hosts = report["hosts"].as_array().expect("a hosts array");
    assert_eq!(hosts.len(), HOSTS, "{report:#}");
    let other: Vec<&Value> = hosts.iter().filter(|h| h["status"] != expected).collect();
    assert!(other.is_empty(), "hosts not {expected}: {other:#?}");
}

/// Enrols `hosts` simulated hosts through the real Join, from eight source addresses; returns
/// their data directories.
fn enrol(master: &Master, hosts: usize) -> tempfile::TempDir {
    let token = run_with_deadline(
        &mut master.cli(&["token", "create", "--uses", &hosts.to_string()]),
        Duration::from_secs(30),
        "token create",
    );
    assert_eq!(token.code, 0, "{}", token.describe("token create"));
    let hosts_dir = tempfile::Builder::new()
        .prefix("brine-e2e-sim-")
        .tempdir()
        .expect("a temp dir");
    let enrol = run_with_deadline(
        Command::new(fleet_sim_binary())
            .args(["enrol", "--hosts", &hosts.to_string(), "--sources", "8"])
            .arg("--data-dir")
            .arg(hosts_dir.path())
            .args([
                "--master",
                &master.address(),
                "--token",
                token.stdout.trim(),
            ]),
        Duration::from_secs(120),
        "brine-fleet-sim enrol",
    );
    assert_eq!(enrol.code, 0, "{}", enrol.describe("brine-fleet-sim enrol"));
    let enrolled: Value = serde_json::from_str(enrol.stdout.trim()).expect("one JSON line");
    assert_eq!(enrolled["joined"], hosts, "{enrolled}");
    hosts_dir
}

#[test]
fn two_hundred_simulated_hosts_enrol_deploy_and_come_back_after_a_master_crash() {
    let registry = Registry::start();
    let mut images = Images::new(&registry, &unique_id());
    let pushed = images.push_variant("app", 1);
    let mut master = Master::start();
    master.write_roles(&format!(
        "[roles.app]\nimage = {}\n[[roles.app.containers]]\nname = \"app\"\n\
         ports = [\"8080:80\"]\n\n[assign]\n\"sim-*\" = [\"app\"]\n",
        quoted(&pushed.reference)
    ));

    let hosts_dir = enrol(&master, HOSTS);
    let mut simulator = Simulator::start(HOSTS, hosts_dir.path(), &[]);
    simulator.wait_for("all_linked", 0, Duration::from_secs(60));
    let listed = master.minions();
    let listed = listed.as_array().expect("an array of hosts");
    assert_eq!(listed.len(), HOSTS);
    assert!(listed.iter().all(|m| m["connected"] == true), "{listed:#?}");

    // A highstate over every host starts the container on each, and a second changes nothing.
    let (code, report) = master.highstate(None);
    assert_eq!(code, 0, "{report:#}");
    assert_every_host(&report, "changed");
    let (code, report) = master.highstate(None);
    assert_eq!(code, 0, "{report:#}");
    assert_every_host(&report, "unchanged");
    let next = simulator.count("links");
    let containers = simulator.wait_for("links", next, Duration::from_secs(10));
    assert_eq!(
        containers["containers"], HOSTS,
        "one container per host: {containers}"
    );

    // A crash of the master: every host notices, and all are back soon after it restarts.
    master.kill();
    simulator.wait_for("not_all_linked", 0, Duration::from_secs(20));
    let restarted = Instant::now();
    master.start_again();
    let back = simulator.wait_for("all_linked", 1, RELINK_DEADLINE);
    assert!(restarted.elapsed() < RELINK_DEADLINE, "{back}");
    assert_eq!(
        back["losses"], HOSTS,
        "each host lost its link once: {back}"
    );
    let (code, report) = master.highstate(None);
    assert_eq!(code, 0, "{report:#}");
    assert_every_host(&report, "unchanged");
}

/// Each host's time spent pulling in a highstate's report, by host id.
fn pull_ms(report: &Value) -> std::collections::BTreeMap<String, u64> {
    report["hosts"]
        .as_array()
        .expect("a report of every host")
        .iter()
        .map(|host| {
            let id = host["minion_id"].as_str().unwrap_or_default().to_owned();
            (id, host["timings"]["pull_ms"].as_u64().unwrap_or(u64::MAX))
        })
        .collect()
}

#[test]
fn later_batches_fetch_their_images_ahead_and_only_swap_containers() {
    const PULL: u64 = 2_000;
    const BATCH: usize = 4;
    let registry = Registry::start();
    let mut images = Images::new(&registry, &unique_id());
    let master = Master::start();
    let roles = |reference: &str| {
        format!(
            "[roles.app]\nimage = {}\n[[roles.app.containers]]\nname = \"app\"\n\n\
             [assign]\n\"sim-*\" = [\"app\"]\n",
            quoted(reference)
        )
    };
    let hosts_dir = enrol(&master, 3 * BATCH);
    let mut simulator = Simulator::start(3 * BATCH, hosts_dir.path(), &["--pull-delay", "2s"]);
    simulator.wait_for("all_linked", 0, Duration::from_secs(60));
    // Hosts are taken in the order of their ids: sim-00001 to sim-00004 first.
    let first_batch = |id: &str| id <= "sim-00004";

    // Fetching ahead (the default): only the first batch waits for its pull. The fetches start
    // with the first batch and take as long as its pull; the wait between batches lets them end.
    master.write_roles(&roles(&images.push_variant("app", 1).reference));
    let batch = BATCH.to_string();
    let run = master.highstate_run_with(&["--batch", &batch, "--batch-wait", "1s"]);
    assert_eq!(run.code, 0, "{}", run.describe());
    for (id, pulled) in pull_ms(&run.json) {
        if first_batch(&id) {
            assert!(pulled >= PULL, "{id} pulled in its turn: {pulled} ms");
        } else {
            assert!(
                pulled < PULL / 2,
                "{id} had its image before its turn: {pulled} ms"
            );
        }
    }

    // Without it, every batch waits for its own pull.
    master.write_roles(&roles(&images.push_variant("app", 2).reference));
    let run = master.highstate_run_with(&[
        "--batch",
        &batch,
        "--batch-wait",
        "1s",
        "--concurrent-pulls",
        "0",
    ]);
    assert_eq!(run.code, 0, "{}", run.describe());
    for (id, pulled) in pull_ms(&run.json) {
        assert!(pulled >= PULL, "{id} pulled in its turn: {pulled} ms");
    }
}
