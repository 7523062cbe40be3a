//! The view over an in-memory engine whose events the test sends by hand: what it answers
//! without asking the engine, and that it never answers wrong.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use brine_common::names::{ContainerName, RoleName};
use brine_common::spec::{ContainerSpec, RestartPolicy};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use super::*;
use crate::runtime::labels;

const NS: &str = "host";
const IMAGE: &str =
    "registry.example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// What the test tells the engine's event stream to do.
enum Script {
    Send(EngineEvent),
    /// Sends this many events at once, more than the view keeps waiting.
    Burst(usize),
}

/// An engine in memory that counts the reads the view makes of it. Its event stream sends what
/// the test scripts and ends when the test drops the sender. Clones share it.
#[derive(Clone, Default)]
struct Engine(Arc<State>);

#[derive(Default)]
struct State {
    containers: Mutex<BTreeMap<String, ObservedContainer>>,
    images: Mutex<HashMap<ImageRef, PulledImage>>,
    script: Mutex<Option<mpsc::UnboundedReceiver<Script>>>,
    lists: AtomicUsize,
    looks: AtomicUsize,
    image_lookups: AtomicUsize,
    next_id: AtomicUsize,
}

fn container(id: &str, name: &str, state: &str) -> ObservedContainer {
    ObservedContainer {
        id: id.to_owned(),
        docker_name: name.to_owned(),
        image: IMAGE.to_owned(),
        image_id: "sha256:a".to_owned(),
        state: state.to_owned(),
        labels: HashMap::from([
            (labels::MANAGED.to_owned(), "true".to_owned()),
            (labels::NAMESPACE.to_owned(), NS.to_owned()),
        ]),
        published: vec![],
        unhealthy: false,
    }
}

fn unused() -> RuntimeError {
    RuntimeError::Other("not used by the view's tests".into())
}

impl std::ops::Deref for Engine {
    type Target = State;

    fn deref(&self) -> &State {
        &self.0
    }
}

impl ContainerRuntime for Engine {
    async fn version(&self) -> Result<String, RuntimeError> {
        Ok("memory".into())
    }

    async fn list_managed(&self, _namespace: &str) -> Result<Vec<ObservedContainer>, RuntimeError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        Ok(self.containers.lock().unwrap().values().cloned().collect())
    }

    async fn observe(
        &self,
        _namespace: &str,
        id: &str,
    ) -> Result<Option<ObservedContainer>, RuntimeError> {
        self.looks.fetch_add(1, Ordering::SeqCst);
        Ok(self.containers.lock().unwrap().get(id).cloned())
    }

    async fn clock(&self) -> Result<SystemTime, RuntimeError> {
        Ok(SystemTime::now())
    }

    async fn pull(
        &self,
        image: &ImageRef,
        _progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<PulledImage, RuntimeError> {
        let pulled = PulledImage {
            image_id: "sha256:a".into(),
            repo_digest: Some(image.to_string()),
        };
        self.images
            .lock()
            .unwrap()
            .insert(image.clone(), pulled.clone());
        Ok(pulled)
    }

    async fn local_image(&self, image: &ImageRef) -> Result<Option<PulledImage>, RuntimeError> {
        self.image_lookups.fetch_add(1, Ordering::SeqCst);
        Ok(self.images.lock().unwrap().get(image).cloned())
    }

    async fn create(&self, request: &CreateRequest) -> Result<String, RuntimeError> {
        let id = format!("new{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        self.containers
            .lock()
            .unwrap()
            .insert(id.clone(), container(&id, &request.docker_name, "created"));
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let mut containers = self.containers.lock().unwrap();
        let found = containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::Gone(id.into()))?;
        found.state = "running".into();
        Ok(())
    }

    async fn stop(&self, _id: &str, _timeout_seconds: u32) -> Result<(), RuntimeError> {
        Err(unused())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.containers.lock().unwrap().remove(id);
        Ok(())
    }

    async fn rename(&self, _id: &str, _new_name: &str) -> Result<(), RuntimeError> {
        Err(unused())
    }

    async fn inspect(&self, _id: &str) -> Result<ContainerStatus, RuntimeError> {
        Err(unused())
    }

    async fn exec(&self, _id: &str, _command: &[String]) -> Result<i64, RuntimeError> {
        Err(unused())
    }

    async fn logs(
        &self,
        _id: &str,
        _options: &LogsOptions,
        _output: &mpsc::Sender<OutputBytes>,
    ) -> Result<(), RuntimeError> {
        Err(unused())
    }

    async fn exec_attached(
        &self,
        _id: &str,
        _command: &[String],
        _output: &mpsc::Sender<OutputBytes>,
    ) -> Result<i64, RuntimeError> {
        Err(unused())
    }

    async fn remove_image(&self, image: &ImageRef) -> Result<ImageRemoval, RuntimeError> {
        Ok(match self.images.lock().unwrap().remove(image) {
            Some(_) => ImageRemoval::Removed,
            None => ImageRemoval::Absent,
        })
    }

    async fn follow_events(
        &self,
        _namespace: &str,
        _since: SystemTime,
        seen: &(dyn Fn(EngineEvent) + Send + Sync),
    ) -> Result<(), RuntimeError> {
        let mut script = self.script.lock().unwrap().take().expect("one stream");
        while let Some(step) = script.recv().await {
            match step {
                Script::Send(event) => seen(event),
                Script::Burst(count) => {
                    for _ in 0..count {
                        seen(EngineEvent::Image);
                    }
                }
            }
        }
        Err(RuntimeError::Unavailable("the event stream ended".into()))
    }
}

