//! The link to the master: dial out, say hello, apply what the master sends, report back;
//! reconnect forever: to the fleet's other masters first when it has several (`masters`), with
//! a little jitter, then with exponential backoff and full jitter.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use brine_common::names::{MinionId, SecretName};
use brine_common::outcome::{JobId, JobResult};
use brine_common::secret::SecretValue;
use brine_common::session::{SessionEvent, SessionId, SessionMessage, SessionRequest};
use brine_common::spec::{DesiredState, ImageRef};
use brine_proto::pb::connect_request::Kind;
use brine_proto::tls::connect_from;
use brine_proto::{pb, time};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::applied_jobs::AppliedJobs;
use crate::config::{DataDir, MinionConfig};
use crate::identity::{self, Identity};
use crate::keeper::{Check, Job, Outbox, Outgoing, check_periodically, keep_host, watch_engine};
use crate::masters::{Masters, Rotation};
use crate::proxy::ProxyClient;
use crate::reconcile::execute::Executor;
use crate::renewal;
use crate::runtime::ContainerRuntime;
use crate::runtime::view::EngineView;
use crate::sessions::Sessions;
use crate::status::StatusLine;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect delays grow from this...
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// ...up to this: after a master restart, a fleet drawing up to 15 s comes back spread over
/// what one master handshakes in that time (10,000 hosts here), and none waits much longer
/// than that once it is up.
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// The most a minion waits before trying another master of its fleet after losing a link:
/// hosts of a master that went away spread over this, and are linked again within seconds.
const FAILOVER_JITTER: Duration = BACKOFF_BASE;
/// How many messages may wait to go up to the master.
const OUTBOUND_QUEUE: usize = 64;
/// How many commands may wait while one is being applied.
const COMMAND_QUEUE: usize = 8;

/// The delay before reconnect attempt `attempt` (0-based): a uniformly random duration up to an
/// exponentially growing cap ("full jitter"), so a fleet that lost its master does not come back
/// in lockstep.
pub fn backoff(attempt: u32) -> Duration {
    let cap = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(BACKOFF_MAX);
    rand::rng().random_range(Duration::ZERO..=cap)
}

/// Runs the minion until `shutdown` resolves.
pub async fn run<R: ContainerRuntime + 'static>(
    data: DataDir,
    config: MinionConfig,
    runtime: R,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    run_with_status(data, config, runtime, Arc::default(), shutdown).await
}

