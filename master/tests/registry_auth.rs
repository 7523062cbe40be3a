//! Registries that require credentials: the master resolves tags with the accounts in its
//! `[registries."HOST:PORT"]` settings, each minion pulls with the ones in its own minion.toml,
//! and wrong credentials are reported clearly without leaking the password.
//!
//! Needs Docker and Debian's `docker-registry` (see scripts/test-deps.sh).

mod support;

use std::collections::BTreeMap;

use brine_common::spec::ImageRef;
use brine_master::registry::{RegistrySettings, ResolveError, Resolver};
use support::{Fleet, Images, Minion, Registry, containers, host, quoted, status, unique_id};

fn resolver(registry: &Registry, user: &str, password: &str) -> Resolver {
    Resolver::new(BTreeMap::from([(
        registry.host(),
        RegistrySettings {
            username: Some(user.into()),
            password: Some(password.into()),
            insecure: false,
        },
    )]))
}

#[tokio::test]
async fn tags_resolve_through_a_registry_that_requires_credentials() {
    brine_proto::tls::install_crypto_provider();
    let storage = tempfile::tempdir().expect("a temp dir");
    // Push through an open registry, then serve the same storage behind a password.
    let pushed = {
        let open = Registry::start_with(Some(storage.path()), None);
        let mut images = Images::new(&open, &unique_id());
        let pushed = images.push_variant("app", 1);
        drop(images);
        pushed
    };
    let guarded = Registry::start_with(Some(storage.path()), Some(("deploy", "s3cret")));
    let port_of = |reference: &str| {
        reference.replacen(
            reference.split('/').next().unwrap_or_default(),
            &guarded.host(),
            1,
        )
    };
    let image = ImageRef::new(port_of(&pushed.reference)).expect("a valid reference");

    let pinned = resolver(&guarded, "deploy", "s3cret")
        .resolve(&image)
        .await
        .expect("the right credentials resolve the tag");
    let digest = pushed
        .repo_digest
        .split_once('@')
        .map(|(_, d)| d)
        .unwrap_or_default();
    assert_eq!(pinned.parts().digest, Some(digest), "{pinned}");

    for (user, password) in [("deploy", "wrong"), ("nobody", "s3cret")] {
        let err = resolver(&guarded, user, password)
            .resolve(&image)
            .await
            .expect_err("wrong credentials must not resolve");
        assert!(matches!(err, ResolveError::Refused { .. }), "{err}");
        assert!(err.to_string().contains("refused access"), "{err}");
        assert!(!err.to_string().contains("wrong") && !err.to_string().contains("s3cret"));
    }
    let anonymous = Resolver::default()
        .resolve(&image)
        .await
        .expect_err("anonymous is refused");
    assert!(
        anonymous.to_string().contains("refused access"),
        "{anonymous}"
    );
}

/// A registry that requires a password, serving `app:tested` pushed through an open registry on
/// the same storage; returns it, the image's reference on it, and the storage (kept alive).
fn guarded_registry(user: &str, password: &str) -> (Registry, String, tempfile::TempDir) {
    let storage = tempfile::tempdir().expect("a temp dir");
    let pushed = {
        let open = Registry::start_with(Some(storage.path()), None);
        let mut images = Images::new(&open, &unique_id());
        let pushed = images.push_variant("app", 7);
        drop(images);
        pushed
    };
    let guarded = Registry::start_with(Some(storage.path()), Some((user, password)));
    let open_host = pushed.reference.split('/').next().unwrap_or_default();
    let reference = pushed.reference.replacen(open_host, &guarded.host(), 1);
    (guarded, reference, storage)
}

/// A fleet whose master resolves tags on a registry that requires a password (`deploy`,
/// `s3cret`), with one minion per `(name, password)` that pulls with that password.
struct GuardedFleet {
    fleet: Fleet,
    /// The registry's copy of `app:tested`.
    image: String,
    minions: Vec<String>,
    _registry: Registry,
    _storage: tempfile::TempDir,
}

