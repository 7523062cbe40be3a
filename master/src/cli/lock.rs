//! `brine-master lock`: see, take and release the fleet lock.

use std::time::Duration;

use anyhow::Context;
use brine_proto::{pb, time};

use super::client::ClientArgs;

/// Prints the lock's state.
pub async fn status(client: &ClientArgs) -> anyhow::Result<()> {
    let lock = pb::fleet_service_client::FleetServiceClient::new(client.connect().await?)
        .get_lock(pb::GetLockRequest {})
        .await
        .map_err(super::status_error)
        .context("read the fleet lock")?
        .into_inner()
        .lock
        .unwrap_or_default();
    println!("{}", describe(&lock));
    Ok(())
}

/// Locks the fleet against rollouts.
pub async fn acquire(client: &ClientArgs, message: String, ttl: Duration) -> anyhow::Result<()> {
    let lock = pb::fleet_service_client::FleetServiceClient::new(client.connect().await?)
        .acquire_lock(pb::AcquireLockRequest {
            message,
            ttl: Some(time::duration(ttl)),
        })
        .await
        .map_err(super::status_error)
        .context("lock the fleet")?
        .into_inner()
        .lock
        .unwrap_or_default();
    println!("{}", describe(&lock));
    Ok(())
}

/// Releases the lock, whoever holds it; a running job's lock only with `force`.
pub async fn release(client: &ClientArgs, force: bool) -> anyhow::Result<()> {
    let response = pb::fleet_service_client::FleetServiceClient::new(client.connect().await?)
        .release_lock(pb::ReleaseLockRequest { force })
        .await
        .map_err(super::status_error)
        .context("release the fleet lock")?
        .into_inner();
    match response.released {
        Some(lock) if lock.locked => println!("released: {}", describe(&lock)),
        _ => println!("the fleet was not locked"),
    }
    Ok(())
}

fn describe(lock: &pb::Lock) -> String {
    if !lock.locked {
        return "unlocked".into();
    }
    let at = super::time_of;
    let job = if lock.job_id.is_empty() {
        String::new()
    } else {
        format!(" (job {})", lock.job_id)
    };
    format!(
        "locked by {}{job} since {}: {:?}; expires at {}",
        lock.holder,
        at(lock.acquired_at.as_ref()),
        lock.message,
        at(lock.expires_at.as_ref())
    )
}
