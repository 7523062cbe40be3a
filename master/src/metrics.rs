//! The master's Prometheus metrics (`metrics_listen` in master.toml): what it counts as it
//! works, and the hosts by state, read from the store when scraped. Every name is documented in
//! the README's Operations section; labels take a handful of fixed values, never a host id or a
//! job id, so a series count does not grow with the fleet.

use std::sync::Arc;
use std::time::Duration;

use brine_common::host::HostEventKind;
use brine_common::outcome::{HostReport, HostStatus, JobSummary};
use brine_daemon::metrics::{KindLabel, PhaseLabel, StatusLabel, encode, observe_phases};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::job::JobType;

mod timed_store;
use crate::store::{Approval, MinionRecord};
pub use timed_store::TimedStore;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    link: &'static str,
    approval: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    /// A hook's name: master.toml holds at most 32.
    hook: String,
    status: &'static str,
}

/// How a delivery to a hook ended, as the `status` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookDelivery {
    /// The command exited 0, or the URL answered 2xx.
    Delivered,
    /// Every try failed.
    Failed,
    /// The hook's queue was full: the event was not tried.
    Dropped,
}

impl HookDelivery {
    fn as_str(self) -> &'static str {
        match self {
            HookDelivery::Delivered => "delivered",
            HookDelivery::Failed => "failed",
            HookDelivery::Dropped => "dropped",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

/// Why a connection or a call was turned away, as the `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The master holds as many connections as it takes.
    ConnectionsFull,
    /// Too many connections without a certificate, from one source or in all.
    UnauthenticatedBusy,
    /// The TLS handshake failed: no common protocol, a certificate of another CA, garbage.
    HandshakeFailed,
    /// The TLS handshake did not finish in time.
    HandshakeTimedOut,
    /// A call without a certificate, to a method that needs one.
    NoCertificate,
    /// A call with a certificate of the CA that names no role or name brine knows.
    UnusableCertificate,
    /// A call with a certificate that is revoked.
    RevokedCertificate,
    /// A certificate whose role may not call the method.
    NotAllowed,
    /// A method the master does not serve.
    UnknownMethod,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::ConnectionsFull => "connections_full",
            Refusal::UnauthenticatedBusy => "unauthenticated_busy",
            Refusal::HandshakeFailed => "handshake_failed",
            Refusal::HandshakeTimedOut => "handshake_timed_out",
            Refusal::NoCertificate => "no_certificate",
            Refusal::UnusableCertificate => "unusable_certificate",
            Refusal::RevokedCertificate => "revoked_certificate",
            Refusal::NotAllowed => "not_allowed",
            Refusal::UnknownMethod => "unknown_method",
        }
    }
}

/// Everything the master counts, registered once; cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    hosts: Family<HostLabels, Gauge>,
    jobs_running: Gauge,
    jobs: Family<JobLabels, Counter>,
    job_duration: Family<KindLabel, Histogram>,
    host_reports: Family<StatusLabel, Counter>,
    host_phase_duration: Family<PhaseLabel, Histogram>,
    host_events: Family<KindLabel, Counter>,
    handshakes: Counter,
    refusals: Family<ReasonLabel, Counter>,
    joins: Family<StatusLabel, Counter>,
    store_duration: Family<OperationLabel, Histogram>,
    hook_deliveries: Family<HookLabels, Counter>,
}

