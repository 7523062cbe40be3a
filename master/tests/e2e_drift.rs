//! End to end: a minion keeps its host on its last desired state by itself. Containers stopped
//! or removed by hand come back, with the master up or down, a minion restarted while the
//! master is down converges from its cached desired state, and every repair reaches the
//! master's history of the host once the master is back.
//!
//! Needs Docker, Debian's `docker-registry` and `busybox-static`, and the binaries.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{
    DockerProxy, Fleet, Minion, containers, docker, highstate_expecting, quoted, run_with_deadline,
    wait_for,
};

/// Repairs follow Docker's events within a second; this leaves room for a slow machine.
const REPAIR_DEADLINE: Duration = Duration::from_secs(20);

fn running_id(namespace: &str, docker_name: &str) -> Result<String, String> {
    containers(namespace)
        .into_iter()
        .find(|c| c.name == docker_name)
        .map_or_else(
            || Err(format!("{docker_name} does not exist")),
            |c| match c.state.as_str() {
                "running" => Ok(c.id),
                other => Err(format!("{docker_name} is {other}")),
            },
        )
}

/// A roles file that runs one busybox `web` container on host `id`.
fn web_roles(fleet: &Fleet, id: &str) -> String {
    format!(
        "[roles.web]\nimage = {}\n[[roles.web.containers]]\nname = \"web\"\n\
         command = [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\"]\n\n\
         [assign]\n{} = [\"web\"]\n",
        quoted(&fleet.app_v1.reference),
        quoted(id)
    )
}

/// `brine-master minions show ID --output json`.
fn minion_detail(fleet: &Fleet, id: &str) -> Value {
    let run = run_with_deadline(
        &mut fleet
            .master
            .cli(&["minions", "show", id, "--output", "json"]),
        Duration::from_secs(20),
        "brine-master minions show",
    );
    assert_eq!(run.code, 0, "{}", run.describe("minions show"));
    serde_json::from_str(&run.stdout).expect("minions show prints JSON")
}

/// Deploys one `web` container to the fleet's only host; returns the host's id, the
/// container's Docker name and its id.
fn deploy_web(fleet: &Fleet) -> (String, String, String) {
    let id = fleet.minion_id("a");
    fleet.master.write_roles(&web_roles(fleet, &id));
    highstate_expecting(fleet, 0);
    let name = format!("{id}.web");
    let deployed = running_id(&id, &name).expect("the highstate started it");
    (id, name, deployed)
}

#[test]
fn stopped_and_removed_containers_come_back_with_or_without_the_master() {
    let mut fleet = Fleet::start(&["a"]);
    let (id, name, deployed) = deploy_web(&fleet);

    docker(&["stop", "-t", "1", &name]);
    let restarted = wait_recreated(&id, &name, &deployed);
    wait_repairs_in_history(&fleet, &id, 1);
    docker(&["rm", "-f", &name]);
    let recreated = wait_recreated(&id, &name, &restarted);
    wait_repairs_in_history(&fleet, &id, 2);

    // The master goes away, and the minion restarts while it is away: only its cache of the
    // desired state can bring the container back.
    fleet.minions[0].stop();
    fleet.master.stop();
    docker(&["rm", "-f", &name]);
    fleet.minions[0].start_again();
    let from_cache = wait_recreated(&id, &name, &recreated);
    // Its health gate (2 s by default) must be over before the next removal, or that removal
    // would interrupt this repair rather than need a new one.
    wait_up_for(&from_cache, Duration::from_secs(4));
    docker(&["rm", "-f", &name]);
    wait_recreated(&id, &name, &from_cache);

    // The master comes back; the repairs made without it reach the host's history.
    fleet.master.start_again();
    fleet.minions[0].wait_connected(&fleet.master);
    let detail = wait_repairs_in_history(&fleet, &id, 4);
    assert_eq!(detail["id"], id.as_str(), "{detail:#}");
    assert!(
        detail["events"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("web: ")),
        "{detail:#}"
    );
}

