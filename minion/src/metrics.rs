//! The minion's Prometheus metrics (`metrics_listen` in minion.toml): its link to the master,
//! the jobs it applied with the time each phase took, and the events it reported (repairs,
//! crash loops, Docker going away). Documented in the README's Operations section.

use std::sync::Arc;

use brine_common::host::HostEventKind;
use brine_common::outcome::JobResult;
use brine_daemon::metrics::{KindLabel, PhaseLabel, StatusLabel, encode, observe_phases};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::status::StatusLine;

/// Everything the minion counts, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    jobs: Family<StatusLabel, Counter>,
    job_phase_duration: Family<PhaseLabel, Histogram>,
    host_events: Family<KindLabel, Counter>,
}

/// Seconds from 10 ms to about 5.5 min: a pull, Docker's work, a health gate.
fn phase_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

/// The link's state and counts, read from the status line (which keeps them) at each scrape.
#[derive(Debug)]
struct LinkCollector {
    status: Arc<StatusLine>,
}

impl Collector for LinkCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.status.counts();
        let link_up = ConstGauge::new(i64::from(counts.linked));
        link_up.encode(encoder.encode_descriptor(
            "link_up",
            "1 while a link to a master is up",
            None,
            link_up.metric_type(),
        )?)?;
        for (name, help, total) in [
            ("links", "Links to a master that came up", counts.links),
            (
                "link_losses",
                "Links that were up and were lost",
                counts.losses,
            ),
            (
                "failed_link_attempts",
                "Attempts to link that never came up: master unreachable, handshake failed, \
                 refused",
                counts.failed_attempts,
            ),
        ] {
            let counter = ConstCounter::new(u64::from(total));
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// The minion's metrics, with the link's as `status` keeps them.
    pub fn new(status: Arc<StatusLine>) -> Self {
        let mut registry = Registry::with_prefix("brine_minion");
        registry.register_collector(Box::new(LinkCollector { status }));
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
            jobs,
            job_phase_duration,
            host_events,
        }
    }

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

    /// The scrape's text.
    pub fn render(&self) -> String {
        encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brine_common::outcome::{HostStatus, JobId, Timings};

    #[test]
    fn counts_jobs_phases_events_and_the_link() {
        let status = Arc::new(StatusLine::default());
        let metrics = Metrics::new(status.clone());
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
        // Three links, two of them lost, and an attempt that never came up; linked now.
        for _ in 0..2 {
            status.linked("m");
            status.lost("m", std::time::Duration::from_secs(1));
        }
        status.lost("m", std::time::Duration::from_secs(1));
        status.linked("m");
        let text = metrics.render();
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
        assert_eq!(metrics.render(), text);
    }
}
