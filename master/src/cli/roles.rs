//! `brine-master roles`: the roles file kept in the store, for masters that share one.

use std::path::Path;

use anyhow::Context;
use brine_proto::pb;
use serde::Serialize;
use similar::TextDiff;

use super::client::ClientArgs;
use super::minions::ListFormat;

/// One version in `roles history --output json`.
#[derive(Debug, Serialize)]
struct VersionJson {
    version: u64,
    sha256: String,
    applied_by: String,
    applied_at_unix_ms: i64,
}

async fn fleet(
    client: &ClientArgs,
) -> anyhow::Result<pb::fleet_service_client::FleetServiceClient<tonic::transport::Channel>> {
    Ok(pb::fleet_service_client::FleetServiceClient::new(
        client.connect().await?,
    ))
}

/// Applies the roles file at `path`, and prints what changed since the version it replaces.
pub async fn apply(client: &ClientArgs, path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the roles file {}", path.display()))?;
    let mut fleet = fleet(client).await?;
    let applied = fleet
        .apply_roles(pb::ApplyRolesRequest {
            text: text.clone(),
            file_name: path.display().to_string(),
        })
        .await
        .map_err(super::status_error)
        .context("apply the roles file")?
        .into_inner();
    let version = applied.roles.unwrap_or_default().version;
    if !applied.changed {
        println!("unchanged: roles version {version} has this text already");
        return Ok(());
    }
    if applied.previous_version == 0 {
        println!("applied roles version {version}, the first");
        return Ok(());
    }
    let previous = fleet
        .get_roles(pb::GetRolesRequest {
            version: applied.previous_version,
        })
        .await
        .map_err(super::status_error)
        .context("read the version it replaces")?
        .into_inner()
        .roles
        .unwrap_or_default();
    println!(
        "applied roles version {version}, replacing version {}:",
        applied.previous_version
    );
    print!(
        "{}",
        TextDiff::from_lines(&previous.text, &text)
            .unified_diff()
            .header(
                &format!("roles version {}", applied.previous_version),
                &format!("roles version {version}"),
            )
    );
    Ok(())
}

/// Prints the text of roles version `version` (the newest when `None`).
pub async fn show(client: &ClientArgs, version: Option<u64>) -> anyhow::Result<()> {
    let roles = fleet(client)
        .await?
        .get_roles(pb::GetRolesRequest {
            version: version.unwrap_or(0),
        })
        .await
        .map_err(super::status_error)
        .context("read the roles file")?
        .into_inner()
        .roles
        .unwrap_or_default();
    print!("{}", roles.text);
    Ok(())
}

/// Lists the versions kept, newest first.
pub async fn history(client: &ClientArgs, format: ListFormat) -> anyhow::Result<()> {
    let versions = fleet(client)
        .await?
        .list_roles_versions(pb::ListRolesVersionsRequest {})
        .await
        .map_err(super::status_error)
        .context("list the roles file's versions")?
        .into_inner()
        .versions
        .into_iter()
        .map(|v| {
            Ok(VersionJson {
                version: v.version,
                sha256: v.sha256,
                applied_by: v.applied_by,
                applied_at_unix_ms: brine_proto::time::unix_ms_or_zero("applied_at", v.applied_at)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    match format {
        ListFormat::Json => println!("{}", serde_json::to_string_pretty(&versions)?),
        ListFormat::Table if versions.is_empty() => {
            println!("no roles file applied yet: brine-master roles apply FILE");
        }
        ListFormat::Table => {
            for v in &versions {
                println!(
                    "version {:<5} {}  by {}  sha256 {}",
                    v.version,
                    super::time_of_ms(v.applied_at_unix_ms),
                    v.applied_by,
                    &v.sha256[..v.sha256.len().min(12)],
                );
            }
        }
    }
    Ok(())
}
