//! The host keeper: runs the master's jobs one at a time, caches each desired state before it
//! is applied, and between jobs repairs drift: managed containers that died, were stopped or
//! were removed are brought back, following Docker's events with a periodic check as a
//! backstop, and backing off when a container keeps dying.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use brine_common::host::{HostEvent, HostEventKind};
use brine_common::names::ContainerName;
use brine_common::outcome::{ContainerAction, HostStatus, JobId, JobResult};
use brine_common::progress::Progress;
use brine_common::spec::DesiredState;
use tokio::sync::{Notify, mpsc};

use crate::config::DataDir;
use crate::desired_cache;
use crate::reconcile::execute::Executor;
use crate::retention::ImageHistory;
use crate::runtime::view::EngineView;
use crate::runtime::{ContainerRuntime, ImageRemoval};
use crate::status::StatusLine;

/// A command to apply. Its progress goes to the link that brought it (best effort); its
/// result goes through the outbox, on whichever link is up when it is ready.
pub(crate) struct Job {
    pub job_id: JobId,
    pub desired: DesiredState,
    /// Only report what would change.
    pub plan: bool,
    /// Reports its progress to the link that brought it; advisory, so it never waits.
    pub report_progress: ProgressSink,
}

/// Where a job's progress goes: the link converts it to its wire form.
pub(crate) type ProgressSink = Box<dyn Fn(&JobId, Progress) + Send + Sync>;

/// Why the minion looks for drift on its own.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Check {
    /// It just started: converge to the cached desired state, master or no master.
    Startup,
    /// Docker says a managed container died, stopped or was removed.
    ContainerChanged,
    /// The periodic backstop, in case an event was missed.
    Periodic,
}

/// Follows Docker's events, which keep the executor's view of the engine current, and asks for a
/// check on every managed container that died, stopped or was removed. While Docker does not
/// answer, looks again every few seconds; its going away and coming back are reported as
/// events, and its coming back asks for a full check.
pub(crate) async fn watch_engine<R: ContainerRuntime>(
    executor: Arc<Executor<EngineView<R>>>,
    checks: mpsc::Sender<Check>,
    events: Arc<Outbox>,
) {
    let mut available = true;
    loop {
        match executor.runtime().version().await {
            Ok(version) => {
                if !available {
                    tracing::info!(%version, "Docker answers again");
                    events.event(
                        HostEventKind::DockerAvailable,
                        format!("Docker {version} answers again"),
                    );
                    let _ = checks.try_send(Check::Periodic);
                }
                available = true;
                let ask = || {
                    let _ = checks.try_send(Check::ContainerChanged);
                };
                if let Err(err) = executor.runtime().follow(&ask).await {
                    tracing::debug!("stopped following Docker's events: {err}");
                }
            }
            Err(err) => {
                if available {
                    tracing::warn!(
                        "{err}; retrying every {ENGINE_RETRY:?}, containers are left as they are"
                    );
                    events.event(HostEventKind::DockerUnavailable, err.to_string());
                }
                available = false;
            }
        }
        tokio::time::sleep(ENGINE_RETRY).await;
    }
}

pub(crate) async fn check_periodically(interval: Duration, checks: mpsc::Sender<Check>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let _ = checks.try_send(Check::Periodic);
    }
}

/// How long after a first event the check waits, so a burst of events makes one check.
const EVENT_SETTLE: Duration = Duration::from_millis(500);
/// How long to wait before following Docker's events again.
const ENGINE_RETRY: Duration = Duration::from_secs(5);

/// Runs the host: the master's jobs one at a time, each desired state cached before it is
/// applied, and between jobs the repairs that keep the host on its last desired state.
pub(crate) async fn keep_host<R: ContainerRuntime>(
    executor: Arc<Executor<R>>,
    data: DataDir,
    mut jobs: mpsc::Receiver<Job>,
    mut checks: mpsc::Receiver<Check>,
    events: Arc<Outbox>,
    keep_releases: usize,
    status: Arc<StatusLine>,
) {
    let mut history = ImageHistory::load(&data);
    let mut cached = match desired_cache::load(&data) {
        Ok(cached) => cached,
        Err(err) => {
            tracing::warn!(
                "{err}; every container is left as it is until the master sends a desired state"
            );
            None
        }
    };
    let mut backoff = RepairBackoff::default();
    // Replacements a crash interrupted are finished before anything else touches a container.
    let mut interrupted_checked = false;
    loop {
        if !interrupted_checked {
            interrupted_checked = finish_interrupted(&executor, cached.as_ref(), &events).await;
        }
        tokio::select! {
            biased;
            job = jobs.recv() => {
                let Some(job) = job else { break };
                if !interrupted_checked {
                    interrupted_checked =
                        finish_interrupted(&executor, cached.as_ref(), &events).await;
                }
                if let Some((updated, succeeded)) =
                    run_job(&executor, &data, job, &events, cached.as_ref(), &status).await
                {
                    if succeeded {
                        let prune = Prune { data: &data, keep_releases, events: &events };
                        prune.after(&executor, &mut history, &updated.desired).await;
                    }
                    cached = Some(updated);
                    backoff = RepairBackoff::default();
                }
            }
            Some(check) = checks.recv() => {
                if matches!(check, Check::ContainerChanged) {
                    tokio::time::sleep(EVENT_SETTLE).await;
                    while checks.try_recv().is_ok() {}
                }
                let Some(cached) = &cached else { continue };
                repair(&executor, cached, check, &mut backoff, &events).await;
            }
        }
    }
}