/// [`run`], keeping the link's state in `status`, where the caller can read it.
pub async fn run_with_status<R: ContainerRuntime + 'static>(
    data: DataDir,
    config: MinionConfig,
    runtime: R,
    status: Arc<StatusLine>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    // Fail fast on a host that has not joined; later sessions reload it (a renewal changes it).
    identity::load(&data)?;
    let view = EngineView::new(runtime, config.namespace.clone());
    let executor = Arc::new(
        Executor::new(view, config.namespace.clone())
            .with_proxy(ProxyClient::new(config.proxy_socket.clone())),
    );
    let stop = CancellationToken::new();

    // One applier for the whole life of the minion: jobs run one at a time and finish even if
    // the link that brought them drops.
    let (jobs, job_queue) = mpsc::channel(COMMAND_QUEUE);
    // Requests to look for drift; one waiting is enough, as a check looks at everything.
    let (checks, check_queue) = mpsc::channel(1);
    let _ = checks.try_send(Check::Startup);
    let metrics = Arc::new(crate::metrics::Metrics::new(status.clone()));
    if let Some(address) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| {
                format!("listen for Prometheus on {address} (metrics_listen in minion.toml)")
            })?;
        tokio::spawn(serve_metrics(listener, metrics.clone(), stop.clone()));
    }
    let events = Arc::new(Outbox::counted_in(metrics));
    let applier = tokio::spawn(keep_host(
        executor.clone(),
        data.clone(),
        job_queue,
        check_queue,
        events.clone(),
        config.keep_releases,
        status.clone(),
    ));
    let watchers = [
        tokio::spawn(watch_engine(
            executor.clone(),
            checks.clone(),
            events.clone(),
        )),
        tokio::spawn(check_periodically(config.reconcile_interval, checks)),
    ];

    // Ready once the keeper runs: from here the host is looked after, master or no master.
    status.connecting(&config.master);
    brine_daemon::systemd::ready(&status.line());
    brine_daemon::systemd::spawn_watchdog();

    let links = async {
        let mut attempt = 0;
        let mut applied = AppliedJobs::load(&data);
        let mut masters = Masters::load(&data, &config.master);
        let host = Host {
            data: &data,
            config: &config,
            executor: &executor,
            jobs: &jobs,
            events: &events,
        };
        loop {
            let mut was_linked = false;
            let linked = |master: &str| {
                status.linked(master);
                was_linked = true;
            };
            let lost = masters.current().to_owned();
            match session(&host, &mut masters, &mut applied, linked).await {
                Ok(SessionEnd::Renewed) => {
                    // The previous certificate is done with: the next link shows the new one,
                    // after which the master refuses the old one for good.
                    tracing::info!("reconnecting with the renewed certificate");
                    attempt = 0;
                    continue;
                }
                Ok(SessionEnd::Closed) => tracing::info!("{lost} closed the link"),
                Err(err) => tracing::warn!("link to {lost} lost: {err:#}"),
            }
            if was_linked {
                attempt = 0;
            }
            // Another master of the fleet is tried at once (with a little jitter, so a fleet
            // that lost its master does not arrive at another in lockstep); once every one was
            // tried since the last link, the delays grow.
            let delay = match masters.move_on(was_linked) {
                Rotation::Another => rand::rng().random_range(Duration::ZERO..=FAILOVER_JITTER),
                Rotation::AllTried => {
                    let delay = backoff(attempt);
                    attempt = attempt.saturating_add(1);
                    delay
                }
            };
            tracing::info!("linking to {} in {delay:?}", masters.current());
            status.lost(&lost, delay);
            tokio::time::sleep(delay).await;
        }
    };
    tokio::select! {
        () = shutdown => {}
        () = links => {}
    }
    tracing::info!("stopping");
    brine_daemon::systemd::stopping("stopping: letting a running job finish");
    stop.cancel();
    for watcher in watchers {
        watcher.abort();
    }
    drop(jobs);
    // A job in the middle of replacing a container is allowed to finish, so no container is
    // left set aside.
    if tokio::time::timeout(Duration::from_secs(60), applier)
        .await
        .is_err()
    {
        tracing::warn!("a job was still running at shutdown");
    }
    Ok(())
}

/// Serves the Prometheus endpoint until `stop`.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<crate::metrics::Metrics>,
    stop: CancellationToken,
) {
    let address = listener.local_addr().ok();
    let render: brine_daemon::metrics::Render = Arc::new(move || {
        let text = metrics.render();
        Box::pin(async move { text })
    });
    tracing::info!(address = ?address, "serving Prometheus metrics at /metrics");
    if let Err(err) = brine_daemon::metrics::serve(listener, render, stop.cancelled_owned()).await {
        tracing::error!("the Prometheus endpoint stopped: {err}");
    }
}

/// Why a link ended without an error.
enum SessionEnd {
    /// The master closed it.
    Closed,
    /// The minion renewed its certificate and reconnects with the new one.
    Renewed,
}

/// What every link of the minion's life works with.
struct Host<'a, R: ContainerRuntime> {
    data: &'a DataDir,
    config: &'a MinionConfig,
    executor: &'a Arc<Executor<R>>,
    /// Where jobs go to be applied, one at a time, whatever becomes of the link.
    jobs: &'a mpsc::Sender<Job>,
    /// Results and events waiting to go up.
    events: &'a Outbox,
}

