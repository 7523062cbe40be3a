//! Every documented environment variable, through the real binaries, from a clean
//! environment: each command here sees only the variables the test gives it. (The shipped
//! systemd units set `BRINE_MASTER_DATA_DIR` / `BRINE_MINION_DATA_DIR`, which once made every
//! command fail with "unknown field data_dir".)

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{Finished, free_port, master_binary, minion_binary, run_with_deadline, wait_for};
use tempfile::TempDir;

/// `binary ARGS` with exactly `vars` as its environment.
fn clean(binary: &Path, vars: &[(&str, &str)], args: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command.env_clear().envs(vars.iter().copied()).args(args);
    command
}

fn run(binary: &Path, vars: &[(&str, &str)], args: &[&str]) -> Finished {
    let what = format!("{} {}", binary.display(), args.join(" "));
    run_with_deadline(
        &mut clean(binary, vars, args),
        Duration::from_secs(30),
        &what,
    )
}

fn run_ok(binary: &Path, vars: &[(&str, &str)], args: &[&str]) -> String {
    let finished = run(binary, vars, args);
    assert!(
        finished.code == 0,
        "{}",
        finished.describe(&format!("{vars:?} {}", args.join(" ")))
    );
    finished.stdout
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// A master daemon started with `vars` only; stopped on drop.
struct Serving {
    child: Child,
    log: PathBuf,
}

impl Serving {
    fn start(dir: &TempDir, vars: &[(&str, &str)], args: &[&str]) -> Self {
        let log = dir.path().join("serve.log");
        let child = clean(&master_binary(), vars, args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the serve log"))
            .spawn()
            .expect("start brine-master serve");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- serve log -----\n{}", self.log());
        }
    }
}

/// `brine-master init` into `DIR/master`, listening on a free loopback port.
fn init_master(dir: &TempDir) -> (PathBuf, String) {
    let data = dir.path().join("master");
    let listen = format!("127.0.0.1:{}", free_port());
    run_ok(
        &master_binary(),
        &[("BRINE_MASTER_DATA_DIR", path(&data))],
        &["init", "--listen", &listen],
    );
    (data, listen)
}

#[test]
fn the_data_dir_variable_of_the_units_works_for_the_daemon_and_every_cli_call() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = init_master(&dir);
    let vars = [("BRINE_MASTER_DATA_DIR", path(&data))];
    let _serving = Serving::start(&dir, &vars, &["serve"]);
    wait_for("the master to answer", Duration::from_secs(20), || {
        let listed = run(&master_binary(), &vars, &["minions", "--output", "json"]);
        if listed.code == 0 {
            Ok(())
        } else {
            Err(listed.stderr)
        }
    });
    let token = run_ok(&master_binary(), &vars, &["token", "create"]);
    assert!(token.trim().starts_with("BRINE-1-"), "{token}");
    run_ok(&master_binary(), &vars, &["token", "list"]);
    run_ok(&master_binary(), &vars, &["lock", "status"]);
    run_ok(&master_binary(), &vars, &["jobs"]);
    run_ok(&master_binary(), &vars, &["config"]);
}

#[test]
fn each_master_key_can_be_set_by_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = init_master(&dir);
    std::fs::write(data.join("other-roles.toml"), "").unwrap();
    let vars = [
        ("BRINE_MASTER_DATA_DIR", path(&data)),
        ("BRINE_MASTER_LISTEN", "127.0.0.1:4799"),
        ("BRINE_MASTER_ADDRESS", "brine.example.com:4799"),
        ("BRINE_MASTER_ROLES_FILE", "other-roles.toml"),
        ("BRINE_MASTER_HIGHSTATE_TIMEOUT", "90s"),
        ("BRINE_MASTER_JOIN_APPROVAL", "manual"),
        ("BRINE_MASTER_MINION_CERTIFICATE_LIFETIME", "2h"),
    ];
    let shown = run_ok(&master_binary(), &vars, &["config"]);
    let table: toml::Table = shown.parse().unwrap_or_else(|e| panic!("{e}:\n{shown}"));
    assert_eq!(table["listen"].as_str(), Some("127.0.0.1:4799"), "{shown}");
    assert_eq!(table["address"].as_str(), Some("brine.example.com:4799"));
    let roles = table["roles_file"].as_str().unwrap();
    assert_eq!(roles, path(&data.join("other-roles.toml")));
    assert_eq!(table["highstate_timeout"].as_str(), Some("90s"));
    assert_eq!(table["join_approval"].as_str(), Some("manual"));
    assert_eq!(table["minion_certificate_lifetime"].as_str(), Some("2h"));
    for (variable, _) in &vars[1..] {
        assert!(
            shown.contains(&format!("from {variable}")),
            "{variable}:\n{shown}"
        );
    }
}

