//! brine-daemon: what both brine binaries share with the operating system.
//!
//! The wall clock ([`clock`]), configuration files with environment overrides ([`config`]), logging shaped for a
//! terminal, a file or the systemd journal ([`logging`]), the signals that stop a daemon
//! ([`shutdown`]), readiness, status and watchdog notifications to systemd ([`systemd`]), the
//! Prometheus endpoint ([`metrics`]), files written privately and atomically ([`files`]), the
//! runtime and exit status of every `main` ([`entry`]), and the version both print
//! ([`VERSION`]). The domain model in `brine-common` stays free of all
//! of this.

pub mod clock;
pub mod config;
pub mod entry;
pub mod files;
pub mod logging;
pub mod metrics;
pub mod shutdown;
pub mod systemd;

/// The commit the binaries were built from, as [`VERSION`] shows it.
pub const COMMIT: &str = env!("BRINE_GIT_COMMIT");

/// What `--version` prints after the program's name, e.g. `0.1.0 (commit 1a2b3c4d5e6f)`: both
/// binaries are built from one workspace, with one version. The commit is what `build.rs` found:
/// the `BRINE_GIT_COMMIT` variable of the build's environment when set, else `git rev-parse`,
/// "unknown" outside a checkout.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BRINE_GIT_COMMIT"),
    ")"
);
