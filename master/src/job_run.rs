//! The decisions of one running job, as a state machine that does no IO and reads no clock.
//!
//! It decides which hosts each batch sends to, when a batch is over (every host reported, the
//! batch's deadline passed, or a host whose link dropped did not come back within
//! [`RECONNECT_GRACE`]), when the rollout stops (too many failures, a cancel) and which hosts
//! that skips, what auto-revert sends back, and every host's final report. Its driver
//! (`highstate.rs`) feeds it what happened, with the time it happened, and takes the [`Step`]s
//! it answers with: send these commands, tell the caller this host's report, record progress.
//! So the rollout rules are tested without a network, Docker or waiting.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use brine_common::names::MinionId;
use brine_common::outcome::{HostReport, HostStatus, JobId, JobResult, Timings};
use brine_common::spec::{DesiredState, ImageRef};
use tokio::time::Instant;

use crate::release::{Pins, Release};
use crate::rollout::Rollout;

mod prefetch;
#[cfg(test)]
mod tests;

use prefetch::Prefetches;

/// How long a job waits for a host whose link dropped to come back and report; a minion
/// reconnects within a second or two, and sends a result it could not send before.
pub const RECONNECT_GRACE: Duration = Duration::from_secs(15);

/// A job ready to run: what every host gets, and how to roll it out.
#[derive(Debug)]
pub struct JobPlan {
    pub job_id: JobId,
    pub rollout: Rollout,
    /// How long each batch may take.
    pub timeout: Duration,
    pub plan: bool,
    /// Each targeted host's desired state.
    pub desired: BTreeMap<MinionId, DesiredState>,
    /// Targeted hosts that fail in their turn without a command (an image did not resolve).
    pub blocked: BTreeMap<MinionId, HostReport>,
    /// The release in force before the job, which auto-revert returns changed hosts to.
    pub previous_release: Option<Release>,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send each host its desired state under `job_id`, valid for `valid_for`; a host that
    /// cannot be reached is reported back with [`JobRun::undeliverable`].
    Send {
        job_id: JobId,
        hosts: BTreeMap<MinionId, DesiredState>,
        plan: bool,
        valid_for: Duration,
        /// Which batch, counting from 1, of how many; `None` for an auto-revert.
        batch: Option<(usize, usize)>,
    },
    /// Ask each host to fetch these images now, ahead of its batch, and to answer under
    /// `job_id` within `valid_for`; a host that cannot be asked is reported back with
    /// [`JobRun::prefetch_unanswered`], its answer with [`JobRun::prefetched`].
    Prefetch {
        job_id: JobId,
        hosts: Vec<(MinionId, Vec<ImageRef>)>,
        valid_for: Duration,
    },
    /// A host's final report (or a later one, reported late), for the caller.
    Finished(HostReport),
    /// A batch is over: a moment to record the job's progress.
    BatchOver,
    /// The job is over.
    Done,
}

/// One running job.
#[derive(Debug)]
pub struct JobRun {
    job_id: JobId,
    rollout: Rollout,
    timeout: Duration,
    plan: bool,
    previous_release: Option<Release>,
    targets: Vec<MinionId>,
    /// Not sent yet.
    unsent: BTreeMap<MinionId, DesiredState>,
    blocked: BTreeMap<MinionId, HostReport>,
    /// What each host was sent, for auto-revert.
    sent: BTreeMap<MinionId, DesiredState>,
    batches: VecDeque<Vec<MinionId>>,
    batch_count: usize,
    batches_started: usize,
    phase: Phase,
    /// The hosts of the running batch (or revert) that have not reported.
    pending: BTreeMap<MinionId, Pending>,
    /// How many of `pending` lost their link: with none, nothing looks through all of them at
    /// each event (10,000 hosts reporting would cost 100 million looks).
    links_lost: usize,
    reports: BTreeMap<MinionId, HostReport>,
    /// The auto-revert's own reports, turned into the hosts' final ones when it is over.
    reverted: BTreeMap<MinionId, HostReport>,
    cancelled_by: Option<String>,
    /// The hosts of later batches fetching their images ahead of their turn.
    prefetches: Prefetches,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Before a batch; after the first, waiting for the rollout's batch wait until `until`.
    Between {
        until: Option<Instant>,
    },
    /// A batch runs until every host reported or `deadline`.
    Batch {
        deadline: Instant,
    },
    /// Changed hosts are sent back to `release` until they reported or `deadline`.
    Reverting {
        release: u64,
        deadline: Instant,
    },
    Done,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    started: Instant,
    /// When its link dropped, if it did: it has [`RECONNECT_GRACE`] to report on a new one.
    link_lost: Option<Instant>,
}

