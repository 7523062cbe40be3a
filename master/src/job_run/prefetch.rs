//! Fetching ahead: in a batched rollout the hosts of later batches fetch their images when the
//! job starts, at most a few at once so the registry is not flooded, and their turn then only
//! swaps containers. Which host to ask next, when an answer no longer matters, and which hosts
//! must be skipped because their fetch failed. Pure, like the rest of the job's decisions.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use brine_common::names::MinionId;
use brine_common::spec::ImageRef;
use tokio::time::Instant;

/// The fetches ahead of one job.
#[derive(Debug, Default)]
pub struct Prefetches {
    /// How many hosts may fetch at once.
    cap: usize,
    /// How long a host has to answer; after that its slot goes to the next one, and its own
    /// turn pulls what is still missing.
    timeout: Duration,
    /// The hosts not asked yet, in the order their batches come; a host no longer in
    /// `unasked` (its batch came first) is passed over when it comes up.
    waiting: VecDeque<MinionId>,
    /// The images of each host not asked yet: a batch of thousands finds its hosts here without
    /// walking the queue.
    unasked: BTreeMap<MinionId, Vec<ImageRef>>,
    /// Asked and not answered.
    fetching: BTreeSet<MinionId>,
    /// When each answer stops mattering, oldest first; hosts no longer in `fetching` are
    /// dropped from the front as they come up.
    order: VecDeque<(Instant, MinionId)>,
    /// Hosts whose fetch failed, with why.
    failed: BTreeMap<MinionId, String>,
}

impl Prefetches {
    /// Fetches for `hosts`, in order, at most `cap` at once (none with a cap of 0), each
    /// answered within `timeout`.
    pub fn new(
        cap: usize,
        timeout: Duration,
        hosts: impl IntoIterator<Item = (MinionId, Vec<ImageRef>)>,
    ) -> Self {
        let mut fetches = Self {
            cap,
            timeout,
            ..Self::default()
        };
        if cap > 0 {
            for (host, images) in hosts {
                if !images.is_empty() {
                    fetches.waiting.push_back(host.clone());
                    fetches.unasked.insert(host, images);
                }
            }
        }
        fetches
    }

    /// The hosts to ask now, as many as there is room for.
    pub fn start(&mut self, now: Instant) -> Vec<(MinionId, Vec<ImageRef>)> {
        let mut asked = vec![];
        while self.fetching.len() < self.cap {
            let Some(host) = self.waiting.pop_front() else {
                break;
            };
            let Some(images) = self.unasked.remove(&host) else {
                continue;
            };
            self.fetching.insert(host.clone());
            self.order.push_back((now + self.timeout, host.clone()));
            asked.push((host, images));
        }
        asked
    }

    /// `host` answered: its images are there, or why not.
    pub fn answered(&mut self, host: &MinionId, outcome: Result<(), String>) {
        if !self.fetching.remove(host) {
            return;
        }
        if let Err(error) = outcome {
            self.failed.insert(host.clone(), error);
        }
        self.tidy();
    }

    /// `host` cannot answer (its link is gone or was never there): its slot goes to the next
    /// one, and its own turn tells.
    pub fn unanswered(&mut self, host: &MinionId) {
        if self.fetching.remove(host) {
            self.tidy();
        }
    }

    /// `host`'s batch starts: nothing more is fetched for it ahead. Returns why its fetch
    /// failed, if it did.
    pub fn reached(&mut self, host: &MinionId) -> Option<String> {
        if self.fetching.remove(host) {
            self.tidy();
        }
        self.unasked.remove(host);
        self.failed.remove(host)
    }

    /// No batch starts any more: nothing else is asked.
    pub fn stop(&mut self) {
        self.waiting.clear();
        self.unasked.clear();
        self.fetching.clear();
        self.order.clear();
    }

    /// When the oldest unanswered fetch stops mattering.
    pub fn wake_at(&self) -> Option<Instant> {
        self.order.front().map(|(deadline, _)| *deadline)
    }

    /// Fetches not answered in time free their slots.
    pub fn time_passed(&mut self, now: Instant) {
        while let Some((deadline, host)) = self.order.front() {
            if *deadline > now {
                break;
            }
            self.fetching.remove(host);
            self.order.pop_front();
        }
        self.tidy();
    }

    /// Drops from the front of `order` the hosts that are no longer fetching.
    fn tidy(&mut self) {
        while self
            .order
            .front()
            .is_some_and(|(_, host)| !self.fetching.contains(host))
        {
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(n: usize) -> MinionId {
        MinionId::new(format!("h{n}")).unwrap()
    }

    fn images() -> Vec<ImageRef> {
        vec![ImageRef::new("registry.example.com/app:v2").unwrap()]
    }

    fn ahead(hosts: usize, cap: usize) -> Prefetches {
        Prefetches::new(
            cap,
            Duration::from_secs(60),
            (1..=hosts).map(|n| (host(n), images())),
        )
    }

    fn ids(asked: &[(MinionId, Vec<ImageRef>)]) -> Vec<MinionId> {
        asked.iter().map(|(id, _)| id.clone()).collect()
    }

    #[test]
    fn at_most_the_cap_fetch_at_once_in_batch_order() {
        let now = Instant::now();
        let mut fetches = ahead(5, 2);
        assert_eq!(ids(&fetches.start(now)), [host(1), host(2)]);
        assert!(fetches.start(now).is_empty(), "no room until one answers");
        fetches.answered(&host(2), Ok(()));
        assert_eq!(ids(&fetches.start(now)), [host(3)]);
        fetches.unanswered(&host(1));
        fetches.answered(&host(3), Err("manifest unknown".into()));
        assert_eq!(ids(&fetches.start(now)), [host(4), host(5)]);
        assert_eq!(fetches.reached(&host(3)), Some("manifest unknown".into()));
        assert_eq!(fetches.reached(&host(2)), None);
    }

    #[test]
    fn a_host_reached_before_its_turn_to_fetch_is_not_asked() {
        let now = Instant::now();
        let mut fetches = ahead(3, 1);
        fetches.start(now);
        assert_eq!(fetches.reached(&host(2)), None);
        fetches.answered(&host(1), Ok(()));
        assert_eq!(ids(&fetches.start(now)), [host(3)]);
    }

    #[test]
    fn a_fetch_not_answered_in_time_frees_its_slot_and_counts_as_no_failure() {
        let now = Instant::now();
        let mut fetches = ahead(2, 1);
        fetches.start(now);
        assert_eq!(fetches.wake_at(), Some(now + Duration::from_secs(60)));
        fetches.time_passed(now + Duration::from_secs(59));
        assert!(fetches.start(now).is_empty());
        let later = now + Duration::from_secs(60);
        fetches.time_passed(later);
        assert_eq!(ids(&fetches.start(later)), [host(2)]);
        assert_eq!(fetches.wake_at(), Some(later + Duration::from_secs(60)));
        // A late answer from the first changes nothing.
        fetches.answered(&host(1), Err("too late".into()));
        assert_eq!(fetches.reached(&host(1)), None);
    }

    #[test]
    fn stopping_asks_nobody_else() {
        let now = Instant::now();
        let mut fetches = ahead(3, 1);
        fetches.start(now);
        fetches.stop();
        assert!(fetches.start(now).is_empty());
        assert_eq!(fetches.wake_at(), None);
    }

    #[test]
    fn a_cap_of_zero_fetches_nothing() {
        let mut fetches = ahead(3, 0);
        assert!(fetches.start(Instant::now()).is_empty());
    }
}
