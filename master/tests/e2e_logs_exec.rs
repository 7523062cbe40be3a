//! End to end: `brine-master logs` and `exec` through a real master and two real minions, over
//! mutual TLS, against the host's Docker engine and containers a highstate started.
//!
//! Needs what `e2e_highstate.rs` needs. Run with
//! `cargo nextest run -p brine-master --test e2e_logs_exec`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Finished, Fleet, docker, highstate_expecting, quoted, run_with_deadline, wait_for};

/// A role `app` with one container that says it started, then ticks every second, on stdout;
/// and `noisy` on host a only, whose container says something on stderr too.
fn roles(fleet: &Fleet, extra: &str) -> String {
    let image = quoted(&fleet.app_v1.reference);
    let ticker = format!(
        "echo started-{}; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done",
        fleet.uniq
    );
    format!(
        "[roles.app]\nimage = {image}\n[[roles.app.containers]]\nname = \"app\"\n\
         command = [\"/bin/busybox\", \"sh\", \"-c\", {}]\n\n{extra}\
         [assign]\n{} = [\"app\"]\n",
        quoted(&ticker),
        quoted(&format!("e2e-{}-*", fleet.uniq)),
    )
}

/// `brine-master ARGS` to its end, within a minute.
fn cli(fleet: &Fleet, args: &[&str]) -> Finished {
    let what = format!("brine-master {}", args.join(" "));
    run_with_deadline(&mut fleet.master.cli(args), Duration::from_secs(60), &what)
}

/// `brine-master exec ARGS -- COMMAND` to its end, within a minute (the harness's connection
/// flags go before the `--`).
fn exec_cli(fleet: &Fleet, args: &[&str], command: &[&str]) -> Finished {
    let what = format!(
        "brine-master exec {} -- {}",
        args.join(" "),
        command.join(" ")
    );
    let mut all = vec!["exec"];
    all.extend(args);
    let mut cli = fleet.master.cli(&all);
    cli.arg("--").args(command);
    run_with_deadline(&mut cli, Duration::from_secs(60), &what)
}

/// The recorded jobs, newest first.
fn jobs(fleet: &Fleet) -> Vec<Value> {
    let listed = cli(fleet, &["jobs", "--output", "json"]);
    assert_eq!(listed.code, 0, "{}", listed.describe("jobs"));
    let jobs: Value = serde_json::from_str(&listed.stdout).expect("jobs as JSON");
    jobs.as_array().expect("a list of jobs").clone()
}

