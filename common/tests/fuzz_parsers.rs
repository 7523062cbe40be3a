//! Fuzz targets for every parser of text a person, a file or a peer hands brine.
//!
//! Each test replays its regression corpus (`tests/corpus/<test name>/`, one input per file),
//! then runs bolero: random inputs for a second under `cargo test`, coverage-guided libFuzzer
//! under `cargo bolero test` (`bench/fuzz.sh`). Besides "no panic", each checks what an
//! accepted value promises (it prints back to what was parsed) and that a refusal explains itself.

use std::collections::BTreeMap;
use std::path::Path;

use arbitrary::Unstructured;
use brine_common::host::{AgentVersion, Facts};
use brine_common::identity::CertRole;
use brine_common::names::{ContainerName, MinionId, RoleName, check_label};
use brine_common::outcome::JobId;
use brine_common::roles_file::RolesFile;
use brine_common::spec::{ImageRef, PortMapping, RestartPolicy, VolumeMount};
use brine_common::target::{HostView, Target};
use brine_common::token::JoinToken;
use brine_common::toml_span::{ConfigFileError, line_of_key, locate_all};

/// Runs `check` on every file of `tests/corpus/<target>/`, naming the file it fails on.
fn replay_corpus(target: &str, check: impl Fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.expect("a readable corpus directory").path())
        .collect();
    files.sort();
    for file in files {
        let input = std::fs::read(&file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        // Shown with the failure: the test harness prints a failed test's output.
        eprintln!("replaying {}", file.display());
        check(&input);
    }
}

const ROLES_FILE: &str = "fuzz/roles.toml";

fn check_roles_file(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    match RolesFile::parse(ROLES_FILE, &text) {
        Ok(file) => {
            // Every role name is also a valid host id: ask for each as if a host were so named.
            let hosts: Vec<MinionId> = file
                .role_names()
                .map(|role| MinionId::new(role.as_str()).expect("a role name is a valid id"))
                .chain(["web-1", "db-1"].map(|id| MinionId::new(id).expect("a valid id")))
                .collect();
            for host in &hosts {
                for role in file.roles_for(host) {
                    assert!(file.role_names().any(|r| r == role), "{role} is undeclared");
                }
                if let Err(err) = file.desired_state_for(host) {
                    assert!(!err.to_string().is_empty());
                }
            }
            for role in file.role_names() {
                for repository in file.deployable_from(role) {
                    assert!(ImageRef::new(repository.as_str()).is_ok(), "{repository}");
                }
            }
        }
        Err(err) => {
            assert!(!err.problems.is_empty(), "a refusal without a problem");
            let lines = text.split('\n').count();
            for problem in &err.problems {
                assert_eq!(problem.file, ROLES_FILE);
                assert!(!problem.message.is_empty(), "{problem}");
                assert!(!problem.key.is_empty(), "{problem}");
                assert!((1..=lines).contains(&problem.line), "{problem}");
                assert!(problem.column >= 1, "{problem}");
            }
            assert!(
                err.to_string().starts_with(&format!("{ROLES_FILE}:")),
                "{err}"
            );
        }
    }
}

#[test]
fn roles_file() {
    replay_corpus("roles_file", check_roles_file);
    bolero::check!().for_each(check_roles_file);
}

/// The values a roles file holds as strings: ports, volumes and restart policies.
fn check_spec_values(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    match text.parse::<PortMapping>() {
        Ok(port) => assert_eq!(port.to_string().parse::<PortMapping>(), Ok(port)),
        Err(err) => assert!(!err.is_empty()),
    }
    match text.parse::<VolumeMount>() {
        Ok(volume) => {
            assert!(!volume.source.is_empty() && volume.target.starts_with('/'));
            let mode = if volume.read_only { "ro" } else { "rw" };
            let written = format!("{}:{}:{mode}", volume.source, volume.target);
            assert_eq!(written.parse::<VolumeMount>(), Ok(volume));
        }
        Err(err) => assert!(!err.is_empty()),
    }
    match text.parse::<RestartPolicy>() {
        Ok(policy) => assert_eq!(policy.as_str(), text),
        Err(err) => assert!(!err.is_empty()),
    }
}

#[test]
fn spec_values() {
    replay_corpus("spec_values", check_spec_values);
    bolero::check!().for_each(check_spec_values);
}

