//! The minion links: one `MinionLinkService.Connect` stream per connected minion, and renewals.
//!
//! Which minion is linked and which job gets what a minion sends are kept in `registry.rs`
//! ([`Links`], [`JobRouter`]). Each stream costs one task (its inbound loop) and two bounded
//! channels; nothing is per-minion threads.

use std::pin::Pin;
use std::time::Duration;

use brine_common::fleet_event::FleetEventKind;
use brine_common::host::{AgentVersion, Facts, HostEvent, RunningContainer};
use brine_common::limits::MAX_CONTAINERS;
use brine_common::names::MinionId;
use brine_common::outcome::{HostReport, JobId, JobResult};
use brine_common::progress::Progress;
use brine_common::session::SessionMessage;
use brine_proto::pb::connect_request::Kind;
use brine_proto::{pb, time};
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Caller;
use crate::state::{Master, now_unix_ms};
use crate::store::{Approval, CertificateCheck, HostAnswer, HostHello, Renewal};

#[cfg(test)]
mod tests;

/// How long a minion has to say hello after it connects.
const HELLO_TIMEOUT: Duration = Duration::from_secs(15);

pub mod admission;
mod registry;

pub use registry::{Cancel, Command, CommandSender, JobEvent, JobRouter, LinkHandle, Links};

type OutboundStream = Pin<Box<dyn Stream<Item = Result<pb::ConnectResponse, Status>> + Send>>;

/// The `MinionLink` service.
pub struct MinionLinkService {
    pub master: std::sync::Arc<Master>,
}

#[tonic::async_trait]
impl pb::minion_link_service_server::MinionLinkService for MinionLinkService {
    type ConnectStream = OutboundStream;