/// Sends SIGINT to `child`, as Ctrl-C does, and waits for it to exit.
fn interrupt(child: &mut Child) {
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -INT {pid}");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait for the CLI").is_some() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the CLI did not exit within 10 s of an interrupt"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn logs_and_exec_reach_the_roles_containers_on_every_host_and_are_recorded() {
    let mut fleet = Fleet::start(&["a", "b"]);
    let (a, b) = (fleet.minion_id("a"), fleet.minion_id("b"));
    fleet.master.write_roles(&roles(&fleet, ""));
    highstate_expecting(&fleet, 0);

    // The last lines of both hosts' logs, each prefixed with its host.
    let shown = wait_for("two ticks on both hosts", Duration::from_secs(20), || {
        let run = cli(&fleet, &["logs", "app", "--tail", "50"]);
        assert_eq!(run.code, 0, "{}", run.describe("logs"));
        let both = [&a, &b]
            .iter()
            .all(|host| run.stdout.contains(&format!("{host} | tick-2")));
        if both {
            Ok(run)
        } else {
            Err(run.describe("logs"))
        }
    });
    for host in [&a, &b] {
        assert!(
            shown
                .stdout
                .contains(&format!("{host} | started-{}", fleet.uniq)),
            "{}",
            shown.describe("logs")
        );
    }
    let short = cli(&fleet, &["logs", "app", "--target", &a, "--tail", "1"]);
    assert_eq!(short.code, 0, "{}", short.describe("logs --tail 1"));
    let lines: Vec<&str> = short.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", short.describe("logs --tail 1"));
    assert!(lines[0].starts_with(&format!("{a} | tick-")), "{lines:?}");

    // Followed: a line written after the call arrives live, and an interrupt ends the call.
    let mut follow = fleet
        .master
        .cli(&["logs", "app", "--target", &b, "--follow", "--tail", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start logs --follow");
    let (lines_seen, lines) = mpsc::channel();
    let stdout = follow.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_seen.send(line).is_err() {
                break;
            }
        }
    });
    let live = lines
        .recv_timeout(Duration::from_secs(15))
        .expect("a new line within 15 s");
    assert!(live.starts_with(&format!("{b} | tick-")), "{live}");
    let second = lines
        .recv_timeout(Duration::from_secs(5))
        .expect("another line a second later");
    assert_ne!(live, second, "lines come as they are written");
    interrupt(&mut follow);
    // The master saw the caller go: the followed logs are recorded as ended, not running.
    wait_for(
        "the followed logs recorded",
        Duration::from_secs(10),
        || {
            let recorded = jobs(&fleet);
            let followed = recorded.iter().find(|job| {
                job["kind"] == "logs"
                    && job["command"]
                        .as_str()
                        .is_some_and(|c| c.contains("--follow"))
            });
            match followed {
                Some(job) if job["running"] == false && job["success"] == true => Ok(()),
                _ => Err(format!("{recorded:#?}")),
            }
        },
    );

    let minion_log = fleet.minion("b").log_path();
    wait_for(
        "the session stopped on the host",
        Duration::from_secs(10),
        || {
            let log = std::fs::read_to_string(&minion_log).unwrap_or_default();
            if log.contains("session stopped by the master") {
                Ok(())
            } else {
                Err(support::tail(&minion_log, 10))
            }
        },
    );

    // A command that outlives its timeout is no longer waited for.
    let slow = exec_cli(
        &fleet,
        &["app", "--target", &a, "--timeout", "1s"],
        &["/bin/busybox", "sleep", "30"],
    );
    assert_eq!(slow.code, 1, "{}", slow.describe("exec --timeout 1s"));
    assert!(
        slow.stderr
            .contains(&format!("{a} | error: timed out after 1s")),
        "{}",
        slow.describe("exec --timeout 1s")
    );
    assert!(slow.elapsed < Duration::from_secs(15), "{:?}", slow.elapsed);

    // A command on both hosts: each host's output and exit status; the exit code says one failed.
    let run = exec_cli(
        &fleet,
        &["app"],
        &["/bin/busybox", "sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    assert_eq!(run.code, 1, "{}", run.describe("exec"));
    for host in [&a, &b] {
        assert!(
            run.stdout.contains(&format!("{host} | out")),
            "{}",
            run.describe("exec")
        );
        assert!(
            run.stdout.contains(&format!("{host} | exit 3")),
            "{}",
            run.describe("exec")
        );
        assert!(
            run.stderr.contains(&format!("{host} | err")),
            "{}",
            run.describe("exec")
        );
    }
    let ok = exec_cli(
        &fleet,
        &["app", "--output", "json"],
        &["/bin/busybox", "true"],
    );
    assert_eq!(ok.code, 0, "{}", ok.describe("exec true"));
    let document: Value = serde_json::from_str(&ok.stdout).expect("exec --output json");
    assert_eq!(document["success"], true, "{document:#}");
    assert_eq!(
        document["hosts"].as_array().map(Vec::len),
        Some(2),
        "{document:#}"
    );

    // Output over the cap (1 MiB a container) is cut, and said to be.
    let flood = "i=0; while [ $i -lt 40000 ]; do echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done";
    let capped = exec_cli(
        &fleet,
        &["app", "--target", &a, "--output", "json"],
        &["/bin/busybox", "sh", "-c", flood],
    );
    assert_eq!(capped.code, 0, "{}", capped.describe("exec flood"));
    let document: Value = serde_json::from_str(&capped.stdout).expect("exec --output json");
    let host = &document["hosts"][0];
    assert_eq!(host["truncated"], true, "{}", capped.describe("exec flood"));
    let kept = host["stdout"].as_str().map(str::len).unwrap_or_default();
    assert_eq!(kept, 1024 * 1024, "exactly the cap is kept");
    let text = exec_cli(
        &fleet,
        &["app", "--target", &a],
        &["/bin/busybox", "sh", "-c", flood],
    );
    assert!(
        text.stderr
            .contains(&format!("{a} | … output over the cap left out")),
        "{}",
        text.stderr
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // A container the role does not declare is refused before any host is asked...
    let other = exec_cli(&fleet, &["app/db"], &["/bin/busybox", "true"]);
    assert_eq!(other.code, 2, "{}", other.describe("exec app/db"));
    assert!(
        other.stderr.contains("declares no container db"),
        "{}",
        other.stderr
    );
    // ...and a container brine did not create, even under the Docker name brine would give
    // the declared one, is not reached.
    let extra = "[roles.extra]\nimage = ".to_owned()
        + &quoted(&fleet.app_v1.reference)
        + "\n[[roles.extra.containers]]\nname = \"extra\"\n\n";
    let mut with_extra = roles(&fleet, &extra);
    with_extra.push_str(&format!("{} = [\"extra\"]\n", quoted(&a)));
    fleet.master.write_roles(&with_extra);
    let impostor = format!("{a}.extra");
    docker(&["pull", "-q", &fleet.app_v1.reference]);
    docker(&["run", "-d", "--name", &impostor, &fleet.app_v1.reference]);
    let refused = exec_cli(&fleet, &["extra"], &["/bin/busybox", "echo", "reached"]);
    let _ = docker(&["rm", "-f", &impostor]);
    assert_eq!(refused.code, 1, "{}", refused.describe("exec extra"));
    assert!(
        !refused.stdout.contains("reached"),
        "{}",
        refused.describe("exec extra")
    );
    assert!(
        refused
            .stderr
            .contains("no container extra of role extra that brine manages"),
        "{}",
        refused.describe("exec extra")
    );

    // Every call is in the job history, with who ran it, what and each host's outcome.
    let recorded = jobs(&fleet);
    let exec = recorded
        .iter()
        .find(|job| {
            job["kind"] == "exec"
                && job["command"]
                    .as_str()
                    .is_some_and(|c| c.contains("exit 3"))
        })
        .unwrap_or_else(|| panic!("no exec job recorded: {recorded:#?}"));
    assert!(
        exec["caller"].as_str().is_some_and(|c| c.contains("admin")),
        "{exec:#}"
    );
    assert_eq!(exec["counts"]["failed"], 2, "{exec:#}");
    let id = exec["job_id"].as_str().expect("a job id");
    let shown = cli(&fleet, &["jobs", "show", id]);
    assert!(
        shown.stdout.contains("exit 3"),
        "{}",
        shown.describe("jobs show")
    );
    let table = cli(&fleet, &["jobs"]);
    assert!(
        table
            .stdout
            .lines()
            .any(|line| line.contains(id) && line.contains("exec")),
        "{}",
        table.describe("jobs")
    );

    // A CI certificate may not read logs or run commands.
    let certs = tempfile::tempdir().expect("a temp dir");
    let out = certs.path().to_str().expect("a UTF-8 temp path");
    let issued = cli(&fleet, &["cert", "issue", "--ci", "pipeline", "--out", out]);
    assert_eq!(issued.code, 0, "{}", issued.describe("cert issue"));
    let ci_cert = format!("{out}/pipeline.pem");
    let ci_key = format!("{out}/pipeline.key");
    let as_ci = ["--cert", &ci_cert, "--key", &ci_key];
    let mut ci_exec = fleet.master.cli(&[&as_ci[..], &["exec", "app"]].concat());
    ci_exec.args(["--", "/bin/busybox", "true"]);
    let ci_logs = fleet.master.cli(&[&as_ci[..], &["logs", "app"]].concat());
    for (mut command, what) in [(ci_exec, "exec as ci"), (ci_logs, "logs as ci")] {
        let refused = run_with_deadline(&mut command, Duration::from_secs(60), what);
        assert_eq!(refused.code, 2, "{}", refused.describe(what));
        assert!(
            refused.stderr.contains("with the ci role may not call"),
            "{}",
            refused.describe(what)
        );
    }

    // A host that is not linked is reported, not skipped.
    fleet.minion_mut("b").stop();
    fleet.minion("b").wait_disconnected(&fleet.master);
    let partial = exec_cli(&fleet, &["app"], &["/bin/busybox", "echo", "hello"]);
    assert_eq!(partial.code, 1, "{}", partial.describe("exec without b"));
    assert!(
        partial.stdout.contains(&format!("{a} | hello")),
        "{}",
        partial.describe("exec")
    );
    assert!(
        partial
            .stderr
            .contains(&format!("{b} | error: unreachable")),
        "{}",
        partial.describe("exec without b")
    );
}
