//! What lets a master take over a job another master started and could not finish, when
//! masters share a store: the job's plan (everything its run needs: each host's desired
//! state, the rollout, what it deploys), kept while it runs, and who holds the job.
//!
//! A master holds its jobs under a lease it keeps renewing: when it stops, or is cut off from
//! the store, the lease runs out, the store forgets who held its jobs, and another master claims
//! them (a claim succeeds only while nobody holds the job).

use std::collections::BTreeMap;
use std::time::Duration;

use brine_common::names::MinionId;
use brine_common::outcome::{HostReport, JobId};
use brine_common::spec::DesiredState;
use serde::{Deserialize, Serialize};

use super::{RequestRecord, StoreError};
use crate::job::JobType;
use crate::release::{Pins, Release};
use crate::rollout::Rollout;

/// A job's plan, as kept while it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPlanRecord {
    pub job_id: JobId,
    #[serde(default)]
    pub job_type: JobType,
    pub target: String,
    pub rollout: Rollout,
    pub timeout_ms: u64,
    pub plan: bool,
    /// Each targeted host's desired state (kept one key per host in etcd).
    pub desired: BTreeMap<MinionId, DesiredState>,
    pub blocked: BTreeMap<MinionId, HostReport>,
    pub deployed: Pins,
    pub previous_release: Option<Release>,
    pub caller: String,
    pub resolve_ms: u64,
    pub not_accepted: u32,
    pub request: Option<RequestRecord>,
}

/// Which master holds a running job, under which of its leases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOwner {
    pub master: String,
    pub lease: i64,
}

/// A lease a master keeps renewing; the records attached to it go when it runs out.
#[async_trait::async_trait]
pub trait Lease: Send {
    fn id(&self) -> i64;

    /// Renews the lease; how long it holds from now on. An error once it ran out.
    async fn renew(&mut self) -> Result<Duration, StoreError>;
}

/// What [`super::Store::follow_released_jobs`] yields: jobs whose holder let go of them (it
/// finished them, or its lease ran out).
pub type ReleasedJobs = futures::stream::BoxStream<'static, Result<JobId, StoreError>>;