/// Waits until the host's history, as the master shows it, holds `repairs` repairs (each
/// recorded once its container passed its health gate); returns the host's detail.
fn wait_repairs_in_history(fleet: &Fleet, id: &str, repairs: usize) -> Value {
    wait_for(
        &format!("{repairs} repairs in the history"),
        REPAIR_DEADLINE,
        || {
            let detail = minion_detail(fleet, id);
            let repaired = detail["events"].as_array().map_or(0, |events| {
                events.iter().filter(|e| e["kind"] == "repaired").count()
            });
            if repaired >= repairs {
                Ok(detail)
            } else {
                Err(format!("{repaired} repairs in {detail:#}"))
            }
        },
    )
}

/// Waits until container `id` has been running for `uptime`.
fn wait_up_for(id: &str, uptime: Duration) {
    wait_for("the container to stay up", REPAIR_DEADLINE, || {
        let started = docker(&["inspect", "-f", "{{.State.StartedAt}}", id]);
        let started = humantime::parse_rfc3339_weak(started.trim().trim_end_matches('Z'))
            .map_err(|err| format!("{started:?}: {err}"))?;
        match std::time::SystemTime::now().duration_since(started) {
            Ok(up) if up >= uptime => Ok(()),
            up => Err(format!("up for {up:?}")),
        }
    });
}

/// Waits until `docker_name` runs again as a container other than `previous` (a stopped
/// container is replaced, not restarted: it is recreated from its spec); returns its id.
fn wait_recreated(namespace: &str, docker_name: &str, previous: &str) -> String {
    wait_for(
        &format!("{docker_name} to be recreated"),
        REPAIR_DEADLINE,
        || match running_id(namespace, docker_name) {
            Ok(id) if id == previous => Err(format!("still {previous}")),
            other => other,
        },
    )
}

#[test]
fn a_corrupt_cache_is_reported_and_nothing_is_removed() {
    let mut fleet = Fleet::start(&["a"]);
    let (id, name, deployed) = deploy_web(&fleet);

    let minion = &mut fleet.minions[0];
    minion.stop();
    let cache = minion.data_dir().join("desired.json");
    let text = std::fs::read_to_string(&cache).expect("the minion cached its desired state");
    std::fs::write(&cache, &text[..text.len() / 3]).expect("truncate the cache");
    minion.start_again();
    wait_for(
        "the minion to report its unreadable cache",
        REPAIR_DEADLINE,
        || {
            let log = std::fs::read_to_string(minion.log_path()).unwrap_or_default();
            if log.contains("desired.json is unreadable") {
                Ok(())
            } else {
                Err("not reported yet".into())
            }
        },
    );
    // The container was left as it was: the next highstate finds nothing to change.
    minion.wait_connected(&fleet.master);
    let again = fleet.master.highstate_run(None);
    assert_eq!(again.code, 0, "{}", again.describe());
    assert_eq!(
        again.json["hosts"][0]["status"],
        "unchanged",
        "{}",
        again.describe()
    );
    assert_eq!(
        running_id(&id, &name).as_deref(),
        Ok(deployed.as_str()),
        "the container was left as it was"
    );
}

/// When the master last had a hello from `id` (one per link).
fn last_hello(fleet: &Fleet, id: &str) -> i64 {
    fleet
        .master
        .minions()
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["id"] == id)
        .and_then(|m| m["last_seen_unix_ms"].as_i64())
        .unwrap_or_else(|| panic!("{id} is not listed"))
}

/// The kinds of the host's events as `minions show` lists them, oldest first.
fn event_kinds(fleet: &Fleet, id: &str) -> Vec<String> {
    let run = run_with_deadline(
        &mut fleet
            .master
            .cli(&["minions", "show", id, "--output", "json"]),
        Duration::from_secs(20),
        "brine-master minions show",
    );
    assert_eq!(run.code, 0, "{}", run.describe("minions show"));
    let detail: Value = serde_json::from_str(&run.stdout).expect("minions show prints JSON");
    let mut kinds: Vec<String> = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    kinds.reverse();
    kinds
}

fn wait_for_event(fleet: &Fleet, id: &str, kind: &str, count: usize) {
    wait_for_event_within(fleet, id, kind, count, REPAIR_DEADLINE);
}

