//! Limits on the connections the master accepts, so that peers who have not shown a certificate
//! cannot crowd out those who have.
//!
//! Every connection holds one of [`MAX_CONNECTIONS`] places for its whole life. Until it has
//! completed a TLS handshake with a client certificate from the fleet's CA it is
//! *unauthenticated*: it also holds one of [`MAX_UNAUTHENTICATED`] places, and one of
//! [`MAX_UNAUTHENTICATED_PER_SOURCE`] for its source (an IPv4 address, or an IPv6 /64, which one
//! machine usually holds whole). When a source (or everyone) is at its limit, the oldest
//! unauthenticated connection whose handshake has waited on its peer for [`EVICTABLE_AFTER`]
//! makes room: only idle or stalled peers are cut, never a handshake that waits for the
//! master's own CPU (a fleet reconnecting at once), and a newcomer from a crowded address (the
//! CLI next to an attacker) still gets through. If none can be cut, a newcomer from a crowded
//! source is refused and retries, while everyone else waits in the listen queue until there is
//! room ([`ConnectionLimits::room`]), instead of being refused and backing off. A connection
//! that finished its handshake without a certificate (a host joining) may be cut at once to
//! make room, must send its first bytes within [`FIRST_BYTES_WITHIN`] and is closed after
//! [`ANONYMOUS_LIFETIME`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;

/// Connections open at once, all kinds; above this, new ones are closed at once. The unit
/// file allows 65536 open files.
pub const MAX_CONNECTIONS: usize = 50_000;
/// Connections without a certificate yet, from everyone.
pub const MAX_UNAUTHENTICATED: usize = 1_024;
/// Connections without a certificate yet, from one source.
pub const MAX_UNAUTHENTICATED_PER_SOURCE: usize = 64;
/// How long an unauthenticated connection's handshake must have waited on its peer, in all,
/// before a newcomer may take its place.
pub const EVICTABLE_AFTER: Duration = Duration::from_secs(1);
/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How soon a connection without a certificate must send its first request bytes.
pub const FIRST_BYTES_WITHIN: Duration = Duration::from_secs(5);
/// How long a connection without a certificate may stay open: a join takes well under a
/// second.
pub const ANONYMOUS_LIFETIME: Duration = Duration::from_secs(30);

/// Where a connection comes from, for the per-source limit: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Self(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

/// Admission of new connections.
#[derive(Debug)]
pub struct ConnectionLimits {
    places: Arc<Semaphore>,
    unauthenticated: Arc<Mutex<Waiting>>,
    /// Told when an unauthenticated connection leaves.
    freed: Arc<Notify>,
    per_source: usize,
    total: usize,
}

/// How long a handshake has waited on its peer: the time its reads found nothing to read.
/// A handshake the master has not got to yet has not waited on its peer at all.
#[derive(Debug, Default)]
struct PeerWait {
    /// (waited before, waiting since)
    state: Mutex<(Duration, Option<Instant>)>,
}

impl PeerWait {
    fn waited(&self, now: Instant) -> Duration {
        let (before, since) = *self.state.lock().unwrap_or_else(PoisonError::into_inner);
        before + since.map_or(Duration::ZERO, |since| now.duration_since(since))
    }

    /// A read found nothing (`waiting`) or something to read.
    fn note_read(&self, waiting: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match (waiting, state.1) {
            (true, None) => state.1 = Some(now),
            (false, Some(since)) => *state = (state.0 + now.duration_since(since), None),
            _ => {}
        }
    }

    /// Counts as having waited long enough already.
    fn give_up(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 += EVICTABLE_AFTER;
    }
}

/// The unauthenticated connections, oldest first.
#[derive(Debug, Default)]
struct Waiting {
    next_id: u64,
    /// By id, which grows with time: the first entry is the oldest.
    all: BTreeMap<u64, (Source, Arc<PeerWait>, CancellationToken)>,
    by_source: HashMap<Source, VecDeque<u64>>,
}

impl Waiting {
    fn remove(&mut self, id: u64) {
        if let Some((source, _, _)) = self.all.remove(&id)
            && let Some(ids) = self.by_source.get_mut(&source)
        {
            ids.retain(|&other| other != id);
            if ids.is_empty() {
                self.by_source.remove(&source);
            }
        }
    }

