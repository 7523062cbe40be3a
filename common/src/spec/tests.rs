//! The container specs' tests: references, ports, volumes, health checks, the spec hash and
//! desired states.

use super::*;

pub(crate) fn spec(role: &str, name: &str, image: &str) -> ContainerSpec {
    ContainerSpec {
        role: RoleName::new(role).unwrap(),
        name: ContainerName::new(name).unwrap(),
        image: ImageRef::new(image).unwrap(),
        command: vec![],
        env: BTreeMap::new(),
        ports: vec![],
        volumes: vec![],
        restart: RestartPolicy::UnlessStopped,
        stop_timeout_seconds: DEFAULT_STOP_TIMEOUT_SECONDS,
        health: HealthCheck::default(),
        secret_env: Default::default(),
        proxy: None,
        hooks: None,
    }
}

#[test]
fn image_references_follow_the_distribution_grammar() {
    for good in [
        "busybox",
        "127.0.0.1:5000/app:tested",
        "registry.example.com/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert!(ImageRef::new(good).is_ok(), "{good}");
    }
    for good in [
        "localhost/app",
        "localhost:5000/a/b_c__d-e---f.g:v1.2-rc_3",
        "[::1]:5000/app:1",
        "a.b-c.example:443/x",
        "app@sha256:0123456789abcdef0123456789abcdef",
    ] {
        assert!(ImageRef::new(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "App:Tested",
        "app:",
        "app::x",
        " app",
        "a/b:c:d:e",
        "app:.tag",
        "app@sha256:short",
        "app@:0123456789abcdef0123456789abcdef",
        "-bad.example/app",
        "host.example:port/app",
        "a//b",
        "a___b",
        "a.-b",
        "app/",
        "[::zz]:5000/app",
        "[::1]x:5000/app",
    ] {
        assert!(ImageRef::new(bad).is_err(), "{bad}");
    }
}

#[test]
fn references_split_into_their_parts_and_pin() {
    let image = ImageRef::new("127.0.0.1:5000/mynames/app:tested").unwrap();
    let parts = image.parts();
    assert_eq!(parts.domain, Some("127.0.0.1:5000"));
    assert_eq!(
        (parts.path, parts.tag, parts.digest),
        ("mynames/app", Some("tested"), None)
    );
    let digest = format!("sha256:{}", "a".repeat(64));
    let pinned = image.pinned(&digest).unwrap();
    assert_eq!(
        pinned.as_str(),
        format!("127.0.0.1:5000/mynames/app:tested@{digest}")
    );
    assert_eq!(pinned.parts().digest, Some(digest.as_str()));
    assert_eq!(pinned.pinned(&digest).unwrap(), pinned);
    let hub = ImageRef::new("busybox").unwrap();
    let hub = hub.parts();
    assert_eq!((hub.domain, hub.path, hub.tag), (None, "busybox", None));
    assert!(image.pinned("sha256:short").is_err());
}

#[test]
fn ports_parse_every_documented_form() {
    let p: PortMapping = "127.0.0.1:80:8000/udp".parse().unwrap();
    assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(
        (p.host_port, p.container_port, p.protocol),
        (Some(80), 8000, Protocol::Udp)
    );
    let p: PortMapping = "80:8000".parse().unwrap();
    assert_eq!(
        (p.host_ip, p.host_port, p.protocol),
        (None, Some(80), Protocol::Tcp)
    );
    let p: PortMapping = "8000".parse().unwrap();
    assert_eq!(p.host_port, None);
    let p: PortMapping = "[::1]:80:8000".parse().unwrap();
    assert_eq!(p.to_string(), "[::1]:80:8000/tcp");
    for bad in [
        "",
        "0:80",
        "80:70000",
        "x:80",
        "1.2.3:80:80",
        "80:80/sctp",
        "1:2:3:4",
    ] {
        assert!(bad.parse::<PortMapping>().is_err(), "{bad}");
    }
}

#[test]
fn port_conflicts_consider_address_and_protocol() {
    let p = |s: &str| s.parse::<PortMapping>().unwrap();
    assert!(p("80:8000").conflicts_with(&p("80:9000")));
    assert!(p("80:8000").conflicts_with(&p("127.0.0.1:80:9000")));
    assert!(!p("127.0.0.2:80:8000").conflicts_with(&p("127.0.0.1:80:9000")));
    assert!(!p("80:8000/udp").conflicts_with(&p("80:8000")));
    assert!(!p("8000").conflicts_with(&p("8000")));
}

#[test]
fn health_checks_refuse_impossible_timings_and_probes() {
    assert!(HealthCheck::default().validate().is_ok());
    let check = |f: fn(&mut HealthCheck)| {
        let mut c = HealthCheck::default();
        f(&mut c);
        c.validate()
    };
    assert!(check(|c| c.deadline_ms = 1).is_err());
    assert!(check(|c| c.interval_ms = 0).is_err());
    assert!(check(|c| c.probe = Some(Probe::Tcp { port: 0 })).is_err());
    assert!(
        check(|c| c.probe = Some(Probe::Http {
            port: 80,
            path: "health".into()
        }))
        .is_err()
    );
    assert!(check(|c| c.probe = Some(Probe::Exec { command: vec![] })).is_err());
}

#[test]
fn volumes_need_an_absolute_target() {
    let v: VolumeMount = "/srv/data:/data:ro".parse().unwrap();
    assert!(v.read_only);
    assert!("data:/data".parse::<VolumeMount>().is_ok());
    for bad in ["/data", "/srv:data", ":/data", "/a:/b:rx"] {
        assert!(bad.parse::<VolumeMount>().is_err(), "{bad}");
    }
}

#[test]
fn hash_is_stable_and_sensitive_to_every_field() {
    let base = spec("web", "web", "127.0.0.1:5000/app:tested");
    assert_eq!(base.hash(), base.clone().hash());
    let mut variants = vec![];
    let mut s = base.clone();
    s.image = ImageRef::new("127.0.0.1:5000/app:v2").unwrap();
    variants.push(s);
    let mut s = base.clone();
    s.command = vec!["httpd".into()];
    variants.push(s);
    let mut s = base.clone();
    s.env.insert("A".into(), "1".into());
    variants.push(s);
    let mut s = base.clone();
    s.ports.push("80:80".parse().unwrap());
    variants.push(s);
    let mut s = base.clone();
    s.volumes.push("/a:/b".parse().unwrap());
    variants.push(s);
    let mut s = base.clone();
    s.restart = RestartPolicy::Always;
    variants.push(s);
    let mut s = base.clone();
    s.stop_timeout_seconds = 3;
    variants.push(s);
    let mut s = base.clone();
    s.health.probe = Some(Probe::Tcp { port: 80 });
    variants.push(s);
    let mut s = base.clone();
    s.role = RoleName::new("api").unwrap();
    variants.push(s);
    let mut s = base.clone();
    s.name = ContainerName::new("web-2").unwrap();
    variants.push(s);
    let mut s = base.clone();
    s.health.interval_ms += 1;
    variants.push(s);
    let mut s = base.clone();
    s.health.min_healthy_ms += 1;
    variants.push(s);
    let mut s = base.clone();
    s.health.deadline_ms += 1;
    variants.push(s);
    let hashes: std::collections::BTreeSet<SpecHash> =
        variants.iter().map(ContainerSpec::hash).collect();
    assert_eq!(hashes.len(), variants.len(), "two variants hash the same");
    for variant in variants {
        assert_ne!(variant.hash(), base.hash(), "{variant:?}");
    }
}

/// Every host compares the hash its containers were created with to the one of the spec it
/// receives: a hash that changed between releases would replace every container of the
/// fleet at the first highstate after an upgrade. This golden value catches that; if the
/// rendering must change, change the version prefix too and say so in the release notes.
#[test]
fn hash_is_the_same_across_releases() {
    let mut full = spec("web", "web", "127.0.0.1:5000/app:tested");
    full.command = vec!["/bin/busybox".into(), "httpd".into(), "-f".into()];
    full.env.insert("MODE".into(), "production".into());
    full.env.insert("EMPTY".into(), String::new());
    full.ports.push("127.0.0.1:8080:80".parse().unwrap());
    full.ports.push("53:53/udp".parse().unwrap());
    full.volumes.push("/srv/data:/data:ro".parse().unwrap());
    full.restart = RestartPolicy::OnFailure;
    full.stop_timeout_seconds = 30;
    full.health = HealthCheck {
        probe: Some(Probe::Http {
            port: 80,
            path: "/health".into(),
        }),
        interval_ms: 500,
        min_healthy_ms: 3_000,
        deadline_ms: 45_000,
    };
    assert_eq!(full.hash().as_str(), "a8af4c109919d2970fb55b1e0b2ca162");
    let minimal = spec("worker", "worker", "busybox");
    assert_eq!(minimal.hash().as_str(), "ac97772fdd2ea02300a94932021cc348");
}

#[test]
fn hash_ignores_env_insertion_order() {
    let mut a = spec("web", "web", "app:1");
    let mut b = a.clone();
    a.env.insert("A".into(), "1".into());
    a.env.insert("B".into(), "2".into());
    b.env.insert("B".into(), "2".into());
    b.env.insert("A".into(), "1".into());
    assert_eq!(a.hash(), b.hash());
}

#[test]
fn desired_state_refuses_duplicate_names_and_port_clashes() {
    let a = spec("web", "app", "app:1");
    let b = spec("worker", "app", "app:1");
    assert!(matches!(
        DesiredState::new(vec![a.clone(), b]),
        Err(DesiredStateError::DuplicateName { .. })
    ));
    let mut a = a;
    a.ports.push("80:8000".parse().unwrap());
    let mut c = spec("worker", "other", "app:1");
    c.ports.push("80:9000".parse().unwrap());
    assert!(matches!(
        DesiredState::new(vec![a.clone(), c]),
        Err(DesiredStateError::PortConflict { .. })
    ));
    let state = DesiredState::new(vec![spec("w", "zz", "app:1"), a]).unwrap();
    assert_eq!(state.containers[0].name.as_str(), "app");
}

#[test]
fn port_clashes_are_found_among_the_ports_of_one_container_too() {
    let mut a = spec("web", "app", "app:1");
    a.ports = vec![
        "80:8000".parse().unwrap(),
        "127.0.0.1:80:9000".parse().unwrap(),
    ];
    assert!(matches!(
        DesiredState::new(vec![a.clone()]),
        Err(DesiredStateError::PortConflict { .. })
    ));
    a.ports = vec![
        "127.0.0.1:80:8000".parse().unwrap(),
        "127.0.0.2:80:8000".parse().unwrap(),
        "80:8000/udp".parse().unwrap(),
        "8000".parse().unwrap(),
        "8000".parse().unwrap(),
    ];
    assert!(DesiredState::new(vec![a]).is_ok());
}

#[test]
fn many_ports_are_checked_without_comparing_every_pair() {
    // 65,536 bindings of one host port, each on its own address: no clash. Comparing every
    // pair took half a minute in a debug build; one sorted pass takes milliseconds.
    let mut a = spec("web", "app", "app:1");
    a.ports = (0..=u16::MAX)
        .map(|i| PortMapping {
            host_ip: Some(IpAddr::from([10, 0, (i >> 8) as u8, i as u8])),
            host_port: Some(80),
            container_port: 80,
            protocol: Protocol::Tcp,
        })
        .collect();
    let started = std::time::Instant::now();
    assert!(DesiredState::new(vec![a.clone()]).is_ok());
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
    let mut b = spec("worker", "worker", "app:1");
    b.ports.push("10.0.255.255:80:80".parse().unwrap());
    assert!(matches!(
        DesiredState::new(vec![a, b]),
        Err(DesiredStateError::PortConflict { .. })
    ));
}

#[test]
fn a_secret_changes_the_hash_by_its_fingerprint_never_by_its_value() {
    let plain = spec("web", "web", "app:1");
    let mut with_secret = plain.clone();
    let mut reference = SecretRef::to(SecretName::new("db").unwrap());
    reference.fingerprint = "aaaa".into();
    with_secret
        .secret_env
        .insert("DB_PASSWORD".into(), reference.clone());
    assert_ne!(with_secret.hash(), plain.hash());
    let mut new_value = with_secret.clone();
    new_value
        .secret_env
        .get_mut("DB_PASSWORD")
        .unwrap()
        .fingerprint = "bbbb".into();
    assert_ne!(new_value.hash(), with_secret.hash());
    // The value itself is never rendered: attaching it changes nothing a record or hash holds.
    let mut attached = with_secret.clone();
    attached.secret_env.get_mut("DB_PASSWORD").unwrap().value =
        Some(SecretValue::new("hunter2".into()).unwrap());
    assert_eq!(attached.hash(), with_secret.hash());
    let json = serde_json::to_string(&attached).unwrap();
    assert!(!json.contains("hunter2"), "{json}");
    assert!(
        attached
            .environment()
            .contains(&"DB_PASSWORD=hunter2".to_owned())
    );
}

#[test]
fn values_are_attached_only_when_every_secret_has_one() {
    let mut s = spec("web", "web", "app:1");
    s.secret_env
        .insert("A".into(), SecretRef::to(SecretName::new("a").unwrap()));
    s.secret_env
        .insert("B".into(), SecretRef::to(SecretName::new("b").unwrap()));
    let mut state = DesiredState::new(vec![s]).unwrap();
    let a = SecretName::new("a").unwrap();
    let only_a = BTreeMap::from([(a.clone(), SecretValue::new("1".into()).unwrap())]);
    assert_eq!(
        state.attach_secret_values(&only_a),
        Err(SecretName::new("b").unwrap())
    );
    assert!(state.secret_values().is_empty());
    let mut both = only_a.clone();
    both.insert(
        SecretName::new("b").unwrap(),
        SecretValue::new("2".into()).unwrap(),
    );
    both.insert(
        SecretName::new("unused").unwrap(),
        SecretValue::new("3".into()).unwrap(),
    );
    state.attach_secret_values(&both).unwrap();
    let attached = state.secret_values();
    assert_eq!(attached.len(), 2, "only the secrets the state uses");
    assert_eq!(attached[&a].expose(), "1");
}
