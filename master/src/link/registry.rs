//! The links' registries: [`Links`] maps each connected minion to the sender of its stream, so
//! a job can push commands to it; [`JobRouter`] routes what minions send back to the job it
//! belongs to, and lets a job be cancelled. It is separate from the gRPC service because both are
//! plain in-memory maps the jobs use without any protocol.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use brine_common::names::MinionId;
use brine_common::outcome::{JobId, JobResult};
use brine_common::progress::Progress;
use brine_common::session::{SessionId, SessionRequest};
use brine_common::spec::{DesiredState, ImageRef};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How many commands may wait for one minion before a job considers it unreachable.
const COMMAND_QUEUE: usize = 16;

/// A command for one minion.
#[derive(Debug, Clone)]
pub enum Command {
    Apply {
        job_id: JobId,
        expires_at_unix_ms: i64,
        desired: DesiredState,
        /// Only report what would change.
        plan: bool,
    },
    /// Fetch these images ahead of the job's command.
    Prefetch {
        job_id: JobId,
        expires_at_unix_ms: i64,
        images: Vec<ImageRef>,
    },
    /// Where the fleet's masters are now (`HOST:PORT`, this one first).
    Masters(Vec<String>),
    /// Stream a container's logs or run a command in it (`logs`, `exec`).
    StartSession(Box<SessionRequest>),
    /// End a session early: its caller went away.
    StopSession(SessionId),
}

/// What a minion sent about a job, or that its link was lost.
#[derive(Debug)]
pub enum JobEvent {
    Progress(MinionId, Progress),
    Result(MinionId, JobResult),
    /// The answer to a prefetch: its images are on the host, or why not.
    Prefetched(MinionId, Result<(), String>),
    LinkLost(MinionId),
    /// Another master holding the host's link could not hand it the command (a fetch ahead,
    /// or the job's own).
    Undeliverable {
        host: MinionId,
        prefetch: bool,
        reason: String,
    },
}

/// A live link, as a job sees it.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    pub commands: CommandSender,
}

/// The way into one link's queue of commands.
///
/// Commands travel boxed: a queue allocates room for 32 of its items when it is made, and a
/// master holds one queue per linked host, so the queue of an idle link costs 32 pointers
/// rather than 32 commands (2 KiB a host).
#[derive(Debug, Clone)]
pub struct CommandSender(mpsc::Sender<Box<Command>>);

/// The link's queue is full, or the link is gone.
#[derive(Debug)]
pub struct NotQueued;

impl CommandSender {
    /// Queues `command` if there is room now.
    pub fn try_send(&self, command: Command) -> Result<(), NotQueued> {
        self.0.try_send(Box::new(command)).map_err(|_| NotQueued)
    }

    /// Queues `command`, waiting up to `timeout` for room.
    pub async fn send_timeout(&self, command: Command, timeout: Duration) -> Result<(), NotQueued> {
        self.0
            .send_timeout(Box::new(command), timeout)
            .await
            .map_err(|_| NotQueued)
    }
}

struct LinkEntry {
    session: u64,
    /// The SHA-256 of the certificate the host linked with.
    certificate_sha256: String,
    commands: CommandSender,
    /// Cancelled to end the stream: when a newer stream replaces it, or at shutdown.
    stop: CancellationToken,
}

/// The connected minions.
pub struct Links {
    // A std mutex: it is never held across an await.
    entries: Mutex<HashMap<MinionId, LinkEntry>>,
    next_session: AtomicU64,
    shutdown: CancellationToken,
}

