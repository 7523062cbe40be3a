//! The events of running jobs, for every caller that follows one: the caller that started it,
//! a caller that repeats the call with the same request id, and `WatchJob`.
//!
//! A job appends its lasting events (started, each host's final report, the summary) to its
//! feed's log and never waits for a caller: each follower replays the log from the start at its
//! own pace, so a slow or vanished caller neither stalls the job nor makes another follower
//! miss a report. Progress is advisory and goes out live only: a follower that cannot keep up
//! misses some of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use brine_common::outcome::{HighstateEvent, JobId};
use tokio::sync::{broadcast, mpsc, watch};

/// How many events may wait for one follower's stream.
const FOLLOWER_QUEUE: usize = 256;
/// How much progress may wait for the slowest follower before it misses some.
const PROGRESS_QUEUE: usize = 1024;

/// What a job published so far.
#[derive(Default)]
struct Log {
    /// Started, host reports and the summary, in order.
    events: Vec<HighstateEvent>,
    /// Nothing more will come: the summary is in, or the job's task ended without one.
    closed: bool,
}

/// The events of one job.
pub struct Feed {
    job_id: JobId,
    /// A std mutex: held only to append or copy, never across an await.
    log: Mutex<Log>,
    /// The log's length, so followers wake when it grows.
    length: watch::Sender<usize>,
    progress: broadcast::Sender<HighstateEvent>,
}

impl Feed {
    fn new(job_id: JobId) -> Self {
        Self {
            job_id,
            log: Mutex::new(Log::default()),
            length: watch::Sender::new(0),
            progress: broadcast::Sender::new(PROGRESS_QUEUE),
        }
    }

    pub fn job_id(&self) -> &JobId {
        &self.job_id
    }

    /// Hands `event` to every follower, without waiting for any.
    fn publish(&self, event: HighstateEvent) {
        if matches!(event, HighstateEvent::Progress { .. }) {
            // No follower is not an error: progress then goes nowhere.
            let _ = self.progress.send(event);
            return;
        }
        let length = {
            let mut log = self.lock();
            log.events.push(event);
            log.events.len()
        };
        self.length.send_replace(length);
    }

    /// Ends the feed: followers get what was published and then their stream ends.
    fn close(&self) {
        self.lock().closed = true;
        self.length.send_modify(|_| {});
    }

