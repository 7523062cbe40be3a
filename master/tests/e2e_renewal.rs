//! End to end: a real minion whose certificate lives seconds renews it over its link, links up
//! again at once with the new certificate (so the old one is done with), stays linked past the
//! old certificate's expiry, and connects with the new one after a restart.
//!
//! Needs the binaries (`cargo build --bins`) and Docker (the minion lists its containers).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{Master, Minion, unique_id, wait_for};

/// Short enough to renew within the test, long enough for a join and a connection.
const LIFETIME: &str = "12s";
const LIFETIME_SECS: u64 = 12;

fn certificate(data: &Path) -> String {
    std::fs::read_to_string(data.join("minion.pem")).expect("read the minion's certificate")
}

fn count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

#[test]
fn a_short_lived_certificate_is_renewed_and_the_host_links_up_with_it_at_once() {
    let master = Master::start_with_env(&[("BRINE_MASTER_MINION_CERTIFICATE_LIFETIME", LIFETIME)]);
    let joined = Instant::now();
    let mut minion = Minion::start(&master, &format!("renew-{}", unique_id()));
    minion.wait_connected(&master);
    let first = certificate(&minion.data_dir());

    wait_for(
        "the minion to renew its certificate",
        Duration::from_secs(LIFETIME_SECS * 2),
        || {
            if certificate(&minion.data_dir()) == first {
                Err("the certificate is the one from the join".into())
            } else {
                Ok(())
            }
        },
    );
    // It links up again right away with the new certificate, and is linked past the first
    // certificate's expiry.
    wait_for(
        "the minion to link up with the renewed certificate",
        Duration::from_secs(10),
        || match count(&minion.log_path(), "brine_minion::link: connected") {
            2.. => Ok(()),
            n => Err(format!("{n} connections logged")),
        },
    );
    assert!(
        count(
            &minion.log_path(),
            "reconnecting with the renewed certificate"
        ) >= 1
    );
    let past_expiry = Duration::from_secs(LIFETIME_SECS + 2);
    std::thread::sleep(past_expiry.saturating_sub(joined.elapsed()));
    assert_eq!(master.connected(minion.id()), Some(true));
    assert!(count(&minion.log_path(), "certificate renewed") >= 1);
    let (code, report) = master.highstate(Some(minion.id()));
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["hosts"][0]["status"], "unchanged", "{report:#}");

    // A restart connects with the renewed certificate; the first one has expired.
    let before_restart = count(&minion.log_path(), "brine_minion::link: connected");
    minion.start_again();
    wait_for(
        "the restarted minion to connect",
        Duration::from_secs(20),
        || match count(&minion.log_path(), "brine_minion::link: connected") {
            n if n > before_restart => Ok(()),
            n => Err(format!("{n} connections logged")),
        },
    );
    minion.wait_connected(&master);
    let listed = master.minions();
    let host = listed
        .as_array()
        .and_then(|hosts| hosts.iter().find(|h| h["id"] == minion.id()))
        .unwrap_or_else(|| panic!("{} is not listed: {listed:#}", minion.id()));
    let expires = host["certificate_expires_unix_ms"]
        .as_i64()
        .expect("an expiry");
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_millis(),
    )
    .expect("milliseconds fit");
    assert!(
        expires > now_ms,
        "the listed certificate is a live one: {host:#}"
    );
}
