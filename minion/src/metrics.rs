//! The minion's Prometheus metrics (`metrics_listen` in minion.toml): its link to the master,
//! the jobs it applied with the time each phase took, and the events it reported (repairs,
//! crash loops, Docker going away). Documented in the README's Operations section.

use brine_common::host::HostEventKind;
use brine_common::outcome::JobResult;
use brine_daemon::metrics::{KindLabel, PhaseLabel, StatusLabel, encode, observe_phases};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::status::LinkCounts;

/// Everything the minion counts, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    link_up: Gauge,
    links: Counter,
    link_losses: Counter,
    failed_link_attempts: Counter,
    jobs: Family<StatusLabel, Counter>,
    job_phase_duration: Family<PhaseLabel, Histogram>,
    host_events: Family<KindLabel, Counter>,
}

/// Seconds from 10 ms to about 5.5 min: a pull, Docker's work, a health gate.
fn phase_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("brine_minion");
        let link_up = Gauge::default();
        registry.register(
            "link_up",
            "1 while a link to a master is up",
            link_up.clone(),
        );
        let links = Counter::default();
        registry.register("links", "Links to a master that came up", links.clone());
        let link_losses = Counter::default();
        registry.register(
            "link_losses",
            "Links that were up and were lost",
            link_losses.clone(),
        );
        let failed_link_attempts = Counter::default();
        registry.register(
            "failed_link_attempts",
            "Attempts to link that never came up: master unreachable, handshake failed, refused",
            failed_link_attempts.clone(),
        );
        let jobs = Family::<StatusLabel, Counter>::default();
        registry.register(
            "jobs",
            "Jobs applied on this host, by status (unchanged, changed, failed)",
            jobs.clone(),
        );
        let job_phase_duration =
            Family::<PhaseLabel, Histogram>::new_with_constructor(phase_buckets as _);
        registry.register_with_unit(
            "job_phase_duration",
            "Time jobs spent in each phase: pull, containers, health",
            Unit::Seconds,
            job_phase_duration.clone(),
        );
        let host_events = Family::<KindLabel, Counter>::default();
        registry.register(
            "host_events",
            "Events this host reported: repairs, crash loops, Docker going away and back, prunes",
            host_events.clone(),
        );
        Self {
            registry,
            link_up,
            links,
            link_losses,
            failed_link_attempts,
            jobs,
            job_phase_duration,
            host_events,
        }
    }
}

impl Metrics {
    pub fn job_applied(&self, result: &JobResult) {
        self.jobs
            .get_or_create(&StatusLabel {
                status: result.status.as_str(),
            })
            .inc();
        observe_phases(&self.job_phase_duration, &result.timings);
    }

    pub fn host_event(&self, kind: HostEventKind) {
        self.host_events
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// The scrape's text, with the link's state and counts as they are now.
    pub fn render(&self, link: LinkCounts) -> String {
        self.link_up.set(i64::from(link.linked));
        // The status line keeps the counts; the counters catch up with them.
        for (counter, total) in [
            (&self.links, link.links),
            (&self.link_losses, link.losses),
            (&self.failed_link_attempts, link.failed_attempts),
        ] {
            let seen = counter.get();
            counter.inc_by(u64::from(total).saturating_sub(seen));
        }
        encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brine_common::outcome::{HostStatus, JobId, Timings};

    #[test]
    fn counts_jobs_phases_events_and_the_link() {
        let metrics = Metrics::default();
        let mut result = JobResult::from_containers(
            JobId::new("20261203T101010Z-0001").expect("a job id"),
            vec![],
        );
        result.status = HostStatus::Changed;
        result.timings = Timings {
            pull_ms: 1500,
            containers_ms: 200,
            health_ms: 3000,
        };
        metrics.job_applied(&result);
        metrics.host_event(HostEventKind::CrashLooping);
        let link = LinkCounts {
            linked: true,
            links: 3,
            failed_attempts: 1,
            losses: 2,
        };
        let text = metrics.render(link);
        for line in [
            "brine_minion_link_up 1",
            "brine_minion_links_total 3",
            "brine_minion_link_losses_total 2",
            "brine_minion_failed_link_attempts_total 1",
            "brine_minion_jobs_total{status=\"changed\"} 1",
            "brine_minion_job_phase_duration_seconds_sum{phase=\"health\"} 3.0",
            "brine_minion_host_events_total{kind=\"crash_looping\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        // A second scrape with the same counts adds nothing.
        assert_eq!(metrics.render(link), text);
    }
}
