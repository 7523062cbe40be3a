//! The simulated hosts: their ids, data directories and source addresses, and their enrolment
//! through the master's real `Join`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use brine_common::names::MinionId;
use brine_common::token::JoinToken;
use brine_minion::config::DataDir;
use brine_minion::enrol::{JoinRequest, join};
use futures::StreamExt;

/// How often one host's join is tried before the enrolment gives up.
const JOIN_ATTEMPTS: u32 = 20;

/// One simulated host.
#[derive(Debug, Clone)]
pub struct Host {
    pub id: MinionId,
    pub data: DataDir,
    /// The loopback address it dials from.
    pub source: Option<IpAddr>,
    /// Which of ten racks it stands in (label `rack`), so targets can pick a tenth of the fleet.
    pub rack: usize,
}

/// The hosts `PREFIX00001` to `PREFIX{count}`, each with a data directory under `root`, spread
/// over `sources` loopback addresses from 127.0.1.1 on (none: the system chooses).
pub fn fleet(root: &Path, prefix: &str, count: usize, sources: u8) -> anyhow::Result<Vec<Host>> {
    (1..=count)
        .map(|n| {
            let name = format!("{prefix}{n:05}");
            let id = MinionId::new(name.clone()).with_context(|| format!("host id {name:?}"))?;
            let source = (sources > 0).then(|| {
                let k = u8::try_from(n % usize::from(sources)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + k))
            });
            Ok(Host {
                id,
                data: DataDir::new(root.join(&name)),
                source,
                rack: n % 10,
            })
        })
        .collect()
}

/// What enrolling the fleet took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Enrolment {
    /// Hosts that joined now.
    pub joined: usize,
    /// Hosts that had joined before (their data directory holds a certificate).
    pub already: usize,
    /// Join attempts the master refused or that failed and were tried again (throttled
    /// addresses, a busy master).
    pub refused: u32,
    pub seconds: f64,
}

/// Joins every host that has not joined yet, `concurrency` at a time, each with its own key and
/// certificate through the master's `Join`. A refused join is tried again after a pause, as an
/// operator's script would; one that keeps failing ends the enrolment with its error.
pub async fn enrol(
    hosts: &[Host],
    master: &str,
    token: &JoinToken,
    concurrency: usize,
) -> anyhow::Result<Enrolment> {
    let start = Instant::now();
    let already = hosts.iter().filter(|h| h.data.cert().exists()).count();
    let results: Vec<anyhow::Result<u32>> = futures::stream::iter(
        hosts
            .iter()
            .filter(|h| !h.data.cert().exists())
            .map(|host| join_host(host, master, token)),
    )
    .buffer_unordered(concurrency.max(1))
    .collect()
    .await;
    let mut refused = 0;
    for result in results {
        refused += result?;
    }
    Ok(Enrolment {
        joined: hosts.len() - already,
        already,
        refused,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Joins one host, trying again on refusals; returns how many attempts were refused.
async fn join_host(host: &Host, master: &str, token: &JoinToken) -> anyhow::Result<u32> {
    let mut refused = 0;
    loop {
        let request = JoinRequest {
            master: master.to_owned(),
            token: token.clone(),
            id: host.id.clone(),
            namespace: String::new(),
            labels: [("rack".to_owned(), format!("r{}", host.rack))].into(),
            source_address: host.source,
        };
        match join(&host.data, request).await {
            Ok(()) => return Ok(refused),
            Err(err) if refused + 1 < JOIN_ATTEMPTS => {
                tracing::debug!(host = %host.id, "join refused, trying again: {err:#}");
                refused += 1;
                // A throttled address is told to wait about a second.
                let pause = Duration::from_millis(200 * u64::from(refused.min(10)));
                tokio::time::sleep(pause).await;
            }
            Err(err) => {
                return Err(err).with_context(|| format!("host {} cannot join", host.id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_spread_over_their_sources_and_racks() {
        let hosts = fleet(Path::new("/sim"), "sim-", 12, 4).unwrap();
        assert_eq!(hosts.len(), 12);
        assert_eq!(hosts[0].id.as_str(), "sim-00001");
        assert_eq!(hosts[0].data.root(), Path::new("/sim/sim-00001"));
        let sources: std::collections::BTreeSet<_> = hosts.iter().map(|h| h.source).collect();
        assert_eq!(sources.len(), 4);
        assert_eq!(hosts[3].source, Some("127.0.1.1".parse().unwrap()));
        assert_eq!(hosts[9].rack, 0, "host 10");
        assert!(
            fleet(Path::new("/sim"), "sim-", 3, 0)
                .unwrap()
                .iter()
                .all(|h| h.source.is_none())
        );
        assert!(fleet(Path::new("/sim"), "not valid/", 1, 0).is_err());
    }
}
