//! brine-fleet-sim: many hosts in one process, for measuring what one master carries.
//!
//! Each simulated host is a real minion: its own key and certificate from the master's `Join`
//! ([`hosts`]), its own mutual-TLS link, and the product's link and keeper code
//! ([`brine_minion::link`]) converging an in-memory container engine ([`runtime`]) instead of
//! Docker. [`fleet`] runs them and reports how many are linked.

pub mod fleet;
pub mod hosts;
pub mod runtime;