/// Finishes the replacements a crash interrupted (see [`crate::reconcile::recover`]) and
/// queues what it found as the lost jobs' results. Returns whether that could be done: not
/// while Docker is away. Without a cached desired state there is nothing to check against, and
/// nothing is touched.
async fn finish_interrupted<R: ContainerRuntime>(
    executor: &Executor<R>,
    cached: Option<&desired_cache::CachedDesired>,
    outbox: &Outbox,
) -> bool {
    let Some(cached) = cached else {
        return true;
    };
    match executor.finish_interrupted(&cached.desired).await {
        Ok(results) => {
            for result in results {
                tracing::info!(job.id = %result.job_id, status = %result.status, "reporting a job a restart interrupted");
                outbox.push(Outgoing::Result(result));
            }
            true
        }
        Err(err) => {
            tracing::debug!("cannot look for interrupted replacements yet: {err}");
            false
        }
    }
}

/// Brings back what drifted from `cached`, unless repairs are backing off.
async fn repair<R: ContainerRuntime>(
    executor: &Executor<R>,
    cached: &desired_cache::CachedDesired,
    check: Check,
    backoff: &mut RepairBackoff,
    events: &Outbox,
) {
    let now = tokio::time::Instant::now();
    if !backoff.allows(now) {
        return;
    }
    let Ok(job_id) = JobId::new(format!("repair-{}", crate::now_unix_ms())) else {
        return;
    };
    let Some(result) = executor.repair(&job_id, &cached.to_repair()).await else {
        return;
    };
    let containers: Vec<String> = result
        .containers
        .iter()
        .map(|c| format!("{}: {}", c.name, c.action.as_str()))
        .collect();
    let containers = containers.join(", ");
    match result.status {
        HostStatus::Failed => {
            let error = result.error.as_deref().unwrap_or("");
            tracing::warn!(?check, %containers, error, "a repair failed");
            events.event(
                HostEventKind::RepairFailed,
                format!("{containers} ({error})"),
            );
        }
        _ => {
            tracing::info!(?check, %containers, "repaired drift");
            events.event(HostEventKind::Repaired, containers.clone());
        }
    }
    if let Some(wait) = backoff.record(now) {
        let wait = humantime::format_duration(wait);
        tracing::warn!("containers keep needing repair (crash-looping); next repair in {wait}");
        events.event(
            HostEventKind::CrashLooping,
            format!("{containers} keep needing repair; next repair in {wait}"),
        );
    }
}

/// How many messages wait for the master at most; beyond that the oldest event goes first.
const OUTBOX_LIMIT: usize = 200;

/// A message for the master that must not be lost while the link is down.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outgoing {
    /// A job's final result: sent on whichever link is up when it is ready, so a job that
    /// outlives its link still reports.
    Result(JobResult),
    Event(HostEvent),
}

/// Results and events on their way to the master, kept while it is unreachable.
#[derive(Debug)]
pub(crate) struct Outbox {
    // A std mutex: it is never held across an await.
    queue: Mutex<VecDeque<Outgoing>>,
    added: Notify,
    /// Results handed to a link lately, newest last: a link that dies (silently, say) loses
    /// what it had not delivered, so each new link sends them again. The master takes a result
    /// it already has as a no-op.
    sent: Mutex<VecDeque<(std::time::Instant, JobResult)>>,
    /// Every result and event passes through here once: counted for the Prometheus endpoint.
    metrics: Arc<crate::metrics::Metrics>,
}

