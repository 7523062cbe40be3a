//! brine under a real systemd: the README's install commands run in a machine with systemd as
//! PID 1 (a container of `scripts/systemd-test-image.sh`'s image), and the units do what they
//! promise: ready only when serving, a status line, a watchdog that restarts a hung daemon,
//! restarts after a crash, an ordered stop within `TimeoutStopSec`, plain journal lines, a
//! minion that outlives a Docker restart, and a hardened master.
//!
//! These tests run one at a time (nextest group `systemd`): their minions use the default,
//! empty namespace on the shared Docker engine, as a real host's minion does.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::systemd::{CHECKOUT, MASTER_NAME, SystemdHost, readme_install_blocks};
use support::{Images, Registry, docker, try_docker, unique_id, wait_for};

const MASTER: &str = "brine-master";
const MINION: &str = "brine-minion";
/// `systemd-analyze security` scores from 0 (safest) to 10; the master unit is held to this.
const MASTER_EXPOSURE_AT_MOST: f32 = 1.5;
/// The minion drives Docker (root-equivalent) and cannot take every restriction.
const MINION_EXPOSURE_AT_MOST: f32 = 2.0;

/// Runs the README's install blocks in order: the master's, then the minion's with the token
/// the master printed. Returns the token.
fn install_as_the_readme_says(host: &SystemdHost) -> String {
    let blocks = readme_install_blocks();
    assert_eq!(
        blocks.len(),
        2,
        "the README's install section has a block for the master and one for each host: {blocks:?}"
    );
    let mut token = None;
    for command in &blocks[0] {
        let finished = host.sh_in(CHECKOUT, command);
        assert!(finished.code == 0, "{}", finished.describe(command));
        if command.starts_with("brine-master token create") {
            token = Some(finished.stdout.trim().to_owned());
        }
    }
    let token = token.expect("the master's install block creates a join token");
    assert!(token.starts_with("BRINE-1-"), "not a token: {token:?}");
    for command in &blocks[1] {
        let command = command.replace("BRINE-1-...", &token);
        let finished = host.sh_in(CHECKOUT, &command);
        assert!(finished.code == 0, "{}", finished.describe(&command));
    }
    token
}

fn wait_status(host: &SystemdHost, unit: &str, wanted: &str) -> String {
    wait_for(
        &format!("{unit}'s status line to mention {wanted:?}"),
        Duration::from_secs(30),
        || {
            let status = host.property(unit, "StatusText");
            if status.contains(wanted) {
                Ok(status)
            } else {
                Err(status)
            }
        },
    )
}

fn exposure(host: &SystemdHost, unit: &str) -> f32 {
    let report = host.sh_ok(&format!("systemd-analyze security --no-pager {unit}"));
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{report}"));
    line.split(": ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"))
}

/// Removes the containers a test's highstate created on the shared engine.
struct DeployedContainer(String);

impl Drop for DeployedContainer {
    fn drop(&mut self) {
        let _ = try_docker(&["rm", "-f", &self.0]);
    }
}