    async fn connect(
        &self,
        request: Request<Streaming<pb::ConnectRequest>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let caller = Caller::of(&request)?.clone();
        let identity = caller.identity()?;
        // A master sharing a store serves hosts only while it holds its lease: cut off from the
        // store, it could neither run their jobs nor see other masters' changes to them.
        if self.master.config.store_is_shared() && self.master.fence.current().is_none() {
            return Err(Status::unavailable(
                "this master is cut off from the fleet's store; link to another master",
            ));
        }
        let minion_id = MinionId::new(identity.name.clone()).map_err(|err| {
            Status::permission_denied(format!("the certificate's name is not a minion id: {err}"))
        })?;
        let mut inbound = request.into_inner();

        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(pb::ConnectRequest {
                kind: Some(Kind::Hello(hello)),
            }))) => hello,
            Ok(Ok(_)) => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ));
            }
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no hello within 15 s")),
        };
        if hello.running.len() > MAX_CONTAINERS {
            return Err(Status::invalid_argument(format!(
                "hello.running: {} containers; at most {MAX_CONTAINERS} are accepted",
                hello.running.len()
            )));
        }
        let running = hello
            .running
            .into_iter()
            .map(RunningContainer::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| Status::invalid_argument(format!("hello.running: {err}")))?;
        let facts = Facts::try_from(hello.facts.unwrap_or_default())
            .map_err(|err| Status::invalid_argument(format!("hello.facts.{err}")))?;
        let version = AgentVersion::parse(&hello.version)
            .map_err(|err| Status::invalid_argument(format!("hello.version: {err}")))?;
        let certificate = caller.certificate_sha256.clone().unwrap_or_default();
        let now = now_unix_ms();
        // A host's clock, however absurd, never costs it its link: a reading beyond what
        // milliseconds hold counts as the farthest they do.
        let theirs = time::unix_ms("hello.now", hello.now).unwrap_or_else(|_| {
            hello
                .now
                .map(|at| if at.seconds < 0 { i64::MIN } else { i64::MAX })
        });
        let clock_offset_ms = match theirs {
            None => 0,
            Some(theirs) => theirs.saturating_sub(now),
        };
        if clock_offset_ms.unsigned_abs() > brine_common::limits::CLOCK_SKEW_WARNING_MS {
            let direction = if clock_offset_ms > 0 {
                "ahead of"
            } else {
                "behind"
            };
            tracing::warn!(
                minion.id = %minion_id,
                "its clock is {} s {direction} the master's; commands are timed by the master's clock",
                clock_offset_ms.unsigned_abs() / 1000
            );
        }
        let check = self
            .master
            .store
            .record_hello(
                minion_id.clone(),
                certificate.clone(),
                HostHello {
                    facts,
                    running,
                    clock_offset_ms,
                    at_unix_ms: now,
                },
            )
            .await
            .map_err(|err| {
                tracing::error!(minion.id = %minion_id, "cannot record hello: {err}");
                Status::unavailable("the master cannot record the connection")
            })?;
        if let Some(reason) = refusal(check) {
            tracing::warn!(minion.id = %minion_id, peer = ?caller.peer, reason, "refused a link");
            return Err(Status::permission_denied(format!(
                "{minion_id} {reason}; join it again with a token"
            )));
        }

        // Tests widen the gap between the check above and the registration below here, to show
        // that a revocation falling into it is honoured.
        #[cfg(feature = "failpoints")]
        if let Some(Some(ms)) = fail::eval("link::before_register", |delay| {
            delay.and_then(|ms| ms.parse::<u64>().ok())
        }) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let (session, commands, stop) = self.master.links.register(&minion_id, certificate.clone());
        // A revocation (or replacement, or deletion) between the check above and the
        // registration would have found no link to drop; looking again after registering
        // closes that gap, as every such change writes the store before it drops links.
        let still = self
            .master
            .store
            .certificate_check(minion_id.clone(), certificate)
            .await;
        if let Some(reason) = match still {
            Ok(check) => refusal(check),
            Err(err) => {
                tracing::error!(minion.id = %minion_id, "cannot check the connection: {err}");
                Some("could not be checked")
            }
        } {
            self.master.links.unregister(&minion_id, session);
            tracing::warn!(minion.id = %minion_id, peer = ?caller.peer, reason, "refused a link");
            return Err(Status::permission_denied(format!(
                "{minion_id} {reason}; join it again with a token"
            )));
        }
        tracing::info!(minion.id = %minion_id, peer = ?caller.peer, %version, "minion connected");
        self.master.events.publish(FleetEventKind::HostLinked {
            minion_id: minion_id.clone(),
        });
        if self.master.config.store_is_shared()
            && let Err(err) = self
                .master
                .store
                .record_link(minion_id.clone(), self.master.config.name.clone())
                .await
        {
            // Other masters' jobs do not reach the host until it links again.
            tracing::warn!(minion.id = %minion_id, "cannot record the link for the other masters: {err}");
        }
        tokio::spawn(inbound_loop(
            self.master.clone(),
            minion_id.clone(),
            session,
            inbound,
            stop.clone(),
        ));

        // The master's clock goes first: the minion times commands by it.
        let clock = pb::ConnectResponse {
            kind: Some(pb::connect_response::Kind::Clock(pb::Clock {
                now: Some(time::timestamp(now_unix_ms())),
            })),
        };
        // Then, when the fleet has several masters, where they all are (and again at every
        // change, through the commands).
        let master = self.master.clone();
        let masters = self.master.peers.addresses();
        let masters = (!masters.is_empty()).then(|| to_wire(&minion_id, Command::Masters(masters)));
        let outbound = futures::stream::iter([Some(clock), masters].into_iter().flatten())
            .chain(
                ReceiverStream::new(commands).then(move |command: Box<Command>| {
                    let (master, minion_id) = (master.clone(), minion_id.clone());
                    // Boxed, so an idle link's stream holds a pointer, not this future's state.
                    Box::pin(async move {
                        let command = with_secret_values(&master, &minion_id, *command).await;
                        to_wire(&minion_id, command)
                    })
                }),
            )
            .map(Ok)
            .take_until(stop.cancelled_owned());
        Ok(Response::new(Box::pin(outbound)))
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let minion_id = MinionId::new(caller.identity()?.name.clone()).map_err(|err| {
            Status::permission_denied(format!("the certificate's name is not a minion id: {err}"))
        })?;
        let lifetime = self.master.config.minion_certificate_lifetime;
        let renewed = self
            .master
            .ca
            .sign_minion_csr(&request.get_ref().csr_pem, &minion_id, lifetime)
            .map_err(|err| Status::invalid_argument(format!("csr_pem: {err}")))?;
        let renewal = self
            .master
            .store
            .renew_certificate(
                minion_id.clone(),
                caller.certificate_sha256.clone().unwrap_or_default(),
                renewed.signed,
                renewed.pem.clone(),
            )
            .await
            .map_err(|err| {
                tracing::error!(minion.id = %minion_id, "cannot record a renewal: {err}");
                Status::unavailable("the master cannot record the renewal")
            })?;
        let certificate_pem = match renewal {
            Renewal::Issued => {
                tracing::info!(minion.id = %minion_id, peer = ?caller.peer, "minion certificate renewed");
                renewed.pem
            }
            Renewal::Reissued(pem) => {
                tracing::info!(minion.id = %minion_id, peer = ?caller.peer, "sent the certificate of the last renewal again");
                pem
            }
            Renewal::Refused(check) => {
                let reason = refusal(check).unwrap_or("was refused");
                tracing::warn!(minion.id = %minion_id, peer = ?caller.peer, reason, "refused a renewal");
                return Err(Status::permission_denied(format!(
                    "{minion_id} {reason}; join it again with a token"
                )));
            }
        };
        Ok(Response::new(pb::RenewResponse { certificate_pem }))
    }
}

