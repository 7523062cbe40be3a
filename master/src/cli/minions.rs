//! `brine-master minions`: every enrolled host.

use anyhow::Context;
use brine_proto::pb;
use brine_proto::pb::fleet_service_client::FleetServiceClient;
use serde::Serialize;
use tonic::transport::Channel;

use super::client::ClientArgs;
use super::printable;

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
    /// The name of the master holding its link, when it is linked.
    linked_to: Option<String>,
    last_seen_unix_ms: i64,
    hostname: String,
    os: String,
    os_id: String,
    kernel: String,
    docker_version: String,
    cpus: u32,
    memory_bytes: u64,
    labels: std::collections::BTreeMap<String, String>,
    /// Labels from the join token.
    join_labels: std::collections::BTreeMap<String, String>,
    certificate_sha256: String,
    certificate_expires_unix_ms: i64,
    /// `accepted`, `pending`, `rejected` or `revoked`.
    approval: &'static str,
    /// A machine joined with a token made to replace this host and waits for `minions accept`.
    replacement_pending: bool,
    /// How far the host's clock was ahead of the master's (negative: behind) at its last hello.
    clock_offset_ms: i64,
    containers: Vec<ContainerJson>,
}

/// `minions show --output json`: the host and its events, newest first.
#[derive(Debug, Serialize)]
struct DetailJson {
    #[serde(flatten)]
    minion: MinionJson,
    events: Vec<EventJson>,
}

#[derive(Debug, Serialize)]
struct EventJson {
    at_unix_ms: i64,
    /// `repaired`, `repair_failed`, `crash_looping`, `docker_unavailable`,
    /// `docker_available`, `images_removed` or `prune_failed`.
    kind: &'static str,
    message: String,
}

#[derive(Debug, Serialize)]
struct ContainerJson {
    name: String,
    role: String,
    image: String,
    image_digest: String,
    state: String,
}

/// Every enrolled host that `filter` (a target expression; empty for all) picks, as the master
/// lists them, page by page.
async fn fetch(
    fleet: &mut FleetServiceClient<Channel>,
    filter: &str,
) -> anyhow::Result<Vec<pb::MinionInfo>> {
    let mut minions = vec![];
    let mut page_token = String::new();
    loop {
        let page = fleet
            .list_minions(pb::ListMinionsRequest {
                page_size: 0,
                page_token,
                filter: filter.to_owned(),
            })
            .await
            .map_err(super::status_error)
            .context("list minions")?
            .into_inner();
        minions.extend(page.minions);
        if page.next_page_token.is_empty() {
            return Ok(minions);
        }
        page_token = page.next_page_token;
    }
}

/// Lists the hosts `target` picks (every host without one).
pub async fn list(
    client: &ClientArgs,
    target: Option<String>,
    format: ListFormat,
) -> anyhow::Result<()> {
    let filter = target.unwrap_or_default();
    let minions = fetch(
        &mut FleetServiceClient::new(client.connect().await?),
        &filter,
    )
    .await?;
    match format {
        ListFormat::Json => {
            let json: Vec<MinionJson> = minions.into_iter().map(to_json).collect();
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        ListFormat::Table => print_table(&minions),
    }
    Ok(())
}

fn approval_name(approval: i32) -> &'static str {
    match pb::Approval::try_from(approval) {
        Ok(pb::Approval::Accepted) => "accepted",
        Ok(pb::Approval::Pending) => "pending",
        Ok(pb::Approval::Rejected) => "rejected",
        Ok(pb::Approval::Revoked) => "revoked",
        // Never read an approval this client does not know as admitted.
        _ => "unknown",
    }
}

/// A time from the master in milliseconds since the Unix epoch for `--output json`; 0 when
/// unset or malformed.
fn unix_ms(at: Option<prost_types::Timestamp>) -> i64 {
    brine_proto::time::unix_ms_or_zero("", at).unwrap_or(0)
}

