//! The roles file's tests: parsing, located problems, and the limits on what one file may hold.

#[test]
fn the_example_in_deploy_is_valid_and_widens_what_web_may_deploy() {
    let roles = RolesFile::parse(
        "roles.toml.example",
        include_str!("../../../deploy/roles.toml.example"),
    )
    .unwrap_or_else(|err| panic!("deploy/roles.toml.example: {err}"));
    let web = RoleName::new("web").unwrap();
    assert_eq!(
        roles.deployable_from(&web).into_iter().collect::<Vec<_>>(),
        [
            "registry.example.com:5000/mynames/app",
            "registry.example.com:5000/mynames/app-canary"
        ]
    );
    let worker = RoleName::new("worker").unwrap();
    assert_eq!(roles.deployable_from(&worker).len(), 1);
}

#[test]
fn deploy_from_takes_repositories_only() {
    let text = "[roles.web]\nimage = \"r:5000/app:1\"\ndeploy_from = [\"r:5000/app:2\"]\n[[roles.web.containers]]\nname = \"web\"\n";
    let err = RolesFile::parse("roles.toml", text).unwrap_err();
    assert!(err.to_string().contains("roles.toml:3:"), "{err}");
    assert!(err.to_string().contains("without a tag or digest"), "{err}");
}

use super::*;

const GOOD: &str = r#"
[roles.web]
image = "127.0.0.1:5000/mynames/app:tested"

[[roles.web.containers]]
name = "web"
command = ["httpd", "-f", "-p", "8000"]
ports = ["80:8000"]
env = { APP_ENV = "production" }
volumes = ["/srv/uploads:/app/uploads:ro"]
restart = "always"
stop_timeout = "3s"
health = { http = "http://127.0.0.1:8000/health", interval = "500ms", min_healthy = "2s", deadline = "90s" }

[roles.worker]
image = "127.0.0.1:5000/mynames/app:tested"
[[roles.worker.containers]]
name = "worker"
[[roles.worker.containers]]
name = "beat"
image = "127.0.0.1:5000/mynames/beat:1"

[assign]
"web-*" = ["web"]
"db-1" = ["worker", "web"]
"#;

fn id(s: &str) -> MinionId {
    MinionId::new(s).unwrap()
}

fn problems(text: &str) -> Vec<Problem> {
    RolesFile::parse("roles.toml", text).unwrap_err().problems
}

#[test]
fn parses_a_complete_file() {
    let file = RolesFile::parse("roles.toml", GOOD).unwrap();
    let web = file.desired_state_for(&id("web-7")).unwrap();
    assert_eq!(web.containers.len(), 1);
    let c = &web.containers[0];
    assert_eq!(c.command, ["httpd", "-f", "-p", "8000"]);
    assert_eq!(c.ports[0].host_port, Some(80));
    assert_eq!(c.env["APP_ENV"], "production");
    assert!(c.volumes[0].read_only);
    assert_eq!(c.restart, RestartPolicy::Always);
    assert_eq!(c.stop_timeout_seconds, 3);
    assert_eq!(
        c.health,
        HealthCheck {
            probe: Some(Probe::Http {
                port: 8000,
                path: "/health".into()
            }),
            interval_ms: 500,
            min_healthy_ms: 2_000,
            deadline_ms: 90_000,
        }
    );

    let db = file.desired_state_for(&id("db-1")).unwrap();
    let names: Vec<_> = db.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["beat", "web", "worker"]);
    assert_eq!(
        db.containers[0].image.as_str(),
        "127.0.0.1:5000/mynames/beat:1"
    );
    assert_eq!(db.containers[2].restart, RestartPolicy::UnlessStopped);

    assert!(
        file.desired_state_for(&id("other"))
            .unwrap()
            .containers
            .is_empty()
    );
}

#[test]
fn a_syntax_error_names_line_and_key() {
    let p = problems("[roles.web]\nimage = \"a:b\"\ncontainers = [ { name = } ]\n");
    assert_eq!(p[0].file, "roles.toml");
    assert_eq!(p[0].line, 3);
}

#[test]
fn a_wrong_type_names_the_key() {
    let text = "[roles.web]\nimage = \"app:1\"\n[[roles.web.containers]]\nname = \"web\"\nports = \"80:80\"\n";
    let p = problems(text);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].line, 5);
    assert_eq!(p[0].key, "roles.web.containers[0].ports");
}

#[test]
fn unknown_keys_are_refused() {
    let text = "[roles.web]\nimage = \"app:1\"\n[[roles.web.containers]]\nname = \"web\"\nprots = [\"80:80\"]\n";
    let p = problems(text);
    assert_eq!(p[0].line, 5);
    assert!(p[0].message.contains("prots"), "{}", p[0].message);
}