/// How long a result handed to a link is sent again on every new link.
const RESEND_WINDOW: Duration = Duration::from_secs(600);
/// How many such results are kept.
const RESEND_LIMIT: usize = 32;

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Outgoing>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, message: Outgoing) {
        match &message {
            Outgoing::Result(result) => self.metrics.job_applied(result),
            Outgoing::Event(event) => self.metrics.host_event(event.kind),
        }
        {
            let mut queue = self.lock();
            queue.push_back(message);
            trim(&mut queue);
        }
        self.added.notify_one();
    }

    fn event(&self, kind: HostEventKind, message: String) {
        self.push(Outgoing::Event(HostEvent::new(
            crate::now_unix_ms(),
            kind,
            message,
        )));
    }

    /// An outbox whose results and events are counted in `metrics`.
    pub(crate) fn counted_in(metrics: Arc<crate::metrics::Metrics>) -> Self {
        Self {
            queue: Mutex::default(),
            added: Notify::new(),
            sent: Mutex::default(),
            metrics,
        }
    }

    /// Takes every waiting message, oldest first.
    pub(crate) fn take(&self) -> Vec<Outgoing> {
        self.lock().drain(..).collect()
    }

    /// Puts back messages that could not be sent, before any that came since.
    pub(crate) fn put_back(&self, messages: Vec<Outgoing>) {
        let mut queue = self.lock();
        for message in messages.into_iter().rev() {
            queue.push_front(message);
        }
        trim(&mut queue);
    }

    /// Resolves when a message was added since the last call.
    pub(crate) async fn added(&self) {
        self.added.notified().await;
    }

    /// Notes that `result` was handed to a link, which may yet lose it.
    pub(crate) fn handed_over(&self, result: JobResult) {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.retain(|(_, earlier)| earlier.job_id != result.job_id);
        sent.push_back((std::time::Instant::now(), result));
        while sent.len() > RESEND_LIMIT {
            sent.pop_front();
        }
    }

    /// Queues again, ahead of everything, the result of `job` handed to a link within
    /// [`RESEND_WINDOW`], unless it is queued already; whether this host has one to send.
    pub(crate) fn resend(&self, job: &JobId) -> bool {
        let result = {
            let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
            sent.iter()
                .find(|(at, result)| result.job_id == *job && at.elapsed() < RESEND_WINDOW)
                .map(|(_, result)| result.clone())
        };
        let mut queue = self.lock();
        let queued = queue
            .iter()
            .any(|m| matches!(m, Outgoing::Result(r) if r.job_id == *job));
        if queued {
            return true;
        }
        let Some(result) = result else {
            return false;
        };
        queue.push_front(Outgoing::Result(result));
        drop(queue);
        self.added.notify_one();
        true
    }

    /// Queues again, ahead of everything, the results handed to links within
    /// [`RESEND_WINDOW`] that are not queued already: for a new link to send.
    pub(crate) fn resend_recent(&self) {
        let recent: Vec<JobResult> = {
            let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
            sent.retain(|(at, _)| at.elapsed() < RESEND_WINDOW);
            sent.iter().map(|(_, result)| result.clone()).collect()
        };
        let mut queue = self.lock();
        for result in recent.into_iter().rev() {
            let queued = queue
                .iter()
                .any(|m| matches!(m, Outgoing::Result(r) if r.job_id == result.job_id));
            if !queued {
                queue.push_front(Outgoing::Result(result));
            }
        }
        trim(&mut queue);
    }
}

/// Keeps the queue within [`OUTBOX_LIMIT`], dropping events before results, oldest first.
fn trim(queue: &mut VecDeque<Outgoing>) {
    while queue.len() > OUTBOX_LIMIT {
        match queue.iter().position(|m| matches!(m, Outgoing::Event(_))) {
            Some(oldest_event) => {
                queue.remove(oldest_event);
            }
            None => {
                queue.pop_front();
            }
        }
    }
}

/// Repairs needed again and again within a short time mean a container that keeps dying: after
/// a few, wait longer and longer before the next, up to a cap.
#[derive(Debug, Default)]
struct RepairBackoff {
    /// Repairs in a row, each within [`REPAIR_STREAK`] of the one before.
    streak: u32,
    last: Option<tokio::time::Instant>,
    not_before: Option<tokio::time::Instant>,
}

const REPAIR_STREAK: Duration = Duration::from_secs(120);
const FREE_REPAIRS: u32 = 3;
const REPAIR_BACKOFF_BASE: Duration = Duration::from_secs(10);
const REPAIR_BACKOFF_MAX: Duration = Duration::from_secs(300);

