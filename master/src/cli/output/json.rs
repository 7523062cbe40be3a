//! The JSON mode: the one document `--output json` prints when the stream ends. It is separate
//! because its shape is what scripts read, documented on [`JsonReport`].

use std::io::{self, Write};

use brine_common::outcome::{HostReport, JobId};
use serde::Serialize;

use super::{JobState, STREAM_ENDED};

/// The document `--output json` prints on stdout, once, when the stream ends.
///
/// ```json
/// {
///   "job_id": "20261126T101500Z-4f2a",
///   "success": false,
///   "started_at_unix_ms": 1795687500000,
///   "finished_at_unix_ms": 1795687512345,
///   "resolve_ms": 12,
///   "not_accepted": 0,
///   "cancelled_by": null,
///   "hosts": [
///     {
///       "minion_id": "web-1",
///       "status": "changed",
///       "containers": [
///         {
///           "name": "web",
///           "role": "web",
///           "action": "replaced",
///           "image": "127.0.0.1:5000/app:tested@sha256:...",
///           "image_digest": "127.0.0.1:5000/app@sha256:...",
///           "error": null,
///           "previous_restored": false,
///           "needs_pull": false
///         }
///       ],
///       "error": null,
///       "duration_ms": 1234,
///       "timings": { "pull_ms": 310, "containers_ms": 420, "health_ms": 2010 },
///       "reported_late": false
///     }
///   ],
///   "error": null
/// }
/// ```
///
/// - `status` is one of `unchanged`, `changed`, `failed`, `unreachable`, `timed_out`, `skipped`; `action`
///   one of `kept`, `created`, `replaced`, `removed`, `failed`; `role` may be null.
/// - `success` is true only when the job finished and every host ended `unchanged` or `changed`.
/// - `error` is null when the master sent the whole job. When the stream ended early it says so,
///   `success` is false, `hosts` holds only the hosts that reported, the times are this
///   process's clock (when the job started, or when rendering began if it never did, and when
///   the stream ended), and `job_id` is null if the job never started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JsonReport {
    pub job_id: Option<JobId>,
    pub success: bool,
    pub started_at_unix_ms: i64,
    pub finished_at_unix_ms: i64,
    /// Time the master spent resolving image tags to digests.
    pub resolve_ms: u64,
    /// Hosts the target picked that were left out because they are not accepted.
    pub not_accepted: u32,
    /// Who cancelled the job, if someone did (`jobs cancel`).
    pub cancelled_by: Option<String>,
    /// Sorted by minion id.
    pub hosts: Vec<HostReport>,
    pub error: Option<String>,
}

/// One document for scripts, printed when the stream ends.
pub(super) struct JsonMode {
    /// Stdout in production; a buffer in tests.
    pub(super) out: Box<dyn Write + Send>,
}

impl JsonMode {
    pub(super) fn finish(&mut self, state: &JobState, now_unix_ms: i64) {
        let report = json_report(state, now_unix_ms);
        // Serializing plain data cannot fail; writing fails only when stdout is gone, and then
        // there is nobody to tell.
        let _ = serde_json::to_writer_pretty(&mut self.out, &report)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(self.out))
            .and_then(|()| self.out.flush());
    }
}

/// The JSON document for what the renderer saw; `now_unix_ms` ends an incomplete job.
pub(super) fn json_report(state: &JobState, now_unix_ms: i64) -> JsonReport {
    match &state.summary {
        Some(summary) => JsonReport {
            job_id: Some(summary.job_id.clone()),
            success: summary.is_success(),
            started_at_unix_ms: summary.started_at_unix_ms,
            finished_at_unix_ms: summary.finished_at_unix_ms,
            resolve_ms: summary.resolve_ms,
            not_accepted: state.not_accepted,
            cancelled_by: summary.cancelled_by.clone(),
            hosts: state.reports().into_iter().cloned().collect(),
            error: None,
        },
        None => JsonReport {
            job_id: state.job_id.clone(),
            success: false,
            started_at_unix_ms: state.started_at_unix_ms,
            finished_at_unix_ms: now_unix_ms,
            resolve_ms: 0,
            not_accepted: state.not_accepted,
            cancelled_by: None,
            hosts: state.reports().into_iter().cloned().collect(),
            error: Some(STREAM_ENDED.to_owned()),
        },
    }
}
