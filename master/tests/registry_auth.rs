//! The master resolves tags through a registry that requires credentials, taken from the
//! `[registries."HOST:PORT"]` settings, and says clearly when they are wrong.
//!
//! Needs Docker and Debian's `docker-registry` (see scripts/test-deps.sh).

mod support;

use std::collections::BTreeMap;

use brine_common::spec::ImageRef;
use brine_master::registry::{RegistrySettings, ResolveError, Resolver};
use support::{Images, Registry, unique_id};

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
