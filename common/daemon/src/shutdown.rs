//! The signals that stop a daemon: SIGTERM (what systemd sends) or SIGINT (Ctrl-C).

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

/// The exit code when a second signal cuts the ordered shutdown short (128 + SIGTERM).
const FORCED_EXIT_CODE: i32 = 143;

/// Resolves at the first SIGTERM or SIGINT, so the daemon can shut down in order. A second one
/// while that is under way ends the process at once: whoever sends it has stopped waiting.
pub async fn signal_received() {
    first_signal().await;
    tokio::spawn(async {
        // Give a terminal's Ctrl-C key repeat a moment, so one keypress counts once.
        tokio::time::sleep(Duration::from_millis(200)).await;
        first_signal().await;
        tracing::warn!("second stop signal: exiting without finishing the shutdown");
        std::process::exit(FORCED_EXIT_CODE);
    });
}

async fn first_signal() {
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(err) => {
            tracing::warn!("cannot watch SIGTERM ({err}); stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
