//! End to end: a job outlives a dropped link. The minion finishes what it was applying, reconnects
//! with jitter and reports on its new link; the highstate counts that report instead of calling
//! the host unreachable.
//!
//! Needs Docker, Debian's `docker-registry` and `busybox-static`, and the binaries.

mod support;

use std::time::Duration;

use support::{Fleet, Minion, TcpProxy, containers, quoted, tail, wait_for};

#[test]
fn a_result_made_while_the_link_was_down_arrives_on_the_next_one() {
    let mut fleet = Fleet::start(&[]);
    let id = fleet.minion_id("a");
    let proxy = TcpProxy::start(&fleet.master.address());
    let mut minion = Minion::start_with(
        &fleet.master,
        &id,
        &[],
        &[("BRINE_MINION_MASTER", &proxy.address())],
        "",
    );
    minion.wait_connected(&fleet.master);
    fleet.minions.push(minion);
    // Slow enough to cut the link while the host waits for its container to be healthy.
    fleet.master.write_roles(&format!(
        "[roles.web]\nimage = {}\n[[roles.web.containers]]\nname = \"web\"\n\
         command = [\"/bin/busybox\", \"sleep\", \"3600\"]\n\
         health = {{ min_healthy = \"4s\", deadline = \"60s\" }}\n\n\
         [assign]\n{} = [\"web\"]\n",
        quoted(&fleet.app_v1.reference),
        quoted(&id)
    ));

    let run = std::thread::scope(|scope| {
        let highstate = scope.spawn(|| fleet.master.highstate_run(None));
        wait_for(
            "the container to start (the job is under way)",
            Duration::from_secs(30),
            || match containers(&id).first() {
                Some(c) if c.state == "running" => Ok(()),
                _ => Err("not yet".into()),
            },
        );
        proxy.cut();
        highstate.join().expect("the highstate thread")
    });
    let log = fleet.minions[0].log_path();
    assert_eq!(
        run.code,
        0,
        "{}\nminion log:\n{}",
        run.describe(),
        tail(&log, 30)
    );
    assert_eq!(
        run.json["hosts"][0]["status"],
        "changed",
        "{}",
        run.describe()
    );
    let connections = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("brine_minion::link: connected")
        .count();
    assert!(
        connections >= 2,
        "the link was not cut:\n{}",
        tail(&log, 30)
    );
}
