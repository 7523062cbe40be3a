//! Faults on a real network: the master and each minion in a network namespace of its own,
//! joined by a bridge (198.18.0.0/24, inside namespaces this suite creates), with links cut,
//! slowed, made lossy or silently dropped. Each test states the promise it checks.
//!
//! Needs root, iproute2, iptables and socat (scripts/test-deps.sh installs them), Docker,
//! Debian's `docker-registry` and `busybox-static`, and the binaries.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::netns::{NetHost, Network, available};
use support::{Images, Master, Minion, Registry, quoted, status, unique_id};

const SLEEPER: &str = "[\"/bin/busybox\", \"sleep\", \"3600\"]";

/// A master on its own host of `network`, which reaches `registry` at its usual address.
fn master_on(network: &mut Network, registry: &Registry) -> (NetHost, Master) {
    available().unwrap_or_else(|missing| panic!("{missing}"));
    let host = network.host("master");
    network.forward_registry(&host, registry);
    let master = Master::start_on(Some((host.netns(), host.address())), &[]);
    (host, master)
}

/// A connected minion `e2e-UNIQ-NAME` on its own host of `network`, whose link to the master
/// is `slowed` (one way) if asked.
fn minion_on(
    network: &mut Network,
    master: &Master,
    uniq: &str,
    name: &str,
    slowed: Option<Duration>,
) -> (NetHost, Minion) {
    let host = network.host(name);
    let id = format!("e2e-{uniq}-{name}");
    let dial = slowed.map(|delay| network.slow_path(&host, &master.address(), delay));
    let env: Vec<(&str, &str)> = dial
        .as_deref()
        .map(|dial| ("BRINE_MINION_MASTER", dial))
        .into_iter()
        .collect();
    let mut minion = Minion::start_in(Some(host.netns()), master, &id, &[], &env, "");
    minion.wait_connected(master);
    (host, minion)
}

/// One role per image, each with a single container, assigned by host glob.
fn roles(entries: &[(&str, &str, &str)]) -> String {
    let mut roles = String::new();
    let mut assign = String::from("[assign]\n");
    for (role, image, glob) in entries {
        roles.push_str(&format!(
            "[roles.{role}]\nimage = {}\n[[roles.{role}.containers]]\nname = \"{role}\"\ncommand = {SLEEPER}\n\n",
            quoted(image)
        ));
        assign.push_str(&format!("{} = [\"{role}\"]\n", quoted(glob)));
    }
    roles + &assign
}

/// Asserts that each of the fleet's hosts `suffixes` runs exactly one container.
fn assert_each_runs_one(fleet: &support::Fleet, suffixes: &[&str]) {
    for suffix in suffixes {
        let id = fleet.minion_id(suffix);
        let running = support::containers(&id)
            .iter()
            .filter(|c| c.state == "running")
            .count();
        assert_eq!(running, 1, "{id} runs {running} containers of its role");
    }
}

/// Asserts that each of the fleet's hosts `suffixes` has a container of image `image_id`.
fn assert_each_on(fleet: &support::Fleet, suffixes: &[&str], image_id: &str) {
    for suffix in suffixes {
        let id = fleet.minion_id(suffix);
        assert!(
            support::containers(&id)
                .iter()
                .any(|c| c.image_id == image_id),
            "{id} is not on the new build"
        );
    }
}

/// One role `app` of one sleeping container on `image`, assigned to the hosts `glob` picks,
/// whose replacements must stay up `min_healthy` to pass their health gate.
fn gated_app(image: &str, glob: &str, min_healthy: &str) -> String {
    format!(
        "[roles.app]\nimage = {}\n[[roles.app.containers]]\nname = \"app\"\ncommand = {SLEEPER}\n\
         health = {{ min_healthy = \"{min_healthy}\", deadline = \"30s\" }}\n\n[assign]\n{} = [\"app\"]\n",
        quoted(image),
        quoted(glob)
    )
}

