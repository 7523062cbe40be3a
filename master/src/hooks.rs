//! Hooks (`[[hooks]]` in master.toml): each fleet event a hook takes is run through its command
//! or POSTed to its URL, as JSON, with a timeout per try and retries with backoff.
//!
//! Nothing here holds up a job or the event bus: the bus offers each event to every hook's
//! bounded queue without waiting (`HookQueues::offer`), and each hook delivers from its queue in
//! a task of its own. A delivery that fails after its retries, or that a full queue dropped, is
//! a failure: logged (without the URL's credentials or query), counted
//! (`brine_hook_deliveries_total`), published as a `hook_failed` event and kept in the store
//! (its newest `HOOK_FAILURES_KEPT`).

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use brine_common::fleet_event::{FleetEvent, HookFailure};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

use crate::config::{HookConfig, HookTarget};
use crate::events::EventBus;
use crate::metrics::{HookDelivery, Metrics};
use crate::state::now_unix_ms;
use crate::store::Store;

/// How many events may wait for one hook.
const HOOK_QUEUE: usize = 256;
/// How many failures may wait to be recorded.
const FAILURE_QUEUE: usize = 256;
/// The wait before the first retry; it doubles with each one, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How much of a failed command's standard error the failure record keeps.
const STDERR_KEPT: usize = 512;

/// One hook's queue, as the bus sees it.
struct Queue {
    hook: Arc<HookConfig>,
    events: mpsc::Sender<Arc<FleetEvent>>,
}

/// The hooks' queues, which the bus offers every event to.
#[derive(Default)]
pub struct HookQueues {
    queues: Vec<Queue>,
    /// Deliveries dropped because a hook's queue was full, to be recorded.
    dropped: Option<mpsc::Sender<HookFailure>>,
    metrics: Arc<Metrics>,
}

impl HookQueues {
    /// Hands `event` to every hook that takes it, without waiting: a hook whose queue is full
    /// misses it, and that counts as a failed delivery.
    pub fn offer(&self, event: &Arc<FleetEvent>) {
        for queue in &self.queues {
            if !queue.hook.wants(event) {
                continue;
            }
            if queue.events.try_send(event.clone()).is_err() {
                self.metrics
                    .hook_delivery(&queue.hook.name, HookDelivery::Dropped);
                let failure = HookFailure {
                    hook: queue.hook.name.clone(),
                    event_sequence: event.sequence,
                    event_kind: event.what.name().to_owned(),
                    attempts: 0,
                    error: format!(
                        "dropped: the hook's queue of {HOOK_QUEUE} events was full (the hook is \
                         slower than the events it takes)"
                    ),
                    failed_at_unix_ms: now_unix_ms(),
                };
                if let Some(dropped) = &self.dropped
                    && dropped.try_send(failure).is_err()
                {
                    tracing::error!(
                        hook = %queue.hook.name,
                        "a delivery was dropped and the record of failures is behind too"
                    );
                }
            }
        }
    }
}

