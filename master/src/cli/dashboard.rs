//! `brine-master dashboard`: sign-in links for the web dashboard, and its sessions.

use std::time::Duration;

use anyhow::Context;
use brine_proto::{pb, time};
use serde::Serialize;

use super::client::ClientArgs;

/// How `dashboard sessions` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SessionsFormat {
    /// A line per session, for people.
    Text,
    /// A JSON array of sessions.
    Json,
}

/// Makes a one-time sign-in link and prints it alone on the last line of standard output.
pub async fn login(client: &ClientArgs, ttl: Duration, admin: bool) -> anyhow::Result<()> {
    let response = pb::fleet_service_client::FleetServiceClient::new(client.connect().await?)
        .create_dashboard_login(pb::CreateDashboardLoginRequest {
            ttl: Some(time::duration(ttl)),
            admin,
        })
        .await
        .map_err(super::status_error)
        .context("make a dashboard sign-in link")?
        .into_inner();
    eprintln!(
        "A {} dashboard session of {}: open this link in a browser before {} (it works once; \
         it is a credential, do not share it):",
        if admin { "admin" } else { "read-only" },
        humantime::format_duration(ttl),
        super::time_of(response.login_expires_at.as_ref()),
    );
    println!("{}", response.login_url);
    Ok(())
}

#[derive(Serialize)]
struct SessionJson {
    session_id: String,
    created_at_unix_ms: i64,
    expires_at_unix_ms: i64,
    last_seen_unix_ms: i64,
    admin: bool,
    created_by: String,
}

fn unix_ms(at: Option<&prost_types::Timestamp>) -> i64 {
    at.map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
        .unwrap_or(0)
}

/// Lists the dashboard sessions the master holds.
pub async fn sessions(client: &ClientArgs, output: SessionsFormat) -> anyhow::Result<()> {
    let sessions = pb::fleet_service_client::FleetServiceClient::new(client.connect().await?)
        .list_dashboard_sessions(pb::ListDashboardSessionsRequest {})
        .await
        .map_err(super::status_error)
        .context("list the dashboard sessions")?
        .into_inner()
        .sessions;
    match output {
        SessionsFormat::Json => {
            let json: Vec<SessionJson> = sessions
                .into_iter()
                .map(|s| SessionJson {
                    created_at_unix_ms: unix_ms(s.created_at.as_ref()),
                    expires_at_unix_ms: unix_ms(s.expires_at.as_ref()),
                    last_seen_unix_ms: unix_ms(s.last_seen_at.as_ref()),
                    session_id: s.session_id,
                    admin: s.admin,
                    created_by: s.created_by,
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        SessionsFormat::Text if sessions.is_empty() => println!("no dashboard sessions"),
        SessionsFormat::Text => {
            println!(
                "{:<18} {:<10} {:<21} {:<21} {:<21} CREATED BY",
                "ID", "ACCESS", "CREATED", "LAST SEEN", "EXPIRES"
            );
            for s in sessions {
                println!(
                    "{:<18} {:<10} {:<21} {:<21} {:<21} {}",
                    s.session_id,
                    if s.admin { "admin" } else { "read-only" },
                    super::time_of(s.created_at.as_ref()),
                    super::time_of(s.last_seen_at.as_ref()),
                    super::time_of(s.expires_at.as_ref()),
                    super::printable(&s.created_by),
                );
            }
        }
    }
    Ok(())
}

/// Ends a dashboard session.
pub async fn revoke(client: &ClientArgs, id: String) -> anyhow::Result<()> {
    pb::fleet_service_client::FleetServiceClient::new(client.connect().await?)
        .revoke_dashboard_session(pb::RevokeDashboardSessionRequest {
            session_id: id.clone(),
        })
        .await
        .map_err(super::status_error)
        .context("revoke the dashboard session")?;
    println!("dashboard session {id} revoked");
    Ok(())
}