impl Links {
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            shutdown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MinionId, LinkEntry>> {
        // A panic elsewhere while holding the lock leaves the map consistent (single inserts and
        // removes), so poisoning is not a reason to stop serving.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new stream for `id`, linked with certificate `certificate_sha256`, ending
    /// the one it replaces.
    pub(super) fn register(
        &self,
        id: &MinionId,
        certificate_sha256: String,
    ) -> (u64, mpsc::Receiver<Box<Command>>, CancellationToken) {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let stop = self.shutdown.child_token();
        let previous = self.lock().insert(
            id.clone(),
            LinkEntry {
                session,
                certificate_sha256,
                commands: CommandSender(commands),
                stop: stop.clone(),
            },
        );
        if let Some(previous) = previous {
            tracing::info!(minion.id = %id, "a new link replaces the previous one");
            previous.stop.cancel();
        }
        (session, receiver, stop)
    }

    /// Forgets the stream `session` of `id`, unless a newer one already replaced it; whether
    /// it did.
    pub(super) fn unregister(&self, id: &MinionId, session: u64) -> bool {
        let mut entries = self.lock();
        let current = entries.get(id).is_some_and(|e| e.session == session);
        if current {
            entries.remove(id);
        }
        current
    }

    pub fn get(&self, id: &MinionId) -> Option<LinkHandle> {
        self.lock().get(id).map(|e| LinkHandle {
            commands: e.commands.clone(),
        })
    }

    /// Ends `id`'s live stream, if it has one.
    pub fn disconnect(&self, id: &MinionId) -> bool {
        match self.lock().remove(id) {
            Some(entry) => {
                entry.stop.cancel();
                true
            }
            None => false,
        }
    }

    /// Ends every live stream; how many there were.
    pub fn disconnect_all(&self) -> usize {
        let entries: Vec<LinkEntry> = self.lock().drain().map(|(_, entry)| entry).collect();
        for entry in &entries {
            entry.stop.cancel();
        }
        entries.len()
    }

    /// Ends `id`'s live stream if it is linked with certificate `certificate_sha256` (not a
    /// newer link made with another).
    pub fn disconnect_certificate(&self, id: &MinionId, certificate_sha256: &str) -> bool {
        let mut entries = self.lock();
        if entries
            .get(id)
            .is_none_or(|entry| entry.certificate_sha256 != certificate_sha256)
        {
            return false;
        }
        entries
            .remove(id)
            .inspect(|entry| entry.stop.cancel())
            .is_some()
    }

    /// The certificate `id` is linked with, if it is linked.
    pub fn certificate_of(&self, id: &MinionId) -> Option<String> {
        self.lock().get(id).map(|e| e.certificate_sha256.clone())
    }

    /// Every linked host with the certificate it linked with.
    pub fn linked(&self) -> Vec<(MinionId, String)> {
        self.lock()
            .iter()
            .map(|(id, entry)| (id.clone(), entry.certificate_sha256.clone()))
            .collect()
    }

    /// Tells every linked minion where the fleet's masters are now. A minion whose queue is
    /// full is not told: it hears the list again on its next link.
    pub fn tell_masters(&self, addresses: &[String]) {
        for entry in self.lock().values() {
            let _ = entry
                .commands
                .try_send(Command::Masters(addresses.to_vec()));
        }
    }

    /// How many hosts are linked now.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    pub fn is_connected(&self, id: &MinionId) -> bool {
        self.lock().contains_key(id)
    }
}

/// Routes minion messages to the job they belong to, and cancels from operators.
#[derive(Default)]
pub struct JobRouter {
    // A std mutex: it is never held across an await.
    jobs: Mutex<HashMap<JobId, mpsc::Sender<JobEvent>>>,
    cancels: Mutex<HashMap<JobId, Cancel>>,
}

/// How a running job learns it was cancelled, and by whom.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    token: CancellationToken,
    by: std::sync::Arc<std::sync::OnceLock<String>>,
}

impl Cancel {
    /// Who cancelled the job, once someone has.
    pub fn by(&self) -> Option<&str> {
        self.by.get().map(String::as_str)
    }

    /// Resolves when the job is cancelled.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    fn cancel(&self, by: &str) {
        let _ = self.by.set(by.to_owned());
        self.token.cancel();
    }
}

impl JobRouter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, mpsc::Sender<JobEvent>>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, job: JobId, events: mpsc::Sender<JobEvent>) {
        self.lock().insert(job, events);
    }

    pub fn unregister(&self, job: &JobId) {
        self.lock().remove(job);
    }

    /// Lets operators cancel `job` until [`JobRouter::forget_cancel`].
    pub fn cancellable(&self, job: JobId) -> Cancel {
        let cancel = Cancel::default();
        self.cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job, cancel.clone());
        cancel
    }

    pub fn forget_cancel(&self, job: &JobId) {
        self.cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(job);
    }

    /// How many jobs run here now (each can be cancelled while it runs).
    pub fn running_jobs(&self) -> usize {
        self.cancels.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Cancels a running job on behalf of `by`; false if no such job runs.
    pub fn cancel(&self, job: &JobId, by: &str) -> bool {
        let cancels = self.cancels.lock().unwrap_or_else(|p| p.into_inner());
        match cancels.get(job) {
            Some(cancel) => {
                cancel.cancel(by);
                true
            }
            None => false,
        }
    }

    /// Where a job's messages go; a job's follow-up (an auto-revert) shares its inbox.
    pub fn sender_of(&self, job: &JobId) -> Option<mpsc::Sender<JobEvent>> {
        self.lock().get(job).cloned()
    }

    pub(super) fn all(&self) -> Vec<mpsc::Sender<JobEvent>> {
        self.lock().values().cloned().collect()
    }
}