/// A clock offset in milliseconds; 0 when unset or malformed.
fn offset_ms(offset: Option<prost_types::Duration>) -> i64 {
    brine_proto::time::signed_ms("", offset)
        .ok()
        .flatten()
        .unwrap_or(0)
}

fn event_kind(kind: i32) -> &'static str {
    match pb::HostEventKind::try_from(kind) {
        Ok(pb::HostEventKind::Repaired) => "repaired",
        Ok(pb::HostEventKind::RepairFailed) => "repair_failed",
        Ok(pb::HostEventKind::CrashLooping) => "crash_looping",
        Ok(pb::HostEventKind::DockerUnavailable) => "docker_unavailable",
        Ok(pb::HostEventKind::DockerAvailable) => "docker_available",
        Ok(pb::HostEventKind::ImagesRemoved) => "images_removed",
        Ok(pb::HostEventKind::PruneFailed) => "prune_failed",
        _ => "unknown",
    }
}

/// Shows one host: link, certificate, facts, labels, containers and its recent events.
pub async fn show(client: &ClientArgs, id: String, format: ListFormat) -> anyhow::Result<()> {
    let detail = FleetServiceClient::new(client.connect().await?)
        .get_minion(pb::GetMinionRequest { minion_id: id })
        .await
        .map_err(super::status_error)
        .context("show the minion")?
        .into_inner();
    let minion = detail.minion.unwrap_or_default();
    match format {
        ListFormat::Json => {
            let json = DetailJson {
                minion: to_json(minion),
                events: detail
                    .events
                    .into_iter()
                    .map(|e| EventJson {
                        at_unix_ms: unix_ms(e.at),
                        kind: event_kind(e.kind),
                        message: e.message,
                    })
                    .collect(),
            };
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        ListFormat::Table => print_detail(&minion, &detail.events),
    }
    Ok(())
}

/// How far a host's clock is off, in words.
fn clock_offset(offset_ms: i64) -> String {
    let seconds = offset_ms.unsigned_abs() as f64 / 1000.0;
    match offset_ms {
        ..=-1000 => format!("{seconds:.1} s behind the master's"),
        1000.. => format!("{seconds:.1} s ahead of the master's"),
        _ => "in step with the master's".into(),
    }
}

fn print_detail(m: &pb::MinionInfo, events: &[pb::HostEvent]) {
    let facts = m.facts.clone().unwrap_or_default();
    let labels = |labels: &std::collections::HashMap<String, String>| {
        let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.sort();
        pairs.join(",")
    };
    let link = match (approval_name(m.approval), m.connected) {
        ("accepted", true) => "up",
        ("accepted", false) => "down",
        (other, _) => other,
    };
    println!("id:           {}", m.minion_id);
    println!("link:         {link}");
    if m.replacement_pending {
        println!(
            "replacement:  a machine joined to replace this host; `minions accept {}` lets it take over, `minions reject {}` turns it away",
            m.minion_id, m.minion_id
        );
    }
    if m.last_seen.is_some() {
        println!("last seen:    {}", super::time_of(m.last_seen.as_ref()));
        println!("clock:        {}", clock_offset(offset_ms(m.clock_offset)));
    }
    println!("certificate:  {}", m.certificate_sha256);
    if m.certificate_expires_at.is_some() {
        println!(
            "expires:      {}",
            super::time_of(m.certificate_expires_at.as_ref())
        );
    }
    println!(
        "host:         {} ({}, kernel {})",
        printable(&facts.hostname),
        printable(&facts.os),
        printable(&facts.kernel)
    );
    println!(
        "docker:       {}",
        if facts.docker_version.is_empty() {
            "unavailable".into()
        } else {
            printable(&facts.docker_version)
        }
    );
    println!(
        "resources:    {} CPUs, {} MiB",
        facts.cpus,
        facts.memory_bytes / (1024 * 1024)
    );
    println!("labels:       {}", labels(&facts.labels));
    println!("join labels:  {}", labels(&m.join_labels));
    println!("containers:");
    for c in &m.running {
        println!(
            "  {} ({}): {} {}",
            c.name,
            c.role,
            printable(&c.state),
            printable(&c.image)
        );
    }
    println!("events (newest first):");
    if events.is_empty() {
        println!("  none");
    }
    for e in events {
        println!(
            "  {}  {:<18}  {}",
            super::time_of(e.at.as_ref()),
            event_kind(e.kind),
            printable(&e.message)
        );
    }
}

/// What an operator does to hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinionAction {
    Accept,
    Reject,
    Revoke,
    Delete,
}

