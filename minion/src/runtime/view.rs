//! The engine as the minion last saw it: the managed containers of its namespace and the images
//! it looked up, kept current from the engine's event stream, so that a job that changes nothing
//! asks the engine nothing.
//!
//! While the events are followed the view is exact up to the stream's delay: the listing that
//! starts it is taken after the moment the event replay starts from, every container event is
//! followed by a fresh look at that container, and every image event forgets the images. What the
//! minion changes itself is looked at before the call returns, so its next read sees it. When the
//! stream breaks the view is dropped, and every read goes to the engine until it is followed again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use brine_common::session::LogsOptions;
use brine_common::spec::ImageRef;
use tokio::sync::mpsc;

use super::{
    ContainerRuntime, ContainerStatus, CreateRequest, EngineEvent, ImageRemoval, ObservedContainer,
    OutputBytes, PullProgress, PulledImage, RuntimeError,
};

#[cfg(test)]
mod tests;

/// How far before the engine's "now" the event replay starts. A change replayed twice costs one
/// more look at a container; a change missed would leave the view wrong.
const REPLAY_MARGIN: Duration = Duration::from_secs(1);

/// Events received but not yet applied. Beyond that the view lists everything again.
const EVENT_BACKLOG: usize = 256;

/// A [`ContainerRuntime`] that answers [`ContainerRuntime::list_managed`] for its namespace and
/// [`ContainerRuntime::local_image`] from what it saw, while [`EngineView::follow`] runs.
#[derive(Debug)]
pub struct EngineView<R> {
    runtime: R,
    namespace: String,
    seen: Mutex<Seen>,
    /// Taken by every read of the engine whose answer replaces what the view holds, so that an
    /// answer read later is applied later: an older look never overwrites a newer one.
    looking: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Seen {
    /// The events are followed: what is below is current.
    following: bool,
    /// The namespace's managed containers, by id.
    containers: BTreeMap<String, ObservedContainer>,
    /// A look at the engine failed, or a change had an outcome nobody read: everything is
    /// listed again before the next answer.
    doubtful: bool,
    /// What the engine answered for each image looked up since the last image event.
    images: HashMap<ImageRef, Option<PulledImage>>,
    /// Counts the moments the images were forgotten, so that an answer read before one is not
    /// kept after it.
    image_epoch: u64,
}

impl Seen {
    fn forget_images(&mut self) {
        self.images.clear();
        self.image_epoch += 1;
    }
}

impl<R> EngineView<R> {
    fn seen(&self) -> MutexGuard<'_, Seen> {
        // Nothing that holds it can panic halfway through a change.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<R: ContainerRuntime> EngineView<R> {
    /// A view of `namespace`'s containers through `runtime`; empty, and answering from the
    /// engine, until [`Self::follow`] runs.
    pub fn new(runtime: R, namespace: String) -> Self {
        Self {
            runtime,
            namespace,
            seen: Mutex::default(),
            looking: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether reads are answered from the view: the events are followed and nothing is in
    /// doubt.
    pub fn is_current(&self) -> bool {
        let seen = self.seen();
        seen.following && !seen.doubtful
    }

    /// Follows the engine's events and keeps the view current until the stream ends or fails,
    /// which it returns; calls `ended` once the view shows that a managed container died,
    /// stopped or was removed. The view is dropped when this returns or is cancelled.
    pub async fn follow(&self, ended: &(dyn Fn() + Send + Sync)) -> Result<(), RuntimeError> {
        let since = self
            .runtime
            .clock()
            .await?
            .checked_sub(REPLAY_MARGIN)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let (sender, mut received) = mpsc::channel(EVENT_BACKLOG);
        let overflowed = AtomicBool::new(false);
        let queue = |event: EngineEvent| {
            if sender.try_send(event).is_err() {
                overflowed.store(true, Ordering::Relaxed);
            }
        };
        let _dropped_on_return = Forget(self);
        {
            let mut seen = self.seen();
            seen.following = true;
            seen.doubtful = true;
        }
        let mut events = std::pin::pin!(self.runtime.follow_events(&self.namespace, since, &queue));
        // The listing is read after `since` and every event from `since` on is replayed, so no
        // change falls between the two.
        self.relist().await?;
        tracing::debug!("following Docker's events");
        loop {
            tokio::select! {
                finished = &mut events => return finished,
                Some(event) = received.recv() => {
                    if overflowed.swap(false, Ordering::Relaxed) {
                        // Events were lost: start again from a full listing.
                        while received.try_recv().is_ok() {}
                        self.seen().forget_images();
                        if self.relist().await.is_ok() {
                            ended();
                        }
                        continue;
                    }
                    tracing::trace!(?event, "engine event");
                    match event {
                        EngineEvent::Container { id, ended: it_ended } => {
                            self.look_at(&id).await;
                            if it_ended {
                                ended();
                            }
                        }
                        EngineEvent::Image => self.seen().forget_images(),
                    }
                }
            }
        }
    }

    /// Lists the namespace's containers from the engine and, while events are followed, makes
    /// that the view.
    async fn relist(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let _turn = self.looking.lock().await;
        let listed = self.runtime.list_managed(&self.namespace).await;
        let mut seen = self.seen();
        if seen.following {
            match &listed {
                Ok(containers) => {
                    seen.containers = containers
                        .iter()
                        .map(|container| (container.id.clone(), container.clone()))
                        .collect();
                    seen.doubtful = false;
                }
                Err(_) => seen.doubtful = true,
            }
        }
        listed
    }

    /// Reads one container from the engine into the view, while events are followed.
    async fn look_at(&self, id: &str) {
        if !self.seen().following {
            return;
        }
        let _turn = self.looking.lock().await;
        let found = self.runtime.observe(&self.namespace, id).await;
        let mut seen = self.seen();
        if !seen.following {
            return;
        }
        match found {
            Ok(Some(container)) => {
                seen.containers.insert(id.to_owned(), container);
            }
            Ok(None) => {
                seen.containers.remove(id);
            }
            Err(err) => {
                tracing::debug!(container = id, "cannot look at a container: {err}");
                seen.doubtful = true;
            }
        }
    }
}

/// Where [`EngineView::list_managed`] finds its answer.
enum Answer {
    Seen(Vec<ObservedContainer>),
    /// The view is in doubt: list, and make that the view.
    Relist,
    /// The events are not followed: ask the engine.
    Engine,
}

/// Drops the view when [`EngineView::follow`] stops, however it stops.
struct Forget<'a, R>(&'a EngineView<R>);

impl<R> Drop for Forget<'_, R> {
    fn drop(&mut self) {
        let mut seen = self.0.seen();
        let image_epoch = seen.image_epoch + 1;
        *seen = Seen {
            image_epoch,
            ..Seen::default()
        };
    }
}

impl<R: ContainerRuntime> ContainerRuntime for EngineView<R> {
    async fn version(&self) -> Result<String, RuntimeError> {
        self.runtime.version().await
    }

