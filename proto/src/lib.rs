//! The brine gRPC contract and its conversions to the domain model.
//!
//! Generated prost and tonic code lives in [`pb`]; nothing outside this crate and the gRPC edges
//! of the daemons should touch it. Conversions from the wire are fallible (`TryFrom`) and name the
//! offending field; conversions to the wire are infallible (`From`).

pub mod codec;
mod convert;
pub mod errors;
pub mod time;
pub mod tls;

pub use convert::{InvalidField, fleet_event_kind, watchable_kinds};

/// The encoded `FileDescriptorSet` of every brine `.proto` file (and what they import), which the
/// master serves through gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/brine_descriptors.bin"));

/// Generated code for package `brine.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("brine.v1");
}
