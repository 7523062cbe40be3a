//! The fleet's event bus: what happens (links, admission, jobs, hosts' reports between jobs,
//! failed hooks) published once, for watchers (`FleetService.Watch`) and hooks.
//!
//! Publishing never waits: it numbers the event, keeps it in a bounded ring of recent events,
//! hands it to a bounded broadcast channel and offers it to the hooks' queues (`hooks.rs`),
//! all without an await. A watcher that falls behind the broadcast channel is not waited for:
//! it is told how many events it missed (a [`FleetEventKind::Missed`] marker) and goes on with
//! the live ones.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use brine_common::fleet_event::{FleetEvent, FleetEventKind, WatchRequest};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::hooks::HookQueues;
use crate::state::now_unix_ms;

/// How many recent events the master keeps for `Watch`'s replay.
pub const RECENT_EVENTS: usize = 1000;
/// How many live events may wait for the slowest watcher before it misses some.
const LIVE_QUEUE: usize = 1024;
/// How many events may wait in one watcher's stream.
const WATCHER_QUEUE: usize = 64;

struct Recent {
    /// The next event's sequence number; the first is 1.
    next_sequence: u64,
    events: VecDeque<Arc<FleetEvent>>,
}

/// The bus, one per master.
pub struct EventBus {
    /// A std mutex, held only to number, keep and send an event, never across an await: the
    /// events are kept and sent in the order of their numbers.
    recent: Mutex<Recent>,
    live: broadcast::Sender<Arc<FleetEvent>>,
    hooks: HookQueues,
    /// Cancelled when the master stops: followers' streams end then, so that they do not hold
    /// up its shutdown.
    closing: CancellationToken,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(HookQueues::default())
    }
}

impl EventBus {
    /// A bus that offers every event to `hooks`.
    pub fn new(hooks: HookQueues) -> Self {
        Self {
            recent: Mutex::new(Recent {
                next_sequence: 1,
                events: VecDeque::with_capacity(RECENT_EVENTS),
            }),
            live: broadcast::Sender::new(LIVE_QUEUE),
            hooks,
            closing: CancellationToken::new(),
        }
    }

    /// Ends every watcher's stream, now and from now on: the master is stopping.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Publishes `what` now, without waiting for any watcher or hook.
    pub fn publish(&self, what: FleetEventKind) {
        let event = {
            let mut recent = self.lock();
            let event = Arc::new(FleetEvent {
                sequence: recent.next_sequence,
                at_unix_ms: now_unix_ms(),
                what,
            });
            recent.next_sequence += 1;
            if recent.events.len() == RECENT_EVENTS {
                recent.events.pop_front();
            }
            recent.events.push_back(event.clone());
            // No watcher is not an error: the event is kept for later ones.
            let _ = self.live.send(event.clone());
            event
        };
        self.hooks.offer(&event);
    }

    /// The events `request` asks for: the recent ones first if it asks, then live ones if it
    /// follows. The stream ends after the replay without `follow`, and when the receiver is
    /// dropped.
    pub fn watch(&self, request: WatchRequest) -> mpsc::Receiver<Arc<FleetEvent>> {
        let (sender, receiver) = mpsc::channel(WATCHER_QUEUE);
        // Subscribed under the same lock that publishes, so the replay and the live events
        // neither overlap nor leave a gap.
        let (replay, mut live) = {
            let recent = self.lock();
            let replay: Vec<_> = if request.replay_recent {
                recent.events.iter().cloned().collect()
            } else {
                vec![]
            };
            (replay, self.live.subscribe())
        };
        let closing = self.closing.clone();
        tokio::spawn(async move {
            for event in replay {
                if request.wants(&event.what) && sender.send(event).await.is_err() {
                    return;
                }
            }
            if !request.follow || closing.is_cancelled() {
                return;
            }
            loop {
                let event = tokio::select! {
                    received = live.recv() => match received {
                        Ok(event) => event,
                        Err(broadcast::error::RecvError::Lagged(count)) => Arc::new(FleetEvent {
                            sequence: 0,
                            at_unix_ms: now_unix_ms(),
                            what: FleetEventKind::Missed { count },
                        }),
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    () = sender.closed() => return,
                    () = closing.cancelled() => return,
                };
                if request.wants(&event.what) && sender.send(event).await.is_err() {
                    return;
                }
            }
        });
        receiver
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use brine_common::names::MinionId;

    use super::*;

    fn linked(id: &str) -> FleetEventKind {
        FleetEventKind::HostLinked {
            minion_id: MinionId::new(id).unwrap(),
        }
    }

    async fn next(receiver: &mut mpsc::Receiver<Arc<FleetEvent>>) -> Arc<FleetEvent> {
        tokio::time::timeout(Duration::from_secs(5), receiver.recv())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
    }

    #[tokio::test]
    async fn a_replay_sends_the_recent_events_in_order_then_ends_without_follow() {
        let bus = EventBus::default();
        for n in 0..3 {
            bus.publish(linked(&format!("web-{n}")));
        }
        let mut replay = bus.watch(WatchRequest {
            replay_recent: true,
            ..Default::default()
        });
        for sequence in 1..=3 {
            assert_eq!(next(&mut replay).await.sequence, sequence);
        }
        assert!(replay.recv().await.is_none(), "no follow: the stream ends");
    }

    #[tokio::test]
    async fn a_followers_stream_ends_when_the_master_stops() {
        let bus = EventBus::default();
        let mut live = bus.watch(WatchRequest {
            follow: true,
            ..Default::default()
        });
        bus.close();
        let ended = tokio::time::timeout(Duration::from_secs(5), live.recv()).await;
        assert!(matches!(ended, Ok(None)), "{ended:?}");
    }

    #[tokio::test]
    async fn the_ring_keeps_only_the_newest_events() {
        let bus = EventBus::default();
        for _ in 0..RECENT_EVENTS + 5 {
            bus.publish(linked("web-1"));
        }
        let mut replay = bus.watch(WatchRequest {
            replay_recent: true,
            ..Default::default()
        });
        assert_eq!(next(&mut replay).await.sequence, 6);
    }

    #[tokio::test]
    async fn a_follower_gets_live_events_of_the_kinds_it_asked_for() {
        let bus = EventBus::default();
        bus.publish(linked("old"));
        let mut live = bus.watch(WatchRequest {
            follow: true,
            kinds: ["host_lost"].into(),
            ..Default::default()
        });
        bus.publish(linked("web-1"));
        bus.publish(FleetEventKind::HostLost {
            minion_id: MinionId::new("web-1").unwrap(),
        });
        let event = next(&mut live).await;
        assert_eq!(event.what.name(), "host_lost");
        assert_eq!(event.sequence, 3);
    }

    #[tokio::test]
    async fn a_lagging_follower_is_told_how_many_events_it_missed() {
        let bus = EventBus::default();
        let mut live = bus.watch(WatchRequest {
            follow: true,
            ..Default::default()
        });
        // Enough to overflow the watcher's queue and the broadcast channel behind it, while
        // nothing reads.
        let published = LIVE_QUEUE + WATCHER_QUEUE + 200;
        for _ in 0..published {
            bus.publish(linked("web-1"));
        }
        let mut received = 0;
        let mut missed = 0;
        while received + missed < published as u64 {
            let event = next(&mut live).await;
            match event.what {
                FleetEventKind::Missed { count } => {
                    assert_eq!(event.sequence, 0);
                    missed += count;
                }
                _ => received += 1,
            }
        }
        assert!(missed > 0, "the watcher was told it missed events");
        assert_eq!(received + missed, published as u64);
    }
}
