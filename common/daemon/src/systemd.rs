//! Notifications to systemd for units of `Type=notify`: ready, status lines, stopping, and
//! watchdog pings. Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells systemd the daemon is ready: `systemctl start` returns, and units ordered after it
/// start.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Sets the one-line status `systemctl status` shows.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Tells systemd the daemon is shutting down in order, so it waits for that (up to
/// `TimeoutStopSec=`) instead of counting the exit as a crash.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// Pings systemd's watchdog from the async runtime, three times per `WatchdogSec=`, for as long
/// as the runtime runs tasks. A hung runtime stops the pings, and systemd restarts the daemon.
/// Does nothing when the unit has no watchdog.
pub fn spawn_watchdog() {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let interval = ping_interval(period);
    tracing::debug!(?period, "systemd watchdog enabled");
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            ticks.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}

/// A third of the watchdog's period, so one late tick is not yet a miss.
fn ping_interval(period: Duration) -> Duration {
    (period / 3).max(Duration::from_millis(10))
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::debug!("cannot notify systemd: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_three_times_per_period() {
        assert_eq!(
            ping_interval(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            ping_interval(Duration::from_micros(3)),
            Duration::from_millis(10)
        );
    }
}
