//! Request ids: a job call that carries one can be repeated safely. The first call with an id
//! starts the job; a repeat (a CI retry after a lost connection) attaches to that job, running
//! or finished, instead of starting a second one or failing on the fleet lock the first holds.
//!
//! This keeps the ids of jobs this master started; the store keeps each job's id with its
//! record, so a repeat after a restart finds the job there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brine_common::outcome::JobId;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a request id is remembered here; the store remembers it as long as the job.
const REMEMBERED_FOR: Duration = Duration::from_secs(24 * 3600);

/// What became of a claim on a request id.
#[derive(Debug)]
pub enum Claim {
    /// Nobody used the id: the caller starts the job, and says so through the ticket.
    First(Ticket),
    /// A job was started under the id with the same request.
    Started(JobId),
    /// The id was used for a different request.
    Conflict(Option<JobId>),
    /// Another call with the id is preparing its job: wait, then claim again.
    Wait(Arc<Notify>),
}

#[derive(Debug)]
enum State {
    Preparing(Arc<Notify>),
    Started(JobId),
}

#[derive(Debug)]
struct Entry {
    fingerprint: String,
    state: State,
    at: Instant,
}

/// The request ids of the jobs this master started.
#[derive(Debug, Default)]
pub struct RequestIds {
    // A std mutex: never held across an await.
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl RequestIds {
    /// Claims `id` for a request whose parameters digest to `fingerprint`.
    pub fn claim(&self, id: &str, fingerprint: &str) -> Claim {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        entries.retain(|_, entry| {
            matches!(entry.state, State::Preparing(_)) || now - entry.at < REMEMBERED_FOR
        });
        match entries.get(id) {
            Some(entry) if entry.fingerprint != fingerprint => {
                Claim::Conflict(match &entry.state {
                    State::Started(job) => Some(job.clone()),
                    State::Preparing(_) => None,
                })
            }
            Some(Entry {
                state: State::Preparing(ready),
                ..
            }) => Claim::Wait(Arc::clone(ready)),
            Some(Entry {
                state: State::Started(job),
                ..
            }) => Claim::Started(job.clone()),
            None => {
                let ready = Arc::new(Notify::new());
                entries.insert(
                    id.to_owned(),
                    Entry {
                        fingerprint: fingerprint.to_owned(),
                        state: State::Preparing(Arc::clone(&ready)),
                        at: now,
                    },
                );
                Claim::First(Ticket {
                    entries: Arc::clone(&self.entries),
                    id: id.to_owned(),
                    ready,
                    started: false,
                })
            }
        }
    }
}

/// The first caller's hold on a request id while it prepares its job. Dropped without
/// [`Ticket::started`] (the job was refused), it lets the id go, and a waiting repeat tries
/// for itself.
#[derive(Debug)]
pub struct Ticket {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    id: String,
    ready: Arc<Notify>,
    started: bool,
}

impl Ticket {
    /// The job started under the id: repeats attach to it from now on.
    pub fn started(mut self, job: JobId) {
        if let Some(entry) = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&self.id)
        {
            entry.state = State::Started(job);
            entry.at = Instant::now();
        }
        self.started = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.started {
            self.entries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.id);
        }
        self.ready.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> JobId {
        JobId::new(id).unwrap()
    }

    #[tokio::test]
    async fn a_repeat_attaches_to_the_job_the_first_call_started() {
        let ids = RequestIds::default();
        let Claim::First(ticket) = ids.claim("ci-41", "deploy web") else {
            panic!("the first claim is the first");
        };
        let Claim::Wait(ready) = ids.claim("ci-41", "deploy web") else {
            panic!("a repeat while the first prepares waits");
        };
        let woken = ready.notified();
        ticket.started(job("j-1"));
        woken.await;
        assert!(matches!(ids.claim("ci-41", "deploy web"), Claim::Started(j) if j == job("j-1")));
    }

    #[tokio::test]
    async fn the_same_id_for_another_request_is_a_conflict() {
        let ids = RequestIds::default();
        let Claim::First(ticket) = ids.claim("ci-41", "deploy web") else {
            panic!("the first claim is the first");
        };
        assert!(matches!(
            ids.claim("ci-41", "deploy db"),
            Claim::Conflict(None)
        ));
        ticket.started(job("j-1"));
        assert!(matches!(
            ids.claim("ci-41", "deploy db"),
            Claim::Conflict(Some(j)) if j == job("j-1")
        ));
    }

    #[tokio::test]
    async fn a_refused_job_lets_its_id_go() {
        let ids = RequestIds::default();
        let Claim::First(ticket) = ids.claim("ci-41", "deploy web") else {
            panic!("the first claim is the first");
        };
        let Claim::Wait(ready) = ids.claim("ci-41", "deploy web") else {
            panic!("a repeat waits");
        };
        let woken = ready.notified();
        drop(ticket);
        woken.await;
        assert!(matches!(ids.claim("ci-41", "deploy web"), Claim::First(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn ids_are_forgotten_after_a_day() {
        let ids = RequestIds::default();
        let Claim::First(ticket) = ids.claim("ci-41", "deploy web") else {
            panic!("the first claim is the first");
        };
        ticket.started(job("j-1"));
        tokio::time::advance(REMEMBERED_FOR + Duration::from_secs(1)).await;
        assert!(matches!(ids.claim("ci-41", "deploy web"), Claim::First(_)));
    }
}
