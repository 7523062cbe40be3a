//! End to end: a real `brine-master serve`, real `brine-minion run` processes, a local registry
//! and the host's Docker engine.
//!
//! Needs Docker, Debian's `docker-registry` and `busybox-static`, and the minion binary
//! (`cargo build --bins`). Run with
//! `cargo test -p brine-master --test e2e_highstate -- --test-threads=2`.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use support::{
    Container, Fleet, LABEL_CONTAINER, LABEL_JOB, LABEL_MANAGED, LABEL_NAMESPACE, LABEL_ROLE,
    LABEL_SPEC_HASH, container, containers, docker, highstate_expecting, host, quoted, status,
};

const WEB_COMMAND: &[&str] = &["/bin/busybox", "httpd", "-f", "-p", "8080"];
const WORKER_COMMAND: &[&str] = &["/bin/busybox", "sleep", "3600"];

/// One `[roles.NAME]` table with a single container.
fn role(name: &str, image: &str, container: &str, command: &[&str]) -> String {
    let command: Vec<String> = command.iter().map(|arg| quoted(arg)).collect();
    format!(
        "[roles.{name}]\nimage = {}\n[[roles.{name}.containers]]\nname = {}\ncommand = [{}]\n\n",
        quoted(image),
        quoted(container),
        command.join(", ")
    )
}

/// The `[assign]` table: host glob → roles.
fn assign(entries: &[(&str, &[&str])]) -> String {
    let mut text = String::from("[assign]\n");
    for (glob, roles) in entries {
        let roles: Vec<String> = roles.iter().map(|r| quoted(r)).collect();
        text.push_str(&format!("{} = [{}]\n", quoted(glob), roles.join(", ")));
    }
    text
}

/// Asserts the report lists every host of `fleet`, and no other, each with `expected` as status.
fn assert_every_host(report: &Value, fleet: &Fleet, expected: &str) {
    let hosts = report["hosts"].as_array().expect("a hosts array");
    let reported: std::collections::BTreeSet<&str> = hosts
        .iter()
        .filter_map(|h| h["minion_id"].as_str())
        .collect();
    let enrolled: std::collections::BTreeSet<&str> = fleet.minions.iter().map(|m| m.id()).collect();
    assert!(!enrolled.is_empty(), "a fleet without hosts proves nothing");
    assert_eq!(reported, enrolled, "{report:#}");
    for h in hosts {
        assert_eq!(
            h["status"], expected,
            "host {} is not {expected}: {report:#}",
            h["minion_id"]
        );
    }
}

