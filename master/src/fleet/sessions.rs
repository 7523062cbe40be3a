//! `ContainerLogs` and `Exec`: a role's containers' logs, or a command run in them, on every
//! host that runs the role, streamed to the caller as they come. Each call is a job in the
//! history (type `logs` or `exec`) with its caller, what was asked and each host's outcome.
//!
//! A call opens one session per host and container (`Command::StartSession` down the host's
//! link), routed back by session id (`crate::sessions`). A host that is not linked here ends at
//! once, reported, not skipped; one that does not take its session within [`ACCEPT_TIMEOUT`]
//! (a minion older than this master ignores the request) is reported as not answering. The
//! caller going away stops every session on the hosts.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use brine_common::limits::MAX_OUTPUT_CHUNK;
use brine_common::names::{ContainerName, MinionId};
use brine_common::outcome::{
    ContainerAction, ContainerResult, HostReport, HostStatus, JobId, JobSummary,
};
use brine_common::session::{
    SessionEnd, SessionEvent, SessionId, SessionKind, SessionLimits, SessionRequest, SessionsEvent,
    SessionsRequest,
};
use brine_proto::errors::{failure, invalid};
use brine_proto::pb;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use super::job_options::parse_target;
use super::{FleetService, store_failure};
use crate::auth::Caller;
use crate::highstate::{HighstateError, MIN_FREE_BYTES, is_targeted, new_job_id};
use crate::job::JobType;
use crate::link::{Command, CommandSender};
use crate::sessions::targets::{self, TargetsError};
use crate::sessions::{OpenSessions, Routed};
use crate::state::{Master, now_unix_ms};
use crate::store::{Approval, JobRecord};

/// A host has this long to take a session before it is reported as not answering.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
/// A session with an end gets this long past it to report before the master gives up on it.
const END_GRACE: Duration = Duration::from_secs(5);
/// How long a log without `follow` may take to read.
const LOGS_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of a command's output kept per container.
pub const EXEC_MAX_BYTES: u64 = 1024 * 1024;
/// Bytes of a container's log read without `follow`.
pub const LOGS_MAX_BYTES: u64 = 4 * 1024 * 1024;
/// A followed log's steady rate per container, and its burst (the tail it starts with).
pub const FOLLOW_BYTES_PER_SECOND: u64 = 64 * 1024;
pub const FOLLOW_BURST_BYTES: u64 = 512 * 1024;
/// Messages waiting for the caller's driver, and for the caller.
const CALLER_QUEUE: usize = 256;

type SessionStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub(super) async fn container_logs(
    fleet: &FleetService,
    request: Request<pb::ContainerLogsRequest>,
) -> Result<Response<SessionStream<pb::ContainerLogsResponse>>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    let asked = SessionsRequest::try_from(request.into_inner())
        .map_err(|err| invalid(err.field, err.message))?;
    let events = start(fleet.master.clone(), caller, asked).await?;
    Ok(Response::new(Box::pin(
        ReceiverStream::new(events).map(|event| Ok(pb::ContainerLogsResponse::from(event))),
    )))
}

pub(super) async fn exec(
    fleet: &FleetService,
    request: Request<pb::ExecRequest>,
) -> Result<Response<SessionStream<pb::ExecResponse>>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    let asked = SessionsRequest::try_from(request.into_inner())
        .map_err(|err| invalid(err.field, err.message))?;
    let events = start(fleet.master.clone(), caller, asked).await?;
    Ok(Response::new(Box::pin(
        ReceiverStream::new(events).map(|event| Ok(pb::ExecResponse::from(event))),
    )))
}

/// One host's container in a call.
struct Session {
    id: SessionId,
    host: MinionId,
    container: ContainerName,
    link: CommandSender,
    accepted: bool,
    received_bytes: u64,
    /// How it ended, with the verdict for its host; `None` while it runs.
    end: Option<(HostStatus, SessionEnd)>,
}

/// A host reached for but not linked here, and why.
struct Unreached {
    host: MinionId,
    why: String,
}

