//! End to end: masters whose fleet is kept in a real three-member etcd cluster (Debian's
//! `etcd`), real minions, a local registry and the host's Docker engine.
//!
//! Needs what `e2e_highstate` needs, and Debian's etcd-server and etcd-client.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::etcd::EtcdCluster;
use support::{Images, Master, Minion, Registry, quoted, run_with_deadline, status, unique_id};

/// A role `web` running `image`, assigned to `host`.
fn web_role(image: &str, host: &str) -> String {
    format!(
        "[roles.web]\nimage = {}\n[[roles.web.containers]]\nname = \"web\"\n\
         command = [\"/bin/busybox\", \"sleep\", \"3600\"]\n\n[assign]\n{} = [\"web\"]\n",
        quoted(image),
        quoted(host)
    )
}

/// `brine-master ARGS --output json` on `master`, which must succeed.
fn json(master: &Master, args: &[&str]) -> Value {
    let what = format!("brine-master {}", args.join(" "));
    let finished = run_with_deadline(
        master.cli(args).args(["--output", "json"]),
        Duration::from_secs(30),
        &what,
    );
    assert_eq!(finished.code, 0, "{}", finished.describe(&what));
    serde_json::from_str(&finished.stdout)
        .unwrap_or_else(|err| panic!("{what} printed no JSON ({err}): {}", finished.stdout))
}

/// `brine-master ARGS` on `master`, which must succeed; its standard output.
fn text(master: &Master, args: &[&str]) -> String {
    let what = format!("brine-master {}", args.join(" "));
    let finished = run_with_deadline(&mut master.cli(args), Duration::from_secs(30), &what);
    assert_eq!(finished.code, 0, "{}", finished.describe(&what));
    finished.stdout
}

fn job_ids(master: &Master) -> Vec<String> {
    json(master, &["jobs"])
        .as_array()
        .expect("jobs prints an array")
        .iter()
        .filter_map(|job| job["job_id"].as_str().map(str::to_owned))
        .collect()
}

/// What every test here stands on: an etcd cluster, a fleet prefix of the test's own in it, a
/// registry, and a unique id for names.
struct Bed {
    etcd: EtcdCluster,
    prefix: String,
    uniq: String,
    registry: Registry,
}

impl Bed {
    fn new(members: usize) -> Self {
        Self {
            etcd: EtcdCluster::start(members),
            prefix: format!("/brine-e2e/{}/", unique_id()),
            uniq: unique_id(),
            registry: Registry::start(),
        }
    }

    /// Two masters of one fleet: the first creates it, the second joins with a copy of its CA.
    fn two_masters(&self) -> (Master, Master) {
        let first = Master::start_on_etcd(&self.etcd.endpoint_list(), &self.prefix, None);
        let second = Master::start_on_etcd(&self.etcd.endpoint_list(), &self.prefix, Some(&first));
        (first, second)
    }
}

/// Waits until `minion` was told of `master` (at its join, or on a link once its master read
/// the other's announcement) and keeps it on disk.
fn wait_knows(minion: &Minion, master: &Master) {
    let masters_file = minion.data_dir().join("masters.json");
    support::wait_for(
        "the minion to know the other master",
        Duration::from_secs(15),
        || {
            let known = std::fs::read_to_string(&masters_file).unwrap_or_default();
            if known.contains(&master.address()) {
                Ok(())
            } else {
                Err(format!("masters.json: {known:?}"))
            }
        },
    );
}