#[test]
fn every_invalid_value_is_reported_with_its_place() {
    let text = r#"
[roles.web]
image = "Bad Image"
[[roles.web.containers]]
name = "web"
ports = ["80:8000", "99999:1"]
volumes = ["relative"]
restart = "sometimes"
stop_timeout = "soon"

[assign]
"web-*" = ["web", "missing"]
"#;
    let p = problems(text);
    let found: Vec<(usize, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (3, "roles.web.image"),
            (6, "roles.web.containers[0].ports[1]"),
            (7, "roles.web.containers[0].volumes[0]"),
            (8, "roles.web.containers[0].restart"),
            (9, "roles.web.containers[0].stop_timeout"),
            (12, "assign.web-*[1]"),
        ]
    );
    assert!(p[5].message.contains("missing"));
    assert!(
        p[0].to_string()
            .starts_with("roles.toml:3:9: roles.web.image: ")
    );
}

#[test]
fn duplicate_names_and_port_clashes_within_a_role_are_refused() {
    let text = r#"
[roles.web]
image = "app:1"
[[roles.web.containers]]
name = "a"
ports = ["80:80"]
[[roles.web.containers]]
name = "a"
[[roles.web.containers]]
name = "b"
ports = ["80:81"]
"#;
    let p = problems(text);
    assert_eq!(p.len(), 2);
    assert_eq!(
        (p[0].line, p[0].key.as_str()),
        (8, "roles.web.containers[1].name")
    );
    assert!(p[1].message.contains("host port"), "{}", p[1].message);
}

#[test]
fn a_dotted_container_name_is_refused_where_it_is_written() {
    // `web.next` would be the temporary name of `web` during a replacement.
    let text = r#"
[roles.web]
image = "app:1"
[[roles.web.containers]]
name = "web"
[[roles.web.containers]]
name = "web.next"
"#;
    let p = problems(text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (p[0].file.as_str(), p[0].line, p[0].key.as_str()),
        ("roles.toml", 7, "roles.web.containers[1].name")
    );
    assert!(
        p[0].to_string().starts_with(
            "roles.toml:7:8: roles.web.containers[1].name: contains '.', which separates"
        ),
        "{}",
        p[0]
    );
    // A role's name keeps the dot: it never becomes part of a Docker name.
    let role = "[roles.\"web.v2\"]\nimage = \"app:1\"\n[[roles.\"web.v2\".containers]]\nname = \"web-v2\"\n";
    assert!(RolesFile::parse("roles.toml", role).is_ok());
}

#[test]
fn clashes_across_roles_surface_per_host() {
    let text = r#"
[roles.a]
image = "app:1"
[[roles.a.containers]]
name = "x"
ports = ["80:80"]
[roles.b]
image = "app:1"
[[roles.b.containers]]
name = "y"
ports = ["80:80"]
[assign]
"*" = ["a"]
"both" = ["b"]
"#;
    let file = RolesFile::parse("roles.toml", text).unwrap();
    assert!(file.desired_state_for(&id("one")).is_ok());
    assert!(matches!(
        file.desired_state_for(&id("both")),
        Err(DesiredStateError::PortConflict { .. })
    ));
}

#[test]
fn bad_role_names_and_patterns_are_refused() {
    let text = "[roles.\"we b\"]\nimage = \"app:1\"\ncontainers = [{ name = \"x\" }]\n[assign]\n\"[\" = []\n";
    let p = problems(text);
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].line, 1);
    assert_eq!(p[1].line, 5);
}

#[test]
fn health_checks_are_validated_where_they_are_written() {
    let container = |health: &str| {
        format!(
            "[roles.web]\nimage = \"app:1\"\n[[roles.web.containers]]\nname = \"web\"\nhealth = {health}\n"
        )
    };
    let file = RolesFile::parse("r.toml", &container("{ tcp = 8080 }")).unwrap();
    let spec = &file.roles[&RoleName::new("web").unwrap()][0];
    assert_eq!(spec.health.probe, Some(Probe::Tcp { port: 8080 }));
    let file = RolesFile::parse("r.toml", &container("{ exec = [\"/bin/true\"] }")).unwrap();
    let spec = &file.roles[&RoleName::new("web").unwrap()][0];
    assert!(matches!(spec.health.probe, Some(Probe::Exec { .. })));

    for bad in [
        "{ http = \"http://example.com:80/\" }",
        "{ http = \"127.0.0.1:80/\" }",
        "{ http = \"http://127.0.0.1/health\" }",
        "{ tcp = 80, exec = [\"x\"] }",
        "{ deadline = \"1s\", min_healthy = \"5s\" }",
        "{ interval = \"soon\" }",
        "{ tcp = 70000 }",
        "{ retries = 3 }",
    ] {
        let p = problems(&container(bad));
        assert_eq!(p.len(), 1, "{bad}: {p:?}");
        assert_eq!(p[0].line, 5, "{bad}: {p:?}");
        assert!(
            p[0].key.starts_with("roles.web.containers[0].health"),
            "{bad}: {p:?}"
        );
    }
}

