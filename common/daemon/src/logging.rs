//! Log lines on standard error, shaped for where they go: colour and timestamps on a terminal;
//! plain lines without timestamps under systemd, whose journal stamps each line itself (with
//! the level as a syslog priority prefix, so `journalctl -p warning` works); plain lines with
//! timestamps into a file or pipe; one JSON object per line for log shippers.

use std::fmt;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The `--log-format` flag every binary takes.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// How log lines on standard error look: `auto` (colour on a terminal, plain lines for the
    /// systemd journal or a file), `plain`, or `json` (one object per line, for log shippers).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto, env = "BRINE_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// How log lines are written, chosen with `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Colour on a terminal, journal-friendly under systemd, plain lines otherwise.
    #[default]
    Auto,
    /// Plain text lines with timestamps and no colour, wherever they go.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Where standard error leads, which decides the shape of `Auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    Terminal,
    Journal,
    Other,
}

/// What the lines look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    json: bool,
    colour: bool,
    timestamps: bool,
    syslog_priority: bool,
}

fn shape(format: LogFormat, destination: Destination, no_color: bool) -> Shape {
    let plain = Shape {
        json: false,
        colour: false,
        timestamps: true,
        syslog_priority: false,
    };
    match (format, destination) {
        (LogFormat::Json, _) => Shape {
            json: true,
            ..plain
        },
        (LogFormat::Plain, _) | (LogFormat::Auto, Destination::Other) => plain,
        (LogFormat::Auto, Destination::Terminal) => Shape {
            colour: !no_color,
            ..plain
        },
        (LogFormat::Auto, Destination::Journal) => Shape {
            timestamps: false,
            syslog_priority: true,
            ..plain
        },
    }
}

/// Installs the global subscriber. `RUST_LOG` chooses what is logged; `default_filter` applies
/// without it (e.g. `info` for a daemon, `warn` for a command).
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let shape = shape(format, destination(), no_color);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(shape.colour);
    if shape.json {
        builder.json().init();
    } else if shape.syslog_priority {
        let format = tracing_subscriber::fmt::format().without_time();
        builder.event_format(SyslogPriority(format)).init();
    } else if shape.timestamps {
        builder.init();
    } else {
        builder.without_time().init();
    }
}

/// Standard error is the journal when systemd says so in `JOURNAL_STREAM` (device and inode of
/// the stream it connected) and they are still what standard error is (not redirected since).
fn destination() -> Destination {
    let stderr = std::io::stderr();
    if stderr.is_terminal() {
        return Destination::Terminal;
    }
    let Some(journal) = std::env::var_os("JOURNAL_STREAM") else {
        return Destination::Other;
    };
    let Ok(metadata) = stderr
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|file| file.metadata())
    else {
        return Destination::Other;
    };
    if is_journal_stream(&journal.to_string_lossy(), metadata.dev(), metadata.ino()) {
        Destination::Journal
    } else {
        Destination::Other
    }
}

fn is_journal_stream(variable: &str, dev: u64, ino: u64) -> bool {
    variable
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

/// Prefixes each line with its level as a syslog priority (`<3>` error ... `<7>` debug), which
/// the journal strips and records as the entry's priority.
struct SyslogPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for SyslogPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", syslog_priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_gets_priorities_and_no_timestamps_or_colour() {
        let journal = shape(LogFormat::Auto, Destination::Journal, false);
        assert!(journal.syslog_priority && !journal.timestamps && !journal.colour);
        assert!(!journal.json);
    }

    #[test]
    fn colour_only_on_a_terminal_and_not_with_no_color() {
        assert!(shape(LogFormat::Auto, Destination::Terminal, false).colour);
        assert!(!shape(LogFormat::Auto, Destination::Terminal, true).colour);
        assert!(!shape(LogFormat::Auto, Destination::Other, false).colour);
        assert!(!shape(LogFormat::Plain, Destination::Terminal, false).colour);
        assert!(!shape(LogFormat::Json, Destination::Terminal, false).colour);
    }

    #[test]
    fn files_and_pipes_keep_timestamps() {
        let other = shape(LogFormat::Auto, Destination::Other, false);
        assert!(other.timestamps && !other.syslog_priority);
        assert!(shape(LogFormat::Plain, Destination::Journal, false).timestamps);
        assert!(shape(LogFormat::Json, Destination::Journal, false).json);
    }

    #[test]
    fn the_journal_stream_must_match_device_and_inode() {
        assert!(is_journal_stream("8:1234", 8, 1234));
        assert!(!is_journal_stream("8:1234", 8, 1235));
        assert!(!is_journal_stream("garbage", 8, 1234));
        assert!(!is_journal_stream("", 0, 0));
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(syslog_priority(Level::ERROR), 3);
        assert_eq!(syslog_priority(Level::WARN), 4);
        assert_eq!(syslog_priority(Level::INFO), 6);
        assert_eq!(syslog_priority(Level::TRACE), 7);
    }
}
