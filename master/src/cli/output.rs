//! Renders a running highstate for the operator: live bars on a terminal, plain lines in a log
//! or a pipe, or one JSON document for scripts.
//!
//! The three modes see the same events and share one `JobState`, so the closing summary and
//! the JSON document do not depend on how the events were drawn. Every piece of text about a host
//! comes from the helpers at the bottom of this file, so a host reads the same in a bar, a log
//! line and the summary.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use brine_common::names::MinionId;
use brine_common::outcome::{
    ContainerResult, HighstateEvent, HostReport, HostStatus, JobId, JobSummary,
};
use brine_common::progress::{Phase, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// Why a job is incomplete when the event stream stops before its `Summary`.
const STREAM_ENDED: &str = "the master ended the stream before the job finished";

/// How often a busy host's spinner moves: fast enough to look alive, slow enough to cost nothing.
const TICK: Duration = Duration::from_millis(100);

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
}

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

/// Live bars on a terminal: one line per host that changes in place, so a fleet's progress fits
/// on one screen.
struct BarsMode {
    multi: MultiProgress,
    bars: BTreeMap<MinionId, HostBar>,
    /// The width host ids are padded to, so messages line up in a column.
    width: usize,
    styles: BarStyles,
}

struct HostBar {
    bar: ProgressBar,
    look: Look,
}

/// Which style a bar has, so the style is swapped only when the look changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// No progress yet: static, so hundreds of idle hosts cost no ticker threads.
    Waiting,
    /// A step without a byte count: a moving spinner.
    Busy,
    /// A pull with a known size: a byte bar.
    Bytes,
    /// The host's final line.
    Done,
}

struct BarStyles {
    waiting: ProgressStyle,
    busy: ProgressStyle,
    bytes: ProgressStyle,
    done: ProgressStyle,
}

impl BarStyles {
    fn new() -> Self {
        // The first column is one character wide in every style (the spinner, '·', or the final
        // line's mark) so host ids stay aligned as bars change look.
        let style = |template: &str| {
            ProgressStyle::with_template(template).expect("the bar templates are valid constants")
        };
        Self {
            waiting: style("· {prefix}  {msg}"),
            busy: style("{spinner} {prefix}  {msg}"),
            bytes: style("{spinner} {prefix}  {msg} [{bar:30}] {bytes}/{total_bytes}")
                .progress_chars("=> "),
            done: style("{msg}"),
        }
    }

    fn get(&self, look: Look) -> ProgressStyle {
        match look {
            Look::Waiting => self.waiting.clone(),
            Look::Busy => self.busy.clone(),
            Look::Bytes => self.bytes.clone(),
            Look::Done => self.done.clone(),
        }
    }
}

