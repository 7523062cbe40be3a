//! The fleet lock: one record, held by a job or an operator until released or expired.

use serde::{Deserialize, Serialize};

/// The fleet lock: while it is held and not expired, no rollout starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// The certificate identity of the holder.
    pub holder: String,
    pub message: String,
    pub acquired_at_unix_ms: i64,
    pub expires_at_unix_ms: i64,
    /// The job holding it; `None` for a lock taken by hand.
    pub job_id: Option<String>,
}

impl LockRecord {
    pub fn is_expired(&self, now_unix_ms: i64) -> bool {
        self.expires_at_unix_ms <= now_unix_ms
    }

    /// Whether a release for `job_id` frees this lock: any release by hand (`None`) does, a
    /// job's only if the job holds it.
    pub(super) fn is_released_by(&self, job_id: Option<&str>) -> bool {
        job_id.is_none() || self.job_id.as_deref() == job_id
    }
}
