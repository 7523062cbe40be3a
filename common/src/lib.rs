//! The brine domain model, shared by the master and the minion.
//!
//! Everything here is pure: no IO, no async, no gRPC types. The `brine-proto` crate converts
//! between these types and the wire format; the daemons work only with these.

pub mod address;
pub mod fleet_event;
pub mod host;
pub mod identity;
pub mod limits;
pub mod names;
pub mod outcome;
pub mod progress;
pub mod proxy_control;
pub mod roles_file;
pub mod secret;
pub mod session;
pub mod spec;
pub mod target;
pub mod token;
pub mod toml_span;