/// What delivers: a task per hook, and one that records failures.
pub struct HookRunner {
    hooks: Vec<(Arc<HookConfig>, mpsc::Receiver<Arc<FleetEvent>>)>,
    failures_in: mpsc::Sender<HookFailure>,
    failures_out: mpsc::Receiver<HookFailure>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

/// The hooks' queues for the bus, and what delivers from them once the bus exists.
pub fn prepare(
    hooks: &[HookConfig],
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
) -> (HookQueues, HookRunner) {
    let (failures_in, failures_out) = mpsc::channel(FAILURE_QUEUE);
    let mut queues = vec![];
    let mut receivers = vec![];
    for hook in hooks {
        let hook = Arc::new(hook.clone());
        let (events, receiver) = mpsc::channel(HOOK_QUEUE);
        queues.push(Queue {
            hook: hook.clone(),
            events,
        });
        receivers.push((hook, receiver));
    }
    (
        HookQueues {
            queues,
            dropped: Some(failures_in.clone()),
            metrics: metrics.clone(),
        },
        HookRunner {
            hooks: receivers,
            failures_in,
            failures_out,
            store,
            metrics,
        },
    )
}

impl HookRunner {
    /// Starts delivering; the tasks end when the bus (and so every queue) is gone.
    pub fn spawn(self, bus: Arc<EventBus>) {
        let HookRunner {
            hooks,
            failures_in,
            mut failures_out,
            store,
            metrics,
        } = self;
        // Only URL hooks need the client (and the system's CA certificates, read here).
        let speaks_http = hooks
            .iter()
            .any(|(hook, _)| matches!(hook.target, HookTarget::Url(_)));
        let client = if speaks_http { http_client() } else { None };
        for (hook, events) in hooks {
            tokio::spawn(deliver_all(
                hook,
                events,
                client.clone(),
                failures_in.clone(),
                metrics.clone(),
            ));
        }
        // Holds the bus and the store weakly: the failures' task must not keep them alive after
        // the master stops (the bus holds the hooks' queues; a redb store, its file open).
        let bus = Arc::downgrade(&bus);
        let store = Arc::downgrade(&store);
        tokio::spawn(async move {
            while let Some(failure) = failures_out.recv().await {
                if failure.attempts == 0 {
                    // Dropped from a full queue (and counted there); failures after tries are
                    // logged where they happen.
                    tracing::warn!(hook = %failure.hook, event.sequence = failure.event_sequence, "{}", failure.error);
                }
                let Some(store) = store.upgrade() else {
                    return;
                };
                if let Err(err) = store.record_hook_failure(failure.clone()).await {
                    tracing::error!(hook = %failure.hook, "cannot keep a failed hook delivery: {err}");
                }
                drop(store);
                if let Some(bus) = bus.upgrade() {
                    bus.publish(failure.to_event());
                }
            }
        });
    }
}

/// The client of the URL hooks: TLS through rustls with ring and the system's CA certificates
/// (given explicitly, so nothing depends on a process-wide default), no redirects (a hook's
/// answer is its own); none if it cannot be set up (then URL hooks fail, and say so).
fn http_client() -> Option<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::warn!(
            "this machine has no CA certificates (install Debian's ca-certificates): HTTPS hooks \
             will fail"
        );
    }
    let tls = rustls::ClientConfig::builder_with_provider(brine_proto::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
    let built = tls.map_err(|err| err.to_string()).and_then(|tls| {
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .user_agent(concat!("brine-master/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| err.to_string())
    });
    match built {
        Ok(client) => Some(client),
        Err(err) => {
            tracing::error!("cannot set up the HTTP client of the hooks: {err}; URL hooks fail");
            None
        }
    }
}

/// Delivers the events in `events` one at a time, in order.
async fn deliver_all(
    hook: Arc<HookConfig>,
    mut events: mpsc::Receiver<Arc<FleetEvent>>,
    client: Option<reqwest::Client>,
    failures: mpsc::Sender<HookFailure>,
    metrics: Arc<Metrics>,
) {
    while let Some(event) = events.recv().await {
        let json = match serde_json::to_string(&*event) {
            Ok(json) => json,
            Err(err) => {
                tracing::error!(hook = %hook.name, "cannot encode event {}: {err}", event.sequence);
                continue;
            }
        };
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            let tried = tokio::time::timeout(
                hook.timeout,
                deliver_once(&hook.target, &json, event.what.name(), client.as_ref()),
            )
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "no answer within {}",
                    humantime::format_duration(hook.timeout)
                ))
            });
            match tried {
                Ok(()) => break Ok(()),
                Err(err) if attempts > hook.retries => break Err(err),
                Err(err) => {
                    tracing::debug!(hook = %hook.name, attempts, "delivery failed, retrying: {}", first_line(&err));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        match outcome {
            Ok(()) => {
                tracing::debug!(hook = %hook.name, event.sequence = event.sequence, "delivered");
                metrics.hook_delivery(&hook.name, HookDelivery::Delivered);
            }
            Err(err) => {
                // The error says what failed (a status, a refusal, a timeout), never the URL.
                tracing::warn!(
                    hook = %hook.name,
                    target = %hook.target.describe(),
                    event.sequence = event.sequence,
                    event.kind = event.what.name(),
                    attempts,
                    "hook delivery failed: {}",
                    first_line(&err)
                );
                metrics.hook_delivery(&hook.name, HookDelivery::Failed);
                let failure = HookFailure {
                    hook: hook.name.clone(),
                    event_sequence: event.sequence,
                    event_kind: event.what.name().to_owned(),
                    attempts,
                    error: format!("{err:#}"),
                    failed_at_unix_ms: now_unix_ms(),
                };
                if failures.send(failure).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// What the log says of an error: its first line, without a command's standard error (which
/// may repeat host-written text from the event).
fn first_line(err: &anyhow::Error) -> String {
    err.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// One try: the command ran and exited 0, or the URL answered 2xx.
async fn deliver_once(
    target: &HookTarget,
    json: &str,
    kind: &str,
    client: Option<&reqwest::Client>,
) -> anyhow::Result<()> {
    match target {
        HookTarget::Command(argv) => run_command(argv, json, kind).await,
        HookTarget::Url(url) => {
            let client = client.context("no HTTP client")?;
            let response = client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("X-Brine-Event", kind)
                .body(json.to_owned())
                .send()
                .await
                // Without the URL: it may hold credentials or a token in its query.
                .map_err(|err| anyhow::anyhow!("{}", describe_http_error(err)))?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                anyhow::bail!("answered HTTP {status}")
            }
        }
    }
}

/// A request's error without its URL, with its causes (a refused connection says so).
fn describe_http_error(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The largest event put in `BRINE_EVENT` too: Linux refuses to start a program with a
/// variable of more than 128 KiB (a finished job of thousands of hosts), so larger events go
/// to standard input only.
const MAX_EVENT_VARIABLE: usize = 64 * 1024;

/// Variables of the master's environment a command hook gets; nothing else of it (which may
/// hold `BRINE_MASTER_*` settings, registry passwords among them).
const PASSED_VARIABLES: &[&str] = &["PATH", "LANG", "TZ"];

/// Runs `argv` (no shell) with the event's JSON on its standard input and in `BRINE_EVENT`;
/// the child is killed if the try is abandoned (its timeout).
async fn run_command(argv: &[String], json: &str, kind: &str) -> anyhow::Result<()> {
    let (program, args) = argv.split_first().context("no program")?;
    let passed = PASSED_VARIABLES
        .iter()
        .filter_map(|name| Some((*name, std::env::var_os(name)?)));
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(passed)
        .env("BRINE_EVENT_KIND", kind);
    if json.len() <= MAX_EVENT_VARIABLE {
        command.env("BRINE_EVENT", json);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input may exit first; its exit status decides.
        let _ = stdin.write_all(json.as_bytes()).await;
    }
    let output = child
        .wait_with_output()
        .await
        .with_context(|| format!("cannot wait for {program}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = brine_common::limits::truncate(stderr.trim().to_owned(), STDERR_KEPT);
    if stderr.is_empty() {
        anyhow::bail!("{program} {}", output.status)
    }
    anyhow::bail!("{program} {}\n{stderr}", output.status)
}

#[cfg(test)]
mod tests {
    use brine_common::fleet_event::FleetEventKind;
    use brine_common::names::MinionId;

    use super::*;
    use crate::store::StoreLocation;

    fn hook(name: &str, argv: &[&str], timeout: Duration, retries: u32) -> HookConfig {
        HookConfig {
            name: name.into(),
            on: ["host_linked"].into(),
            status: Default::default(),
            target: HookTarget::Command(argv.iter().map(|a| (*a).to_owned()).collect()),
            timeout,
            retries,
        }
    }

    fn linked(sequence: u64) -> Arc<FleetEvent> {
        Arc::new(FleetEvent {
            sequence,
            at_unix_ms: 0,
            what: FleetEventKind::HostLinked {
                minion_id: MinionId::new("web-1").unwrap(),
            },
        })
    }

    async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(&StoreLocation::File(dir.path().join("state.redb")))
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_delivery_as_a_failure_without_waiting() {
        let (_dir, store) = store().await;
        let hooks = [hook("slow", &["/bin/true"], Duration::from_secs(1), 0)];
        // Nothing delivers: the runner is never started.
        let (queues, mut runner) = prepare(&hooks, store, Metrics::new());
        for sequence in 1..=HOOK_QUEUE as u64 + 1 {
            queues.offer(&linked(sequence));
        }
        let dropped = runner
            .failures_out
            .try_recv()
            .expect("one dropped delivery");
        assert_eq!(dropped.hook, "slow");
        assert_eq!(dropped.event_sequence, HOOK_QUEUE as u64 + 1);
        assert_eq!(dropped.attempts, 0);
        assert!(runner.failures_out.try_recv().is_err(), "only one");
    }

    #[tokio::test]
    async fn a_command_gets_the_event_on_stdin_and_a_hanging_one_is_cut_at_its_timeout() {
        let json = r#"{"kind":"host_linked"}"#;
        let argv = |script: &str| vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
        // This process has HOME set; the hook gets none of the master's environment but PATH,
        // LANG and TZ.
        let target = HookTarget::Command(argv(
            r#"test "$(cat)" = "$BRINE_EVENT" && test "$BRINE_EVENT_KIND" = host_linked && test -z "${HOME:-}""#,
        ));
        deliver_once(&target, json, "host_linked", None)
            .await
            .expect("the command saw the JSON on stdin and in its variables");
        // Too large for a variable: on standard input only.
        let large = format!(
            r#"{{"kind":"host_linked","padding":"{}"}}"#,
            "x".repeat(200_000)
        );
        let target = HookTarget::Command(argv(
            r#"test "$(cat | wc -c)" -gt 200000 && test -z "${BRINE_EVENT:-}""#,
        ));
        deliver_once(&target, &large, "host_linked", None)
            .await
            .expect("a large event reaches the command on its standard input");
        let failing = HookTarget::Command(argv("echo 'no such channel' >&2; exit 3"));
        let err = deliver_once(&failing, json, "host_linked", None)
            .await
            .unwrap_err();
        assert_eq!(first_line(&err), "/bin/sh exit status: 3");
        assert!(format!("{err:#}").contains("no such channel"), "{err:#}");

        let started = tokio::time::Instant::now();
        let hanging = HookTarget::Command(argv("sleep 30"));
        let cut = tokio::time::timeout(
            Duration::from_millis(200),
            deliver_once(&hanging, json, "host_linked", None),
        )
        .await;
        assert!(cut.is_err(), "still running at its timeout");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_url_hook_failure_never_names_the_url() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let url = reqwest::Url::parse(&format!(
            "http://user:password@127.0.0.1:{port}/hook?token=SECRET"
        ))
        .unwrap();
        let target = HookTarget::Url(url);
        assert_eq!(
            target.describe(),
            format!("http://127.0.0.1:{port}/hook"),
            "no credentials or query in the log"
        );
        let client = http_client().expect("a client, without a process-wide crypto provider");
        let err = deliver_once(&target, "{}", "host_linked", Some(&client))
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            !text.contains("SECRET") && !text.contains("password"),
            "{text}"
        );
        assert!(text.to_lowercase().contains("connect"), "{text}");
    }
}