/// One connection to the current master: hello, then commands until the stream ends.
async fn session<R: ContainerRuntime + 'static>(
    host: &Host<'_, R>,
    masters: &mut Masters,
    applied: &mut AppliedJobs,
    linked: impl FnOnce(&str),
) -> anyhow::Result<SessionEnd> {
    let Host {
        data,
        config,
        executor,
        jobs,
        events,
    } = *host;
    let master = masters.current().to_owned();
    let Identity {
        tls,
        id,
        certificate,
    } = identity::load(data)?;
    let expiry = renewal::expiry(&certificate);
    if expiry <= SystemTime::now() {
        tracing::error!(
            "this host's certificate expired at {}; the master will refuse it. Join again with a \
             new token: brine-minion join",
            humantime::format_rfc3339_seconds(expiry)
        );
    }
    let channel = connect_from(&master, config.source_address, tls, CONNECT_TIMEOUT).await?;
    let (outbound, outbound_queue) = mpsc::channel(OUTBOUND_QUEUE);
    let facts = crate::facts::gather(executor.runtime(), &config.labels).await;
    let running = match executor.running().await {
        Ok(running) => running,
        Err(err) => {
            tracing::warn!("cannot list containers for the hello: {err}");
            vec![]
        }
    };
    outbound
        .send(pb::ConnectRequest {
            kind: Some(Kind::Hello(pb::Hello {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                facts: Some(facts.into()),
                running: running.into_iter().map(Into::into).collect(),
                now: Some(time::timestamp(crate::now_unix_ms())),
            })),
        })
        .await
        .context("queue the hello")?;
    let mut inbound = pb::minion_link_service_client::MinionLinkServiceClient::new(channel.clone())
        .connect(ReceiverStream::new(outbound_queue))
        .await
        .map_err(|status| anyhow::anyhow!("{}", status.message()))
        .context("open the link")?
        .into_inner();
    tracing::info!(%master, "connected");
    linked(&master);

    events.resend_recent();
    send_outbox(events, &outbound).await?;
    let mut renew_at = renewal::renewal_time(&certificate);
    let mut clock = MasterClock::default();
    // Logs and commands for the master's callers, which end with this link.
    let (session_messages, mut session_outbox) = mpsc::channel(OUTBOUND_QUEUE);
    let sessions = Sessions::new(session_messages);
    let _sessions_end_with_the_link = sessions.stop_all_on_drop();
    loop {
        let wait = renew_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let message = tokio::select! {
            message = inbound.message() => message,
            () = events.added() => {
                send_outbox(events, &outbound).await?;
                continue;
            }
            Some(message) = session_outbox.recv() => {
                let message = pb::ConnectRequest { kind: Some(message.into()) };
                outbound.send(message).await.context("send a session's output")?;
                continue;
            }
            () = tokio::time::sleep(wait) => {
                // Renewed over this link; the link then ends, and the next one is made with
                // the new certificate at once.
                match renewal::renew(data, &id, channel.clone()).await {
                    Ok(renewed) => {
                        let expires = humantime::format_rfc3339_seconds(renewal::expiry(&renewed));
                        tracing::info!(%expires, "certificate renewed");
                        return Ok(SessionEnd::Renewed);
                    }
                    Err(err) => {
                        let now = SystemTime::now();
                        renew_at = renewal::retry_time(renewal::expiry(&certificate), now);
                        tracing::warn!(
                            retry_in = ?renew_at.duration_since(now).unwrap_or_default(),
                            "cannot renew the certificate: {err:#}"
                        );
                    }
                }
                continue;
            }
        };
        let Some(message) = message.map_err(|s| anyhow::anyhow!("{}", s.message()))? else {
            break;
        };
        let apply = match message.kind {
            Some(pb::connect_response::Kind::Apply(apply)) => apply,
            Some(pb::connect_response::Kind::Prefetch(prefetch)) => {
                let master_now = clock.now(crate::now_unix_ms());
                fetch_ahead(&id, prefetch, master_now, executor, &outbound).await;
                continue;
            }
            Some(pb::connect_response::Kind::StartSession(start)) => {
                let master_now = clock.now(crate::now_unix_ms());
                match accept_session(&id, start, master_now) {
                    Ok((request, lasts)) => sessions.start(executor.clone(), request, lasts),
                    Err((session_id, refusal)) => {
                        tracing::warn!("refused a session: {refusal}");
                        if let Ok(session_id) = SessionId::new(session_id) {
                            let end = brine_common::session::SessionEnd {
                                error: Some(refusal),
                                ..Default::default()
                            };
                            let message = SessionMessage {
                                session_id,
                                event: SessionEvent::Ended(end),
                            };
                            let message = pb::ConnectRequest {
                                kind: Some(message.into()),
                            };
                            let _ = outbound.send(message).await;
                        }
                    }
                }
                continue;
            }
            Some(pb::connect_response::Kind::StopSession(stop)) => {
                if let Ok(session_id) = SessionId::new(stop.session_id) {
                    sessions.stop(&session_id);
                }
                continue;
            }
            Some(pb::connect_response::Kind::Masters(said)) => {
                if let Err(err) = masters.learn(said.addresses) {
                    tracing::warn!("cannot keep the fleet's masters: {err:#}");
                }
                continue;
            }
            Some(pb::connect_response::Kind::Clock(reading)) => {
                // A missing or malformed reading leaves the clock as it was.
                if let Ok(Some(master_now)) = time::unix_ms("clock.now", reading.now) {
                    clock = MasterClock::read(master_now, crate::now_unix_ms());
                }
                continue;
            }
            None => continue,
        };
        let master_now = clock.now(crate::now_unix_ms());
        let accepted = match accept(&id, apply, master_now) {
            // Recorded before the keeper sees it: once a job may have changed anything, its
            // command is refused even after a crash.
            Ok(command) => match applied
                .record(&command.job_id, command.expires_at_unix_ms, master_now)
                .await
            {
                Ok(true) => Ok(command),
                Ok(false) => {
                    // Applied once only. A master that took the job over from another asks
                    // again the hosts it has no report of: they get what this host did.
                    if events.resend(&command.job_id) {
                        tracing::info!(job.id = %command.job_id, "job already applied here; its result is sent again");
                    } else {
                        tracing::info!(job.id = %command.job_id, "job already applied here and still running; its result goes up when it is over");
                    }
                    continue;
                }
                Err(err) => Err(JobResult::failed(
                    command.job_id.clone(),
                    format!(
                        "cannot record the job on this host ({err:#}), so a replay could not be \
                         refused; nothing was changed"
                    ),
                )),
            },
            Err(refusal) => Err(refusal),
        };
        match accepted {
            Ok(command) => {
                let job = Job {
                    job_id: command.job_id,
                    desired: command.desired,
                    plan: command.plan,
                    report_progress: progress_to(outbound.clone()),
                };
                jobs.send(job).await.context("queue a job")?;
            }
            Err(refusal) => {
                tracing::warn!(
                    "refused a command: {}",
                    refusal.error.as_deref().unwrap_or("")
                );
                let _ = outbound.send(result_message(refusal)).await;
            }
        }
    }
    Ok(SessionEnd::Closed)
}

