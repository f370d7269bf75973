//! Runs one suite against both stores: the embedded engine always, and the
//! shared store on Redis Cluster when the `cluster-tests` feature is on.
//!
//! A suite writes each test once inside [`store_tests!`]; the macro makes
//! `embedded::NAME` and (with the feature) `cluster::NAME`. A test builds
//! its store with [`Store::builder`] and calls it as it would call a
//! `Tally`: [`Store`] has the same methods, blocking on the cluster's.
//!
//! The cluster tests read the cluster's seed nodes from
//! `TALLY_TEST_CLUSTER` (`HOST:PORT,…`) and fail when it is not set: a
//! cluster test never passes by doing nothing. Each store gets a
//! namespace of its own, so tests running at once never share counters.

#![allow(dead_code, reason = "each suite uses only some of these helpers")]

use std::time::Duration;

use tally::rest::Response;
use tally::{
    Config, CounterKey, CounterRow, Increment, ManualClock, RegToken, Result, Selector, Subject,
    Tally,
};

/// Which store a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// The in-process engine.
    Embedded,
    /// The shared store on Redis Cluster.
    Cluster,
}

/// Writes each test once, for both stores. The body sees `$kind`.
#[macro_export]
macro_rules! store_tests {
    ($($(#[$meta:meta])* fn $name:ident($kind:ident) $body:block)*) => {
        mod embedded {
            #[allow(unused_imports)]
            use super::*;
            $( $(#[$meta])* #[test] fn $name() { let $kind = $crate::stores::StoreKind::Embedded; $body } )*
        }
        #[cfg(feature = "cluster-tests")]
        mod cluster {
            #[allow(unused_imports)]
            use super::*;
            $( $(#[$meta])* #[test] fn $name() { let $kind = $crate::stores::StoreKind::Cluster; $body } )*
        }
    };
}

/// A store under test.
pub enum Store {
    /// The embedded engine.
    Embedded(Tally),
    /// The shared store.
    #[cfg(feature = "cluster-tests")]
    Cluster(tally::cluster::Cluster),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Store").field(&self.kind()).finish()
    }
}

/// The options a test sets, for either store.
pub struct StoreBuilder {
    kind: StoreKind,
    config: Config,
    clock: Option<ManualClock>,
}

impl StoreBuilder {
    /// The clock the store reads.
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }
    /// See `Builder::max_path_depth`.
    pub fn max_path_depth(mut self, depth: usize) -> Self {
        self.config.max_path_depth = depth;
        self
    }
    /// See `Builder::max_batch`.
    pub fn max_batch(mut self, entries: usize) -> Self {
        self.config.max_batch = entries;
        self
    }
    /// See `Builder::max_registrations`.
    pub fn max_registrations(mut self, pairs: usize) -> Self {
        self.config.max_registrations = pairs;
        self
    }
    /// See `Builder::max_counters`.
    pub fn max_counters(mut self, counters: usize) -> Self {
        self.config.max_counters = counters;
        self
    }
    /// See `Builder::max_selectors`.
    pub fn max_selectors(mut self, selectors: usize) -> Self {
        self.config.max_selectors = selectors;
        self
    }
    /// See `Builder::max_rows`.
    pub fn max_rows(mut self, rows: usize) -> Self {
        self.config.max_rows = rows;
        self
    }
    /// See `Builder::monthly_retention`.
    pub fn monthly_retention(mut self, months: u32) -> Self {
        self.config.monthly_retention = months;
        self
    }
    /// See `Builder::daily_retention`.
    pub fn daily_retention(mut self, days: u32) -> Self {
        self.config.daily_retention = days;
        self
    }
    /// See `Builder::reg_token_ttl`.
    pub fn reg_token_ttl(mut self, ttl: Duration) -> Self {
        self.config.reg_token_ttl = ttl;
        self
    }
    /// See `Builder::system_classes`.
    pub fn system_classes<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        classes: I,
    ) -> Self {
        self.config.system_classes = classes.into_iter().map(Into::into).collect();
        self
    }

    /// Builds the store, or the error its builder answers.
    pub fn try_build(self) -> Result<Store> {
        match self.kind {
            StoreKind::Embedded => {
                let mut builder = Tally::builder().config(self.config);
                if let Some(clock) = self.clock {
                    builder = builder.clock(clock);
                }
                builder.build().map(Store::Embedded)
            }
            StoreKind::Cluster => cluster::connect(self.config, self.clock),
        }
    }

    /// Builds the store.
    pub fn build(self) -> Store {
        self.try_build().expect("the store builds")
    }
}

#[cfg(feature = "cluster-tests")]
mod cluster {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// The runtime the cluster stores of a test binary run on.
    pub(super) fn runtime() -> &'static tokio::runtime::Runtime {
        static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        RUNTIME.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a Tokio runtime")
        })
    }

    /// The seed nodes of the test cluster.
    pub fn seeds() -> Vec<String> {
        let seeds = std::env::var("TALLY_TEST_CLUSTER").expect(
            "TALLY_TEST_CLUSTER must name the test cluster's nodes (HOST:PORT,...): \
             the cluster tests run only against a real cluster",
        );
        seeds.split(',').map(str::to_owned).collect()
    }

    /// A namespace no other store of this run uses.
    pub fn fresh_namespace() -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!(
            "test-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    pub(super) fn connect(config: Config, clock: Option<ManualClock>) -> Result<Store> {
        let mut builder = tally::cluster::Cluster::builder(seeds())
            .config(config)
            .namespace(fresh_namespace());
        if let Some(clock) = clock {
            builder = builder.clock(clock);
        }
        runtime().block_on(builder.connect()).map(Store::Cluster)
    }
}