    /// The first of `ids` (oldest first) whose handshake has waited on its peer long enough.
    fn first_evictable(&self, mut ids: impl Iterator<Item = u64>, now: Instant) -> Option<u64> {
        ids.find(|id| {
            self.all
                .get(id)
                .is_some_and(|(_, wait, _)| wait.waited(now) >= EVICTABLE_AFTER)
        })
    }

    /// Cuts connection `id` to make room.
    fn evict(&mut self, id: u64) {
        if let Some((_, _, cut)) = self.all.get(&id) {
            cut.cancel();
        }
        self.remove(id);
    }

    /// Whether a newcomer from a source with room would be admitted.
    fn has_room(&self, total: usize, now: Instant) -> bool {
        self.all.len() < total
            || self
                .first_evictable(self.all.keys().copied(), now)
                .is_some()
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the master has {MAX_CONNECTIONS} connections open")]
    Full,
    #[error("too many connections without a certificate from this source")]
    SourceBusy,
    #[error("too many connections without a certificate")]
    Busy,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::new(
            MAX_CONNECTIONS,
            MAX_UNAUTHENTICATED,
            MAX_UNAUTHENTICATED_PER_SOURCE,
        )
    }
}

impl ConnectionLimits {
    pub fn new(connections: usize, unauthenticated: usize, per_source: usize) -> Self {
        Self {
            places: Arc::new(Semaphore::new(connections)),
            unauthenticated: Arc::default(),
            freed: Arc::default(),
            per_source,
            total: unauthenticated,
        }
    }

    /// Resolves when a newcomer could be admitted unauthenticated (from a source with room):
    /// the accept loop waits here rather than accept connections it would refuse, so that at a
    /// fleet's reconnection the kernel's listen queue holds them until their turn.
    pub async fn room(&self) {
        /// How often to look whether a waiting connection became one that may be cut.
        const RECHECK: Duration = Duration::from_millis(50);
        loop {
            let freed = self.freed.notified();
            let has_room = self
                .unauthenticated
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .has_room(self.total, Instant::now());
            if has_room {
                return;
            }
            let _ = tokio::time::timeout(RECHECK, freed).await;
        }
    }

    /// Admits a new connection from `address`, unauthenticated until told otherwise, making
    /// room by cutting the oldest connection of its source (or of all) that has waited on its
    /// peer long enough.
    pub fn admit(&self, address: IpAddr) -> Result<Admitted, Refused> {
        let place = self
            .places
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Full)?;
        let source = Source::of(address);
        let now = Instant::now();
        let mut waiting = self
            .unauthenticated
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let from_source = waiting.by_source.get(&source).map_or(0, VecDeque::len);
        if from_source >= self.per_source {
            let ids = waiting
                .by_source
                .get(&source)
                .into_iter()
                .flatten()
                .copied();
            let victim = waiting.first_evictable(ids, now);
            waiting.evict(victim.ok_or(Refused::SourceBusy)?);
        }
        if waiting.all.len() >= self.total {
            let victim = waiting.first_evictable(waiting.all.keys().copied(), now);
            waiting.evict(victim.ok_or(Refused::Busy)?);
        }
        let id = waiting.next_id;
        waiting.next_id += 1;
        let cut = CancellationToken::new();
        let wait = Arc::new(PeerWait::default());
        waiting.all.insert(id, (source, wait.clone(), cut.clone()));
        waiting.by_source.entry(source).or_default().push_back(id);
        Ok(Admitted {
            _place: place,
            waiting: Some(WaitingPlace {
                id,
                registry: self.unauthenticated.clone(),
                freed: self.freed.clone(),
                wait,
            }),
            cut,
        })
    }
}

/// One unauthenticated connection's entry; removed when dropped.
#[derive(Debug)]
struct WaitingPlace {
    id: u64,
    registry: Arc<Mutex<Waiting>>,
    freed: Arc<Notify>,
    wait: Arc<PeerWait>,
}

impl WaitingPlace {
    /// A connection that finished its handshake without a certificate can make room at once:
    /// it is either a host joining, done within a second, or a peer holding a place idle.
    fn mark_evictable(&self) {
        self.wait.give_up();
        self.freed.notify_waiters();
    }
}

impl Drop for WaitingPlace {
    fn drop(&mut self) {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.id);
        self.freed.notify_waiters();
    }
}

/// An admitted connection's places.
#[derive(Debug)]
pub struct Admitted {
    /// Held for the connection's life, freeing its place when it closes.
    _place: OwnedSemaphorePermit,
    waiting: Option<WaitingPlace>,
    cut: CancellationToken,
}

