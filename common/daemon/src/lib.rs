//! brine-daemon: what both brine binaries share with the operating system.
//!
//! The wall clock ([`clock`]), configuration files with environment overrides ([`config`]), logging shaped for a
//! terminal, a file or the systemd journal ([`logging`]), the signals that stop a daemon
//! ([`shutdown`]), readiness, status and watchdog notifications to systemd ([`systemd`]), the
//! Prometheus endpoint ([`metrics`]), and files written privately and atomically ([`files`]). The domain model in `brine-common` stays
//! free of all of this.

pub mod clock;
pub mod config;
pub mod files;
pub mod logging;
pub mod metrics;
pub mod shutdown;
pub mod systemd;