#[test]
fn a_fleet_in_etcd_is_served_by_every_master_with_its_ca_and_outlives_a_member_and_a_restart() {
    let Bed {
        mut etcd,
        prefix,
        uniq,
        registry,
    } = Bed::new(3);
    let endpoints = etcd.endpoint_list();
    let mut images = Images::new(&registry, &uniq);
    let app = images.push_variant("app", 1);

    let mut first = Master::start_on_etcd(&endpoints, &prefix, None);
    assert!(
        !first.data_dir().join("state.redb").exists(),
        "a master on etcd keeps nothing of the fleet on its disk"
    );
    let host = format!("e2e-{uniq}-web");
    let mut minion = Minion::start(&first, &host);
    minion.wait_connected(&first);
    // The fleet's roles file is in etcd: a new fleet starts with the example (version 1); the
    // web role is applied as version 2, with the change shown.
    let roles = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(roles.path(), web_role(&app.reference, &host)).expect("write roles");
    let applied = text(
        &first,
        &["roles", "apply", &roles.path().display().to_string()],
    );
    assert!(
        applied.contains("applied roles version 2, replacing version 1")
            && applied.contains("+[roles.web]"),
        "{applied}"
    );
    assert!(
        !first.roles_path().exists(),
        "a master on etcd has no roles.toml"
    );
    let run = first.highstate_run(None);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(status(&run.json, &host), "changed", "{:#}", run.json);
    let job = run.json["job_id"].as_str().expect("a job id").to_owned();

    // A second master, set up with a copy of the first one's CA, serves the same fleet: the
    // host enrolled through the first, the job run by the first.
    let second = Master::start_on_etcd(&endpoints, &prefix, Some(&first));
    let listed = json(&second, &["minions"]);
    assert!(
        listed
            .as_array()
            .expect("minions prints an array")
            .iter()
            .any(|m| m["id"] == host.as_str()),
        "{listed:#}"
    );
    assert_eq!(job_ids(&second), [job.as_str()]);
    let shown = json(&second, &["jobs", "show", &job]);
    assert_eq!(status(&shown, &host), "changed", "{shown:#}");
    // ...and the same roles file.
    assert_eq!(
        text(&second, &["roles", "show"]),
        web_role(&app.reference, &host)
    );
    let history = json(&second, &["roles", "history"]);
    assert_eq!(history[0]["version"], 2, "{history:#}");
    assert_eq!(history[1]["applied_by"], "brine-master init", "{history:#}");

    // A master with a CA of its own is refused by the fleet, and writes nothing.
    let stranger = tempfile::tempdir().expect("a temp dir");
    let data = stranger.path().join("data");
    let what = "brine-master init with a CA of its own";
    let init = run_with_deadline(
        std::process::Command::new(support::master_binary())
            .args(["init", "--data-dir"])
            .arg(&data)
            .args(["--etcd", &endpoints, "--etcd-prefix", &prefix]),
        Duration::from_secs(30),
        what,
    );
    assert_ne!(init.code, 0, "{}", init.describe(what));
    assert!(
        init.stderr.contains("holds a fleet under"),
        "{}",
        init.describe(what)
    );
    assert!(!data.join("ca.pem").exists() && !data.join("master.toml").exists());

    // A host revoked through the second master loses its link to the first at once.
    let other = format!("e2e-{uniq}-db");
    let mut revoked = Minion::start(&first, &other);
    revoked.wait_connected(&first);
    let what = "brine-master minions revoke through the second master";
    let revoke = run_with_deadline(
        &mut second.cli(&["minions", "revoke", &other, "--yes"]),
        Duration::from_secs(30),
        what,
    );
    assert_eq!(revoke.code, 0, "{}", revoke.describe(what));
    revoked.wait_disconnected(&first);

    // The member that leads the cluster goes: nobody notices.
    let leader = etcd.leader();
    etcd.kill(leader);
    let run = first.highstate_run(None);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(status(&run.json, &host), "unchanged", "{:#}", run.json);

    // The first master starts again: its hosts and jobs are in etcd, not on its disk. Its host
    // links again, to the second master (which it was told of) or to the first once it is back.
    first.start_again();
    assert_eq!(job_ids(&first).len(), 2);
    let holder = support::wait_for(
        "the host to link to one of the masters again",
        Duration::from_secs(20),
        || {
            if second.connected(&host) == Some(true) {
                Ok(&second)
            } else if first.connected(&host) == Some(true) {
                Ok(&first)
            } else {
                Err("linked to neither".to_owned())
            }
        },
    );
    eprintln!(
        "the host linked again to the {} master",
        if std::ptr::eq(holder, &second) {
            "second"
        } else {
            "first"
        }
    );
    let run = holder.highstate_run(None);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(status(&run.json, &host), "unchanged", "{:#}", run.json);
}

