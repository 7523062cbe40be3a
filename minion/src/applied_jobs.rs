//! The job ids this minion accepted, so a replayed command is never applied again, also after a
//! restart (it is answered with the result already sent, when the minion still has it).
//!
//! Each id is kept in `applied-jobs.json` in the data directory until its command expires by the
//! master's clock (a command past its expiry is refused anyway), newest last and at most
//! [`REMEMBERED_JOBS`]. Expiry is judged only when a command arrives, with the master's time
//! that came over the link: this host's own clock may be off, and must not forget early. An
//! id is on disk before its job is handed on, so a minion that crashes mid-job still refuses the
//! command when it comes again. The file is replaced atomically and readable only by the
//! minion's user; one that cannot be read is reported and counts as empty, as the minion must
//! keep working: only commands still valid from before it was lost could then be applied again.

use std::collections::VecDeque;
use std::path::PathBuf;

use anyhow::Context;
use brine_common::outcome::JobId;
use serde::{Deserialize, Serialize};

use crate::config::DataDir;

/// How many job ids a minion remembers; far more than arrive while one command is valid.
const REMEMBERED_JOBS: usize = 4096;

/// The file in the data directory.
const FILE: &str = "applied-jobs.json";

/// The version of the file's layout; another version is ignored rather than misread.
const FORMAT: u32 = 1;

/// The ids this minion accepted and when their commands expire.
#[derive(Debug)]
pub struct AppliedJobs {
    path: PathBuf,
    /// Oldest first.
    jobs: VecDeque<AppliedJob>,
    limit: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AppliedJob {
    job_id: JobId,
    expires_at_unix_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct AppliedJobsFile {
    format: u32,
    jobs: VecDeque<AppliedJob>,
}

impl AppliedJobs {
    /// The ids `data` holds.
    pub fn load(data: &DataDir) -> Self {
        Self::load_from(data.root().join(FILE), REMEMBERED_JOBS)
    }

    fn load_from(path: PathBuf, limit: usize) -> Self {
        let mut jobs = match read(&path) {
            Ok(jobs) => jobs,
            Err(err) => {
                tracing::warn!(
                    "{err:#}; replayed commands that are still valid are not recognised until \
                     the file is written again"
                );
                VecDeque::new()
            }
        };
        keep_newest(&mut jobs, limit);
        Self { path, jobs, limit }
    }

    /// Records `job_id`, whose command is valid until `expires_at_unix_ms`, on disk. Returns
    /// false, recording nothing, if it was accepted before and has not expired at
    /// `now_unix_ms`, the master's time. Nothing is remembered unless it is on disk, so a
    /// command refused because it could not be recorded may come again.
    pub async fn record(
        &mut self,
        job_id: &JobId,
        expires_at_unix_ms: i64,
        now_unix_ms: i64,
    ) -> anyhow::Result<bool> {
        let mut jobs = self.jobs.clone();
        jobs.retain(|job| job.expires_at_unix_ms > now_unix_ms);
        if jobs.iter().any(|job| job.job_id == *job_id) {
            return Ok(false);
        }
        jobs.push_back(AppliedJob {
            job_id: job_id.clone(),
            expires_at_unix_ms,
        });
        keep_newest(&mut jobs, self.limit);
        let file = AppliedJobsFile {
            format: FORMAT,
            jobs,
        };
        let json = serde_json::to_string_pretty(&file).context("encode the applied jobs")?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || brine_daemon::files::replace(&path, &json, 0o600))
            .await
            .context("the task writing the applied jobs failed")??;
        self.jobs = file.jobs;
        Ok(true)
    }
}

/// The ids in `path`; none if there is no file yet.
fn read(path: &std::path::Path) -> anyhow::Result<VecDeque<AppliedJob>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(VecDeque::new()),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let file: AppliedJobsFile = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is unreadable", path.display()))?;
    if file.format != FORMAT {
        anyhow::bail!(
            "{} has format {}, not the {FORMAT} this minion reads",
            path.display(),
            file.format
        );
    }
    Ok(file.jobs)
}