/// Seconds from 1 ms to about 33 s: a store call, a health probe.
fn short_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Seconds from 100 ms to about 55 min: a job, a pull of a large image.
fn long_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("brine");
        let hosts = Family::<HostLabels, Gauge>::default();
        registry.register(
            "hosts",
            "Enrolled hosts by link (linked to any master or not) and approval",
            hosts.clone(),
        );
        let jobs_running = Gauge::default();
        registry.register(
            "jobs_running",
            "Jobs this master is running",
            jobs_running.clone(),
        );
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register(
            "jobs",
            "Jobs this master finished, by kind and status (succeeded, failed, cancelled)",
            jobs.clone(),
        );
        let job_duration = Family::<KindLabel, Histogram>::new_with_constructor(long_buckets as _);
        registry.register_with_unit(
            "job_duration",
            "How long finished jobs took, from start to the last report",
            Unit::Seconds,
            job_duration.clone(),
        );
        let host_reports = Family::<StatusLabel, Counter>::default();
        registry.register(
            "host_reports",
            "Hosts' reports in finished jobs, by status",
            host_reports.clone(),
        );
        let host_phase_duration =
            Family::<PhaseLabel, Histogram>::new_with_constructor(long_buckets as _);
        registry.register_with_unit(
            "host_phase_duration",
            "Time hosts spent in each phase of a job: pull, containers, health",
            Unit::Seconds,
            host_phase_duration.clone(),
        );
        let host_events = Family::<KindLabel, Counter>::default();
        registry.register(
            "host_events",
            "Events hosts reported: repairs, crash loops, Docker going away and back, prunes",
            host_events.clone(),
        );
        let handshakes = Counter::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes completed",
            handshakes.clone(),
        );
        let refusals = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "refusals",
            "Connections and calls turned away before any handler ran, by reason",
            refusals.clone(),
        );
        let joins = Family::<StatusLabel, Counter>::default();
        registry.register(
            "joins",
            "Join attempts by outcome: enrolled, refused, throttled",
            joins.clone(),
        );
        let store_duration =
            Family::<OperationLabel, Histogram>::new_with_constructor(short_buckets as _);
        registry.register_with_unit(
            "store_operation_duration",
            "How long calls to the store took, by operation",
            Unit::Seconds,
            store_duration.clone(),
        );
        let hook_deliveries = Family::<HookLabels, Counter>::default();
        registry.register(
            "hook_deliveries",
            "Deliveries of fleet events to hooks, by hook and status: delivered, failed (after \
             its retries), dropped (the hook's queue was full)",
            hook_deliveries.clone(),
        );
        Self {
            registry,
            hosts,
            jobs_running,
            jobs,
            job_duration,
            host_reports,
            host_phase_duration,
            host_events,
            handshakes,
            refusals,
            joins,
            store_duration,
            hook_deliveries,
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The scrape's text, after setting the hosts' counts from `hosts` (each with whether it
    /// is linked to a master) and the running jobs.
    pub fn render<'a>(
        &self,
        hosts: impl IntoIterator<Item = (&'a MinionRecord, bool)>,
        jobs_running: usize,
    ) -> String {
        let mut counts = std::collections::HashMap::<HostLabels, i64>::new();
        for approval in [
            Approval::Accepted,
            Approval::Pending,
            Approval::Rejected,
            Approval::Revoked,
        ] {
            for link in ["linked", "unlinked"] {
                counts.insert(
                    HostLabels {
                        link,
                        approval: approval_name(approval),
                    },
                    0,
                );
            }
        }
        for (host, linked) in hosts {
            let labels = HostLabels {
                link: if linked { "linked" } else { "unlinked" },
                approval: approval_name(host.approval),
            };
            *counts.entry(labels).or_default() += 1;
        }
        for (labels, count) in counts {
            self.hosts.get_or_create(&labels).set(count);
        }
        self.jobs_running
            .set(i64::try_from(jobs_running).unwrap_or(i64::MAX));
        encode(&self.registry)
    }

    /// A job this master ran has finished.
    pub fn job_finished(&self, kind: JobType, summary: &JobSummary) {
        let status = if summary.cancelled_by.is_some() {
            "cancelled"
        } else if summary.is_success() {
            "succeeded"
        } else {
            "failed"
        };
        let kind = kind.as_str();
        self.jobs.get_or_create(&JobLabels { kind, status }).inc();
        let took_ms = summary
            .finished_at_unix_ms
            .saturating_sub(summary.started_at_unix_ms)
            .max(0);
        self.job_duration
            .get_or_create(&KindLabel { kind })
            .observe(took_ms as f64 / 1000.0);
        for host in &summary.hosts {
            self.host_reported(host);
        }
    }

    fn host_reported(&self, report: &HostReport) {
        self.host_reports
            .get_or_create(&StatusLabel {
                status: report.status.as_str(),
            })
            .inc();
        // Only hosts that ran the job have phases to show.
        if !matches!(
            report.status,
            HostStatus::Unchanged | HostStatus::Changed | HostStatus::Failed
        ) {
            return;
        }
        observe_phases(&self.host_phase_duration, &report.timings);
    }

    pub fn host_event(&self, kind: HostEventKind) {
        self.host_events
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
    }

    pub fn handshake_completed(&self) {
        self.handshakes.inc();
    }

    pub fn refused(&self, why: Refusal) {
        self.refusals
            .get_or_create(&ReasonLabel {
                reason: why.as_str(),
            })
            .inc();
    }

    pub fn join(&self, outcome: JoinOutcomeLabel) {
        self.joins
            .get_or_create(&StatusLabel {
                status: outcome.as_str(),
            })
            .inc();
    }

    pub fn hook_delivery(&self, hook: &str, delivery: HookDelivery) {
        self.hook_deliveries
            .get_or_create(&HookLabels {
                hook: hook.to_owned(),
                status: delivery.as_str(),
            })
            .inc();
    }

    pub fn store_call(&self, operation: &'static str, took: Duration) {
        self.store_duration
            .get_or_create(&OperationLabel { operation })
            .observe(took.as_secs_f64());
    }
}

/// How a join ended, as the `status` label of `brine_joins_total` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcomeLabel {
    Enrolled,
    Refused,
    Throttled,
}

impl JoinOutcomeLabel {
    fn as_str(self) -> &'static str {
        match self {
            JoinOutcomeLabel::Enrolled => "enrolled",
            JoinOutcomeLabel::Refused => "refused",
            JoinOutcomeLabel::Throttled => "throttled",
        }
    }
}

fn approval_name(approval: Approval) -> &'static str {
    match approval {
        Approval::Accepted => "accepted",
        Approval::Pending => "pending",
        Approval::Rejected => "rejected",
        Approval::Revoked => "revoked",
    }
}