/// Promise: over links with 300 ms of round-trip latency and 5% packet loss, a highstate over
/// 10 hosts finishes with every host's true status, and the next one finds nothing to change.
#[test]
fn a_highstate_over_slow_lossy_links_finishes_with_correct_statuses() {
    let uniq = unique_id();
    let registry = Registry::start();
    let mut images = Images::new(&registry, &uniq);
    let app = images.push_variant("app", 1);
    let mut network = Network::new();
    let (_master_host, master) = master_on(&mut network, &registry);
    let mut minions = vec![];
    for n in 0..10 {
        let slowed = Some(Duration::from_millis(150));
        let (host, minion) = minion_on(&mut network, &master, &uniq, &format!("h{n}"), slowed);
        host.lose(5);
        minions.push((host, minion));
    }
    // Nine hosts run the app; the tenth a tag that does not exist, and must fail alone.
    let missing = images.reference("app", "no-such-tag");
    master.write_roles(&roles(&[
        ("app", &app.reference, &format!("e2e-{uniq}-h[0-8]")),
        ("broken", &missing, &format!("e2e-{uniq}-h9")),
    ]));

    let started = Instant::now();
    let run = master.highstate_run(None);
    println!("highstate over 10 degraded hosts: {:?}", started.elapsed());
    assert_eq!(run.code, 1, "{}", run.describe());
    for (n, (_, minion)) in minions.iter().enumerate() {
        let expected = if n == 9 { "failed" } else { "changed" };
        assert_eq!(
            status(&run.json, minion.id()),
            expected,
            "{}",
            run.describe()
        );
        let running = minion
            .containers()
            .iter()
            .filter(|c| c.state == "running")
            .count();
        assert_eq!(running, usize::from(n != 9), "{}", minion.id());
    }

    let again = master.highstate_run(None);
    assert_eq!(again.code, 1, "{}", again.describe());
    for (n, (_, minion)) in minions.iter().enumerate() {
        let expected = if n == 9 { "failed" } else { "unchanged" };
        assert_eq!(
            status(&again.json, minion.id()),
            expected,
            "{}",
            again.describe()
        );
    }
    let statuses: Vec<Value> = again.json["hosts"].as_array().cloned().unwrap_or_default();
    assert_eq!(statuses.len(), 10);
}