/// Drops the oldest ids beyond `limit`.
fn keep_newest(jobs: &mut VecDeque<AppliedJob>, limit: usize) {
    let excess = jobs.len().saturating_sub(limit);
    jobs.drain(..excess);
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const NOW: i64 = 1_700_000_000_000;
    const MINUTE: i64 = 60_000;

    fn job(n: usize) -> JobId {
        JobId::new(format!("j-{n}")).unwrap()
    }

    /// What is logged while `load` runs, as plain lines.
    fn load_logged(data: &DataDir) -> (AppliedJobs, String) {
        #[derive(Clone, Default)]
        struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Logs {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let logs = logs.clone();
                move || logs.clone()
            })
            .with_ansi(false)
            .finish();
        let applied = tracing::subscriber::with_default(subscriber, || AppliedJobs::load(data));
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        (applied, text)
    }

    fn recorded(data: &DataDir) -> Vec<String> {
        let file: AppliedJobsFile =
            serde_json::from_slice(&std::fs::read(data.root().join(FILE)).unwrap()).unwrap();
        file.jobs.iter().map(|j| j.job_id.to_string()).collect()
    }

    #[tokio::test]
    async fn a_recorded_job_is_refused_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let mut applied = AppliedJobs::load(&data);
        assert!(applied.record(&job(1), NOW + MINUTE, NOW).await.unwrap());
        assert!(!applied.record(&job(1), NOW + MINUTE, NOW).await.unwrap());

        let mut restarted = AppliedJobs::load(&data);
        assert!(
            !restarted
                .record(&job(1), NOW + MINUTE, NOW + 1)
                .await
                .unwrap()
        );
        assert!(
            restarted
                .record(&job(2), NOW + MINUTE, NOW + 1)
                .await
                .unwrap()
        );
        assert_eq!(recorded(&data), ["j-1", "j-2"]);
        let mode = std::fs::metadata(data.root().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn an_expired_job_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let mut applied = AppliedJobs::load(&data);
        assert!(applied.record(&job(1), NOW + MINUTE, NOW).await.unwrap());
        assert!(
            applied
                .record(&job(2), NOW + 3 * MINUTE, NOW)
                .await
                .unwrap()
        );

        // Recording forgets the commands that expired by the time given...
        let later = NOW + 2 * MINUTE;
        let mut restarted = AppliedJobs::load(&data);
        assert!(
            restarted
                .record(&job(1), later + MINUTE, later)
                .await
                .unwrap()
        );
        assert_eq!(recorded(&data), ["j-2", "j-1"]);
        // ...and the file keeps only what has not.
        let much_later = NOW + 10 * MINUTE;
        assert!(
            restarted
                .record(&job(3), much_later + MINUTE, much_later)
                .await
                .unwrap()
        );
        assert_eq!(recorded(&data), ["j-3"]);
    }

    #[tokio::test]
    async fn a_corrupt_or_unreadable_file_counts_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let path = data.root().join(FILE);
        for corrupt in ["{not json", "{\"format\": 99, \"jobs\": []}", ""] {
            std::fs::write(&path, corrupt).unwrap();
            let (mut applied, logs) = load_logged(&data);
            assert!(logs.contains("WARN"), "{corrupt:?}: {logs}");
            assert!(logs.contains(FILE), "{logs}");
            assert!(applied.record(&job(1), NOW + MINUTE, NOW).await.unwrap());
            assert_eq!(recorded(&data), ["j-1"]);
        }

        // A directory where the file should be can be neither read nor replaced: the command
        // is refused (the caller reports it) and nothing is remembered.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), "").unwrap();
        let (mut applied, logs) = load_logged(&data);
        assert!(logs.contains("cannot read"), "{logs}");
        assert!(applied.record(&job(1), NOW + MINUTE, NOW).await.is_err());
        assert!(applied.jobs.is_empty());
    }

    #[tokio::test]
    async fn the_number_of_remembered_jobs_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut applied = AppliedJobs::load_from(path.clone(), 3);
        for n in 1..=4 {
            assert!(applied.record(&job(n), NOW + MINUTE, NOW).await.unwrap());
        }
        assert_eq!(applied.jobs.len(), 3);
        let mut restarted = AppliedJobs::load_from(path, 2);
        assert_eq!(restarted.jobs.len(), 2);
        assert!(!restarted.record(&job(4), NOW + MINUTE, NOW).await.unwrap());
        // The oldest is forgotten once the memory is full; in practice its command expired
        // long ago.
        assert!(restarted.record(&job(1), NOW + MINUTE, NOW).await.unwrap());
        assert_eq!(restarted.jobs.len(), 2);
    }
}