/// Fetches the images of a `Prefetch` in the background, once it passed the checks at the
/// edge, and answers on this link; it touches no container, so it runs beside the keeper. A
/// refused request is answered at once.
async fn fetch_ahead<R: ContainerRuntime + 'static>(
    id: &MinionId,
    prefetch: pb::Prefetch,
    master_now: i64,
    executor: &Arc<Executor<R>>,
    link: &mpsc::Sender<pb::ConnectRequest>,
) {
    let answer = |job_id: String, error: String| pb::ConnectRequest {
        kind: Some(Kind::Prefetched(pb::Prefetched { job_id, error })),
    };
    let job_id = prefetch.job_id.clone();
    match accept_prefetch(id, prefetch, master_now) {
        Ok(images) => {
            tracing::info!(job.id = %job_id, images = images.len(), "fetching images ahead of a job");
            let (executor, link) = (executor.clone(), link.clone());
            tokio::spawn(async move {
                let error = match executor.fetch_ahead(&images).await {
                    Ok(()) => String::new(),
                    Err(error) => {
                        tracing::warn!(job.id = %job_id, "cannot fetch images ahead: {error}");
                        error
                    }
                };
                // Best effort: a link that dropped meanwhile leaves the job's turn to pull.
                let _ = link.send(answer(job_id, error)).await;
            });
        }
        Err(refusal) => {
            tracing::warn!(job.id = %job_id, "refused to fetch images ahead: {refusal}");
            let _ = link.send(answer(job_id, refusal)).await;
        }
    }
}

/// How many images one `Prefetch` may name.
const MAX_PREFETCH_IMAGES: usize = 64;

/// Validates a `Prefetch` at the edge: addressed to this host, not expired at `master_now`,
/// naming at most [`MAX_PREFETCH_IMAGES`] images, each pinned to a digest.
fn accept_prefetch(
    id: &MinionId,
    prefetch: pb::Prefetch,
    master_now: i64,
) -> Result<Vec<ImageRef>, String> {
    JobId::new(prefetch.job_id).map_err(|err| format!("job_id: {err}"))?;
    if prefetch.minion_id != id.as_str() {
        return Err(format!(
            "the request is addressed to {:?}, not to this host ({id})",
            prefetch.minion_id
        ));
    }
    let expires_at =
        time::unix_ms_or_zero("expires_at", prefetch.expires_at).map_err(|err| err.to_string())?;
    if expires_at <= master_now {
        return Err("the request has expired".into());
    }
    if prefetch.images.len() > MAX_PREFETCH_IMAGES {
        return Err(format!(
            "images: {} named; at most {MAX_PREFETCH_IMAGES} are accepted",
            prefetch.images.len()
        ));
    }
    prefetch
        .images
        .into_iter()
        .enumerate()
        .map(|(at, image)| {
            let image = ImageRef::new(image).map_err(|err| format!("images[{at}]: {err}"))?;
            match image.parts().digest {
                Some(_) => Ok(image),
                None => Err(format!("images[{at}]: {image} is not pinned to a digest")),
            }
        })
        .collect()
}

