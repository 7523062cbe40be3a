//! The one line `systemctl status brine-minion` shows: the link to the master and the last job;
//! and the link's state and counts for whoever runs the minion as a library (the fleet
//! simulator).

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
    counts: LinkCounts,
}

/// The link's state and history since the minion started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkCounts {
    /// A link to the master is up now.
    pub linked: bool,
    /// Links that came up.
    pub links: u32,
    /// Attempts that never came up: the master was unreachable, the handshake failed or the
    /// link was refused.
    pub failed_attempts: u32,
    /// Links that were up and were lost.
    pub losses: u32,
}

impl StatusLine {
    pub fn connecting(&self, master: &str) {
        self.update(|p| p.link = format!("connecting to {master}"));
    }

    pub fn linked(&self, master: &str) {
        self.update(|p| {
            p.link = format!("linked to {master}");
            p.counts.linked = true;
            p.counts.links = p.counts.links.saturating_add(1);
        });
    }

    pub fn lost(&self, master: &str, retry_in: Duration) {
        self.update(|p| {
            if p.counts.linked {
                p.counts.losses = p.counts.losses.saturating_add(1);
            } else {
                p.counts.failed_attempts = p.counts.failed_attempts.saturating_add(1);
            }
            p.counts.linked = false;
            p.link = format!(
                "link to {master} lost, retrying in {} s",
                retry_in.as_secs_f32().ceil()
            );
        });
    }

    pub fn job_finished(&self, result: &JobResult) {
        self.update(|p| p.job = Some(format!("last job {}: {}", result.job_id, result.status)));
    }

    /// The link's state and counts now.
    pub fn counts(&self) -> LinkCounts {
        self.parts.lock().unwrap_or_else(|p| p.into_inner()).counts
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

    #[test]
    fn counts_tell_lost_links_from_attempts_that_never_came_up() {
        let status = StatusLine::default();
        status.connecting("m:4700");
        status.lost("m:4700", Duration::from_secs(1));
        status.lost("m:4700", Duration::from_secs(1));
        status.linked("m:4700");
        assert_eq!(
            status.counts(),
            LinkCounts {
                linked: true,
                links: 1,
                failed_attempts: 2,
                losses: 0
            }
        );
        status.lost("m:4700", Duration::from_secs(1));
        assert_eq!(
            status.counts(),
            LinkCounts {
                linked: false,
                links: 1,
                failed_attempts: 2,
                losses: 1
            }
        );
    }
}
