//! End to end: a minion keeps the images of the current and the `keep_releases` (3) releases
//! before it, removes older ones after a successful job, and a rollback to any kept release
//! works with the registry gone.
//!
//! Needs Docker, Debian's `docker-registry` and `busybox-static`, and the binaries.

mod support;

use std::time::Duration;

use support::{Fleet, containers, quoted, run_with_deadline, try_docker, wait_for};

const KEEP_RELEASES: u32 = 3;

fn image_is_here(id: &str) -> bool {
    try_docker(&["image", "inspect", "--format", "{{.Id}}", id]).code == 0
}

#[test]
fn old_images_go_and_every_kept_release_rolls_back_without_the_registry() {
    let mut fleet = Fleet::start(&["a"]);
    let id = fleet.minion_id("a");
    fleet.master.write_roles(&format!(
        "[roles.web]\nimage = {}\n[[roles.web.containers]]\nname = \"web\"\n\
         command = [\"/bin/busybox\", \"sleep\", \"3600\"]\n\n[assign]\n{} = [\"web\"]\n",
        quoted(&fleet.app_v1.reference),
        quoted(&id)
    ));
    let mut variants = vec![fleet.app_v1.id.clone()];
    let run = fleet.master.highstate_run(None);
    assert_eq!(run.code, 0, "{}", run.describe());
    let releases = KEEP_RELEASES + 2;
    for variant in 2..=releases {
        variants.push(fleet.images.push_variant("app", variant).id);
        let run = fleet.master.highstate_run(None);
        assert_eq!(run.code, 0, "{}", run.describe());
    }
    let running = |id: &str| {
        containers(id)
            .into_iter()
            .find(|c| c.name.ends_with(".web"))
            .map(|c| c.image_id)
    };
    assert_eq!(running(&id).as_deref(), variants.last().map(String::as_str));

    // Pruning follows the job; give it a moment.
    wait_for(
        "the oldest image to be removed",
        Duration::from_secs(20),
        || {
            if image_is_here(&variants[0]) {
                Err("variant 1 is still here".into())
            } else {
                Ok(())
            }
        },
    );
    for (n, variant) in variants.iter().enumerate().skip(1) {
        assert!(image_is_here(variant), "variant {} was removed", n + 1);
    }
    let shown = run_with_deadline(
        &mut fleet
            .master
            .cli(&["minions", "show", &id, "--output", "json"]),
        Duration::from_secs(20),
        "brine-master minions show",
    );
    assert!(shown.stdout.contains("images_removed"), "{}", shown.stdout);

    // Without a registry, each kept release still comes back (releases are numbered from 1).
    fleet.registry.stop();
    for release in (2..releases).rev() {
        let run = run_with_deadline(
            &mut fleet
                .master
                .cli(&["rollback", "--to", &release.to_string(), "--output", "json"]),
            Duration::from_secs(120),
            "brine-master rollback",
        );
        assert_eq!(
            run.code,
            0,
            "rollback to {release}: {}",
            run.describe("rollback")
        );
        let index = usize::try_from(release - 1).expect("a small index");
        assert_eq!(running(&id).as_deref(), Some(variants[index].as_str()));
    }
    // The pruned one would need the registry.
    let run = run_with_deadline(
        &mut fleet
            .master
            .cli(&["rollback", "--to", "1", "--output", "json"]),
        Duration::from_secs(120),
        "brine-master rollback",
    );
    assert_eq!(
        run.code,
        1,
        "{}",
        run.describe("rollback to the pruned release")
    );
}
