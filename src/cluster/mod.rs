//! The shared store: the same counters, kept in a Redis Cluster that any
//! number of instances use at once (feature `redis`).
//!
//! A [`Cluster`] answers the calls a [`Tally`](crate::Tally) answers —
//! register, unregister, increment, get, regTokens — with the same
//! rules and the same [`Error`]s, asynchronously. What differs is where
//! the data lives and what the store guarantees (see `docs/scale-out.md`):
//!
//! - A subject's cells are one Redis hash whose key carries the UID as its
//!   hash tag. A batch is applied by one script that checks every field
//!   it changes, the exact overflow check included, before writing any,
//!   and writes all of them or none. Each batch carries a random id whose
//!   marker the script keeps for the idempotency window: a batch the
//!   client sends again after a lost reply is applied once.
//! - The registry is a log of changes in one slot; each instance replays
//!   it into its own copy, reads it again every `registry_refresh` and
//!   after a failed call, and appends a change only if the log is at the
//!   version the change was planned against. Until an instance has read
//!   a change, it may still accept (or refuse) a pair another instance
//!   has just unregistered (or registered).
//! - regTokens are keys that Redis expires.
//! - A call the cluster cannot answer within the bounded retry fails with
//!   [`Error::StoreUnavailable`] (500001); the client reconnects by itself.
//!
//! ```no_run
//! use tally::{Increment, Selector};
//! use tally::cluster::Cluster;
//!
//! # async fn example() -> tally::Result<()> {
//! let cluster = Cluster::builder(["127.0.0.1:7000", "127.0.0.1:7001"]).connect().await?;
//! cluster.register([("shares", "/news")]).await?;
//! cluster.increment("0123456789abcdef0123456789abcdef", &[Increment::new("shares", "/news")]).await?;
//! let rows = cluster.get("0123456789abcdef0123456789abcdef", &[Selector::class("shares")]).await?;
//! assert_eq!(rows[0].count, 1);
//! # Ok(())
//! # }
//! ```
mod batch;
mod cells;
mod increment;
mod keys;
mod open;
mod pool;
mod read;
mod renewable;
mod shared_registry;
mod tokens;

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use crate::clock::Clock;
use crate::config::Config;
use crate::counter::CounterKey;
use crate::error::{Error, Result};
use crate::period::Retention;
use keys::Keys;
pub use open::{
    ClusterBuilder, DEFAULT_IDEMPOTENCY_WINDOW, DEFAULT_NAMESPACE, DEFAULT_REGISTRY_REFRESH,
    DEFAULT_RETRY_FOR,
};
use shared_registry::SharedRegistry;

/// A connection to the counters in a Redis Cluster. Cloning is cheap;
/// clones share the connection and the registry copy.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    connection: renewable::RenewableConnection,
    keys: Keys,
    config: Config,
    clock: Arc<dyn Clock>,
    retention: Retention,
    registry: SharedRegistry,
    batch_script: Script,
    batch_ids: increment::BatchIds,
    /// How long a batch's marker is kept, in milliseconds.
    marker_millis: u64,
    /// How long a batch is sent again after failures the client gave up on.
    retry_for: Duration,
    /// Replicas that must acknowledge a batch, and how long to wait.
    wait_for_replicas: Option<(usize, Duration)>,
    /// With the wait option, the connections batches lease.
    waiting: Option<pool::ConnectionPool>,
    /// The background task that reads the registry's log.
    refresher: std::sync::OnceLock<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(refresher) = self.refresher.get() {
            refresher.abort();
        }
    }
}

/// Whether a failed command may succeed if sent again: the store was
/// unreachable, moving, failing over or busy, not refusing the command.
fn worth_retrying(error: &redis::RedisError) -> bool {
    !matches!(error.retry_method(), redis::RetryMethod::NoRetry)
        || error.is_timeout()
        || error.is_io_error()
}

/// A failure to reach the store, as the error callers see.
pub(crate) fn unavailable(error: impl Display) -> Error {
    Error::StoreUnavailable {
        reason: error.to_string(),
    }
}