#[test]
fn the_readme_install_steps_run_both_daemons_under_systemd() {
    let uniq = unique_id();
    let registry = Registry::start();
    let mut images = Images::new(&registry, &uniq);
    let app = images.push_variant("app", 1);
    let mut host = SystemdHost::boot(&uniq);
    host.forward_registry(&registry);
    host.stage_checkout();

    install_as_the_readme_says(&host);

    // Type=notify: `systemctl enable --now` returned only once the master served, so the CLI
    // answers at once, without retrying.
    for unit in [MASTER, MINION] {
        assert_eq!(host.property(unit, "ActiveState"), "active", "{unit}");
        assert_eq!(host.property(unit, "Type"), "notify", "{unit}");
        assert_ne!(host.property(unit, "StatusText"), "", "{unit}");
    }
    let minion_id = host.hostname().to_owned();
    wait_status(&host, MASTER, "1 host linked");
    wait_status(&host, MINION, &format!("linked to {MASTER_NAME}:4700"));

    // A highstate through that master deploys a container on the engine.
    let container = format!("sd-{uniq}");
    let _cleanup = DeployedContainer(container.clone());
    host.write_file(
        "/var/lib/brine-master/roles.toml",
        &format!(
            "[roles.app]\nimage = \"{}\"\n[[roles.app.containers]]\nname = \"{container}\"\n\n[assign]\n\"{minion_id}\" = [\"app\"]\n",
            app.reference
        ),
    );
    // This machine has no CA certificates (Debian's minbase lacks ca-certificates). The
    // registry client cannot work without them, even over plain HTTP: the highstate fails
    // clearly and sends nothing, and the master keeps serving (it once panicked here).
    let highstate = host.sh("brine-master highstate");
    assert!(
        highstate.code == 2 && highstate.stderr.contains("ca-certificates"),
        "{}",
        highstate.describe("highstate without CA certificates")
    );
    assert_eq!(host.property(MASTER, "NRestarts"), "0");
    assert_eq!(host.sh_ok("brine-master lock status").trim(), "unlocked");
    host.sh_ok("mkdir -p /etc/ssl/certs");
    host.copy_in(
        Path::new("/etc/ssl/certs/ca-certificates.crt"),
        "/etc/ssl/certs/ca-certificates.crt",
    );
    let highstate = host.sh("brine-master highstate --output json");
    assert!(highstate.code == 0, "{}", highstate.describe("highstate"));
    let state = docker(&["inspect", "--format", "{{.State.Status}}", &container]);
    assert_eq!(state, "running");
    wait_status(&host, MASTER, "succeeded on 1 hosts");
    wait_status(&host, MINION, "last job");

    // Both stay up, without restarts.
    std::thread::sleep(Duration::from_secs(2));
    for unit in [MASTER, MINION] {
        assert_eq!(host.property(unit, "ActiveState"), "active", "{unit}");
        assert_eq!(host.property(unit, "NRestarts"), "0", "{unit}");
    }

    // The master runs as its own user, with room for a connection per host.
    let pid = host.property(MASTER, "MainPID");
    assert_eq!(host.sh_ok(&format!("ps -o user= -p {pid}")).trim(), MASTER);
    // The unit asks for 65536; a machine may cap that lower (this one's hard limit is what
    // systemd itself got), and services get 1024 unless their unit raises it.
    assert_eq!(host.property(MASTER, "LimitNOFILE"), "65536");
    let open_files = |pid: &str| -> (u64, u64) {
        let limits = host.sh_ok(&format!("cat /proc/{pid}/limits"));
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap_or_else(|| panic!("no open files limit in {limits}"));
        let numbers: Vec<u64> = line
            .split_whitespace()
            .filter_map(|word| word.parse().ok())
            .collect();
        (numbers[0], numbers[1])
    };
    let (_, ceiling) = open_files("1");
    let (soft, _) = open_files(&pid);
    assert_eq!(soft, ceiling.min(65536), "the master's open-files limit");
    assert!(
        soft > 1024,
        "the master's open-files limit was not raised: {soft}"
    );

    // Plain journal lines: no colour escapes, no timestamp of our own; levels as priorities.
    let journal = host.journal(&[MASTER, MINION]);
    assert!(journal.contains("brine-master serving"), "{journal}");
    assert!(
        !journal.contains('\u{1b}'),
        "escape sequences in:\n{journal}"
    );
    for line in journal.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        assert!(
            !(first.len() >= 10 && first.as_bytes()[4] == b'-' && first.starts_with("20")),
            "a timestamp of our own in the journal: {line}"
        );
        assert!(!line.starts_with('<'), "an unparsed priority: {line}");
    }
    let priorities = host
        .sh_ok("journalctl --no-pager -u brine-master -o json --output-fields=MESSAGE,PRIORITY");
    let serving = priorities
        .lines()
        .find(|l| l.contains("brine-master serving"))
        .expect("the serving line in the journal");
    let serving: serde_json::Value = serde_json::from_str(serving).expect("journal JSON");
    assert_eq!(serving["PRIORITY"], "6", "{serving}");

    // The units are valid and the master is hardened.
    let verify = host.sh(
        "systemd-analyze verify /etc/systemd/system/brine-master.service /etc/systemd/system/brine-minion.service",
    );
    assert!(
        verify.code == 0 && verify.stdout.trim().is_empty() && verify.stderr.trim().is_empty(),
        "{}",
        verify.describe("systemd-analyze verify")
    );
    let (master_exposure, minion_exposure) = (exposure(&host, MASTER), exposure(&host, MINION));
    eprintln!("systemd-analyze security: master {master_exposure}, minion {minion_exposure}");
    assert!(
        master_exposure <= MASTER_EXPOSURE_AT_MOST,
        "{master_exposure}"
    );
    assert!(
        minion_exposure <= MINION_EXPOSURE_AT_MOST,
        "{minion_exposure}"
    );

    // `systemctl stop` ends each daemon in order, well within TimeoutStopSec.
    for (unit, goodbye) in [(MINION, "stopping"), (MASTER, "brine-master stopped")] {
        let started = Instant::now();
        host.sh_ok(&format!("systemctl stop {unit}"));
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(15),
            "{unit} took {took:?} to stop"
        );
        assert_eq!(host.property(unit, "Result"), "success", "{unit}");
        let journal = host.journal(&[unit]);
        assert!(journal.contains(goodbye), "{unit}:\n{journal}");
    }
    // The container the minion started is still running: stopping the agent leaves it alone.
    let state = docker(&["inspect", "--format", "{{.State.Status}}", &container]);
    assert_eq!(state, "running");
}