impl RepairBackoff {
    fn allows(&self, now: tokio::time::Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// Records a repair at `now`; returns the wait before the next one, if there is one.
    fn record(&mut self, now: tokio::time::Instant) -> Option<Duration> {
        self.streak = match self.last {
            Some(last) if now.duration_since(last) < REPAIR_STREAK => self.streak + 1,
            _ => 1,
        };
        self.last = Some(now);
        let over = self.streak.checked_sub(FREE_REPAIRS + 1)?;
        let wait = REPAIR_BACKOFF_BASE
            .saturating_mul(2u32.saturating_pow(over.min(16)))
            .min(REPAIR_BACKOFF_MAX);
        self.not_before = Some(now + wait);
        Some(wait)
    }
}

/// Where old images go after a successful job.
struct Prune<'a> {
    data: &'a DataDir,
    keep_releases: usize,
    events: &'a Outbox,
}

impl Prune<'_> {
    /// Records `desired` in the image history and removes the images no kept release uses, best
    /// effort: what fails is reported, and the job that came before is not affected.
    async fn after<R: ContainerRuntime>(
        &self,
        executor: &Executor<R>,
        history: &mut ImageHistory,
        desired: &DesiredState,
    ) {
        let before = history.clone();
        let removable = history.record(desired, self.keep_releases);
        if *history != before {
            let (data, saved) = (self.data.clone(), history.clone());
            match tokio::task::spawn_blocking(move || saved.save(&data)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!("cannot store the image history: {err:#}"),
                Err(err) => tracing::warn!("cannot store the image history: {err}"),
            }
        }
        let (mut removed, mut failed) = (vec![], vec![]);
        for image in removable {
            match executor.runtime().remove_image(&image).await {
                Ok(ImageRemoval::Removed) => removed.push(image.to_string()),
                Ok(ImageRemoval::InUse | ImageRemoval::Absent) => {
                    tracing::debug!(%image, "an old image stays: in use or already gone");
                }
                Err(err) => failed.push(format!("{image}: {err}")),
            }
        }
        if !removed.is_empty() {
            tracing::info!(images = %removed.join(", "), "removed images of old releases");
            self.events
                .event(HostEventKind::ImagesRemoved, removed.join(", "));
        }
        if !failed.is_empty() {
            tracing::warn!(errors = %failed.join("; "), "cannot remove images of old releases");
            self.events
                .event(HostEventKind::PruneFailed, failed.join("; "));
        }
    }
}

/// Runs one job from the master and reports on the link that brought it. A real (not dry) run
/// caches its desired state before touching anything, and again with the containers that failed
/// once it is done; returns that cache entry and whether the job succeeded.
async fn run_job<R: ContainerRuntime>(
    executor: &Executor<R>,
    data: &DataDir,
    job: Job,
    outbox: &Outbox,
    current: Option<&desired_cache::CachedDesired>,
    status: &StatusLine,
) -> Option<(desired_cache::CachedDesired, bool)> {
    let span = tracing::info_span!("job", job.id = %job.job_id);
    span.in_scope(|| tracing::info!(containers = job.desired.containers.len(), "applying"));
    let report = |progress: Progress| (job.report_progress)(&job.job_id, progress);
    // The cache is written (and flushed) only when it changes: a highstate that changes nothing
    // touches no disk.
    let cached_already = current.filter(|c| c.desired == job.desired);
    let mut cached = None;
    let result = if job.plan {
        executor.plan_only(&job.job_id, &job.desired).await
    } else {
        let saved = match cached_already {
            Some(current) => Ok(current.clone()),
            None => save_desired(data, &job, BTreeSet::new()).await,
        };
        match saved {
            Err(err) => JobResult::failed(
                job.job_id.clone(),
                format!(
                    "cannot store the desired state on this host ({err:#}); nothing was changed"
                ),
            ),
            Ok(_) => {
                let result = tracing::Instrument::instrument(
                    executor.apply(&job.job_id, &job.desired, &report),
                    span.clone(),
                )
                .await;
                let failed: BTreeSet<ContainerName> = result
                    .containers
                    .iter()
                    .filter(|c| c.action == ContainerAction::Failed)
                    .map(|c| c.name.clone())
                    .collect();
                let outcome = match cached_already.filter(|c| c.failed == failed) {
                    Some(current) => Ok(current.clone()),
                    None => save_desired(data, &job, failed).await,
                };
                match outcome {
                    Ok(saved) => cached = Some((saved, result.status.is_success())),
                    Err(err) => {
                        span.in_scope(|| tracing::warn!("cannot store the job's outcome: {err:#}"))
                    }
                }
                result
            }
        }
    };
    span.in_scope(
        || tracing::info!(status = %result.status, error = result.error.as_deref(), "applied"),
    );
    status.job_finished(&result);
    outbox.push(Outgoing::Result(result));
    cached
}

