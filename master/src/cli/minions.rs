//! `brine-master minions`: every enrolled host.

use anyhow::Context;
use brine_proto::pb;
use serde::Serialize;

use super::client::ClientArgs;

/// How the minion list is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// A table for people.
    Table,
    /// One JSON array, one object per host.
    Json,
}

/// One host in `--output json`.
#[derive(Debug, Serialize)]
struct MinionJson {
    id: String,
    connected: bool,
    last_seen_unix_ms: i64,
    hostname: String,
    os: String,
    kernel: String,
    docker_version: String,
    cpus: u32,
    memory_bytes: u64,
    labels: std::collections::BTreeMap<String, String>,
    certificate_sha256: String,
    /// `accepted`, `pending`, `rejected` or `revoked`.
    approval: &'static str,
    containers: Vec<ContainerJson>,
}

#[derive(Debug, Serialize)]
struct ContainerJson {
    name: String,
    role: String,
    image: String,
    image_digest: String,
    state: String,
}

pub async fn list(client: &ClientArgs, format: ListFormat) -> anyhow::Result<()> {
    let channel = client.connect().await?;
    let minions = pb::fleet_client::FleetClient::new(channel)
        .list_minions(pb::ListMinionsRequest {})
        .await
        .map_err(super::status_error)
        .context("list minions")?
        .into_inner()
        .minions;
    match format {
        ListFormat::Json => {
            let json: Vec<MinionJson> = minions.into_iter().map(to_json).collect();
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        ListFormat::Table => print_table(&minions),
    }
    Ok(())
}

/// Revokes a host: its certificate is refused and its link dropped.
pub async fn revoke(client: &ClientArgs, id: String) -> anyhow::Result<()> {
    let channel = client.connect().await?;
    let response = pb::fleet_client::FleetClient::new(channel)
        .revoke_minion(pb::RevokeMinionRequest {
            minion_id: id.clone(),
        })
        .await
        .map_err(super::status_error)
        .context("revoke the minion")?
        .into_inner();
    let link = if response.disconnected {
        "its link was dropped"
    } else {
        "it was not connected"
    };
    println!("revoked {id}: {link}; it can come back only by joining again with a token");
    Ok(())
}

fn approval_name(approval: i32) -> &'static str {
    match pb::Approval::try_from(approval) {
        Ok(pb::Approval::Pending) => "pending",
        Ok(pb::Approval::Rejected) => "rejected",
        Ok(pb::Approval::Revoked) => "revoked",
        _ => "accepted",
    }
}

/// Admits a host that waits for approval, or turns it away.
pub async fn approve(client: &ClientArgs, id: String, accept: bool) -> anyhow::Result<()> {
    let mut fleet = pb::fleet_client::FleetClient::new(client.connect().await?);
    let request = pb::MinionApprovalRequest {
        minion_id: id.clone(),
    };
    if accept {
        fleet.accept_minion(request).await
    } else {
        fleet.reject_minion(request).await
    }
    .map_err(super::status_error)
    .context("change the minion's approval")?;
    if accept {
        println!("accepted {id}; its link is admitted when it next connects");
    } else {
        println!("rejected {id}; it can come back only by joining again with a token");
    }
    Ok(())
}

fn to_json(m: pb::MinionInfo) -> MinionJson {
    let facts = m.facts.unwrap_or_default();
    MinionJson {
        id: m.id,
        connected: m.connected,
        last_seen_unix_ms: m.last_seen_unix_ms,
        hostname: facts.hostname,
        os: facts.os,
        kernel: facts.kernel,
        docker_version: facts.docker_version,
        cpus: facts.cpus,
        memory_bytes: facts.memory_bytes,
        labels: facts.labels.into_iter().collect(),
        certificate_sha256: m.certificate_sha256,
        approval: approval_name(m.approval),
        containers: m
            .running
            .into_iter()
            .map(|c| ContainerJson {
                name: c.name,
                role: c.role,
                image: c.image,
                image_digest: c.image_digest,
                state: c.state,
            })
            .collect(),
    }
}

fn print_table(minions: &[pb::MinionInfo]) {
    if minions.is_empty() {
        println!("no minions enrolled; create a token with `brine-master token create`");
        return;
    }
    let rows: Vec<[String; 5]> = minions
        .iter()
        .map(|m| {
            let facts = m.facts.clone().unwrap_or_default();
            let containers: Vec<String> = m
                .running
                .iter()
                .map(|c| format!("{}({})", c.name, c.role))
                .collect();
            [
                m.id.clone(),
                match (approval_name(m.approval), m.connected) {
                    ("accepted", true) => "up",
                    ("accepted", false) => "down",
                    (other, _) => other,
                }
                .to_owned(),
                facts.os,
                facts.docker_version,
                containers.join(" "),
            ]
        })
        .collect();
    let header = ["ID", "LINK", "OS", "DOCKER", "CONTAINERS"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
}