/// Promise: a host cut off from the master mid-deploy without a word (packets dropped, no
/// reset) is noticed within seconds and reported `unreachable`; it keeps a running container
/// throughout; once the network heals, its own result reaches the master and the job record
/// shows what it really did (marked as reported late); the next highstate finds nothing to do.
#[test]
fn a_silent_partition_mid_deploy_is_noticed_and_the_late_result_recorded() {
    let uniq = unique_id();
    let registry = Registry::start();
    let mut images = Images::new(&registry, &uniq);
    let app = images.push_variant("app", 1);
    let mut network = Network::new();
    let (_master_host, master) = master_on(&mut network, &registry);
    let (host, minion) = minion_on(&mut network, &master, &uniq, "a", None);
    // The new container must stay up 8 s before it counts as healthy: the job is under way
    // while the partition starts.
    master.write_roles(&format!(
        "[roles.app]\nimage = {}\n[[roles.app.containers]]\nname = \"app\"\ncommand = {SLEEPER}\n\
         health = {{ min_healthy = \"8s\", deadline = \"60s\" }}\n\n[assign]\n{} = [\"app\"]\n",
        quoted(&app.reference),
        quoted(minion.id())
    ));

    let (run, partitioned_for) = std::thread::scope(|scope| {
        let highstate = scope.spawn(|| master.highstate_run(None));
        support::wait_for(
            "the new container to start",
            Duration::from_secs(60),
            || match minion.containers().iter().any(|c| c.state == "running") {
                true => Ok(()),
                false => Err("no running container yet".to_owned()),
            },
        );
        host.drop_silently();
        let cut = Instant::now();
        let run = highstate.join().expect("the highstate thread");
        (run, cut.elapsed())
    });
    println!("a silent partition ended the job after {partitioned_for:?}");
    assert_eq!(run.code, 1, "{}", run.describe());
    assert_eq!(
        status(&run.json, minion.id()),
        "unreachable",
        "{}",
        run.describe()
    );
    assert!(
        partitioned_for < Duration::from_secs(35),
        "the partition took {partitioned_for:?} to notice (keepalive 10 s + grace 15 s)"
    );
    assert!(
        minion.containers().iter().any(|c| c.state == "running"),
        "the host was left without a running container"
    );

    host.stop_dropping();
    let job_id = run.json["job_id"].as_str().expect("a job id").to_owned();
    let healed = Instant::now();
    let report = support::wait_for(
        "the host's late result to be recorded",
        Duration::from_secs(60),
        || {
            let shown = support::run_with_deadline(
                &mut master.cli(&["jobs", "show", &job_id, "--output", "json"]),
                Duration::from_secs(20),
                "jobs show",
            );
            let job: Value = serde_json::from_str(&shown.stdout).map_err(|e| e.to_string())?;
            let report = support::host(&job, minion.id()).clone();
            if report["reported_late"] == true {
                Ok(report)
            } else {
                Err(format!("{report}"))
            }
        },
    );
    println!(
        "the late result was recorded {:?} after the network healed",
        healed.elapsed()
    );
    assert_eq!(report["status"], "changed", "{report:#}");

    let again = master.highstate_run(None);
    assert_eq!(again.code, 0, "{}", again.describe());
    assert_eq!(
        status(&again.json, minion.id()),
        "unchanged",
        "{}",
        again.describe()
    );
    let log = std::fs::read_to_string(minion.log_path()).unwrap_or_default();
    assert!(
        !log.contains("already applied"),
        "a command was sent twice:\n{log}"
    );
}

/// Promise: a master killed with SIGKILL in the second of five batches loses no job record:
/// after a restart the job is `interrupted` for the hosts it had not heard from, the fleet lock
/// is free, every host still runs a container of its role (old or new, never none), and the
/// next highstate finishes the rollout.
#[test]
fn a_master_killed_mid_rollout_leaves_every_host_running_and_the_next_highstate_finishes() {
    let mut fleet = support::Fleet::start(&["a", "b", "c", "d", "e"]);
    let every = format!("e2e-{}-*", fleet.uniq);
    let write = |fleet: &support::Fleet| {
        fleet
            .master
            .write_roles(&roles(&[("app", &fleet.app_v1.reference, &every)]));
    };
    write(&fleet);
    let first = fleet.master.highstate_run(None);
    assert_eq!(first.code, 0, "{}", first.describe());
    let v2 = fleet.images.push_variant("app", 2);

    let rollout = fleet
        .master
        .start_highstate(&["--batch", "1", "--batch-wait", "3s"]);
    let first_host = fleet.minion_id("a");
    support::wait_for("the first batch to finish", Duration::from_secs(60), || {
        let on_v2 = support::containers(&first_host)
            .iter()
            .any(|c| c.image_id == v2.id && c.state == "running");
        if on_v2 {
            Ok(())
        } else {
            Err("host a not on the new build yet".to_owned())
        }
    });
    // Into the wait before the second batch, or the second batch itself.
    std::thread::sleep(Duration::from_secs(2));
    fleet.master.kill();
    let _ = rollout.wait_with_output();
    fleet.master.start_again();

    let (_, lock, _) = {
        let out = support::run_with_deadline(
            &mut fleet.master.cli(&["lock", "status"]),
            Duration::from_secs(20),
            "lock status",
        );
        (out.code, out.stdout, out.stderr)
    };
    assert_eq!(
        lock.trim(),
        "unlocked",
        "the killed job's lock was not released"
    );
    let listed = support::run_with_deadline(
        &mut fleet.master.cli(&["jobs", "--output", "json"]),
        Duration::from_secs(20),
        "jobs",
    );
    let jobs: Value = serde_json::from_str(&listed.stdout).expect("jobs prints JSON");
    let killed = &jobs[0];
    assert_eq!(killed["running"], false, "{killed:#}");
    assert!(
        killed["counts"]["interrupted"].as_u64().unwrap_or(0) >= 1,
        "the hosts it had not heard from are interrupted: {killed:#}"
    );
    assert_each_runs_one(&fleet, &["a", "b", "c", "d", "e"]);

    for minion in &mut fleet.minions {
        minion.wait_connected(&fleet.master);
    }
    let finish = fleet.master.highstate_run(None);
    assert_eq!(finish.code, 0, "{}", finish.describe());
    assert_each_on(&fleet, &["a", "b", "c", "d", "e"], &v2.id);
}

