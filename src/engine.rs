//! The engine: [`Tally`] ties the registry, the store, the clock and the
//! regTokens together behind the public API. One concern a file:
//!
//! - `open`: the [`Builder`] and opening an engine (recovering its data
//!   directory, marking the system classes, the snapshot timer);
//! - `increment`: batches and handles, from names to the store's shard;
//! - `read`: `get`;
//! - `registration`: register, unregister and counter handles, each
//!   registry change logged, committed, then waited for;
//! - `tokens`: regTokens and resolving subjects;
//! - `durability`: snapshots, sync and close;
//! - `names`: the per-thread memo of names resolved for increments, and
//!   `targets`, the roll-up targets it holds.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::clock::Clock;
use crate::config::Config;
use crate::period::Retention;
use crate::persist::Storage;
use crate::registry::Registry;
use crate::store::Store;
use crate::subject::{RegTokenResolver, TokenStore};

mod durability;
mod increment;
mod names;
mod open;
mod read;
mod registration;
#[cfg(test)]
mod registry_sync_tests;
mod targets;
mod tokens;

pub use increment::Increment;
#[cfg(feature = "redis")]
pub(crate) use increment::check_event_time;
pub use open::Builder;

static NEXT_ENGINE_ID: AtomicU64 = AtomicU64::new(1);

struct Inner {
    id: u64,
    /// The data directory, when the engine is durable.
    storage: Option<Storage>,
    /// Dropping it stops the background snapshot thread.
    _snapshot_timer: Option<crossbeam::channel::Sender<()>>,
    config: Config,
    clock: Arc<dyn Clock>,
    resolver: Option<Arc<dyn RegTokenResolver>>,
    retention: Retention,
    registry: Registry,
    /// Shared with the log's write-behind thread, if any.
    store: Arc<Store>,
    tokens: TokenStore,
}

/// The counter engine. Cheap to clone (clones share one engine); `Send + Sync`.
///
/// See the [crate docs](crate) for an example.
#[derive(Clone)]
pub struct Tally {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally")
            .field("config", &self.inner.config)
            .field("subjects", &self.inner.store.subject_count())
            .finish_non_exhaustive()
    }
}

impl Tally {
    /// A builder with the documented defaults: in memory, system clock, depth 2.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The engine's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The engine clock's current time, Unix milliseconds.
    pub fn now_millis(&self) -> i64 {
        self.inner.clock.unix_millis()
    }

    fn now_secs(&self) -> i64 {
        self.inner.clock.unix_secs()
    }

    /// The number of subjects holding at least one cell.
    pub fn subject_count(&self) -> usize {
        self.inner.store.subject_count()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(storage) = &self.storage {
            // Best effort: errors cannot be reported from drop; the log
            // (unless durability is Never) already holds every write.
            if storage.close().is_ok() {
                let _ = storage.snapshot(
                    self.clock.unix_millis(),
                    &self.registry,
                    &self.store,
                    &self.tokens,
                );
            }
        }
    }
}