impl Cluster {
    /// A builder connecting to the cluster through `seeds` (`HOST:PORT`,
    /// any of its nodes; more than one in case one is down).
    pub fn builder<I, S>(seeds: I) -> ClusterBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClusterBuilder::new(seeds.into_iter().map(Into::into).collect())
    }

    /// The limits and retention this instance applies.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The instance clock's current time, Unix milliseconds.
    pub fn now_millis(&self) -> i64 {
        self.inner.clock.unix_millis()
    }

    fn connection(&self) -> ClusterConnection {
        self.inner.connection.get().connection
    }

    /// The store's error for a failed call; the registry copy is read
    /// again before it is next used.
    fn failed(&self, error: redis::RedisError) -> Error {
        self.inner.registry.mark_stale();
        unavailable(error)
    }

    /// Brings the registry copy up to date if a failed call left it in doubt.
    async fn trusted_registry(&self) -> Result<()> {
        if self.inner.registry.is_stale() {
            self.inner.registry.refresh(&mut self.connection()).await?;
        }
        Ok(())
    }

    /// Runs `attempt` on the shared connection until it succeeds, fails in
    /// a way another attempt cannot mend, or `retry_for` has passed.
    async fn retrying<T, F, A>(&self, attempt: F) -> redis::RedisResult<T>
    where
        F: FnMut(ClusterConnection) -> A,
        A: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.retrying_on(&self.inner.connection, attempt).await
    }

    /// [`Cluster::retrying`] on `source`. The client's own retries end
    /// after a number of attempts, and during a failover redirections to
    /// the dead master use those up in moments. An attempt that timed out
    /// renews `source`'s connection first.
    async fn retrying_on<T, F, A>(
        &self,
        source: &renewable::RenewableConnection,
        mut attempt: F,
    ) -> redis::RedisResult<T>
    where
        F: FnMut(ClusterConnection) -> A,
        A: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.inner.retry_for;
        let mut pause = Duration::from_millis(50);
        loop {
            let leased = source.get();
            match attempt(leased.connection).await {
                Err(error)
                    if worth_retrying(&error) && tokio::time::Instant::now() + pause < deadline =>
                {
                    if error.is_timeout() {
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        source.renew(leased.generation, left).await;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                outcome => return outcome,
            }
        }
    }

    /// Reads the registry's changes now rather than at the next refresh.
    pub async fn refresh_registry(&self) -> Result<()> {
        self.inner.registry.refresh(&mut self.connection()).await
    }

    /// Whether the cluster answers and says it is whole (`cluster_state:ok`).
    pub async fn check_health(&self) -> Result<()> {
        let info: String = self
            .connection()
            .route_command(
                redis::cmd("CLUSTER").arg("INFO").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .and_then(|value| redis::from_redis_value(value).map_err(redis::RedisError::from))
            .map_err(|e| self.failed(e))?;
        if info.lines().any(|line| line.trim() == "cluster_state:ok") {
            Ok(())
        } else {
            Err(unavailable("the cluster reports a state other than ok"))
        }
    }

    /// Registers (class, path) pairs, as [`Tally::register`](crate::Tally::register) does.
    pub async fn register<I>(&self, counters: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<CounterKey>,
    {
        let keys: Vec<CounterKey> = counters.into_iter().map(Into::into).collect();
        self.inner
            .registry
            .change(&mut self.connection(), |registry| {
                registry.plan_register(&keys)
            })
            .await
    }

    /// Unregisters (class, path) pairs, as [`Tally::unregister`](crate::Tally::unregister) does.
    pub async fn unregister<I>(&self, counters: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<CounterKey>,
    {
        let keys: Vec<CounterKey> = counters.into_iter().map(Into::into).collect();
        self.inner
            .registry
            .change(&mut self.connection(), |registry| {
                registry.plan_unregister(&keys)
            })
            .await
    }

    /// The registered pairs, sorted, as this instance's copy knows them.
    pub async fn registered(&self) -> Result<Vec<CounterKey>> {
        self.trusted_registry().await?;
        Ok(self.inner.registry.local().registered())
    }
}
