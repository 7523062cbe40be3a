//! `brine-master token create`.

use std::time::Duration;

use anyhow::Context;
use brine_proto::pb;

use super::client::ClientArgs;

/// Creates a join token and prints it alone on stdout, so scripts can capture it.
pub async fn create(client: &ClientArgs, ttl: Duration) -> anyhow::Result<()> {
    let channel = client.connect().await?;
    let response = pb::fleet_client::FleetClient::new(channel)
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl_seconds: ttl.as_secs().max(1),
        })
        .await
        .map_err(super::status_error)
        .context("create a join token")?
        .into_inner();
    println!("{}", response.token);
    eprintln!(
        "valid for {}; on each new host run:\n  brine-minion join --master {} --token <TOKEN>",
        humantime::format_duration(ttl),
        client.address()?
    );
    Ok(())
}
