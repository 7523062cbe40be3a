//! What a job did: per container, per host.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::{ContainerName, MinionId, RoleName};

/// A job's id: the UTC time it started and a random suffix, so ids sort by time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

/// Why a job id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a job id is 1 to 64 letters, digits or '-'")]
pub struct JobIdError;

impl JobId {
    pub fn new(id: impl Into<String>) -> Result<Self, JobIdError> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= 64
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if valid { Ok(Self(id)) } else { Err(JobIdError) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for JobId {
    type Error = JobIdError;
    fn try_from(id: String) -> Result<Self, JobIdError> {
        Self::new(id)
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The final status of a host in a job. Every targeted host gets exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    /// Everything already matched; nothing was touched.
    Unchanged,
    /// Some containers were created, replaced or removed.
    Changed,
    /// The host could not be converged; running containers were left running.
    Failed,
    /// The minion was not connected, or its link dropped before it reported.
    Unreachable,
    /// The minion did not report before the deadline.
    TimedOut,
    /// The rollout stopped before it reached this host; nothing was sent to it.
    Skipped,
    /// The master stopped before this host's report was recorded; the host may have finished.
    Interrupted,
}

impl HostStatus {
    /// Whether the host ended where it should be.
    pub fn is_success(self) -> bool {
        matches!(self, HostStatus::Unchanged | HostStatus::Changed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Unchanged => "unchanged",
            HostStatus::Changed => "changed",
            HostStatus::Failed => "failed",
            HostStatus::Unreachable => "unreachable",
            HostStatus::TimedOut => "timed_out",
            HostStatus::Skipped => "skipped",
            HostStatus::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for HostStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the minion did to one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerAction {
    Kept,
    Created,
    Replaced,
    Removed,
    Failed,
}

impl ContainerAction {
    /// Whether the action changed the host.
    pub fn is_change(self) -> bool {
        matches!(
            self,
            ContainerAction::Created | ContainerAction::Replaced | ContainerAction::Removed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ContainerAction::Kept => "kept",
            ContainerAction::Created => "created",
            ContainerAction::Replaced => "replaced",
            ContainerAction::Removed => "removed",
            ContainerAction::Failed => "failed",
        }
    }
}

/// What happened to one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerResult {
    pub name: ContainerName,
    /// `None` for a container removed because no role declares it any more and whose role
    /// label was unreadable.
    pub role: Option<RoleName>,
    pub action: ContainerAction,
    pub image: String,
    /// `repo@sha256:...` when the registry reported a digest, otherwise the local image id.
    pub image_digest: String,
    pub error: Option<String>,
    /// A replacement failed and the container that ran before was brought back.
    #[serde(default)]
    pub previous_restored: bool,
    /// In a plan: the host lacks the image and would download it.
    #[serde(default)]
    pub needs_pull: bool,
}

/// Where a host's time went in a job, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// Checking images are present and downloading those that are not.
    pub pull_ms: u64,
    /// Docker creating, starting, stopping, renaming and removing containers.
    pub containers_ms: u64,
    /// Waiting for new containers to become healthy.
    pub health_ms: u64,
}

/// The outcome a minion reports for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    pub job_id: JobId,
    pub status: HostStatus,
    pub containers: Vec<ContainerResult>,
    pub error: Option<String>,
    #[serde(default)]
    pub timings: Timings,
}

impl JobResult {
    /// The status that follows from the container results: failed if any failed, changed if any
    /// changed, unchanged otherwise.
    pub fn from_containers(job_id: JobId, containers: Vec<ContainerResult>) -> Self {
        let failure = containers
            .iter()
            .find(|c| c.action == ContainerAction::Failed)
            .map(|c| {
                format!(
                    "container {}: {}",
                    c.name,
                    c.error.as_deref().unwrap_or("failed")
                )
            });
        let status = if failure.is_some() {
            HostStatus::Failed
        } else if containers.iter().any(|c| c.action.is_change()) {
            HostStatus::Changed
        } else {
            HostStatus::Unchanged
        };
        Self {
            job_id,
            status,
            containers,
            error: failure,
            timings: Timings::default(),
        }
    }

    /// A job that failed before any container was touched.
    pub fn failed(job_id: JobId, error: String) -> Self {
        Self {
            job_id,
            status: HostStatus::Failed,
            containers: vec![],
            error: Some(error),
            timings: Timings::default(),
        }
    }
}

/// The final status of one host in a job, as the master records and reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    pub minion_id: MinionId,
    pub status: HostStatus,
    pub containers: Vec<ContainerResult>,
    pub error: Option<String>,
    pub duration_ms: u64,
    #[serde(default)]
    pub timings: Timings,
    /// The host's own result arrived after the job had given up on it (a partition that
    /// healed, a master that restarted): its status is what the host really did.
    #[serde(default)]
    pub reported_late: bool,
}

impl HostReport {
    /// What `minion_id` reported, as the job records it: `duration_ms` as the master measured
    /// it, and whether it came after the job had given up on the host.
    pub fn from_result(
        minion_id: MinionId,
        result: JobResult,
        duration_ms: u64,
        reported_late: bool,
    ) -> Self {
        Self {
            minion_id,
            status: result.status,
            containers: result.containers,
            error: result.error,
            duration_ms,
            timings: result.timings,
            reported_late,
        }
    }

    /// Whether the job gave up on the host rather than hearing from it, so that a result the
    /// host sends later is what it really did.
    pub fn gave_up(&self) -> bool {
        matches!(
            self.status,
            HostStatus::Unreachable | HostStatus::TimedOut | HostStatus::Interrupted
        ) && !self.reported_late
    }
}

/// The record of a whole job: one report per targeted host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    pub job_id: JobId,
    /// Sorted by minion id.
    pub hosts: Vec<HostReport>,
    pub started_at_unix_ms: i64,
    pub finished_at_unix_ms: i64,
    /// Time the master spent resolving tags to digests.
    #[serde(default)]
    pub resolve_ms: u64,
    /// Who cancelled the job (`jobs cancel`), if someone did: no batch started after that.
    #[serde(default)]
    pub cancelled_by: Option<String>,
}

impl JobSummary {
    /// Whether every host ended unchanged or changed.
    pub fn is_success(&self) -> bool {
        self.hosts.iter().all(|h| h.status.is_success())
    }
}

/// One event of a running highstate, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HighstateEvent {
    /// Always first.
    Started {
        job_id: JobId,
        targets: Vec<MinionId>,
        /// Hosts the target picked that were left out because they are not accepted (pending,
        /// rejected or revoked): they get no command and are not counted as unreachable.
        not_accepted: u32,
    },
    Progress {
        minion_id: MinionId,
        progress: crate::progress::Progress,
    },
    HostFinished(HostReport),
    /// Always last.
    Summary(JobSummary),
}