fn wait_for_event_within(fleet: &Fleet, id: &str, kind: &str, count: usize, deadline: Duration) {
    wait_for(&format!("{count} {kind} events"), deadline, || {
        let kinds = event_kinds(fleet, id);
        if kinds.iter().filter(|k| *k == kind).count() >= count {
            Ok(())
        } else {
            Err(format!("events so far: {kinds:?}"))
        }
    });
}

#[test]
fn a_minion_rides_out_docker_going_away_and_coming_back() {
    let fleet = Fleet::start(&[]);
    let id = fleet.minion_id("a");
    let mut docker_proxy = DockerProxy::new();
    let host = docker_proxy.docker_host();
    // Docker is not there when the minion starts: it runs and links up all the same.
    let mut minion = Minion::start_with(&fleet.master, &id, &[], &[("DOCKER_HOST", &host)], "");
    minion.wait_connected(&fleet.master);
    wait_for_event(&fleet, &id, "docker_unavailable", 1);

    fleet.master.write_roles(&web_roles(&fleet, &id));
    let refused = fleet.master.highstate_run(None);
    assert_eq!(refused.code, 1, "{}", refused.describe());
    let error = refused.json["hosts"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("docker is unavailable"),
        "{}",
        refused.describe()
    );

    docker_proxy.up();
    wait_for_event(&fleet, &id, "docker_available", 1);
    let deployed = fleet.master.highstate_run(None);
    assert_eq!(deployed.code, 0, "{}", deployed.describe());
    let name = format!("{id}.web");
    let first = running_id(&id, &name).expect("deployed");

    // Docker goes away under the running minion and comes back: the link stays, the container
    // is untouched, and drift is repaired again once it is back.
    let linked_at = last_hello(&fleet, &id);
    docker_proxy.down();
    wait_for_event(&fleet, &id, "docker_unavailable", 2);
    assert_eq!(fleet.master.connected(&id), Some(true));
    docker_proxy.up();
    wait_for_event(&fleet, &id, "docker_available", 2);
    assert_eq!(running_id(&id, &name).as_deref(), Ok(first.as_str()));
    docker(&["rm", "-f", &name]);
    wait_recreated(&id, &name, &first);
    assert_eq!(
        last_hello(&fleet, &id),
        linked_at,
        "the link never dropped (the master saw no new hello)"
    );
}

#[test]
fn a_container_that_keeps_dying_is_repaired_with_backoff_and_shown_crash_looping() {
    let fleet = Fleet::start(&["a"]);
    let id = fleet.minion_id("a");
    // Healthy long enough to deploy, then it dies; Docker does not restart it.
    fleet.master.write_roles(&format!(
        "[roles.web]\nimage = {}\n[[roles.web.containers]]\nname = \"web\"\n\
         command = [\"/bin/busybox\", \"sh\", \"-c\", \"sleep 2; exit 1\"]\n\
         restart = \"no\"\nhealth = {{ min_healthy = \"1s\", deadline = \"30s\" }}\n\n\
         [assign]\n{} = [\"web\"]\n",
        quoted(&fleet.app_v1.reference),
        quoted(&id)
    ));
    highstate_expecting(&fleet, 0);
    wait_for_event_within(&fleet, &id, "crash_looping", 1, Duration::from_secs(60));
    // The first wait is 10 s: the container stays dead meanwhile, so the next repair comes
    // that long after the host said it was crash-looping.
    let at_of = |kind: &str| {
        let detail = minion_detail(&fleet, &id);
        detail["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["kind"] == kind)
            .filter_map(|e| e["at_unix_ms"].as_i64())
            .max()
    };
    let looping_at = at_of("crash_looping").expect("a crash_looping event");
    let repaired_first = minion_detail(&fleet, &id)["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "repaired")
        .count();
    assert!(repaired_first >= 3, "it was repaired a few times first");
    let repaired_after = wait_for(
        "a repair after the backoff",
        Duration::from_secs(60),
        || match at_of("repaired") {
            Some(at) if at > looping_at => Ok(at),
            _ => Err("not yet".into()),
        },
    );
    assert!(
        repaired_after - looping_at >= 9_000,
        "repaired {} ms after crash_looping, within the backoff",
        repaired_after - looping_at
    );
}
