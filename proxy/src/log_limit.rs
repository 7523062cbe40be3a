//! Warnings that can come once per connection (a backend that refuses them all) are logged at
//! most once per period, with a count of those left out.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimitedLog {
    every: Duration,
    /// When the last line was logged, and how many were left out since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedLog {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Logs `message()` as a warning unless one was logged less than a period ago.
    pub fn warn(&self, message: impl FnOnce() -> String) {
        if let Some(left_out) = self.admit(Instant::now()) {
            if left_out == 0 {
                tracing::warn!("{}", message());
            } else {
                tracing::warn!("{} ({left_out} more like it not logged)", message());
            }
        }
    }

    /// Whether to log now, and how many were left out since the last.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, left_out) = &mut *state;
        match last {
            Some(at) if now.saturating_duration_since(*at) < self.every => {
                *left_out += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(left_out))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count_left_out() {
        let log = RateLimitedLog::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(log.admit(start), Some(0));
        assert_eq!(log.admit(start + Duration::from_secs(1)), None);
        assert_eq!(log.admit(start + Duration::from_secs(2)), None);
        assert_eq!(log.admit(start + Duration::from_secs(11)), Some(2));
    }
}
