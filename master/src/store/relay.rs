//! What masters that share a store pass each other so that a job started on one reaches the
//! hosts linked to the others: which master holds each host's link, the commands a job sends
//! to a host linked elsewhere, and what the host answers, sent back to the job's master.
//!
//! Messages are delivered at most once: the master they are for takes each out of the store as
//! it reads it. One lost on the way (its reader stopped in between) is a host that does not
//! answer, which a job already copes with: its batch times out on that host.

use brine_common::names::MinionId;
use brine_common::outcome::{JobId, JobResult};
use brine_common::progress::Progress;
use brine_common::spec::{DesiredState, ImageRef};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// A change of which master holds a host's link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    /// The host is linked to `master` (the name in its master.toml).
    Linked { host: MinionId, master: String },
    /// The host is linked to no master now.
    Unlinked(MinionId),
}

/// What [`super::Store::follow_links`] yields: every link held now, then each change.
pub type LinkChanges = futures::stream::BoxStream<'static, Result<LinkChange, StoreError>>;

/// A message from one master to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Relayed {
    /// For the master holding `host`'s link: hand `command` to the host; what it answers goes
    /// to `job_master`.
    Command {
        host: MinionId,
        job_master: String,
        command: RelayedCommand,
    },
    /// For the master running `job`: what `host` answered.
    Answer {
        job: JobId,
        host: MinionId,
        answer: HostAnswer,
    },
}

/// A job's command for one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RelayedCommand {
    Apply {
        job_id: JobId,
        expires_at_unix_ms: i64,
        desired: DesiredState,
        plan: bool,
    },
    Prefetch {
        job_id: JobId,
        expires_at_unix_ms: i64,
        images: Vec<ImageRef>,
    },
}

impl RelayedCommand {
    pub fn job_id(&self) -> &JobId {
        match self {
            Self::Apply { job_id, .. } | Self::Prefetch { job_id, .. } => job_id,
        }
    }

    pub fn expires_at_unix_ms(&self) -> i64 {
        match self {
            Self::Apply {
                expires_at_unix_ms, ..
            }
            | Self::Prefetch {
                expires_at_unix_ms, ..
            } => *expires_at_unix_ms,
        }
    }
}

/// What a host said about a job, or why the master holding its link could not ask it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HostAnswer {
    Progress(Progress),
    Result(JobResult),
    Prefetched(Result<(), String>),
    /// The command (a fetch ahead, or the job's own) never reached the host, and why.
    Undeliverable {
        prefetch: bool,
        reason: String,
    },
}

/// What [`super::Store::follow_relayed`] yields: the messages for one master, each once.
pub type RelayedMessages = futures::stream::BoxStream<'static, Result<Relayed, StoreError>>;

/// Which master holds a host's link, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct LinkRecord {
    pub master: String,
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct RelayedRecord {
    pub message: Relayed,
}