/// Checks the call, records it as a running job (a master alone with its store; one sharing
/// it records the job when it ends, as its running jobs are held under a lease), opens the
/// sessions and leaves them to a driver task; the caller's events.
async fn start(
    master: Arc<Master>,
    caller: String,
    asked: SessionsRequest,
) -> Result<mpsc::Receiver<SessionsEvent>, Status> {
    let target = parse_target("target", &asked.target)?;
    let available_bytes = master
        .store
        .available_bytes()
        .await
        .map_err(store_failure)?;
    if available_bytes < MIN_FREE_BYTES {
        return Err(HighstateError::DiskFull { available_bytes }.into());
    }
    let roles = crate::roles::load(&master)
        .await
        .map_err(|err| Status::from(HighstateError::from(err)))?;
    let hosts: Vec<MinionId> = master
        .store
        .minions()
        .await
        .map_err(store_failure)?
        .into_iter()
        .filter(|m| m.approval == Approval::Accepted)
        .filter(|m| target.as_ref().is_none_or(|t| is_targeted(t, m, &roles)))
        .map(|m| m.id)
        .collect();
    let reached =
        targets::resolve(&roles, hosts, &asked.role, asked.container.as_ref()).map_err(|err| {
            match err {
                TargetsError::UnknownRole(_) => invalid("role", err),
                TargetsError::UnknownContainer { .. } => invalid("container", err),
                TargetsError::NoHosts(_) => failure(
                    Code::NotFound,
                    pb::ErrorReason::NoTargets,
                    err.to_string(),
                    [],
                ),
            }
        })?;

    let job_id = new_job_id();
    let mut sessions = vec![];
    let mut unreached = vec![];
    for (host, containers) in reached {
        let Some(link) = master.links.get(&host) else {
            let why = unreachable_reason(&master, &host);
            unreached.push(Unreached { host, why });
            continue;
        };
        for container in containers {
            let id = SessionId::new(format!("{job_id}-{}", sessions.len()))
                .map_err(|err| Status::internal(err.to_string()))?;
            sessions.push(Session {
                id,
                host: host.clone(),
                container,
                link: link.commands.clone(),
                accepted: false,
                received_bytes: 0,
                end: None,
            });
        }
    }
    let (routed, routed_inbox) = mpsc::channel(CALLER_QUEUE);
    let pairs: Vec<_> = sessions
        .iter()
        .map(|s| (s.id.clone(), s.host.clone()))
        .collect();
    let open = master.sessions.open(&pairs, &routed).map_err(|busy| {
        failure(
            Code::ResourceExhausted,
            pb::ErrorReason::Throttled,
            busy.to_string(),
            [],
        )
    })?;
    let job_type = match asked.kind {
        SessionKind::Logs(_) => JobType::Logs,
        SessionKind::Exec(_) => JobType::Exec,
    };
    let call = Call {
        master,
        caller,
        asked,
        job_id,
        job_type,
        started_at_unix_ms: now_unix_ms(),
    };
    // On record before anything is sent to a host.
    if !call.master.config.store_is_shared() {
        let all = unreached.iter().map(|u| u.host.clone());
        let targets = sessions.iter().map(|s| s.host.clone()).chain(all).collect();
        call.master
            .store
            .record_job_progress(call.record(targets, vec![], true))
            .await
            .map_err(store_failure)?;
    }
    tracing::info!(
        caller = %call.caller,
        job.id = %call.job_id,
        kind = job_type.as_str(),
        role = %call.asked.role,
        sessions = sessions.len(),
        unreached = unreached.len(),
        "sessions requested"
    );
    let (events, caller_inbox) = mpsc::channel(CALLER_QUEUE);
    tokio::spawn(call.drive(sessions, unreached, open, routed_inbox, events));
    Ok(caller_inbox)
}

/// Why `host`, which runs the role, is not reached.
fn unreachable_reason(master: &Master, host: &MinionId) -> String {
    match crate::relay::link_holder(master, host) {
        Some(other) => format!(
            "linked to master {other}, not this one: logs and exec reach only the hosts linked \
             to the master they are asked of; ask {other}"
        ),
        None => "unreachable: not linked to the master".to_owned(),
    }
}

