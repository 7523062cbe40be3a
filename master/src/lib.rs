//! brine-master: the daemon that holds the roles and the fleet, and the operator CLI that talks
//! to it.
//!
//! The daemon is [`server::run`]; `main` only parses arguments and calls it, so tests can run a
//! master in-process on a `127.0.0.1:0` listener.

pub mod auth;
pub mod cli;
pub mod config;
pub mod connections;
pub mod dashboard;
pub mod data_dir;
pub mod enrolment;
pub mod events;
pub mod fleet;
pub mod following;
pub mod highstate;
pub mod hooks;
pub mod job;
pub mod job_feed;
pub mod job_run;
pub mod late_reports;
pub mod link;
pub mod metrics;
pub mod migrate;
pub mod peers;
pub mod pki;
pub mod registry;
pub mod relay;
pub mod release;
pub mod request_ids;
pub mod roles;
pub mod rollout;
pub mod secrets;
pub mod server;
pub mod server_cert;
pub mod sessions;
pub mod setup;
pub mod state;
pub mod status;
pub mod store;
pub mod takeover;
