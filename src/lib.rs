//! # tally
//!
//! An embedded, in-process engine for per-user behavioural counters, with
//! the semantics of a hosted platform's "Signals" counter API: register
//! (class, path) counters, increment them per user with a count and a value,
//! read them back per period, and unregister them.
//!
//! ```
//! use tally::{Increment, ManualClock, Selector, Tally};
//!
//! # fn main() -> Result<(), tally::Error> {
//! let clock = ManualClock::new(1_795_780_800); // 2026-11-27 12:00:00 UTC
//! let engine = Tally::builder().clock(clock.clone()).build()?;
//! engine.register([("shares", "/news"), ("shares", "/news/sport")])?;
//!
//! // "user-1 shared a sport article", twice, then something at the root.
//! engine.increment("user-1", &[Increment::new("shares", "/news/sport").count(2)])?;
//! engine.increment("user-1", &[Increment::new("shares", "/")])?;
//!
//! // The hot path: resolve once, then increment without string work.
//! let sport = engine.counter("shares", "/news/sport")?;
//! engine.increment_counter("user-1", &sport, 1, 0)?;
//!
//! let rows = engine.get("user-1", &[Selector::class("shares")])?;
//! let totals: Vec<(&str, i64)> = rows.iter().map(|r| (r.path.as_str(), r.count)).collect();
//! // Increments roll up to registered ancestors and always to "/".
//! assert_eq!(totals, [("/", 4), ("/news", 3), ("/news/sport", 3)]);
//! assert_eq!(rows[0].last_updated, "2026-11-27 12:00:00Z");
//! # Ok(())
//! # }
//! ```
//!
//! ## Decisions where the specification is silent
//!
//! - Event times must fall in 2000-01-01..2100-01-01 UTC, because period
//!   keys carry two-digit years; other timestamps are
//!   [`Error::TimestampOutOfRange`].
//! - Overflow is checked entry by entry in batch order: entry *i* is
//!   rejected when adding it, after entries 0..*i*, would overflow a total,
//!   month or day amount of any cell it lands in.
//! - Rows exist only for periods holding data: reading a month, a day or
//!   `last7Days` in which a cell received nothing yields no row for it.
//!   `last7Days` sums saturate instead of wrapping.
//! - Rows are sorted by class, then path, then the period's text.
//! - Unregistering a pair that is not registered is not an error.
//! - Retention is measured from the engine clock: a backfilled increment
//!   older than the daily retention lands in `total` and its month, one
//!   older than the monthly retention in `total` only.
//! - A data directory reopened with a smaller `max_path_depth` than its
//!   counters were created under opens: those counters keep their data
//!   and are read through their class; new registrations, increments and
//!   exact selectors are held to the smaller depth.
//! - Expired regTokens are remembered (without their UIDs; the latest
//!   100,000 to expire, in memory and in snapshots), so callers hear
//!   "expired" rather than "unknown" however late they come.
//! - [`SystemClock`] dates increments with a second cached by one
//!   process-wide thread that moves it at each second boundary: it can lag
//!   the system clock by that thread's wake-up delay, never lead it.
//! - Under [`Durability::Always`] a batch is applied in memory, then its
//!   log record is synced, then the call returns. If that sync fails, the
//!   call fails and the engine refuses every later write
//!   ([`Error::Poisoned`]); readers may already have seen the batch, which
//!   a restart will not have unless the record reached the disk.
//! - Capacity: the store has no fixed limit on subjects; each shard's
//!   tables grow as subjects arrive, so memory is the bound (about a
//!   hundred bytes a cell). Counters are bounded by
//!   [`Config::max_counters`] (default 100,000): every (class, path) that
//!   ever existed counts, registered or not, including the paths a system
//!   class creates on first use. Past it, a registration or an increment
//!   that would create a counter fails with [`Error::TooManyCounters`]
//!   (400006). A counter is never reclaimed, even once unregistered: its
//!   data stays readable.
//! - A system class creates a path's counter, and those of all its
//!   ancestors, when a batch that uses the path is accepted; a rejected
//!   batch (or a REST request refused after its pre-check) creates and
//!   logs nothing. Its increments roll up to every ancestor, including
//!   paths registered explicitly and paths that existed before the class
//!   became a system class (from then on).
//! - `unregister` accepts a path deeper than the engine's `max_path_depth`
//!   when its counter exists, so a counter registered before a reopen
//!   with a smaller depth can still be unregistered.
//! - [`Config::reg_token_ttl`] is counted in whole seconds and must be at
//!   least one second.
//! - Under [`Durability::Always`], a registry change (a registration, an
//!   unregistration, a system class's new path) takes effect in memory,
//!   then its log record is synced, then the call returns: no other call
//!   waits on the registry for that sync. If the sync fails, the call
//!   fails and the engine refuses writes, as for a batch.
//! - [`Durability::Interval`] is write-behind: the log receives, once per
//!   interval, the whole state of each subject changed since the last
//!   time, not every batch. What the interval promises holds (an
//!   acknowledged increment is durable within the interval), replay lands
//!   every increment in the period buckets it was counted in, and the
//!   writer's cost is a bit set in memory. The log then no longer lists
//!   individual batches; under [`Durability::Always`] it does.
//!   [`Tally::sync`] writes back and syncs on demand. Its memory is
//!   bounded without backpressure: a subject is one state however often
//!   it changed.
//! - [`Tally::close`] syncs the log and takes a snapshot; the engine still
//!   accepts writes after it, and with no sync thread left, each write
//!   under [`Durability::Interval`] then logs and syncs its own batch.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod calendar;
mod clock;
mod config;
mod counter;
mod engine;
mod error;
#[cfg(feature = "http")]
pub mod http;
mod path;
mod period;
mod persist;
mod query;
mod registry;
pub mod rest;
mod store;
mod subject;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use counter::{CounterKey, MAX_CLASS_BYTES, validate_class};
pub use engine::{Builder, Increment, Tally};
pub use error::{AmountField, Error, ErrorCode, Result};
pub use path::{MAX_PATH_BYTES, ROOT, validate_path};
pub use period::{DayKey, MonthKey, Period};
#[doc(hidden)]
pub use persist::fuzzing;
pub use persist::inspect;
pub use persist::{Durability, RecoveryReport, SnapshotSummary};
pub use query::{CounterRow, MAX_REGEX_BYTES, Selector};
pub use registry::CounterHandle;
pub use subject::{MAX_UID_BYTES, RegToken, RegTokenResolver, Subject, validate_uid};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
