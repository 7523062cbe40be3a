//! The desired state on disk: every desired state the master sends is written here before the
//! minion acts on it, so after a restart the minion keeps its host right with no master.
//!
//! The file is replaced atomically (written beside, flushed, renamed, directory flushed) and is
//! readable only by the minion's user, as a container's environment may hold secrets. A file
//! that cannot be read is reported and ignored: the minion then leaves every container as it is
//! until the master sends a desired state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::Context;
use brine_common::names::{ContainerName, SecretName};
use brine_common::outcome::JobId;
use brine_common::secret::SecretValue;
use brine_common::spec::DesiredState;
use serde::{Deserialize, Serialize};

use crate::config::DataDir;

/// The version of the file's layout; another version is refused rather than misread.
const FORMAT: u32 = 1;

/// A desired state as cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedDesired {
    format: u32,
    /// The job that sent it.
    pub job_id: JobId,
    pub saved_at_unix_ms: i64,
    pub desired: DesiredState,
    /// Containers that job could not bring up: repairs leave them to the next job rather than
    /// retry a failed deploy.
    #[serde(default)]
    pub failed: BTreeSet<ContainerName>,
    /// The values of the secrets its containers use, which the desired state never serializes:
    /// a repair after a restart creates those containers with them, as the job did.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    secrets: BTreeMap<SecretName, SecretValue>,
}

impl CachedDesired {
    /// What repairs keep running: the desired containers that did not fail.
    pub fn to_repair(&self) -> DesiredState {
        DesiredState {
            containers: self
                .desired
                .containers
                .iter()
                .filter(|spec| !self.failed.contains(&spec.name))
                .cloned()
                .collect(),
        }
    }
}

/// A cache file that exists but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("the cached desired state {path} is unreadable: {message}")]
pub struct CacheError {
    pub path: String,
    pub message: String,
}

fn path(data: &DataDir) -> PathBuf {
    data.root().join("desired.json")
}

/// Writes `desired` as the host's desired state, durably, with the containers that failed.
pub fn save(
    data: &DataDir,
    job_id: &JobId,
    desired: &DesiredState,
    failed: BTreeSet<ContainerName>,
) -> anyhow::Result<CachedDesired> {
    let cached = CachedDesired {
        format: FORMAT,
        job_id: job_id.clone(),
        saved_at_unix_ms: crate::now_unix_ms(),
        desired: desired.clone(),
        failed,
        secrets: desired.secret_values(),
    };
    let json = serde_json::to_string_pretty(&cached).context("encode the desired state")?;
    brine_daemon::files::replace(&path(data), &json, 0o600)?;
    Ok(cached)
}

/// The cached desired state; `None` if there is none yet.
pub fn load(data: &DataDir) -> Result<Option<CachedDesired>, CacheError> {
    let path = path(data);
    let error = |message: String| CacheError {
        path: path.display().to_string(),
        message,
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(error(err.to_string())),
    };
    let mut cached: CachedDesired =
        serde_json::from_slice(&bytes).map_err(|err| error(err.to_string()))?;
    if cached.format != FORMAT {
        return Err(error(format!(
            "format {} is not the {FORMAT} this minion reads",
            cached.format
        )));
    }
    // Checked as when it came from the master: names unique, specs valid.
    DesiredState::new(cached.desired.containers.clone()).map_err(|err| error(err.to_string()))?;
    let secrets = std::mem::take(&mut cached.secrets);
    cached
        .desired
        .attach_secret_values(&secrets)
        .map_err(|missing| error(format!("the value of secret {missing} is missing")))?;
    cached.secrets = secrets;
    Ok(Some(cached))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_saved_state_loads_back_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        assert!(load(&data).unwrap().is_none());
        let job = JobId::new("j-1").unwrap();
        save(&data, &job, &DesiredState::default(), BTreeSet::new()).unwrap();
        let cached = load(&data).unwrap().unwrap();
        assert_eq!(cached.job_id, job);
        let mode = std::fs::metadata(path(&data)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_truncated_or_foreign_file_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        save(
            &data,
            &JobId::new("j-1").unwrap(),
            &DesiredState::default(),
            BTreeSet::new(),
        )
        .unwrap();
        let text = std::fs::read_to_string(path(&data)).unwrap();
        std::fs::write(path(&data), &text[..text.len() / 2]).unwrap();
        let err = load(&data).unwrap_err();
        assert!(err.to_string().contains("desired.json"), "{err}");
        std::fs::write(path(&data), text.replace("\"format\": 1", "\"format\": 9")).unwrap();
        assert!(load(&data).unwrap_err().to_string().contains("format 9"));
    }

    #[test]
    fn the_values_of_secrets_come_back_with_the_state_for_repairs() {
        let roles = brine_common::roles_file::RolesFile::parse(
            "roles.toml",
            "[roles.web]\nimage = \"app:1\"\n[[roles.web.containers]]\nname = \"web\"\n\
             env = { DB = { secret = \"db\" } }\n[assign]\n\"*\" = [\"web\"]\n",
        )
        .unwrap();
        let mut desired = roles
            .desired_state_for(&brine_common::names::MinionId::new("h").unwrap())
            .unwrap();
        let name = SecretName::new("db").unwrap();
        let values = BTreeMap::from([(name, SecretValue::new("hunter2".into()).unwrap())]);
        desired.attach_secret_values(&values).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        save(
            &data,
            &JobId::new("j-1").unwrap(),
            &desired,
            BTreeSet::new(),
        )
        .unwrap();
        let cached = load(&data).unwrap().unwrap();
        assert_eq!(
            cached.to_repair().containers[0].environment(),
            ["DB=hunter2"]
        );
        // A file without the value it needs is refused, not applied without it.
        let text = std::fs::read_to_string(path(&data)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut json = json.as_object().unwrap().clone();
        json.remove("secrets");
        std::fs::write(path(&data), serde_json::to_string(&json).unwrap()).unwrap();
        let err = load(&data).unwrap_err().to_string();
        assert!(err.contains("secret db"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
