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
mod keys;
mod open;
mod pool;
mod shared_registry;

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};

use crate::clock::Clock;
use crate::config::Config;
use crate::counter::CounterKey;
use crate::engine::{Increment, check_event_time};
use crate::error::{Error, Result};
use crate::period::{DayKey, MonthKey, Retention};
use crate::query::{CompiledRead, CounterRow, Selector, read_rows};
use crate::registry::Provisional;
use crate::subject::{RegToken, Subject, random_hex_128, validate_uid};
use batch::{BatchPlan, Landing};
use keys::Keys;
pub use open::{
    ClusterBuilder, DEFAULT_IDEMPOTENCY_WINDOW, DEFAULT_NAMESPACE, DEFAULT_REGISTRY_REFRESH,
    DEFAULT_RETRY_FOR,
};
use shared_registry::SharedRegistry;

/// How long an expired regToken's key is kept after it expires, so that a
/// late caller hears "expired" rather than "unknown".
const EXPIRED_TOKEN_KEPT: Duration = Duration::from_secs(24 * 3600);

/// A connection to the counters in a Redis Cluster. Cloning is cheap;
/// clones share the connection and the registry copy.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    connection: ClusterConnection,
    keys: Keys,
    config: Config,
    clock: Arc<dyn Clock>,
    retention: Retention,
    registry: SharedRegistry,
    batch_script: Script,
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

/// Whether a batch is to be written or only checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Apply,
    Check,
}

/// What the batch script answered.
enum Reply {
    Ok,
    Duplicate,
    Overflow(Vec<i64>),
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
        self.inner.connection.clone()
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

    /// Issues a regToken for `uid`, valid for the configured time.
    pub async fn issue_reg_token(&self, uid: &str) -> Result<RegToken> {
        validate_uid(uid)?;
        let token = random_hex_128()?;
        let ttl = self.inner.config.reg_token_ttl.as_secs().max(1);
        let expires_at = self.inner.clock.unix_secs().saturating_add(ttl as i64);
        let _: () = redis::cmd("SET")
            .arg(self.inner.keys.token(&token))
            .arg(format!("{expires_at}:{uid}"))
            .arg("EX")
            .arg(ttl + EXPIRED_TOKEN_KEPT.as_secs())
            .query_async(&mut self.connection())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(RegToken::issued(token))
    }

    /// The UID a subject stands for.
    pub async fn resolve_uid(&self, subject: Subject<'_>) -> Result<String> {
        self.uid_of(subject, self.inner.clock.unix_secs()).await
    }

