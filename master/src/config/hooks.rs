//! The `[[hooks]]` tables of master.toml: a command to run or a URL to POST to, with the fleet
//! event's JSON, on the events an operator chose.
//!
//! ```toml
//! [[hooks]]
//! name = "chat"
//! on = ["job_finished"]
//! status = ["failed", "partial"]
//! url = "https://chat.example/hook"
//! timeout = "10s"
//! retries = 3
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use brine_common::fleet_event::{FleetEvent, KIND_NAMES};
use brine_common::host::HostEventKind;
use brine_common::outcome::HostStatus;
use serde::Deserialize;

use super::ConfigError;
use super::etcd::Source;

/// The longest name a hook may have (it is a label of the hooks' metric).
const MAX_NAME: usize = 64;
/// The most hooks master.toml may hold.
const MAX_HOOKS: usize = 32;
/// The longest a hook may take per try.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// The most retries a hook may have.
const MAX_RETRIES: u32 = 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    name: String,
    on: Vec<String>,
    #[serde(default)]
    status: Vec<String>,
    command: Option<Vec<String>>,
    url: Option<String>,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    timeout: Duration,
    #[serde(default = "default_retries")]
    retries: u32,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_retries() -> u32 {
    3
}

/// Where a hook delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookTarget {
    /// A program and its arguments, run without a shell; the event's JSON on its standard input
    /// and in `BRINE_EVENT`.
    Command(Vec<String>),
    /// An HTTP or HTTPS URL the event's JSON is POSTed to.
    Url(reqwest::Url),
}

/// One hook, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    pub name: String,
    /// The kinds of events it takes.
    pub on: BTreeSet<&'static str>,
    /// Of those, only events with one of these statuses (a finished job's outcome, a host
    /// report's status, a host event's kind); every one when empty.
    pub status: BTreeSet<String>,
    pub target: HookTarget,
    /// How long one try may take.
    pub timeout: Duration,
    /// How many times a failed try is tried again.
    pub retries: u32,
}

impl HookConfig {
    /// Whether the hook takes `event`. A hook never takes the failures of its own deliveries,
    /// so a broken hook cannot feed itself.
    pub fn wants(&self, event: &FleetEvent) -> bool {
        if !self.on.contains(event.what.name()) {
            return false;
        }
        if let brine_common::fleet_event::FleetEventKind::HookFailed { hook, .. } = &event.what
            && *hook == self.name
        {
            return false;
        }
        self.status.is_empty()
            || event
                .what
                .status()
                .is_some_and(|status| self.status.contains(status))
    }
}

impl HookTarget {
    /// What the log may say of the target: the program, or the URL without credentials,
    /// query or fragment (they can hold secrets).
    pub fn describe(&self) -> String {
        match self {
            HookTarget::Command(argv) => argv.first().cloned().unwrap_or_default(),
            HookTarget::Url(url) => {
                format!(
                    "{}://{}{}",
                    url.scheme(),
                    url.host_str().unwrap_or_default(),
                    url.port().map(|p| format!(":{p}")).unwrap_or_default()
                ) + url.path()
            }
        }
    }
}

/// Every word `status` may hold.
fn statuses() -> BTreeSet<&'static str> {
    let outcomes = ["succeeded", "partial", "failed", "cancelled"];
    let hosts = [
        HostStatus::Unchanged,
        HostStatus::Changed,
        HostStatus::Failed,
        HostStatus::Unreachable,
        HostStatus::TimedOut,
        HostStatus::Skipped,
        HostStatus::Interrupted,
    ]
    .map(HostStatus::as_str);
    let events = [
        HostEventKind::Repaired,
        HostEventKind::RepairFailed,
        HostEventKind::CrashLooping,
        HostEventKind::DockerUnavailable,
        HostEventKind::DockerAvailable,
        HostEventKind::ImagesRemoved,
        HostEventKind::PruneFailed,
    ]
    .map(HostEventKind::as_str);
    outcomes.into_iter().chain(hosts).chain(events).collect()
}

