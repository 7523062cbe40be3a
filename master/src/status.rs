//! The one line `systemctl status brine-master` shows: where the master serves, how many hosts
//! are linked, and the job running or the last one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use brine_common::outcome::{JobId, JobSummary};
use tokio_util::sync::CancellationToken;

use crate::state::Master;

/// How often the line is refreshed (sent only when it changed).
const REFRESH: Duration = Duration::from_secs(2);

/// What the master is doing, as far as the status line tells.
#[derive(Debug, Default)]
pub struct Activity {
    // A std mutex: held only to copy a short string, never across an await.
    job: Mutex<Option<String>>,
}

impl Activity {
    pub fn job_started(&self, job_id: &JobId) {
        self.set(format!("job {job_id} running"));
    }

    pub fn job_finished(&self, summary: &JobSummary) {
        let verdict = if summary.is_success() {
            "succeeded"
        } else {
            "failed"
        };
        self.set(format!(
            "last job {} {verdict} on {} hosts",
            summary.job_id,
            summary.hosts.len()
        ));
    }

    fn set(&self, text: String) {
        *self.job.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
    }

    fn job(&self) -> Option<String> {
        self.job.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The status line for `linked` hosts.
fn line(address: &str, linked: usize, job: Option<String>) -> String {
    let hosts = if linked == 1 { "host" } else { "hosts" };
    let mut line = format!("serving on {address}; {linked} {hosts} linked");
    if let Some(job) = job {
        line.push_str("; ");
        line.push_str(&job);
    }
    line
}

/// Tells systemd the master is ready, then keeps its status line current until `stop`.
pub async fn report_to_systemd(master: Arc<Master>, address: String, stop: CancellationToken) {
    let mut shown = line(&address, master.links.count(), master.activity.job());
    brine_daemon::systemd::ready(&shown);
    let mut ticks = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let current = line(&address, master.links.count(), master.activity.job());
        if current != shown {
            brine_daemon::systemd::status(&current);
            shown = current;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_hosts_and_names_the_last_job() {
        assert_eq!(
            line("0.0.0.0:4700", 1, None),
            "serving on 0.0.0.0:4700; 1 host linked"
        );
        let activity = Activity::default();
        let job_id = JobId::new("20261201T101010-0123abcd".to_owned()).unwrap();
        activity.job_started(&job_id);
        assert_eq!(
            line("a:1", 3, activity.job()),
            "serving on a:1; 3 hosts linked; job 20261201T101010-0123abcd running"
        );
        activity.job_finished(&JobSummary {
            job_id,
            hosts: vec![],
            started_at_unix_ms: 0,
            finished_at_unix_ms: 0,
            resolve_ms: 0,
            cancelled_by: None,
        });
        assert!(activity.job().unwrap().contains("succeeded on 0 hosts"));
    }
}
