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
//! ## Where to read on
//!
//! - `docs/semantics.md` in the repository: every rule an engine keeps,
//!   and each decision taken where the platform's API is silent (event
//!   time range, overflow order, rows only for periods holding data,
//!   retention, limits, durability, regTokens).
//! - `docs/architecture.md`: the modules, the path of an increment and of
//!   a read, the durability design.
//! - [`rest`] for the wire format, [`Durability`] for the sync policies,
//!   [`Builder`] for every option and its default.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod calendar;
mod clock;
#[cfg(feature = "redis")]
pub mod cluster;
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
#[doc(hidden)]
pub use subject::platform_shaped_uid;
pub use subject::{MAX_UID_BYTES, RegToken, RegTokenResolver, Subject, validate_uid};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The shared store's example, compiled as a doctest.
#[cfg(all(doctest, feature = "redis"))]
#[doc = include_str!("../docs/scale-out.md")]
struct ScaleOutDoctests;