    async fn uid_of(&self, subject: Subject<'_>, now_secs: i64) -> Result<String> {
        let token = match subject {
            Subject::Uid(uid) => {
                validate_uid(uid)?;
                return Ok(uid.to_owned());
            }
            Subject::RegToken(token) => token,
        };
        if token.is_empty() {
            return Err(Error::UnknownRegToken);
        }
        let key = self.inner.keys.token(token);
        let stored: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut self.connection())
            .await
            .map_err(|e| self.failed(e))?;
        let stored = stored.ok_or(Error::UnknownRegToken)?;
        let (expires_at, uid) = stored
            .split_once(':')
            .and_then(|(at, uid)| Some((at.parse::<i64>().ok()?, uid)))
            .ok_or_else(|| Error::StoreCorrupt {
                key,
                reason: "a regToken's key holds no expiry".to_owned(),
            })?;
        if expires_at <= now_secs {
            return Err(Error::ExpiredRegToken {
                expired_at: expires_at,
            });
        }
        Ok(uid.to_owned())
    }

    /// Increments a batch at the instance clock's time, as
    /// [`Tally::increment`](crate::Tally::increment) does: validated whole,
    /// then applied by one script, or not at all.
    pub async fn increment<'s>(
        &self,
        subject: impl Into<Subject<'s>>,
        entries: &[Increment<'_>],
    ) -> Result<()> {
        let now = self.inner.clock.unix_secs();
        self.increment_batch(subject.into(), entries, now, now, Mode::Apply)
            .await
    }

    /// Increments a batch dated `at_unix_secs` (backfill and replay).
    pub async fn increment_at<'s>(
        &self,
        subject: impl Into<Subject<'s>>,
        entries: &[Increment<'_>],
        at_unix_secs: i64,
    ) -> Result<()> {
        let now = self.inner.clock.unix_secs();
        self.increment_batch(subject.into(), entries, at_unix_secs, now, Mode::Apply)
            .await
    }

    /// Validates a batch as [`Cluster::increment`] would, applying nothing.
    pub(crate) async fn check_increment(
        &self,
        subject: Subject<'_>,
        entries: &[Increment<'_>],
    ) -> Result<()> {
        let now = self.inner.clock.unix_secs();
        if entries.is_empty() {
            return self.uid_of(subject, now).await.map(drop);
        }
        self.increment_batch(subject, entries, now, now, Mode::Check)
            .await
    }

    async fn increment_batch(
        &self,
        subject: Subject<'_>,
        entries: &[Increment<'_>],
        at_secs: i64,
        now_secs: i64,
        mode: Mode,
    ) -> Result<()> {
        let max = self.inner.config.max_batch;
        if entries.is_empty() {
            return Err(Error::EmptyBatch);
        }
        if entries.len() > max {
            return Err(Error::BatchTooLarge {
                len: entries.len(),
                max,
            });
        }
        let uid = self.uid_of(subject, now_secs).await?;
        check_event_time(at_secs)?;
        self.trusted_registry().await?;
        let registry = self.inner.registry.local();
        let mut provisional =
            registry.resolve_provisionally(entries.iter().map(|e| (e.class, e.path)));
        if provisional.failure.is_some() {
            // A pair registered through another instance since the last
            // refresh is honoured at once, not only after the next one.
            self.refresh_registry().await?;
            provisional = registry.resolve_provisionally(entries.iter().map(|e| (e.class, e.path)));
        }
        let plan = plan_of(
            &provisional,
            entries,
            at_secs,
            self.inner.retention.horizon(now_secs),
        );
        let new_counters = provisional.new_counters();
        if mode == Mode::Check || provisional.failure.is_some() || !new_counters.is_empty() {
            // Check first: an entry before the first that does not resolve
            // may overflow, and a batch that creates counters must be
            // whole before it creates them.
            if let Reply::Overflow(current) = self
                .run(&uid, &plan, at_secs, now_secs, Mode::Check)
                .await?
            {
                return Err(self.overflow_error(&plan, &current, Some(&provisional)));
            }
            if let Some(failure) = provisional.failure {
                return Err(failure);
            }
            if mode == Mode::Check {
                return Ok(());
            }
            self.inner
                .registry
                .change(&mut self.connection(), |registry| {
                    registry.plan_new_counters(&new_counters)
                })
                .await
                .map_err(|e| e.at_entry(0))?;
            let resolved =
                registry.resolve_provisionally(entries.iter().map(|e| (e.class, e.path)));
            if let Some(failure) = resolved.failure {
                return Err(failure);
            }
            let plan = plan_of(
                &resolved,
                entries,
                at_secs,
                self.inner.retention.horizon(now_secs),
            );
            return self.apply(&uid, &plan, at_secs, now_secs).await;
        }
        self.apply(&uid, &plan, at_secs, now_secs).await
    }

    async fn apply(&self, uid: &str, plan: &BatchPlan, at_secs: i64, now_secs: i64) -> Result<()> {
        let lease = match &self.inner.waiting {
            Some(pool) => Some(pool.lease().await),
            None => None,
        };
        let connection = lease.as_ref().map(pool::Lease::connection);
        match self
            .run_on(connection, uid, plan, at_secs, now_secs, Mode::Apply)
            .await?
        {
            Reply::Ok => self.wait_for_replicas(connection, uid).await,
            // Applied by an earlier attempt of this very call.
            Reply::Duplicate => Ok(()),
            Reply::Overflow(current) => Err(self.overflow_error(plan, &current, None)),
        }
    }

    /// Runs the batch script once (the client retries it on MOVED, ASK,
    /// TRYAGAIN and lost connections; the marker makes a retry harmless).
    async fn run(
        &self,
        uid: &str,
        plan: &BatchPlan,
        at_secs: i64,
        now_secs: i64,
        mode: Mode,
    ) -> Result<Reply> {
        self.run_on(None, uid, plan, at_secs, now_secs, mode).await
    }

    /// [`Cluster::run`] on `connection`, or on the shared one.
    async fn run_on(
        &self,
        connection: Option<&ClusterConnection>,
        uid: &str,
        plan: &BatchPlan,
        at_secs: i64,
        now_secs: i64,
        mode: Mode,
    ) -> Result<Reply> {
        let keys = &self.inner.keys;
        let cells = keys.cells(uid);
        let batch_id = random_hex_128()?;
        let (oldest_month, oldest_day) = self.inner.retention.horizon(now_secs);
        let mut invocation = self.inner.batch_script.prepare_invoke();
        invocation
            .key(&cells)
            .key(keys.batch_marker(uid, &batch_id))
            .arg(if mode == Mode::Apply {
                "apply"
            } else {
                "check"
            })
            .arg(self.inner.marker_millis)
            .arg(at_secs)
            .arg(oldest_month.0)
            .arg(oldest_day.0)
            .arg(plan.script_args());
        // Sent again with the same id: the marker makes it apply once.
        let reply: redis::Value = self
            .retrying(|| {
                let mut connection = connection.map_or_else(|| self.connection(), Clone::clone);
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut connection).await }
            })
            .await
            .map_err(|e| self.failed(e))?;
        parse_reply(&cells, reply)
    }

    /// Runs `attempt` until it succeeds, fails in a way another attempt
    /// cannot mend, or `retry_for` has passed. The client's own retries
    /// end after a number of attempts, and during a failover redirections
    /// to the dead master use those up in moments.
    async fn retrying<T, F, A>(&self, mut attempt: F) -> redis::RedisResult<T>
    where
        F: FnMut() -> A,
        A: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.inner.retry_for;
        let mut pause = Duration::from_millis(50);
        loop {
            match attempt().await {
                Err(error)
                    if worth_retrying(&error) && tokio::time::Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                outcome => return outcome,
            }
        }
    }

    /// Waits, if asked to, until enough replicas hold the subject's writes.
    /// `connection` is the one the batch was written on: `WAIT` counts
    /// that connection's writes.
    async fn wait_for_replicas(
        &self,
        connection: Option<&ClusterConnection>,
        uid: &str,
    ) -> Result<()> {
        let Some((replicas, timeout)) = self.inner.wait_for_replicas else {
            return Ok(());
        };
        let slot = Slot::for_key(self.inner.keys.cells(uid));
        let acknowledged: i64 = connection
            .map_or_else(|| self.connection(), Clone::clone)
            .route_command(
                redis::cmd("WAIT")
                    .arg(replicas)
                    .arg(timeout.as_millis() as u64)
                    .clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_slot(
                    slot,
                    SlotAddr::Master,
                ))),
            )
            .await
            .and_then(|value| redis::from_redis_value(value).map_err(redis::RedisError::from))
            .map_err(|e| {
                self.inner.registry.mark_stale();
                Error::StoreUnavailable {
                    reason: format!(
                        "the batch was applied, but its replicas could not be asked to \
                         acknowledge it ({e}): a failover may lose it"
                    ),
                }
            })?;
        if (acknowledged as usize) < replicas {
            return Err(Error::StoreUnavailable {
                reason: format!(
                    "the batch was applied, but {acknowledged} of the {replicas} replicas asked for \
                     acknowledged it within {} ms: a failover may lose it",
                    timeout.as_millis()
                ),
            });
        }
        Ok(())
    }

    fn overflow_error(
        &self,
        plan: &BatchPlan,
        current: &[i64],
        provisional: Option<&Provisional>,
    ) -> Error {
        let Some(overflow) = plan.first_overflow(current) else {
            // The values changed between the check and the replay here;
            // the script refused the batch all the same.
            return unavailable("the batch would overflow a stored amount");
        };
        let view = self.inner.registry.local().view();
        let (class, path) = provisional
            .and_then(|p| p.names(overflow.counter))
            .unwrap_or_else(|| view.names(overflow.counter));
        Error::Overflow {
            class: class.to_owned(),
            path: path.to_owned(),
            field: overflow.amount,
        }
        .at_entry(overflow.index)
    }

    /// Reads a subject's counters, as [`Tally::get`](crate::Tally::get) does.
    pub async fn get<'s>(
        &self,
        subject: impl Into<Subject<'s>>,
        selectors: &[Selector],
    ) -> Result<Vec<CounterRow>> {
        let now = self.inner.clock.unix_secs();
        let uid = self.uid_of(subject.into(), now).await?;
        let config = &self.inner.config;
        let read = CompiledRead::compile(selectors, config.max_path_depth, config.max_selectors)?;
        self.trusted_registry().await?;
        let key = self.inner.keys.cells(&uid);
        let read_all = redis::cmd("HGETALL").arg(&key).clone();
        let fields: Vec<(String, String)> = self
            .retrying(|| {
                let mut connection = self.connection();
                let read_all = &read_all;
                async move { read_all.query_async(&mut connection).await }
            })
            .await
            .map_err(|e| self.failed(e))?;
        let cells = cells::decode(&key, &fields)?;
        let known = |registry: &SharedRegistry| {
            let count = registry.local().counter_count();
            cells.keys().all(|&id| (id as usize) < count)
        };
        if !known(&self.inner.registry) {
            // Counters another instance created since the last refresh.
            self.refresh_registry().await?;
        }
        let count = self.inner.registry.local().counter_count();
        let view = self.inner.registry.local().view();
        let horizon = self.inner.retention.horizon(now);
        read_rows(
            cells
                .iter()
                .filter(|(id, _)| (**id as usize) < count)
                .map(|(id, cell)| (*id, cell)),
            &view,
            &read,
            now,
            horizon,
            config.max_rows,
        )
    }
}