#[test]
fn a_host_whose_master_dies_links_to_another_within_seconds_and_deploys_through_it() {
    let bed = Bed::new(3);
    let uniq = &bed.uniq;
    let mut images = Images::new(&bed.registry, uniq);
    let app = images.push_variant("app", 1);
    let (mut first, second) = bed.two_masters();
    let host = format!("e2e-{uniq}-web");
    let mut minion = Minion::start(&first, &host);
    minion.wait_connected(&first);
    // The minion hears of both masters and keeps them on disk.
    wait_knows(&minion, &second);

    // The first master dies at once; the host links to the second.
    let killed = std::time::Instant::now();
    first.kill();
    minion.wait_connected(&second);
    let failover = killed.elapsed();
    eprintln!("host failover: {failover:?}");
    assert!(
        failover < Duration::from_secs(10),
        "the host took {failover:?} to link to the other master"
    );

    // A deploy through the second master reaches it, with the roles kept in etcd.
    let roles = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(roles.path(), web_role(&app.reference, &host)).expect("write roles");
    text(
        &second,
        &["roles", "apply", &roles.path().display().to_string()],
    );
    let run = second.highstate_run(None);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(status(&run.json, &host), "changed", "{:#}", run.json);
}

/// `brine-master minions --output json` on `master`: the name of the master holding each
/// listed host's link.
fn linked_to(master: &Master, host: &str) -> Value {
    json(master, &["minions"])
        .as_array()
        .expect("minions prints an array")
        .iter()
        .find(|m| m["id"] == host)
        .map(|m| m["linked_to"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn a_job_on_one_master_reaches_the_hosts_linked_to_another_and_each_reports_once() {
    let bed = Bed::new(3);
    let uniq = &bed.uniq;
    let mut images = Images::new(&bed.registry, uniq);
    let v1 = images.push_variant("app", 1);
    let (first, second) = bed.two_masters();
    // One host joins (and links) through each master.
    let near = format!("e2e-{uniq}-near");
    let far = format!("e2e-{uniq}-far");
    let mut near_minion = Minion::start(&first, &near);
    let mut far_minion = Minion::start(&second, &far);
    near_minion.wait_connected(&first);
    far_minion.wait_connected(&second);
    // Every master shows every host linked, and to which master.
    for master in [&first, &second] {
        support::wait_for(
            "every master to show which master holds each link",
            Duration::from_secs(10),
            || {
                let seen = (linked_to(master, &near), linked_to(master, &far));
                if seen.0 == first.name().as_str() && seen.1 == second.name().as_str() {
                    Ok(())
                } else {
                    Err(format!("{seen:?}"))
                }
            },
        );
    }

    let roles = |image: &str| {
        format!(
            "[roles.web]\nimage = {}\n[[roles.web.containers]]\nname = \"web\"\n\
             command = [\"/bin/busybox\", \"sleep\", \"3600\"]\n\n[assign]\n{} = [\"web\"]\n{} = [\"web\"]\n",
            quoted(image),
            quoted(&near),
            quoted(&far)
        )
    };
    let file = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(file.path(), roles(&v1.reference)).expect("write roles");
    text(
        &first,
        &["roles", "apply", &file.path().display().to_string()],
    );

    // A highstate through the first master deploys to both hosts; the far one's command and
    // result go through the second master.
    let run = first.highstate_run(None);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(status(&run.json, &near), "changed", "{:#}", run.json);
    assert_eq!(status(&run.json, &far), "changed", "{:#}", run.json);
    let hosts = run.json["hosts"].as_array().expect("hosts");
    assert_eq!(
        hosts.len(),
        2,
        "each host reports exactly once: {:#}",
        run.json
    );
    let runs = |minion: &Minion| -> Vec<String> {
        minion
            .containers()
            .into_iter()
            .filter(|c| c.state == "running")
            .map(|c| c.image_id)
            .collect()
    };
    assert_eq!(runs(&far_minion), [v1.id.as_str()]);

    // A new image, rolled out in batches of one through the second master: the near host,
    // linked to the first, is reached the same way; the job's record is the same through both
    // masters.
    let v2 = images.push_variant("app", 2);
    std::fs::write(file.path(), roles(&v2.reference)).expect("write roles");
    text(
        &second,
        &["roles", "apply", &file.path().display().to_string()],
    );
    let run = second.highstate_run_with(&["--batch", "1"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(status(&run.json, &near), "changed", "{:#}", run.json);
    assert_eq!(status(&run.json, &far), "changed", "{:#}", run.json);
    let job = run.json["job_id"].as_str().expect("a job id");
    let shown = json(&first, &["jobs", "show", job]);
    assert_eq!(status(&shown, &near), "changed", "{shown:#}");
    assert_eq!(status(&shown, &far), "changed", "{shown:#}");
    assert_eq!(runs(&near_minion), [v2.id.as_str()]);
    assert_eq!(runs(&far_minion), [v2.id.as_str()]);
}

#[test]
fn a_rollout_whose_master_is_killed_mid_batch_is_finished_by_another_and_each_host_reports_once() {
    let bed = Bed::new(3);
    let uniq = &bed.uniq;
    let mut images = Images::new(&bed.registry, uniq);
    let app = images.push_variant("app", 1);
    let (mut first, second) = bed.two_masters();
    // Five hosts, linked to both masters.
    let hosts: Vec<String> = (1..=5).map(|n| format!("e2e-{uniq}-h{n}")).collect();
    let mut minions: Vec<Minion> = hosts
        .iter()
        .enumerate()
        .map(|(n, host)| Minion::start(if n % 2 == 0 { &first } else { &second }, host))
        .collect();
    for (n, minion) in minions.iter_mut().enumerate() {
        minion.wait_connected(if n % 2 == 0 { &first } else { &second });
    }
    let assign: String = hosts
        .iter()
        .map(|host| format!("{} = [\"web\"]\n", quoted(host)))
        .collect();
    let roles = format!(
        "[roles.web]\nimage = {}\n[[roles.web.containers]]\nname = \"web\"\n\
         command = [\"/bin/busybox\", \"sleep\", \"3600\"]\n\n[assign]\n{assign}",
        quoted(&app.reference)
    );
    let file = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(file.path(), roles).expect("write roles");
    text(
        &first,
        &["roles", "apply", &file.path().display().to_string()],
    );

    // A rollout of five batches through the first master, which is killed once two hosts
    // reported: in the middle of the third batch.
    let mut follower = first.start_highstate(&["--batch", "1", "--timeout", "60s"]);
    let job = support::wait_for(
        "the rollout to have two hosts reported",
        Duration::from_secs(60),
        || {
            let Some(job) = job_ids(&second).first().cloned() else {
                return Err("no job yet".to_owned());
            };
            let shown = json(&second, &["jobs", "show", &job]);
            let reported = shown["hosts"].as_array().map_or(0, Vec::len);
            if reported >= 2 {
                Ok(job)
            } else {
                Err(format!("{reported} reported"))
            }
        },
    );
    let killed = std::time::Instant::now();
    first.kill();
    let _ = follower.kill();
    let _ = follower.wait();

    // The second master takes the job over and finishes it.
    support::wait_for(
        "the second master to take the job over",
        Duration::from_secs(30),
        || {
            let log = std::fs::read_to_string(second.log_path()).unwrap_or_default();
            if log.contains("taking over a job whose master stopped") {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        },
    );
    let takeover = killed.elapsed();
    let shown = support::wait_for(
        "the job to finish on the second master",
        Duration::from_secs(90),
        || {
            let shown = json(&second, &["jobs", "show", &job]);
            if shown["running"] == false {
                Ok(shown)
            } else {
                Err(format!("{shown}"))
            }
        },
    );
    let finished = killed.elapsed();
    eprintln!("job takeover: {takeover:?}; rollout finished {finished:?} after the kill");
    let reports = shown["hosts"].as_array().expect("hosts");
    assert_eq!(reports.len(), hosts.len(), "each host once: {shown:#}");
    for host in &hosts {
        assert_eq!(status(&shown, host), "changed", "{shown:#}");
    }
    // No host applied the job twice, and each runs the new container.
    for minion in &minions {
        let log = std::fs::read_to_string(minion.log_path()).unwrap_or_default();
        let applied = log
            .lines()
            .filter(|line| line.contains(job.as_str()) && line.contains(" applied status="))
            .count();
        assert_eq!(
            applied,
            1,
            "{} applied the job {applied} times:\n{log}",
            minion.id()
        );
        let running: Vec<String> = minion
            .containers()
            .into_iter()
            .filter(|c| c.state == "running")
            .map(|c| c.image_id)
            .collect();
        assert_eq!(running, [app.id.as_str()], "{}", minion.id());
    }
    // The fleet lock went with the job.
    let lock = text(&second, &["lock", "status"]);
    assert!(!lock.contains(&job), "{lock}");
}

#[test]
fn a_master_cut_off_from_etcd_stops_serving_and_its_hosts_move_to_another() {
    let Bed {
        etcd,
        prefix,
        uniq,
        registry,
    } = Bed::new(3);
    let mut images = Images::new(&registry, &uniq);
    let app = images.push_variant("app", 1);
    // The first master reaches etcd only through paths the test can cut.
    let paths: Vec<support::TcpProxy> = etcd
        .endpoints()
        .iter()
        .map(|url| support::TcpProxy::start(url.trim_start_matches("http://")))
        .collect();
    let through_paths = paths
        .iter()
        .map(|path| format!("http://{}", path.address()))
        .collect::<Vec<_>>()
        .join(",");
    let first = Master::start_on_etcd(&through_paths, &prefix, None);
    let second = Master::start_on_etcd(&etcd.endpoint_list(), &prefix, Some(&first));
    let host = format!("e2e-{uniq}-web");
    let mut minion = Minion::start(&first, &host);
    minion.wait_connected(&first);
    wait_knows(&minion, &second);
    let roles = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(roles.path(), web_role(&app.reference, &host)).expect("write roles");
    text(
        &second,
        &["roles", "apply", &roles.path().display().to_string()],
    );

    // Cut off: the first master lets its host go once its lease would run out, and the host
    // links to the second, which deploys to it.
    let cut = std::time::Instant::now();
    for path in &paths {
        path.partition();
    }
    minion.wait_connected(&second);
    let moved = cut.elapsed();
    eprintln!("host moved {moved:?} after its master was cut off from etcd");
    let log = std::fs::read_to_string(first.log_path()).unwrap_or_default();
    assert!(
        log.contains("its jobs stop here") && log.contains("ended every link"),
        "the cut-off master did not stop:\n{log}"
    );
    let run = second.highstate_run(None);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(status(&run.json, &host), "changed", "{:#}", run.json);

    // Back in touch, the first master holds a lease again and serves as before.
    for path in &paths {
        path.heal();
    }
    support::wait_for(
        "the first master to hold a lease again",
        Duration::from_secs(30),
        || {
            let log = std::fs::read_to_string(first.log_path()).unwrap_or_default();
            let leases = log
                .matches("holding this master's jobs under a lease")
                .count();
            if leases >= 2 {
                Ok(())
            } else {
                Err(format!("{leases} leases taken"))
            }
        },
    );
    // ...and sees again, within a second or two, which master holds each link.
    support::wait_for(
        "the first master to show the host linked to the second",
        Duration::from_secs(10),
        || match linked_to(&first, &host) {
            held if held == second.name().as_str() => Ok(()),
            held => Err(format!("linked to {held}")),
        },
    );
}

#[test]
fn a_master_alone_with_its_store_moves_to_etcd_with_its_whole_fleet() {
    let Bed {
        etcd,
        prefix,
        uniq,
        registry,
    } = Bed::new(1);
    let mut images = Images::new(&registry, &uniq);
    let app = images.push_variant("app", 1);
    let mut master = Master::start();
    let host = format!("e2e-{uniq}-web");
    let mut minion = Minion::start(&master, &host);
    minion.wait_connected(&master);
    master.write_roles(&web_role(&app.reference, &host));
    let run = master.highstate_run(None);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let job = run.json["job_id"].as_str().expect("a job id").to_owned();
    text(&master, &["token", "create", "--uses", "3"]);
    let token_ids = |master: &Master| -> Vec<String> {
        text(master, &["token", "list"])
            .lines()
            .skip(1)
            .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
            .collect()
    };
    let tokens_before = token_ids(&master);
    assert!(!tokens_before.is_empty());

    // A secret, which moves sealed and opens with the same key afterwards.
    let value_file = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(value_file.path(), "moved-sealed").expect("write the value");
    text(
        &master,
        &[
            "secret",
            "set",
            "db",
            "--from-file",
            &value_file.path().display().to_string(),
        ],
    );
    let secrets_before = json(&master, &["secret", "list"]);

    // Moved, as the README says: stop, migrate, start.
    master.stop();
    let what = "brine-master store migrate";
    let migrate = |master: &Master| {
        run_with_deadline(
            &mut master.cli(&[
                "store",
                "migrate",
                "--to",
                "etcd",
                &etcd.endpoint_list(),
                "--etcd-prefix",
                &prefix,
            ]),
            Duration::from_secs(60),
            what,
        )
    };
    let moved = migrate(&master);
    assert_eq!(moved.code, 0, "{}", moved.describe(what));
    assert!(
        moved.stdout.contains("1 hosts")
            && moved.stdout.contains("1 jobs")
            && moved.stdout.contains("1 secrets"),
        "{}",
        moved.describe(what)
    );
    assert!(master.data_dir().join("state.redb.migrated").exists());
    assert!(!master.data_dir().join("state.redb").exists());
    master.start_again();
    minion.wait_connected(&master);

    // Everything came along: the host, its job, the release, the tokens, the roles file.
    assert_eq!(job_ids(&master), [job.as_str()]);
    let shown = json(&master, &["jobs", "show", &job]);
    assert_eq!(status(&shown, &host), "changed", "{shown:#}");
    let releases = json(&master, &["releases"]);
    assert_eq!(releases.as_array().map(Vec::len), Some(1), "{releases:#}");
    assert_eq!(token_ids(&master), tokens_before);
    assert_eq!(json(&master, &["secret", "list"]), secrets_before);
    assert_eq!(
        text(&master, &["roles", "show"]),
        web_role(&app.reference, &host)
    );
    let run = master.highstate_run(None);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(status(&run.json, &host), "unchanged", "{:#}", run.json);

    // A second master joins the moved fleet; a second migration is refused.
    let second = Master::start_on_etcd(&etcd.endpoint_list(), &prefix, Some(&master));
    let listed = json(&second, &["minions"]);
    assert!(
        listed
            .as_array()
            .expect("an array")
            .iter()
            .any(|m| m["id"] == host.as_str()),
        "{listed:#}"
    );
    let again = migrate(&master);
    assert_ne!(again.code, 0, "{}", again.describe(what));
    assert!(
        again.stderr.contains("in etcd already"),
        "{}",
        again.describe(what)
    );
}

#[test]
fn a_secret_set_through_one_master_reaches_a_host_linked_to_another() {
    let bed = Bed::new(1);
    let uniq = &bed.uniq;
    let mut images = Images::new(&bed.registry, uniq);
    let v1 = images.push_variant("app", 1);
    let (first, second) = bed.two_masters();
    let far = format!("e2e-{uniq}-far");
    let mut far_minion = Minion::start(&second, &far);
    far_minion.wait_connected(&second);
    support::wait_for(
        "the first master to see the host linked to the second",
        Duration::from_secs(10),
        || {
            let seen = linked_to(&first, &far);
            (seen == second.name().as_str())
                .then_some(())
                .ok_or_else(|| format!("{seen:?}"))
        },
    );
    let file = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(
        file.path(),
        format!(
            "[roles.web]\nimage = {}\n[[roles.web.containers]]\nname = \"web\"\n\
             command = [\"/bin/busybox\", \"sleep\", \"3600\"]\n\
             env = {{ DB_PASSWORD = {{ secret = \"db\" }} }}\n\n[assign]\n{} = [\"web\"]\n",
            quoted(&v1.reference),
            quoted(&far)
        ),
    )
    .expect("write roles");
    text(
        &first,
        &["roles", "apply", &file.path().display().to_string()],
    );
    let value = format!("pw-{uniq}");
    let value_file = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(value_file.path(), &value).expect("write the value");
    text(
        &first,
        &[
            "secret",
            "set",
            "db",
            "--from-file",
            &value_file.path().display().to_string(),
        ],
    );

    // The job runs on the first master; the second, which holds the link and a copy of the
    // fleet's secrets key, opens the value and hands it to the host. The store in between only
    // ever held it sealed.
    let run = first.highstate_run(None);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(status(&run.json, &far), "changed", "{:#}", run.json);
    let env = support::docker(&[
        "inspect",
        "-f",
        "{{json .Config.Env}}",
        &format!("{far}.web"),
    ]);
    assert!(env.contains(&format!("DB_PASSWORD={value}")), "{env}");
    let stored = std::process::Command::new("etcdctl")
        .args([
            "--endpoints",
            &bed.etcd.endpoint_list(),
            "get",
            "--prefix",
            &bed.prefix,
        ])
        .env("ETCDCTL_API", "3")
        .output()
        .expect("run etcdctl");
    assert!(stored.status.success(), "{stored:?}");
    assert!(
        !String::from_utf8_lossy(&stored.stdout).contains(&value),
        "etcd holds the secret in clear"
    );
    assert!(
        String::from_utf8_lossy(&stored.stdout).contains("secrets/db"),
        "the dump of etcd shows no secret at all; the check above proves nothing"
    );
    drop(far_minion);
}