/// Promise: when the registry dies in the middle of a rollout, hosts that can no longer get the
/// new image fail clearly and keep their running container; nothing is left without one; once
/// the registry is back, the next highstate finishes the rollout.
#[test]
fn a_registry_that_dies_mid_rollout_leaves_every_host_running() {
    let mut fleet = support::Fleet::start(&["a", "b", "c"]);
    let every = format!("e2e-{}-*", fleet.uniq);
    fleet
        .master
        .write_roles(&roles(&[("app", &fleet.app_v1.reference, &every)]));
    let first = fleet.master.highstate_run(None);
    assert_eq!(first.code, 0, "{}", first.describe());
    let v2 = fleet.images.push_variant("app", 2);

    let first_host = fleet.minion_id("a");
    let run = std::thread::scope(|scope| {
        let rollout = scope.spawn(|| {
            fleet
                .master
                .highstate_run_with(&["--batch", "1", "--batch-wait", "4s"])
        });
        support::wait_for("the first batch to finish", Duration::from_secs(60), || {
            let on_v2 = support::containers(&first_host)
                .iter()
                .any(|c| c.image_id == v2.id && c.state == "running");
            if on_v2 {
                Ok(())
            } else {
                Err("host a not on the new build yet".to_owned())
            }
        });
        // The tag was resolved when the job started; the remaining hosts must still pull. (They
        // share this machine's engine, which has the image now: forget its name there, as
        // the other hosts of a real fleet never had it.)
        support::docker(&["rmi", "-f", &v2.repo_digest]);
        fleet.registry.stop();
        rollout.join().expect("the rollout thread")
    });
    assert_eq!(run.code, 1, "{}", run.describe());
    assert_eq!(
        status(&run.json, &first_host),
        "changed",
        "{}",
        run.describe()
    );
    for suffix in ["b", "c"] {
        let id = fleet.minion_id(suffix);
        let host = support::host(&run.json, &id);
        assert!(
            matches!(host["status"].as_str(), Some("failed" | "skipped")),
            "{}",
            run.describe()
        );
    }
    assert_each_runs_one(&fleet, &["a", "b", "c"]);

    fleet.registry.start_again();
    let finish = fleet.master.highstate_run(None);
    assert_eq!(finish.code, 0, "{}", finish.describe());
    assert_each_on(&fleet, &["a", "b", "c"], &v2.id);
}

