//! The record of failed hook deliveries: the newest [`FAILURES_KEPT`], in memory and in
//! `hook-failures.json` in the data directory, so an operator reads them after the fact and
//! after a restart (`brine-master hooks failures`).
//!
//! The file is this master's own: masters that share a store in etcd each keep the failures of
//! the hooks they ran.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;

use brine_common::fleet_event::HookFailure;

/// How many failures are kept.
pub const FAILURES_KEPT: usize = 1000;

/// The record; writes go through one task at a time (the hooks' failure task).
pub struct HookFailures {
    path: PathBuf,
    keep: usize,
    /// A std mutex: held to push or copy, never across an await. Oldest first.
    kept: Mutex<VecDeque<HookFailure>>,
}

impl HookFailures {
    /// The record in `path`. An unreadable file is reported and counts as empty: a record of
    /// failures must not keep the master from starting.
    pub fn load(path: PathBuf) -> Self {
        Self::load_keeping(path, FAILURES_KEPT)
    }

    fn load_keeping(path: PathBuf, keep: usize) -> Self {
        let kept = match std::fs::read_to_string(&path) {
            Ok(text) => match serde_json::from_str::<VecDeque<HookFailure>>(&text) {
                Ok(mut kept) => {
                    while kept.len() > keep {
                        kept.pop_front();
                    }
                    kept
                }
                Err(err) => {
                    tracing::warn!(
                        "cannot read {} ({err}); the failed hook deliveries before it are lost",
                        path.display()
                    );
                    VecDeque::new()
                }
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => VecDeque::new(),
            Err(err) => {
                tracing::warn!("cannot read {}: {err}", path.display());
                VecDeque::new()
            }
        };
        Self {
            path,
            keep,
            kept: Mutex::new(kept),
        }
    }

    /// Keeps `failure`, dropping the oldest beyond [`FAILURES_KEPT`], and writes the file.
    pub async fn record(&self, failure: HookFailure) {
        let text = {
            let mut kept = self.lock();
            while kept.len() >= self.keep {
                kept.pop_front();
            }
            kept.push_back(failure);
            serde_json::to_string(&*kept)
        };
        let text = match text {
            Ok(text) => text,
            Err(err) => {
                tracing::error!("cannot encode the failed hook deliveries: {err}");
                return;
            }
        };
        let path = self.path.clone();
        let written =
            tokio::task::spawn_blocking(move || brine_daemon::files::replace(&path, &text, 0o600))
                .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(
                "cannot keep the failed hook deliveries on disk ({err:#}); they are kept in \
                 memory until the master stops"
            ),
            Err(err) => tracing::error!("cannot keep the failed hook deliveries: {err}"),
        }
    }

    /// The failures kept, newest first.
    pub fn newest_first(&self) -> Vec<HookFailure> {
        self.lock().iter().rev().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<HookFailure>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(sequence: u64) -> HookFailure {
        HookFailure {
            hook: "chat".into(),
            event_sequence: sequence,
            event_kind: "job_finished".into(),
            attempts: 4,
            error: "HTTP 500".into(),
            failed_at_unix_ms: 1_000,
        }
    }

    #[tokio::test]
    async fn failures_survive_a_restart_and_only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook-failures.json");
        let record = HookFailures::load_keeping(path.clone(), 5);
        for sequence in 1..=7 {
            record.record(failure(sequence)).await;
        }
        let again = HookFailures::load_keeping(path, 5);
        let kept: Vec<u64> = again
            .newest_first()
            .iter()
            .map(|f| f.event_sequence)
            .collect();
        assert_eq!(kept, [7, 6, 5, 4, 3]);
    }

    #[test]
    fn an_unreadable_record_counts_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook-failures.json");
        std::fs::write(&path, "not json").unwrap();
        assert!(HookFailures::load(path).newest_first().is_empty());
    }
}
