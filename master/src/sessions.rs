//! The sessions of `logs` and `exec` callers on this master: which caller each session's
//! messages go to (routed by session id, and only from the host it was opened on), and the
//! caps on how many run, per host and in all. In memory, like [`crate::link::JobRouter`]; the
//! calls themselves are driven in `fleet/sessions.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use brine_common::names::MinionId;
use brine_common::session::{OutputStream, SessionEnd, SessionEvent, SessionId};
use tokio::sync::mpsc;

pub mod targets;

/// How many sessions may run on one host at once (as many as a minion takes).
pub const MAX_SESSIONS_PER_HOST: usize = 8;
/// How many sessions may run through this master at once.
pub const MAX_SESSIONS: usize = 256;

/// A session's message, as its caller's driver receives it.
pub type Routed = (SessionId, SessionEvent);

/// Where each open session's messages go.
#[derive(Default)]
pub struct SessionRouter {
    // A std mutex: it is never held across an await.
    inner: Arc<Mutex<Routes>>,
}

#[derive(Default)]
struct Routes {
    sessions: HashMap<SessionId, Route>,
    per_host: HashMap<MinionId, usize>,
}

struct Route {
    host: MinionId,
    caller: mpsc::Sender<Routed>,
    /// Output bytes its caller could not take, to be counted on the next output it gets.
    left_out: u64,
}

/// Why sessions could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    #[error(
        "{0} runs {MAX_SESSIONS_PER_HOST} sessions (logs or exec) already; try again when one ended"
    )]
    Host(MinionId),
    #[error("this master runs {MAX_SESSIONS} sessions (logs or exec) already; try again later")]
    Master,
}

/// Sessions opened for one caller; dropping this closes them here (the hosts are told by the
/// caller's driver).
pub struct OpenSessions {
    routes: Arc<Mutex<Routes>>,
    ids: Vec<SessionId>,
}

impl Drop for OpenSessions {
    fn drop(&mut self) {
        let mut routes = lock(&self.routes);
        for id in &self.ids {
            routes.close(id);
        }
    }
}

fn lock(routes: &Mutex<Routes>) -> std::sync::MutexGuard<'_, Routes> {
    // Poisoning leaves the maps consistent (single inserts and removes).
    routes.lock().unwrap_or_else(|p| p.into_inner())
}

impl Routes {
    fn close(&mut self, id: &SessionId) {
        if let Some(route) = self.sessions.remove(id)
            && let Some(count) = self.per_host.get_mut(&route.host)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_host.remove(&route.host);
            }
        }
    }
}

impl SessionRouter {
    /// Opens `sessions` (each an id and its host) for one caller, whose driver reads their
    /// messages from `caller`: all of them, or none when a cap would be passed.
    pub fn open(
        &self,
        sessions: &[(SessionId, MinionId)],
        caller: &mpsc::Sender<Routed>,
    ) -> Result<OpenSessions, Busy> {
        let mut routes = lock(&self.inner);
        if routes.sessions.len() + sessions.len() > MAX_SESSIONS {
            return Err(Busy::Master);
        }
        let mut wanted: HashMap<&MinionId, usize> = HashMap::new();
        for (_, host) in sessions {
            *wanted.entry(host).or_default() += 1;
        }
        for (host, count) in wanted {
            if routes.per_host.get(host).copied().unwrap_or(0) + count > MAX_SESSIONS_PER_HOST {
                return Err(Busy::Host(host.clone()));
            }
        }
        for (id, host) in sessions {
            *routes.per_host.entry(host.clone()).or_default() += 1;
            routes.sessions.insert(
                id.clone(),
                Route {
                    host: host.clone(),
                    caller: caller.clone(),
                    left_out: 0,
                },
            );
        }
        Ok(OpenSessions {
            routes: self.inner.clone(),
            ids: sessions.iter().map(|(id, _)| id.clone()).collect(),
        })
    }

    /// Hands what `host` said about `session` to its caller, never waiting: output a caller
    /// cannot take now is left out and counted on the next output it gets, and the end of a
    /// session is handed over from a task of its own. A session `host` was not opened on is
    /// ignored: no host speaks for another. Whether the session was found.
    pub fn route(&self, host: &MinionId, session: SessionId, event: SessionEvent) -> bool {
        let mut routes = lock(&self.inner);
        let Some(route) = routes.sessions.get_mut(&session) else {
            return false;
        };
        if route.host != *host {
            return false;
        }
        let left_out = std::mem::take(&mut route.left_out);
        let event = match event {
            SessionEvent::Output {
                stream,
                data,
                dropped_bytes,
            } => SessionEvent::Output {
                stream,
                data,
                dropped_bytes: dropped_bytes.saturating_add(left_out),
            },
            SessionEvent::Ended(end) if left_out > 0 => {
                let caller = route.caller.clone();
                drop(routes);
                let count = SessionEvent::Output {
                    stream: OutputStream::Stderr,
                    data: vec![],
                    dropped_bytes: left_out,
                };
                hand_over(
                    caller,
                    vec![
                        (session.clone(), count),
                        (session, SessionEvent::Ended(end)),
                    ],
                );
                return true;
            }
            other => other,
        };
        match route.caller.try_send((session, event)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full((session, event))) => match event {
                SessionEvent::Output {
                    data,
                    dropped_bytes,
                    ..
                } => {
                    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    route.left_out = dropped_bytes.saturating_add(len);
                    tracing::debug!(session.id = %session, "left out output its caller could not take");
                }
                last => {
                    let caller = route.caller.clone();
                    drop(routes);
                    hand_over(caller, vec![(session, last)]);
                }
            },
            // The caller went away; its driver stops the session.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
        true
    }