#[test]
fn a_file_with_thousands_of_problems_lists_the_first_hundred_quickly() {
    let ports = vec!["\"x\""; 20_000].join(", ");
    let text = format!(
        "[roles.web]\nimage = \"app:1\"\n[[roles.web.containers]]\nname = \"web\"\nports = [{ports}]\n"
    );
    // Locating each problem parsed the whole file again: quadratic, minutes.
    let started = std::time::Instant::now();
    let err = RolesFile::parse("roles.toml", &text).unwrap_err();
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
    assert_eq!(err.problems.len(), MAX_PROBLEMS);
    assert_eq!(err.omitted, 20_000 - MAX_PROBLEMS);
    let last = &err.problems[MAX_PROBLEMS - 1];
    assert_eq!(
        (last.line, last.key.as_str()),
        (5, "roles.web.containers[0].ports[99]")
    );
    assert!(
        err.to_string().ends_with("\n... and 19900 more problems"),
        "{err}"
    );
}

#[test]
fn a_role_with_thousands_of_containers_is_checked_quickly() {
    let mut text = String::from("[roles.web]\nimage = \"app:1\"\n");
    for i in 0..3_000 {
        let ip = format!("10.0.{}.{}", i / 256, i % 256);
        text += &format!("[[roles.web.containers]]\nname = \"c{i}\"\nports = [\"{ip}:80:80\"]\n");
    }
    // Every container was checked with all before it, each time anew: cubic, over a minute.
    let started = std::time::Instant::now();
    assert!(RolesFile::parse("roles.toml", &text).is_ok());
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());

    text += "[[roles.web.containers]]\nname = \"clash\"\nports = [\"10.0.0.7:80:80\"]\n";
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        p[0].line,
        3 * 3_000 + 4,
        "where the later container is named"
    );
    assert!(p[0].message.contains("c7 and clash"), "{}", p[0].message);
}

#[test]
fn an_empty_file_is_valid_and_assigns_nothing() {
    let file = RolesFile::parse("roles.toml", "").unwrap();
    assert!(file.roles_for(&id("x")).is_empty());
}

#[test]
fn an_environment_variable_may_refer_to_a_secret() {
    let text = r#"
[roles.web]
image = "app:1"
[[roles.web.containers]]
name = "web"
env = { MODE = "production", DB_PASSWORD = { secret = "db" } }
[assign]
"*" = ["web"]
"#;
    let file = RolesFile::parse("roles.toml", text).unwrap();
    let web = file.desired_state_for(&id("web-1")).unwrap();
    let c = &web.containers[0];
    assert_eq!(c.env.len(), 1);
    assert_eq!(c.env["MODE"], "production");
    let reference = &c.secret_env["DB_PASSWORD"];
    assert_eq!(reference.secret.as_str(), "db");
    assert!(reference.fingerprint.is_empty());
    assert!(reference.value.is_none());
    let names: Vec<&str> = web.secret_names().iter().map(|n| n.as_str()).collect();
    assert_eq!(names, ["db"]);
    // The roles file alone carries no value: nothing of a secret reaches the environment yet.
    assert_eq!(c.environment(), ["MODE=production"]);
}

#[test]
fn a_malformed_secret_reference_names_its_line_and_key() {
    let base = "[roles.web]\nimage = \"app:1\"\n[[roles.web.containers]]\nname = \"web\"\n";
    let p = problems(&format!(
        "{base}env = {{ DB = {{ secret = \"no/slash\" }} }}\n"
    ));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].line, 5);
    let p = problems(&format!("{base}env = {{ DB = {{ secrte = \"db\" }} }}\n"));
    assert_eq!(p[0].line, 5);
    assert!(p[0].key.contains("env"), "{}", p[0].key);
    assert!(p[0].message.contains("secret"), "{}", p[0].message);
    let p = problems(&format!("{base}env = {{ DB = 3 }}\n"));
    assert_eq!(p[0].line, 5);
}

