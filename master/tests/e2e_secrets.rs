//! End to end: secrets. A container's environment refers to a secret the master keeps
//! (`DB_PASSWORD = { secret = "db" }`); the value reaches the hosts that run the container and
//! nowhere else, a new value replaces exactly those containers, and no command, log, record or
//! file of the master shows it.
//!
//! Needs Docker, Debian's `docker-registry` and `busybox-static`, and the binaries
//! (`cargo build --bins`).

mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use support::{Fleet, docker, highstate_expecting, quoted, status};

/// Runs `brine-master secret set NAME`, the value on standard input as a script would pipe it.
fn set_secret(fleet: &Fleet, name: &str, value: &str) -> String {
    let mut child = fleet
        .master
        .cli(&["secret", "set", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start brine-master secret set");
    child
        .stdin
        .take()
        .expect("a piped stdin")
        .write_all(format!("{value}\n").as_bytes())
        .expect("write the value");
    let output = child.wait_with_output().expect("wait for secret set");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "secret set failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The environment Docker holds for container `docker_name`.
fn environment(docker_name: &str) -> Vec<String> {
    let json = docker(&["inspect", "-f", "{{json .Config.Env}}", docker_name]);
    serde_json::from_str(json.trim()).expect("docker prints the environment as JSON")
}

/// Whether `value` appears anywhere under `dir` (every file, read as bytes).
fn found_under(dir: &std::path::Path, value: &str) -> Vec<String> {
    let mut found = vec![];
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if let Ok(entries) = std::fs::read_dir(&path) {
            pending.extend(entries.flatten().map(|e| e.path()));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(value.len()).any(|w| w == value.as_bytes())
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn a_secret_reaches_only_the_hosts_that_use_it_and_a_new_value_replaces_their_containers() {
    let mut fleet = Fleet::start(&["db", "other"]);
    let (uses, other) = (fleet.minion_id("db"), fleet.minion_id("other"));
    let app = quoted(&fleet.app_v1.reference);
    fleet.master.write_roles(&format!(
        "[roles.api]\nimage = {app}\n[[roles.api.containers]]\nname = \"api\"\n\
         command = [\"/bin/busybox\", \"sleep\", \"3600\"]\n\
         env = {{ MODE = \"production\", DB_PASSWORD = {{ secret = \"db\" }} }}\n\n\
         [roles.worker]\nimage = {app}\n[[roles.worker.containers]]\nname = \"worker\"\n\
         command = [\"/bin/busybox\", \"sleep\", \"3600\"]\n\n\
         [assign]\n{} = [\"api\"]\n{} = [\"worker\"]\n",
        quoted(&uses),
        quoted(&other)
    ));

    // Before the secret is set, the job is refused as a whole and says how to fix it.
    let refused = fleet.master.highstate_run(None);
    assert_eq!(refused.code, 2, "{}", refused.describe());
    assert!(
        format!("{}{}", refused.stdout, refused.stderr).contains("brine-master secret set db"),
        "{}",
        refused.describe()
    );
    assert!(fleet.minion("db").containers().is_empty());

    let first = format!("pw-{}-first", fleet.uniq);
    let said = set_secret(&fleet, "db", &first);
    assert!(said.contains("secret db created"), "{said}");
    assert!(said.contains("api/api"), "{said}");

    let run = highstate_expecting(&fleet, 0);
    assert_eq!(status(&run.json, &uses), "changed", "{}", run.describe());
    let api = format!("{uses}.api");
    let worker = format!("{other}.worker");
    let env = environment(&api);
    assert!(env.contains(&format!("DB_PASSWORD={first}")), "{env:?}");
    assert!(env.contains(&"MODE=production".to_owned()), "{env:?}");
    assert!(
        !environment(&worker).iter().any(|v| v.contains(&first)),
        "the host that runs no container using the secret got it"
    );
    // The host that uses it keeps it (privately) to repair its containers; the other never saw it.
    assert!(
        found_under(&fleet.minion("other").data_dir(), &first).is_empty(),
        "the secret reached a host that does not use it"
    );
    let cached = fleet.minion("db").data_dir().join("desired.json");
    assert!(
        found_under(&cached, &first).len() == 1,
        "{}",
        cached.display()
    );

    // Nothing unchanged is replaced, and nothing the operator reads shows the value.
    let again = highstate_expecting(&fleet, 0);
    assert_eq!(
        status(&again.json, &uses),
        "unchanged",
        "{}",
        again.describe()
    );
    let plan = fleet.master.highstate_run_with(&["--plan"]);
    let job_id = run.json["job_id"].as_str().expect("a job id").to_owned();
    let mut shown = vec![
        run.stdout.clone(),
        again.stdout.clone(),
        plan.stdout.clone(),
    ];
    for args in [
        vec!["jobs", "show", job_id.as_str(), "--output", "json"],
        vec!["secret", "list"],
        vec!["secret", "list", "--output", "json"],
        vec!["minions", "--output", "json"],
    ] {
        let out = fleet.master.cli(&args).output().expect("run brine-master");
        assert!(out.status.success(), "{args:?}: {out:?}");
        shown.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    for text in &shown {
        assert!(
            !text.contains(&first),
            "a command printed the secret: {text}"
        );
    }
    assert!(shown[4].contains("api/api"), "{}", shown[4]);
    // Not in the master's data directory (its store, its log) nor in any daemon's log.
    assert!(
        found_under(&fleet.master.data_dir(), &first).is_empty(),
        "the master keeps the secret in clear: {:?}",
        found_under(&fleet.master.data_dir(), &first)
    );
    for log in [fleet.master.log_path(), fleet.minion("db").log_path()] {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!text.contains(&first), "{} shows the secret", log.display());
    }

    // A new value replaces exactly the containers that use it.
    let second = format!("pw-{}-second", fleet.uniq);
    let said = set_secret(&fleet, "db", &second);
    assert!(said.contains("secret db changed"), "{said}");
    let worker_before = fleet.minion("other").containers();
    let rotated = highstate_expecting(&fleet, 0);
    assert_eq!(
        status(&rotated.json, &uses),
        "changed",
        "{}",
        rotated.describe()
    );
    assert_eq!(
        status(&rotated.json, &other),
        "unchanged",
        "{}",
        rotated.describe()
    );
    let env = environment(&api);
    assert!(env.contains(&format!("DB_PASSWORD={second}")), "{env:?}");
    assert!(!env.iter().any(|v| v.contains(&first)), "{env:?}");
    assert_eq!(
        fleet.minion("other").containers()[0].id,
        worker_before[0].id
    );

    // A secret in use cannot be deleted by accident.
    let delete = fleet
        .master
        .cli(&["secret", "delete", "db"])
        .output()
        .expect("run secret delete");
    assert_eq!(delete.status.code(), Some(2), "{delete:?}");
    assert!(
        String::from_utf8_lossy(&delete.stderr).contains("api/api"),
        "{delete:?}"
    );

    // A minion restarted with its container gone repairs it from what it kept on disk, value
    // included, with no master job.
    let minion = fleet.minion_mut("db");
    minion.stop();
    docker(&["rm", "-f", &api]);
    minion.start_again();
    support::wait_for(
        "the removed container to be repaired",
        Duration::from_secs(60),
        || {
            let seen = fleet.minion("db").containers();
            seen.iter()
                .any(|c| c.name == api && c.state == "running")
                .then_some(())
                .ok_or_else(|| format!("{seen:?}"))
        },
    );
    let env = environment(&api);
    assert!(env.contains(&format!("DB_PASSWORD={second}")), "{env:?}");
}

#[test]
fn a_master_that_lost_its_secrets_key_refuses_to_start_instead_of_making_another() {
    let mut master = support::Master::start();
    let value_file = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(value_file.path(), "kept-sealed").expect("write the value");
    let set = master
        .cli(&[
            "secret",
            "set",
            "db",
            "--from-file",
            &value_file.path().display().to_string(),
        ])
        .output()
        .expect("run secret set");
    assert!(set.status.success(), "{set:?}");
    master.stop();
    let key = master.data_dir().join("secrets.key");
    std::fs::remove_file(&key).expect("remove secrets.key");

    let started = support::run_with_deadline(
        &mut master.cli(&["serve"]),
        Duration::from_secs(30),
        "brine-master serve",
    );
    assert_ne!(started.code, 0, "{}", started.describe("serve"));
    assert!(
        started.stderr.contains("secrets.key is missing"),
        "{}",
        started.describe("serve")
    );
    assert!(
        !key.exists(),
        "a new key was made, which opens none of the secrets"
    );
}