/// Validates a `StartSession` at the edge: addressed to this host, well formed, not past its
/// end at `master_now`. The request and how long it may last (`None`: until stopped), or the
/// session's id and why it is refused.
fn accept_session(
    id: &MinionId,
    start: pb::StartSession,
    master_now: i64,
) -> Result<(SessionRequest, Option<Duration>), (String, String)> {
    let session_id = start.session_id.clone();
    if start.minion_id != id.as_str() {
        return Err((
            session_id,
            format!(
                "the request is addressed to {:?}, not to this host ({id})",
                start.minion_id
            ),
        ));
    }
    let request =
        SessionRequest::try_from(start).map_err(|err| (session_id.clone(), err.to_string()))?;
    let lasts = match request.ends_at_unix_ms {
        None => None,
        Some(ends_at) if ends_at <= master_now => {
            return Err((session_id, "the request has expired".into()));
        }
        Some(ends_at) => Some(Duration::from_millis(
            u64::try_from(ends_at.saturating_sub(master_now)).unwrap_or(u64::MAX),
        )),
    };
    Ok((request, lasts))
}

/// A job's progress, sent on the link that brought it: best effort, as progress is advisory,
/// so when the link is slow it is dropped, never waited for.
fn progress_to(link: mpsc::Sender<pb::ConnectRequest>) -> crate::keeper::ProgressSink {
    Box::new(move |job_id, progress| {
        let _ = link.try_send(pb::ConnectRequest {
            kind: Some(Kind::Progress(pb::JobProgress {
                job_id: job_id.to_string(),
                progress: Some(progress.into()),
            })),
        });
    })
}

/// Sends the results and events that waited for the link; puts them back if it closed
/// meanwhile.
async fn send_outbox(
    outbox: &Outbox,
    outbound: &mpsc::Sender<pb::ConnectRequest>,
) -> anyhow::Result<()> {
    let mut waiting = outbox.take().into_iter();
    while let Some(outgoing) = waiting.next() {
        let kind = match outgoing.clone() {
            Outgoing::Result(result) => Kind::Result(result.into()),
            Outgoing::Event(event) => Kind::Event(event.into()),
        };
        let message = pb::ConnectRequest { kind: Some(kind) };
        if outbound.send(message).await.is_err() {
            outbox.put_back(std::iter::once(outgoing).chain(waiting).collect());
            anyhow::bail!("the link closed while sending what waited for it");
        }
        if let Outgoing::Result(result) = outgoing {
            outbox.handed_over(result);
        }
    }
    Ok(())
}

/// A command that passed the checks at the edge.
#[derive(Debug)]
struct Command {
    job_id: JobId,
    desired: DesiredState,
    plan: bool,
    /// Until when the master allows it to be applied.
    expires_at_unix_ms: i64,
}

/// The master's time as this host sees it: commands expire by the master's clock, so a host
/// whose own clock is off neither refuses fresh commands nor takes stale ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MasterClock {
    /// How far the master's clock is ahead of this host's; 0 until the master says.
    offset_ms: i64,
}

impl MasterClock {
    /// The clock after the master said its time was `master_unix_ms` at `local_unix_ms`.
    fn read(master_unix_ms: i64, local_unix_ms: i64) -> Self {
        let offset_ms = master_unix_ms.saturating_sub(local_unix_ms);
        if offset_ms.unsigned_abs() > brine_common::limits::CLOCK_SKEW_WARNING_MS {
            let direction = if offset_ms < 0 { "ahead of" } else { "behind" };
            tracing::warn!(
                "this host's clock is {} s {direction} the master's; commands are timed by the \
                 master's clock, but logs and container times here are off. Is NTP running?",
                offset_ms.unsigned_abs() / 1000
            );
        }
        Self { offset_ms }
    }

