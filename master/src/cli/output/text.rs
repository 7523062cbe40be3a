//! The text every mode shares: a host's verdict and final line, the start line, progress words,
//! counts, durations and the closing summary. Every mode builds its text from these, so a host
//! reads the same in a bar, a log line and the summary, and they cannot drift apart.

use brine_common::names::MinionId;
use brine_common::outcome::{ContainerResult, HostReport, HostStatus, JobId};
use brine_common::progress::Progress;

use super::{JobState, STREAM_ENDED};

/// The closing block of the terminal and plain modes: one line per host, the counts, and why
/// the job is incomplete if it is.
pub(super) fn summary_lines(state: &JobState) -> Vec<String> {
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
pub(super) fn started_line(job_id: &JobId, targets: usize, not_accepted: u32) -> String {
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
pub(super) fn describe_host(report: &HostReport) -> String {
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
pub(super) fn host_line(report: &HostReport, width: usize) -> String {
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
pub(super) fn no_result_line(id: &MinionId, width: usize) -> String {
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
pub(super) fn describe_progress(progress: &Progress) -> String {
    format!(
        "{} {}",
        progress.phase.as_str(),
        one_line(&progress.subject)
    )
}

/// The count line, e.g. `3 hosts: 1 unchanged, 1 changed, 1 failed`: non-zero statuses only, in
/// order from best to worst, then the hosts that never reported.
pub(super) fn status_counts(
    statuses: impl IntoIterator<Item = HostStatus>,
    without_result: usize,
) -> String {
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
pub(super) fn format_duration(ms: u64) -> String {
    if ms < 60_000 {
        format!("{}.{}s", ms / 1000, ms % 1000 / 100)
    } else {
        let secs = ms / 1000;
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

/// The widest id, for padding.
pub(super) fn id_width<'a>(ids: impl IntoIterator<Item = &'a MinionId>) -> usize {
    ids.into_iter()
        .map(|id| id.as_str().len())
        .max()
        .unwrap_or(0)
}

/// An id padded to `width` (the names' `Display` ignores width flags).
pub(super) fn pad(id: &MinionId, width: usize) -> String {
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