/// The limits of a session of `kind`, and how long it may last (`None`: until stopped).
/// Why a session that outlived the caller's timeout `lasts` ended, as the caller is told.
fn timed_out(lasts: Option<Duration>) -> String {
    format!(
        "timed out after {}; the command may still run in the container",
        humantime::format_duration(lasts.unwrap_or_default())
    )
}

fn limits_of(kind: &SessionKind, timeout_ms: u64) -> (SessionLimits, Option<Duration>) {
    match kind {
        SessionKind::Exec(_) => (
            SessionLimits {
                max_bytes: EXEC_MAX_BYTES,
                bytes_per_second: 0,
                burst_bytes: 0,
            },
            Some(Duration::from_millis(timeout_ms)),
        ),
        SessionKind::Logs(options) if options.follow => (
            SessionLimits {
                max_bytes: 0,
                bytes_per_second: FOLLOW_BYTES_PER_SECOND,
                burst_bytes: FOLLOW_BURST_BYTES,
            },
            None,
        ),
        SessionKind::Logs(_) => (
            SessionLimits {
                max_bytes: LOGS_MAX_BYTES,
                bytes_per_second: 0,
                burst_bytes: 0,
            },
            Some(LOGS_TIMEOUT),
        ),
    }
}

/// A call under way.
struct Call {
    master: Arc<Master>,
    caller: String,
    asked: SessionsRequest,
    job_id: JobId,
    job_type: JobType,
    started_at_unix_ms: i64,
}

impl Call {
    /// Runs the call's sessions to their ends, streaming to `events` while the caller is there,
    /// and records the job.
    async fn drive(
        self,
        mut sessions: Vec<Session>,
        unreached: Vec<Unreached>,
        open: OpenSessions,
        mut routed: mpsc::Receiver<Routed>,
        events: mpsc::Sender<SessionsEvent>,
    ) {
        let begun = Instant::now();
        let mut caller_here = true;
        let emit = async |event: SessionsEvent, caller_here: &mut bool| {
            if *caller_here && events.send(event).await.is_err() {
                *caller_here = false;
            }
        };
        let targets: Vec<_> = sessions
            .iter()
            .map(|s| (s.host.clone(), Some(s.container.clone())))
            .chain(unreached.iter().map(|u| (u.host.clone(), None)))
            .collect();
        let started = SessionsEvent::Started {
            job_id: self.job_id.clone(),
            targets,
        };
        emit(started, &mut caller_here).await;
        for unreached in &unreached {
            let ended = SessionsEvent::Ended {
                minion_id: unreached.host.clone(),
                container: None,
                end: SessionEnd {
                    error: Some(unreached.why.clone()),
                    ..SessionEnd::default()
                },
            };
            emit(ended, &mut caller_here).await;
        }

        let (limits, lasts) = limits_of(&self.asked.kind, self.asked.timeout_ms);
        let ends_at_unix_ms = lasts.map(|lasts| {
            now_unix_ms().saturating_add(i64::try_from(lasts.as_millis()).unwrap_or(i64::MAX))
        });
        for session in &mut sessions {
            let request = SessionRequest {
                session_id: session.id.clone(),
                role: self.asked.role.clone(),
                container: session.container.clone(),
                kind: self.asked.kind.clone(),
                limits,
                ends_at_unix_ms,
            };
            if session
                .link
                .try_send(Command::StartSession(Box::new(request)))
                .is_err()
            {
                let end = SessionEnd {
                    error: Some("unreachable: its link is busy or closing".into()),
                    ..SessionEnd::default()
                };
                session.end = Some((HostStatus::Unreachable, end));
            }
        }
        for session in sessions.iter().filter(|s| s.end.is_some()) {
            emit(ended_event(session), &mut caller_here).await;
        }

        let accept_by = begun + ACCEPT_TIMEOUT;
        let end_by = lasts.map(|lasts| begun + lasts + END_GRACE);
        while caller_here && sessions.iter().any(|s| s.end.is_none()) {
            let waiting_to_accept = sessions.iter().any(|s| s.end.is_none() && !s.accepted);
            let next_deadline = match (waiting_to_accept, end_by) {
                (true, Some(end_by)) => Some(accept_by.min(end_by)),
                (true, None) => Some(accept_by),
                (false, end_by) => end_by,
            };
            let deadline = async {
                match next_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                message = routed.recv() => {
                    // The router holds a sender while the sessions are open.
                    let Some((id, event)) = message else { break };
                    let Some(session) = sessions.iter_mut().find(|s| s.id == id) else {
                        continue;
                    };
                    if let Some(event) = self.take(session, event, &limits) {
                        emit(event, &mut caller_here).await;
                    }
                }
                () = events.closed() => caller_here = false,
                () = deadline => {
                    let now = Instant::now();
                    for session in sessions.iter_mut().filter(|s| s.end.is_none()) {
                        let why = if !session.accepted && now >= accept_by {
                            format!(
                                "did not answer within {}s: its brine-minion may be older than \
                                 this master (logs and exec need one that knows them)",
                                ACCEPT_TIMEOUT.as_secs()
                            )
                        } else if end_by.is_some_and(|end_by| now >= end_by) {
                            timed_out(lasts)
                        } else {
                            continue;
                        };
                        stop(session);
                        let end = SessionEnd { error: Some(why), ..SessionEnd::default() };
                        session.end = Some((HostStatus::TimedOut, end));
                        emit(ended_event(session), &mut caller_here).await;
                    }
                }
            }
        }
        if !caller_here {
            // A followed log ends this way, as a caller means it to; anything else was cut short.
            let follows = matches!(&self.asked.kind, SessionKind::Logs(o) if o.follow);
            for session in sessions.iter_mut().filter(|s| s.end.is_none()) {
                stop(session);
                let end = if follows {
                    (HostStatus::Unchanged, SessionEnd::default())
                } else {
                    let why = "stopped: the caller went away before it ended";
                    let end = SessionEnd {
                        error: Some(why.into()),
                        ..SessionEnd::default()
                    };
                    (HostStatus::Failed, end)
                };
                session.end = Some(end);
            }
        }
        drop(open);
        let reports = host_reports(&self, &sessions, &unreached, begun.elapsed());
        let targets = reports.iter().map(|r| r.minion_id.clone()).collect();
        let record = self.record(targets, reports, false);
        match self
            .master
            .store
            .record_job(record, self.master.config.job_retention)
            .await
        {
            Ok(()) => {
                tracing::info!(job.id = %self.job_id, kind = self.job_type.as_str(), "sessions ended")
            }
            Err(err) => {
                tracing::error!(job.id = %self.job_id, "cannot record the end of the sessions: {err}")
            }
        }
    }

