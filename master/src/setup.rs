//! `brine-master init`: a data directory for the first master of a new fleet, or for one more
//! master of a fleet kept in etcd.

use std::net::SocketAddr;

use anyhow::{Context, bail};

use crate::data_dir::{DataDir, EXAMPLE_ROLES, FleetCa};
use crate::state::now_unix_ms;
use crate::store::{self, EtcdSettings, FleetClaim, NewRoles, StoreLocation};

/// What `init` did, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setup {
    /// A new fleet, its store in the data directory.
    NewFleet,
    /// A new fleet, its store in etcd.
    NewFleetInEtcd,
    /// One more master of the fleet in etcd, with the CA copied from one of its masters.
    JoinedFleetInEtcd,
}

/// Sets up `data` for a master listening on `listen` and reached as `advertise` (names for
/// its certificate, the first one given by the operator being where minions reach it), with
/// its store in `etcd` if given. A fleet in etcd is claimed for the data directory's CA before
/// any file is written, so a master with the wrong CA changes nothing.
pub async fn init(
    data: &DataDir,
    advertise: &[String],
    minions_reach_it_at: Option<&str>,
    listen: SocketAddr,
    etcd: Option<EtcdSettings>,
) -> anyhow::Result<Setup> {
    let ca = data.fleet_ca(etcd.is_some())?;
    let setup = match &etcd {
        None => Setup::NewFleet,
        Some(settings) => claim(settings, &ca).await?,
    };
    // Only masters that share a store tell minions where they are.
    let advertise_address = minions_reach_it_at
        .filter(|_| etcd.is_some())
        .map(|host| crate::config::host_and_port(host, listen.port()));
    data.init(
        &ca,
        advertise,
        listen,
        etcd.as_ref(),
        advertise_address.as_deref(),
    )?;
    Ok(setup)
}

async fn claim(settings: &EtcdSettings, ca: &FleetCa) -> anyhow::Result<Setup> {
    let store = store::open(&StoreLocation::Etcd(settings.clone()))
        .await
        .with_context(|| format!("connect to etcd at {}", settings.endpoints.join(",")))?;
    let digest = ca.ca().digest().to_owned();
    match (store.claim_fleet(digest.clone()).await?, ca) {
        (FleetClaim::New, _) => {
            // A new fleet starts with the example roles file, as a data directory does.
            store
                .apply_roles(NewRoles {
                    text: EXAMPLE_ROLES.to_owned(),
                    sha256: brine_common::token::sha256_hex(EXAMPLE_ROLES.as_bytes()),
                    applied_by: "brine-master init".to_owned(),
                    applied_at_unix_ms: now_unix_ms(),
                })
                .await?;
            Ok(Setup::NewFleetInEtcd)
        }
        (FleetClaim::Same, FleetCa::Copied(_)) => Ok(Setup::JoinedFleetInEtcd),
        // A CA made just now cannot be the fleet's already.
        (FleetClaim::Same, FleetCa::Made { .. }) => Ok(Setup::NewFleetInEtcd),
        (FleetClaim::Other { ca_sha256 }, FleetCa::Made { .. }) => bail!(
            "etcd holds a fleet under {} already (its CA certificate's SHA-256 is {ca_sha256}); \
             to add a master to it, copy ca.pem and ca.key from one of its masters into the \
             new data directory first, or give another --etcd-prefix for a new fleet",
            settings.prefix
        ),
        (FleetClaim::Other { ca_sha256 }, FleetCa::Copied(_)) => bail!(
            "etcd holds another fleet under {}: its CA certificate's SHA-256 is {ca_sha256}, the \
             copied ca.pem's is {digest}; copy ca.pem and ca.key from a master of that fleet",
            settings.prefix
        ),
    }
}