    /// The master's time when this host's clock reads `local_unix_ms`.
    fn now(self, local_unix_ms: i64) -> i64 {
        local_unix_ms.saturating_add(self.offset_ms)
    }
}

/// Validates a command at the edge: addressed to this host, not expired at `master_now` (the
/// master's time), well formed.
fn accept(id: &MinionId, apply: pb::Apply, master_now: i64) -> Result<Command, JobResult> {
    let job_id = JobId::new(apply.job_id.clone()).map_err(|err| {
        JobResult::failed(
            JobId::new("invalid").expect("a valid literal id"),
            format!("job_id: {err}"),
        )
    })?;
    let refuse = |reason: String| JobResult::failed(job_id.clone(), reason);
    if apply.minion_id != id.as_str() {
        return Err(refuse(format!(
            "the command is addressed to {:?}, not to this host ({id})",
            apply.minion_id
        )));
    }
    let expires_at_unix_ms = time::unix_ms_or_zero("expires_at", apply.expires_at)
        .map_err(|err| refuse(err.to_string()))?;
    if expires_at_unix_ms <= master_now {
        return Err(refuse("the command has expired".into()));
    }
    let desired = apply
        .desired
        .ok_or_else(|| refuse("desired: is required".into()))
        .and_then(|d| DesiredState::try_from(d).map_err(|err| refuse(format!("desired.{err}"))))?;
    let desired = with_secret_values(desired, apply.secrets, apply.plan).map_err(refuse)?;
    Ok(Command {
        job_id,
        desired,
        plan: apply.plan,
        expires_at_unix_ms,
    })
}

/// Attaches the values the master sent to the secret references of `desired`. Every secret a
/// container uses must have one (a plan creates nothing and needs none); a value the
/// environment cannot carry is refused, and no value is ever put in the refusal.
fn with_secret_values(
    mut desired: DesiredState,
    sent: HashMap<String, String>,
    plan: bool,
) -> Result<DesiredState, String> {
    if plan {
        return Ok(desired);
    }
    let mut values = BTreeMap::new();
    for (name, value) in sent {
        let name = SecretName::new(name).map_err(|err| format!("secrets: {err}"))?;
        let value = SecretValue::new(value).map_err(|err| format!("secrets[{name:?}]: {err}"))?;
        values.insert(name, value);
    }
    desired.attach_secret_values(&values).map_err(|missing| {
        format!(
            "the master sent no value for secret {missing}, which a container uses; see the \
             master's log"
        )
    })?;
    Ok(desired)
}