/// Promise: the health gate holds across a crash. A minion killed with SIGKILL while a new
/// container (whose HEALTHCHECK fails) waits for its gate, with the old one set aside because
/// they share a host port, finishes the replacement when it starts again: the new container
/// never passes, so it goes and the old one is back, serving; the minion reports that for the
/// job it lost (recorded late); and the next highstate does not keep the broken container.
#[test]
fn a_minion_killed_during_a_health_gate_brings_the_old_container_back_when_it_starts() {
    let mut fleet = support::Fleet::start(&["a"]);
    let id = fleet.minion_id("a");
    let port = support::free_port();
    let roles_for = |image: &str| {
        format!(
            "[roles.app]\nimage = {}\n[[roles.app.containers]]\nname = \"app\"\n\
             command = [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\"]\n\
             ports = [\"127.0.0.1:{port}:8080\"]\n\
             health = {{ min_healthy = \"1s\", deadline = \"15s\" }}\n\n\
             [assign]\n{} = [\"app\"]\n",
            quoted(image),
            quoted(&id)
        )
    };
    fleet
        .master
        .write_roles(&roles_for(&fleet.app_v1.reference));
    let first = fleet.master.highstate_run(None);
    assert_eq!(first.code, 0, "{}", first.describe());
    let broken = fleet.images.push_variant_with(
        "app",
        2,
        "HEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD [\"/bin/busybox\", \"false\"]",
    );
    fleet.master.write_roles(&roles_for(&broken.reference));
    let set_aside = format!("{id}.app.replaced");
    let app_v1 = fleet.app_v1.id.clone();
    let support::Fleet {
        master, minions, ..
    } = &mut fleet;
    let minion = minions.iter_mut().find(|m| m.id() == id).expect("minion a");

    let run = std::thread::scope(|scope| {
        let highstate = scope.spawn(|| master.highstate_run(None));
        support::wait_for(
            "the old container to be set aside",
            Duration::from_secs(60),
            || match support::containers(&id).iter().any(|c| c.name == set_aside) {
                true => Ok(()),
                false => Err("not yet".to_owned()),
            },
        );
        minion.stop();
        highstate.join().expect("the highstate thread")
    });
    assert_eq!(run.code, 1, "{}", run.describe());
    assert_eq!(status(&run.json, &id), "unreachable", "{}", run.describe());
    let job_id = run.json["job_id"].as_str().expect("a job id").to_owned();

    minion.start_again();
    let serving = format!("{id}.app");
    support::wait_for(
        "the old container to be back",
        Duration::from_secs(90),
        || {
            let containers = support::containers(&id);
            let back = containers
                .iter()
                .any(|c| c.name == serving && c.image_id == app_v1 && c.state == "running");
            if back && containers.len() == 1 {
                Ok(())
            } else {
                Err(format!(
                    "{:?}",
                    containers
                        .iter()
                        .map(|c| (&c.name, &c.state))
                        .collect::<Vec<_>>()
                ))
            }
        },
    );
    minion.wait_connected(master);
    let report = support::wait_for(
        "the restarted minion to report the job it lost",
        Duration::from_secs(30),
        || {
            let shown = support::run_with_deadline(
                &mut master.cli(&["jobs", "show", &job_id, "--output", "json"]),
                Duration::from_secs(20),
                "jobs show",
            );
            let job: Value = serde_json::from_str(&shown.stdout).map_err(|e| e.to_string())?;
            let report = support::host(&job, &id).clone();
            if report["reported_late"] == true {
                Ok(report)
            } else {
                Err(format!("{report}"))
            }
        },
    );
    assert_eq!(report["status"], "failed", "{report:#}");
    assert_eq!(
        report["containers"][0]["previous_restored"], true,
        "{report:#}"
    );

    // The broken build is still what the roles file asks for: it is tried again, fails its
    // gate, and the old container keeps serving. It is never kept.
    let again = master.highstate_run(None);
    assert_eq!(again.code, 1, "{}", again.describe());
    let host = support::host(&again.json, &id);
    assert_eq!(host["status"], "failed", "{}", again.describe());
    assert_eq!(
        host["containers"][0]["previous_restored"],
        true,
        "{}",
        again.describe()
    );
    let releases = support::run_with_deadline(
        &mut master.cli(&["releases", "--output", "json"]),
        Duration::from_secs(20),
        "releases",
    );
    assert!(
        !releases.stdout.contains(&broken.repo_digest),
        "the broken build was recorded as a release: {}",
        releases.stdout
    );
}