    /// Takes what a host said about `session`; what to tell the caller, if anything.
    fn take(
        &self,
        session: &mut Session,
        event: SessionEvent,
        limits: &SessionLimits,
    ) -> Option<SessionsEvent> {
        if session.end.is_some() {
            return None;
        }
        match event {
            SessionEvent::Accepted => {
                session.accepted = true;
                None
            }
            SessionEvent::Output {
                stream,
                data,
                dropped_bytes,
            } => {
                session.accepted = true;
                session.received_bytes = session
                    .received_bytes
                    .saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
                // A host that ignores its cap is cut off: the cap holds where output arrives.
                let allowed = u64::try_from(MAX_OUTPUT_CHUNK)
                    .unwrap_or(u64::MAX)
                    .saturating_add(limits.max_bytes);
                if limits.max_bytes > 0 && session.received_bytes > allowed {
                    tracing::warn!(minion.id = %session.host, job.id = %self.job_id, "stopped a session whose host sent over its cap");
                    stop(session);
                    let end = SessionEnd {
                        error: Some("the host sent more output than its cap".into()),
                        truncated: true,
                        ..SessionEnd::default()
                    };
                    session.end = Some((HostStatus::Failed, end));
                    return Some(ended_event(session));
                }
                Some(SessionsEvent::Output {
                    minion_id: session.host.clone(),
                    container: session.container.clone(),
                    stream,
                    data,
                    dropped_bytes,
                })
            }
            SessionEvent::Ended(end) if end.timed_out => {
                // The host kept the end time the master gave it; the caller's timeout is here.
                let (_, lasts) = limits_of(&self.asked.kind, self.asked.timeout_ms);
                let end = SessionEnd {
                    error: Some(timed_out(lasts)),
                    ..end
                };
                session.end = Some((HostStatus::TimedOut, end));
                Some(ended_event(session))
            }
            SessionEvent::Ended(end) => {
                let failed = end.error.is_some() || end.exit_code.is_some_and(|code| code != 0);
                let status = if failed {
                    HostStatus::Failed
                } else {
                    HostStatus::Unchanged
                };
                session.end = Some((status, end));
                Some(ended_event(session))
            }
        }
    }