fn guarded_fleet(minions: &[(&str, &str)]) -> GuardedFleet {
    let mut fleet = Fleet::start(&[]);
    let (registry, image, storage) = guarded_registry("deploy", "s3cret");
    let login = |password: &str| {
        format!(
            "\n[registries.{}]\nusername = \"deploy\"\npassword = \"{password}\"\n",
            quoted(&registry.host())
        )
    };
    // The master resolves tags with its own account.
    let master_toml = fleet.master.data_dir().join("master.toml");
    let mut text = std::fs::read_to_string(&master_toml).expect("read master.toml");
    text.push_str(&login("s3cret"));
    std::fs::write(&master_toml, text).expect("write master.toml");
    fleet.master.start_again();
    let ids = minions
        .iter()
        .map(|(name, password)| {
            let id = fleet.minion_id(name);
            let mut minion = Minion::start_with(&fleet.master, &id, &[], &[], &login(password));
            minion.wait_connected(&fleet.master);
            fleet.minions.push(minion);
            id
        })
        .collect();
    GuardedFleet {
        fleet,
        image,
        minions: ids,
        _registry: registry,
        _storage: storage,
    }
}

#[test]
fn minions_pull_with_their_own_credentials_and_a_wrong_password_keeps_the_old_container() {
    let guarded = guarded_fleet(&[("good", "s3cret"), ("bad", "not-the-password")]);
    let (fleet, guarded_image) = (&guarded.fleet, &guarded.image);
    let (good_id, bad_id) = (guarded.minions[0].as_str(), guarded.minions[1].as_str());
    let roles = |image: &str| {
        format!(
            "[roles.web]\nimage = {}\n[[roles.web.containers]]\nname = \"web\"\n\
             command = [\"/bin/busybox\", \"sleep\", \"3600\"]\n\n[assign]\n{} = [\"web\"]\n",
            quoted(image),
            quoted(&format!("e2e-{}-*", fleet.uniq))
        )
    };
    fleet.master.write_roles(&roles(&fleet.app_v1.reference));
    let first = fleet.master.highstate_run(None);
    assert_eq!(first.code, 0, "{}", first.describe());
    let before = containers(bad_id);

    fleet.master.write_roles(&roles(guarded_image));
    let run = fleet.master.highstate_run(None);
    assert_eq!(run.code, 1, "{}", run.describe());
    assert_eq!(status(&run.json, good_id), "changed", "{}", run.describe());
    assert_eq!(status(&run.json, bad_id), "failed", "{}", run.describe());
    let error = host(&run.json, bad_id)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("could not be pulled"), "{error}");
    assert!(!error.contains("not-the-password"), "{error}");
    let after = containers(bad_id);
    assert_eq!(
        after.iter().map(|c| (&c.id, &c.state)).collect::<Vec<_>>(),
        before.iter().map(|c| (&c.id, &c.state)).collect::<Vec<_>>(),
        "the host with the wrong password keeps its container running"
    );
    let logs = fleet
        .minions
        .iter()
        .map(Minion::log_path)
        .chain([fleet.master.log_path()]);
    for log in logs {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            !log.contains("s3cret") && !log.contains("not-the-password"),
            "a password reached a log"
        );
    }
}

#[test]
fn a_host_that_cannot_fetch_its_images_ahead_is_skipped_in_its_turn() {
    // Batches go in the order of the ids: `first`, then `second`, whose password is wrong and
    // whose image nobody else pulls.
    let guarded = guarded_fleet(&[("first", "s3cret"), ("second", "not-the-password")]);
    let (fleet, guarded_image) = (&guarded.fleet, &guarded.image);
    let (first, second) = (guarded.minions[0].as_str(), guarded.minions[1].as_str());
    fleet.master.write_roles(&format!(
        "[roles.web]\nimage = {}\n[[roles.web.containers]]\nname = \"web\"\n\
         command = [\"/bin/busybox\", \"sleep\", \"3600\"]\n\n\
         [roles.api]\nimage = {}\n[[roles.api.containers]]\nname = \"api\"\n\
         command = [\"/bin/busybox\", \"sleep\", \"3600\"]\n\n\
         [assign]\n{} = [\"web\"]\n{} = [\"api\"]\n",
        quoted(&fleet.app_v1.reference),
        quoted(guarded_image),
        quoted(first),
        quoted(second),
    ));
    let run = fleet.master.highstate_run_with(&["--batch", "1"]);
    assert_eq!(run.code, 1, "{}", run.describe());
    assert_eq!(status(&run.json, first), "changed", "{}", run.describe());
    assert_eq!(status(&run.json, second), "skipped", "{}", run.describe());
    let error = host(&run.json, second)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("could not be fetched ahead of its batch")
            && error.contains("could not be pulled")
            && error.contains("nothing was sent"),
        "{error}"
    );
    assert!(!error.contains("not-the-password"), "{error}");
    assert!(containers(second).is_empty(), "nothing ran on the host");
}
