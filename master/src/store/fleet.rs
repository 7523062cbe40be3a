//! Which fleet a store holds: the CA whose certificate every host and client of the fleet is
//! chained to. A master whose CA is another must not serve what the store holds (a second
//! master set up with a new CA instead of a copy of the first one's, pointed at the same etcd).

use serde::{Deserialize, Serialize};

/// The fleet a store holds, under one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FleetRecord {
    /// SHA-256 of the fleet's CA certificate (DER), hex.
    pub ca_sha256: String,
}

/// What claiming a store for a fleet found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetClaim {
    /// The store held no fleet: it is this one's now.
    New,
    /// The store holds this fleet already.
    Same,
    /// The store holds another fleet, whose CA certificate hashes to this.
    Other { ca_sha256: String },
}

/// What a claim for the fleet of `ca_sha256` finds in a store holding `held`, and the record
/// to write, if any.
pub(super) fn claim(
    held: Option<FleetRecord>,
    ca_sha256: &str,
) -> (FleetClaim, Option<FleetRecord>) {
    match held {
        None => (
            FleetClaim::New,
            Some(FleetRecord {
                ca_sha256: ca_sha256.to_owned(),
            }),
        ),
        Some(held) if held.ca_sha256 == ca_sha256 => (FleetClaim::Same, None),
        Some(held) => (
            FleetClaim::Other {
                ca_sha256: held.ca_sha256,
            },
            None,
        ),
    }
}
