//! Jobs across masters that share a store: a job reaches the hosts linked to other masters,
//! and hears back from them, through messages left in the store.
//!
//! Each master records in the store which hosts it holds links to, and follows what the
//! others record ([`RemoteLinks`]). A job whose host is linked elsewhere leaves the command
//! for the master holding the link; that master hands it to the host and sends what the host
//! answers back to the job's master, which feeds it to the job as if the host were its own.
//! A message that goes astray (a master stopped between reading and acting) is a host that
//! does not answer: the job's batch times out on it, as on any silent host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use brine_common::names::MinionId;
use brine_common::outcome::JobId;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::following::keep_following;
use crate::link::{Command, JobEvent};
use crate::state::{Master, now_unix_ms};
use crate::store::{HostAnswer, LinkChange, Relayed, RelayedCommand, StoreError};

/// The most jobs of other masters this one remembers delivering commands for.
const MAX_REMEMBERED_JOBS: usize = 1024;

/// Which master holds the link of each host linked to another master, and which master runs
/// each job this master delivered commands for.
#[derive(Debug, Default)]
pub struct RemoteLinks {
    /// Host → the name of the master holding its link, as the store says. A std lock: never
    /// held across an await.
    holders: RwLock<HashMap<MinionId, String>>,
    /// Job → (its master, until when its commands hold).
    job_masters: Mutex<HashMap<JobId, (String, i64)>>,
}

impl RemoteLinks {
    /// The master holding `host`'s link, as the store last said.
    pub fn holder(&self, host: &MinionId) -> Option<String> {
        self.holders
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(host)
            .cloned()
    }

    fn apply(&self, change: &LinkChange) {
        let mut holders = self.holders.write().unwrap_or_else(PoisonError::into_inner);
        match change {
            LinkChange::Linked { host, master } => {
                holders.insert(host.clone(), master.clone());
            }
            LinkChange::Unlinked(host) => {
                holders.remove(host);
            }
        }
    }

