//! The NDJSON mode: one JSON object per event on stdout, as the events arrive, for programs that
//! follow a job live. It is separate because it prints as it goes, unlike the one document of
//! the JSON mode. Each object's `event` says what it is: `started`, `progress`, `host_finished`
//! or `summary`; the rest are the event's fields, as in `--output json`.

use std::io::{self, Write};

use brine_common::names::MinionId;
use brine_common::outcome::{HighstateEvent, HostReport, JobId, JobSummary};
use brine_common::progress::Progress;
use serde::Serialize;

use super::STREAM_ENDED;

/// One line of `--output ndjson`.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Line<'a> {
    Started {
        job_id: &'a JobId,
        minion_ids: &'a [MinionId],
        not_accepted: u32,
    },
    Progress {
        minion_id: &'a MinionId,
        #[serde(flatten)]
        progress: &'a Progress,
    },
    HostFinished(&'a HostReport),
    Summary(&'a JobSummary),
    /// The stream stopped before the summary.
    Incomplete {
        error: &'static str,
    },
}

pub(super) struct NdjsonMode {
    out: Box<dyn Write + Send>,
    summarized: bool,
}

impl NdjsonMode {
    pub(super) fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            summarized: false,
        }
    }

    pub(super) fn event(&mut self, event: &HighstateEvent) {
        let line = match event {
            HighstateEvent::Started {
                job_id,
                targets,
                not_accepted,
            } => Line::Started {
                job_id,
                minion_ids: targets,
                not_accepted: *not_accepted,
            },
            HighstateEvent::Progress {
                minion_id,
                progress,
            } => Line::Progress {
                minion_id,
                progress,
            },
            HighstateEvent::HostFinished(report) => Line::HostFinished(report),
            HighstateEvent::Summary(summary) => {
                self.summarized = true;
                Line::Summary(summary)
            }
        };
        self.print(&line);
    }

    pub(super) fn finish(&mut self) {
        if !self.summarized {
            self.print(&Line::Incomplete {
                error: STREAM_ENDED,
            });
        }
    }

    fn print(&mut self, line: &Line<'_>) {
        let written = serde_json::to_string(line)
            .map_err(io::Error::other)
            .and_then(|text| writeln!(self.out, "{text}"))
            .and_then(|()| self.out.flush());
        if let Err(err) = written {
            tracing::warn!("cannot print an event: {err}");
        }
    }
}
