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

/// The prefix of every key when [`ClusterBuilder::namespace`] is not set.
pub const DEFAULT_NAMESPACE: &str = "tally";
/// How often an instance reads the registry's changes by default.
pub const DEFAULT_REGISTRY_REFRESH: Duration = Duration::from_secs(1);
/// How long a call is retried by default before it fails as unavailable.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(15);
/// How long a batch's idempotency marker is kept by default.
pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(120);

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
            namespace: DEFAULT_NAMESPACE.to_owned(),
            registry_refresh: DEFAULT_REGISTRY_REFRESH,
            retry_for: DEFAULT_RETRY_FOR,
            idempotency_window: DEFAULT_IDEMPOTENCY_WINDOW,
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

    /// How long each command of a call may take, retries included, before
    /// the call fails with [`Error::StoreUnavailable`] (default 15 s). Keep
    /// it above the time a failover takes (with Redis's usual node timeout
    /// of 5 s, 8–9 s here), so that a batch sent while a master dies is
    /// applied by its replica once promoted rather than answered with an
    /// error that cannot say whether it was applied.
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
            // The time bound ends a call, not the number of attempts: a
            // failover takes several seconds of MOVED to the dead master,
            // refused connections and CLUSTERDOWN. (The client computes
            // its back-off as 2^attempt, which overflows past about 57.)
            .retries(40)
            .min_retry_wait(50)
            .max_retry_wait(500)
            .connection_timeout(Duration::from_secs(1).min(self.retry_for))
            .response_timeout(Duration::from_secs(2).min(self.retry_for))
            // An attempt that hangs (its node died mid-reply) gives way to
            // another within the call's bound.
            .overall_response_timeout(Some(self.retry_for / 4))
            .build()
            .map_err(|e| Error::Config(format!("cluster seeds: {e}")))?;
        let connection = client.get_async_connection().await.map_err(unavailable)?;
        let waiting = match self.wait_for_replicas {
            None => None,
            Some(_) => {
                let mut connections = Vec::with_capacity(super::pool::WAITING_CONNECTIONS);
                for _ in 0..super::pool::WAITING_CONNECTIONS {
                    let connection = client.get_async_connection().await.map_err(unavailable)?;
                    connections.push(super::renewable::RenewableConnection::new(
                        client.clone(),
                        connection,
                    ));
                }
                Some(super::pool::ConnectionPool::new(connections))
            }
        };
        let keys = Keys::new(&self.namespace);
        let registry = SharedRegistry::new(&self.config, keys.registry_log());
        let retention = Retention {
            months: self.config.monthly_retention,
            days: self.config.daily_retention,
        };
        let inner = Inner {
            connection: super::renewable::RenewableConnection::new(client, connection),
            keys,
            retention,
            registry,
            clock: self.clock,
            batch_script: Script::new(include_str!("batch.lua")),
            batch_ids: super::increment::BatchIds::new()?,
            marker_millis: self.idempotency_window.as_millis() as u64,
            retry_for: self.retry_for,
            wait_for_replicas: self.wait_for_replicas,
            waiting,
            refresher: std::sync::OnceLock::new(),
            config: self.config,
        };
        let mut connection = inner.connection.get().connection;
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
        let mut connection = inner.connection.get().connection;
        // A failure leaves the copy marked stale: the next call reads the
        // log before it trusts the copy.
        let _ = inner.registry.refresh(&mut connection).await;
    }
}
