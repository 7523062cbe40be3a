//! The reconciler: plan from desired and observed state (pure), then execute through the
//! container runtime.

pub mod execute;
pub mod health;
pub mod hooks;
pub mod plan;
pub mod recover;