    /// Ends every session on `host`, whose link was lost.
    pub fn link_lost(&self, host: &MinionId) {
        let lost: Vec<(SessionId, mpsc::Sender<Routed>)> = lock(&self.inner)
            .sessions
            .iter()
            .filter(|(_, route)| route.host == *host)
            .map(|(id, route)| (id.clone(), route.caller.clone()))
            .collect();
        for (id, caller) in lost {
            let end = SessionEnd {
                error: Some("the host's link was lost".into()),
                ..SessionEnd::default()
            };
            hand_over(caller, vec![(id, SessionEvent::Ended(end))]);
        }
    }

    /// How many sessions run now.
    pub fn count(&self) -> usize {
        lock(&self.inner).sessions.len()
    }
}

/// Hands `messages` to `caller` in order, from a task of its own when it cannot take them now.
fn hand_over(caller: mpsc::Sender<Routed>, messages: Vec<Routed>) {
    let mut messages = messages.into_iter();
    for message in messages.by_ref() {
        match caller.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) => {
                let rest: Vec<Routed> = std::iter::once(message).chain(messages).collect();
                tokio::spawn(async move {
                    for message in rest {
                        if caller.send(message).await.is_err() {
                            break;
                        }
                    }
                });
                return;
            }
            // The caller went away; its driver stops the session.
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str) -> MinionId {
        MinionId::new(id).unwrap()
    }

    fn session(id: &str) -> SessionId {
        SessionId::new(id).unwrap()
    }

    #[tokio::test]
    async fn messages_reach_their_caller_only_from_the_host_the_session_is_on() {
        let router = SessionRouter::default();
        let (caller, mut inbox) = mpsc::channel(8);
        let open = router
            .open(&[(session("s-1"), host("web-1"))], &caller)
            .unwrap();
        assert!(!router.route(&host("web-2"), session("s-1"), SessionEvent::Accepted));
        assert!(router.route(&host("web-1"), session("s-1"), SessionEvent::Accepted));
        assert_eq!(
            inbox.recv().await,
            Some((session("s-1"), SessionEvent::Accepted))
        );
        router.link_lost(&host("web-1"));
        let Some((_, SessionEvent::Ended(end))) = inbox.recv().await else {
            panic!("an end")
        };
        assert!(end.error.unwrap().contains("link was lost"));
        drop(open);
        assert_eq!(router.count(), 0);
        assert!(!router.route(&host("web-1"), session("s-1"), SessionEvent::Accepted));
    }

    #[tokio::test]
    async fn output_a_slow_caller_cannot_take_is_counted_not_lost_silently() {
        let router = SessionRouter::default();
        let (caller, mut inbox) = mpsc::channel(1);
        let _open = router
            .open(&[(session("s-1"), host("web-1"))], &caller)
            .unwrap();
        let output = |text: &str| SessionEvent::Output {
            stream: OutputStream::Stdout,
            data: text.as_bytes().to_vec(),
            dropped_bytes: 0,
        };
        router.route(&host("web-1"), session("s-1"), output("first\n"));
        router.route(&host("web-1"), session("s-1"), output("lost\n"));
        assert_eq!(
            inbox.recv().await,
            Some((session("s-1"), output("first\n")))
        );
        router.route(&host("web-1"), session("s-1"), output("third\n"));
        let Some((
            _,
            SessionEvent::Output {
                data,
                dropped_bytes,
                ..
            },
        )) = inbox.recv().await
        else {
            panic!("output")
        };
        assert_eq!((data.as_slice(), dropped_bytes), (&b"third\n"[..], 5));
        router.route(&host("web-1"), session("s-1"), output("fills\n"));
        router.route(&host("web-1"), session("s-1"), output("lost again\n"));
        router.route(
            &host("web-1"),
            session("s-1"),
            SessionEvent::Ended(SessionEnd::default()),
        );
        assert!(matches!(
            inbox.recv().await,
            Some((_, SessionEvent::Output { .. }))
        ));
        let Some((_, SessionEvent::Output { dropped_bytes, .. })) = inbox.recv().await else {
            panic!("the count of what was left out, before the end")
        };
        assert_eq!(dropped_bytes, 11);
        assert!(matches!(
            inbox.recv().await,
            Some((_, SessionEvent::Ended(_)))
        ));
    }

    #[test]
    fn sessions_are_capped_per_host_and_in_all() {
        let router = SessionRouter::default();
        let (caller, _inbox) = mpsc::channel(8);
        let on_web_1: Vec<_> = (0..MAX_SESSIONS_PER_HOST)
            .map(|n| (session(&format!("a-{n}")), host("web-1")))
            .collect();
        let open = router.open(&on_web_1, &caller).unwrap();
        assert_eq!(
            router
                .open(&[(session("b-0"), host("web-1"))], &caller)
                .err(),
            Some(Busy::Host(host("web-1")))
        );
        assert!(
            router
                .open(&[(session("b-1"), host("web-2"))], &caller)
                .is_ok(),
            "another host has room (and the refused one took none)"
        );
        drop(open);
        let many: Vec<_> = (0..=MAX_SESSIONS)
            .map(|n| (session(&format!("c-{n}")), host(&format!("h-{n}"))))
            .collect();
        assert_eq!(router.open(&many, &caller).err(), Some(Busy::Master));
        assert!(
            router
                .open(&[(session("d-0"), host("web-1"))], &caller)
                .is_ok()
        );
    }
}
