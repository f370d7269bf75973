//! Connecting to a cluster: the builder and its options.

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::Script;
use redis::cluster::ClusterClient;

use super::keys::Keys;
use super::shared_registry::SharedRegistry;
use super::{Cluster, Inner, unavailable};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::period::Retention;

/// Options for [`Cluster::builder`]; [`ClusterBuilder::connect`] connects.
///
/// ```no_run
/// use std::time::Duration;
/// use tally::{Config, cluster::Cluster};
///
/// # async fn example() -> tally::Result<()> {
/// let cluster = Cluster::builder(["10.0.0.1:6379", "10.0.0.2:6379"])
///     .config(Config { max_batch: 100, ..Config::default() })
///     .registry_refresh(Duration::from_millis(500))
///     .wait_for_replicas(1, Duration::from_millis(100))
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
pub struct ClusterBuilder {
    seeds: Vec<String>,
    config: Config,
    clock: Arc<dyn Clock>,
    namespace: String,
    registry_refresh: Duration,
    retry_for: Duration,
    idempotency_window: Duration,
    wait_for_replicas: Option<(usize, Duration)>,
}

impl ClusterBuilder {
    pub(super) fn new(seeds: Vec<String>) -> Self {
        ClusterBuilder {
            seeds,
            config: Config::default(),
            clock: Arc::new(SystemClock),
            namespace: "tally".to_owned(),
            registry_refresh: Duration::from_secs(1),
            retry_for: Duration::from_secs(10),
            idempotency_window: Duration::from_secs(120),
            wait_for_replicas: None,
        }
    }

    /// Limits and retention, as for the embedded engine. Every instance
    /// sharing a cluster should use the same.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The clock that dates increments and expires regTokens.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The prefix of every key (default `tally`): instances with the
    /// same namespace share counters; different namespaces never meet.
    /// No braces, colons or spaces.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How often the registry's log is read for changes other instances
    /// made (default 1 s).
    pub fn registry_refresh(mut self, every: Duration) -> Self {
        self.registry_refresh = every;
        self
    }

    /// How long one call may take, retries included, before it fails with
    /// [`Error::StoreUnavailable`] (default 10 s: a failover with Redis's
    /// usual node timeout of 5 s takes about 7 s).
    pub fn retry_for(mut self, bound: Duration) -> Self {
        self.retry_for = bound;
        self
    }

    /// How long a batch's marker is kept, so that a retry of it is applied
    /// once (default 120 s; at least twice [`ClusterBuilder::retry_for`]).
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window;
        self
    }

    /// Answers an increment only once `replicas` replicas hold it (Redis
    /// `WAIT`), waiting at most `timeout`; fewer in time is
    /// [`Error::StoreUnavailable`], though the batch stays applied.
    pub fn wait_for_replicas(mut self, replicas: usize, timeout: Duration) -> Self {
        self.wait_for_replicas = (replicas > 0).then_some((replicas, timeout));
        self
    }

    fn validate(&self) -> Result<()> {
        self.config.validate()?;
        if self.seeds.is_empty() {
            return Err(Error::Config(
                "a cluster needs at least one seed node".into(),
            ));
        }
        let namespace_ok = !self.namespace.is_empty()
            && self
                .namespace
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'{' | b'}' | b':'));
        if !namespace_ok {
            return Err(Error::Config(format!(
                "a namespace is printable ASCII without braces or colons, got {:?}",
                self.namespace
            )));
        }
        if self.registry_refresh.is_zero() || self.retry_for.is_zero() {
            return Err(Error::Config(
                "registry_refresh and retry_for must be longer than zero".into(),
            ));
        }
        if self.idempotency_window < self.retry_for * 2 {
            return Err(Error::Config(format!(
                "idempotency_window ({:?}) must be at least twice retry_for ({:?})",
                self.idempotency_window, self.retry_for
            )));
        }
        Ok(())
    }

    /// Connects, reads the registry, and starts reading it every
    /// `registry_refresh`. Must be called within a Tokio runtime.
    pub async fn connect(self) -> Result<Cluster> {
        self.validate()?;
        let nodes: Vec<String> = self
            .seeds
            .iter()
            .map(|seed| format!("redis://{seed}"))
            .collect();
        let client = ClusterClient::builder(nodes)
            .retries(8)
            .min_retry_wait(50)
            .max_retry_wait(2_000)
            .connection_timeout(Duration::from_secs(1).min(self.retry_for))
            .response_timeout(Duration::from_secs(2).min(self.retry_for))
            .overall_response_timeout(Some(self.retry_for))
            .build()
            .map_err(|e| Error::Config(format!("cluster seeds: {e}")))?;
        let connection = client.get_async_connection().await.map_err(unavailable)?;
        let keys = Keys::new(&self.namespace);
        let registry = SharedRegistry::new(&self.config, keys.registry_log());
        let retention = Retention {
            months: self.config.monthly_retention,
            days: self.config.daily_retention,
        };
        let inner = Inner {
            connection,
            keys,
            retention,
            registry,
            clock: self.clock,
            batch_script: Script::new(include_str!("batch.lua")),
            marker_millis: self.idempotency_window.as_millis() as u64,
            wait_for_replicas: self.wait_for_replicas,
            refresher: std::sync::OnceLock::new(),
            config: self.config,
        };
        let mut connection = inner.connection.clone();
        inner.registry.refresh(&mut connection).await?;
        let classes = inner.config.system_classes.clone();
        if !classes.is_empty() {
            inner
                .registry
                .change(&mut connection, |registry| {
                    registry.plan_system_classes(&classes)
                })
                .await?;
        }
        let inner = Arc::new(inner);
        let refresher = tokio::spawn(refresh_every(Arc::downgrade(&inner), self.registry_refresh));
        let _ = inner.refresher.set(refresher);
        Ok(Cluster { inner })
    }
}

/// Reads the registry's log every `every` while the cluster handle lives.
async fn refresh_every(inner: Weak<Inner>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut connection = inner.connection.clone();
        // A failure leaves the copy marked stale: the next call reads the
        // log before it trusts the copy.
        let _ = inner.registry.refresh(&mut connection).await;
    }
}
