//! What the master's services share.

use std::sync::Arc;

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
    /// Where the output of `logs` and `exec` sessions goes.
    pub sessions: crate::sessions::SessionRouter,
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
    /// Where the fleet's masters serve minions, when they share the store.
    pub peers: crate::peers::Peers,
    /// Which master holds the links of hosts linked to others, when they share the store.
    pub remote_links: crate::relay::RemoteLinks,
    /// The lease this master holds its jobs under, when masters share the store.
    pub fence: crate::takeover::Fence,
    /// What the master counts, for its Prometheus endpoint.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The key that seals secrets, and the values lately opened for the links.
    pub vault: crate::secrets::Vault,
    /// What happens in the fleet, for watchers and hooks.
    pub events: Arc<crate::events::EventBus>,
    /// The dashboard's sign-in links and sessions (in memory only).
    pub dashboard: crate::dashboard::Sessions,
}

pub use brine_daemon::clock::now_unix_ms;
