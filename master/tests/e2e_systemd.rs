//! brine under a real systemd: the README's install commands run in a machine with systemd as
//! PID 1 (a container of `scripts/systemd-test-image.sh`'s image), and the units do what they
//! promise: ready only when serving, a status line, a watchdog that restarts a hung daemon,
//! restarts after a crash, an ordered stop within `TimeoutStopSec`, plain journal lines, a
//! minion that outlives a Docker restart, and a hardened master. The Debian packages install,
//! upgrade and remove both as services, and brine-proxy with the minion's. brine-proxy keeps its
//! ports open while systemd restarts it (its sockets wait in the unit's file-descriptor store)
//! and frees them when stopped.
//!
//! These tests run one at a time (nextest group `systemd`): their minions use the default,
//! empty namespace on the shared Docker engine, as a real host's minion does.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::systemd::{CHECKOUT, MASTER_NAME, SystemdHost, debian_packages, readme_blocks};
use support::{
    Images, Registry, docker, master_binary, minion_binary, proxy_binary, try_docker, unique_id,
    wait_for,
};

const MASTER: &str = "brine-master";
const MINION: &str = "brine-minion";
const PROXY: &str = "brine-proxy";
/// `systemd-analyze security` scores from 0 (safest) to 10; the master unit is held to this.
const MASTER_EXPOSURE_AT_MOST: f32 = 1.5;
/// The minion drives Docker (root-equivalent) and cannot take every restriction.
const MINION_EXPOSURE_AT_MOST: f32 = 2.0;
/// The proxy runs as a user of its own with one capability (binding ports below 1024); it
/// rates 1.4 with systemd 252.
const PROXY_EXPOSURE_AT_MOST: f32 = 1.5;

/// The README's section on installing from a checkout.
const INSTALL_SECTION: &str = "Installing on real hosts";
/// The README's section on the Debian packages.
const PACKAGES_SECTION: &str = "Debian packages";