/// The container names a host entry lists, sorted.
fn reported_names(host: &Value) -> Vec<String> {
    let mut names: Vec<String> = host["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("no containers array in {host:#}"))
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

/// Every `error` text of a host entry and its containers.
fn errors_of(host: &Value) -> String {
    let mut errors = vec![];
    if let Some(error) = host["error"].as_str() {
        errors.push(error.to_owned());
    }
    for c in host["containers"].as_array().into_iter().flatten() {
        if let Some(error) = c["error"].as_str() {
            errors.push(error.to_owned());
        }
    }
    errors.join("\n")
}

/// Docker name → container id.
fn ids(containers: &BTreeMap<String, Container>) -> BTreeMap<String, String> {
    containers
        .iter()
        .map(|(name, c)| (name.clone(), c.id.clone()))
        .collect()
}

fn docker_names(containers: &[Container]) -> Vec<String> {
    containers.iter().map(|c| c.name.clone()).collect()
}

/// Asserts the one container `NAMESPACE.NAME` runs with brine's labels and the image `image_id`.
fn assert_runs(namespace: &str, name: &str, role: &str, image_id: &str) -> Container {
    let docker_name = format!("{namespace}.{name}");
    let all = containers(namespace);
    let c = all
        .iter()
        .find(|c| c.name == docker_name)
        .unwrap_or_else(|| panic!("no container {docker_name}; the namespace has {all:#?}"))
        .clone();
    assert_eq!(c.state, "running", "{docker_name} does not run: {c:#?}");
    assert_eq!(
        c.image_id, image_id,
        "{docker_name} runs another image: {c:#?}"
    );
    assert_eq!(c.label(LABEL_MANAGED), Some("true"), "{c:#?}");
    assert_eq!(c.label(LABEL_NAMESPACE), Some(namespace), "{c:#?}");
    assert_eq!(c.label(LABEL_ROLE), Some(role), "{c:#?}");
    assert_eq!(c.label(LABEL_CONTAINER), Some(name), "{c:#?}");
    assert!(
        c.label(LABEL_SPEC_HASH).is_some_and(|h| !h.is_empty()),
        "{docker_name} has no spec hash label: {c:#?}"
    );
    c
}

#[test]
fn highstate_deploys_two_roles_to_three_minions() {
    let fleet = Fleet::start(&["a", "b", "c"]);
    let (a, b, c) = (
        fleet.minion_id("a"),
        fleet.minion_id("b"),
        fleet.minion_id("c"),
    );
    let app = fleet.app_v1.reference.clone();
    let every = format!("e2e-{}-*", fleet.uniq);
    fleet.master.write_roles(
        &(role("web", &app, "web", WEB_COMMAND)
            + &role("worker", &app, "worker", WORKER_COMMAND)
            + &assign(&[(&a, &["web", "worker"]), (&every, &["web"])])),
    );

    let run = highstate_expecting(&fleet, 0);
    let report = &run.json;
    assert_eq!(report["success"], true, "{report:#}");
    assert!(report["error"].is_null(), "{report:#}");
    let job_id = report["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job_id in {report:#}"));
    assert_eq!(
        report["hosts"].as_array().map(Vec::len),
        Some(3),
        "{report:#}"
    );
    assert_every_host(report, &fleet, "changed");

    let expected: [(&str, &[(&str, &str)]); 3] = [
        (&a, &[("web", "web"), ("worker", "worker")]),
        (&b, &[("web", "web")]),
        (&c, &[("web", "web")]),
    ];
    for (id, wanted) in expected {
        let h = host(report, id);
        assert!(h["error"].is_null(), "{h:#}");
        let wanted_names: Vec<String> = wanted.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(reported_names(h), wanted_names, "{h:#}");
        for (name, role) in wanted {
            let entry = container(h, name);
            assert_eq!(entry["action"], "created", "{h:#}");
            assert_eq!(entry["role"], *role, "{h:#}");
            assert!(entry["error"].is_null(), "{h:#}");
            let digest = entry["image_digest"].as_str().unwrap_or_default();
            assert!(
                digest.starts_with(&format!("{}@sha256:", fleet.images.repo("app"))),
                "image_digest is not repo@sha256:...: {h:#}"
            );
            // The master pinned the tag to the digest it pointed to when the highstate began.
            let pinned_digest = digest.split_once('@').map(|(_, d)| d).unwrap_or_default();
            assert_eq!(entry["image"], format!("{app}@{pinned_digest}"), "{h:#}");
            assert_eq!(
                digest, fleet.app_v1.repo_digest,
                "image_digest is not the pushed digest"
            );

            let running = assert_runs(id, name, role, &fleet.app_v1.id);
            assert_eq!(
                running.label(LABEL_JOB),
                Some(job_id),
                "{}.{name} does not carry the job id: {running:#?}",
                id
            );
        }
        let on_docker = docker_names(&containers(id));
        let wanted_docker: Vec<String> = wanted_names.iter().map(|n| format!("{id}.{n}")).collect();
        assert_eq!(
            on_docker, wanted_docker,
            "the namespace {id} holds other containers"
        );
    }
}

#[test]
fn second_highstate_is_unchanged_and_touches_nothing() {
    let fleet = Fleet::start(&["a", "b"]);
    let a = fleet.minion_id("a");
    let app = fleet.app_v1.reference.clone();
    let every = format!("e2e-{}-*", fleet.uniq);
    fleet.master.write_roles(
        &(role("web", &app, "web", WEB_COMMAND)
            + &role("worker", &app, "worker", WORKER_COMMAND)
            + &assign(&[(&a, &["web", "worker"]), (&every, &["web"])])),
    );

    let first = highstate_expecting(&fleet, 0);
    assert_every_host(&first.json, &fleet, "changed");
    let before = fleet.all_containers();
    assert_eq!(before.len(), 3, "{before:#?}");

    let second = highstate_expecting(&fleet, 0);
    let report = &second.json;
    assert_eq!(report["success"], true, "{report:#}");
    assert_ne!(
        report["job_id"], first.json["job_id"],
        "two highstates share a job id"
    );
    assert_every_host(report, &fleet, "unchanged");
    for h in report["hosts"].as_array().expect("hosts") {
        let listed = h["containers"].as_array().expect("containers");
        assert!(
            !listed.is_empty(),
            "an unchanged host lists no containers: {h:#}"
        );
        for c in listed {
            assert_eq!(c["action"], "kept", "{h:#}");
        }
    }

    let after = fleet.all_containers();
    assert_eq!(
        ids(&after),
        ids(&before),
        "the second highstate touched containers"
    );
    for c in after.values() {
        assert_eq!(c.state, "running", "{c:#?}");
        assert_eq!(c.image_id, fleet.app_v1.id, "{c:#?}");
    }
}

#[test]
fn new_image_under_same_tag_replaces_exactly_affected_containers() {
    let mut fleet = Fleet::start(&["a", "b"]);
    let (a, b) = (fleet.minion_id("a"), fleet.minion_id("b"));
    let worker_v1 = fleet.images.push_variant("worker", 1);
    let app = fleet.app_v1.reference.clone();
    let every = format!("e2e-{}-*", fleet.uniq);
    fleet.master.write_roles(
        &(role("web", &app, "web", WEB_COMMAND)
            + &role("worker", &worker_v1.reference, "worker", WORKER_COMMAND)
            + &assign(&[(&a, &["web", "worker"]), (&every, &["web"])])),
    );

    let first = highstate_expecting(&fleet, 0);
    assert_every_host(&first.json, &fleet, "changed");
    let before = fleet.all_containers();
    let web_a = assert_runs(&a, "web", "web", &fleet.app_v1.id);
    let web_b = assert_runs(&b, "web", "web", &fleet.app_v1.id);
    let worker = assert_runs(&a, "worker", "worker", &worker_v1.id);

    // CI pushes a new build under the same tag.
    let app_v2 = fleet.images.push_variant("app", 2);
    assert_eq!(app_v2.reference, app);
    assert_ne!(
        app_v2.id, fleet.app_v1.id,
        "variant 2 has variant 1's image id"
    );
    assert_ne!(app_v2.repo_digest, fleet.app_v1.repo_digest);

    let run = highstate_expecting(&fleet, 0);
    let report = &run.json;
    assert_eq!(report["success"], true, "{report:#}");
    assert_every_host(report, &fleet, "changed");

    let host_a = host(report, &a);
    let web_entry = container(host_a, "web");
    assert_eq!(web_entry["action"], "replaced", "{host_a:#}");
    assert_eq!(
        web_entry["image_digest"],
        app_v2.repo_digest.as_str(),
        "{host_a:#}"
    );
    let worker_entry = container(host_a, "worker");
    assert_eq!(worker_entry["action"], "kept", "{host_a:#}");
    assert_eq!(
        worker_entry["image_digest"],
        worker_v1.repo_digest.as_str(),
        "{host_a:#}"
    );
    let host_b = host(report, &b);
    assert_eq!(reported_names(host_b), ["web"], "{host_b:#}");
    assert_eq!(container(host_b, "web")["action"], "replaced", "{host_b:#}");

    let new_web_a = assert_runs(&a, "web", "web", &app_v2.id);
    let new_web_b = assert_runs(&b, "web", "web", &app_v2.id);
    assert_ne!(
        new_web_a.id, web_a.id,
        "the web container of a was not replaced"
    );
    assert_ne!(
        new_web_b.id, web_b.id,
        "the web container of b was not replaced"
    );
    let still = assert_runs(&a, "worker", "worker", &worker_v1.id);
    assert_eq!(still.id, worker.id, "the worker container was touched");

    let after = fleet.all_containers();
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the replaced containers left something behind (or went missing): {after:#?}"
    );
}

#[test]
fn missing_tag_fails_that_host_and_keeps_its_old_container() {
    let fleet = Fleet::start(&["a", "b"]);
    let (a, b) = (fleet.minion_id("a"), fleet.minion_id("b"));
    let app = fleet.app_v1.reference.clone();
    let every = format!("e2e-{}-*", fleet.uniq);
    fleet
        .master
        .write_roles(&(role("web", &app, "web", WEB_COMMAND) + &assign(&[(&every, &["web"])])));
    let first = highstate_expecting(&fleet, 0);
    assert_every_host(&first.json, &fleet, "changed");
    let web_a = assert_runs(&a, "web", "web", &fleet.app_v1.id);
    let web_b = assert_runs(&b, "web", "web", &fleet.app_v1.id);

    // Host b now gets its own role whose `web` container names a tag nobody pushed.
    let missing = fleet.images.reference("app", "does-not-exist");
    fleet.master.write_roles(
        &(role("web", &app, "web", WEB_COMMAND)
            + &role("webb", &missing, "web", WEB_COMMAND)
            + &assign(&[(&a, &["web"]), (&b, &["webb"])])),
    );
    let run = highstate_expecting(&fleet, 1);
    let report = &run.json;
    assert_eq!(report["success"], false, "{report:#}");
    assert_eq!(status(report, &b), "failed", "{report:#}");
    let errors = errors_of(host(report, &b));
    assert!(
        errors.contains("does-not-exist"),
        "the failure of {b} does not name the image {missing}: {errors:?}\n{report:#}"
    );
    assert_eq!(status(report, &a), "unchanged", "{report:#}");

    let still_b = assert_runs(&b, "web", "web", &fleet.app_v1.id);
    assert_eq!(
        still_b.id, web_b.id,
        "the old web container of {b} was replaced"
    );
    assert_eq!(
        docker_names(&containers(&b)),
        [format!("{b}.web")],
        "{b} holds other containers"
    );
    let still_a = assert_runs(&a, "web", "web", &fleet.app_v1.id);
    assert_eq!(still_a.id, web_a.id, "{a}'s web container was touched");
}

#[test]
fn offline_minion_is_unreachable_and_highstate_does_not_hang() {
    let mut fleet = Fleet::start(&["a", "b"]);
    let (a, b) = (fleet.minion_id("a"), fleet.minion_id("b"));
    let app = fleet.app_v1.reference.clone();
    let every = format!("e2e-{}-*", fleet.uniq);
    fleet
        .master
        .write_roles(&(role("web", &app, "web", WEB_COMMAND) + &assign(&[(&every, &["web"])])));

    fleet.minion_mut("b").stop();
    fleet.minion("b").wait_disconnected(&fleet.master);

    let run = fleet.master.highstate_run(None);
    assert_eq!(run.code, 1, "unexpected exit code: {}", run.describe());
    assert!(
        run.elapsed < Duration::from_secs(15),
        "the highstate took {:?} with one host offline",
        run.elapsed
    );
    let report = &run.json;
    assert_eq!(report["success"], false, "{report:#}");
    assert_eq!(status(report, &a), "changed", "{report:#}");
    assert_eq!(status(report, &b), "unreachable", "{report:#}");
    assert_runs(&a, "web", "web", &fleet.app_v1.id);
    assert!(
        containers(&b).is_empty(),
        "the offline host got containers: {:#?}",
        containers(&b)
    );
}

#[test]
fn invalid_roles_file_is_refused_before_anything_is_sent() {
    let fleet = Fleet::start(&["a"]);
    let a = fleet.minion_id("a");
    let bad_image = format!("{}/Not A Valid Image:tested", fleet.images.repo("app"));
    // The image is on line 2.
    let text = role("web", &bad_image, "web", WEB_COMMAND) + &assign(&[(&a, &["web"])]);
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("image = "))
    );
    fleet.master.write_roles(&text);

    let run = fleet.master.highstate_run(None);
    assert_eq!(run.code, 2, "unexpected exit code: {}", run.describe());
    assert!(
        run.stderr.contains("roles.toml:2:"),
        "stderr names no `roles.toml:LINE`: {}",
        run.describe()
    );
    assert!(
        run.stderr.contains("roles.web.image"),
        "stderr names no key `roles.web.image`: {}",
        run.describe()
    );
    assert!(
        containers(&a).is_empty(),
        "a container was created from a refused roles file: {:#?}",
        containers(&a)
    );
}

