//! End to end: health gates. A replacement that never becomes healthy is undone, and the old
//! container keeps (or gets back) its name, its ports and its traffic.
//!
//! Needs what `e2e_highstate.rs` needs: Docker, Debian's `docker-registry` and
//! `busybox-static`, and the minion binary (`cargo build --bins`).

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;
use support::{
    Container, Fleet, container, containers, docker, free_port, highstate_expecting, host, quoted,
};

const WEB_COMMAND: &[&str] = &["/bin/busybox", "httpd", "-f", "-p", "8080"];
/// Runs, but never listens.
const SILENT_COMMAND: &[&str] = &["/bin/busybox", "sleep", "3600"];
/// busybox httpd serves the image's root, where the harness puts `/variant.txt` (`/` itself
/// has no index and answers 404).
const HEALTH_HTTP: &str = "{ http = \"http://127.0.0.1:8080/variant.txt\", deadline = \"10s\", min_healthy = \"1s\", interval = \"500ms\" }";

fn list(items: &[&str]) -> String {
    let items: Vec<String> = items.iter().map(|item| quoted(item)).collect();
    format!("[{}]", items.join(", "))
}

/// A roles file: role `web` with one container `web`, assigned to `minion`.
fn roles(minion: &str, image: &str, command: &[&str], ports: &[&str], health: &str) -> String {
    format!(
        "[roles.web]\nimage = {}\n[[roles.web.containers]]\nname = \"web\"\ncommand = {}\nports = {}\nhealth = {health}\n\n[assign]\n{} = [\"web\"]\n",
        quoted(image),
        list(command),
        list(ports),
        quoted(minion),
    )
}

/// The one container of the namespace, which must be `NAMESPACE.web` and running.
fn the_running_web(namespace: &str) -> Container {
    let all = containers(namespace);
    assert_eq!(
        all.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        [format!("{namespace}.web")],
        "the namespace holds other containers (or none): {all:#?}"
    );
    let web = all[0].clone();
    assert_eq!(web.state, "running", "{web:#?}");
    web
}

fn inspect_format(id: &str, format: &str) -> String {
    docker(&["inspect", "--type", "container", "--format", format, id])
}

/// When Docker last started the container: it changes when it is stopped and started again.
fn started_at(id: &str) -> String {
    inspect_format(id, "{{.State.StartedAt}}")
}

/// The container's address on its Docker network.
fn ip_address(id: &str) -> IpAddr {
    let ip = inspect_format(
        id,
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    );
    ip.parse()
        .unwrap_or_else(|err| panic!("{id} has no IP address ({ip:?}): {err}"))
}