/// The plan of the entries that resolved, dated `at_secs`.
fn plan_of(
    provisional: &Provisional,
    entries: &[Increment<'_>],
    at_secs: i64,
    horizon: crate::period::Horizon,
) -> BatchPlan {
    let landings: Vec<Landing<'_>> = provisional
        .targets
        .iter()
        .zip(entries)
        .map(|(targets, entry)| Landing {
            targets,
            count: entry.count,
            value: entry.value,
        })
        .collect();
    BatchPlan::new(
        &landings,
        MonthKey::of(at_secs),
        DayKey::of(at_secs),
        horizon,
    )
}

/// Reads the batch script's reply.
fn parse_reply(key: &str, reply: redis::Value) -> Result<Reply> {
    let corrupt = |reason: String| Error::StoreCorrupt {
        key: key.to_owned(),
        reason,
    };
    let text = |value: &redis::Value| -> Option<String> { redis::from_redis_value_ref(value).ok() };
    let redis::Value::Array(items) = reply else {
        return Err(corrupt(format!("the batch script answered {reply:?}")));
    };
    match items.first().and_then(text).as_deref() {
        Some("ok") => Ok(Reply::Ok),
        Some("duplicate") => Ok(Reply::Duplicate),
        Some("overflow") => {
            let current: Vec<String> = items
                .get(1)
                .and_then(|v| redis::from_redis_value_ref(v).ok())
                .unwrap_or_default();
            let current = current
                .iter()
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| corrupt(format!("a field holds {v:?}")))
                })
                .collect::<Result<Vec<i64>>>()?;
            Ok(Reply::Overflow(current))
        }
        Some("not_integer") => Err(corrupt(format!(
            "field {} does not hold an integer",
            items.get(1).and_then(text).unwrap_or_default()
        ))),
        other => Err(corrupt(format!("the batch script answered {other:?}"))),
    }
}