#[test]
fn unreachable_registry_fails_the_highstate_before_anything_is_sent() {
    let fleet = Fleet::start(&["a"]);
    let a = fleet.minion_id("a");
    // Nothing listens on port 1 of loopback.
    let text = role("web", "127.0.0.1:1/nowhere/app:tested", "web", WEB_COMMAND)
        + &assign(&[(&a, &["web"])]);
    fleet.master.write_roles(&text);

    let run = fleet.master.highstate_run(None);
    assert_eq!(run.code, 3, "unexpected exit code: {}", run.describe());
    assert!(
        run.stderr.contains("cannot be reached") && run.stderr.contains("127.0.0.1:1"),
        "stderr does not say which registry is unreachable: {}",
        run.describe()
    );
    assert!(
        containers(&a).is_empty(),
        "a container was created although the registry was unreachable: {:#?}",
        containers(&a)
    );
}

#[test]
fn a_batched_rollout_stops_after_too_many_failures_and_skips_the_rest() {
    let fleet = Fleet::start(&["a", "b", "c"]);
    let (a, b, c) = (
        fleet.minion_id("a"),
        fleet.minion_id("b"),
        fleet.minion_id("c"),
    );
    let app = fleet.app_v1.reference.clone();
    let every = format!("e2e-{}-*", fleet.uniq);
    fleet
        .master
        .write_roles(&(role("web", &app, "web", WEB_COMMAND) + &assign(&[(&every, &["web"])])));
    highstate_expecting(&fleet, 0);
    let before: Vec<Container> = [&b, &c]
        .iter()
        .map(|ns| assert_runs(ns, "web", "web", &fleet.app_v1.id))
        .collect();

    // Host a (first in order) gets an image nobody pushed; b and c get a changed command, which
    // would replace their containers if the rollout reached them.
    let missing = fleet.images.reference("app", "does-not-exist");
    let changed: &[&str] = &["/bin/busybox", "httpd", "-f", "-p", "8081"];
    fleet.master.write_roles(
        &(role("web", &app, "web", changed)
            + &role("webb", &missing, "web", WEB_COMMAND)
            + &assign(&[(&a, &["webb"]), (&b, &["web"]), (&c, &["web"])])),
    );
    let run = fleet
        .master
        .highstate_run_with(&["--batch", "1", "--max-failures", "0"]);
    assert_eq!(run.code, 1, "unexpected exit code: {}", run.describe());
    let report = &run.json;
    assert_eq!(status(report, &a), "failed", "{report:#}");
    assert_eq!(status(report, &b), "skipped", "{report:#}");
    assert_eq!(status(report, &c), "skipped", "{report:#}");
    for old in &before {
        let namespace = old.name.split('.').next().unwrap_or_default();
        let now = assert_runs(namespace, "web", "web", &fleet.app_v1.id);
        assert_eq!(now.id, old.id, "a skipped host was touched: {report:#}");
    }

    // With one failure allowed, the rollout goes on past host a.
    let run = fleet
        .master
        .highstate_run_with(&["--batch", "1", "--max-failures", "1"]);
    assert_eq!(run.code, 1, "unexpected exit code: {}", run.describe());
    let report = &run.json;
    assert_eq!(status(report, &a), "failed", "{report:#}");
    assert_eq!(status(report, &b), "changed", "{report:#}");
    assert_eq!(status(report, &c), "changed", "{report:#}");
}