/// Promise: when the Docker engine goes away for a few seconds in the middle of a job (here,
/// while a new container waits for its health gate) and comes back, the job rides it out: the
/// gate goes on once Docker answers, the replacement completes, the host keeps a running
/// container of its role throughout, and nothing is left over.
#[test]
fn a_docker_restart_mid_job_is_ridden_out() {
    let mut fleet = support::Fleet::start(&[]);
    let id = fleet.minion_id("a");
    let mut docker_proxy = support::DockerProxy::new();
    docker_proxy.up();
    let host = docker_proxy.docker_host();
    let mut minion = Minion::start_with(&fleet.master, &id, &[], &[("DOCKER_HOST", &host)], "");
    minion.wait_connected(&fleet.master);
    fleet.minions.push(minion);
    let roles_for = |image: &str| gated_app(image, &id, "6s");
    fleet
        .master
        .write_roles(&roles_for(&fleet.app_v1.reference));
    let first = fleet.master.highstate_run(None);
    assert_eq!(first.code, 0, "{}", first.describe());
    let v2 = fleet.images.push_variant("app", 2);
    fleet.master.write_roles(&roles_for(&v2.reference));

    let next = format!("{id}.app.next");
    let serving = format!("{id}.app");
    let running_app = || {
        support::containers(&id)
            .iter()
            .filter(|c| c.name == serving && c.state == "running")
            .count()
    };
    let run = std::thread::scope(|scope| {
        let highstate = scope.spawn(|| fleet.master.highstate_run(None));
        // Running, so in its health gate: a container only created is still to be started,
        // and Docker gone then fails the start, which is another promise.
        support::wait_for(
            "the new container to run beside the old",
            Duration::from_secs(60),
            || match support::containers(&id)
                .iter()
                .any(|c| c.name == next && c.state == "running")
            {
                true => Ok(()),
                false => Err("not yet".to_owned()),
            },
        );
        docker_proxy.down();
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(running_app(), 1, "the host lost its running container");
        docker_proxy.up();
        highstate.join().expect("the highstate thread")
    });
    assert_eq!(run.code, 0, "{}", run.describe());
    assert_eq!(status(&run.json, &id), "changed", "{}", run.describe());
    assert_eq!(running_app(), 1, "the host lost its running container");

    let again = fleet.master.highstate_run(None);
    assert_eq!(again.code, 0, "{}", again.describe());
    assert_eq!(
        status(&again.json, &id),
        "unchanged",
        "{}",
        again.describe()
    );
    let containers = support::containers(&id);
    assert_eq!(
        containers.len(),
        1,
        "leftovers: {:?}",
        containers.iter().map(|c| &c.name).collect::<Vec<_>>()
    );
    assert_eq!(containers[0].image_id, v2.id);
}