impl JobRun {
    pub fn new(plan: JobPlan) -> Self {
        Self::resume(plan, BTreeMap::new())
    }

    /// A job that another master started and could not finish, taken over: `done` are the
    /// final reports it recorded. Their hosts get nothing again; the batches all of whose hosts
    /// reported are over, and the rest runs as it would have (a batch that was under way sends
    /// its commands again to the hosts it has no report of: a host that applied one already
    /// answers with its result and applies nothing).
    pub fn resume(plan: JobPlan, done: BTreeMap<MinionId, HostReport>) -> Self {
        let targets: Vec<MinionId> = plan
            .desired
            .keys()
            .chain(plan.blocked.keys())
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut batches: VecDeque<Vec<MinionId>> = plan.rollout.batches(&targets).into();
        let batch_count = batches.len();
        let over = batches
            .iter()
            .take_while(|batch| batch.iter().all(|id| done.contains_key(id)))
            .count();
        batches.drain(..over);
        let mut unsent = plan.desired;
        let mut blocked = plan.blocked;
        let mut sent = BTreeMap::new();
        for id in done.keys() {
            blocked.remove(id);
            if let Some(desired) = unsent.remove(id) {
                sent.insert(id.clone(), desired);
            }
        }
        // The first batch pulls in its own turn; a plan pulls nothing.
        let ahead = batches.iter().skip(1).flatten().filter_map(|id| {
            let images = unsent.get(id)?.images().into_iter().cloned();
            Some((id.clone(), images.collect()))
        });
        let cap = match plan.plan {
            true => 0,
            false => usize::try_from(plan.rollout.concurrent_pulls).unwrap_or(usize::MAX),
        };
        let prefetches = Prefetches::new(cap, plan.timeout, ahead);
        Self {
            job_id: plan.job_id,
            timeout: plan.timeout,
            plan: plan.plan,
            previous_release: plan.previous_release,
            batch_count,
            batches,
            rollout: plan.rollout,
            targets,
            unsent,
            blocked,
            sent,
            batches_started: over,
            phase: Phase::Between { until: None },
            pending: BTreeMap::new(),
            links_lost: 0,
            reports: done,
            reverted: BTreeMap::new(),
            cancelled_by: None,
            prefetches,
        }
    }

    /// Every targeted host, in the order batches take them.
    pub fn targets(&self) -> &[MinionId] {
        &self.targets
    }

    /// Every final report so far.
    pub fn reports(&self) -> &BTreeMap<MinionId, HostReport> {
        &self.reports
    }

    pub fn into_reports(self) -> BTreeMap<MinionId, HostReport> {
        self.reports
    }

