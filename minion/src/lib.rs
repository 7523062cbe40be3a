//! brine-minion: the host agent.
//!
//! It dials the master ([`link`]), and converges the host's containers to what the master sends
//! ([`reconcile`]) through a narrow container runtime trait ([`runtime`]) whose only real
//! implementation talks to Docker. Between jobs it keeps them there on its own ([`keeper`]),
//! from the last desired state it cached ([`desired_cache`]).

pub mod applied_jobs;
pub mod config;
pub mod desired_cache;
pub mod enrol;
pub mod facts;
pub mod identity;
pub mod keeper;
pub mod link;
pub mod masters;
pub mod metrics;
pub mod proxy;
pub mod reconcile;
pub mod renewal;
pub mod retention;
pub mod runtime;
pub mod sessions;
pub mod status;

pub use brine_daemon::clock::now_unix_ms;
