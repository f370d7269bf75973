//! Opening an engine: the [`Builder`], recovery of a data directory, the
//! system classes, and the background snapshot timer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Inner, NEXT_ENGINE_ID, Tally};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::period::Retention;
use crate::persist::{Durability, Storage};
use crate::registry::Registry;
use crate::store::Store;
use crate::subject::{RegTokenResolver, TokenStore};

/// Builds a [`Tally`] engine: `Tally::builder()….build()`.
#[must_use = "a builder does nothing until .build() is called"]
pub struct Builder {
    pub(crate) config: Config,
    pub(crate) data_dir: Option<std::path::PathBuf>,
    pub(crate) durability: Durability,
    pub(crate) snapshot_interval: Option<Duration>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) resolver: Option<Arc<dyn RegTokenResolver>>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            config: Config::default(),
            data_dir: None,
            durability: Durability::default(),
            snapshot_interval: None,
            clock: Arc::new(SystemClock),
            resolver: None,
        }
    }
}

impl Builder {
    /// Starts from a whole [`Config`].
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The clock that dates increments and expires tokens (default: the system clock, UTC).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Deepest accepted path level, 1..=16 (default 2).
    pub fn max_path_depth(mut self, depth: usize) -> Self {
        self.config.max_path_depth = depth;
        self
    }

    /// Most entries in one increment batch (default 1,000).
    pub fn max_batch(mut self, entries: usize) -> Self {
        self.config.max_batch = entries;
        self
    }

    /// Most registered (class, path) pairs (default 10,000).
    pub fn max_registrations(mut self, pairs: usize) -> Self {
        self.config.max_registrations = pairs;
        self
    }

    /// Most counters that may exist, registered or not (default 100,000).
    pub fn max_counters(mut self, counters: usize) -> Self {
        self.config.max_counters = counters;
        self
    }

    /// Most selectors in one read (default 100).
    pub fn max_selectors(mut self, selectors: usize) -> Self {
        self.config.max_selectors = selectors;
        self
    }

    /// Most rows one read returns (default 10,000).
    pub fn max_rows(mut self, rows: usize) -> Self {
        self.config.max_rows = rows;
        self
    }

    /// Month buckets kept, counting the current month (default 24).
    pub fn monthly_retention(mut self, months: u32) -> Self {
        self.config.monthly_retention = months;
        self
    }

    /// Day buckets kept, counting today (default 90, at least 7).
    pub fn daily_retention(mut self, days: u32) -> Self {
        self.config.daily_retention = days;
        self
    }

    /// How long an issued regToken stays valid (default 1 hour).
    pub fn reg_token_ttl(mut self, ttl: Duration) -> Self {
        self.config.reg_token_ttl = ttl;
        self
    }

    /// Classes that accept every valid path without registration.
    pub fn system_classes<I, S>(mut self, classes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.system_classes = classes.into_iter().map(Into::into).collect();
        self
    }

    /// Resolves regTokens the engine did not issue, through the host's account system.
    pub fn reg_token_resolver(mut self, resolver: impl RegTokenResolver) -> Self {
        self.resolver = Some(Arc::new(resolver));
        self
    }

    /// Keeps the engine's data in `dir` (created if missing, recovered if
    /// not). Without a data directory the engine lives in memory only.
    pub fn data_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// How writes are made durable (default `Interval(1 s)`); needs a data directory.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Writes a snapshot in the background this often (default: only on
    /// request and on close); needs a data directory.
    pub fn snapshot_interval(mut self, interval: Duration) -> Self {
        self.snapshot_interval = Some(interval);
        self
    }

    /// Validates the configuration and builds the engine.
    pub fn build(self) -> Result<Tally> {
        self.config.validate()?;
        Tally::from_builder(self)
    }
}

impl Tally {
    pub(crate) fn from_builder(builder: Builder) -> Result<Tally> {
        let config = builder.config;
        let retention = Retention {
            months: config.monthly_retention,
            days: config.daily_retention,
        };
        let fresh = || {
            (
                Registry::new(config.max_path_depth, config.max_registrations)
                    .with_max_counters(config.max_counters),
                Store::default(),
                TokenStore::new(config.reg_token_ttl),
            )
        };
        let now = builder.clock.unix_secs();
        let (storage, registry, store, tokens) = match &builder.data_dir {
            None => {
                let (registry, store, tokens) = fresh();
                (None, registry, Arc::new(store), tokens)
            }
            Some(dir) => {
                let (storage, recovered) =
                    Storage::open(dir, builder.durability, now, retention.horizon(now), &fresh)?;
                (
                    Some(storage),
                    recovered.registry,
                    recovered.store,
                    recovered.tokens,
                )
            }
        };
        let (timer, timer_rx) = match (builder.snapshot_interval, &storage) {
            (Some(interval), Some(_)) => {
                let (tx, rx) = crossbeam::channel::bounded::<()>(1);
                (Some(tx), Some((interval, rx)))
            }
            _ => (None, None),
        };
        let engine = Tally {
            inner: Arc::new(Inner {
                id: NEXT_ENGINE_ID.fetch_add(1, Ordering::Relaxed),
                storage,
                _snapshot_timer: timer,
                retention,
                tokens,
                clock: builder.clock,
                resolver: builder.resolver,
                registry,
                store,
                config,
            }),
        };
        engine.commit_registry(
            engine
                .inner
                .registry
                .plan_system_classes(&engine.inner.config.system_classes)?,
        )?;
        if let Some(storage) = &engine.inner.storage {
            // Without a log, what was just replayed lives only in memory
            // until a snapshot holds it.
            if storage.wal().is_none() && !storage.report().segments.is_empty() {
                engine.snapshot()?;
            }
        }
        if let Some((interval, stop)) = timer_rx {
            engine.spawn_snapshot_timer(interval, stop)?;
        }
        Ok(engine)
    }

    fn spawn_snapshot_timer(
        &self,
        interval: std::time::Duration,
        stop: crossbeam::channel::Receiver<()>,
    ) -> Result<()> {
        let weak = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name("tally-snapshots".into())
            .spawn(move || {
                while let Err(crossbeam::channel::RecvTimeoutError::Timeout) =
                    stop.recv_timeout(interval)
                {
                    let Some(inner) = weak.upgrade() else { return };
                    // A failed background snapshot leaves the log in place;
                    // the next one (or close) tries again.
                    let _ = (Tally { inner }).snapshot();
                }
            })
            .map_err(|e| Error::io("starting the snapshot thread", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn the_builder_rejects_an_invalid_config() {
        assert!(matches!(
            Builder::default().max_path_depth(0).build(),
            Err(Error::Config(_))
        ));
        let engine = Builder::default()
            .max_path_depth(3)
            .system_classes(["_s"])
            .build()
            .unwrap();
        assert_eq!(engine.config().max_path_depth, 3);
        assert_eq!(engine.config().system_classes, ["_s"]);
    }
}