impl MinionAction {
    fn verb(self) -> &'static str {
        match self {
            MinionAction::Accept => "accept",
            MinionAction::Reject => "reject",
            MinionAction::Revoke => "revoke",
            MinionAction::Delete => "delete",
        }
    }

    /// Whether a glob picks a host in this approval state: accepting concerns waiting hosts,
    /// rejecting waiting or admitted ones, revoking any not yet revoked, deleting any.
    fn applies_to(self, approval: &str) -> bool {
        match self {
            MinionAction::Accept => approval == "pending",
            MinionAction::Reject => matches!(approval, "pending" | "accepted"),
            MinionAction::Revoke => approval != "revoked",
            MinionAction::Delete => true,
        }
    }
}

/// Whether `pattern` is a glob rather than one host id.
fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// The hosts `patterns` name: ids as given, globs matched against the enrolled hosts `action`
/// applies to. Errors on a bad glob or a glob that matches nothing.
fn expand(
    patterns: &[String],
    minions: &[pb::MinionInfo],
    action: MinionAction,
) -> anyhow::Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for pattern in patterns {
        if !is_glob(pattern) {
            ids.push(pattern.clone());
            continue;
        }
        let glob = glob::Pattern::new(pattern)
            .with_context(|| format!("{pattern:?} is not a valid glob"))?;
        let matched: Vec<String> = minions
            .iter()
            .filter(|m| glob.matches(&m.minion_id) && action.applies_to(approval_name(m.approval)))
            .map(|m| m.minion_id.clone())
            .collect();
        if matched.is_empty() {
            anyhow::bail!("{pattern:?} matches no host to {}", action.verb());
        }
        ids.extend(matched);
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Asks on the terminal whether to go on; refuses when there is no terminal to ask.
fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{question}: refusing without --yes, as there is no terminal to confirm on");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Accepts, rejects, revokes or deletes hosts by id or glob. Globs are confirmed on the terminal
/// unless `yes`.
pub async fn act(
    client: &ClientArgs,
    action: MinionAction,
    patterns: &[String],
    yes: bool,
) -> anyhow::Result<()> {
    let mut fleet = FleetServiceClient::new(client.connect().await?);
    let ids = if patterns.iter().any(|p| is_glob(p)) {
        let minions = fetch(&mut fleet, "").await?;
        let ids = expand(patterns, &minions, action)?;
        let question = format!(
            "{} {} host(s): {}?",
            action.verb(),
            ids.len(),
            ids.join(" ")
        );
        if !yes && !confirm(&question)? {
            anyhow::bail!("nothing was done");
        }
        ids
    } else {
        expand(patterns, &[], action)?
    };
    for id in ids {
        let minion_id = id.clone();
        let dropped = match action {
            MinionAction::Accept => fleet
                .accept_minion(pb::AcceptMinionRequest { minion_id })
                .await
                .map(|_| false),
            MinionAction::Reject => fleet
                .reject_minion(pb::RejectMinionRequest { minion_id })
                .await
                .map(|_| false),
            MinionAction::Revoke => fleet
                .revoke_minion(pb::RevokeMinionRequest { minion_id })
                .await
                .map(|r| r.into_inner().disconnected),
            MinionAction::Delete => fleet
                .delete_minion(pb::DeleteMinionRequest { minion_id })
                .await
                .map(|r| r.into_inner().disconnected),
        }
        .map_err(super::status_error)
        .with_context(|| format!("{} {id}", action.verb()))?;
        let link = if dropped {
            "; its link was dropped"
        } else {
            ""
        };
        match action {
            MinionAction::Accept => {
                println!("accepted {id}; its link is admitted when it next connects");
            }
            MinionAction::Reject => {
                println!("rejected {id}{link}; it can come back only by joining again with a token")
            }
            MinionAction::Revoke => {
                println!("revoked {id}{link}; it can come back only by joining again with a token")
            }
            MinionAction::Delete => {
                println!("deleted {id}{link}; it can come back only by joining again with a token")
            }
        }
    }
    Ok(())
}

fn to_json(m: pb::MinionInfo) -> MinionJson {
    let facts = m.facts.unwrap_or_default();
    MinionJson {
        id: m.minion_id,
        connected: m.connected,
        linked_to: (!m.linked_to.is_empty()).then_some(m.linked_to),
        last_seen_unix_ms: unix_ms(m.last_seen),
        hostname: facts.hostname,
        os: facts.os,
        os_id: facts.os_id,
        kernel: facts.kernel,
        docker_version: facts.docker_version,
        cpus: facts.cpus,
        memory_bytes: facts.memory_bytes,
        labels: facts.labels.into_iter().collect(),
        join_labels: m.join_labels.into_iter().collect(),
        certificate_sha256: m.certificate_sha256,
        certificate_expires_unix_ms: unix_ms(m.certificate_expires_at),
        approval: approval_name(m.approval),
        replacement_pending: m.replacement_pending,
        clock_offset_ms: offset_ms(m.clock_offset),
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
    let rows: Vec<[String; 6]> = minions
        .iter()
        .map(|m| {
            let facts = m.facts.clone().unwrap_or_default();
            let containers: Vec<String> = m
                .running
                .iter()
                .map(|c| format!("{}({})", c.name, c.role))
                .collect();
            [
                m.minion_id.clone(),
                match (approval_name(m.approval), m.connected) {
                    ("accepted", true) => "up",
                    ("accepted", false) => "down",
                    (other, _) => other,
                }
                .to_owned()
                    + if m.replacement_pending {
                        " (replacement pending)"
                    } else {
                        ""
                    },
                m.certificate_sha256.chars().take(16).collect(),
                printable(&facts.os).into_owned(),
                printable(&facts.docker_version).into_owned(),
                containers.join(" "),
            ]
        })
        .collect();
    let header = ["ID", "LINK", "CERTIFICATE", "OS", "DOCKER", "CONTAINERS"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
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
        line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minion(id: &str, approval: pb::Approval) -> pb::MinionInfo {
        pb::MinionInfo {
            minion_id: id.into(),
            approval: approval.into(),
            ..Default::default()
        }
    }

    #[test]
    fn globs_pick_the_hosts_an_action_applies_to() {
        let minions = [
            minion("web-1", pb::Approval::Pending),
            minion("web-2", pb::Approval::Accepted),
            minion("web-3", pb::Approval::Revoked),
            minion("db-1", pb::Approval::Pending),
        ];
        let expand = |patterns: &[&str], action| {
            let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
            expand(&patterns, &minions, action)
        };
        assert_eq!(expand(&["web-*"], MinionAction::Accept).unwrap(), ["web-1"]);
        assert_eq!(
            expand(&["web-*"], MinionAction::Revoke).unwrap(),
            ["web-1", "web-2"]
        );
        assert_eq!(
            expand(&["*", "web-1"], MinionAction::Delete).unwrap(),
            ["db-1", "web-1", "web-2", "web-3"]
        );
        // Plain ids go as given; the master says if they are unknown.
        assert_eq!(expand(&["ghost"], MinionAction::Delete).unwrap(), ["ghost"]);
        let err = expand(&["cache-*"], MinionAction::Revoke).unwrap_err();
        assert!(err.to_string().contains("matches no host"), "{err}");
        assert!(expand(&["web-[1"], MinionAction::Delete).is_err());
    }
}