/// libfaketime, which sets a process's clock off (Debian's `faketime`).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Promise: a host whose clock is 10 minutes ahead of the master's, and one 10 minutes behind,
/// link up, take every fresh command (commands expire by the master's clock, which the master
/// sends first on every link), pass their health gates and converge; the skew is shown by
/// `minions` and warned about on both sides.
#[test]
fn hosts_with_clocks_ten_minutes_off_take_fresh_commands_and_say_so() {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: apt-get install faketime (scripts/test-deps.sh does)"
    );
    let mut fleet = support::Fleet::start(&[]);
    for (suffix, skew) in [("ahead", "+10m"), ("behind", "-10m")] {
        let id = fleet.minion_id(suffix);
        let env = [
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", skew),
            // Timers and the health gate run on the monotonic clock, which a skew leaves alone.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ];
        let mut minion = Minion::start_with(&fleet.master, &id, &[], &env, "");
        minion.wait_connected(&fleet.master);
        fleet.minions.push(minion);
    }
    let glob = format!("e2e-{}-*", fleet.uniq);
    let roles_for = |image: &str| gated_app(image, &glob, "2s");
    fleet
        .master
        .write_roles(&roles_for(&fleet.app_v1.reference));
    let first = fleet.master.highstate_run(None);
    assert_eq!(first.code, 0, "{}", first.describe());
    let v2 = fleet.images.push_variant("app", 2);
    fleet.master.write_roles(&roles_for(&v2.reference));
    let second = fleet.master.highstate_run(None);
    assert_eq!(second.code, 0, "{}", second.describe());
    for suffix in ["ahead", "behind"] {
        let id = fleet.minion_id(suffix);
        assert_eq!(
            status(&second.json, &id),
            "changed",
            "{}",
            second.describe()
        );
        let containers = support::containers(&id);
        assert_eq!(containers.len(), 1, "{id}: {containers:?}");
        assert_eq!(containers[0].image_id, v2.id, "{id}");
    }

    let minions = fleet.master.minions();
    for (suffix, sign) in [("ahead", 1), ("behind", -1)] {
        let id = fleet.minion_id(suffix);
        let minion = minions
            .as_array()
            .expect("an array")
            .iter()
            .find(|m| m["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} is not listed: {minions}"));
        let offset = minion["clock_offset_ms"].as_i64().expect("clock_offset_ms");
        assert!(
            (offset - sign * 600_000).abs() < 30_000,
            "{id}: clock_offset_ms {offset}"
        );
        let log = std::fs::read_to_string(fleet.minion(suffix).log_path()).unwrap_or_default();
        assert!(
            log.contains("clock is 600 s") || log.contains("clock is 599 s"),
            "{id} did not warn about its clock:\n{log}"
        );
    }
    let master_log = std::fs::read_to_string(fleet.master.log_path()).unwrap_or_default();
    assert!(
        master_log.contains("clock is"),
        "the master did not warn about skewed clocks:\n{master_log}"
    );

    // A restart keeps what was applied; the next highstate finds nothing to change.
    let ahead = fleet.minion_id("ahead");
    let support::Fleet {
        master, minions, ..
    } = &mut fleet;
    let minion = minions
        .iter_mut()
        .find(|m| m.id() == ahead)
        .expect("the host ahead");
    minion.start_again();
    minion.wait_connected(master);
    let again = fleet.master.highstate_run(None);
    assert_eq!(again.code, 0, "{}", again.describe());
    for suffix in ["ahead", "behind"] {
        let id = fleet.minion_id(suffix);
        assert_eq!(
            status(&again.json, &id),
            "unchanged",
            "{}",
            again.describe()
        );
    }
}

/// The ids of the jobs `jobs --output json` lists, or the failure.
fn listed_jobs(master: &Master) -> Result<Vec<String>, String> {
    let output = master
        .cli(&["jobs", "--output", "json"])
        .output()
        .expect("run brine-master jobs");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let listed: Value = serde_json::from_slice(&output.stdout).map_err(|err| err.to_string())?;
    Ok(listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|job| job["job_id"].as_str().map(str::to_owned))
        .collect())
}

