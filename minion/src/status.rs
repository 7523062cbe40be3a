//! The one line `systemctl status brine-minion` shows: the link to the master and the last job.

use std::sync::Mutex;
use std::time::Duration;

use brine_common::outcome::JobResult;

/// The link's state and the last job, sent to systemd whenever either changes.
#[derive(Debug, Default)]
pub struct StatusLine {
    // A std mutex: held only to update two short strings, never across an await.
    parts: Mutex<Parts>,
}

#[derive(Debug, Default, Clone)]
struct Parts {
    link: String,
    job: Option<String>,
}

impl StatusLine {
    pub fn connecting(&self, master: &str) {
        self.update(|p| p.link = format!("connecting to {master}"));
    }

    pub fn linked(&self, master: &str) {
        self.update(|p| p.link = format!("linked to {master}"));
    }

    pub fn lost(&self, master: &str, retry_in: Duration) {
        self.update(|p| {
            p.link = format!(
                "link to {master} lost, retrying in {} s",
                retry_in.as_secs_f32().ceil()
            );
        });
    }

    pub fn job_finished(&self, result: &JobResult) {
        self.update(|p| p.job = Some(format!("last job {}: {}", result.job_id, result.status)));
    }

    /// The current line.
    pub fn line(&self) -> String {
        let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match parts.job {
            Some(job) => format!("{}; {job}", parts.link),
            None => parts.link,
        }
    }

    fn update(&self, change: impl FnOnce(&mut Parts)) {
        change(&mut self.parts.lock().unwrap_or_else(|p| p.into_inner()));
        brine_daemon::systemd::status(&self.line());
    }
}

#[cfg(test)]
mod tests {
    use brine_common::outcome::JobId;

    use super::*;

    #[test]
    fn the_line_shows_the_link_and_the_last_job() {
        let status = StatusLine::default();
        status.connecting("m:4700");
        assert_eq!(status.line(), "connecting to m:4700");
        status.linked("m:4700");
        status.job_finished(&JobResult::failed(
            JobId::new("j-1".to_owned()).unwrap(),
            "x".into(),
        ));
        assert_eq!(status.line(), "linked to m:4700; last job j-1: failed");
        status.lost("m:4700", Duration::from_millis(1500));
        assert!(
            status
                .line()
                .starts_with("link to m:4700 lost, retrying in 2 s")
        );
    }
}