#[test]
fn a_container_may_put_its_ports_behind_the_hosts_proxy() {
    let base = "[roles.web]\nimage = \"app:1\"\n[[roles.web.containers]]\nname = \"web\"\nports = [\"80:8000\"]\n";
    let web = RoleName::new("web").unwrap();
    let file = RolesFile::parse("r.toml", &format!("{base}proxy = \"http\"\n")).unwrap();
    let spec = &file.roles[&web][0];
    assert_eq!(
        spec.proxy,
        Some(ProxySpec {
            mode: ProxyMode::Http,
            drain_ms: 30_000
        })
    );
    assert!(spec.docker_ports().is_empty(), "the proxy owns the port");
    let file = RolesFile::parse(
        "r.toml",
        &format!("{base}[roles.web.containers.proxy]\nmode = \"tcp\"\ndrain = \"5s\"\n"),
    )
    .unwrap();
    assert_eq!(
        file.roles[&web][0].proxy,
        Some(ProxySpec {
            mode: ProxyMode::Tcp,
            drain_ms: 5_000
        })
    );
    // Turning the proxy on changes how the container runs: its spec, and so its hash.
    let plain = RolesFile::parse("r.toml", base).unwrap();
    assert_ne!(plain.roles[&web][0].hash(), file.roles[&web][0].hash());

    for (bad, line, says) in [
        ("proxy = \"udp\"\n", 6, "unknown proxy mode"),
        (
            "proxy = { mode = \"http\", drain = \"2h\" }\n",
            6,
            "at most 1h",
        ),
        (
            "proxy = { mode = \"http\", grace = \"2s\" }\n",
            6,
            "unknown key \"grace\"",
        ),
        ("proxy = 3\n", 6, "\"tcp\", \"http\""),
    ] {
        let p = problems(&format!("{base}{bad}"));
        assert_eq!(p.len(), 1, "{bad}: {p:?}");
        assert_eq!(p[0].line, line, "{bad}: {p:?}");
        assert!(p[0].key.contains("proxy"), "{bad}: {p:?}");
        assert!(p[0].message.contains(says), "{bad}: {p:?}");
    }
    let udp = "[roles.web]\nimage = \"app:1\"\n[[roles.web.containers]]\nname = \"web\"\nports = [\"53:53/udp\"]\nproxy = \"tcp\"\n";
    let p = problems(udp);
    assert!(p[0].message.contains("TCP ports with a host port"), "{p:?}");
    let none = "[roles.web]\nimage = \"app:1\"\n[[roles.web.containers]]\nname = \"web\"\nproxy = \"tcp\"\n";
    assert!(problems(none)[0].message.contains("needs a published port"));
}

#[test]
fn a_roles_rollout_hooks_reach_each_container_without_changing_its_hash() {
    let base = "[roles.web]\nimage = \"app:1\"\n[[roles.web.containers]]\nname = \"a\"\n[[roles.web.containers]]\nname = \"b\"\n";
    let web = RoleName::new("web").unwrap();
    let hooked = format!(
        "{base}[roles.web.hooks]\nbefore_replace = [\"/usr/local/bin/lb\", \"deregister\"]\nafter_healthy = [\"/usr/local/bin/lb\", \"register\"]\ntimeout = \"2m\"\n"
    );
    let file = RolesFile::parse("r.toml", &hooked).unwrap();
    let plain = RolesFile::parse("r.toml", base).unwrap();
    for (with, without) in file.roles[&web].iter().zip(&plain.roles[&web]) {
        let hooks = with.hooks.as_ref().unwrap();
        assert_eq!(hooks.before_replace, ["/usr/local/bin/lb", "deregister"]);
        assert_eq!(hooks.timeout_ms, 120_000);
        assert_eq!(with.hash(), without.hash());
    }

    for (bad, says) in [
        (
            "[roles.web.hooks]\ntimeout = \"1m\"\n",
            "give before_replace",
        ),
        (
            "[roles.web.hooks]\nbefore_replace = [\"\"]\n",
            "must not be empty",
        ),
        (
            "[roles.web.hooks]\nbefore_replace = [\"x\"]\ntimeout = \"3h\"\n",
            "at most 1h",
        ),
        ("[roles.web.hooks]\nbefore = [\"x\"]\n", "unknown field"),
    ] {
        let p = problems(&format!("{base}{bad}"));
        assert_eq!(p.len(), 1, "{bad}: {p:?}");
        assert!(p[0].key.starts_with("roles.web.hooks"), "{bad}: {p:?}");
        assert!(p[0].message.contains(says), "{bad}: {p:?}");
    }
}