/// Waits until `unit` runs a process other than `old_pid` and is active; returns the new pid.
fn wait_restarted(host: &SystemdHost, unit: &str, old_pid: &str, within: Duration) -> String {
    wait_for(&format!("systemd to restart {unit}"), within, || {
        let pid = host.property(unit, "MainPID");
        let active = host.property(unit, "ActiveState");
        if pid != old_pid && pid != "0" && active == "active" {
            Ok(pid)
        } else {
            Err(format!("pid {pid}, {active}"))
        }
    })
}

#[test]
fn systemd_restarts_a_hung_or_killed_daemon() {
    let uniq = unique_id();
    let host = SystemdHost::boot(&uniq);
    host.stage_checkout();
    install_as_the_readme_says(&host);
    wait_status(&host, MASTER, "1 host linked");

    for unit in [MASTER, MINION] {
        assert_eq!(host.property(unit, "WatchdogUSec"), "10s", "{unit}");
        // Hung: stopped processes ping nobody; the watchdog (10 s) fires and systemd restarts.
        let pid = host.property(unit, "MainPID");
        host.sh_ok(&format!("kill -STOP {pid}"));
        let started = Instant::now();
        let pid = wait_restarted(&host, unit, &pid, Duration::from_secs(30));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(5),
            "{unit} restarted after only {took:?}"
        );
        let journal = host.journal(&[unit]);
        assert!(journal.contains("Watchdog timeout"), "{unit}:\n{journal}");
        assert_eq!(host.property(unit, "NRestarts"), "1", "{unit}");

        // Crashed: kill -9 is a failure, and Restart=on-failure brings it back.
        host.sh_ok(&format!("kill -9 {pid}"));
        wait_restarted(&host, unit, &pid, Duration::from_secs(15));
        assert_eq!(host.property(unit, "NRestarts"), "2", "{unit}");
    }
    // Back to work: the master answers and the minion links again.
    wait_status(&host, MASTER, "1 host linked");
    host.sh_ok("brine-master minions");
}

#[test]
fn the_minion_keeps_running_while_docker_stops_and_restarts() {
    let uniq = unique_id();
    let host = SystemdHost::boot(&uniq);
    host.stage_checkout();
    install_as_the_readme_says(&host);
    wait_status(&host, MINION, "linked to");
    let pid = host.property(MINION, "MainPID");

    // With Requires=docker.service, systemd would stop the minion along with Docker.
    host.sh_ok("systemctl stop docker");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(host.property(MINION, "ActiveState"), "active");
    assert_eq!(host.property(MINION, "MainPID"), pid);
    wait_for(
        "the minion to notice Docker is gone",
        Duration::from_secs(30),
        || {
            let journal = host.journal(&[MINION]);
            if journal.contains("docker is unavailable") {
                Ok(())
            } else {
                Err(journal)
            }
        },
    );

    host.sh_ok("systemctl restart docker");
    wait_for(
        "the minion to see Docker again",
        Duration::from_secs(30),
        || {
            let journal = host.journal(&[MINION]);
            if journal.contains("Docker answers again") {
                Ok(())
            } else {
                Err(journal)
            }
        },
    );
    assert_eq!(host.property(MINION, "ActiveState"), "active");
    assert_eq!(host.property(MINION, "MainPID"), pid);
    assert_eq!(host.property(MINION, "NRestarts"), "0");
}
