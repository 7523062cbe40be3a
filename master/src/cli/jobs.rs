//! `brine-master jobs`: the history of jobs: highstates, deploys, rollbacks, and the `exec` and
//! `logs` calls.

use anyhow::Context;
use std::collections::BTreeMap;

use brine_common::outcome::{HighstateEvent, HostStatus, JobSummary};
use brine_proto::pb;
use serde::Serialize;

use super::client::ClientArgs;
use super::minions::ListFormat;

/// One job in `--output json`: who ran it, on what, how its hosts ended, and (for `jobs show`)
/// every host's report.
#[derive(Debug, Serialize)]
struct JobJson {
    /// `highstate`, `plan`, `deploy`, `rollback`, `exec` or `logs`; empty for old records.
    kind: String,
    /// For `exec` and `logs`: what was asked (role, container, command or log options).
    #[serde(skip_serializing_if = "String::is_empty")]
    command: String,
    caller: String,
    target: String,
    /// A plan (dry run) that changed nothing.
    plan: bool,
    /// Still running; the hosts listed so far have reported.
    running: bool,
    success: bool,
    /// How many hosts ended in each status (those with none left out).
    counts: BTreeMap<&'static str, u32>,
    #[serde(flatten)]
    summary: JobSummary,
}

/// Reads a recorded job from the wire into the domain's summary.
fn to_json(record: pb::Job) -> anyhow::Result<JobJson> {
    let summary = record
        .summary
        .context("the master sent a job without its summary")?;
    let counts = summary.counts.unwrap_or_default();
    let event = pb::JobEvent {
        kind: Some(pb::job_event::Kind::Summary(summary)),
    };
    let counts: BTreeMap<&'static str, u32> = [
        (HostStatus::Unchanged, counts.unchanged),
        (HostStatus::Changed, counts.changed),
        (HostStatus::Failed, counts.failed),
        (HostStatus::Unreachable, counts.unreachable),
        (HostStatus::TimedOut, counts.timed_out),
        (HostStatus::Skipped, counts.skipped),
        (HostStatus::Interrupted, counts.interrupted),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(status, n)| (status.as_str(), n))
    .collect();
    let all_succeeded = !counts.is_empty()
        && counts
            .keys()
            .all(|status| matches!(*status, "unchanged" | "changed"));
    match HighstateEvent::try_from(event)? {
        HighstateEvent::Summary(summary) => Ok(JobJson {
            kind: record.kind,
            command: record.command,
            caller: record.caller,
            target: record.target,
            plan: record.plan,
            running: record.running,
            success: !record.running && all_succeeded,
            counts,
            summary,
        }),
        _ => anyhow::bail!("the master sent a job without its summary"),
    }
}

/// How a job ended, in a word.
fn result_word(job: &JobJson) -> &'static str {
    match (job.running, job.success, job.summary.cancelled_by.is_some()) {
        (true, _, _) => "running",
        (_, _, true) => "cancelled",
        (_, true, _) => "ok",
        (_, false, _) => "failed",
    }
}

/// Cancels a running job: no batch starts after this, and the hosts not reached are skipped.
pub async fn cancel(client: &ClientArgs, id: String) -> anyhow::Result<()> {
    pb::fleet_service_client::FleetServiceClient::new(client.connect().await?)
        .cancel_job(pb::CancelJobRequest { job_id: id.clone() })
        .await
        .map_err(super::status_error)
        .context("cancel the job")?;
    println!(
        "cancelled {id}: no batch starts after this; the hosts of the batch under way finish \
         their step, the others are skipped"
    );
    Ok(())
}