/// Locating a problem in any TOML text, at any offset (a parser's span may be off the end).
fn check_toml_locations(input: &[u8]) {
    let mut u = Unstructured::new(input);
    let Ok(offsets) = u.arbitrary::<(u16, u16)>() else {
        return;
    };
    let Ok(key) = u.arbitrary::<String>() else {
        return;
    };
    let text = String::from_utf8_lossy(u.take_rest());
    let file = "fuzz/master.toml";
    let lines = text.split('\n').count();
    let span = usize::from(offsets.0)..usize::from(offsets.1);
    let [problem] = &locate_all(file, &text, vec![(span, "a message".to_owned())])[..] else {
        panic!("one span, one problem");
    };
    assert!((1..=lines).contains(&problem.line), "{problem}");
    assert!(problem.column >= 1 && !problem.key.is_empty(), "{problem}");
    if let Some(line) = line_of_key(&text, &key) {
        assert!((1..=lines).contains(&line), "{key:?} at line {line}");
    }
    if let Some(err) = ConfigFileError::syntax(file, &text) {
        assert!(err.to_string().starts_with(file), "{err}");
        assert!(
            err.line.is_some_and(|line| (1..=lines).contains(&line)),
            "{err}"
        );
    }
    let err = ConfigFileError::locate(file, &text, None, format!("unknown field `{key}`"));
    assert!(err.to_string().starts_with(file), "{err}");
}

#[test]
fn toml_locations() {
    replay_corpus("toml_locations", check_toml_locations);
    bolero::check!().for_each(check_toml_locations);
}

fn check_target_expression(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    match Target::parse(&text) {
        Ok(target) => {
            assert_eq!(target.as_str(), text.trim());
            assert_eq!(target.to_string(), target.as_str());
            assert_eq!(Target::parse(target.as_str()).as_ref(), Ok(&target));
        }
        Err(err) => {
            assert!(!err.message.is_empty());
            assert!(err.position <= text.len(), "{err}");
            assert!(err.to_string().starts_with("target "), "{err}");
        }
    }
}

#[test]
fn target_expression() {
    replay_corpus("target_expression", check_target_expression);
    bolero::check!().for_each(check_target_expression);
}

/// Words that make up valid expressions and hosts, so that matching is reached often.
const WORDS: &[&str] = &[
    "web-1",
    "web-*",
    "db-[12]",
    "id:db-1",
    "web-1,db-1",
    "label:env=prod",
    "label:env=PROD",
    "fact:os=debian",
    "fact:cpus=4",
    "fact:docker=20.*",
    "role:web",
    "role:db",
    "and",
    "or",
    "not",
    "(",
    ")",
    "*",
    "[!a]",
    "",
];

fn word(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    if u.ratio(3, 4)? {
        Ok((*u.choose(WORDS)?).to_owned())
    } else {
        u.arbitrary()
    }
}

fn check_target_matches(input: &[u8]) -> arbitrary::Result<()> {
    let mut u = Unstructured::new(input);
    let words: Vec<String> = (0..u.int_in_range(1..=12)?)
        .map(|_| word(&mut u))
        .collect::<Result<_, _>>()?;
    let Ok(target) = Target::parse(&words.join(" ")) else {
        return Ok(());
    };
    let id = word(&mut u)?;
    let facts = Facts {
        hostname: word(&mut u)?,
        os: word(&mut u)?,
        os_id: word(&mut u)?,
        kernel: u.arbitrary()?,
        docker_version: word(&mut u)?,
        cpus: u.arbitrary()?,
        memory_bytes: u.arbitrary()?,
        labels: BTreeMap::new(),
    };
    let labels: BTreeMap<String, String> = (0..u.int_in_range(0..=3)?)
        .map(|_| Ok((word(&mut u)?, word(&mut u)?)))
        .collect::<arbitrary::Result<_>>()?;
    let roles: Vec<RoleName> = (0..u.int_in_range(0..=3)?)
        .filter_map(|_| word(&mut u).ok().and_then(|w| RoleName::new(w).ok()))
        .collect();
    let roles: Vec<&RoleName> = roles.iter().collect();
    let host = HostView {
        id: &id,
        facts: &facts,
        labels: &labels,
        roles: &roles,
    };
    let matched = target.matches(&host);
    // The negation of an expression that parsed parses too, unless it nests one level too deep.
    match Target::parse(&format!("not ({})", target.as_str())) {
        Ok(negated) => assert_eq!(negated.matches(&host), !matched, "{target}"),
        Err(err) => assert!(err.message.contains("nested"), "{target}: {err}"),
    }
    Ok(())
}