    pub fn cancelled_by(&self) -> Option<&str> {
        self.cancelled_by.as_deref()
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether `host`'s progress goes to the caller: it is in the running batch and has not
    /// reported (an auto-revert's progress is not shown).
    pub fn shows_progress_of(&self, host: &MinionId) -> bool {
        matches!(self.phase, Phase::Batch { .. }) && self.pending.contains_key(host)
    }

    /// When the driver must call [`JobRun::time_passed`] unless something happens first.
    pub fn wake_at(&self) -> Option<Instant> {
        let grace_over = || {
            if self.links_lost == 0 {
                return None;
            }
            self.pending
                .values()
                .filter_map(|host| host.link_lost)
                .min()
                .map(|lost| lost + RECONNECT_GRACE)
        };
        let phase = match self.phase {
            Phase::Between { until } => until,
            Phase::Batch { deadline } | Phase::Reverting { deadline, .. } => {
                Some(grace_over().map_or(deadline, |grace| grace.min(deadline)))
            }
            Phase::Done => None,
        };
        match (phase, self.prefetches.wake_at()) {
            (Some(phase), Some(fetch)) => Some(phase.min(fetch)),
            (phase, fetch) => phase.or(fetch),
        }
    }

    /// Starts the first batch.
    pub fn start(&mut self, now: Instant) -> Vec<Step> {
        self.time_passed(now)
    }

    /// Time passed: a deadline, a reconnect grace or a batch wait may be over.
    pub fn time_passed(&mut self, now: Instant) -> Vec<Step> {
        let mut steps = vec![];
        self.prefetches.time_passed(now);
        self.advance(now, &mut steps);
        steps
    }

    /// `host` answered a [`Step::Prefetch`]: its images are there, or why not.
    pub fn prefetched(
        &mut self,
        host: &MinionId,
        outcome: Result<(), String>,
        now: Instant,
    ) -> Vec<Step> {
        self.prefetches.answered(host, outcome);
        let mut steps = vec![];
        self.advance(now, &mut steps);
        steps
    }

    /// A [`Step::Prefetch`] could not be handed to `host`'s link: its own turn will pull.
    pub fn prefetch_unanswered(&mut self, host: &MinionId, now: Instant) -> Vec<Step> {
        self.prefetches.unanswered(host);
        let mut steps = vec![];
        self.advance(now, &mut steps);
        steps
    }

    /// `host` reported `result`.
    pub fn result(&mut self, host: MinionId, result: JobResult, now: Instant) -> Vec<Step> {
        let mut steps = vec![];
        match self.take_pending(&host) {
            Some(pending) => {
                let duration_ms = elapsed_ms(pending.started, now);
                let report = HostReport::from_result(host, result, duration_ms, false);
                self.host_over(report, &mut steps);
            }
            // A host the job gave up on reports after all: its record shows what it really did.
            None if !self.is_done() => {
                let reports = match self.phase {
                    Phase::Reverting { .. } => &self.reverted,
                    _ => &self.reports,
                };
                if reports.get(&host).is_some_and(HostReport::gave_up) {
                    let late = HostReport::from_result(host, result, 0, true);
                    self.host_over(late, &mut steps);
                }
            }
            None => {}
        }
        self.advance(now, &mut steps);
        steps
    }

    /// The command for `host` could not be handed to its link.
    pub fn undeliverable(&mut self, host: MinionId, reason: &str, now: Instant) -> Vec<Step> {
        let mut steps = vec![];
        if let Some(pending) = self.take_pending(&host) {
            let report = no_answer(host, HostStatus::Unreachable, reason, pending.started, now);
            self.host_over(report, &mut steps);
        }
        self.advance(now, &mut steps);
        steps
    }

    /// `host`'s link dropped; it has [`RECONNECT_GRACE`] to report on a new one.
    pub fn link_lost(&mut self, host: &MinionId, now: Instant) {
        // A fetch ahead is answered on the link that asked: that answer will not come.
        self.prefetches.unanswered(host);
        if let Some(pending) = self.pending.get_mut(host)
            && pending.link_lost.is_none()
        {
            pending.link_lost = Some(now);
            self.links_lost += 1;
        }
    }

    /// Takes `host` out of the pending ones.
    fn take_pending(&mut self, host: &MinionId) -> Option<Pending> {
        let pending = self.pending.remove(host)?;
        if pending.link_lost.is_some() {
            self.links_lost -= 1;
        }
        Some(pending)
    }

    /// Someone cancelled the job: the running batch finishes, no other starts, nothing is
    /// reverted.
    pub fn cancel(&mut self, by: &str, now: Instant) -> Vec<Step> {
        self.cancelled_by.get_or_insert_with(|| by.to_owned());
        let mut steps = vec![];
        self.advance(now, &mut steps);
        steps
    }

    /// A host's report: final for the job, or for the revert while it runs.
    fn host_over(&mut self, report: HostReport, steps: &mut Vec<Step>) {
        if matches!(self.phase, Phase::Reverting { .. }) {
            self.reverted.insert(report.minion_id.clone(), report);
        } else {
            self.finished(report, steps);
        }
    }

    fn finished(&mut self, report: HostReport, steps: &mut Vec<Step>) {
        self.reports
            .insert(report.minion_id.clone(), report.clone());
        steps.push(Step::Finished(report));
    }

    /// Moves on as far as `now` allows, and asks the hosts of later batches to fetch ahead
    /// while there is room.
    fn advance(&mut self, now: Instant, steps: &mut Vec<Step>) {
        self.advance_phase(now, steps);
        if self.is_done() {
            self.prefetches.stop();
            return;
        }
        let hosts = self.prefetches.start(now);
        if !hosts.is_empty() {
            steps.push(Step::Prefetch {
                job_id: self.job_id.clone(),
                hosts,
                valid_for: self.timeout,
            });
        }
    }

    /// Moves the batches on as far as `now` allows.
    fn advance_phase(&mut self, now: Instant, steps: &mut Vec<Step>) {
        loop {
            match self.phase.clone() {
                Phase::Done => return,
                Phase::Between { until } => {
                    if self.cancelled_by.is_none() && until.is_some_and(|until| now < until) {
                        return;
                    }
                    if self.batches.is_empty() {
                        self.batches_over(now, steps);
                        continue;
                    }
                    if self.batches_started > 0 {
                        // Between batches, too many failures stop the rollout.
                        let failures = self
                            .reports
                            .values()
                            .filter(|r| !r.status.is_success())
                            .count();
                        if self.rollout.must_stop(failures) {
                            let reason = format!(
                                "the rollout stopped after {failures} hosts failed ({} allowed); \
                                 nothing was sent to this host",
                                self.rollout.max_failures
                            );
                            self.skip_the_rest(&reason, now, steps);
                            continue;
                        }
                        if until.is_none()
                            && self.cancelled_by.is_none()
                            && !self.rollout.batch_wait.is_zero()
                        {
                            self.phase = Phase::Between {
                                until: Some(now + self.rollout.batch_wait),
                            };
                            return;
                        }
                    }
                    if let Some(by) = self.cancelled_by.clone() {
                        let reason =
                            format!("the job was cancelled by {by}; nothing was sent to this host");
                        self.skip_the_rest(&reason, now, steps);
                        continue;
                    }
                    self.start_batch(now, steps);
                }
                Phase::Batch { deadline } | Phase::Reverting { deadline, .. } => {
                    self.give_up_on_the_gone(now, steps);
                    if now >= deadline {
                        let message = format!(
                            "no report within {}",
                            humantime::format_duration(self.timeout)
                        );
                        self.links_lost = 0;
                        for (id, host) in std::mem::take(&mut self.pending) {
                            let report =
                                no_answer(id, HostStatus::TimedOut, &message, host.started, now);
                            self.host_over(report, steps);
                        }
                    }
                    if !self.pending.is_empty() {
                        return;
                    }
                    match self.phase {
                        Phase::Reverting { release, .. } => self.revert_over(release, steps),
                        _ => {
                            steps.push(Step::BatchOver);
                            self.phase = Phase::Between { until: None };
                        }
                    }
                }
            }
        }
    }

    fn start_batch(&mut self, now: Instant, steps: &mut Vec<Step>) {
        let Some(batch) = self.batches.pop_front() else {
            return;
        };
        self.batches_started += 1;
        // Hosts whose images did not resolve fail in their turn, without a command; so do
        // hosts that could not fetch theirs ahead.
        for id in &batch {
            if let Some(report) = self.blocked.remove(id) {
                self.finished(report, steps);
            }
            if let Some(error) = self.prefetches.reached(id)
                && self.unsent.remove(id).is_some()
            {
                let reason = format!(
                    "its images could not be fetched ahead of its batch: {error}; nothing was \
                     sent to this host"
                );
                let report = no_answer(id.clone(), HostStatus::Skipped, &reason, now, now);
                self.finished(report, steps);
            }
        }
        let hosts: BTreeMap<MinionId, DesiredState> = batch
            .into_iter()
            .filter_map(|id| self.unsent.remove_entry(&id))
            .collect();
        self.sent.extend(
            hosts
                .iter()
                .map(|(id, desired)| (id.clone(), desired.clone())),
        );
        self.expect_reports(&hosts, now);
        self.phase = Phase::Batch {
            deadline: now + self.timeout,
        };
        if !hosts.is_empty() {
            steps.push(Step::Send {
                job_id: self.job_id.clone(),
                hosts,
                plan: self.plan,
                valid_for: self.timeout,
                batch: Some((self.batches_started, self.batch_count)),
            });
        }
    }

    /// `hosts` are sent their commands `now`: the job waits for their reports.
    fn expect_reports(&mut self, hosts: &BTreeMap<MinionId, DesiredState>, now: Instant) {
        self.pending.extend(hosts.keys().map(|id| {
            let pending = Pending {
                started: now,
                link_lost: None,
            };
            (id.clone(), pending)
        }));
    }

    /// Hosts whose link dropped and did not come back within the grace are unreachable.
    fn give_up_on_the_gone(&mut self, now: Instant, steps: &mut Vec<Step>) {
        if self.links_lost == 0 {
            return;
        }
        let gone: Vec<MinionId> = self
            .pending
            .iter()
            .filter(|(_, host)| host.link_lost.is_some_and(|at| at + RECONNECT_GRACE <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(host) = self.take_pending(&id) {
                let report = no_answer(
                    id,
                    HostStatus::Unreachable,
                    "the minion's link dropped before it reported, and it did not come back",
                    host.started,
                    now,
                );
                self.host_over(report, steps);
            }
        }
    }

    /// Reports every host the job has not reached as skipped, for `reason`.
    fn skip_the_rest(&mut self, reason: &str, now: Instant, steps: &mut Vec<Step>) {
        let rest: std::collections::BTreeSet<MinionId> = self
            .unsent
            .keys()
            .chain(self.blocked.keys())
            .cloned()
            .collect();
        self.unsent.clear();
        self.blocked.clear();
        self.batches.clear();
        self.prefetches.stop();
        for id in rest {
            self.finished(no_answer(id, HostStatus::Skipped, reason, now, now), steps);
        }
    }

    /// Every batch is over: a failed rollout returns the hosts it changed to the release in
    /// force before it, if it may; otherwise the job is over.
    fn batches_over(&mut self, now: Instant, steps: &mut Vec<Step>) {
        let failed = self.reports.values().any(|r| !r.status.is_success());
        // A cancelled job is left where it stopped: whoever cancelled it decides what next.
        if !(self.rollout.auto_revert && !self.plan && self.cancelled_by.is_none() && failed) {
            return self.done(steps);
        }
        let changed: Vec<MinionId> = self
            .reports
            .values()
            .filter(|r| r.status == HostStatus::Changed)
            .map(|r| r.minion_id.clone())
            .collect();
        let Some(previous) = &self.previous_release else {
            if !changed.is_empty() {
                tracing::warn!(
                    "auto-revert: no earlier release to return to; changed hosts keep the new images"
                );
            }
            return self.done(steps);
        };
        let hosts: BTreeMap<MinionId, DesiredState> = changed
            .iter()
            .filter_map(|id| {
                let state = self.sent.get(id)?;
                Some((id.clone(), reverted_state(state, &previous.pins)))
            })
            .collect();
        if hosts.is_empty() {
            return self.done(steps);
        }
        let release = previous.id;
        self.expect_reports(&hosts, now);
        self.phase = Phase::Reverting {
            release,
            deadline: now + self.timeout,
        };
        steps.push(Step::Send {
            job_id: self.revert_job_id(),
            hosts,
            plan: false,
            valid_for: self.timeout,
            batch: None,
        });
    }

    /// The id an auto-revert's commands carry: the job's, with a suffix.
    fn revert_job_id(&self) -> JobId {
        JobId::new(format!("{}-revert", self.job_id))
            .expect("a job id with a suffix is still a valid job id")
    }

    /// The revert is over: each host it touched gets its final report, failed, saying how the
    /// revert went.
    fn revert_over(&mut self, release: u64, steps: &mut Vec<Step>) {
        for (id, revert) in std::mem::take(&mut self.reverted) {
            let first = self.reports.get(&id).map_or(0, |r| r.duration_ms);
            let outcome = match (revert.status.is_success(), &revert.error) {
                (true, _) => "the revert succeeded".to_owned(),
                (false, Some(error)) => format!("the revert failed: {error}"),
                (false, None) => format!("the revert ended {}", revert.status),
            };
            let report = HostReport {
                minion_id: id,
                status: HostStatus::Failed,
                containers: revert.containers,
                error: Some(format!(
                    "changed, then returned to release {release} because the rollout failed; \
                     {outcome}"
                )),
                duration_ms: first.saturating_add(revert.duration_ms),
                timings: revert.timings,
                reported_late: false,
            };
            self.finished(report, steps);
        }
        self.done(steps);
    }

    fn done(&mut self, steps: &mut Vec<Step>) {
        self.phase = Phase::Done;
        steps.push(Step::Done);
    }
}

/// A host's desired state with every container on its image of `pins`; a container that has
/// none there (its role is new) is left out.
fn reverted_state(state: &DesiredState, pins: &Pins) -> DesiredState {
    let containers = state
        .containers
        .iter()
        .filter_map(|spec| {
            let image = pins.get(&spec.role)?.get(&spec.name)?;
            let mut spec = spec.clone();
            spec.image = image.clone();
            Some(spec)
        })
        .collect();
    // Fewer containers than a valid state, with the same names and ports: still valid.
    DesiredState { containers }
}

fn no_answer(
    id: MinionId,
    status: HostStatus,
    reason: &str,
    started: Instant,
    now: Instant,
) -> HostReport {
    HostReport {
        minion_id: id,
        status,
        containers: vec![],
        error: Some(reason.to_owned()),
        duration_ms: elapsed_ms(started, now),
        timings: Timings::default(),
        reported_late: false,
    }
}

fn elapsed_ms(since: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(since).as_millis()).unwrap_or(u64::MAX)
}
