//! Engine configuration and its builder.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::engine::Tally;
use crate::error::{Error, Result};
use crate::persist::Durability;
use crate::subject::RegTokenResolver;

/// The deepest `max_path_depth` a configuration may set.
pub(crate) const MAX_PATH_DEPTH: usize = 16;

/// The engine's limits and retention; every field has the SPEC default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Deepest accepted path level, 1..=16 (default 2).
    pub max_path_depth: usize,
    /// Most entries in one increment batch (default 1,000).
    pub max_batch: usize,
    /// Most registered (class, path) pairs (default 10,000).
    pub max_registrations: usize,
    /// Most counters that may exist, registered or not (default 100,000):
    /// every (class, path) ever registered and every path a system class
    /// created on first use. Past it, registering or incrementing a new
    /// path fails with [`Error::TooManyCounters`].
    pub max_counters: usize,
    /// Most selectors in one read (default 100); more is
    /// [`Error::TooManySelectors`], before any is compiled.
    pub max_selectors: usize,
    /// Most rows one read returns (default 10,000); a read that would
    /// return more fails with [`Error::TooManyRows`].
    pub max_rows: usize,
    /// Month buckets kept, counting the current month (default 24).
    pub monthly_retention: u32,
    /// Day buckets kept, counting today (default 90, at least 7).
    pub daily_retention: u32,
    /// How long an issued regToken stays valid (default 1 hour; at least
    /// one second; counted in whole seconds, a fraction is dropped).
    pub reg_token_ttl: Duration,
    /// Classes that accept every valid path without registration (default none).
    pub system_classes: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_path_depth: 2,
            max_batch: 1000,
            max_registrations: 10_000,
            max_counters: 100_000,
            max_selectors: 100,
            max_rows: 10_000,
            monthly_retention: 24,
            daily_retention: 90,
            reg_token_ttl: Duration::from_secs(3600),
            system_classes: Vec::new(),
        }
    }
}

impl Config {
    /// Checks every limit; the builder calls this.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_PATH_DEPTH).contains(&self.max_path_depth) {
            return Err(Error::Config(format!(
                "max_path_depth must be 1..=16, got {}",
                self.max_path_depth
            )));
        }
        if self.max_batch == 0 {
            return Err(Error::Config("max_batch must be at least 1".into()));
        }
        if self.monthly_retention == 0 {
            return Err(Error::Config("monthly_retention must be at least 1".into()));
        }
        if self.daily_retention < 7 {
            return Err(Error::Config(format!(
                "daily_retention must be at least 7 (last7Days needs them), got {}",
                self.daily_retention
            )));
        }
        if self.reg_token_ttl < Duration::from_secs(1) {
            return Err(Error::Config(format!(
                "reg_token_ttl must be at least one second (tokens expire on whole seconds), got {:?}",
                self.reg_token_ttl
            )));
        }
        if self.max_counters == 0 {
            return Err(Error::Config("max_counters must be at least 1".into()));
        }
        if self.max_selectors == 0 || self.max_rows == 0 {
            return Err(Error::Config(
                "max_selectors and max_rows must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec() {
        let config = Config::default();
        assert_eq!(config.max_path_depth, 2);
        assert_eq!(config.max_batch, 1000);
        assert_eq!(config.max_registrations, 10_000);
        assert_eq!((config.max_selectors, config.max_rows), (100, 10_000));
        assert_eq!((config.monthly_retention, config.daily_retention), (24, 90));
        assert_eq!(config.reg_token_ttl, Duration::from_secs(3600));
        assert!(config.system_classes.is_empty());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn every_limit_is_checked() {
        let bad = [
            Config {
                max_path_depth: 0,
                ..Config::default()
            },
            Config {
                max_path_depth: 17,
                ..Config::default()
            },
            Config {
                max_batch: 0,
                ..Config::default()
            },
            Config {
                monthly_retention: 0,
                ..Config::default()
            },
            Config {
                daily_retention: 6,
                ..Config::default()
            },
            Config {
                reg_token_ttl: Duration::ZERO,
                ..Config::default()
            },
            Config {
                reg_token_ttl: Duration::from_millis(999),
                ..Config::default()
            },
            Config {
                max_counters: 0,
                ..Config::default()
            },
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(Error::Config(_))),
                "{config:?}"
            );
        }
        let edges = [
            Config {
                max_path_depth: 1,
                ..Config::default()
            },
            Config {
                max_path_depth: 16,
                ..Config::default()
            },
            Config {
                daily_retention: 7,
                ..Config::default()
            },
            Config {
                reg_token_ttl: Duration::from_secs(1),
                ..Config::default()
            },
        ];
        for config in edges {
            assert!(config.validate().is_ok(), "{config:?}");
        }
    }

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