#[test]
fn bad_rollout_options_are_usage_errors() {
    let fleet = Fleet::start(&[]);
    for args in [
        &["--batch", "0"][..],
        &["--batch", "150%"],
        &["--batch-wait=-1s"],
    ] {
        let run = fleet.master.highstate_run_with(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.describe());
        assert!(
            run.stderr.contains("--batch"),
            "{args:?}: the error does not name the option: {}",
            run.describe()
        );
    }
}

/// Runs a CLI command of the master and returns (exit code, stdout, stderr).
fn master_cli(fleet: &Fleet, args: &[&str]) -> (i32, String, String) {
    let output = fleet.master.cli(args).output().expect("run brine-master");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_fleet_lock_refuses_a_second_rollout_until_released_or_expired() {
    let fleet = Fleet::start(&["a", "b"]);
    let every = format!("e2e-{}-*", fleet.uniq);
    fleet.master.write_roles(
        &(role("web", &fleet.app_v1.reference, "web", WEB_COMMAND)
            + &assign(&[(&every, &["web"])])),
    );

    // A running rollout holds the lock: a second one is refused and names the holder and why.
    let mut slow = fleet
        .master
        .cli(&[
            "highstate",
            "--batch",
            "1",
            "--batch-wait",
            "4s",
            "--message",
            "release 42",
            "--output",
            "json",
        ])
        .spawn()
        .expect("start a slow highstate");
    wait_for_lock(&fleet, "release 42");
    let second = fleet.master.highstate_run(None);
    assert_eq!(
        second.code,
        3,
        "a held lock is 'retry later': {}",
        second.describe()
    );
    assert!(
        second.stderr.contains("locked by admin") && second.stderr.contains("release 42"),
        "the refusal does not say who holds the lock and why: {}",
        second.describe()
    );
    // The running job's lock is not released by mistake.
    let (code, _, stderr) = master_cli(&fleet, &["lock", "release"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("holds the lock while it runs") && stderr.contains("--force"),
        "{stderr}"
    );
    // Anyone can follow the running job from its start to its end, as its caller sees it.
    let (_, status, _) = master_cli(&fleet, &["lock", "status"]);
    let job = status
        .split("(job ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("the lock names its job: {status}"))
        .to_owned();
    let waiting = std::thread::scope(|scope| {
        // A rollout that waits for the lock starts when the running one is done.
        let waiting = scope.spawn(|| fleet.master.highstate_run_with(&["--wait-for-lock", "60s"]));
        let (code, followed, stderr) = master_cli(&fleet, &["jobs", "show", &job, "--follow"]);
        assert_eq!(code, 0, "{followed}\n{stderr}");
        for host in [fleet.minion_id("a"), fleet.minion_id("b")] {
            assert!(
                followed.contains(host.as_str()),
                "{host} is not shown: {followed}"
            );
        }
        waiting.join().expect("the waiting highstate")
    });
    assert!(slow.wait().expect("wait for the slow highstate").success());
    assert_eq!(waiting.code, 0, "{}", waiting.describe());
    let (_, status, _) = master_cli(&fleet, &["lock", "status"]);
    assert_eq!(
        status.trim(),
        "unlocked",
        "a finished rollout keeps the lock"
    );

    // A lock taken by hand blocks rollouts until released.
    let (code, _, stderr) = master_cli(&fleet, &["lock", "acquire", "-m", "maintenance"]);
    assert_eq!(code, 0, "{stderr}");
    let refused = fleet.master.highstate_run(None);
    assert_eq!(refused.code, 3, "{}", refused.describe());
    assert!(
        refused.stderr.contains("maintenance"),
        "{}",
        refused.describe()
    );
    let (code, released, _) = master_cli(&fleet, &["lock", "release"]);
    assert_eq!(code, 0);
    assert!(released.contains("maintenance"), "{released}");
    assert_eq!(fleet.master.highstate_run(None).code, 0);

    // A lock whose holder vanished expires and is taken over.
    let (code, _, stderr) =
        master_cli(&fleet, &["lock", "acquire", "-m", "crashed", "--ttl", "1s"]);
    assert_eq!(code, 0, "{stderr}");
    std::thread::sleep(Duration::from_millis(1_200));
    let taken_over = fleet.master.highstate_run(None);
    assert_eq!(taken_over.code, 0, "{}", taken_over.describe());
}

/// Waits until `lock status` shows the lock held with `message`.
fn wait_for_lock(fleet: &Fleet, message: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, status, _) = master_cli(fleet, &["lock", "status"]);
        if status.contains(message) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was never taken: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn jobs_record_who_ran_what_with_digests_and_results() {
    let fleet = Fleet::start(&["a"]);
    let a = fleet.minion_id("a");
    fleet.master.write_roles(
        &(role("web", &fleet.app_v1.reference, "web", WEB_COMMAND) + &assign(&[(&a, &["web"])])),
    );
    let first = highstate_expecting(&fleet, 0);
    let second = highstate_expecting(&fleet, 0);

    let (code, listed, stderr) = master_cli(&fleet, &["jobs", "--output", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let listed: Value = serde_json::from_str(&listed).expect("jobs prints JSON");
    let ids: Vec<&str> = listed
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(|j| j["job_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            second.json["job_id"].as_str().unwrap_or_default(),
            first.json["job_id"].as_str().unwrap_or_default()
        ],
        "jobs are not listed newest first: {listed:#}"
    );

    let id = first.json["job_id"].as_str().unwrap_or_default();
    let (code, shown, stderr) = master_cli(&fleet, &["jobs", "show", id, "--output", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let shown: Value = serde_json::from_str(&shown).expect("jobs show prints JSON");
    assert_eq!(shown["caller"], "admin (admin)", "{shown:#}");
    assert_eq!(shown["success"], true, "{shown:#}");
    assert_eq!(status(&shown, &a), "changed", "{shown:#}");
    let web = container(host(&shown, &a), "web");
    assert_eq!(web["image_digest"], fleet.app_v1.repo_digest, "{shown:#}");

    let (code, _, stderr) = master_cli(&fleet, &["jobs", "show", "20990101T000000-00000000"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no job"), "{stderr}");
}

#[test]
fn rollback_restores_the_previous_digest_on_every_host_of_the_role() {
    let mut fleet = Fleet::start(&["a", "b"]);
    let (a, b) = (fleet.minion_id("a"), fleet.minion_id("b"));
    let every = format!("e2e-{}-*", fleet.uniq);
    fleet.master.write_roles(
        &(role("web", &fleet.app_v1.reference, "web", WEB_COMMAND)
            + &assign(&[(&every, &["web"])])),
    );
    let (code, _, stderr) = master_cli(&fleet, &["rollback", "--output", "json"]);
    assert_eq!(code, 2, "a rollback without releases must not run");
    assert!(stderr.contains("no release"), "{stderr}");

    highstate_expecting(&fleet, 0);
    let v2 = fleet.images.push_variant("app", 2);
    let second = highstate_expecting(&fleet, 0);
    assert_every_host(&second.json, &fleet, "changed");
    for host in [&a, &b] {
        assert_runs(host, "web", "web", &v2.id);
    }

    let (code, listed, stderr) = master_cli(&fleet, &["releases", "--output", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let releases: Value = serde_json::from_str(&listed).expect("releases prints JSON");
    let web_image = |index: usize| {
        releases[index]["roles"]["web"]["web"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(releases.as_array().map(Vec::len), Some(2), "{releases:#}");
    let v1_digest = fleet
        .app_v1
        .repo_digest
        .split_once('@')
        .map(|(_, d)| d)
        .unwrap_or_default();
    let v2_digest = v2
        .repo_digest
        .split_once('@')
        .map(|(_, d)| d)
        .unwrap_or_default();
    assert!(web_image(0).ends_with(v1_digest), "{releases:#}");
    assert!(web_image(1).ends_with(v2_digest), "{releases:#}");

    let (code, out, stderr) =
        master_cli(&fleet, &["rollback", "--role", "web", "--output", "json"]);
    assert_eq!(code, 0, "{out}\n{stderr}");
    let report: Value = serde_json::from_str(&out).expect("rollback prints JSON");
    assert_every_host(&report, &fleet, "changed");
    for id in [&a, &b] {
        assert_runs(id, "web", "web", &fleet.app_v1.id);
        let entry = container(host(&report, id), "web");
        assert!(
            entry["image"]
                .as_str()
                .unwrap_or_default()
                .ends_with(v1_digest),
            "{report:#}"
        );
    }
    let (_, listed, _) = master_cli(&fleet, &["releases", "--output", "json"]);
    let releases: Value = serde_json::from_str(&listed).expect("releases prints JSON");
    assert_eq!(
        releases.as_array().map(Vec::len),
        Some(3),
        "the rollback is the newest release"
    );
}

#[test]
fn auto_revert_returns_changed_hosts_to_the_previous_release() {
    let mut fleet = Fleet::start(&["a", "b", "c"]);
    let (a, b, c) = (
        fleet.minion_id("a"),
        fleet.minion_id("b"),
        fleet.minion_id("c"),
    );
    let app = fleet.app_v1.reference.clone();
    let every = format!("e2e-{}-*", fleet.uniq);
    fleet
        .master
        .write_roles(&(role("web", &app, "web", WEB_COMMAND) + &assign(&[(&every, &["web"])])));
    highstate_expecting(&fleet, 0);

    // v2 goes out to a and b, which succeed; c, last in order, fails.
    fleet.images.push_variant("app", 2);
    let missing = fleet.images.reference("app", "does-not-exist");
    fleet.master.write_roles(
        &(role("web", &app, "web", WEB_COMMAND)
            + &role("webb", &missing, "web", WEB_COMMAND)
            + &assign(&[(&a, &["web"]), (&b, &["web"]), (&c, &["webb"])])),
    );
    let run =
        fleet
            .master
            .highstate_run_with(&["--batch", "1", "--max-failures", "1", "--auto-revert"]);
    assert_eq!(run.code, 1, "{}", run.describe());
    let report = &run.json;
    for id in [&a, &b] {
        let h = host(report, id);
        assert_eq!(h["status"], "failed", "{report:#}");
        assert!(
            errors_of(h).contains("returned to release 1"),
            "{id} does not say it was reverted: {report:#}"
        );
        assert_runs(id, "web", "web", &fleet.app_v1.id);
    }
    assert_eq!(status(report, &c), "failed", "{report:#}");
}

/// The Python interpreter with grpcio that scripts/test-deps.sh installs.
fn python() -> std::path::PathBuf {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-tests/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test-deps.sh to install grpcio",
        python.display()
    );
    python
}

#[test]
fn a_python_grpc_client_deploys_with_a_ci_certificate() {
    let fleet = Fleet::start(&["a"]);
    let a = fleet.minion_id("a");
    fleet.master.write_roles(
        &(role("web", &fleet.app_v1.reference, "web", WEB_COMMAND) + &assign(&[(&a, &["web"])])),
    );
    let certs = tempfile::tempdir().expect("a temp dir");
    let out = certs.path().to_str().expect("a UTF-8 temp path");
    let (code, _, stderr) =
        master_cli(&fleet, &["cert", "issue", "--ci", "pipeline", "--out", out]);
    assert_eq!(code, 0, "{stderr}");

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/deploy.py");
    let deploy = |role: &str, extra: &[&str]| {
        let run = std::process::Command::new(python())
            .arg(&script)
            .args(["--master", &fleet.master.address()])
            .args(["--ca", &format!("{out}/ca.pem")])
            .args(["--cert", &format!("{out}/pipeline.pem")])
            .args(["--key", &format!("{out}/pipeline.key")])
            .args(["--role", role, "--image", &fleet.app_v1.reference])
            .args(extra)
            .output()
            .expect("run the Python client");
        let stdout = String::from_utf8_lossy(&run.stdout).to_string();
        let stderr = String::from_utf8_lossy(&run.stderr).to_string();
        let verdict: Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|err| panic!("the client prints JSON ({err}): {stdout}\n{stderr}"));
        (run.status.code(), verdict)
    };
    let pipeline_jobs = || {
        let (_, jobs, _) = master_cli(&fleet, &["jobs", "--output", "json"]);
        let jobs: Value = serde_json::from_str(&jobs).expect("jobs as JSON");
        jobs.as_array()
            .expect("a list of jobs")
            .iter()
            .filter(|job| job["caller"] == "pipeline (ci)")
            .map(|job| job["job_id"].as_str().expect("a job id").to_owned())
            .collect::<Vec<_>>()
    };

    let (code, first) = deploy("web", &["--request-id", "run-1"]);
    assert_eq!(code, Some(0), "{first:#}");
    assert_eq!(first["success"], true, "{first:#}");
    assert_eq!(first["attached"], false, "{first:#}");
    assert_eq!(first["hosts"][0]["minion_id"], a.as_str(), "{first:#}");
    assert_eq!(
        first["hosts"][0]["status"], "HOST_STATUS_CHANGED",
        "{first:#}"
    );
    assert_runs(&a, "web", "web", &fleet.app_v1.id);
    assert_eq!(
        pipeline_jobs(),
        [first["job_id"].as_str().expect("a job id")]
    );

    // A retry with the same request id attaches to the job it started: no second job runs.
    let (code, retried) = deploy("web", &["--request-id", "run-1"]);
    assert_eq!(code, Some(0), "{retried:#}");
    assert_eq!(retried["job_id"], first["job_id"], "{retried:#}");
    assert_eq!(retried["attached"], true, "{retried:#}");
    assert_eq!(retried["hosts"], first["hosts"], "{retried:#}");
    assert_eq!(pipeline_jobs().len(), 1, "a retry started another job");

    // A connection lost mid-job leaves the outcome unknown (4); the retry follows that job.
    let (code, dropped) = deploy("web", &["--request-id", "run-2", "--drop-after-start"]);
    assert_eq!(code, Some(4), "{dropped:#}");
    let (code, recovered) = deploy("web", &["--request-id", "run-2"]);
    assert_eq!(code, Some(0), "{recovered:#}");
    assert_eq!(recovered["job_id"], dropped["job_id"], "{recovered:#}");
    assert_eq!(recovered["attached"], true, "{recovered:#}");
    assert_eq!(pipeline_jobs().len(), 2);

    // Bad input is refused before anything runs (2), with the field and a reason to branch on.
    let (code, refused) = deploy("nosuchrole", &[]);
    assert_eq!(code, Some(2), "{refused:#}");
    assert_eq!(refused["error"]["code"], "INVALID_ARGUMENT", "{refused:#}");
    assert_eq!(refused["error"]["reason"], "INVALID_REQUEST", "{refused:#}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("roles")),
        "{refused:#}"
    );
    // A request id is for one request: reused for another, it is refused.
    let (code, reused) = deploy("db", &["--request-id", "run-1"]);
    assert_eq!(code, Some(2), "{reused:#}");
    assert_eq!(reused["error"]["reason"], "REQUEST_ID_REUSED", "{reused:#}");
    assert_eq!(
        reused["error"]["metadata"]["job_id"], first["job_id"],
        "{reused:#}"
    );

    // A held lock is "retry later" (3), naming who holds it.
    let (code, _, stderr) = master_cli(&fleet, &["lock", "acquire", "-m", "maintenance"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, locked) = deploy("web", &["--request-id", "run-3"]);
    assert_eq!(code, Some(3), "{locked:#}");
    assert_eq!(locked["error"]["code"], "ABORTED", "{locked:#}");
    assert_eq!(locked["error"]["reason"], "FLEET_LOCKED", "{locked:#}");
    assert_eq!(
        locked["error"]["metadata"]["message"], "maintenance",
        "{locked:#}"
    );
    let (code, _, stderr) = master_cli(&fleet, &["lock", "release"]);
    assert_eq!(code, 0, "{stderr}");
    // The refused call started nothing, so its request id is free for the retry.
    let (code, after) = deploy("web", &["--request-id", "run-3"]);
    assert_eq!(code, Some(0), "{after:#}");
    assert_eq!(after["attached"], false, "{after:#}");
}

#[test]
fn a_generic_grpc_client_discovers_the_api_through_reflection_and_lists_the_hosts() {
    let fleet = Fleet::start(&["a"]);
    let a = fleet.minion_id("a");
    let certs = tempfile::tempdir().expect("a temp dir");
    let out = certs.path().to_str().expect("a UTF-8 temp path");
    let (code, _, stderr) =
        master_cli(&fleet, &["cert", "issue", "--ci", "explorer", "--out", out]);
    assert_eq!(code, 0, "{stderr}");

    // No .proto file: the script learns every type from the master's reflection service.
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/reflect.py");
    let run = std::process::Command::new(python())
        .arg(&script)
        .args(["--master", &fleet.master.address()])
        .args(["--ca", &format!("{out}/ca.pem")])
        .args(["--cert", &format!("{out}/explorer.pem")])
        .args(["--key", &format!("{out}/explorer.key")])
        .output()
        .expect("run the Python reflection client");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stdout}\n{stderr}");
    let found: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|err| panic!("the client prints JSON ({err}): {stdout}\n{stderr}"));
    let services = found["services"].as_array().expect("a list of services");
    assert!(
        services.iter().any(|s| s == "brine.v1.FleetService"),
        "{found:#}"
    );
    let minions = found["minions"].as_array().expect("a list of hosts");
    assert_eq!(minions.len(), 1, "{found:#}");
    assert_eq!(minions[0]["minion_id"], a.as_str(), "{found:#}");
}

#[test]
fn a_tag_pushed_during_a_rollout_does_not_reach_the_remaining_hosts() {
    let mut fleet = Fleet::start(&["a", "b"]);
    let (a, b) = (fleet.minion_id("a"), fleet.minion_id("b"));
    let every = format!("e2e-{}-*", fleet.uniq);
    fleet.master.write_roles(
        &(role("web", &fleet.app_v1.reference, "web", WEB_COMMAND)
            + &assign(&[(&every, &["web"])])),
    );
    // Host a is converged first; while the rollout waits, CI pushes a new build under the tag.
    let rollout = fleet
        .master
        .start_highstate(&["--batch", "1", "--batch-wait", "4s"]);
    wait_for_lock(&fleet, "highstate");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while containers(&a).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "host a was never converged"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let v2 = fleet.images.push_variant("app", 2);
    let output = rollout.wait_with_output().expect("wait for the rollout");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    // Both hosts run the digest resolved when the rollout began.
    for id in [&a, &b] {
        assert_runs(id, "web", "web", &fleet.app_v1.id);
    }
    assert_ne!(v2.id, fleet.app_v1.id);
}

/// Each container's action in a report, by host and name.
fn actions(report: &Value) -> BTreeMap<String, String> {
    let mut actions = BTreeMap::new();
    for h in report["hosts"].as_array().into_iter().flatten() {
        for c in h["containers"].as_array().into_iter().flatten() {
            actions.insert(
                format!(
                    "{}/{}",
                    h["minion_id"].as_str().unwrap_or_default(),
                    c["name"].as_str().unwrap_or_default()
                ),
                c["action"].as_str().unwrap_or_default().to_owned(),
            );
        }
    }
    actions
}

#[test]
fn a_plan_changes_nothing_and_predicts_the_highstate() {
    let fleet = Fleet::start(&["a"]);
    let a = fleet.minion_id("a");
    let app = fleet.app_v1.reference.clone();
    fleet.master.write_roles(
        &(role("web", &app, "web", WEB_COMMAND)
            + &role("worker", &app, "worker", WORKER_COMMAND)
            + &assign(&[(&a, &["web", "worker"])])),
    );
    highstate_expecting(&fleet, 0);
    let before = ids(&containers(&a)
        .into_iter()
        .map(|c| (c.name.clone(), c))
        .collect());

    // web changes, worker goes, cron arrives.
    let changed: &[&str] = &["/bin/busybox", "httpd", "-f", "-p", "8081"];
    fleet.master.write_roles(
        &(role("web", &app, "web", changed)
            + &role("cron", &app, "cron", WORKER_COMMAND)
            + &assign(&[(&a, &["web", "cron"])])),
    );
    let plan = fleet.master.highstate_run_with(&["--plan"]);
    assert_eq!(plan.code, 0, "{}", plan.describe());
    let predicted = actions(&plan.json);
    let after = ids(&containers(&a)
        .into_iter()
        .map(|c| (c.name.clone(), c))
        .collect());
    assert_eq!(after, before, "a plan changed containers");
    assert_eq!(
        predicted.values().map(String::as_str).collect::<Vec<_>>(),
        ["created", "replaced", "removed"],
        "{predicted:#?}"
    );
    let (_, status, _) = master_cli(&fleet, &["lock", "status"]);
    assert_eq!(status.trim(), "unlocked");
    let (_, releases, _) = master_cli(&fleet, &["releases", "--output", "json"]);
    let releases: Value = serde_json::from_str(&releases).expect("releases prints JSON");
    assert_eq!(
        releases.as_array().map(Vec::len),
        Some(1),
        "a plan recorded a release"
    );

    let real = highstate_expecting(&fleet, 0);
    assert_eq!(
        actions(&real.json),
        predicted,
        "the highstate did not do what the plan said"
    );
}

#[test]
fn a_target_expression_picks_hosts_by_label_role_and_id() {
    let mut fleet = Fleet::start(&["a", "b"]);
    let (a, b) = (fleet.minion_id("a"), fleet.minion_id("b"));
    let c = fleet.minion_id("c");
    let mut front = support::Minion::start_labelled(&fleet.master, &c, &["tier=front"]);
    front.wait_connected(&fleet.master);
    fleet.minions.push(front);
    let app = fleet.app_v1.reference.clone();
    let every = format!("e2e-{}-*", fleet.uniq);
    fleet.master.write_roles(
        &(role("web", &app, "web", WEB_COMMAND)
            + &role("worker", &app, "worker", WORKER_COMMAND)
            + &assign(&[(&every, &["web"]), (&a, &["worker"])])),
    );
    let targeted = |expression: &str| {
        let run = fleet.master.highstate_run_with(&["--target", expression]);
        assert_eq!(run.code, 0, "{}", run.describe());
        let mut hosts: Vec<String> = run.json["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .map(|h| h["minion_id"].as_str().expect("an id").to_owned())
            .collect();
        hosts.sort();
        hosts
    };

    assert_eq!(targeted("label:tier=front"), vec![c.clone()]);
    assert!(containers(&a).is_empty() && containers(&b).is_empty());
    assert_eq!(
        targeted("role:worker or label:tier=FRONT"),
        [a.clone(), c.clone()]
    );
    assert_eq!(
        targeted(&format!("role:web and not ({a} or label:tier=front)")),
        vec![b.clone()]
    );
    assert_eq!(containers(&b).len(), 1);

    let bad = fleet
        .master
        .highstate_run_with(&["--target", "role:web label:tier=front"]);
    assert_eq!(bad.code, 2, "{}", bad.describe());
    assert!(
        bad.stderr.contains("join matchers with `and` or `or`"),
        "{}",
        bad.describe()
    );
    let none = fleet
        .master
        .highstate_run_with(&["--target", "label:tier=back"]);
    assert_eq!(none.code, 2, "{}", none.describe());
}

#[test]
fn an_unassigned_role_is_removed_and_hand_made_containers_are_untouched() {
    let fleet = Fleet::start(&["a"]);
    let a = fleet.minion_id("a");
    let app = fleet.app_v1.reference.clone();
    let roles =
        role("web", &app, "web", WEB_COMMAND) + &role("worker", &app, "worker", WORKER_COMMAND);
    fleet
        .master
        .write_roles(&(roles.clone() + &assign(&[(&a, &["web", "worker"])])));
    highstate_expecting(&fleet, 0);

    // Made by hand: a similar name and brine-looking labels, but not brine's.
    let hand_made = format!("{a}.worker-2");
    docker(&[
        "run",
        "-d",
        "--name",
        &hand_made,
        "--label",
        &format!("{LABEL_NAMESPACE}={a}"),
        "--label",
        &format!("{LABEL_CONTAINER}=worker"),
        &fleet.app_v1.id,
        "/bin/busybox",
        "sleep",
        "3600",
    ]);

    fleet
        .master
        .write_roles(&(roles + &assign(&[(&a, &["web"])])));
    let run = highstate_expecting(&fleet, 0);
    let h = host(&run.json, &a);
    assert_eq!(h["status"], "changed", "{h:#}");
    assert_eq!(container(h, "worker")["action"], "removed", "{h:#}");
    assert_eq!(container(h, "web")["action"], "kept", "{h:#}");
    let left: Vec<(String, String)> = containers(&a)
        .into_iter()
        .map(|c| (c.name, c.state))
        .collect();
    assert_eq!(
        left,
        [
            (format!("{a}.web"), "running".to_owned()),
            (hand_made, "running".to_owned())
        ],
        "the unassigned role's container went, the hand-made one stayed"
    );
}

/// A host that waits for approval (or was rejected or revoked) gets no command and is not
/// counted as unreachable: the highstate over the accepted ones succeeds and says how many it
/// left out.
#[test]
fn hosts_not_accepted_are_left_out_and_the_highstate_succeeds() {
    let uniq = support::unique_id();
    let registry = support::Registry::start();
    let mut images = support::Images::new(&registry, &uniq);
    let app = images.push_variant("app", 1);
    let master = support::Master::start_with_env(&[("BRINE_MASTER_JOIN_APPROVAL", "manual")]);
    let (accepted_id, pending_id) = (format!("e2e-{uniq}-ok"), format!("e2e-{uniq}-wait"));
    let mut accepted = support::Minion::start(&master, &accepted_id);
    let accept = support::run_with_deadline(
        &mut master.cli(&["minions", "accept", &accepted_id]),
        Duration::from_secs(30),
        "minions accept",
    );
    assert_eq!(accept.code, 0, "{}", accept.describe("minions accept"));
    accepted.wait_connected(&master);
    let pending = support::Minion::start(&master, &pending_id);
    master.write_roles(&format!(
        "{}{}",
        role("app", &app.reference, "app", WORKER_COMMAND),
        assign(&[("*", &["app"])])
    ));

    let run = master.highstate_run(None);
    assert_eq!(run.code, 0, "{}", run.describe());
    let hosts: Vec<&str> = run.json["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| h["minion_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(hosts, [accepted_id.as_str()], "{}", run.describe());
    assert_eq!(run.json["not_accepted"], 1, "{}", run.describe());
    assert_eq!(accepted.containers().len(), 1);
    assert!(
        pending.containers().is_empty(),
        "a pending host got containers"
    );

    let plain = support::run_with_deadline(
        &mut master.cli(&["highstate", "--output", "plain"]),
        Duration::from_secs(90),
        "highstate --output plain",
    );
    assert_eq!(plain.code, 0, "{}", plain.describe("highstate"));
    assert!(
        plain
            .stdout
            .lines()
            .next()
            .unwrap_or("")
            .contains("1 host left out: not accepted"),
        "{}",
        plain.describe("highstate")
    );

    // Only hosts that are not accepted: nothing to do, said so.
    let only_pending = master.highstate_run_with(&["--target", &pending_id]);
    assert_eq!(only_pending.code, 2, "{}", only_pending.describe());
    assert!(
        only_pending
            .stderr
            .contains("1 matching hosts are not accepted"),
        "{}",
        only_pending.describe()
    );
}

/// A CI certificate deploys only what the roles file allows for a role: images from the role's
/// own repositories (or those `deploy_from` adds), and digests the registry really holds.
/// Anything else is refused before a host hears of it.
#[test]
fn a_ci_deploy_is_confined_to_the_roles_repositories_and_known_digests() {
    let mut fleet = Fleet::start(&["a"]);
    let a = fleet.minion_id("a");
    let other = fleet.images.push_variant("other", 1);
    let roles =
        role("web", &fleet.app_v1.reference, "web", WEB_COMMAND) + &assign(&[(&a, &["web"])]);
    fleet.master.write_roles(&roles);
    let certs = tempfile::tempdir().expect("a temp dir");
    let out = certs.path().to_str().expect("a UTF-8 temp path");
    let (code, _, stderr) =
        master_cli(&fleet, &["cert", "issue", "--ci", "pipeline", "--out", out]);
    assert_eq!(code, 0, "{stderr}");
    let (ca, cert, key) = (
        format!("{out}/ca.pem"),
        format!("{out}/pipeline.pem"),
        format!("{out}/pipeline.key"),
    );
    let deploy = |image: &str| {
        master_cli(
            &fleet,
            &[
                "deploy",
                "--role",
                "web",
                "--image",
                image,
                "--master",
                &fleet.master.address(),
                "--ca",
                &ca,
                "--cert",
                &cert,
                "--key",
                &key,
                "--output",
                "json",
            ],
        )
    };

    let (code, _, stderr) = deploy(&other.reference);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("role web may be deployed from")
            && stderr.contains(&fleet.images.repo("app"))
            && stderr.contains("deploy_from"),
        "{stderr}"
    );
    let unknown = format!("{}@sha256:{}", fleet.images.repo("app"), "0".repeat(64));
    let (code, _, stderr) = deploy(&unknown);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("sha256:0000"), "{stderr}");
    assert!(
        containers(&a).is_empty(),
        "a refused deploy reached the host"
    );
    let (_, jobs, _) = master_cli(&fleet, &["jobs", "--output", "json"]);
    assert_eq!(jobs.trim(), "[]", "a refused deploy recorded a job: {jobs}");

    // Widened by the roles file, the other repository deploys; a real digest does too.
    fleet.master.write_roles(&roles.replace(
        "[[roles.web.containers]]",
        &format!(
            "deploy_from = [{}]\n[[roles.web.containers]]",
            quoted(&fleet.images.repo("other"))
        ),
    ));
    let (code, report, stderr) = deploy(&other.reference);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let (code, report, stderr) = deploy(&fleet.app_v1.repo_digest);
    assert_eq!(code, 0, "{report}\n{stderr}");
}

/// `jobs cancel` stops a rollout between batches: the host reached keeps what it got, the
/// others are skipped with nothing sent, and the job says who cancelled it.
#[test]
fn a_cancelled_rollout_starts_no_further_batch() {
    let fleet = Fleet::start(&["a", "b"]);
    let (a, b) = (fleet.minion_id("a"), fleet.minion_id("b"));
    let every = format!("e2e-{}-*", fleet.uniq);
    fleet.master.write_roles(
        &(role("web", &fleet.app_v1.reference, "web", WEB_COMMAND)
            + &assign(&[(&every, &["web"])])),
    );
    let rollout = fleet
        .master
        .start_highstate(&["--batch", "1", "--batch-wait", "30s"]);
    wait_for_lock(&fleet, "highstate");
    let (_, lock, _) = master_cli(&fleet, &["lock", "status"]);
    let job_id = lock
        .split("(job ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no job id in the lock status: {lock}"))
        .to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while containers(&a).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "host a was never converged"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let (code, stdout, stderr) = master_cli(&fleet, &["jobs", "cancel", &job_id]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let cancelled_at = std::time::Instant::now();
    let output = rollout.wait_with_output().expect("the rollout ends");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(10),
        "the rollout sat out its batch wait after the cancel"
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    assert_eq!(report["cancelled_by"], "admin (admin)", "{report:#}");
    assert_eq!(status(&report, &a), "changed", "{report:#}");
    assert_eq!(status(&report, &b), "skipped", "{report:#}");
    assert!(
        host(&report, &b)["error"]
            .as_str()
            .unwrap_or("")
            .contains("cancelled by admin"),
        "{report:#}"
    );
    assert!(containers(&b).is_empty(), "a cancelled job reached host b");
    let (_, shown, _) = master_cli(&fleet, &["jobs", "show", &job_id]);
    assert!(shown.contains("cancelled by admin (admin)"), "{shown}");
    let (code, _, stderr) = master_cli(&fleet, &["jobs", "cancel", &job_id]);
    assert_eq!(code, 2, "a finished job cannot be cancelled: {stderr}");
    assert!(stderr.contains("is running"), "{stderr}");
}