/// A view following the engine's events, its engine, the sender of its events, and how often
/// it reported a container that ended.
struct Followed {
    view: Arc<EngineView<Engine>>,
    engine: Engine,
    events: UnboundedSender<Script>,
    ended: Arc<AtomicUsize>,
    following: tokio::task::JoinHandle<Result<(), RuntimeError>>,
}

/// An engine running `web` from the pinned image, and a view that follows it.
async fn followed() -> Followed {
    let engine = Engine::default();
    engine
        .containers
        .lock()
        .unwrap()
        .insert("c1".into(), container("c1", "host.web", "running"));
    engine.pull(&image(), &|_| {}).await.unwrap();
    let (events, script) = unbounded_channel();
    *engine.script.lock().unwrap() = Some(script);
    let view = Arc::new(EngineView::new(engine.clone(), NS.to_owned()));
    let ended = Arc::new(AtomicUsize::new(0));
    let following = tokio::spawn({
        let (view, ended) = (view.clone(), ended.clone());
        async move {
            let count = move || {
                ended.fetch_add(1, Ordering::SeqCst);
            };
            view.follow(&count).await
        }
    });
    eventually(|| view.is_current()).await;
    Followed {
        view,
        engine,
        events,
        ended,
        following,
    }
}

fn image() -> ImageRef {
    ImageRef::new(IMAGE).unwrap()
}

async fn eventually(condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the condition did not hold within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn names(view: &EngineView<Engine>) -> Vec<String> {
    view.list_managed(NS)
        .await
        .unwrap()
        .into_iter()
        .map(|c| format!("{} {}", c.docker_name, c.state))
        .collect()
}

#[tokio::test]
async fn reads_are_answered_without_the_engine_while_its_events_are_followed() {
    let f = followed().await;
    let lists = f.engine.lists.load(Ordering::SeqCst);
    assert_eq!(lists, 1, "one listing starts the view");
    for _ in 0..3 {
        assert_eq!(names(&f.view).await, ["host.web running"]);
        assert!(f.view.local_image(&image()).await.unwrap().is_some());
    }
    assert_eq!(f.engine.lists.load(Ordering::SeqCst), lists);
    assert_eq!(f.engine.looks.load(Ordering::SeqCst), 0);
    assert_eq!(
        f.engine.image_lookups.load(Ordering::SeqCst),
        1,
        "only the first lookup of an image asks the engine"
    );
}

#[tokio::test]
async fn a_container_removed_behind_its_back_is_seen_through_its_event() {
    let f = followed().await;
    f.engine.containers.lock().unwrap().remove("c1");
    f.events
        .send(Script::Send(EngineEvent::Container {
            id: "c1".into(),
            ended: true,
        }))
        .unwrap();
    eventually(|| f.ended.load(Ordering::SeqCst) == 1).await;
    // The keeper hears of the end only once the view shows it.
    assert!(names(&f.view).await.is_empty());
    assert_eq!(f.engine.looks.load(Ordering::SeqCst), 1);
    assert_eq!(f.engine.lists.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_image_deleted_behind_its_back_is_seen_through_its_event() {
    let f = followed().await;
    assert!(f.view.local_image(&image()).await.unwrap().is_some());
    f.engine.images.lock().unwrap().clear();
    f.events.send(Script::Send(EngineEvent::Image)).unwrap();
    let view = f.view.clone();
    eventually(|| view.seen().images.is_empty()).await;
    assert_eq!(f.view.local_image(&image()).await.unwrap(), None);
    assert_eq!(f.engine.image_lookups.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_minions_own_changes_are_seen_before_their_events() {
    let f = followed().await;
    let request = CreateRequest {
        docker_name: "host.worker".into(),
        spec: ContainerSpec {
            role: RoleName::new("web").unwrap(),
            name: ContainerName::new("worker").unwrap(),
            image: image(),
            command: vec![],
            env: Default::default(),
            ports: vec![],
            volumes: vec![],
            restart: RestartPolicy::UnlessStopped,
            stop_timeout_seconds: 1,
            health: Default::default(),
            secret_env: Default::default(),
            proxy: None,
            hooks: None,
        },
        labels: HashMap::new(),
    };
    let id = f.view.create(&request).await.unwrap();
    f.view.start(&id).await.unwrap();
    assert_eq!(
        names(&f.view).await,
        ["host.web running", "host.worker running"]
    );
    f.view.remove("c1").await.unwrap();
    assert_eq!(names(&f.view).await, ["host.worker running"]);
    f.view.remove_image(&image()).await.unwrap();
    assert_eq!(f.view.local_image(&image()).await.unwrap(), None);
    assert_eq!(f.engine.lists.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn lost_events_bring_a_full_listing() {
    let f = followed().await;
    f.engine
        .containers
        .lock()
        .unwrap()
        .get_mut("c1")
        .unwrap()
        .state = "exited".into();
    f.events.send(Script::Burst(EVENT_BACKLOG + 10)).unwrap();
    eventually(|| f.engine.lists.load(Ordering::SeqCst) == 2).await;
    eventually(|| f.ended.load(Ordering::SeqCst) == 1).await;
    assert_eq!(names(&f.view).await, ["host.web exited"]);
}

#[tokio::test]
async fn a_broken_stream_sends_every_read_to_the_engine() {
    let f = followed().await;
    drop(f.events);
    let ended = f.following.await.unwrap();
    assert!(matches!(ended, Err(RuntimeError::Unavailable(_))));
    assert!(!f.view.is_current());
    f.engine.containers.lock().unwrap().clear();
    assert!(names(&f.view).await.is_empty());
    assert!(f.view.local_image(&image()).await.unwrap().is_some());
    assert_eq!(f.engine.lists.load(Ordering::SeqCst), 2);
    assert_eq!(f.engine.image_lookups.load(Ordering::SeqCst), 1);
}
