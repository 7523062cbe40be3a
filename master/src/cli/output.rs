//! Renders a running highstate for the operator: live bars on a terminal, plain lines in a log
//! or a pipe, or one JSON document for scripts.
//!
//! The three modes see the same events and share one `JobState`, so the closing summary and
//! the JSON document do not depend on how the events were drawn. Each mode has a module of its
//! own (`bars.rs`, `plain.rs`, `json.rs`); every piece of text about a host comes from
//! `text.rs`, so a host reads the same in a bar, a log line and the summary.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{self, IsTerminal};

use brine_common::names::MinionId;
use brine_common::outcome::{HighstateEvent, HostReport, JobId, JobSummary};
use brine_daemon::clock::now_unix_ms;

mod bars;
mod json;
mod ndjson;
mod plain;
#[cfg(test)]
mod tests;
mod text;

use bars::BarsMode;
use json::JsonMode;
pub use json::JsonReport;
use ndjson::NdjsonMode;
use plain::PlainMode;

/// Why a job is incomplete when the event stream stops before its `Summary`.
const STREAM_ENDED: &str = "the master ended the stream before the job finished";

/// How highstate output is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Progress bars when stdout is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// One line per step, without colours or cursor movement (for logs and CI).
    Plain,
    /// Nothing while the job runs, then one JSON document with every host's result.
    Json,
    /// One JSON object per event as it arrives (`started`, `progress`, `host_finished`,
    /// `summary`), for programs that follow the job live.
    Ndjson,
}

/// Draws the events of one highstate; see [`OutputFormat`].
///
/// Feed it every event with [`Renderer::event`], then call [`Renderer::finish`] once the stream
/// ends, whether or not it ended with a `Summary`. Everything goes to stdout.
pub struct Renderer {
    state: JobState,
    mode: Mode,
    /// Set by `finish`, so a second call (or a late event) cannot print the summary twice.
    finished: bool,
}

/// One small drawer per output format; each prints only what its format needs.
enum Mode {
    /// Boxed: four bar styles make it several times the size of the others.
    Bars(Box<BarsMode>),
    Plain(PlainMode),
    Json(JsonMode),
    Ndjson(NdjsonMode),
}

impl Renderer {
    /// `Auto` picks bars on a terminal (std::io::IsTerminal on stdout) and plain lines otherwise.
    /// Whether the job ended and every host ended unchanged or changed.
    pub fn job_succeeded(&self) -> bool {
        self.state
            .summary
            .as_ref()
            .is_some_and(|summary| summary.is_success())
    }

    pub fn new(format: OutputFormat) -> Self {
        let mode = match format {
            // indicatif draws nothing when stdout is not a terminal, so bars there would lose
            // every line of output.
            OutputFormat::Auto if io::stdout().is_terminal() => {
                Mode::Bars(Box::new(BarsMode::new()))
            }
            OutputFormat::Auto | OutputFormat::Plain => {
                Mode::Plain(PlainMode::new(Box::new(io::stdout())))
            }
            OutputFormat::Json => Mode::Json(JsonMode {
                out: Box::new(io::stdout()),
            }),
            OutputFormat::Ndjson => Mode::Ndjson(NdjsonMode::new(Box::new(io::stdout()))),
        };
        Self::with_mode(mode)
    }

    fn with_mode(mode: Mode) -> Self {
        Self {
            state: JobState::new(now_unix_ms()),
            mode,
            finished: false,
        }
    }

    pub fn event(&mut self, event: &HighstateEvent) {
        if self.finished {
            return;
        }
        // Progress that arrives after a host's result is stale: it must not reopen a finished
        // bar or print a step after the host's verdict.
        if let HighstateEvent::Progress { minion_id, .. } = event
            && self.state.finished.contains_key(minion_id)
        {
            return;
        }
        self.state.record(event, now_unix_ms());
        match &mut self.mode {
            Mode::Bars(bars) => bars.event(event),
            Mode::Plain(plain) => plain.event(event),
            // Scripts get one document at the end, never partial output.
            Mode::Json(_) => {}
            Mode::Ndjson(ndjson) => ndjson.event(event),
        }
    }

    /// Called after the stream ended; returns nothing, prints the final summary (or the JSON
    /// document).
    pub fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        match &mut self.mode {
            Mode::Bars(bars) => bars.finish(&self.state),
            Mode::Plain(plain) => plain.finish(&self.state),
            Mode::Json(json) => json.finish(&self.state, now_unix_ms()),
            Mode::Ndjson(ndjson) => ndjson.finish(),
        }
    }
}

/// What the renderer has learnt about the job, whatever the mode.
#[derive(Debug)]
struct JobState {
    job_id: Option<JobId>,
    /// Every host the job targets or that sent anything, so a host that reports without being
    /// announced still appears in the summary.
    hosts: BTreeSet<MinionId>,
    finished: BTreeMap<MinionId, HostReport>,
    summary: Option<JobSummary>,
    not_accepted: u32,
    /// This process's clock when the job started (or when rendering began, until it does); only
    /// reported when no summary brings the master's own times.
    started_at_unix_ms: i64,
}

impl JobState {
    fn new(now_unix_ms: i64) -> Self {
        Self {
            job_id: None,
            hosts: BTreeSet::new(),
            finished: BTreeMap::new(),
            summary: None,
            not_accepted: 0,
            started_at_unix_ms: now_unix_ms,
        }
    }

    fn record(&mut self, event: &HighstateEvent, now_unix_ms: i64) {
        match event {
            HighstateEvent::Started {
                job_id,
                targets,
                not_accepted,
            } => {
                self.not_accepted = *not_accepted;
                self.job_id = Some(job_id.clone());
                self.hosts.extend(targets.iter().cloned());
                self.started_at_unix_ms = now_unix_ms;
            }
            HighstateEvent::Progress { minion_id, .. } => {
                self.hosts.insert(minion_id.clone());
            }
            HighstateEvent::HostFinished(report) => {
                self.hosts.insert(report.minion_id.clone());
                self.finished
                    .insert(report.minion_id.clone(), report.clone());
            }
            HighstateEvent::Summary(summary) => {
                self.job_id.get_or_insert_with(|| summary.job_id.clone());
                let mut summary = summary.clone();
                // A job always has hosts: a summary without them left them out to fit one
                // message, and each came in its own `HostFinished` event.
                if summary.hosts.is_empty() {
                    summary.hosts = self.finished.values().cloned().collect();
                }
                self.hosts
                    .extend(summary.hosts.iter().map(|h| h.minion_id.clone()));
                self.summary = Some(summary);
            }
        }
    }

    /// The final reports, sorted by host: the summary's when the job finished (it is the
    /// master's record), otherwise those of the hosts that did report.
    fn reports(&self) -> Vec<&HostReport> {
        let mut reports: Vec<&HostReport> = match &self.summary {
            Some(summary) => summary.hosts.iter().collect(),
            None => self.finished.values().collect(),
        };
        reports.sort_by(|a, b| a.minion_id.cmp(&b.minion_id));
        reports
    }

    /// Hosts the job involved that have no final report.
    fn without_result(&self) -> Vec<&MinionId> {
        let reported: HashSet<&MinionId> = self.reports().iter().map(|r| &r.minion_id).collect();
        self.hosts
            .iter()
            .filter(|id| !reported.contains(id))
            .collect()
    }
}
