//! The plain mode: one line per step, for a pipe or a CI log. It is separate because deciding
//! which progress reports deserve a line is its own small piece of state.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use brine_common::names::MinionId;
use brine_common::outcome::HighstateEvent;
use brine_common::progress::{Phase, Progress};

use super::JobState;
use super::text::{describe_host, describe_progress, started_line, summary_lines};

/// Lines for a pipe or a CI log: no cursor movement, and few enough lines that the log of a large
/// fleet stays readable.
pub(super) struct PlainMode {
    /// Stdout in production; a buffer in tests.
    out: Box<dyn Write + Send>,
    /// The last step printed per host, so a stream of byte counts for one step prints once.
    last_step: HashMap<MinionId, (Phase, String)>,
    /// Images already announced per host: pulls of several images may interleave, and each
    /// announcement is worth one line, not one per switch.
    pulled: HashSet<(MinionId, String)>,
}

impl PlainMode {
    pub(super) fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            last_step: HashMap::new(),
            pulled: HashSet::new(),
        }
    }

    pub(super) fn event(&mut self, event: &HighstateEvent) {
        match event {
            HighstateEvent::Started {
                job_id,
                targets,
                not_accepted,
            } => {
                self.line(&started_line(job_id, targets.len(), *not_accepted));
            }
            HighstateEvent::Progress {
                minion_id,
                progress,
            } => {
                if let Some(line) = self.progress_line(minion_id, progress) {
                    self.line(&line);
                }
            }
            HighstateEvent::HostFinished(report) => {
                self.line(&format!(
                    "{minion_id}: {}",
                    describe_host(report),
                    minion_id = report.minion_id
                ));
            }
            // `finish` prints the summary, since it must also do so when none arrives.
            HighstateEvent::Summary(_) => {}
        }
    }

    /// The line a progress report deserves, if any: one when a host moves to another step, and
    /// never twice for the same image on the same host.
    fn progress_line(&mut self, id: &MinionId, progress: &Progress) -> Option<String> {
        let step = (progress.phase, progress.subject.clone());
        if self.last_step.get(id) == Some(&step) {
            return None;
        }
        let new_step = progress.phase != Phase::Pulling
            || self.pulled.insert((id.clone(), progress.subject.clone()));
        self.last_step.insert(id.clone(), step);
        new_step.then(|| format!("{id}: {}", describe_progress(progress)))
    }

    pub(super) fn finish(&mut self, state: &JobState) {
        for line in summary_lines(state) {
            self.line(&line);
        }
    }

    fn line(&mut self, text: &str) {
        // Flushed per line so a log shows progress as it happens. A closed stdout (`| head`)
        // must not panic the CLI, and there is nobody left to tell.
        let _ = writeln!(self.out, "{text}").and_then(|()| self.out.flush());
    }
}