/// Writes the cache off the async runtime (it flushes to disk).
async fn save_desired(
    data: &DataDir,
    job: &Job,
    failed: BTreeSet<ContainerName>,
) -> anyhow::Result<desired_cache::CachedDesired> {
    let (data, job_id, desired) = (data.clone(), job.job_id.clone(), job.desired.clone());
    tokio::task::spawn_blocking(move || desired_cache::save(&data, &job_id, &desired, failed))
        .await
        .context("the cache task failed")?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uncounted_outbox() -> Outbox {
        Outbox::counted_in(Arc::new(crate::metrics::Metrics::new(Arc::default())))
    }

    #[test]
    fn a_job_asked_again_gets_the_result_already_sent_once_queued() {
        let outbox = uncounted_outbox();
        let job = |n: usize| JobId::new(format!("j-{n}")).unwrap();
        outbox.handed_over(JobResult::failed(job(1), "x".into()));
        assert!(outbox.resend(&job(1)));
        // Asked twice before it went: still one in the queue.
        assert!(outbox.resend(&job(1)));
        let taken = outbox.take();
        assert_eq!(taken.len(), 1);
        assert!(matches!(&taken[0], Outgoing::Result(r) if r.job_id == job(1)));
        // A job with no result here yet (still running) has none to send.
        assert!(!outbox.resend(&job(2)));
        assert!(outbox.take().is_empty());
    }

    #[test]
    fn results_handed_to_a_link_are_sent_again_on_the_next_one() {
        let outbox = uncounted_outbox();
        let result =
            |n: usize| JobResult::failed(JobId::new(format!("j-{n}")).unwrap(), "x".into());
        outbox.handed_over(result(1));
        outbox.handed_over(result(2));
        outbox.push(Outgoing::Result(result(2)));
        outbox.event(HostEventKind::Repaired, "r".into());
        outbox.resend_recent();
        let taken = outbox.take();
        assert_eq!(
            taken,
            [
                Outgoing::Result(result(1)),
                Outgoing::Result(result(2)),
                taken[2].clone()
            ],
            "each recent result once, ahead of the rest"
        );
        assert!(matches!(taken[2], Outgoing::Event(_)));
        outbox.resend_recent();
        assert_eq!(outbox.take().len(), 2, "and again on every new link");
    }

    #[test]
    fn the_outbox_keeps_results_over_events_and_order() {
        let outbox = uncounted_outbox();
        let result = |n: usize| {
            Outgoing::Result(JobResult::failed(
                JobId::new(format!("j-{n}")).unwrap(),
                "x".into(),
            ))
        };
        outbox.push(result(0));
        for n in 0..OUTBOX_LIMIT {
            outbox.event(HostEventKind::Repaired, n.to_string());
        }
        let taken = outbox.take();
        assert_eq!(taken.len(), OUTBOX_LIMIT);
        assert_eq!(taken[0], result(0), "a result outlives newer events");
        let Outgoing::Event(first_event) = &taken[1] else {
            panic!("{:?}", taken[1]);
        };
        assert_eq!(first_event.message, "1", "the oldest event went");
        outbox.push(result(1));
        outbox.put_back(taken[..2].to_vec());
        let again = outbox.take();
        assert_eq!(again, [taken[0].clone(), taken[1].clone(), result(1)]);
    }

    #[test]
    fn repairs_back_off_when_they_keep_coming() {
        let start = tokio::time::Instant::now();
        let mut backoff = RepairBackoff::default();
        for n in 0..FREE_REPAIRS {
            let at = start + Duration::from_secs(u64::from(n));
            assert!(backoff.allows(at));
            assert_eq!(backoff.record(at), None);
        }
        let fourth = start + Duration::from_secs(10);
        assert_eq!(backoff.record(fourth), Some(REPAIR_BACKOFF_BASE));
        assert!(!backoff.allows(fourth + Duration::from_secs(5)));
        assert!(backoff.allows(fourth + REPAIR_BACKOFF_BASE));
        assert_eq!(
            backoff.record(fourth + REPAIR_BACKOFF_BASE),
            Some(REPAIR_BACKOFF_BASE * 2)
        );
        // A quiet spell starts afresh.
        let later = fourth + REPAIR_BACKOFF_BASE + REPAIR_STREAK * 2;
        assert_eq!(backoff.record(later), None);
    }
}
