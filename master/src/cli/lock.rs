//! `brine-master lock`: see, take and release the fleet lock.

use std::time::Duration;

use anyhow::Context;
use brine_proto::pb;

use super::client::ClientArgs;

/// Prints the lock's state.
pub async fn status(client: &ClientArgs) -> anyhow::Result<()> {
    let lock = pb::fleet_client::FleetClient::new(client.connect().await?)
        .get_lock(pb::GetLockRequest {})
        .await
        .map_err(super::status_error)
        .context("read the fleet lock")?
        .into_inner();
    println!("{}", describe(&lock));
    Ok(())
}

/// Locks the fleet against rollouts.
pub async fn acquire(client: &ClientArgs, message: String, ttl: Duration) -> anyhow::Result<()> {
    let lock = pb::fleet_client::FleetClient::new(client.connect().await?)
        .acquire_lock(pb::AcquireLockRequest {
            message,
            ttl_seconds: ttl.as_secs().max(1),
        })
        .await
        .map_err(super::status_error)
        .context("lock the fleet")?
        .into_inner();
    println!("{}", describe(&lock));
    Ok(())
}

/// Releases the lock, whoever holds it.
pub async fn release(client: &ClientArgs) -> anyhow::Result<()> {
    let response = pb::fleet_client::FleetClient::new(client.connect().await?)
        .release_lock(pb::ReleaseLockRequest {})
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

fn describe(lock: &pb::LockStatus) -> String {
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
        at(lock.acquired_at_unix_ms),
        lock.message,
        at(lock.expires_at_unix_ms)
    )
}