    fn clear(&self) {
        self.holders
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn remember_job(&self, job: JobId, master: String, until_unix_ms: i64) {
        let mut jobs = self
            .job_masters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = now_unix_ms();
        if jobs.len() >= MAX_REMEMBERED_JOBS {
            jobs.retain(|_, (_, until)| *until > now);
        }
        if jobs.len() < MAX_REMEMBERED_JOBS {
            jobs.insert(job, (master, until_unix_ms));
        }
    }

    fn job_master(&self, job: &JobId) -> Option<String> {
        self.job_masters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(job)
            .map(|(master, _)| master.clone())
    }
}

/// The name of the live master holding `host`'s link, this one or another, if it is linked.
pub fn link_holder(master: &Master, host: &MinionId) -> Option<String> {
    if master.links.is_connected(host) {
        return Some(master.config.name.clone());
    }
    master
        .remote_links
        .holder(host)
        .filter(|holder| *holder != master.config.name && master.peers.is_live(holder))
}

/// Leaves `command` for the live master that holds `host`'s link, if another one does;
/// why not, if it cannot.
pub async fn send_through_another(
    master: &Master,
    host: &MinionId,
    command: Command,
) -> Result<(), String> {
    let holder = link_holder(master, host)
        .filter(|holder| *holder != master.config.name)
        .ok_or_else(|| "the minion is not connected".to_owned())?;
    let command = RelayedCommand::try_from(command)?;
    let message = Relayed::Command {
        host: host.clone(),
        job_master: master.config.name.clone(),
        command,
    };
    master
        .store
        .relay(holder.clone(), message)
        .await
        .map_err(|err| format!("the command could not be left for master {holder}: {err}"))
}

/// Sends what `host` said about `job`, a job this master does not run, to the master that
/// runs it. Returns false when no other master runs it (the caller records a late result).
pub async fn answer_another(
    master: &Master,
    job: &JobId,
    host: &MinionId,
    answer: HostAnswer,
) -> bool {
    let remembered = master
        .remote_links
        .job_master(job)
        .filter(|job_master| master.peers.is_live(job_master));
    let job_master = match remembered {
        Some(job_master) => job_master,
        // Not delivered through this master (the host moved here since), or its master is
        // gone (another runs the job on): the job's record says who runs it.
        None if matches!(answer, HostAnswer::Result(_)) => {
            match master.store.job(job.to_string()).await {
                Ok(Some(record)) if record.running => match record.master {
                    Some(job_master) if job_master != master.config.name => job_master,
                    _ => return false,
                },
                _ => return false,
            }
        }
        None => return false,
    };
    if job_master == master.config.name {
        return false;
    }
    let message = Relayed::Answer {
        job: job.clone(),
        host: host.clone(),
        answer,
    };
    if let Err(err) = master.store.relay(job_master.clone(), message).await {
        tracing::warn!(minion.id = %host, job.id = %job, "cannot pass the host's answer to master {job_master}: {err}");
    }
    true
}

/// Keeps [`RemoteLinks`] current from the store until `stopping`.
pub async fn follow_links(master: Arc<Master>, stopping: CancellationToken) {
    keep_following(&stopping, "which master holds each host's link", || async {
        let mut changes = match master.store.follow_links().await {
            Ok(changes) => changes,
            Err(err) => return err,
        };
        master.remote_links.clear();
        loop {
            match changes.next().await {
                Some(Ok(change)) => {
                    master.remote_links.apply(&change);
                    if let LinkChange::Unlinked(host) = &change {
                        keep_own_link_recorded(&master, host).await;
                    }
                }
                Some(Err(err)) => return err,
                None => return StoreError::Unavailable("the store ended the following".into()),
            }
        }
    })
    .await;
}

/// A host linked here whose record of it went (a previous link's end recorded late, after the
/// new link's start) is recorded again.
async fn keep_own_link_recorded(master: &Master, host: &MinionId) {
    if master.links.is_connected(host)
        && let Err(err) = master
            .store
            .record_link(host.clone(), master.config.name.clone())
            .await
    {
        tracing::warn!(minion.id = %host, "cannot record the host's link: {err}");
    }
}

/// Acts on the messages other masters leave for this one until `stopping`.
pub async fn follow_messages(master: Arc<Master>, stopping: CancellationToken) {
    keep_following(&stopping, "the messages from other masters", || async {
        let mut messages = match master
            .store
            .follow_relayed(master.config.name.clone())
            .await
        {
            Ok(messages) => messages,
            Err(err) => return err,
        };
        loop {
            match messages.next().await {
                Some(Ok(message)) => act_on(&master, message).await,
                Some(Err(err @ StoreError::Corrupt { .. })) => {
                    tracing::warn!("ignored a message from another master: {err}");
                }
                Some(Err(err)) => return err,
                None => return StoreError::Unavailable("the store ended the following".into()),
            }
        }
    })
    .await;
}

async fn act_on(master: &Master, message: Relayed) {
    match message {
        Relayed::Command {
            host,
            job_master,
            command,
        } => deliver(master, host, job_master, command).await,
        Relayed::Answer { job, host, answer } => {
            let Some(inbox) = master.router.sender_of(&job) else {
                // The job ended here: a result still counts, as a late one.
                if let HostAnswer::Result(result) = answer {
                    crate::link::record_late_result(master, &host, result).await;
                }
                return;
            };
            let event = match answer {
                HostAnswer::Progress(progress) => JobEvent::Progress(host, progress),
                HostAnswer::Result(result) => JobEvent::Result(host, result),
                HostAnswer::Prefetched(outcome) => JobEvent::Prefetched(host, outcome),
                HostAnswer::Undeliverable { prefetch, reason } => JobEvent::Undeliverable {
                    host,
                    prefetch,
                    reason,
                },
            };
            let _ = inbox.send(event).await;
        }
    }
}

/// Hands a command another master's job left here to the host, or tells that master why not.
async fn deliver(master: &Master, host: MinionId, job_master: String, command: RelayedCommand) {
    let job = command.job_id().clone();
    let prefetch = matches!(command, RelayedCommand::Prefetch { .. });
    master.remote_links.remember_job(
        job.clone(),
        job_master.clone(),
        command.expires_at_unix_ms(),
    );
    let local = Command::from(command);
    // Never waits: a stalled host must not hold up the commands for the others.
    let reason = match master.links.get(&host) {
        Some(link) => match link.commands.try_send(local) {
            Ok(()) => return,
            Err(_) => "the minion's link closed or is stalled",
        },
        None => "the minion is not connected",
    };
    let answer = HostAnswer::Undeliverable {
        prefetch,
        reason: reason.to_owned(),
    };
    let message = Relayed::Answer {
        job: job.clone(),
        host: host.clone(),
        answer,
    };
    if let Err(err) = master.store.relay(job_master.clone(), message).await {
        tracing::warn!(minion.id = %host, job.id = %job, "cannot tell master {job_master} its command was not delivered: {err}");
    }
}

impl TryFrom<Command> for RelayedCommand {
    type Error = String;

    fn try_from(command: Command) -> Result<Self, String> {
        Ok(match command {
            Command::Apply {
                job_id,
                expires_at_unix_ms,
                desired,
                plan,
            } => Self::Apply {
                job_id,
                expires_at_unix_ms,
                desired,
                plan,
            },
            Command::Prefetch {
                job_id,
                expires_at_unix_ms,
                images,
            } => Self::Prefetch {
                job_id,
                expires_at_unix_ms,
                images,
            },
            Command::Masters(_) => return Err("the fleet's masters are told by each master".into()),
            Command::StartSession(_) | Command::StopSession(_) => {
                return Err(
                    "logs and exec reach only hosts linked to the master they are asked of".into(),
                );
            }
        })
    }
}

impl From<RelayedCommand> for Command {
    fn from(command: RelayedCommand) -> Self {
        match command {
            RelayedCommand::Apply {
                job_id,
                expires_at_unix_ms,
                desired,
                plan,
            } => Self::Apply {
                job_id,
                expires_at_unix_ms,
                desired,
                plan,
            },
            RelayedCommand::Prefetch {
                job_id,
                expires_at_unix_ms,
                images,
            } => Self::Prefetch {
                job_id,
                expires_at_unix_ms,
                images,
            },
        }
    }
}