fn result_message(result: JobResult) -> pb::ConnectRequest {
    pb::ConnectRequest {
        kind: Some(Kind::Result(result.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        for attempt in 0..40 {
            let delay = backoff(attempt);
            assert!(delay <= BACKOFF_MAX, "{attempt}: {delay:?}");
            if attempt == 0 {
                assert!(delay <= BACKOFF_BASE);
            }
        }
        let samples: std::collections::HashSet<Duration> = (0..20).map(|_| backoff(10)).collect();
        assert!(samples.len() > 1, "delays are jittered");
    }

    /// The master's time in these tests.
    const MASTER_NOW: i64 = 1_800_000_000_000;

    fn apply(minion: &str, expires_in_ms: i64) -> pb::Apply {
        pb::Apply {
            job_id: "j-1".into(),
            minion_id: minion.into(),
            expires_at: Some(time::timestamp(MASTER_NOW + expires_in_ms)),
            desired: Some(pb::DesiredState::default()),
            plan: false,
            secrets: Default::default(),
        }
    }

    fn prefetch(minion: &str, expires_in_ms: i64, images: &[&str]) -> pb::Prefetch {
        pb::Prefetch {
            job_id: "j-1".into(),
            minion_id: minion.into(),
            expires_at: Some(time::timestamp(MASTER_NOW + expires_in_ms)),
            images: images.iter().map(|image| (*image).to_owned()).collect(),
        }
    }

    const PINNED: &str = "registry.example.com/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_prefetch_is_taken_only_for_this_host_in_time_and_for_pinned_images() {
        let me = MinionId::new("web-1").unwrap();
        let accepted = accept_prefetch(&me, prefetch("web-1", 60_000, &[PINNED]), MASTER_NOW);
        assert_eq!(accepted, Ok(vec![ImageRef::new(PINNED).unwrap()]));
        let refused = |request| accept_prefetch(&me, request, MASTER_NOW).unwrap_err();
        assert!(refused(prefetch("web-2", 60_000, &[PINNED])).contains("not to this host"));
        assert!(refused(prefetch("web-1", -1, &[PINNED])).contains("expired"));
        assert!(
            refused(prefetch(
                "web-1",
                60_000,
                &["registry.example.com/app:tested"]
            ))
            .contains("images[0]: registry.example.com/app:tested is not pinned")
        );
        assert!(refused(prefetch("web-1", 60_000, &["UPPER CASE"])).starts_with("images[0]:"));
        let many = vec![PINNED; MAX_PREFETCH_IMAGES + 1];
        assert!(refused(prefetch("web-1", 60_000, &many)).contains("at most 64"));
    }

    #[test]
    fn commands_for_other_hosts_or_expired_are_refused() {
        let me = MinionId::new("web-1").unwrap();
        assert!(accept(&me, apply("web-1", 60_000), MASTER_NOW).is_ok());
        let refused = accept(&me, apply("web-2", 60_000), MASTER_NOW).unwrap_err();
        assert!(refused.error.unwrap().contains("addressed to"));
        let refused = accept(&me, apply("web-1", -1), MASTER_NOW).unwrap_err();
        assert!(refused.error.unwrap().contains("expired"));
        let mut missing = apply("web-1", 60_000);
        missing.desired = None;
        assert!(accept(&me, missing, MASTER_NOW).is_err());
    }

    #[test]
    fn commands_expire_by_the_masters_clock_whatever_this_hosts_says() {
        let me = MinionId::new("web-1").unwrap();
        let ten_minutes = 600_000;
        // This host's clock runs ten minutes ahead: a command valid for two more minutes is
        // still taken...
        let ahead = MasterClock::read(MASTER_NOW, MASTER_NOW + ten_minutes);
        let local_now = MASTER_NOW + ten_minutes + 500;
        assert!(accept(&me, apply("web-1", 120_000), ahead.now(local_now)).is_ok());
        // ...and behind, one that expired a minute ago is still refused.
        let behind = MasterClock::read(MASTER_NOW, MASTER_NOW - ten_minutes);
        let local_now = MASTER_NOW - ten_minutes + 500;
        let stale = accept(&me, apply("web-1", -60_000), behind.now(local_now)).unwrap_err();
        assert!(stale.error.unwrap().contains("expired"));
        // Before the master says its time, the host's own clock is all there is.
        assert_eq!(MasterClock::default().now(local_now), local_now);
    }

    /// A command whose one container uses secret `db`.
    fn apply_with_secret(secrets: &[(&str, &str)], plan: bool) -> pb::Apply {
        let roles = brine_common::roles_file::RolesFile::parse(
            "roles.toml",
            "[roles.web]\nimage = \"app:1\"\n[[roles.web.containers]]\nname = \"web\"\n\
             env = { DB = { secret = \"db\" } }\n[assign]\n\"*\" = [\"web\"]\n",
        )
        .unwrap();
        let mut desired = roles
            .desired_state_for(&MinionId::new("web-1").unwrap())
            .unwrap();
        for reference in desired.secret_refs_mut() {
            reference.fingerprint = "abcd".into();
        }
        pb::Apply {
            desired: Some(desired.into()),
            plan,
            secrets: secrets
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..apply("web-1", 60_000)
        }
    }

    #[test]
    fn a_command_carries_the_value_of_every_secret_its_containers_use() {
        let me = MinionId::new("web-1").unwrap();
        let command = accept(
            &me,
            apply_with_secret(&[("db", "hunter2")], false),
            MASTER_NOW,
        )
        .unwrap();
        assert_eq!(command.desired.containers[0].environment(), ["DB=hunter2"]);
        let refused =
            accept(&me, apply_with_secret(&[("other", "x")], false), MASTER_NOW).unwrap_err();
        let error = refused.error.unwrap();
        assert!(error.contains("no value for secret db"), "{error}");
        let refused =
            accept(&me, apply_with_secret(&[("db", "a\0b")], false), MASTER_NOW).unwrap_err();
        let error = refused.error.unwrap();
        assert!(error.contains("NUL"), "{error}");
        assert!(!error.contains("a\0b"), "{error}");
        // A plan creates nothing, so it is sent no value and needs none.
        assert!(accept(&me, apply_with_secret(&[], true), MASTER_NOW).is_ok());
    }
}