impl Admitted {
    /// Resolves when the connection is cut to make room for a newer one.
    pub fn cut(&self) -> WaitForCancellationFutureOwned {
        self.cut.clone().cancelled_owned()
    }

    /// Wraps the connection for its handshake, so that the time it waits on its peer counts
    /// while the connection is unauthenticated.
    pub fn watch<S>(&self, stream: S) -> Watched<S> {
        Watched {
            inner: stream,
            wait: self
                .waiting
                .as_ref()
                .map_or_else(Weak::new, |waiting| Arc::downgrade(&waiting.wait)),
        }
    }

    /// Wraps the connection after its handshake. With a client certificate it leaves the
    /// unauthenticated ones and is held to nothing more; without one it keeps its place among
    /// them, must send its first bytes soon and lives a short while.
    pub fn into_stream<S>(mut self, stream: S, authenticated: bool) -> Limited<S> {
        if authenticated {
            self.waiting = None;
            Limited {
                inner: stream,
                first_bytes_by: None,
                closes_at: None,
                cut: None,
                _admitted: self,
            }
        } else {
            if let Some(waiting) = &self.waiting {
                waiting.mark_evictable();
            }
            let now = Instant::now();
            Limited {
                inner: stream,
                first_bytes_by: Some(Box::pin(tokio::time::sleep_until(now + FIRST_BYTES_WITHIN))),
                closes_at: Some(Box::pin(tokio::time::sleep_until(now + ANONYMOUS_LIFETIME))),
                cut: Some(Box::pin(self.cut())),
                _admitted: self,
            }
        }
    }
}

/// A connection held to its limits: reads and writes fail once it must close.
pub struct Limited<S> {
    inner: S,
    /// Until the first bytes arrive.
    first_bytes_by: Option<Pin<Box<Sleep>>>,
    closes_at: Option<Pin<Box<Sleep>>>,
    cut: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    _admitted: Admitted,
}

impl<S> std::fmt::Debug for Limited<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limited").finish_non_exhaustive()
    }
}