/// Lists the newest `limit` jobs, a page at a time.
pub async fn list(client: &ClientArgs, limit: u32, format: ListFormat) -> anyhow::Result<()> {
    let mut fleet = pb::fleet_service_client::FleetServiceClient::new(client.connect().await?);
    let mut records = vec![];
    let mut page_token = String::new();
    while records.len() < usize::try_from(limit).unwrap_or(usize::MAX) {
        let left = limit.saturating_sub(u32::try_from(records.len()).unwrap_or(u32::MAX));
        let page = fleet
            .list_jobs(pb::ListJobsRequest {
                page_size: left.min(1000),
                page_token,
                view: pb::JobView::Basic.into(),
            })
            .await
            .map_err(super::status_error)
            .context("list jobs")?
            .into_inner();
        records.extend(page.jobs);
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    let jobs = records
        .into_iter()
        .map(to_json)
        .collect::<anyhow::Result<Vec<_>>>()?;
    match format {
        ListFormat::Json => println!("{}", serde_json::to_string_pretty(&jobs)?),
        ListFormat::Table if jobs.is_empty() => println!("no jobs recorded yet"),
        ListFormat::Table => {
            println!(
                "{:<26}  {:<9}  {:<20}  {:>8}  {:<9}  {:<24}  HOSTS",
                "JOB", "KIND", "STARTED", "TOOK", "RESULT", "BY"
            );
            for job in &jobs {
                println!(
                    "{:<26}  {:<9}  {:<20}  {:>8}  {:<9}  {:<24}  {}",
                    job.summary.job_id,
                    if job.kind.is_empty() { "-" } else { &job.kind },
                    started(&job.summary),
                    took(&job.summary),
                    result_word(job),
                    job.caller,
                    counts(job),
                );
            }
        }
    }
    Ok(())
}

/// Follows a job from its start to its summary, running or finished, as `highstate` shows one.
pub async fn follow(
    client: &ClientArgs,
    id: String,
    format: super::output::OutputFormat,
) -> anyhow::Result<super::highstate::Verdict> {
    let stream = pb::fleet_service_client::FleetServiceClient::new(client.connect().await?)
        .watch_job(pb::WatchJobRequest { job_id: id })
        .await
        .map_err(super::status_error)
        .context("follow the job")?
        .into_inner();
    super::highstate::watch(stream, |r: pb::WatchJobResponse| r.event, format).await
}

/// Shows one job with every host.
pub async fn show(client: &ClientArgs, id: String, format: ListFormat) -> anyhow::Result<()> {
    let mut fleet = pb::fleet_service_client::FleetServiceClient::new(client.connect().await?);
    let mut record: Option<pb::Job> = None;
    let mut page_token = String::new();
    // The hosts' reports come a page at a time; the rest of the record with the first.
    loop {
        let page = fleet
            .get_job(pb::GetJobRequest {
                job_id: id.clone(),
                page_size: 0,
                page_token,
            })
            .await
            .map_err(super::status_error)
            .context("read the job")?
            .into_inner();
        page_token = page.next_page_token.clone();
        let job = page.job.context("the master sent no job")?;
        match &mut record {
            None => record = Some(job),
            Some(first) => {
                let hosts = job.summary.map(|s| s.hosts).unwrap_or_default();
                if let Some(summary) = &mut first.summary {
                    summary.hosts.extend(hosts);
                }
            }
        }
        if page_token.is_empty() {
            break;
        }
    }
    let record = record.context("the master sent no job")?;
    let job = to_json(record)?;
    match format {
        ListFormat::Json => println!("{}", serde_json::to_string_pretty(&job)?),
        ListFormat::Table => {
            let target = if job.target.is_empty() {
                "*"
            } else {
                &job.target
            };
            println!("job      {}", job.summary.job_id);
            if !job.kind.is_empty() {
                println!("kind     {}", job.kind);
            }
            if !job.command.is_empty() {
                println!("command  {}", super::printable(&job.command));
            }
            println!("by       {}", job.caller);
            println!("target   {target}");
            println!(
                "started  {} (took {})",
                started(&job.summary),
                took(&job.summary)
            );
            if let Some(by) = &job.summary.cancelled_by {
                println!("cancelled by {by}");
            }
            println!("result   {} ({})", result_word(&job), counts(&job));
            for host in &job.summary.hosts {
                let error = host
                    .error
                    .as_deref()
                    .map(|e| format!(": {}", super::printable(e)))
                    .unwrap_or_default();
                let late = if host.reported_late {
                    "  (reported late: the job had given up on it)"
                } else {
                    ""
                };
                println!(
                    "\n{}  {}{error}  ({} ms){late}",
                    host.minion_id, host.status, host.duration_ms
                );
                for c in &host.containers {
                    let error = c
                        .error
                        .as_deref()
                        .map(|e| format!(": {}", super::printable(e)))
                        .unwrap_or_default();
                    println!(
                        "  {:<20} {:<9} {}{error}",
                        c.name.as_str(),
                        c.action.as_str(),
                        super::printable(&c.image_digest)
                    );
                }
            }
        }
    }
    Ok(())
}

fn started(summary: &JobSummary) -> String {
    super::time_of_ms(summary.started_at_unix_ms)
}

fn took(summary: &JobSummary) -> String {
    let ms = summary
        .finished_at_unix_ms
        .saturating_sub(summary.started_at_unix_ms);
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// `2 changed, 1 failed`.
fn counts(job: &JobJson) -> String {
    job.counts
        .iter()
        .map(|(status, n)| format!("{n} {status}"))
        .collect::<Vec<_>>()
        .join(", ")
}