/// Keeps what a host did between jobs in its history.
async fn record_event(master: &Master, minion_id: &MinionId, event: pb::HostEvent) {
    let event = match HostEvent::try_from(event) {
        Ok(event) => event,
        Err(err) => {
            tracing::warn!(minion.id = %minion_id, "ignored invalid event: {err}");
            return;
        }
    };
    // The message is the host's text: kept in its history, not written to the master's log.
    tracing::info!(minion.id = %minion_id, kind = event.kind.as_str(), "host event");
    master.metrics.host_event(event.kind);
    master.events.publish(FleetEventKind::HostEvent {
        minion_id: minion_id.clone(),
        event: event.clone(),
    });
    if let Err(err) = master
        .store
        .record_host_event(minion_id.clone(), event)
        .await
    {
        tracing::error!(minion.id = %minion_id, "cannot record a host event: {err}");
    }
}

/// Why a host's certificate is refused, if it is.
fn refusal(check: CertificateCheck) -> Option<&'static str> {
    match check {
        CertificateCheck::Recorded => None,
        CertificateCheck::NotEnrolled => Some("is not enrolled on this master"),
        CertificateCheck::NotAdmitted(Approval::Pending) => {
            Some("waits for approval; run `brine-master minions accept` for it on the master")
        }
        CertificateCheck::NotAdmitted(Approval::Rejected) => Some("was rejected on this master"),
        CertificateCheck::NotAdmitted(Approval::Revoked | Approval::Accepted) => {
            Some("was revoked on this master")
        }
        CertificateCheck::CertificateReplaced => {
            Some("has a newer certificate (it joined again or renewed); this one is refused")
        }
    }
}

/// Attaches to a command the values of the secrets its containers use. Only here, on the way to
/// the host that runs those containers: no record, relayed command or job plan ever holds a
/// value, and a plan (which creates nothing) is sent none. A value that cannot be had is left
/// out, and the host refuses the command for it.
async fn with_secret_values(
    master: &Master,
    minion_id: &MinionId,
    mut command: Command,
) -> Command {
    if let Command::Apply {
        job_id,
        desired,
        plan: false,
        ..
    } = &mut command
        && desired.secret_refs().next().is_some()
    {
        let attached = match master
            .vault
            .values_for(master.store.as_ref(), desired)
            .await
        {
            Ok(values) => desired
                .attach_secret_values(&values)
                .map_err(|missing| format!("no value for secret {missing}")),
            Err(err) => Err(err.to_string()),
        };
        if let Err(err) = attached {
            tracing::error!(
                minion.id = %minion_id,
                job.id = %job_id,
                "cannot send the secrets this host's containers use, so it will refuse the job: {err}"
            );
        }
    }
    command
}

