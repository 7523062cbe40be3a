//! Sessions on this host: a managed container's logs, or a command run in it, streamed back to
//! the master (`brine-master logs` and `exec`). Each runs in a task of its own beside the
//! keeper: it changes no container, so it neither waits for a running job nor holds one up.
//! A session reaches only a container brine manages in this minion's namespace, under its
//! declared name (never a temporary `NAME.next` or `NAME.replaced`), and sends within the
//! limits the master set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brine_common::limits::MAX_OUTPUT_CHUNK;
use brine_common::session::{
    OutputStream, RateBudget, SessionEnd, SessionEvent, SessionId, SessionKind, SessionLimits,
    SessionMessage, SessionRequest,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::reconcile::execute::Executor;
use crate::reconcile::plan::docker_name;
use crate::runtime::{ContainerRuntime, OutputBytes, labels};

/// How many sessions may run on this host at once; more are refused.
pub const MAX_SESSIONS: usize = 8;
/// Output goes up in chunks of at most this many bytes...
const CHUNK_BYTES: usize = 32 * 1024;
/// ...at least this often while there is some, so a followed log reads live without a message
/// per line.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Pieces of output from the engine waiting to be chunked.
const ENGINE_QUEUE: usize = 16;

const _: () = assert!(CHUNK_BYTES <= MAX_OUTPUT_CHUNK);

/// The sessions of one link: they end with it ([`Sessions::stop_all_on_drop`]).
pub struct Sessions {
    // A std mutex: it is never held across an await.
    running: Mutex<HashMap<SessionId, CancellationToken>>,
    all: CancellationToken,
    /// Where sessions' messages go up to the master, in order.
    messages: mpsc::Sender<SessionMessage>,
}

impl Sessions {
    pub fn new(messages: mpsc::Sender<SessionMessage>) -> Arc<Self> {
        Arc::new(Self {
            running: Mutex::default(),
            all: CancellationToken::new(),
            messages,
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, CancellationToken>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `request` in a task of its own, for at most `lasts` (`None`: until stopped); one
    /// over [`MAX_SESSIONS`] or with an id already running is refused with a `SessionEnded`.
    pub fn start<R: ContainerRuntime + 'static>(
        self: &Arc<Self>,
        executor: Arc<Executor<R>>,
        request: SessionRequest,
        lasts: Option<Duration>,
    ) {
        let id = request.session_id.clone();
        let cancel = self.all.child_token();
        let refusal = {
            let mut running = self.running();
            if running.len() >= MAX_SESSIONS {
                Some(format!(
                    "this host runs {MAX_SESSIONS} sessions already; try again when one ended"
                ))
            } else if running.contains_key(&id) {
                Some("a session with this id runs already".to_owned())
            } else {
                running.insert(id.clone(), cancel.clone());
                None
            }
        };
        let sessions = self.clone();
        if let Some(error) = refusal {
            tracing::warn!(session.id = %id, "refused a session: {error}");
            tokio::spawn(async move {
                let end = SessionEnd {
                    error: Some(error),
                    ..SessionEnd::default()
                };
                sessions.send(&id, SessionEvent::Ended(end)).await;
            });
            return;
        }
        tokio::spawn(async move {
            let end = tokio::select! {
                end = run(&executor, &request, lasts, &sessions) => end,
                () = cancel.cancelled() => SessionEnd {
                    error: Some("stopped: the caller went away".into()),
                    ..SessionEnd::default()
                },
            };
            sessions.running().remove(&id);
            sessions.send(&id, SessionEvent::Ended(end)).await;
        });
    }

    /// A guard that stops every session when dropped: the link holds it, as each running
    /// session holds the sessions themselves.
    pub fn stop_all_on_drop(&self) -> tokio_util::sync::DropGuard {
        self.all.clone().drop_guard()
    }

    /// Stops session `id`, if it runs.
    pub fn stop(&self, id: &SessionId) {
        if let Some(cancel) = self.running().get(id) {
            tracing::info!(session.id = %id, "session stopped by the master");
            cancel.cancel();
        }
    }

    async fn send(&self, id: &SessionId, event: SessionEvent) {
        // A link that closed meanwhile ended the session's caller too.
        let _ = self
            .messages
            .send(SessionMessage {
                session_id: id.clone(),
                event,
            })
            .await;
    }
}

/// Runs one session to its end.
async fn run<R: ContainerRuntime>(
    executor: &Executor<R>,
    request: &SessionRequest,
    lasts: Option<Duration>,
    sessions: &Sessions,
) -> SessionEnd {
    let failed = |error: String| SessionEnd {
        error: Some(error),
        ..SessionEnd::default()
    };
    let container_id = match find_container(executor, request).await {
        Ok(id) => id,
        Err(error) => return failed(error),
    };
    let what = match &request.kind {
        SessionKind::Logs(_) => "logs",
        SessionKind::Exec(_) => "exec",
    };
    tracing::info!(session.id = %request.session_id, container = %request.container, what, "session started");
    sessions
        .send(&request.session_id, SessionEvent::Accepted)
        .await;
    let runtime = executor.runtime();
    let (engine_output, mut pieces) = mpsc::channel(ENGINE_QUEUE);
    let engine = async move {
        match &request.kind {
            SessionKind::Logs(options) => runtime
                .logs(&container_id, options, &engine_output)
                .await
                .map(|()| None),
            SessionKind::Exec(command) => runtime
                .exec_attached(&container_id, command.argv(), &engine_output)
                .await
                .map(Some),
        }
    };
    let mut shaper = Shaper::new(request.limits);
    let started = Instant::now();
    let forward = async {
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        loop {
            let chunks = tokio::select! {
                piece = pieces.recv() => match piece {
                    Some(piece) => {
                        let now_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                        shaper.push(piece, now_ms)
                    }
                    None => break,
                },
                _ = flush.tick() => shaper.flush(),
            };
            for chunk in chunks {
                sessions.send(&request.session_id, chunk).await;
            }
        }
        for chunk in shaper.flush() {
            sessions.send(&request.session_id, chunk).await;
        }
    };
    let deadline = async {
        match lasts {
            Some(lasts) => tokio::time::sleep(lasts).await,
            None => std::future::pending().await,
        }
    };
    let both = async { futures::join!(engine, forward).0 };
    let outcome = tokio::select! {
        outcome = both => outcome,
        () = deadline => {
            return SessionEnd {
                timed_out: true,
                truncated: shaper.truncated,
                ..SessionEnd::default()
            };
        }
    };
    match outcome {
        Ok(exit_code) => SessionEnd {
            exit_code,
            truncated: shaper.truncated,
            ..SessionEnd::default()
        },
        Err(err) => SessionEnd {
            error: Some(err.to_string()),
            truncated: shaper.truncated,
            ..SessionEnd::default()
        },
    }
}

/// The Docker id of the container `request` is for: brine manages it, in this namespace, for
/// that role, under its declared name; a command needs it running.
async fn find_container<R: ContainerRuntime>(
    executor: &Executor<R>,
    request: &SessionRequest,
) -> Result<String, String> {
    let namespace = executor.namespace();
    let wanted = docker_name(namespace, &request.container);
    let managed = executor
        .runtime()
        .list_managed(namespace)
        .await
        .map_err(|err| err.to_string())?;
    let found = managed.into_iter().find(|c| {
        c.belongs_to(namespace)
            && c.docker_name == wanted
            && c.label(labels::ROLE) == Some(request.role.as_str())
            && c.label(labels::CONTAINER) == Some(request.container.as_str())
    });
    let Some(container) = found else {
        return Err(format!(
            "no container {} of role {} that brine manages on this host",
            request.container, request.role
        ));
    };
    if matches!(request.kind, SessionKind::Exec(_)) && !container.is_running() {
        return Err(format!(
            "container {} is {}, not running",
            request.container, container.state
        ));
    }
    Ok(container.id)
}

/// Turns what the engine hands over into the chunks a session sends: in order, at most
/// [`CHUNK_BYTES`] each, a stream's pieces joined while they fit; over the session's
/// `max_bytes` nothing more (and the end says so); over its rate, whole pieces left out and
/// counted on the next chunk. Pure: the caller passes the time.
struct Shaper {
    limits: SessionLimits,
    budget: RateBudget,
    sent_bytes: u64,
    dropped_bytes: u64,
    truncated: bool,
    /// The chunk being filled, with the bytes left out before it.
    pending: Option<(OutputStream, Vec<u8>, u64)>,
}

impl Shaper {
    fn new(limits: SessionLimits) -> Self {
        Self {
            limits,
            budget: RateBudget::new(&limits),
            sent_bytes: 0,
            dropped_bytes: 0,
            truncated: false,
            pending: None,
        }
    }

    /// Takes `piece`; the chunks that are full.
    fn push(&mut self, piece: OutputBytes, now_ms: u64) -> Vec<SessionEvent> {
        let mut data = piece.data;
        if self.truncated || data.is_empty() {
            return vec![];
        }
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        if !self.budget.allow(len, now_ms) {
            self.dropped_bytes = self.dropped_bytes.saturating_add(len);
            return vec![];
        }
        if self.limits.max_bytes > 0 {
            let room = self.limits.max_bytes.saturating_sub(self.sent_bytes);
            if len > room {
                data.truncate(usize::try_from(room).unwrap_or(usize::MAX));
                self.truncated = true;
            }
        }
        self.sent_bytes = self
            .sent_bytes
            .saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
        let mut full = vec![];
        for part in data.chunks(CHUNK_BYTES) {
            let fits = matches!(&self.pending, Some((stream, bytes, _))
                if *stream == piece.stream && bytes.len() + part.len() <= CHUNK_BYTES);
            if fits {
                if let Some((_, bytes, _)) = &mut self.pending {
                    bytes.extend_from_slice(part);
                }
            } else {
                full.extend(self.take_pending());
                let dropped = std::mem::take(&mut self.dropped_bytes);
                self.pending = Some((piece.stream, part.to_vec(), dropped));
            }
        }
        full
    }

    /// The chunk being filled, and a count of bytes left out since the last chunk.
    fn flush(&mut self) -> Vec<SessionEvent> {
        let mut chunks: Vec<SessionEvent> = self.take_pending().into_iter().collect();
        if self.dropped_bytes > 0 {
            chunks.push(SessionEvent::Output {
                stream: OutputStream::Stderr,
                data: vec![],
                dropped_bytes: std::mem::take(&mut self.dropped_bytes),
            });
        }
        chunks
    }

    fn take_pending(&mut self) -> Option<SessionEvent> {
        self.pending
            .take()
            .map(|(stream, data, dropped_bytes)| SessionEvent::Output {
                stream,
                data,
                dropped_bytes,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use brine_common::names::{ContainerName, RoleName};
    use brine_common::session::{Command, LogsOptions};
    use brine_common::spec::ImageRef;

    use crate::runtime::{
        ContainerStatus, CreateRequest, EngineEvent, ImageRemoval, ObservedContainer, PullProgress,
        PulledImage, RuntimeError,
    };

    /// An engine that lists what it is given, as is (so the session's own checks are what
    /// keeps other containers out), and answers logs and commands with where they ran.
    struct Engine {
        containers: Vec<ObservedContainer>,
    }

    fn refused<T>() -> Result<T, RuntimeError> {
        Err(RuntimeError::Other("a session changes nothing".into()))
    }

    impl ContainerRuntime for Engine {
        async fn version(&self) -> Result<String, RuntimeError> {
            Ok("fake".into())
        }
        async fn list_managed(&self, _: &str) -> Result<Vec<ObservedContainer>, RuntimeError> {
            Ok(self.containers.clone())
        }
        async fn pull(
            &self,
            _: &ImageRef,
            _: &(dyn Fn(PullProgress) + Send + Sync),
        ) -> Result<PulledImage, RuntimeError> {
            refused()
        }
        async fn local_image(&self, _: &ImageRef) -> Result<Option<PulledImage>, RuntimeError> {
            Ok(None)
        }
        async fn create(&self, _: &CreateRequest) -> Result<String, RuntimeError> {
            refused()
        }
        async fn start(&self, _: &str) -> Result<(), RuntimeError> {
            refused()
        }
        async fn stop(&self, _: &str, _: u32) -> Result<(), RuntimeError> {
            refused()
        }
        async fn remove(&self, _: &str) -> Result<(), RuntimeError> {
            refused()
        }
        async fn rename(&self, _: &str, _: &str) -> Result<(), RuntimeError> {
            refused()
        }
        async fn inspect(&self, _: &str) -> Result<ContainerStatus, RuntimeError> {
            refused()
        }
        async fn exec(&self, _: &str, _: &[String]) -> Result<i64, RuntimeError> {
            refused()
        }
        async fn remove_image(&self, _: &ImageRef) -> Result<ImageRemoval, RuntimeError> {
            refused()
        }
        async fn follow_events(
            &self,
            _: &str,
            _: std::time::SystemTime,
            _: &(dyn Fn(EngineEvent) + Send + Sync),
        ) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn logs(
            &self,
            id: &str,
            options: &LogsOptions,
            output: &mpsc::Sender<OutputBytes>,
        ) -> Result<(), RuntimeError> {
            let line = format!("log of {id}, {} lines\n", options.tail);
            let _ = output.send(piece(OutputStream::Stdout, &line)).await;
            Ok(())
        }
        async fn exec_attached(
            &self,
            id: &str,
            command: &[String],
            output: &mpsc::Sender<OutputBytes>,
        ) -> Result<i64, RuntimeError> {
            let line = format!("ran {} in {id}\n", command.join(" "));
            let _ = output.send(piece(OutputStream::Stderr, &line)).await;
            Ok(3)
        }
    }

    /// A container named `docker_name`, with brine's labels when `namespace` is given.
    fn observed(
        id: &str,
        docker_name: &str,
        namespace: Option<&str>,
        state: &str,
    ) -> ObservedContainer {
        let mut labels = std::collections::HashMap::new();
        if let Some(namespace) = namespace {
            labels.insert(labels::MANAGED.to_owned(), "true".to_owned());
            labels.insert(labels::NAMESPACE.to_owned(), namespace.to_owned());
            labels.insert(labels::ROLE.to_owned(), "web".to_owned());
            labels.insert(labels::CONTAINER.to_owned(), "app".to_owned());
        }
        ObservedContainer {
            id: id.into(),
            docker_name: docker_name.into(),
            image: "app".into(),
            image_id: "sha256:1".into(),
            state: state.into(),
            labels,
            published: vec![],
            unhealthy: false,
        }
    }

    fn request(kind: SessionKind) -> SessionRequest {
        SessionRequest {
            session_id: SessionId::new("job-1-0").unwrap(),
            role: RoleName::new("web").unwrap(),
            container: ContainerName::new("app").unwrap(),
            kind,
            limits: UNLIMITED,
            ends_at_unix_ms: None,
        }
    }

    fn exec_kind() -> SessionKind {
        SessionKind::Exec(Command::new(vec!["id".into()]).unwrap())
    }

    /// Runs one session on an engine holding `containers`; everything it said.
    async fn session(containers: Vec<ObservedContainer>, kind: SessionKind) -> Vec<SessionEvent> {
        let executor = Arc::new(Executor::new(Engine { containers }, "ns".into()));
        let (messages, mut said) = mpsc::channel(16);
        let sessions = Sessions::new(messages);
        sessions.start(executor, request(kind), Some(Duration::from_secs(10)));
        let mut events = vec![];
        while let Some(message) = said.recv().await {
            let last = matches!(message.event, SessionEvent::Ended(_));
            events.push(message.event);
            if last {
                break;
            }
        }
        events
    }

    fn error_of(events: &[SessionEvent]) -> String {
        match events.last() {
            Some(SessionEvent::Ended(end)) => end.error.clone().unwrap_or_default(),
            other => panic!("no end: {other:?}"),
        }
    }

    #[tokio::test]
    async fn only_the_declared_container_brine_manages_here_is_reached() {
        let strangers = vec![
            // Under the very Docker name brine would give it, but not created by brine.
            observed("impostor", "ns.app", None, "running"),
            // brine's, in another minion's namespace.
            observed("elsewhere", "other.app", Some("other"), "running"),
            // brine's own, but a replacement's temporary container.
            observed("next", "ns.app.next", Some("ns"), "running"),
        ];
        let events = session(strangers.clone(), exec_kind()).await;
        assert_eq!(events.len(), 1, "refused before anything runs: {events:?}");
        assert!(error_of(&events).contains("no container app of role web that brine manages"));

        let mut with_it = strangers;
        with_it.push(observed("good", "ns.app", Some("ns"), "running"));
        let events = session(with_it, exec_kind()).await;
        assert_eq!(
            events,
            vec![
                SessionEvent::Accepted,
                output(OutputStream::Stderr, "ran id in good\n", 0),
                SessionEvent::Ended(SessionEnd {
                    exit_code: Some(3),
                    ..SessionEnd::default()
                }),
            ]
        );
    }

    #[tokio::test]
    async fn a_command_needs_its_container_running_and_a_stopped_ones_log_is_read() {
        let stopped = vec![observed("good", "ns.app", Some("ns"), "exited")];
        let events = session(stopped.clone(), exec_kind()).await;
        assert!(
            error_of(&events).contains("is exited, not running"),
            "{events:?}"
        );
        let logs = SessionKind::Logs(LogsOptions {
            since_unix_ms: None,
            tail: 5,
            follow: false,
        });
        let events = session(stopped, logs).await;
        assert_eq!(
            events[1],
            output(OutputStream::Stdout, "log of good, 5 lines\n", 0)
        );
        assert_eq!(events[2], SessionEvent::Ended(SessionEnd::default()));
    }

    fn piece(stream: OutputStream, text: &str) -> OutputBytes {
        OutputBytes {
            stream,
            data: text.as_bytes().to_vec(),
        }
    }

    fn output(stream: OutputStream, text: &str, dropped_bytes: u64) -> SessionEvent {
        SessionEvent::Output {
            stream,
            data: text.as_bytes().to_vec(),
            dropped_bytes,
        }
    }

    const UNLIMITED: SessionLimits = SessionLimits {
        max_bytes: 0,
        bytes_per_second: 0,
        burst_bytes: 0,
    };

    #[test]
    fn pieces_of_one_stream_are_joined_and_a_change_of_stream_starts_a_chunk() {
        let mut shaper = Shaper::new(UNLIMITED);
        assert!(
            shaper
                .push(piece(OutputStream::Stdout, "a\n"), 0)
                .is_empty()
        );
        assert!(
            shaper
                .push(piece(OutputStream::Stdout, "b\n"), 0)
                .is_empty()
        );
        let full = shaper.push(piece(OutputStream::Stderr, "oops\n"), 0);
        assert_eq!(full, vec![output(OutputStream::Stdout, "a\nb\n", 0)]);
        assert_eq!(
            shaper.flush(),
            vec![output(OutputStream::Stderr, "oops\n", 0)]
        );
        assert!(shaper.flush().is_empty());
        let big = shaper.push(
            OutputBytes {
                stream: OutputStream::Stdout,
                data: vec![b'x'; CHUNK_BYTES * 2 + 1],
            },
            0,
        );
        assert_eq!(big.len(), 2, "two full chunks, the rest pending");
        assert!(big.iter().all(|chunk| matches!(chunk,
            SessionEvent::Output { data, .. } if data.len() == CHUNK_BYTES)));
    }

    #[test]
    fn output_over_the_cap_is_cut_and_said_to_be() {
        let mut shaper = Shaper::new(SessionLimits {
            max_bytes: 5,
            ..UNLIMITED
        });
        shaper.push(piece(OutputStream::Stdout, "abc"), 0);
        shaper.push(piece(OutputStream::Stdout, "defgh"), 0);
        shaper.push(piece(OutputStream::Stdout, "more"), 0);
        assert!(shaper.truncated);
        assert_eq!(
            shaper.flush(),
            vec![output(OutputStream::Stdout, "abcde", 0)]
        );
    }

    #[test]
    fn output_over_the_rate_is_left_out_and_counted() {
        let mut shaper = Shaper::new(SessionLimits {
            max_bytes: 0,
            bytes_per_second: 10,
            burst_bytes: 10,
        });
        shaper.push(piece(OutputStream::Stdout, "12345678\n"), 0);
        shaper.push(piece(OutputStream::Stdout, "dropped\n"), 0);
        assert_eq!(
            shaper.flush(),
            vec![
                output(OutputStream::Stdout, "12345678\n", 0),
                output(OutputStream::Stderr, "", 8),
            ],
            "what was left out is counted at the next flush, alone if nothing else goes"
        );
        shaper.push(piece(OutputStream::Stdout, "lost\n"), 100);
        assert_eq!(shaper.flush(), vec![output(OutputStream::Stderr, "", 5)]);
        shaper.push(piece(OutputStream::Stdout, "again\n"), 60);
        shaper.push(piece(OutputStream::Stdout, "1s later\n"), 1_100);
        assert_eq!(
            shaper.flush(),
            vec![output(OutputStream::Stdout, "1s later\n", 6)]
        );
        assert!(!shaper.truncated);
    }
}
