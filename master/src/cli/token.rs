//! `brine-master token`: join tokens for enrolling hosts.

use std::time::Duration;

use anyhow::Context;
use brine_proto::{pb, time};

use super::client::ClientArgs;

/// Creates a join token and prints it alone on stdout, so scripts can capture it.
pub async fn create(
    client: &ClientArgs,
    ttl: Duration,
    uses: u32,
    labels: Vec<(String, String)>,
    replace: Option<String>,
) -> anyhow::Result<()> {
    let channel = client.connect().await?;
    let response = pb::fleet_service_client::FleetServiceClient::new(channel)
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl: Some(time::duration(ttl)),
            max_uses: (uses > 0).then_some(uses),
            labels: labels.into_iter().collect(),
            replaces_minion_id: replace.clone().unwrap_or_default(),
        })
        .await
        .map_err(super::status_error)
        .context("create a join token")?
        .into_inner();
    println!("{}", response.token);
    let uses = match (&replace, uses) {
        (Some(id), _) => format!(
            "re-enrolling {id} once (its current certificate is refused when it takes effect)"
        ),
        (None, 0) => "any number of hosts".to_owned(),
        (None, 1) => "one host".to_owned(),
        (None, n) => format!("{n} hosts"),
    };
    eprintln!(
        "token {} for {uses}, valid for {}; on each new host run:\n  brine-minion join --master {} --token <TOKEN>",
        response.token_id,
        humantime::format_duration(ttl),
        client.address()?
    );
    Ok(())
}

/// Lists the join tokens by id, with their expiry and uses; secrets are never shown.
pub async fn list(client: &ClientArgs) -> anyhow::Result<()> {
    let mut fleet = pb::fleet_service_client::FleetServiceClient::new(client.connect().await?);
    let mut tokens = vec![];
    let mut page_token = String::new();
    loop {
        let page = fleet
            .list_join_tokens(pb::ListJoinTokensRequest {
                page_size: 0,
                page_token,
            })
            .await
            .map_err(super::status_error)
            .context("list join tokens")?
            .into_inner();
        tokens.extend(page.tokens);
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    if tokens.is_empty() {
        println!("no join tokens; create one with `brine-master token create`");
        return Ok(());
    }
    let now = crate::state::now_unix_ms();
    println!(
        "{:<12}  {:<20}  {:<8}  {:>4}  {:<4}  LABELS",
        "ID", "EXPIRES", "STATE", "USED", "LEFT"
    );
    for token in tokens {
        let expires = super::time_of(token.expires_at.as_ref());
        let expires_at_unix_ms = time::unix_ms_or_zero("expires_at", token.expires_at)?;
        let state = if expires_at_unix_ms <= now {
            "expired"
        } else if token.uses_left == Some(0) {
            "used up"
        } else {
            "valid"
        };
        let left = token
            .uses_left
            .map_or_else(|| "any".to_owned(), |n| n.to_string());
        let mut labels: Vec<String> = token
            .labels
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        if !token.replaces_minion_id.is_empty() {
            labels.insert(0, format!("(replaces {})", token.replaces_minion_id));
        }
        println!(
            "{:<12}  {expires:<20}  {state:<8}  {:>4}  {left:<4}  {}",
            token.token_id,
            token.uses,
            labels.join(",")
        );
    }
    Ok(())
}

/// Deletes a join token by id.
pub async fn revoke(client: &ClientArgs, id: String) -> anyhow::Result<()> {
    pb::fleet_service_client::FleetServiceClient::new(client.connect().await?)
        .revoke_join_token(pb::RevokeJoinTokenRequest {
            token_id: id.clone(),
        })
        .await
        .map_err(super::status_error)
        .context("revoke the join token")?;
    println!("revoked join token {id}; hosts that joined with it stay enrolled");
    Ok(())
}
