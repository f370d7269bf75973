//! Engine configuration: the limits and retention of an engine, with
//! their defaults. [`Builder`](crate::Builder) sets them.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::path::MAX_PATH_DEPTH;

/// The engine's limits and retention; every field has the documented default.
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
}