/// Promise: with the master's data directory on a full filesystem, a job is refused with a
/// clear error before anything is sent; a disk that fills during a job loses nothing: the job's
/// record waits in memory (the fleet stays locked) and is written once space is freed, without
/// a restart. Every host keeps its running container, the store stays readable throughout, and
/// nothing recorded is lost, also across a crash.
#[test]
fn a_full_disk_under_the_master_refuses_jobs_clearly_and_recovers_when_freed() {
    let mut fleet = support::Fleet::start(&["a"]);
    let id = fleet.minion_id("a");
    fleet.master.stop();
    let tmpfs = support::Tmpfs::mount_over(&fleet.master.data_dir(), 64 * 1024);
    fleet.master.start_again();
    let master = &fleet.master;
    fleet
        .minions
        .iter_mut()
        .for_each(|minion| minion.wait_connected(master));
    let roles_for = |image: &str| gated_app(image, &id, "4s");
    let running_image = || {
        let serving = format!("{id}.app");
        let running: Vec<String> = support::containers(&id)
            .into_iter()
            .filter(|c| c.name == serving && c.state == "running")
            .map(|c| c.image_id)
            .collect();
        assert_eq!(running.len(), 1, "the host lost its running container");
        running[0].clone()
    };
    let job_id = |run: &support::HighstateRun| {
        run.json["job_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no job id: {}", run.describe()))
            .to_owned()
    };
    fleet
        .master
        .write_roles(&roles_for(&fleet.app_v1.reference));
    let first = fleet.master.highstate_run(None);
    assert_eq!(first.code, 0, "{}", first.describe());
    let mut recorded = vec![job_id(&first)];

    // A full disk: refused before anything is sent.
    let v2 = fleet.images.push_variant("app", 2);
    fleet.master.write_roles(&roles_for(&v2.reference));
    let filler = tmpfs.fill();
    let refused = fleet.master.highstate_run(None);
    assert_eq!(
        refused.code,
        3,
        "retry once space is freed: {}",
        refused.describe()
    );
    assert!(
        refused.stderr.contains("the master's disk is full"),
        "{}",
        refused.describe()
    );
    assert_eq!(running_image(), fleet.app_v1.id);
    assert_eq!(listed_jobs(&fleet.master).as_ref(), Ok(&recorded));
    std::fs::remove_file(&filler).expect("free the space");

    // A disk that fills while a new container waits for its health gate.
    let (run, filler) = std::thread::scope(|scope| {
        let highstate = scope.spawn(|| fleet.master.highstate_run(None));
        let next = format!("{id}.app.next");
        // Running, so in its health gate: a container only created is still to be started,
        // and Docker gone then fails the start, which is another promise.
        support::wait_for(
            "the new container to run beside the old",
            Duration::from_secs(60),
            || match support::containers(&id)
                .iter()
                .any(|c| c.name == next && c.state == "running")
            {
                true => Ok(()),
                false => Err("not yet".to_owned()),
            },
        );
        let filler = tmpfs.fill();
        (highstate.join().expect("the highstate thread"), filler)
    });
    assert_eq!(run.code, 0, "{}", run.describe());
    assert_eq!(status(&run.json, &id), "changed", "{}", run.describe());
    assert_eq!(running_image(), v2.id);
    let unrecorded = job_id(&run);
    let listed = listed_jobs(&fleet.master).expect("the store is readable on a full disk");
    for job in &recorded {
        assert!(listed.contains(job), "job {job} was lost: {listed:?}");
    }
    let held = fleet.master.highstate_run(None);
    assert_eq!(held.code, 3, "the lock is held: {}", held.describe());

    // Space freed: the job is recorded and the lock freed within seconds, with no restart.
    std::fs::remove_file(&filler).expect("free the space");
    recorded.push(unrecorded.clone());
    support::wait_for(
        "the finished job to be recorded",
        Duration::from_secs(20),
        || match listed_jobs(&fleet.master) {
            Ok(listed) if listed.contains(&unrecorded) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let again = support::wait_for("a highstate to run again", Duration::from_secs(20), || {
        let run = fleet.master.highstate_run(None);
        match run.code {
            0 => Ok(run),
            _ => Err(run.describe()),
        }
    });
    assert_eq!(
        status(&again.json, &id),
        "unchanged",
        "{}",
        again.describe()
    );
    recorded.push(job_id(&again));

    // Nothing recorded is lost across a crash either.
    fleet.master.kill();
    fleet.master.start_again();
    let listed = listed_jobs(&fleet.master).expect("jobs are listed after a restart");
    for job in &recorded {
        assert!(listed.contains(job), "job {job} was lost: {listed:?}");
    }
    drop(tmpfs);
}
