//! What the master's services share.

use std::sync::Arc;

use brine_common::roles_file::{RolesFile, RolesFileError};

use crate::auth::CertificateRevocations;
use crate::config::MasterConfig;
use crate::link::{JobRouter, Links};
use crate::pki::CertificateAuthority;
use crate::store::Store;

/// The master's shared state, one per daemon.
pub struct Master {
    pub config: MasterConfig,
    pub ca: CertificateAuthority,
    pub store: Arc<dyn Store>,
    pub links: Links,
    pub router: JobRouter,
    /// The events of running jobs, for whoever follows them.
    pub feeds: crate::job_feed::JobFeeds,
    /// The request ids of the jobs this master started.
    pub requests: crate::request_ids::RequestIds,
    /// Shared with the authorization layer.
    pub revocations: Arc<CertificateRevocations>,
    /// The job running or the last one, for the status line.
    pub activity: crate::status::Activity,
    /// Which hosts of recently ended jobs may still report late.
    pub late_reports: crate::late_reports::LateReports,
}

/// Why the roles file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    #[error("cannot read the roles file {file}: {message}")]
    Unreadable { file: String, message: String },
    #[error("the roles file has errors; nothing was sent (hosts keep what they run):\n{0}")]
    Invalid(#[from] RolesFileError),
}

/// Reads and validates the roles file. A file with errors is refused as a whole, so hosts keep
/// running what the last good file gave them.
pub async fn load_roles(config: &MasterConfig) -> Result<RolesFile, RolesError> {
    let path = &config.roles_file;
    let file = path.display().to_string();
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|err| RolesError::Unreadable {
            file: file.clone(),
            message: err.to_string(),
        })?;
    Ok(RolesFile::parse(&file, &text)?)
}

pub use brine_daemon::clock::now_unix_ms;
