//! End to end: a job outlives a dropped link (the minion finishes, reconnects with jitter and
//! reports on its new link, and the highstate counts that report), and a master that stops
//! mid-job marks the hosts that had not reported `interrupted` when it starts again.
//!
//! Needs Docker, Debian's `docker-registry` and `busybox-static`, and the binaries.

mod support;

use std::time::Duration;

use support::{Fleet, Minion, TcpProxy, containers, quoted, run_with_deadline, tail, wait_for};

#[test]
fn a_result_made_while_the_link_was_down_arrives_on_the_next_one() {
    let mut fleet = Fleet::start(&[]);
    let id = fleet.minion_id("a");
    let proxy = TcpProxy::start(&fleet.master.address());
    let mut minion = Minion::start_with(
        &fleet.master,
        &id,
        &[],
        &[("BRINE_MINION_MASTER", &proxy.address())],
        "",
    );
    minion.wait_connected(&fleet.master);
    fleet.minions.push(minion);
    // Slow enough to cut the link while the host waits for its container to be healthy.
    fleet.master.write_roles(&format!(
        "[roles.web]\nimage = {}\n[[roles.web.containers]]\nname = \"web\"\n\
         command = [\"/bin/busybox\", \"sleep\", \"3600\"]\n\
         health = {{ min_healthy = \"4s\", deadline = \"60s\" }}\n\n\
         [assign]\n{} = [\"web\"]\n",
        quoted(&fleet.app_v1.reference),
        quoted(&id)
    ));

    let run = std::thread::scope(|scope| {
        let highstate = scope.spawn(|| fleet.master.highstate_run(None));
        wait_for(
            "the container to start (the job is under way)",
            Duration::from_secs(30),
            || match containers(&id).first() {
                Some(c) if c.state == "running" => Ok(()),
                _ => Err("not yet".into()),
            },
        );
        proxy.cut();
        highstate.join().expect("the highstate thread")
    });
    let log = fleet.minions[0].log_path();
    assert_eq!(
        run.code,
        0,
        "{}\nminion log:\n{}",
        run.describe(),
        tail(&log, 30)
    );
    assert_eq!(
        run.json["hosts"][0]["status"],
        "changed",
        "{}",
        run.describe()
    );
    let connections = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("brine_minion::link: connected")
        .count();
    assert!(
        connections >= 2,
        "the link was not cut:\n{}",
        tail(&log, 30)
    );
}

#[test]
fn a_master_restart_mid_job_marks_the_unreported_hosts_interrupted() {
    let mut fleet = Fleet::start(&["a"]);
    let id = fleet.minion_id("a");
    fleet.master.write_roles(&format!(
        "[roles.web]\nimage = {}\n[[roles.web.containers]]\nname = \"web\"\n\
         command = [\"/bin/busybox\", \"sleep\", \"3600\"]\n\
         health = {{ min_healthy = \"20s\", deadline = \"60s\" }}\n\n\
         [assign]\n{} = [\"web\"]\n",
        quoted(&fleet.app_v1.reference),
        quoted(&id)
    ));
    let mut highstate = fleet
        .master
        .cli(&["highstate", "--output", "json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start a highstate");
    wait_for(
        "the container to start (the job is under way)",
        Duration::from_secs(30),
        || match containers(&id).first() {
            Some(c) if c.state == "running" => Ok(()),
            _ => Err("not yet".into()),
        },
    );
    let job_id = highstate_job_id(&fleet);
    fleet.master.stop();
    let cut_short = highstate
        .wait()
        .expect("the highstate ends with its master");
    assert!(!cut_short.success(), "{cut_short}");

    fleet.master.start_again();
    let shown = run_with_deadline(
        &mut fleet
            .master
            .cli(&["jobs", "show", &job_id, "--output", "json"]),
        Duration::from_secs(20),
        "brine-master jobs show",
    );
    assert_eq!(shown.code, 0, "{}", shown.describe("jobs show"));
    let job: serde_json::Value = serde_json::from_str(&shown.stdout).expect("JSON");
    assert_eq!(job["running"], false, "{job:#}");
    assert_eq!(job["success"], false, "{job:#}");
    assert_eq!(job["hosts"][0]["minion_id"], id.as_str(), "{job:#}");
    assert_eq!(job["hosts"][0]["status"], "interrupted", "{job:#}");
    let lock = run_with_deadline(
        &mut fleet.master.cli(&["lock", "status"]),
        Duration::from_secs(20),
        "brine-master lock status",
    );
    assert!(
        lock.stdout.contains("unlocked"),
        "{}",
        lock.describe("lock status")
    );
}

/// The id of the newest job, as `jobs` lists it (the running one).
fn highstate_job_id(fleet: &Fleet) -> String {
    wait_for("the job to be listed", Duration::from_secs(20), || {
        let listed = run_with_deadline(
            &mut fleet.master.cli(&["jobs", "--output", "json"]),
            Duration::from_secs(20),
            "brine-master jobs",
        );
        let jobs: serde_json::Value =
            serde_json::from_str(&listed.stdout).map_err(|err| err.to_string())?;
        match &jobs[0] {
            job if job["running"] == true => {
                Ok(job["job_id"].as_str().unwrap_or_default().to_owned())
            }
            other => Err(format!("no running job: {other}")),
        }
    })
}
