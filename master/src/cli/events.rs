//! `brine-master events` (the fleet's events, recent and live) and `brine-master hooks
//! failures` (the deliveries to hooks that failed).

use std::fmt::Write as _;

use anyhow::Context;
use brine_common::fleet_event::{FleetEvent, FleetEventKind, HookFailure};
use brine_proto::pb;
use clap::ValueEnum;

use super::client::ClientArgs;
use super::{printable, time_of_ms};

/// How `events` and `hooks failures` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventsFormat {
    /// A line each, for people.
    Text,
    /// One JSON object per line (JSON Lines), for programs.
    Json,
}

/// Prints the events the master keeps, then, with `follow`, live ones until interrupted.
pub async fn run(
    client: &ClientArgs,
    follow: bool,
    kinds: Vec<String>,
    format: EventsFormat,
) -> anyhow::Result<()> {
    let kinds = kinds
        .iter()
        .map(|kind| {
            brine_proto::fleet_event_kind(kind)
                .map(i32::from)
                .with_context(|| {
                    format!(
                        "{kind:?} is not an event kind; the kinds are {}",
                        brine_proto::watchable_kinds()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut fleet = pb::fleet_service_client::FleetServiceClient::new(client.connect().await?);
    let mut stream = fleet
        .watch(pb::WatchRequest {
            replay_recent: true,
            follow,
            kinds,
        })
        .await
        .map_err(super::status_error)
        .context("watch the fleet's events")?
        .into_inner();
    while let Some(response) = stream
        .message()
        .await
        .map_err(super::status_error)
        .context("read the fleet's events")?
    {
        let event = response
            .event
            .context("the master sent an empty event")
            .and_then(|event| {
                FleetEvent::try_from(event).context("the master sent an invalid event")
            })?;
        println!("{}", render(&event, format)?);
    }
    if follow {
        // Exit code 3, "retry later": a master that stops ends its watchers' streams.
        return Err(super::status_error(tonic::Status::unavailable(
            "the master ended the stream of events (it is stopping)",
        )));
    }
    Ok(())
}

/// One event as one line.
fn render(event: &FleetEvent, format: EventsFormat) -> anyhow::Result<String> {
    Ok(match format {
        EventsFormat::Json => serde_json::to_string(event).context("encode an event")?,
        EventsFormat::Text => format!(
            "{}  {:>5}  {:<13}  {}",
            time_of_ms(event.at_unix_ms),
            match event.sequence {
                0 => "-".to_owned(),
                n => format!("#{n}"),
            },
            event.what.name(),
            describe(&event.what)
        ),
    })
}

/// What an event says, in words; text a host wrote is escaped.
fn describe(what: &FleetEventKind) -> String {
    match what {
        FleetEventKind::HostLinked { minion_id } => format!("{minion_id} linked to this master"),
        FleetEventKind::HostLost { minion_id } => format!("{minion_id} lost its link"),
        FleetEventKind::HostAccepted { minion_id, by } => format!("{minion_id} accepted by {by}"),
        FleetEventKind::HostRejected { minion_id, by } => format!("{minion_id} rejected by {by}"),
        FleetEventKind::HostRevoked { minion_id, by } => format!("{minion_id} revoked by {by}"),
        FleetEventKind::HostDeleted { minion_id, by } => format!("{minion_id} deleted by {by}"),
        FleetEventKind::JobStarted {
            job_id,
            job_type,
            caller,
            targets,
        } => format!(
            "{job_id} {job_type} by {caller} on {} host{}",
            targets.len(),
            if targets.len() == 1 { "" } else { "s" }
        ),
        FleetEventKind::HostReported {
            job_id,
            minion_id,
            status,
            error,
        } => match error {
            Some(error) => format!("{job_id} {minion_id} {status}: {}", printable(error)),
            None => format!("{job_id} {minion_id} {status}"),
        },
        FleetEventKind::JobFinished {
            job_id,
            job_type,
            outcome,
            counts,
            cancelled_by,
            duration_ms,
            ..
        } => {
            let mut line = format!("{job_id} {job_type} {}:", outcome.as_str());
            if counts.is_empty() {
                line.push_str(" no hosts");
            }
            let counts: Vec<String> = counts
                .iter()
                .map(|(status, count)| format!("{count} {status}"))
                .collect();
            let _ = write!(
                line,
                " {} in {:.1}s",
                counts.join(", "),
                *duration_ms as f64 / 1000.0
            );
            if let Some(by) = cancelled_by {
                let _ = write!(line, " (cancelled by {by})");
            }
            line
        }
        FleetEventKind::HostEvent { minion_id, event } => format!(
            "{minion_id} {}: {}",
            event.kind.as_str(),
            printable(&event.message)
        ),
        FleetEventKind::HookFailed {
            hook,
            event_sequence,
            event_kind,
            attempts,
            error,
        } => format!(
            "hook {hook} did not take #{event_sequence} ({event_kind}) {}: {}",
            tries(*attempts),
            printable(error)
        ),
        FleetEventKind::Missed { count } => {
            format!("{count} events missed: this watcher read more slowly than they came")
        }
    }
}

fn tries(attempts: u32) -> String {
    match attempts {
        0 => "(dropped: its queue was full)".to_owned(),
        1 => "after 1 try".to_owned(),
        n => format!("after {n} tries"),
    }
}

/// Prints the failed deliveries to hooks the master keeps, newest first.
pub async fn failures(client: &ClientArgs, format: EventsFormat) -> anyhow::Result<()> {
    let mut fleet = pb::fleet_service_client::FleetServiceClient::new(client.connect().await?);
    let response = fleet
        .list_hook_failures(pb::ListHookFailuresRequest {})
        .await
        .map_err(super::status_error)
        .context("list the failed hook deliveries")?
        .into_inner();
    let failures = response
        .failures
        .into_iter()
        .map(|failure| HookFailure::try_from(failure).context("the master sent an invalid failure"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if failures.is_empty() && format == EventsFormat::Text {
        println!("no failed hook deliveries");
    }
    for failure in failures {
        match format {
            EventsFormat::Json => println!(
                "{}",
                serde_json::to_string(&failure).context("encode a failure")?
            ),
            EventsFormat::Text => println!(
                "{}  {}  #{} ({}) {}: {}",
                time_of_ms(failure.failed_at_unix_ms),
                failure.hook,
                failure.event_sequence,
                failure.event_kind,
                tries(failure.attempts),
                printable(&failure.error)
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use brine_common::host::{HostEvent, HostEventKind};
    use brine_common::names::MinionId;
    use brine_common::outcome::{HostStatus, JobId};

    use super::*;

    fn event(what: FleetEventKind) -> FleetEvent {
        FleetEvent {
            sequence: 4,
            at_unix_ms: 1_700_000_000_000,
            what,
        }
    }

    #[test]
    fn a_line_per_event_with_host_text_escaped() {
        let line = render(
            &event(FleetEventKind::HostReported {
                job_id: JobId::new("j-1").unwrap(),
                minion_id: MinionId::new("web-1").unwrap(),
                status: HostStatus::Failed,
                error: Some("pull failed\n2023-11-14T22:13:20Z  #5  host_linked  forged".into()),
            }),
            EventsFormat::Text,
        )
        .unwrap();
        assert_eq!(
            line,
            "2023-11-14T22:13:20Z     #4  host_reported  j-1 web-1 failed: pull failed\\n\
             2023-11-14T22:13:20Z  #5  host_linked  forged"
        );
        let line = render(
            &event(FleetEventKind::HostEvent {
                minion_id: MinionId::new("web-1").unwrap(),
                event: HostEvent::new(1, HostEventKind::CrashLooping, "web\u{1b}[2J exited"),
            }),
            EventsFormat::Text,
        )
        .unwrap();
        assert!(
            line.ends_with("web-1 crash_looping: web\\u{1b}[2J exited"),
            "{line}"
        );
    }

    #[test]
    fn json_lines_are_the_events_json_form() {
        let line = render(
            &event(FleetEventKind::HostLinked {
                minion_id: MinionId::new("web-1").unwrap(),
            }),
            EventsFormat::Json,
        )
        .unwrap();
        assert_eq!(
            line,
            r#"{"sequence":4,"at_unix_ms":1700000000000,"kind":"host_linked","minion_id":"web-1"}"#
        );
    }
}