impl BarsMode {
    fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            bars: BTreeMap::new(),
            width: 0,
            styles: BarStyles::new(),
        }
    }

    fn event(&mut self, event: &HighstateEvent) {
        match event {
            HighstateEvent::Started {
                job_id,
                targets,
                not_accepted,
            } => {
                // Printed through the MultiProgress so it stays above the bars however early
                // they draw; a closed terminal leaves nobody to tell.
                let _ = self
                    .multi
                    .println(started_line(job_id, targets.len(), *not_accepted));
                self.width = self.width.max(id_width(targets));
                let sorted: BTreeSet<&MinionId> = targets.iter().collect();
                for id in sorted {
                    self.bar_for(id);
                }
            }
            HighstateEvent::Progress {
                minion_id,
                progress,
            } => self.progress(minion_id, progress),
            HighstateEvent::HostFinished(report) => self.finish_host(report),
            // Hosts the master gave up on may appear only here.
            HighstateEvent::Summary(summary) => {
                for report in &summary.hosts {
                    if !self.bar_for(&report.minion_id).bar.is_finished() {
                        self.finish_host(report);
                    }
                }
            }
        }
    }

    /// The bar of a host, added at the bottom if the job did not announce it.
    fn bar_for(&mut self, id: &MinionId) -> &mut HostBar {
        self.bars.entry(id.clone()).or_insert_with(|| {
            let bar = self.multi.add(
                ProgressBar::new_spinner()
                    .with_style(self.styles.get(Look::Waiting))
                    .with_prefix(pad(id, self.width))
                    .with_message("waiting"),
            );
            // A bar without a tick is never drawn, and a waiting bar has no ticker.
            bar.tick();
            HostBar {
                bar,
                look: Look::Waiting,
            }
        })
    }

    fn progress(&mut self, id: &MinionId, progress: &Progress) {
        let look = if progress.phase == Phase::Pulling && progress.bytes_total > 0 {
            Look::Bytes
        } else {
            Look::Busy
        };
        let style = self.styles.get(look);
        let host = self.bar_for(id);
        if host.look == Look::Done {
            return;
        }
        // Message and counts before the style, so no frame shows the new look with stale text.
        host.bar.set_message(describe_progress(progress));
        if look == Look::Bytes {
            host.bar.set_length(progress.bytes_total);
            host.bar
                .set_position(progress.bytes_done.min(progress.bytes_total));
        }
        if host.look != look {
            host.bar.set_style(style);
            if host.look == Look::Waiting {
                host.bar.enable_steady_tick(TICK);
            }
            host.look = look;
        }
    }

    fn finish_host(&mut self, report: &HostReport) {
        let line = host_line(report, self.width);
        self.settle(&report.minion_id, line, ProgressBar::finish_with_message);
    }

    /// Gives a bar its final line with `end` (finish or abandon), which also stops its ticker.
    fn settle(
        &mut self,
        id: &MinionId,
        line: String,
        end: fn(&ProgressBar, std::borrow::Cow<'static, str>),
    ) {
        let style = self.styles.get(Look::Done);
        let host = self.bar_for(id);
        host.bar.set_style(style);
        host.look = Look::Done;
        end(&host.bar, line.into());
    }

    fn finish(&mut self, state: &JobState) {
        let pending: Vec<MinionId> = self
            .bars
            .iter()
            .filter(|(_, host)| host.look != Look::Done)
            .map(|(id, _)| id.clone())
            .collect();
        for id in pending {
            let line = no_result_line(&id, self.width);
            self.settle(&id, line, ProgressBar::abandon_with_message);
        }
        // The summary repeats every host's final line, and a long fleet's bars may not all fit
        // on the screen: replace the bars with it rather than print it twice.
        let _ = self.multi.clear();
        let mut out = io::stdout().lock();
        for line in summary_lines(state) {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
}

/// Lines for a pipe or a CI log: no cursor movement, and few enough lines that the log of a large
/// fleet stays readable.
struct PlainMode {
    /// Stdout in production; a buffer in tests.
    out: Box<dyn Write + Send>,
    /// The last step printed per host, so a stream of byte counts for one step prints once.
    last_step: HashMap<MinionId, (Phase, String)>,
    /// Images already announced per host: pulls of several images may interleave, and each
    /// announcement is worth one line, not one per switch.
    pulled: HashSet<(MinionId, String)>,
}

impl PlainMode {
    fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            last_step: HashMap::new(),
            pulled: HashSet::new(),
        }
    }

    fn event(&mut self, event: &HighstateEvent) {
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

    fn finish(&mut self, state: &JobState) {
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

/// One document for scripts, printed when the stream ends.
struct JsonMode {
    /// Stdout in production; a buffer in tests.
    out: Box<dyn Write + Send>,
}

impl JsonMode {
    fn finish(&mut self, state: &JobState, now_unix_ms: i64) {
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
fn json_report(state: &JobState, now_unix_ms: i64) -> JsonReport {
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

// Shared formatting: every mode builds its text from these, so they cannot drift apart.

/// The closing block of the terminal and plain modes: one line per host, the counts, and why
/// the job is incomplete if it is.
fn summary_lines(state: &JobState) -> Vec<String> {
    let reports = state.reports();
    let missing = state.without_result();
    let width = id_width(
        reports
            .iter()
            .map(|r| &r.minion_id)
            .chain(missing.iter().copied()),
    );
    let mut hosts: Vec<(&MinionId, String)> = reports
        .iter()
        .map(|r| (&r.minion_id, host_line(r, width)))
        .chain(missing.iter().map(|id| (*id, no_result_line(id, width))))
        .collect();
    hosts.sort_by(|a, b| a.0.cmp(b.0));
    let mut lines: Vec<String> = hosts.into_iter().map(|(_, line)| line).collect();
    lines.push(status_counts(
        reports.iter().map(|r| r.status),
        missing.len(),
    ));
    if let Some(by) = state.summary.as_ref().and_then(|s| s.cancelled_by.as_ref()) {
        lines.push(format!("cancelled by {by}"));
    }
    if state.summary.is_none() {
        lines.push(format!("error: {STREAM_ENDED}"));
    }
    lines
}

/// `job ID: N hosts`, the first line of the terminal and plain modes, with the hosts left out
/// as not accepted if there are any.
fn started_line(job_id: &JobId, targets: usize, not_accepted: u32) -> String {
    let mut line = format!("job {job_id}: {}", hosts(targets));
    if not_accepted > 0 {
        line.push_str(&format!(
            " ({} left out: not accepted)",
            hosts(usize::try_from(not_accepted).unwrap_or(usize::MAX))
        ));
    }
    line
}

/// A host's verdict: status, the error if any, then what happened to each container, e.g.
/// `changed (web: replaced, worker: kept)` or `failed: manifest unknown (web: failed)`.
fn describe_host(report: &HostReport) -> String {
    let mut text = status_label(report.status).to_owned();
    if let Some(error) = &report.error {
        text.push_str(": ");
        text.push_str(&one_line(error));
    }
    if !report.containers.is_empty() {
        text.push_str(" (");
        text.push_str(&container_actions(&report.containers));
        text.push(')');
    }
    text
}

/// A host's final line in a table: mark, padded id, verdict, duration, e.g.
/// `✔ web-1  changed (web: replaced)  1.2s`.
fn host_line(report: &HostReport, width: usize) -> String {
    let mark = if report.status.is_success() {
        '✔'
    } else {
        '✘'
    };
    format!(
        "{mark} {}  {}  {}",
        pad(&report.minion_id, width),
        describe_host(report),
        format_duration(report.duration_ms)
    )
}

/// The line of a host that never reported.
fn no_result_line(id: &MinionId, width: usize) -> String {
    format!("? {}  no result", pad(id, width))
}

/// `web: replaced, worker: kept`.
fn container_actions(containers: &[ContainerResult]) -> String {
    containers
        .iter()
        .map(|c| format!("{}: {}", c.name, c.action.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `pulling IMAGE`, `creating web`, ...: the same words on a bar and in a log line.
fn describe_progress(progress: &Progress) -> String {
    format!(
        "{} {}",
        progress.phase.as_str(),
        one_line(&progress.subject)
    )
}

/// The count line, e.g. `3 hosts: 1 unchanged, 1 changed, 1 failed`: non-zero statuses only, in
/// order from best to worst, then the hosts that never reported.
fn status_counts(statuses: impl IntoIterator<Item = HostStatus>, without_result: usize) -> String {
    const ORDER: [HostStatus; 7] = [
        HostStatus::Unchanged,
        HostStatus::Changed,
        HostStatus::Failed,
        HostStatus::Unreachable,
        HostStatus::TimedOut,
        HostStatus::Skipped,
        HostStatus::Interrupted,
    ];
    let statuses: Vec<HostStatus> = statuses.into_iter().collect();
    let mut parts: Vec<String> = ORDER
        .iter()
        .map(|&status| (status, statuses.iter().filter(|&&s| s == status).count()))
        .filter(|&(_, count)| count > 0)
        .map(|(status, count)| format!("{count} {}", status_label(status)))
        .collect();
    if without_result > 0 {
        parts.push(format!("{without_result} without a result"));
    }
    let total = hosts(statuses.len() + without_result);
    if parts.is_empty() {
        total
    } else {
        format!("{total}: {}", parts.join(", "))
    }
}

/// A status for people: `timed out` rather than the wire's `timed_out`.
fn status_label(status: HostStatus) -> &'static str {
    match status {
        HostStatus::TimedOut => "timed out",
        other => other.as_str(),
    }
}

/// `1 host`, `3 hosts`.
fn hosts(count: usize) -> String {
    if count == 1 {
        "1 host".to_owned()
    } else {
        format!("{count} hosts")
    }
}

/// `0.3s`, `12.4s`, `2m05s`.
fn format_duration(ms: u64) -> String {
    if ms < 60_000 {
        format!("{}.{}s", ms / 1000, ms % 1000 / 100)
    } else {
        let secs = ms / 1000;
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

/// The widest id, for padding.
fn id_width<'a>(ids: impl IntoIterator<Item = &'a MinionId>) -> usize {
    ids.into_iter()
        .map(|id| id.as_str().len())
        .max()
        .unwrap_or(0)
}

/// An id padded to `width` (the names' `Display` ignores width flags).
fn pad(id: &MinionId, width: usize) -> String {
    format!("{:<width$}", id.as_str())
}

/// Text from a minion or a registry on one line: newlines would break the one-line-per-event
/// promise, and control characters (escape sequences) would reach the operator's terminal.
fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use brine_common::names::{ContainerName, RoleName};
    use brine_common::outcome::ContainerAction;

    use super::*;

    fn id(name: &str) -> MinionId {
        MinionId::new(name).expect("test ids are valid")
    }

    fn job_id() -> JobId {
        JobId::new("20261126T101500Z-4f2a").expect("test job id is valid")
    }

    fn container(name: &str, action: ContainerAction) -> ContainerResult {
        ContainerResult {
            name: ContainerName::new(name).expect("test names are valid"),
            role: Some(RoleName::new(name).expect("test names are valid")),
            action,
            image: "127.0.0.1:5000/app:tested".to_owned(),
            image_digest: "127.0.0.1:5000/app@sha256:abc".to_owned(),
            error: (action == ContainerAction::Failed).then(|| "manifest unknown".to_owned()),
            previous_restored: false,
            needs_pull: false,
        }
    }

    fn report(
        host: &str,
        status: HostStatus,
        containers: Vec<ContainerResult>,
        error: Option<&str>,
    ) -> HostReport {
        HostReport {
            minion_id: id(host),
            status,
            containers,
            error: error.map(str::to_owned),
            duration_ms: 1234,
            timings: Default::default(),
            reported_late: false,
        }
    }

    fn changed(host: &str) -> HostReport {
        report(
            host,
            HostStatus::Changed,
            vec![
                container("web", ContainerAction::Replaced),
                container("worker", ContainerAction::Kept),
            ],
            None,
        )
    }

    fn pulling(host: &str, image: &str, done: u64) -> HighstateEvent {
        HighstateEvent::Progress {
            minion_id: id(host),
            progress: Progress {
                phase: Phase::Pulling,
                subject: image.to_owned(),
                bytes_done: done,
                bytes_total: 1000,
            },
        }
    }

    fn step(host: &str, phase: Phase, subject: &str) -> HighstateEvent {
        HighstateEvent::Progress {
            minion_id: id(host),
            progress: Progress {
                phase,
                subject: subject.to_owned(),
                bytes_done: 0,
                bytes_total: 0,
            },
        }
    }

    /// A writer the test keeps a handle on, standing in for stdout.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("test buffer lock").write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("test buffer lock").clone())
                .expect("output is UTF-8")
        }
    }

    fn plain_renderer() -> (Renderer, Captured) {
        let out = Captured::default();
        let renderer = Renderer::with_mode(Mode::Plain(PlainMode::new(Box::new(out.clone()))));
        (renderer, out)
    }

    fn json_renderer() -> (Renderer, Captured) {
        let out = Captured::default();
        let renderer = Renderer::with_mode(Mode::Json(JsonMode {
            out: Box::new(out.clone()),
        }));
        (renderer, out)
    }

    fn summary(hosts: Vec<HostReport>) -> JobSummary {
        JobSummary {
            job_id: job_id(),
            hosts,
            started_at_unix_ms: 1_000,
            finished_at_unix_ms: 2_234,
            resolve_ms: 5,
            cancelled_by: None,
        }
    }

    /// The caller may hold a renderer across `.await` in a spawned task.
    #[test]
    fn renderer_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Renderer>();
    }

    #[test]
    fn describes_each_status() {
        let cases = [
            (
                report(
                    "a",
                    HostStatus::Unchanged,
                    vec![container("web", ContainerAction::Kept)],
                    None,
                ),
                "unchanged (web: kept)",
            ),
            (changed("a"), "changed (web: replaced, worker: kept)"),
            (
                report(
                    "a",
                    HostStatus::Failed,
                    vec![container("web", ContainerAction::Failed)],
                    Some("container web: manifest unknown"),
                ),
                "failed: container web: manifest unknown (web: failed)",
            ),
            (
                report("a", HostStatus::Failed, vec![], Some("manifest unknown")),
                "failed: manifest unknown",
            ),
            (
                report(
                    "a",
                    HostStatus::Unreachable,
                    vec![],
                    Some("minion not connected"),
                ),
                "unreachable: minion not connected",
            ),
            (
                report("a", HostStatus::Unreachable, vec![], None),
                "unreachable",
            ),
            (report("a", HostStatus::TimedOut, vec![], None), "timed out"),
        ];
        for (report, expected) in cases {
            assert_eq!(describe_host(&report), expected);
        }
    }

    #[test]
    fn host_lines_carry_a_mark_an_aligned_id_and_the_duration() {
        assert_eq!(
            host_line(&changed("web-1"), 6),
            "✔ web-1   changed (web: replaced, worker: kept)  1.2s"
        );
        assert_eq!(
            host_line(&report("web-2", HostStatus::TimedOut, vec![], None), 5),
            "✘ web-2  timed out  1.2s"
        );
        assert_eq!(no_result_line(&id("db"), 5), "? db     no result");
    }

    #[test]
    fn errors_are_kept_on_one_line_without_escape_sequences() {
        let failed = report(
            "a",
            HostStatus::Failed,
            vec![],
            Some("pull failed:\r\n  \u{1b}[31mdenied\u{1b}[0m"),
        );
        assert_eq!(
            describe_host(&failed),
            "failed: pull failed: [31mdenied [0m"
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(0), "0.0s");
        assert_eq!(format_duration(1234), "1.2s");
        assert_eq!(format_duration(59_999), "59.9s");
        assert_eq!(format_duration(125_000), "2m05s");
    }

    #[test]
    fn counts_list_nonzero_statuses_from_best_to_worst() {
        let statuses = [
            HostStatus::Failed,
            HostStatus::Changed,
            HostStatus::Unchanged,
        ];
        assert_eq!(
            status_counts(statuses, 0),
            "3 hosts: 1 unchanged, 1 changed, 1 failed"
        );
        assert_eq!(
            status_counts(
                [
                    HostStatus::TimedOut,
                    HostStatus::Unreachable,
                    HostStatus::Changed,
                    HostStatus::Changed
                ],
                0
            ),
            "4 hosts: 2 changed, 1 unreachable, 1 timed out"
        );
        assert_eq!(status_counts([HostStatus::Changed], 0), "1 host: 1 changed");
        assert_eq!(
            status_counts([HostStatus::Changed], 2),
            "3 hosts: 1 changed, 2 without a result"
        );
        assert_eq!(status_counts([], 0), "0 hosts");
    }

    #[test]
    fn json_report_of_a_finished_job_has_the_documented_fields() {
        let mut state = JobState::new(0);
        let done = summary(vec![
            changed("web-1"),
            report(
                "web-2",
                HostStatus::Failed,
                vec![],
                Some("manifest unknown"),
            ),
        ]);
        state.record(&HighstateEvent::Summary(done), 5);
        let value = serde_json::to_value(json_report(&state, 99)).expect("serializes");

        let keys = |v: &serde_json::Value| {
            let mut keys: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(
            keys(&value),
            [
                "cancelled_by",
                "error",
                "finished_at_unix_ms",
                "hosts",
                "job_id",
                "not_accepted",
                "resolve_ms",
                "started_at_unix_ms",
                "success"
            ]
        );
        assert_eq!(value["job_id"], "20261126T101500Z-4f2a");
        assert_eq!(value["success"], false);
        assert_eq!(value["error"], serde_json::Value::Null);
        assert_eq!(value["started_at_unix_ms"], 1_000);
        assert_eq!(value["finished_at_unix_ms"], 2_234);

        let host = &value["hosts"][0];
        assert_eq!(
            keys(host),
            [
                "containers",
                "duration_ms",
                "error",
                "minion_id",
                "reported_late",
                "status",
                "timings"
            ]
        );
        assert_eq!(host["minion_id"], "web-1");
        assert_eq!(host["status"], "changed");
        assert_eq!(host["duration_ms"], 1234);
        assert_eq!(host["error"], serde_json::Value::Null);
        let web = &host["containers"][0];
        assert_eq!(
            keys(web),
            [
                "action",
                "error",
                "image",
                "image_digest",
                "name",
                "needs_pull",
                "previous_restored",
                "role"
            ]
        );
        assert_eq!(web["name"], "web");
        assert_eq!(web["role"], "web");
        assert_eq!(web["action"], "replaced");
        assert_eq!(value["hosts"][1]["status"], "failed");
        assert_eq!(value["hosts"][1]["error"], "manifest unknown");
    }

    #[test]
    fn json_report_of_a_successful_job_says_so() {
        let mut state = JobState::new(0);
        state.record(&HighstateEvent::Summary(summary(vec![changed("a")])), 5);
        let report = json_report(&state, 99);
        assert!(report.success);
        assert_eq!(report.error, None);
    }

    #[test]
    fn a_summary_that_left_its_hosts_to_the_events_is_judged_on_them() {
        let mut state = JobState::new(0);
        state.record(&HighstateEvent::HostFinished(changed("web-1")), 10);
        let failed = report("web-2", HostStatus::Failed, vec![], Some("no"));
        state.record(&HighstateEvent::HostFinished(failed), 11);
        let mut done = summary(vec![]);
        done.hosts.clear();
        state.record(&HighstateEvent::Summary(done), 20);
        let report = json_report(&state, 30);
        assert_eq!(report.hosts.len(), 2, "{report:?}");
        assert!(!report.success, "a failed host in the events fails the job");
    }

    #[test]
    fn json_report_without_a_summary_fails_with_the_hosts_that_finished() {
        let mut state = JobState::new(0);
        state.record(
            &HighstateEvent::Started {
                job_id: job_id(),
                targets: vec![id("web-1"), id("web-2")],
                not_accepted: 0,
            },
            10,
        );
        state.record(&HighstateEvent::HostFinished(changed("web-1")), 20);
        let report = json_report(&state, 30);
        assert!(!report.success);
        assert_eq!(report.error.as_deref(), Some(STREAM_ENDED));
        assert_eq!(report.job_id, Some(job_id()));
        assert_eq!(report.hosts, vec![changed("web-1")]);
        assert_eq!(
            (report.started_at_unix_ms, report.finished_at_unix_ms),
            (10, 30)
        );

        let value = serde_json::to_value(&report).expect("serializes");
        assert_eq!(value["success"], false);
        assert_eq!(
            value["error"],
            "the master ended the stream before the job finished"
        );
    }

    #[test]
    fn json_mode_prints_one_document_only_at_the_end() {
        let (mut renderer, out) = json_renderer();
        renderer.event(&HighstateEvent::Started {
            job_id: job_id(),
            targets: vec![id("a")],
            not_accepted: 0,
        });
        renderer.event(&pulling("a", "app:1", 10));
        renderer.event(&HighstateEvent::HostFinished(changed("a")));
        assert_eq!(out.text(), "");
        renderer.finish();
        renderer.finish();
        let value: serde_json::Value = serde_json::from_str(&out.text()).expect("one document");
        assert_eq!(value["success"], false);
        assert_eq!(value["hosts"][0]["minion_id"], "a");
    }

    #[test]
    fn plain_mode_prints_one_line_per_step() {
        let (mut renderer, out) = plain_renderer();
        let events = [
            HighstateEvent::Started {
                job_id: job_id(),
                targets: vec![id("web-2"), id("web-1"), id("db")],
                not_accepted: 0,
            },
            pulling("web-1", "127.0.0.1:5000/app:tested", 0),
            pulling("web-1", "127.0.0.1:5000/app:tested", 500),
            pulling("web-1", "127.0.0.1:5000/app:tested", 1000),
            pulling("web-1", "127.0.0.1:5000/side:1", 10),
            pulling("web-1", "127.0.0.1:5000/app:tested", 1000),
            pulling("web-2", "127.0.0.1:5000/app:tested", 10),
            step("web-1", Phase::Creating, "web"),
            step("web-1", Phase::Creating, "web"),
            step("web-1", Phase::Starting, "web"),
            HighstateEvent::HostFinished(report(
                "web-1",
                HostStatus::Changed,
                vec![container("web", ContainerAction::Replaced)],
                None,
            )),
            // Stale progress after the verdict is dropped.
            step("web-1", Phase::Removing, "old"),
            // A host the job did not announce.
            step("cache", Phase::Stopping, "redis"),
            HighstateEvent::HostFinished(report(
                "web-2",
                HostStatus::Failed,
                vec![],
                Some("manifest unknown"),
            )),
            HighstateEvent::Summary(summary(vec![
                report("db", HostStatus::Unchanged, vec![], None),
                report(
                    "web-1",
                    HostStatus::Changed,
                    vec![container("web", ContainerAction::Replaced)],
                    None,
                ),
                report(
                    "web-2",
                    HostStatus::Failed,
                    vec![],
                    Some("manifest unknown"),
                ),
            ])),
        ];
        for event in &events {
            renderer.event(event);
        }
        renderer.finish();
        let expected = "\
job 20261126T101500Z-4f2a: 3 hosts
web-1: pulling 127.0.0.1:5000/app:tested
web-1: pulling 127.0.0.1:5000/side:1
web-2: pulling 127.0.0.1:5000/app:tested
web-1: creating web
web-1: starting web
web-1: changed (web: replaced)
cache: stopping redis
web-2: failed: manifest unknown
? cache  no result
✔ db     unchanged  1.2s
✔ web-1  changed (web: replaced)  1.2s
✘ web-2  failed: manifest unknown  1.2s
4 hosts: 1 unchanged, 1 changed, 1 failed, 1 without a result
";
        let text = out.text();
        assert_eq!(text, expected);
        assert!(!text.contains('\r') && !text.contains('\u{1b}'));
    }

    #[test]
    fn plain_mode_reports_a_stream_that_ended_early() {
        let (mut renderer, out) = plain_renderer();
        renderer.event(&HighstateEvent::Started {
            job_id: job_id(),
            targets: vec![id("a"), id("b")],
            not_accepted: 0,
        });
        renderer.event(&HighstateEvent::HostFinished(changed("a")));
        renderer.finish();
        renderer.event(&HighstateEvent::HostFinished(changed("b")));
        renderer.finish();
        let expected = "\
job 20261126T101500Z-4f2a: 2 hosts
a: changed (web: replaced, worker: kept)
✔ a  changed (web: replaced, worker: kept)  1.2s
? b  no result
2 hosts: 1 changed, 1 without a result
error: the master ended the stream before the job finished
";
        assert_eq!(out.text(), expected);
    }
}