fn to_wire(minion_id: &MinionId, command: Command) -> pb::ConnectResponse {
    let kind = match command {
        Command::Apply {
            job_id,
            expires_at_unix_ms,
            desired,
            plan,
        } => pb::connect_response::Kind::Apply(pb::Apply {
            job_id: job_id.into(),
            minion_id: minion_id.to_string(),
            expires_at: Some(time::timestamp(expires_at_unix_ms)),
            secrets: desired
                .secret_values()
                .into_iter()
                .map(|(name, value)| (name.into(), value.into()))
                .collect(),
            desired: Some(desired.into()),
            plan,
        }),
        Command::Prefetch {
            job_id,
            expires_at_unix_ms,
            images,
        } => pb::connect_response::Kind::Prefetch(pb::Prefetch {
            job_id: job_id.into(),
            minion_id: minion_id.to_string(),
            expires_at: Some(time::timestamp(expires_at_unix_ms)),
            images: images.into_iter().map(|image| image.to_string()).collect(),
        }),
        Command::Masters(addresses) => {
            pb::connect_response::Kind::Masters(pb::Masters { addresses })
        }
        Command::StartSession(request) => {
            let mut start = pb::StartSession::from(*request);
            start.minion_id = minion_id.to_string();
            pb::connect_response::Kind::StartSession(start)
        }
        Command::StopSession(session_id) => {
            pb::connect_response::Kind::StopSession(pb::StopSession {
                session_id: session_id.to_string(),
            })
        }
    };
    pb::ConnectResponse { kind: Some(kind) }
}

/// A minion reports a job's steps and throttled pull progress; far more than this in one
/// window means a broken or hostile peer, whose link is closed.
const MAX_MESSAGES_PER_WINDOW: u32 = 2_000;
const MESSAGE_WINDOW: Duration = Duration::from_secs(10);

/// Counts a link's messages in fixed windows.
#[derive(Debug, Default)]
struct MessageRate {
    window_start: Option<tokio::time::Instant>,
    count: u32,
}

impl MessageRate {
    fn allow(&mut self, now: tokio::time::Instant) -> bool {
        match self.window_start {
            Some(start) if now.duration_since(start) < MESSAGE_WINDOW => {}
            _ => {
                self.window_start = Some(now);
                self.count = 0;
            }
        }
        self.count = self.count.saturating_add(1);
        self.count <= MAX_MESSAGES_PER_WINDOW
    }
}

/// Reads what one minion sends until its stream ends, then tells the jobs it was part of.
async fn inbound_loop(
    master: std::sync::Arc<Master>,
    minion_id: MinionId,
    session: u64,
    mut inbound: Streaming<pb::ConnectRequest>,
    stop: CancellationToken,
) {
    let mut rate = MessageRate::default();
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            message = inbound.message() => message,
        };
        match message {
            Ok(Some(_)) if !rate.allow(tokio::time::Instant::now()) => {
                tracing::warn!(minion.id = %minion_id, "closed a link that sent more than {MAX_MESSAGES_PER_WINDOW} messages in {MESSAGE_WINDOW:?}");
                break;
            }
            Ok(Some(message)) => route(&master, &minion_id, message).await,
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(minion.id = %minion_id, "link error: {status}");
                break;
            }
        }
    }
    stop.cancel();
    // False when a newer link of the host took this one's place: the host is not lost.
    if master.links.unregister(&minion_id, session) {
        master.events.publish(FleetEventKind::HostLost {
            minion_id: minion_id.clone(),
        });
        if master.config.store_is_shared()
            && let Err(err) = master
                .store
                .forget_link(minion_id.clone(), master.config.name.clone())
                .await
        {
            tracing::warn!(minion.id = %minion_id, "cannot record the end of the link for the other masters: {err}");
        }
    }
    master.sessions.link_lost(&minion_id);
    for job in master.router.all() {
        // A job that already finished has dropped its receiver; that is fine.
        let _ = job.send(JobEvent::LinkLost(minion_id.clone())).await;
    }
    tracing::info!(minion.id = %minion_id, "minion disconnected");
}

