//! How a highstate proceeds through its hosts: batch sizes, a canary, and when to stop. Pure.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use brine_common::names::MinionId;

/// The longest wait between batches a caller may ask for.
pub const MAX_BATCH_WAIT: Duration = Duration::from_secs(3600);

/// How many hosts of later batches fetch their images at once when the caller does not say.
pub const DEFAULT_CONCURRENT_PULLS: u32 = 8;
/// The most a caller may ask for.
pub const MAX_CONCURRENT_PULLS: u32 = 1000;

/// Hosts per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum BatchSize {
    /// Every host at once.
    #[default]
    All,
    /// This many hosts (at least 1).
    Count(u32),
    /// This percentage of the targets, rounded up (1 to 100).
    Percent(u8),
}

impl FromStr for BatchSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(BatchSize::All);
        }
        match text.strip_suffix('%') {
            Some(percent) => match percent.parse::<u8>() {
                Ok(p @ 1..=100) => Ok(BatchSize::Percent(p)),
                _ => Err(format!("{text:?}: a percentage is from 1% to 100%")),
            },
            None => match text.parse::<u32>() {
                Ok(n @ 1..) => Ok(BatchSize::Count(n)),
                _ => Err(format!(
                    "{text:?}: a batch is a number of hosts from 1, or N%"
                )),
            },
        }
    }
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::All => f.write_str("all"),
            BatchSize::Count(n) => write!(f, "{n}"),
            BatchSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// How a highstate proceeds.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Rollout {
    pub batch: BatchSize,
    pub batch_wait: Duration,
    /// A first batch of one host.
    pub canary: bool,
    /// Failed, unreachable or timed-out hosts tolerated before the rollout stops.
    pub max_failures: u32,
    /// When the rollout fails, return the hosts it changed to the previous release.
    pub auto_revert: bool,
    /// How many hosts of later batches fetch their images at once, ahead of their turn; 0
    /// fetches nothing ahead.
    pub concurrent_pulls: u32,
}

impl Rollout {
    /// Splits `targets` (in order) into batches.
    pub fn batches(&self, targets: &[MinionId]) -> Vec<Vec<MinionId>> {
        let size = match self.batch {
            BatchSize::All => targets.len(),
            BatchSize::Count(n) => usize::try_from(n).unwrap_or(usize::MAX),
            BatchSize::Percent(p) => (targets.len() * usize::from(p)).div_ceil(100),
        }
        .max(1);
        let (canary, rest) = match (self.canary, targets.split_first()) {
            (true, Some((first, rest))) => (Some(vec![first.clone()]), rest),
            _ => (None, targets),
        };
        canary
            .into_iter()
            .chain(rest.chunks(size).map(<[MinionId]>::to_vec))
            .collect()
    }

    /// Whether the rollout must stop after `failures` hosts did not succeed.
    pub fn must_stop(&self, failures: usize) -> bool {
        failures > usize::try_from(self.max_failures).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Vec<MinionId> {
        (1..=n)
            .map(|i| MinionId::new(format!("h{i}")).unwrap())
            .collect()
    }

    fn sizes(rollout: &Rollout, n: usize) -> Vec<usize> {
        rollout.batches(&hosts(n)).iter().map(Vec::len).collect()
    }

    #[test]
    fn batch_sizes_parse_and_refuse_zero_and_over_100_percent() {
        assert_eq!("".parse(), Ok(BatchSize::All));
        assert_eq!("3".parse(), Ok(BatchSize::Count(3)));
        assert_eq!("25%".parse(), Ok(BatchSize::Percent(25)));
        for bad in ["0", "0%", "101%", "-1", "x", "1.5", "%"] {
            assert!(bad.parse::<BatchSize>().is_err(), "{bad}");
        }
    }

    #[test]
    fn batches_cover_every_host_once_in_order() {
        let rollout = Rollout {
            batch: BatchSize::Count(2),
            ..Rollout::default()
        };
        let batches = rollout.batches(&hosts(5));
        assert_eq!(batches.concat(), hosts(5));
        assert_eq!(sizes(&rollout, 5), [2, 2, 1]);
        assert_eq!(sizes(&Rollout::default(), 5), [5]);
        assert!(Rollout::default().batches(&[]).is_empty());
    }

    #[test]
    fn percentages_round_up() {
        let rollout = |p| Rollout {
            batch: BatchSize::Percent(p),
            ..Rollout::default()
        };
        assert_eq!(sizes(&rollout(25), 10), [3, 3, 3, 1]);
        assert_eq!(sizes(&rollout(1), 3), [1, 1, 1]);
        assert_eq!(sizes(&rollout(100), 3), [3]);
    }

    #[test]
    fn a_canary_goes_first_alone() {
        let rollout = Rollout {
            canary: true,
            batch: BatchSize::Count(2),
            ..Rollout::default()
        };
        assert_eq!(sizes(&rollout, 5), [1, 2, 2]);
        let all = Rollout {
            canary: true,
            ..Rollout::default()
        };
        assert_eq!(sizes(&all, 4), [1, 3]);
        assert_eq!(sizes(&all, 1), [1]);
    }

    #[test]
    fn the_rollout_stops_only_past_the_allowed_failures() {
        let rollout = Rollout {
            max_failures: 1,
            ..Rollout::default()
        };
        assert!(!rollout.must_stop(1));
        assert!(rollout.must_stop(2));
        assert!(Rollout::default().must_stop(1));
        assert!(!Rollout::default().must_stop(0));
    }
}
