//! `brine-master releases`: which images each role ran after each successful highstate.

use std::collections::BTreeMap;

use anyhow::Context;
use brine_proto::pb;
use serde::Serialize;

use super::client::ClientArgs;
use super::minions::ListFormat;

/// One release in `--output json`.
#[derive(Debug, Serialize)]
struct ReleaseJson {
    id: u64,
    job_id: String,
    caller: String,
    created_at_unix_ms: i64,
    /// role → container → image pinned by digest.
    roles: BTreeMap<String, BTreeMap<String, String>>,
}

/// Lists every release, oldest first; `role` keeps only that role's images.
pub async fn list(
    client: &ClientArgs,
    role: Option<String>,
    format: ListFormat,
) -> anyhow::Result<()> {
    let mut fleet = pb::fleet_service_client::FleetServiceClient::new(client.connect().await?);
    let mut all = vec![];
    let mut page_token = String::new();
    loop {
        let page = fleet
            .list_releases(pb::ListReleasesRequest {
                page_size: 0,
                page_token,
            })
            .await
            .map_err(super::status_error)
            .context("list releases")?
            .into_inner();
        all.extend(page.releases);
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    let releases: Vec<ReleaseJson> = all
        .into_iter()
        .map(|r| {
            let mut roles: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            for pin in r.pins {
                if role.as_ref().is_none_or(|wanted| *wanted == pin.role) {
                    roles
                        .entry(pin.role)
                        .or_default()
                        .insert(pin.container, pin.image);
                }
            }
            Ok(ReleaseJson {
                id: r.release_id,
                job_id: r.job_id,
                caller: r.caller,
                created_at_unix_ms: brine_proto::time::unix_ms_or_zero("created_at", r.created_at)?,
                roles,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    match format {
        ListFormat::Json => println!("{}", serde_json::to_string_pretty(&releases)?),
        ListFormat::Table if releases.is_empty() => {
            println!(
                "no release yet: one is recorded after each successful highstate that changes something"
            );
        }
        ListFormat::Table => {
            for release in &releases {
                let at = super::time_of_ms(release.created_at_unix_ms);
                println!(
                    "release {}  {at}  by {}  job {}",
                    release.id, release.caller, release.job_id
                );
                for (role, containers) in &release.roles {
                    for (container, image) in containers {
                        println!("  {role}/{container}  {image}");
                    }
                }
            }
        }
    }
    Ok(())
}
