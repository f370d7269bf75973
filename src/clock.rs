//! The engine clock: UTC wall time, injectable for tests.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Once};
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

    /// Whole seconds, as every increment without an explicit time reads
    /// them: from a process-wide cache that a background thread moves
    /// forward at each second boundary, so a read is one atomic load
    /// rather than a system call (about 26 ns on a virtual machine). The
    /// cached second can lag the system clock by the thread's wake-up
    /// latency right after a boundary (normally well under a millisecond),
    /// never lead it. Without the thread (it could not start, or the clock
    /// is before 1970) every read asks the system.
    fn unix_secs(&self) -> i64 {
        match CACHED_SECS.load(Ordering::Relaxed) {
            0 => {
                start_second_ticker();
                exact_unix_secs()
            }
            secs => secs,
        }
    }
}

/// The current second for [`SystemClock::unix_secs`]; 0 until the ticker runs.
static CACHED_SECS: AtomicI64 = AtomicI64::new(0);

fn exact_unix_secs() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            // Round toward negative infinity, as `div_euclid` would.
            let secs = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            if before.subsec_nanos() > 0 {
                -secs - 1
            } else {
                -secs
            }
        }
    }
}

/// Starts, once per process, the thread that keeps [`CACHED_SECS`] at the
/// current second: it wakes just after each second boundary.
fn start_second_ticker() {
    static START: Once = Once::new();
    START.call_once(|| {
        let tick = || loop {
            let Ok(since) = SystemTime::now().duration_since(UNIX_EPOCH) else {
                CACHED_SECS.store(0, Ordering::Relaxed);
                return;
            };
            let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
            CACHED_SECS.store(secs, Ordering::Relaxed);
            let to_next = Duration::from_nanos(u64::from(1_000_000_000 - since.subsec_nanos()));
            std::thread::sleep(to_next);
        };
        // If the thread cannot start, reads keep asking the system.
        let _ = std::thread::Builder::new()
            .name("tally-clock".into())
            .spawn(tick);
    });
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
    fn system_clock_seconds_follow_the_system_time() {
        for _ in 0..3 {
            let before = exact_unix_secs();
            let secs = SystemClock.unix_secs();
            let after = SystemClock.unix_millis().div_euclid(1000);
            // Never ahead; behind only by the ticker's wake-up latency.
            assert!(
                secs <= after && secs >= before - 1,
                "{before} {secs} {after}"
            );
            std::thread::sleep(Duration::from_millis(400));
        }
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