/// The body of `GET /variant.txt` at `address`, if it answers 200 (plain HTTP/1.0 over a
/// TcpStream, as the harness does for the registry).
fn variant_served_at(address: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
        .map_err(|err| format!("connect to {address}: {err}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    stream
        .write_all(b"GET /variant.txt HTTP/1.0\r\n\r\n")
        .map_err(|err| format!("send to {address}: {err}"))?;
    let mut response = vec![];
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.lines().next().is_some_and(|l| l.contains(" 200")) => {
            Ok(body.to_owned())
        }
        _ => Err(format!("{address} answered {response:?}")),
    }
}

/// Asserts the container serves variant 1 of the app, from inside and on its address.
fn assert_serves(web: &Container) {
    let inside = docker(&[
        "exec",
        &web.id,
        "/bin/busybox",
        "wget",
        "-q",
        "-O",
        "-",
        "http://127.0.0.1:8080/variant.txt",
    ]);
    assert!(inside.contains("variant 1"), "{inside}");
    let outside = variant_served_at(SocketAddr::new(ip_address(&web.id), 8080))
        .unwrap_or_else(|err| panic!("{} does not serve: {err}", web.name));
    assert!(outside.contains("variant 1"), "{outside}");
}

/// Deploys the healthy web role and returns its container.
fn deploy_healthy(fleet: &Fleet, minion: &str, ports: &[&str], health: &str) -> Container {
    fleet.master.write_roles(&roles(
        minion,
        &fleet.app_v1.reference,
        WEB_COMMAND,
        ports,
        health,
    ));
    let run = highstate_expecting(fleet, 0);
    let h = host(&run.json, minion);
    assert_eq!(h["status"], "changed", "{h:#}");
    assert_eq!(container(h, "web")["action"], "created", "{h:#}");
    let web = the_running_web(minion);
    assert_serves(&web);
    web
}

/// Asserts the host failed because its `web` replacement did, and that the report says the
/// old container was restored; returns the container's error.
fn assert_failed_and_restored(report: &Value, minion: &str) -> String {
    assert_eq!(report["success"], false, "{report:#}");
    let h = host(report, minion);
    assert_eq!(h["status"], "failed", "{h:#}");
    let entry = container(h, "web");
    assert_eq!(entry["action"], "failed", "{h:#}");
    assert_eq!(entry["previous_restored"], true, "{h:#}");
    let error = entry["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("unhealthy") && error.contains("previous container was restored"),
        "{error}"
    );
    error
}

#[test]
fn an_unhealthy_replacement_is_undone_and_the_old_container_keeps_serving() {
    let fleet = Fleet::start(&["a"]);
    let a = fleet.minion_id("a");
    let old = deploy_healthy(&fleet, &a, &[], HEALTH_HTTP);
    let old_start = started_at(&old.id);

    fleet.master.write_roles(&roles(
        &a,
        &fleet.app_v1.reference,
        SILENT_COMMAND,
        &[],
        HEALTH_HTTP,
    ));
    let run = highstate_expecting(&fleet, 1);
    let error = assert_failed_and_restored(&run.json, &a);
    assert!(
        error.contains("health check failed for 10s") && error.contains("8080/variant.txt"),
        "{error}"
    );

    let web = the_running_web(&a);
    assert_eq!(web.id, old.id, "the old container was replaced");
    assert_eq!(
        started_at(&web.id),
        old_start,
        "no port conflict: the old container must never have been stopped"
    );
    assert_serves(&web);
}

#[test]
fn an_unhealthy_replacement_on_a_published_port_gives_the_port_back() {
    let fleet = Fleet::start(&["a"]);
    let a = fleet.minion_id("a");
    let port = free_port();
    let published = format!("127.0.0.1:{port}:8080");
    let on_host = SocketAddr::from(([127, 0, 0, 1], port));
    let old = deploy_healthy(&fleet, &a, &[&published], HEALTH_HTTP);
    assert!(variant_served_at(on_host).is_ok_and(|body| body.contains("variant 1")));
    let old_start = started_at(&old.id);

    fleet.master.write_roles(&roles(
        &a,
        &fleet.app_v1.reference,
        SILENT_COMMAND,
        &[&published],
        HEALTH_HTTP,
    ));
    let run = highstate_expecting(&fleet, 1);
    assert_failed_and_restored(&run.json, &a);

    let web = the_running_web(&a);
    assert_eq!(web.id, old.id, "the old container was replaced");
    assert_ne!(
        started_at(&web.id),
        old_start,
        "the port was in use: the old container must have been stopped for the new one"
    );
    assert_serves(&web);
    let body = variant_served_at(on_host)
        .unwrap_or_else(|err| panic!("the published port does not serve again: {err}"));
    assert!(body.contains("variant 1"), "{body}");
}

#[test]
fn a_health_check_that_times_out_leaves_the_old_container_running() {
    let fleet = Fleet::start(&["a"]);
    let a = fleet.minion_id("a");
    let passing = "{ exec = [\"/bin/busybox\", \"true\"], interval = \"500ms\", min_healthy = \"500ms\", deadline = \"3s\" }";
    let old = deploy_healthy(&fleet, &a, &[], passing);

    // The probe never ends: every attempt is cut at the interval.
    let hanging = "{ exec = [\"/bin/busybox\", \"sleep\", \"30\"], interval = \"500ms\", min_healthy = \"500ms\", deadline = \"3s\" }";
    fleet.master.write_roles(&roles(
        &a,
        &fleet.app_v1.reference,
        WEB_COMMAND,
        &[],
        hanging,
    ));
    let run = highstate_expecting(&fleet, 1);
    let error = assert_failed_and_restored(&run.json, &a);
    assert!(
        error.contains("health check failed for 3s: no answer within 500ms"),
        "{error}"
    );
    assert!(
        run.elapsed < Duration::from_secs(30),
        "the highstate took {:?}",
        run.elapsed
    );

    let web = the_running_web(&a);
    assert_eq!(web.id, old.id, "the old container was replaced");
    assert_serves(&web);
}

/// A quick check, so that a failing replacement is noticed within seconds.
const HEALTH_QUICK: &str = "{ http = \"http://127.0.0.1:8080/variant.txt\", deadline = \"4s\", min_healthy = \"500ms\", interval = \"250ms\" }";

#[test]
fn a_batched_rollout_of_an_unhealthy_build_stops_at_the_first_host() {
    let fleet = Fleet::start(&["a", "b", "c"]);
    let every = format!("e2e-{}-*", fleet.uniq);
    let (a, b, c) = (
        fleet.minion_id("a"),
        fleet.minion_id("b"),
        fleet.minion_id("c"),
    );
    fleet.master.write_roles(&roles(
        &every,
        &fleet.app_v1.reference,
        WEB_COMMAND,
        &[],
        HEALTH_QUICK,
    ));
    highstate_expecting(&fleet, 0);
    let before: Vec<Container> = [&a, &b, &c].iter().map(|id| the_running_web(id)).collect();

    // The new build never answers its health check.
    fleet.master.write_roles(&roles(
        &every,
        &fleet.app_v1.reference,
        SILENT_COMMAND,
        &[],
        HEALTH_QUICK,
    ));
    let run = fleet.master.highstate_run_with(&["--batch", "1"]);
    assert_eq!(run.code, 1, "{}", run.describe());
    assert_failed_and_restored(&run.json, &a);
    for id in [&b, &c] {
        assert_eq!(host(&run.json, id)["status"], "skipped", "{:#}", run.json);
    }
    // Every host still runs, and serves from, the container it had.
    for old in &before {
        let namespace = old.name.split('.').next().unwrap_or_default();
        let web = the_running_web(namespace);
        assert_eq!(web.id, old.id);
        assert_serves(&web);
    }
}

#[test]
fn auto_revert_after_two_healthy_hosts_and_an_unhealthy_third() {
    let mut fleet = Fleet::start(&["a", "b", "c"]);
    let (a, b, c) = (
        fleet.minion_id("a"),
        fleet.minion_id("b"),
        fleet.minion_id("c"),
    );
    let every = format!("e2e-{}-*", fleet.uniq);
    fleet.master.write_roles(&roles(
        &every,
        &fleet.app_v1.reference,
        WEB_COMMAND,
        &[],
        HEALTH_QUICK,
    ));
    highstate_expecting(&fleet, 0);
    let old_c = the_running_web(&c);

    // A new build goes out: on a and b it is healthy; on c, last in order, its role serves
    // on another port than its health check probes, so it never becomes healthy there.
    let v2 = fleet.images.push_variant("app", 2);
    let other_port: &[&str] = &["/bin/busybox", "httpd", "-f", "-p", "8081"];
    let text = format!(
        "[roles.web]\nimage = {image}\n[[roles.web.containers]]\nname = \"web\"\ncommand = {web}\nhealth = {HEALTH_QUICK}\n\n\
         [roles.webc]\nimage = {image}\n[[roles.webc.containers]]\nname = \"web\"\ncommand = {other}\nhealth = {HEALTH_QUICK}\n\n\
         [assign]\n{a} = [\"web\"]\n{b} = [\"web\"]\n{c} = [\"webc\"]\n",
        image = quoted(&fleet.app_v1.reference),
        web = list(WEB_COMMAND),
        other = list(other_port),
        a = quoted(&a),
        b = quoted(&b),
        c = quoted(&c),
    );
    fleet.master.write_roles(&text);
    let run =
        fleet
            .master
            .highstate_run_with(&["--batch", "1", "--max-failures", "1", "--auto-revert"]);
    assert_eq!(run.code, 1, "{}", run.describe());
    for id in [&a, &b] {
        let h = host(&run.json, id);
        assert_eq!(h["status"], "failed", "{h:#}");
        assert!(
            h["error"]
                .as_str()
                .unwrap_or_default()
                .contains("returned to release 1"),
            "{h:#}"
        );
        // Back on the first build.
        let web = the_running_web(id);
        assert_eq!(
            inspect_format(&web.id, "{{.Image}}"),
            fleet.app_v1.id,
            "{h:#}"
        );
        assert_ne!(v2.id, fleet.app_v1.id);
        assert_serves(&web);
    }
    assert_failed_and_restored(&run.json, &c);
    assert_eq!(the_running_web(&c).id, old_c.id);
}
