//! The engine clock: UTC wall time, injectable for tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current UTC time.
///
/// The engine reads it to date increments without an explicit event time,
/// to evaluate `last7Days` and retention, and to expire regTokens.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch, UTC.
    fn unix_millis(&self) -> i64;

    /// Whole seconds since the Unix epoch, UTC.
    fn unix_secs(&self) -> i64 {
        self.unix_millis().div_euclid(1000)
    }
}

/// The operating system's clock; the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_millis(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// A clock that only moves when told to; clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use tally::{Clock, ManualClock};
///
/// let clock = ManualClock::new(1_700_000_000);
/// let shared = clock.clone();
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(shared.unix_secs(), 1_700_000_060);
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `unix_secs` seconds since the epoch.
    pub fn new(unix_secs: i64) -> Self {
        ManualClock {
            millis: Arc::new(AtomicI64::new(unix_secs.saturating_mul(1000))),
        }
    }

    /// Moves the clock to `unix_secs`.
    pub fn set(&self, unix_secs: i64) {
        self.millis
            .store(unix_secs.saturating_mul(1000), Ordering::SeqCst);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.millis.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn unix_millis(&self) -> i64 {
        self.millis.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.unix_secs() > 1_577_836_800);
    }

    #[test]
    fn manual_clock_sets_and_advances() {
        let clock = ManualClock::new(100);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.unix_millis(), 101_500);
        assert_eq!(clock.unix_secs(), 101);
        clock.set(5);
        assert_eq!(clock.unix_secs(), 5);
    }
}
