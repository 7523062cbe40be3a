//! The terminal mode: one live bar per host, redrawn in place by indicatif. It is separate
//! because bars need state of their own (a bar and a look per host, four styles, a ticker)
//! that the other modes do not.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::time::Duration;

use brine_common::names::MinionId;
use brine_common::outcome::{HighstateEvent, HostReport};
use brine_common::progress::{Phase, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::JobState;
use super::text::{
    describe_progress, host_line, id_width, no_result_line, pad, started_line, summary_lines,
};

/// How often a busy host's spinner moves: fast enough to look alive, slow enough to cost nothing.
const TICK: Duration = Duration::from_millis(100);

/// Live bars on a terminal: one line per host that changes in place, so a fleet's progress fits
/// on one screen.
pub(super) struct BarsMode {
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
    pub(super) fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            bars: BTreeMap::new(),
            width: 0,
            styles: BarStyles::new(),
        }
    }

    pub(super) fn event(&mut self, event: &HighstateEvent) {
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

    pub(super) fn finish(&mut self, state: &JobState) {
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