async fn route(master: &Master, minion_id: &MinionId, message: pb::ConnectRequest) {
    let (job_id, event) = match message.kind {
        Some(Kind::Event(event)) => {
            record_event(master, minion_id, event).await;
            return;
        }
        Some(Kind::Progress(pb::JobProgress {
            job_id,
            progress: Some(progress),
        })) => match Progress::try_from(progress) {
            Ok(progress) => (job_id, JobEvent::Progress(minion_id.clone(), progress)),
            Err(err) => {
                tracing::warn!(minion.id = %minion_id, "ignored invalid progress: {err}");
                return;
            }
        },
        Some(Kind::Result(result)) => match JobResult::try_from(result) {
            Ok(result) => (
                result.job_id.to_string(),
                JobEvent::Result(minion_id.clone(), result),
            ),
            Err(err) => {
                tracing::warn!(minion.id = %minion_id, "ignored invalid job result: {err}");
                return;
            }
        },
        Some(Kind::SessionAccepted(accepted)) => {
            route_session(master, minion_id, SessionMessage::try_from(accepted));
            return;
        }
        Some(Kind::SessionOutput(output)) => {
            route_session(master, minion_id, SessionMessage::try_from(output));
            return;
        }
        Some(Kind::SessionEnded(ended)) => {
            route_session(master, minion_id, SessionMessage::try_from(ended));
            return;
        }
        Some(Kind::Prefetched(pb::Prefetched { job_id, error })) => {
            // The text is the host's own: shown in its report, bounded like any error there.
            let outcome = if error.is_empty() {
                Ok(())
            } else {
                Err(brine_common::limits::truncate(
                    error,
                    brine_common::limits::MAX_ERROR_TEXT,
                ))
            };
            (job_id, JobEvent::Prefetched(minion_id.clone(), outcome))
        }
        other => {
            let what = match other {
                Some(Kind::Hello(_)) => "a second hello",
                Some(Kind::Progress(_)) => "progress without details",
                _ => "an empty message",
            };
            tracing::warn!(minion.id = %minion_id, "ignored {what}");
            return;
        }
    };
    let Ok(job_id) = JobId::new(job_id) else {
        tracing::warn!(minion.id = %minion_id, "ignored a message with an invalid job id");
        return;
    };
    let Some(job) = master.router.sender_of(&job_id) else {
        // Not a job of this master: another master sharing the store may run it.
        let answer = match event {
            JobEvent::Result(_, result) => HostAnswer::Result(result),
            JobEvent::Progress(_, progress) => HostAnswer::Progress(progress),
            JobEvent::Prefetched(_, outcome) => HostAnswer::Prefetched(outcome),
            JobEvent::LinkLost(_) | JobEvent::Undeliverable { .. } => return,
        };
        let passed = master.config.store_is_shared()
            && crate::relay::answer_another(master, &job_id, minion_id, answer.clone()).await;
        match answer {
            _ if passed => {}
            HostAnswer::Result(result) => record_late_result(master, minion_id, result).await,
            _ => {
                tracing::debug!(minion.id = %minion_id, job.id = %job_id, "progress for a job that already ended");
            }
        }
        return;
    };
    let _ = job.send(event).await;
}

/// Hands a session's message to its caller. An invalid one is dropped (its session then ends
/// by its caller's deadlines); the host's text is not logged.
fn route_session(
    master: &Master,
    minion_id: &MinionId,
    message: Result<SessionMessage, brine_proto::InvalidField>,
) {
    match message {
        Ok(SessionMessage { session_id, event }) => {
            if !master.sessions.route(minion_id, session_id, event) {
                tracing::debug!(minion.id = %minion_id, "a message for a session that is not open");
            }
        }
        Err(err) => {
            tracing::warn!(minion.id = %minion_id, field = %err.field, "ignored an invalid session message");
        }
    }
}

/// A host's result for a job that has ended: if the job gave up on the host (a partition that
/// healed, a master that restarted), its record now shows what the host really did.
pub(crate) async fn record_late_result(master: &Master, minion_id: &MinionId, result: JobResult) {
    let job_id = result.job_id.clone();
    let load = || master.store.job(job_id.to_string());
    if !master.late_reports.awaited(&job_id, minion_id, load).await {
        tracing::debug!(minion.id = %minion_id, job.id = %job_id, "a result for a job that already has one");
        return;
    }
    let timings = result.timings;
    let duration_ms = timings.pull_ms + timings.containers_ms + timings.health_ms;
    let report = HostReport::from_result(minion_id.clone(), result, duration_ms, true);
    let recorded = master
        .store
        .record_late_report(job_id.clone(), report)
        .await;
    if recorded.is_ok() {
        master.late_reports.settled(&job_id, minion_id);
    }
    match recorded {
        Ok(true) => {
            tracing::info!(minion.id = %minion_id, job.id = %job_id, "recorded a late result")
        }
        Ok(false) => {
            tracing::debug!(minion.id = %minion_id, job.id = %job_id, "a result for a job that already has one")
        }
        Err(err) => {
            tracing::error!(minion.id = %minion_id, job.id = %job_id, "cannot record a late result: {err}")
        }
    }
}