#[cfg(not(feature = "cluster-tests"))]
mod cluster {
    use super::*;

    pub(super) fn connect(_: Config, _: Option<ManualClock>) -> Result<Store> {
        panic!("the cluster store is tested with the `cluster-tests` feature")
    }
}

#[cfg(feature = "cluster-tests")]
#[allow(unused_imports, reason = "for the suites that connect by themselves")]
pub use cluster::{fresh_namespace, seeds};

#[cfg(feature = "cluster-tests")]
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    cluster::runtime().block_on(future)
}

impl Store {
    /// A builder for a store of `kind` with the defaults.
    pub fn builder(kind: StoreKind) -> StoreBuilder {
        StoreBuilder {
            kind,
            config: Config::default(),
            clock: None,
        }
    }

    /// A store of `kind` with the defaults, on `clock`.
    pub fn on_clock(kind: StoreKind, clock: &ManualClock) -> Store {
        Store::builder(kind).clock(clock.clone()).build()
    }

    /// Which store this is.
    pub fn kind(&self) -> StoreKind {
        match self {
            Store::Embedded(_) => StoreKind::Embedded,
            #[cfg(feature = "cluster-tests")]
            Store::Cluster(_) => StoreKind::Cluster,
        }
    }

    /// The embedded engine, for what only it has (handles, data directories).
    pub fn embedded(&self) -> Option<&Tally> {
        match self {
            Store::Embedded(engine) => Some(engine),
            #[cfg(feature = "cluster-tests")]
            Store::Cluster(_) => None,
        }
    }

    /// The limits the store applies.
    pub fn config(&self) -> &Config {
        match self {
            Store::Embedded(engine) => engine.config(),
            #[cfg(feature = "cluster-tests")]
            Store::Cluster(cluster) => cluster.config(),
        }
    }

    /// `register`.
    pub fn register<I>(&self, counters: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<CounterKey>,
    {
        match self {
            Store::Embedded(engine) => engine.register(counters),
            #[cfg(feature = "cluster-tests")]
            Store::Cluster(cluster) => block_on(cluster.register(counters)),
        }
    }

    /// `unregister`.
    pub fn unregister<I>(&self, counters: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<CounterKey>,
    {
        match self {
            Store::Embedded(engine) => engine.unregister(counters),
            #[cfg(feature = "cluster-tests")]
            Store::Cluster(cluster) => block_on(cluster.unregister(counters)),
        }
    }

    /// `registered`.
    pub fn registered(&self) -> Vec<CounterKey> {
        match self {
            Store::Embedded(engine) => engine.registered(),
            #[cfg(feature = "cluster-tests")]
            Store::Cluster(cluster) => block_on(cluster.registered()).expect("registered"),
        }
    }

    /// `increment`.
    pub fn increment<'s>(
        &self,
        subject: impl Into<Subject<'s>>,
        entries: &[Increment<'_>],
    ) -> Result<()> {
        match self {
            Store::Embedded(engine) => engine.increment(subject, entries),
            #[cfg(feature = "cluster-tests")]
            Store::Cluster(cluster) => block_on(cluster.increment(subject, entries)),
        }
    }

    /// `increment_at`.
    pub fn increment_at<'s>(
        &self,
        subject: impl Into<Subject<'s>>,
        entries: &[Increment<'_>],
        at_unix_secs: i64,
    ) -> Result<()> {
        match self {
            Store::Embedded(engine) => engine.increment_at(subject, entries, at_unix_secs),
            #[cfg(feature = "cluster-tests")]
            Store::Cluster(cluster) => {
                block_on(cluster.increment_at(subject, entries, at_unix_secs))
            }
        }
    }

    /// `get`.
    pub fn get<'s>(
        &self,
        subject: impl Into<Subject<'s>>,
        selectors: &[Selector],
    ) -> Result<Vec<CounterRow>> {
        match self {
            Store::Embedded(engine) => engine.get(subject, selectors),
            #[cfg(feature = "cluster-tests")]
            Store::Cluster(cluster) => block_on(cluster.get(subject, selectors)),
        }
    }

    /// `issue_reg_token`.
    pub fn issue_reg_token(&self, uid: &str) -> Result<RegToken> {
        match self {
            Store::Embedded(engine) => engine.issue_reg_token(uid),
            #[cfg(feature = "cluster-tests")]
            Store::Cluster(cluster) => block_on(cluster.issue_reg_token(uid)),
        }
    }

    /// `resolve_uid`.
    pub fn resolve_uid(&self, subject: Subject<'_>) -> Result<String> {
        match self {
            Store::Embedded(engine) => engine.resolve_uid(subject),
            #[cfg(feature = "cluster-tests")]
            Store::Cluster(cluster) => block_on(cluster.resolve_uid(subject)),
        }
    }

    /// The REST-compatible layer: `tally::rest::call`, or its cluster twin.
    pub fn rest(&self, method: &str, params: &[(&str, &str)]) -> Response {
        match self {
            Store::Embedded(engine) => tally::rest::call(engine, method, params),
            #[cfg(feature = "cluster-tests")]
            Store::Cluster(cluster) => block_on(tally::rest::call_cluster(cluster, method, params)),
        }
    }
}