#[test]
fn a_variable_that_names_no_key_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = init_master(&dir);
    let vars = [
        ("BRINE_MASTER_DATA_DIR", path(&data)),
        ("BRINE_MASTER_LISTN", "127.0.0.1:4799"),
    ];
    let refused = run(&master_binary(), &vars, &["serve"]);
    assert_eq!(refused.code, 2, "{}", refused.describe("serve"));
    assert!(
        refused
            .stderr
            .contains("environment variable BRINE_MASTER_LISTN: listn: unknown field"),
        "{}",
        refused.stderr
    );
    let vars = [
        ("BRINE_MASTER_DATA_DIR", path(&data)),
        ("BRINE_MASTER_JOIN_APPROVAL", "sometimes"),
    ];
    let refused = run(&master_binary(), &vars, &["config"]);
    assert_eq!(refused.code, 2, "{}", refused.describe("config"));
    assert!(
        refused
            .stderr
            .contains("environment variable BRINE_MASTER_JOIN_APPROVAL: join_approval:"),
        "{}",
        refused.stderr
    );
}

/// The daemon listens where `BRINE_MASTER_LISTEN` says and admits hosts as
/// `BRINE_MASTER_JOIN_APPROVAL` says; a CLI on another machine finds it with `BRINE_MASTER_ADDRESS`,
/// `BRINE_CA`, `BRINE_CERT` and `BRINE_KEY`; a host joins with `BRINE_MINION_DATA_DIR` and
/// `BRINE_JOIN_TOKEN`; logs are JSON with `BRINE_LOG_FORMAT=json`.
#[test]
fn the_daemon_cli_and_join_follow_their_variables() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = init_master(&dir);
    let listen = format!("127.0.0.1:{}", free_port());
    let serving = Serving::start(
        &dir,
        &[
            ("BRINE_MASTER_DATA_DIR", path(&data)),
            ("BRINE_MASTER_LISTEN", &listen),
            ("BRINE_MASTER_JOIN_APPROVAL", "manual"),
            ("BRINE_LOG_FORMAT", "json"),
        ],
        &["serve"],
    );

    // An operator's laptop: a certificate of its own and nothing of the data directory.
    let laptop = dir.path().join("laptop");
    run_ok(
        &master_binary(),
        &[("BRINE_MASTER_DATA_DIR", path(&data))],
        &["cert", "issue", "--admin", "ops", "--out", path(&laptop)],
    );
    let (ca, cert, key) = (
        laptop.join("ca.pem"),
        laptop.join("ops.pem"),
        laptop.join("ops.key"),
    );
    let remote = [
        ("BRINE_MASTER_DATA_DIR", "/nonexistent"),
        ("BRINE_MASTER_ADDRESS", listen.as_str()),
        ("BRINE_CA", path(&ca)),
        ("BRINE_CERT", path(&cert)),
        ("BRINE_KEY", path(&key)),
    ];
    wait_for("the master to answer", Duration::from_secs(20), || {
        let listed = run(&master_binary(), &remote, &["minions"]);
        if listed.code == 0 {
            Ok(())
        } else {
            Err(listed.stderr)
        }
    });
    let token = run_ok(&master_binary(), &remote, &["token", "create"]);

    let host = dir.path().join("host");
    run_ok(
        &minion_binary(),
        &[
            ("BRINE_MINION_DATA_DIR", path(&host)),
            ("BRINE_JOIN_TOKEN", token.trim()),
        ],
        &["join", "--master", &listen, "--id", "env-host"],
    );
    assert!(host.join("minion.pem").is_file());
    let listed: Value = serde_json::from_str(&run_ok(
        &master_binary(),
        &remote,
        &["minions", "--output", "json"],
    ))
    .unwrap();
    assert_eq!(listed[0]["id"], "env-host", "{listed}");
    assert_eq!(listed[0]["approval"], "pending", "{listed}");

    let log = serving.log();
    assert!(!log.is_empty());
    for line in log.lines() {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not a JSON log line ({err}): {line}"));
        assert!(parsed["level"].is_string(), "{line}");
    }
}

#[test]
fn each_minion_key_can_be_set_by_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("minion.toml"), "master = \"m.example:4700\"\n").unwrap();
    let vars = [
        ("BRINE_MINION_DATA_DIR", path(&host)),
        ("BRINE_MINION_MASTER", "brine.example.com:4799"),
        ("BRINE_MINION_NAMESPACE", "staging"),
        ("BRINE_MINION_RECONCILE_INTERVAL", "45s"),
        ("BRINE_MINION_KEEP_RELEASES", "5"),
    ];
    let shown = run_ok(&minion_binary(), &vars, &["config"]);
    let table: toml::Table = shown.parse().unwrap_or_else(|e| panic!("{e}:\n{shown}"));
    assert_eq!(
        table["master"].as_str(),
        Some("brine.example.com:4799"),
        "{shown}"
    );
    assert_eq!(table["namespace"].as_str(), Some("staging"));
    assert_eq!(table["reconcile_interval"].as_str(), Some("45s"));
    assert_eq!(table["keep_releases"].as_integer(), Some(5));
    for (variable, _) in &vars[1..] {
        assert!(
            shown.contains(&format!("from {variable}")),
            "{variable}:\n{shown}"
        );
    }

    let refused = run(
        &minion_binary(),
        &[
            ("BRINE_MINION_DATA_DIR", path(&host)),
            ("BRINE_MINION_NAMESPACE", "bad/namespace"),
        ],
        &["run"],
    );
    assert_eq!(refused.code, 2, "{}", refused.describe("run"));
    assert!(
        refused
            .stderr
            .contains("environment variable BRINE_MINION_NAMESPACE: namespace:"),
        "{}",
        refused.stderr
    );
}