/// Runs the install blocks of the README's section `## SECTION` in `cwd`, in order: the
/// master's, then the minion's with the token the master printed. Returns the token.
fn install_as_the_readme_says(host: &SystemdHost, section: &str, cwd: &str) -> String {
    let blocks = readme_blocks(section);
    assert_eq!(
        blocks.len(),
        2,
        "the README's section {section:?} has a block for the master and one for each host: {blocks:?}"
    );
    let mut token = None;
    for command in &blocks[0] {
        let finished = host.sh_in(cwd, command);
        assert!(finished.code == 0, "{}", finished.describe(command));
        if command.starts_with("brine-master token create") {
            token = Some(finished.stdout.trim().to_owned());
        }
    }
    let token = token.expect("the master's install block creates a join token");
    assert!(token.starts_with("BRINE-1-"), "not a token: {token:?}");
    for command in &blocks[1] {
        let command = command.replace("BRINE-1-...", &token);
        let finished = host.sh_in(cwd, &command);
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

    install_as_the_readme_says(&host, INSTALL_SECTION, CHECKOUT);

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
    // A manual install does not bring Debian's ca-certificates (the package depends on it): on
    // a host without (here: the machine's CA certificates set aside), the registry client
    // cannot work, even over plain HTTP. The highstate fails clearly and sends nothing, and the
    // master keeps serving (it once panicked here).
    host.sh_ok("mv /etc/ssl/certs /etc/ssl/certs.aside");
    let highstate = host.sh("brine-master highstate");
    assert!(
        highstate.code == 2 && highstate.stderr.contains("ca-certificates"),
        "{}",
        highstate.describe("highstate without CA certificates")
    );
    assert_eq!(host.property(MASTER, "NRestarts"), "0");
    assert_eq!(host.sh_ok("brine-master lock status").trim(), "unlocked");
    host.sh_ok("mv /etc/ssl/certs.aside /etc/ssl/certs");
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
    install_as_the_readme_says(&host, INSTALL_SECTION, CHECKOUT);
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
    install_as_the_readme_says(&host, INSTALL_SECTION, CHECKOUT);
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

/// `brine-master --version` or `brine-minion --version` of this test run's binaries.
fn version_of(binary: &Path) -> String {
    let output = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .expect("run --version");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The state of package `name` as `dpkg-query` shows it, e.g. "install ok installed".
fn package_status(host: &SystemdHost, name: &str) -> String {
    host.sh(&format!("dpkg-query -W -f='${{Status}}' {name}"))
        .stdout
        .trim()
        .to_owned()
}

#[test]
fn the_debian_packages_install_upgrade_and_remove_both_services() {
    let uniq = unique_id();
    let packages = debian_packages();
    let host = SystemdHost::boot(&uniq);
    let dir = "/root/packages";
    host.sh_ok(&format!("mkdir {dir}"));
    for package in &packages {
        let name = package
            .file_name()
            .and_then(|name| name.to_str())
            .expect("a UTF-8 file name");
        host.copy_in(package, &format!("{dir}/{name}"));
    }

    // Installed: the daemons, their units (neither enabled nor started), the conffiles, the
    // documentation, the data directories and the master's user.
    host.sh_ok(&format!(
        "cd {dir} && dpkg -i brine-master_*.deb brine-minion_*.deb"
    ));
    for unit in [MASTER, MINION] {
        assert_eq!(package_status(&host, unit), "install ok installed");
        // Debian's /lib is /usr/lib: systemd may name either.
        let unit_file = host.property(unit, "FragmentPath");
        assert!(
            unit_file.ends_with(&format!("/lib/systemd/system/{unit}.service")),
            "{unit_file}"
        );
        host.sh_ok(&format!("test -f /usr/lib/systemd/system/{unit}.service"));
        let exec = host.property(unit, "ExecStart");
        assert!(exec.contains(&format!("path=/usr/bin/{unit} ")), "{exec}");
        assert_eq!(host.property(unit, "UnitFileState"), "disabled", "{unit}");
        assert_eq!(host.property(unit, "ActiveState"), "inactive", "{unit}");
        let conffiles = host.sh_ok(&format!("dpkg-query -W -f='${{Conffiles}}' {unit}"));
        assert!(
            conffiles.contains(&format!("/etc/default/{unit} ")),
            "{unit}: {conffiles}"
        );
        let environment = host.property(unit, "EnvironmentFiles");
        assert!(
            environment.starts_with(&format!("/etc/default/{unit} ")),
            "{environment}"
        );
        host.sh_ok(&format!(
            "test -f /usr/share/doc/{unit}/README.md && test -f /usr/share/doc/{unit}/copyright"
        ));
    }
    // brine-proxy, in brine-minion's package: its unit enabled and started at once (it needs
    // no configuration), its conffile, its example configuration.
    let unit_file = host.property(PROXY, "FragmentPath");
    assert!(
        unit_file.ends_with("/lib/systemd/system/brine-proxy.service"),
        "{unit_file}"
    );
    let exec = host.property(PROXY, "ExecStart");
    assert!(exec.contains("path=/usr/bin/brine-proxy "), "{exec}");
    assert_eq!(host.property(PROXY, "UnitFileState"), "enabled");
    assert_eq!(host.property(PROXY, "ActiveState"), "active");
    assert_eq!(host.property(PROXY, "StatusText"), "0 ports routed");
    let conffiles = host.sh_ok("dpkg-query -W -f='${Conffiles}' brine-minion");
    assert!(
        conffiles.contains("/etc/default/brine-proxy "),
        "{conffiles}"
    );
    let environment = host.property(PROXY, "EnvironmentFiles");
    assert!(
        environment.starts_with("/etc/default/brine-proxy "),
        "{environment}"
    );
    host.sh_ok("test -f /usr/share/doc/brine-minion/examples/proxy.toml.example");
    assert_eq!(
        host.sh_ok("brine-proxy --version").trim(),
        version_of(&proxy_binary())
    );
    let verify = host.sh(
        "systemd-analyze verify /usr/lib/systemd/system/brine-master.service \
         /usr/lib/systemd/system/brine-minion.service /usr/lib/systemd/system/brine-proxy.service",
    );
    assert!(
        verify.code == 0 && verify.stdout.trim().is_empty() && verify.stderr.trim().is_empty(),
        "{}",
        verify.describe("systemd-analyze verify")
    );
    host.sh_ok(
        "cd /usr/share/doc && test -f brine-master/examples/master.toml.example \
         && test -f brine-master/examples/roles.toml.example \
         && test -f brine-minion/examples/minion.toml.example",
    );
    assert_eq!(
        host.sh_ok("stat -c '%U %G %a' /var/lib/brine-master")
            .trim(),
        "brine-master brine-master 700"
    );
    assert_eq!(
        host.sh_ok("stat -c '%U %G %a' /var/lib/brine-minion")
            .trim(),
        "root root 700"
    );
    let user = host.sh_ok("getent passwd brine-master");
    assert!(
        user.trim()
            .ends_with(":brine master:/var/lib/brine-master:/usr/sbin/nologin"),
        "{user}"
    );
    // The packaged binaries are this run's: same version, same commit.
    assert_eq!(
        host.sh_ok("brine-master --version").trim(),
        version_of(&master_binary())
    );
    assert_eq!(
        host.sh_ok("brine-minion --version").trim(),
        version_of(&minion_binary())
    );

    // The README's steps after `dpkg -i` start both.
    install_as_the_readme_says(&host, PACKAGES_SECTION, dir);
    for unit in [MASTER, MINION] {
        assert_eq!(host.property(unit, "ActiveState"), "active", "{unit}");
        assert_eq!(host.property(unit, "UnitFileState"), "enabled", "{unit}");
    }
    wait_status(&host, MASTER, "1 host linked");
    wait_status(&host, MINION, &format!("linked to {MASTER_NAME}:4700"));
    let pid = host.property(MASTER, "MainPID");
    assert_eq!(host.sh_ok(&format!("ps -o user= -p {pid}")).trim(), MASTER);

    // An upgrade (here: the same packages again, which runs the same maintainer scripts) keeps
    // an edited conffile and restarts the running daemons, which read it.
    host.sh_ok("echo RUST_LOG=debug >>/etc/default/brine-master");
    // The proxy's port stays open across the upgrade's restart (no backend needed for that).
    let routed = control(
        &host,
        r#"{"op":"route","route":{"listen":"127.0.0.1:8080","backend":"127.0.0.1:9","mode":"tcp","owner":"test/web"}}"#,
    );
    assert_eq!(routed, r#"{"result":"routed","previous":null}"#);
    let pids = [MASTER, MINION, PROXY].map(|unit| host.property(unit, "MainPID"));
    host.sh_ok(&format!(
        "cd {dir} && dpkg -i brine-master_*.deb brine-minion_*.deb"
    ));
    for (unit, old_pid) in [MASTER, MINION, PROXY].into_iter().zip(&pids) {
        assert_eq!(host.property(unit, "ActiveState"), "active", "{unit}");
        assert_ne!(&host.property(unit, "MainPID"), old_pid, "{unit} restarted");
        assert_eq!(host.property(unit, "UnitFileState"), "enabled", "{unit}");
    }
    assert!(
        host.sh_ok("cat /etc/default/brine-master")
            .contains("RUST_LOG=debug")
    );
    assert!(port_8080_listens(&host));
    let journal = host.journal(&[PROXY]);
    assert!(
        journal.lines().any(
            |l| l.contains("restored route (inherited socket)") && l.contains("127.0.0.1:8080")
        ),
        "{journal}"
    );
    let pid = host.property(MASTER, "MainPID");
    host.sh_ok(&format!(
        "tr '\\0' '\\n' </proc/{pid}/environ | grep -qx RUST_LOG=debug"
    ));
    wait_status(&host, MASTER, "1 host linked");

    // Removed: stopped, units and binaries gone; conffiles and data kept.
    host.sh_ok("dpkg -r brine-minion brine-master");
    assert!(
        !port_8080_listens(&host),
        "the removed proxy's port is free"
    );
    // brine-proxy is a unit of the brine-minion package, not a package of its own.
    for package in [MASTER, MINION] {
        assert_eq!(package_status(&host, package), "deinstall ok config-files");
    }
    for unit in [MASTER, MINION, PROXY] {
        assert_eq!(host.property(unit, "ActiveState"), "inactive", "{unit}");
        host.sh_ok(&format!(
            "test ! -e /usr/lib/systemd/system/{unit}.service && test ! -e /usr/bin/{unit} \
             && test -f /etc/default/{unit}"
        ));
    }
    assert!(
        host.sh_ok("cat /etc/default/brine-master")
            .contains("RUST_LOG=debug")
    );

    // Purged: conffiles and the units' links gone. The data directories stay (the fleet's CA
    // key, the host's identity), and so does the user owning the master's.
    host.sh_ok("dpkg --purge brine-minion brine-master");
    for package in [MASTER, MINION] {
        assert_eq!(package_status(&host, package), "");
    }
    for unit in [MASTER, MINION, PROXY] {
        host.sh_ok(&format!(
            "test ! -e /etc/default/{unit} && test ! -L /etc/systemd/system/{unit}.service \
             && test ! -L /etc/systemd/system/multi-user.target.wants/{unit}.service"
        ));
    }
    host.sh_ok("test -f /var/lib/brine-master/master.toml");
    host.sh_ok("test -f /var/lib/brine-minion/minion.toml");
    host.sh_ok("getent passwd brine-master");
}

/// A tiny HTTP backend for the proxy test: answers every request `200 hello` (socat runs it
/// once per connection). It reads the request's head first, so closing does not reset it.
const BACKEND_SCRIPT: &str = r#"#!/bin/bash
while IFS= read -r line; do
  line=${line%$'\r'}
  [ -z "$line" ] && break
done
printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n'
"#;

/// One request to the proxy with bash's /dev/tcp; prints the answer. Exits 7 when the
/// connection is refused, 124 after 10 s without an answer.
const REQUEST: &str = "timeout 10 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080 || exit 7; \
     printf \"GET / HTTP/1.1\\r\\nHost: proxy\\r\\nConnection: close\\r\\n\\r\\n\" >&3; cat <&3'";

/// Requests through the proxy back to back until /root/client.stop exists, a line per request
/// in /root/client.log: its start and end (µs since the epoch) and how it went (`ok`,
/// `refused`: the connection was refused, `failed`: connected but no `200 hello`).
fn client_script() -> String {
    format!(
        r#"#!/bin/bash
while [ ! -e /root/client.stop ]; do
  start=${{EPOCHREALTIME/./}}
  answer=$({REQUEST} 2>&1)
  code=$?
  if [ "$code" = 7 ]; then
    outcome=refused
  elif [ "$code" = 0 ] && [[ "$answer" == "HTTP/1.1 200 OK"*hello* ]]; then
    outcome=ok
  else
    outcome=failed
  fi
  echo "$start ${{EPOCHREALTIME/./}} $outcome" >>/root/client.log
done
"#
    )
}

/// Sends one request line to the proxy's control socket; returns the answer line.
fn control(host: &SystemdHost, request: &str) -> String {
    host.sh_ok(&format!(
        "echo '{request}' | socat -t 5 - UNIX-CONNECT:/run/brine-proxy/control.sock"
    ))
    .trim()
    .to_owned()
}

/// Whether anything listens on 127.0.0.1:8080 in the machine (`/proc/net/tcp`: local address
/// 0100007F:1F90, state 0A).
fn port_8080_listens(host: &SystemdHost) -> bool {
    host.sh_ok("cat /proc/net/tcp").lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"0100007F:1F90") && fields.get(3) == Some(&"0A")
    })
}

#[test]
fn the_proxy_keeps_its_ports_open_while_systemd_restarts_it() {
    let uniq = unique_id();
    let host = SystemdHost::boot(&uniq);
    host.stage_checkout();

    // A manual install of a host, as the README's (the package test covers the package):
    // the proxy is enabled and started beside the minion's unit.
    let installed = host.sh_in(CHECKOUT, "deploy/install.sh minion");
    assert!(
        installed.code == 0,
        "{}",
        installed.describe("deploy/install.sh minion")
    );
    assert_eq!(host.property(PROXY, "ActiveState"), "active");
    assert_eq!(host.property(PROXY, "UnitFileState"), "enabled");
    assert_eq!(host.property(PROXY, "Type"), "notify");
    assert_eq!(host.property(PROXY, "StatusText"), "0 ports routed");
    let exec = host.property(PROXY, "ExecStart");
    assert!(exec.contains("path=/usr/local/bin/brine-proxy "), "{exec}");
    let verify = host.sh("systemd-analyze verify /etc/systemd/system/brine-proxy.service");
    assert!(
        verify.code == 0 && verify.stdout.trim().is_empty() && verify.stderr.trim().is_empty(),
        "{}",
        verify.describe("systemd-analyze verify")
    );
    let proxy_exposure = exposure(&host, PROXY);
    eprintln!("systemd-analyze security: proxy {proxy_exposure}");
    assert!(proxy_exposure <= PROXY_EXPOSURE_AT_MOST, "{proxy_exposure}");
    // Its own user, allocated by systemd; root can still reach the control socket.
    let pid = host.property(PROXY, "MainPID");
    let user = host.sh_ok(&format!("ps -o user= -p {pid}"));
    assert_ne!(user.trim(), "root");

    // A backend on 127.0.0.1:8000, and port 8080 routed to it.
    host.write_file("/root/backend.sh", BACKEND_SCRIPT);
    host.sh_ok(
        "chmod 755 /root/backend.sh && systemd-run --unit brine-test-backend /usr/bin/socat \
         TCP-LISTEN:8000,bind=127.0.0.1,fork,reuseaddr,backlog=256 EXEC:/root/backend.sh",
    );
    wait_for("the backend to answer", Duration::from_secs(10), || {
        let answer = host.sh(
            "timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8000 && printf \"GET / HTTP/1.1\\r\\n\\r\\n\" >&3 && cat <&3'",
        );
        if answer.stdout.contains("hello") {
            Ok(())
        } else {
            Err(answer.describe("the backend"))
        }
    });
    assert!(!port_8080_listens(&host));
    let routed = control(
        &host,
        r#"{"op":"route","route":{"listen":"127.0.0.1:8080","backend":"127.0.0.1:8000","mode":"http","owner":"test/web"}}"#,
    );
    assert_eq!(routed, r#"{"result":"routed","previous":null}"#);
    assert!(port_8080_listens(&host));
    let answer = host.sh_ok(REQUEST);
    assert!(
        answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("hello\n"),
        "{answer}"
    );
    assert_eq!(host.property(PROXY, "StatusText"), "1 port routed");
    let saved = host.sh_ok("cat /var/lib/brine-proxy/routes.json");
    assert!(saved.contains("127.0.0.1:8080"), "{saved}");

    // `systemctl restart` while a client requests back to back: no connection is refused and
    // none fails; those arriving while no proxy runs wait in the backlog of the socket
    // systemd kept, and the next proxy serves them.
    host.write_file("/root/client.sh", &client_script());
    host.sh_ok("chmod 755 /root/client.sh && systemd-run --unit brine-test-client /root/client.sh");
    let ok_lines = |host: &SystemdHost| {
        host.sh("cat /root/client.log 2>/dev/null")
            .stdout
            .lines()
            .filter(|l| l.ends_with(" ok"))
            .count()
    };
    wait_for(
        "the client's first requests",
        Duration::from_secs(30),
        || {
            let ok = ok_lines(&host);
            if ok >= 20 {
                Ok(ok)
            } else {
                Err(format!("{ok} ok"))
            }
        },
    );
    let old_pid = host.property(PROXY, "MainPID");
    let restart = host.sh_ok(
        "start=${EPOCHREALTIME/./}; systemctl restart brine-proxy; echo $start ${EPOCHREALTIME/./}",
    );
    let window: Vec<u64> = restart
        .split_whitespace()
        .map(|t| t.parse().expect("a time in µs"))
        .collect();
    let (restart_start, restart_end) = (window[0], window[1]);
    let new_pid = host.property(PROXY, "MainPID");
    assert_ne!(new_pid, old_pid, "the proxy was restarted");
    assert_eq!(host.property(PROXY, "ActiveState"), "active");
    let before_restart = ok_lines(&host);
    wait_for(
        "the client's requests after the restart",
        Duration::from_secs(30),
        || {
            let ok = ok_lines(&host);
            if ok >= before_restart + 20 {
                Ok(ok)
            } else {
                Err(format!("{ok} ok"))
            }
        },
    );
    host.sh_ok("touch /root/client.stop");
    wait_for("the client to stop", Duration::from_secs(30), || {
        let state = host.property("brine-test-client", "ActiveState");
        if state == "inactive" || state == "failed" {
            Ok(())
        } else {
            Err(state)
        }
    });
    let log = host.sh_ok("cat /root/client.log");
    let requests: Vec<(u64, u64, &str)> = log
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 3, "{line}");
            (
                fields[0].parse().expect("µs"),
                fields[1].parse().expect("µs"),
                fields[2],
            )
        })
        .collect();
    let count = |outcome: &str| requests.iter().filter(|r| r.2 == outcome).count();
    let during: Vec<&(u64, u64, &str)> = requests
        .iter()
        .filter(|r| r.0 >= restart_start && r.0 <= restart_end)
        .collect();
    let slowest = during.iter().map(|r| r.1 - r.0).max().unwrap_or(0);
    eprintln!(
        "requests: {} ok, {} refused, {} failed; the restart took {} ms, {} requests started \
         during it, the slowest took {} ms",
        count("ok"),
        count("refused"),
        count("failed"),
        (restart_end - restart_start) / 1000,
        during.len(),
        slowest / 1000,
    );
    assert_eq!(count("refused"), 0, "refused connections:\n{log}");
    assert_eq!(count("failed"), 0, "failed requests:\n{log}");
    assert!(!during.is_empty(), "no request during the restart:\n{log}");

    // The new proxy took the socket back from systemd's store (not a fresh bind), and its
    // route from the state file.
    let journal = host.journal(&[PROXY]);
    let restored: Vec<&str> = journal
        .lines()
        .filter(|l| l.contains("restored route"))
        .collect();
    assert_eq!(restored.len(), 1, "{journal}");
    assert!(
        restored[0].contains("inherited socket") && restored[0].contains("127.0.0.1:8080"),
        "{journal}"
    );
    assert_eq!(host.property(PROXY, "StatusText"), "1 port routed");
    assert!(host.sh_ok(REQUEST).ends_with("hello\n"));
    let listed = control(&host, r#"{"op":"list"}"#);
    assert!(listed.contains(r#""backend":"127.0.0.1:8000""#), "{listed}");

    // `systemctl stop` frees the port: systemd closes its copy along with the store.
    host.sh_ok("systemctl stop brine-proxy");
    assert_eq!(host.property(PROXY, "Result"), "success");
    assert!(
        !port_8080_listens(&host),
        "{}",
        host.sh_ok("cat /proc/net/tcp")
    );
    let refused = host.sh(REQUEST);
    assert_eq!(
        refused.code,
        7,
        "{}",
        refused.describe("a request to a stopped proxy")
    );

    // Started again, it binds the saved route's port afresh.
    host.sh_ok("systemctl start brine-proxy");
    assert!(host.sh_ok(REQUEST).ends_with("hello\n"));
    let journal = host.journal(&[PROXY]);
    assert!(
        journal
            .lines()
            .any(|l| l.contains("restored route (bound socket)")),
        "{journal}"
    );
    host.sh_ok("systemctl stop brine-test-backend");
}