    /// The call's job record: running with no reports, or finished with `reports`.
    fn record(&self, targets: Vec<MinionId>, reports: Vec<HostReport>, running: bool) -> JobRecord {
        JobRecord {
            summary: JobSummary {
                job_id: self.job_id.clone(),
                hosts: reports,
                started_at_unix_ms: self.started_at_unix_ms,
                finished_at_unix_ms: if running { 0 } else { now_unix_ms() },
                resolve_ms: 0,
                cancelled_by: None,
            },
            target: self.asked.target.clone(),
            caller: self.caller.clone(),
            plan: false,
            running,
            targets,
            request: None,
            master: Some(self.master.config.name.clone()),
            lease: None,
            kind: Some(self.job_type),
            command: Some(self.asked.describe()),
        }
    }
}

/// Tells `session`'s host to stop it; a link too busy to take that ends it with the link.
fn stop(session: &Session) {
    let _ = session
        .link
        .try_send(Command::StopSession(session.id.clone()));
}

fn ended_event(session: &Session) -> SessionsEvent {
    SessionsEvent::Ended {
        minion_id: session.host.clone(),
        container: Some(session.container.clone()),
        end: session
            .end
            .as_ref()
            .map(|(_, end)| end.clone())
            .unwrap_or_default(),
    }
}

/// Each host's report, sorted by host: its containers' outcomes (a command's exit status, an
/// error), failed if any failed; a host not reached is unreachable.
fn host_reports(
    call: &Call,
    sessions: &[Session],
    unreached: &[Unreached],
    took: Duration,
) -> Vec<HostReport> {
    let duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    let mut reports: BTreeMap<MinionId, HostReport> = BTreeMap::new();
    for unreached in unreached {
        reports.insert(
            unreached.host.clone(),
            HostReport {
                minion_id: unreached.host.clone(),
                status: HostStatus::Unreachable,
                containers: vec![],
                error: Some(unreached.why.clone()),
                duration_ms,
                timings: Default::default(),
                reported_late: false,
            },
        );
    }
    for session in sessions {
        let (status, end) = session
            .end
            .clone()
            .unwrap_or((HostStatus::Unchanged, SessionEnd::default()));
        let outcome = describe_end(&end);
        let report = reports
            .entry(session.host.clone())
            .or_insert_with(|| HostReport {
                minion_id: session.host.clone(),
                status: HostStatus::Unchanged,
                containers: vec![],
                error: None,
                duration_ms,
                timings: Default::default(),
                reported_late: false,
            });
        if report.status == HostStatus::Unchanged && status != HostStatus::Unchanged {
            report.status = status;
            report.error = outcome
                .clone()
                .map(|outcome| format!("{}: {outcome}", session.container));
        }
        let failed = status != HostStatus::Unchanged;
        report.containers.push(ContainerResult {
            name: session.container.clone(),
            role: Some(call.asked.role.clone()),
            action: if failed {
                ContainerAction::Failed
            } else {
                ContainerAction::Kept
            },
            image: String::new(),
            image_digest: String::new(),
            error: outcome,
            previous_restored: false,
            needs_pull: false,
        });
    }
    reports.into_values().collect()
}

/// A session's end in words for the record: `exit 3`, the error, and whether output was cut.
fn describe_end(end: &SessionEnd) -> Option<String> {
    let mut parts = vec![];
    if let Some(code) = end.exit_code {
        parts.push(format!("exit {code}"));
    }
    if let Some(error) = &end.error {
        parts.push(error.clone());
    }
    if end.truncated {
        parts.push("output over the cap left out".to_owned());
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}