/// Checks every hook; errors name the hook's key (`hooks[1].url`) and its line.
pub(super) fn settings(
    raw: Vec<RawHook>,
    source: &Source<'_>,
) -> Result<Vec<HookConfig>, ConfigError> {
    if raw.len() > MAX_HOOKS {
        return Err(source.invalid(
            "hooks",
            format!("holds {} hooks; at most {MAX_HOOKS} are allowed", raw.len()),
        ));
    }
    let mut names = BTreeSet::new();
    let known_statuses = statuses();
    raw.into_iter()
        .enumerate()
        .map(|(index, hook)| {
            let key = |field: &str| format!("hooks[{index}].{field}");
            let name_ok = !hook.name.is_empty()
                && hook.name.len() <= MAX_NAME
                && hook
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !name_ok {
                return Err(source.invalid(
                    &key("name"),
                    format!(
                        "{:?} must be 1 to {MAX_NAME} lower-case letters, digits, '-' or '_', \
                         e.g. \"chat\"",
                        hook.name
                    ),
                ));
            }
            if !names.insert(hook.name.clone()) {
                return Err(source.invalid(
                    &key("name"),
                    format!("{:?} names another hook too; names must differ", hook.name),
                ));
            }
            if hook.on.is_empty() {
                return Err(source.invalid(
                    &key("on"),
                    format!(
                        "names no event kind; list some of {}",
                        watchable_kinds().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            let on = hook
                .on
                .iter()
                .map(|kind| {
                    watchable_kinds().find(|k| k == kind).ok_or_else(|| {
                        source.invalid(
                            &key("on"),
                            format!(
                                "{kind:?} is not an event kind; the kinds are {}",
                                watchable_kinds().collect::<Vec<_>>().join(", ")
                            ),
                        )
                    })
                })
                .collect::<Result<BTreeSet<_>, _>>()?;
            if let Some(unknown) = hook
                .status
                .iter()
                .find(|s| !known_statuses.contains(s.as_str()))
            {
                return Err(source.invalid(
                    &key("status"),
                    format!(
                        "{unknown:?} is not a status; a finished job's are succeeded, partial, \
                         failed, cancelled; a host report's are a host status (failed, \
                         timed_out, ...); a host event's are its kind (crash_looping, ...)"
                    ),
                ));
            }
            let target = match (hook.command, hook.url) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(source.invalid(
                        &key("name"),
                        format!(
                            "hook {:?} needs exactly one of `command` (a program and its \
                             arguments) or `url` (where to POST the event)",
                            hook.name
                        ),
                    ));
                }
                (Some(argv), None) => {
                    if argv.first().is_none_or(|program| program.is_empty()) {
                        return Err(source.invalid(
                            &key("command"),
                            "names no program; e.g. [\"/usr/local/bin/notify\", \"--deploy\"]"
                                .to_owned(),
                        ));
                    }
                    HookTarget::Command(argv)
                }
                (None, Some(url)) => {
                    let parsed = reqwest::Url::parse(&url)
                        .ok()
                        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
                    match parsed {
                        Some(url) => HookTarget::Url(url),
                        None => {
                            return Err(source.invalid(
                                &key("url"),
                                "is not an http:// or https:// URL, e.g. \
                                 \"https://chat.example/hook\""
                                    .to_owned(),
                            ));
                        }
                    }
                }
            };
            if hook.timeout.is_zero() || hook.timeout > MAX_TIMEOUT {
                return Err(source.invalid(
                    &key("timeout"),
                    format!(
                        "must be more than 0s and at most {}",
                        humantime::format_duration(MAX_TIMEOUT)
                    ),
                ));
            }
            if hook.retries > MAX_RETRIES {
                return Err(
                    source.invalid(&key("retries"), format!("must be at most {MAX_RETRIES}"))
                );
            }
            Ok(HookConfig {
                name: hook.name,
                on,
                status: hook.status.into_iter().collect(),
                target,
                timeout: hook.timeout,
                retries: hook.retries,
            })
        })
        .collect()
}

/// The kinds a hook may take: every kind but the watcher's own `missed` marker.
fn watchable_kinds() -> impl Iterator<Item = &'static str> {
    KIND_NAMES.iter().copied().filter(|k| *k != "missed")
}

/// The hooks as `brine-master config` shows them (URLs without credentials or query).
pub(super) fn described(hooks: &[HookConfig]) -> toml::Value {
    let text = |value: &str| toml::Value::String(value.to_owned());
    let list = |items: Vec<&str>| toml::Value::Array(items.into_iter().map(text).collect());
    toml::Value::Array(
        hooks
            .iter()
            .map(|hook| {
                let mut table = toml::Table::new();
                table.insert("name".into(), text(&hook.name));
                table.insert("on".into(), list(hook.on.iter().copied().collect()));
                if !hook.status.is_empty() {
                    table.insert(
                        "status".into(),
                        list(hook.status.iter().map(String::as_str).collect()),
                    );
                }
                match &hook.target {
                    HookTarget::Command(argv) => {
                        table.insert(
                            "command".into(),
                            list(argv.iter().map(String::as_str).collect()),
                        );
                    }
                    HookTarget::Url(_) => {
                        table.insert("url".into(), text(&hook.target.describe()));
                    }
                }
                table.insert("timeout".into(), text(&super::whole_units(hook.timeout)));
                table.insert("retries".into(), toml::Value::Integer(hook.retries.into()));
                toml::Value::Table(table)
            })
            .collect(),
    )
}