    /// The job's events from its start, then live ones until its summary. The stream ends after
    /// the summary, or early if the job's feed goes away without one (the master stops).
    pub fn follow(self: &Arc<Self>) -> mpsc::Receiver<HighstateEvent> {
        let (sender, receiver) = mpsc::channel(FOLLOWER_QUEUE);
        // Subscribed before the log is read, so nothing appended in between is missed.
        let mut length = self.length.subscribe();
        let mut progress = self.progress.subscribe();
        let feed = Arc::clone(self);
        tokio::spawn(async move {
            let mut sent = 0;
            loop {
                let (new, closed) = {
                    let log = feed.lock();
                    (
                        log.events.get(sent..).unwrap_or_default().to_vec(),
                        log.closed,
                    )
                };
                sent += new.len();
                for event in new {
                    let last = matches!(event, HighstateEvent::Summary(_));
                    if sender.send(event).await.is_err() || last {
                        return;
                    }
                }
                if closed {
                    return;
                }
                tokio::select! {
                    // The feed lives as long as this task holds it: never an error.
                    _ = length.changed() => {}
                    live = progress.recv() => {
                        // Advisory: dropped when this follower's queue is full, or lagging.
                        if let Ok(event) = live {
                            let _ = sender.try_send(event);
                        }
                    }
                    () = sender.closed() => return,
                }
            }
        });
        receiver
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a running job publishes through. However the job's task ends (its summary sent, or a
/// panic), dropping this closes the feed, so no follower waits for events that never come.
pub struct Publisher(Arc<Feed>);

impl Publisher {
    pub fn publish(&self, event: HighstateEvent) {
        self.0.publish(event);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The feeds of the jobs that run now, by job id.
#[derive(Default)]
pub struct JobFeeds {
    // A std mutex: never held across an await.
    feeds: Mutex<HashMap<JobId, Arc<Feed>>>,
}

impl JobFeeds {
    /// A new feed for job `job_id`, findable until [`JobFeeds::remove`], and the job's end of
    /// it.
    pub fn open(&self, job_id: JobId) -> (Arc<Feed>, Publisher) {
        let feed = Arc::new(Feed::new(job_id.clone()));
        self.lock().insert(job_id, Arc::clone(&feed));
        (Arc::clone(&feed), Publisher(feed))
    }

    /// The feed of job `job_id`, while it runs or its record is not yet written.
    pub fn get(&self, job_id: &JobId) -> Option<Arc<Feed>> {
        self.lock().get(job_id).cloned()
    }

    /// Forgets a job's feed once its record is written: from then on its followers read the
    /// record. Followers already attached keep theirs to the end.
    pub fn remove(&self, job_id: &JobId) {
        self.lock().remove(job_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Arc<Feed>>> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use brine_common::names::MinionId;
    use brine_common::outcome::{HostReport, HostStatus, JobSummary};
    use brine_common::progress::{Phase, Progress};

    use super::*;

    fn job() -> JobId {
        JobId::new("j-1").unwrap()
    }

    fn report(host: &str) -> HighstateEvent {
        HighstateEvent::HostFinished(HostReport {
            minion_id: MinionId::new(host).unwrap(),
            status: HostStatus::Unreachable,
            containers: vec![],
            error: Some("gone".into()),
            duration_ms: 0,
            timings: Default::default(),
            reported_late: false,
        })
    }

    fn summary() -> HighstateEvent {
        HighstateEvent::Summary(JobSummary {
            job_id: job(),
            hosts: vec![],
            started_at_unix_ms: 1,
            finished_at_unix_ms: 2,
            resolve_ms: 0,
            cancelled_by: None,
        })
    }

    fn started() -> HighstateEvent {
        HighstateEvent::Started {
            job_id: job(),
            targets: vec![],
            not_accepted: 0,
        }
    }

    fn progress() -> HighstateEvent {
        HighstateEvent::Progress {
            minion_id: MinionId::new("web-1").unwrap(),
            progress: Progress {
                phase: Phase::Pulling,
                subject: "app".into(),
                bytes_done: 1,
                bytes_total: 2,
            },
        }
    }

    async fn drain(mut events: mpsc::Receiver<HighstateEvent>) -> Vec<HighstateEvent> {
        let mut all = vec![];
        while let Some(event) = events.recv().await {
            all.push(event);
        }
        all
    }

    fn is_report(event: &HighstateEvent, host: &str) -> bool {
        matches!(event, HighstateEvent::HostFinished(r)
            if r.minion_id.as_str() == host && r.status == HostStatus::Unreachable)
    }

    #[tokio::test]
    async fn a_late_follower_sees_the_job_from_its_start() {
        let feeds = JobFeeds::default();
        let (_, feed) = feeds.open(job());
        feed.publish(started());
        feed.publish(report("web-1"));
        let late = feeds.get(&job()).unwrap().follow();
        feed.publish(report("web-2"));
        feed.publish(summary());
        let events = drain(late).await;
        assert_eq!(events.len(), 4, "{events:?}");
        assert!(matches!(events[0], HighstateEvent::Started { .. }));
        assert!(is_report(&events[1], "web-1"));
        assert!(is_report(&events[2], "web-2"));
        assert!(matches!(events[3], HighstateEvent::Summary(_)));
    }

    #[tokio::test]
    async fn a_follower_that_stops_reading_holds_nobody_up() {
        let (followed, feed) = JobFeeds::default().open(job());
        let stalled = followed.follow();
        let reader = followed.follow();
        feed.publish(started());
        // Far more than a follower's queue: publishing never waits.
        for n in 0..(FOLLOWER_QUEUE * 4) {
            feed.publish(report(&format!("web-{n}")));
        }
        feed.publish(summary());
        let events = drain(reader).await;
        assert_eq!(events.len(), FOLLOWER_QUEUE * 4 + 2);
        drop(stalled);
    }

    #[tokio::test]
    async fn progress_goes_to_followers_that_are_there() {
        let (followed, feed) = JobFeeds::default().open(job());
        let follower = followed.follow();
        feed.publish(started());
        // Let the follower reach its wait before the progress goes out.
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        feed.publish(progress());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        feed.publish(summary());
        let events = drain(follower).await;
        assert!(
            events
                .iter()
                .any(|e| matches!(e, HighstateEvent::Progress { .. })),
            "{events:?}"
        );
        // Progress is not replayed to a follower that comes later.
        let later = drain(followed.follow()).await;
        assert_eq!(later.len(), 2, "{later:?}");
    }

    #[tokio::test]
    async fn a_job_that_ends_without_a_summary_ends_its_followers() {
        let (followed, feed) = JobFeeds::default().open(job());
        feed.publish(started());
        let follower = followed.follow();
        let task = tokio::spawn(async move {
            let _feed = feed;
            panic!("the job's task fails");
        });
        assert!(task.await.is_err());
        let events = drain(follower).await;
        assert_eq!(events.len(), 1);
    }
}