#[test]
fn target_matches() {
    let check = |input: &[u8]| {
        // Inputs too short to build a host from are simply skipped.
        let _ = check_target_matches(input);
    };
    replay_corpus("target_matches", check);
    bolero::check!().for_each(check);
}

/// A digest every valid reference can be pinned to.
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn check_image_ref(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    match ImageRef::new(text.as_ref()) {
        Ok(image) => {
            assert_eq!(image.to_string(), text);
            let parts = image.parts();
            let mut rebuilt = parts.repository();
            if let Some(tag) = parts.tag {
                rebuilt = format!("{rebuilt}:{tag}");
            }
            if let Some(digest) = parts.digest {
                rebuilt = format!("{rebuilt}@{digest}");
            }
            assert_eq!(rebuilt, text, "the parts give back the reference");
            let json = serde_json::to_string(&image).expect("a reference serializes");
            assert_eq!(
                serde_json::from_str::<ImageRef>(&json).ok(),
                Some(image.clone())
            );
            let pinned = image.pinned(DIGEST).expect("any reference can be pinned");
            assert_eq!(pinned.parts().digest, Some(DIGEST));
            assert_eq!(pinned.parts().repository(), parts.repository());
            assert_eq!(pinned.parts().tag, parts.tag);
        }
        Err(err) => {
            let message = err.to_string();
            assert!(message.starts_with(&format!("{text:?}")), "{message}");
            assert!(
                message.contains("is not a valid image reference: "),
                "{message}"
            );
        }
    }
}

#[test]
fn image_ref() {
    replay_corpus("image_ref", check_image_ref);
    bolero::check!().for_each(check_image_ref);
}

fn check_join_token(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    match text.parse::<JoinToken>() {
        Ok(token) => {
            assert_eq!(token.to_string(), text.trim());
            assert_eq!(token.to_string().parse::<JoinToken>().as_ref(), Ok(&token));
            assert_eq!(token.public_id().len(), 12);
            // Compared whole: the secret may also occur inside the digest, which is shown.
            assert_eq!(
                format!("{token:?}"),
                format!(
                    "JoinToken {{ ca_digest: {:?}, secret: \"<redacted>\" }}",
                    token.ca_digest
                )
            );
        }
        Err(err) => assert!(
            err.to_string().starts_with("not a brine join token"),
            "{err}"
        ),
    }
}

#[test]
fn join_token() {
    replay_corpus("join_token", check_join_token);
    bolero::check!().for_each(check_join_token);
}

/// Host ids, role and container names, labels, agent versions, certificate roles and job ids.
fn check_names(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let text = text.as_ref();
    let minion = MinionId::new(text);
    match &minion {
        Ok(id) => {
            assert_eq!(id.as_str(), text);
            assert_eq!(id.to_string().parse::<MinionId>().as_ref(), Ok(id));
            let json = serde_json::to_string(id).expect("an id serializes");
            assert_eq!(
                serde_json::from_str::<MinionId>(&json).as_ref().ok(),
                Some(id)
            );
            assert_eq!(RoleName::new(text).map(String::from), Ok(text.to_owned()));
        }
        Err(err) => {
            assert!(!err.to_string().is_empty());
            assert!(RoleName::new(text).is_err());
        }
    }
    match ContainerName::new(text) {
        Ok(name) => {
            assert_eq!(name.as_str(), text);
            assert!(!text.contains('.'));
            assert_eq!(ContainerName::existing(text).as_ref(), Ok(&name));
        }
        Err(err) => assert!(!err.to_string().is_empty()),
    }
    // What may be read back is exactly what a host id may be.
    assert_eq!(ContainerName::existing(text).is_ok(), minion.is_ok());
    if let Some((key, value)) = text.split_once('=')
        && let Err(err) = check_label(key, value)
    {
        assert!(err.starts_with("label "), "{err}");
    }
    match AgentVersion::parse(text) {
        Ok(version) => assert_eq!(version.to_string(), text),
        Err(err) => assert!(!err.is_empty()),
    }
    match text.parse::<CertRole>() {
        Ok(role) => assert_eq!(role.as_str(), text),
        Err(err) => assert!(err.to_string().contains("unknown role"), "{err}"),
    }
    match JobId::new(text) {
        Ok(id) => assert_eq!(id.as_str(), text),
        Err(err) => assert!(!err.to_string().is_empty()),
    }
}

#[test]
fn names() {
    replay_corpus("names", check_names);
    bolero::check!().for_each(check_names);
}
