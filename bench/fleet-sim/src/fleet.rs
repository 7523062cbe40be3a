//! Runs every enrolled host's minion, the product's own link and keeper, over a simulated
//! engine, and reports how many are linked.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use brine_daemon::config::Overrides;
use brine_minion::config::MinionConfig;
use brine_minion::status::{LinkCounts, StatusLine};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::hosts::Host;
use crate::runtime::{Behaviour, SimulatedRuntime};

/// The fleet's links at one moment, summed over its hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Links {
    pub hosts: usize,
    /// Hosts linked now.
    pub linked: usize,
    /// Link attempts that never came up, over all hosts since they started.
    pub failed_attempts: u64,
    /// Links that were up and were lost.
    pub losses: u64,
}

impl Links {
    fn sum(statuses: &[Arc<StatusLine>]) -> Self {
        statuses.iter().map(|s| s.counts()).fold(
            Self {
                hosts: statuses.len(),
                ..Self::default()
            },
            |mut links,
             LinkCounts {
                 linked,
                 failed_attempts,
                 losses,
                 ..
             }| {
                links.linked += usize::from(linked);
                links.failed_attempts += u64::from(failed_attempts);
                links.losses += u64::from(losses);
                links
            },
        )
    }

    pub fn all_linked(&self) -> bool {
        self.linked == self.hosts
    }
}

/// One line of the simulator's report on standard output.
#[derive(Debug, Serialize)]
struct ReportLine {
    /// `started`, `all_linked` (every host linked, after some were not), `not_all_linked`, or
    /// `links` (a periodic count).
    event: &'static str,
    /// Seconds since the Unix epoch, to line up with the benchmark's own clock.
    unix_s: f64,
    /// Seconds since the simulator started its hosts.
    elapsed_s: f64,
    #[serde(flatten)]
    links: Links,
    /// Containers on all the simulated engines, on periodic lines only.
    #[serde(skip_serializing_if = "Option::is_none")]
    containers: Option<usize>,
}

/// The fleet's minions, running until the shutdown token is cancelled.
pub struct Fleet {
    statuses: Vec<Arc<StatusLine>>,
    runtimes: Vec<SimulatedRuntime>,
    minions: tokio::task::JoinSet<anyhow::Result<()>>,
    started: Instant,
}

impl Fleet {
    /// Starts one minion per host. A host that has not joined is an error: nothing starts.
    pub fn start(
        hosts: &[Host],
        behaviour: Behaviour,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let configs = hosts
            .iter()
            .map(|host| {
                // The simulator's own environment must not reconfigure every host.
                MinionConfig::load_with(&host.data, &Overrides::default())
                    .with_context(|| format!("host {} has not joined", host.id))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut fleet = Self {
            statuses: vec![],
            runtimes: vec![],
            minions: tokio::task::JoinSet::new(),
            started: Instant::now(),
        };
        for (host, config) in hosts.iter().zip(configs) {
            let status = Arc::new(StatusLine::default());
            let runtime = SimulatedRuntime::new(behaviour);
            fleet.minions.spawn(brine_minion::link::run_with_status(
                host.data.clone(),
                config,
                runtime.clone(),
                status.clone(),
                shutdown.clone().cancelled_owned(),
            ));
            fleet.statuses.push(status);
            fleet.runtimes.push(runtime);
        }
        Ok(fleet)
    }

    pub fn links(&self) -> Links {
        Links::sum(&self.statuses)
    }

    /// Containers on all the simulated engines.
    pub fn containers(&self) -> usize {
        self.runtimes
            .iter()
            .map(|r| r.container_names().len())
            .sum()
    }

    /// Writes a report line to `out` every `every`, and one as soon as every host is linked or
    /// stops being linked, until `shutdown`; then waits for the minions to stop.
    pub async fn report(
        mut self,
        mut out: impl Write,
        every: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        self.write(&mut out, "started", self.links(), None)?;
        let mut all_linked = false;
        let mut last_periodic = Instant::now();
        // Checked often, so the moment every host is linked again is known to 50 ms.
        let mut ticks = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
                Some(ended) = self.minions.join_next() => {
                    // A minion only ends early on a broken data directory: say which.
                    ended.context("a simulated minion panicked")??;
                }
            }
            let links = self.links();
            if links.all_linked() != all_linked {
                all_linked = links.all_linked();
                let event = if all_linked {
                    "all_linked"
                } else {
                    "not_all_linked"
                };
                self.write(&mut out, event, links, None)?;
            }
            if last_periodic.elapsed() >= every {
                last_periodic = Instant::now();
                self.write(&mut out, "links", links, Some(self.containers()))?;
            }
        }
        while let Some(ended) = self.minions.join_next().await {
            if let Err(err) = ended.context("a simulated minion panicked")? {
                tracing::warn!("a simulated minion stopped with an error: {err:#}");
            }
        }
        Ok(())
    }

    fn write(
        &self,
        out: &mut impl Write,
        event: &'static str,
        links: Links,
        containers: Option<usize>,
    ) -> anyhow::Result<()> {
        let line = ReportLine {
            event,
            unix_s: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            elapsed_s: self.started.elapsed().as_secs_f64(),
            links,
            containers,
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
        out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn links_sum_over_hosts() {
        let statuses: Vec<_> = (0..3).map(|_| Arc::new(StatusLine::default())).collect();
        statuses[0].linked("m");
        statuses[1].lost("m", Duration::ZERO);
        statuses[1].linked("m");
        statuses[1].lost("m", Duration::ZERO);
        statuses[2].lost("m", Duration::ZERO);
        let links = Links::sum(&statuses);
        assert_eq!(
            links,
            Links {
                hosts: 3,
                linked: 1,
                failed_attempts: 2,
                losses: 1
            }
        );
        assert!(!links.all_linked());
    }
}