impl<S> Limited<S> {
    /// An error if the connection must close now.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let timed_out = |reason: &str| Some(io::Error::new(io::ErrorKind::TimedOut, reason));
        if let Some(first) = &mut self.first_bytes_by
            && first.as_mut().poll(cx).is_ready()
        {
            return timed_out("no request from a peer without a certificate");
        }
        if let Some(closes) = &mut self.closes_at
            && closes.as_mut().poll(cx).is_ready()
        {
            return timed_out("a connection without a certificate lived its time");
        }
        if let Some(cut) = &mut self.cut
            && cut.as_mut().poll(cx).is_ready()
        {
            return Some(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "cut to make room for a newer connection",
            ));
        }
        None
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(err) = self.expired(cx) {
            return Poll::Ready(Err(err));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.first_bytes_by = None;
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(err) = self.expired(cx) {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection in its handshake, counting the time its reads wait on the peer. The count
/// belongs to the connection's unauthenticated place: once that is left (a certificate shown),
/// reads count nothing.
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    wait: Weak<PeerWait>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some(wait) = self.wait.upgrade() {
            wait.note_read(polled.is_pending());
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for Watched<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: Connected> Connected for Limited<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Has `admitted`'s handshake read from a peer that sends nothing, so that from now on it
    /// waits on its peer. Returns the peer's end, to keep it open.
    fn reads_from_a_silent_peer(admitted: &Admitted) -> tokio::io::DuplexStream {
        use tokio::io::AsyncReadExt;
        let (peer, ours) = tokio::io::duplex(64);
        let mut watched = admitted.watch(ours);
        let mut buf = [0u8; 1];
        let read = watched.read(&mut buf);
        assert!(futures::FutureExt::now_or_never(read).is_none());
        peer
    }

    #[test]
    fn an_ipv6_source_is_its_64_prefix() {
        assert_eq!(
            Source::of(ip("2001:db8:1:2:aaaa::1")),
            Source::of(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Source::of(ip("::ffff:198.18.0.1")),
            Source::of(ip("198.18.0.1"))
        );
        assert_ne!(Source::of(ip("198.18.0.1")), Source::of(ip("198.18.0.2")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_crowded_source_makes_room_by_cutting_its_oldest_idle_connection() {
        let limits = ConnectionLimits::new(100, 100, 2);
        let crowd = ip("198.18.0.1");
        let first = limits.admit(crowd).unwrap();
        let _second = limits.admit(crowd).unwrap();
        let _peer = reads_from_a_silent_peer(&first);
        // Young connections are not cut: the newcomer waits its turn.
        assert_eq!(limits.admit(crowd).unwrap_err(), Refused::SourceBusy);
        assert!(
            limits.admit(ip("198.18.0.2")).is_ok(),
            "other sources are not affected"
        );
        tokio::time::advance(EVICTABLE_AFTER).await;
        let cut = first.cut();
        let _third = limits
            .admit(crowd)
            .expect("the oldest idle connection makes room");
        tokio::time::timeout(Duration::from_millis(1), cut)
            .await
            .expect("the oldest connection was cut");
    }

    #[tokio::test(start_paused = true)]
    async fn an_anonymous_connection_past_its_handshake_makes_room_at_once() {
        let limits = ConnectionLimits::new(100, 100, 1);
        let address = ip("198.18.0.1");
        let idle = limits
            .admit(address)
            .unwrap()
            .into_stream(tokio::io::empty(), false);
        assert!(limits.admit(address).is_ok());
        drop(idle);
    }

    #[tokio::test(start_paused = true)]
    async fn authenticated_connections_leave_the_waiting_room() {
        let limits = ConnectionLimits::new(100, 100, 1);
        let address = ip("198.18.0.1");
        let admitted = limits.admit(address).unwrap();
        let _stream = admitted.into_stream(tokio::io::empty(), true);
        assert!(limits.admit(address).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn everyone_shares_the_unauthenticated_places_and_all_connections_are_bounded() {
        let limits = ConnectionLimits::new(3, 2, 10);
        let a = limits.admit(ip("198.18.0.1")).unwrap();
        let _b = limits.admit(ip("198.18.0.2")).unwrap();
        let _peer = reads_from_a_silent_peer(&a);
        assert_eq!(limits.admit(ip("198.18.0.3")).unwrap_err(), Refused::Busy);
        let c = limits.admit(ip("198.18.0.3"));
        assert!(c.is_err());
        tokio::time::advance(EVICTABLE_AFTER).await;
        let c = limits.admit(ip("198.18.0.3")).unwrap();
        let _c = c.into_stream(tokio::io::empty(), true);
        assert_eq!(limits.admit(ip("198.18.0.4")).unwrap_err(), Refused::Full);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_anonymous_connection_is_closed() {
        use tokio::io::AsyncReadExt;
        let limits = ConnectionLimits::default();
        let (client, server) = tokio::io::duplex(64);
        let mut limited = limits
            .admit(ip("198.18.0.1"))
            .unwrap()
            .into_stream(server, false);
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(FIRST_BYTES_WITHIN * 2, limited.read(&mut buf)).await;
        let err = read.expect("closed before the timeout").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handshake_waiting_for_the_master_is_never_cut() {
        // A fleet reconnecting at once: the master has not got to this handshake yet.
        let limits = ConnectionLimits::new(100, 1, 10);
        let _queued = limits.admit(ip("198.18.0.1")).unwrap();
        tokio::time::advance(HANDSHAKE_TIMEOUT).await;
        assert_eq!(limits.admit(ip("198.18.0.2")).unwrap_err(), Refused::Busy);
    }

    #[tokio::test(start_paused = true)]
    async fn newcomers_wait_for_room_rather_than_being_refused() {
        let limits = ConnectionLimits::new(100, 1, 10);
        let first = limits.admit(ip("198.18.0.1")).unwrap();
        let mut room = std::pin::pin!(limits.room());
        assert!(
            tokio::time::timeout(Duration::from_secs(5), &mut room)
                .await
                .is_err(),
            "no room while the only place is taken by a busy handshake"
        );
        drop(first);
        tokio::time::timeout(Duration::from_millis(100), &mut room)
            .await
            .expect("room once it left");

        // A peer that stalls its handshake makes room once it has waited long enough.
        let stalled = limits.admit(ip("198.18.0.1")).unwrap();
        let _peer = reads_from_a_silent_peer(&stalled);
        tokio::time::timeout(EVICTABLE_AFTER * 2, limits.room())
            .await
            .expect("room once the stalled one may be cut");
        assert!(limits.admit(ip("198.18.0.2")).is_ok());
    }
}