    async fn list_managed(&self, namespace: &str) -> Result<Vec<ObservedContainer>, RuntimeError> {
        if namespace != self.namespace {
            return self.runtime.list_managed(namespace).await;
        }
        let answer = {
            let seen = self.seen();
            match (seen.following, seen.doubtful) {
                (true, false) => Answer::Seen(seen.containers.values().cloned().collect()),
                (true, true) => Answer::Relist,
                (false, _) => Answer::Engine,
            }
        };
        match answer {
            Answer::Seen(containers) => Ok(containers),
            Answer::Relist => self.relist().await,
            Answer::Engine => self.runtime.list_managed(namespace).await,
        }
    }

    async fn observe(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Option<ObservedContainer>, RuntimeError> {
        self.runtime.observe(namespace, id).await
    }

    async fn clock(&self) -> Result<SystemTime, RuntimeError> {
        self.runtime.clock().await
    }

    async fn pull(
        &self,
        image: &ImageRef,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<PulledImage, RuntimeError> {
        let pulled = self.runtime.pull(image, progress).await;
        let mut seen = self.seen();
        // A pull may move tags other lookups saw.
        seen.forget_images();
        if let (true, Ok(pulled)) = (seen.following, &pulled) {
            seen.images.insert(image.clone(), Some(pulled.clone()));
        }
        pulled
    }

    async fn local_image(&self, image: &ImageRef) -> Result<Option<PulledImage>, RuntimeError> {
        let epoch = {
            let seen = self.seen();
            if seen.following
                && let Some(known) = seen.images.get(image)
            {
                return Ok(known.clone());
            }
            seen.image_epoch
        };
        let found = self.runtime.local_image(image).await?;
        let mut seen = self.seen();
        if seen.following && seen.image_epoch == epoch {
            seen.images.insert(image.clone(), found.clone());
        }
        Ok(found)
    }

    async fn create(&self, request: &CreateRequest) -> Result<String, RuntimeError> {
        let created = self.runtime.create(request).await;
        match &created {
            Ok(id) => self.look_at(id).await,
            // Whether something was created is unknown.
            Err(_) => self.seen().doubtful = true,
        }
        created
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let started = self.runtime.start(id).await;
        self.look_at(id).await;
        started
    }

    async fn stop(&self, id: &str, timeout_seconds: u32) -> Result<(), RuntimeError> {
        let stopped = self.runtime.stop(id, timeout_seconds).await;
        self.look_at(id).await;
        stopped
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let removed = self.runtime.remove(id).await;
        self.look_at(id).await;
        removed
    }

    async fn rename(&self, id: &str, new_name: &str) -> Result<(), RuntimeError> {
        let renamed = self.runtime.rename(id, new_name).await;
        self.look_at(id).await;
        renamed
    }

    async fn inspect(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        self.runtime.inspect(id).await
    }

    async fn exec(&self, id: &str, command: &[String]) -> Result<i64, RuntimeError> {
        self.runtime.exec(id, command).await
    }

    async fn logs(
        &self,
        id: &str,
        options: &LogsOptions,
        output: &mpsc::Sender<OutputBytes>,
    ) -> Result<(), RuntimeError> {
        self.runtime.logs(id, options, output).await
    }

    async fn exec_attached(
        &self,
        id: &str,
        command: &[String],
        output: &mpsc::Sender<OutputBytes>,
    ) -> Result<i64, RuntimeError> {
        self.runtime.exec_attached(id, command, output).await
    }

    async fn remove_image(&self, image: &ImageRef) -> Result<ImageRemoval, RuntimeError> {
        let removal = self.runtime.remove_image(image).await;
        self.seen().forget_images();
        removal
    }

    async fn follow_events(
        &self,
        namespace: &str,
        since: SystemTime,
        seen: &(dyn Fn(EngineEvent) + Send + Sync),
    ) -> Result<(), RuntimeError> {
        self.runtime.follow_events(namespace, since, seen).await
    }
}
