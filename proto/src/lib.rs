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

pub use convert::InvalidField;

/// Generated code for package `brine.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("brine.v1");
}
