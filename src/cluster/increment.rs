//! Increments on the shared store: a batch validated whole, resolved
//! against the registry copy and applied by one run of the batch script,
//! which checks every bucket before it writes any. A batch that creates
//! counters, or has an entry that does not resolve, is checked by the
//! script first. With the wait option, replicas acknowledge it.

use std::sync::atomic::{AtomicU64, Ordering};

use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};

use super::batch::{BatchPlan, Landing};
use super::renewable::RenewableConnection;
use super::{Cluster, pool, unavailable};
use crate::engine::{Increment, check_event_time};
use crate::error::{Error, Result};
use crate::period::{DayKey, MonthKey};
use crate::registry::Provisional;
use crate::subject::Subject;

/// Idempotency ids of one handle's batches: a random 64-bit prefix drawn
/// when the handle connects, then a running number. Ids of one handle
/// never repeat, and two handles draw the same prefix with probability
/// 2^-64. Unlike regTokens, batch ids need not be unguessable (only a
/// writer to the store could misuse one), so a batch costs no draw from
/// the system's random source.
pub(super) struct BatchIds {
    prefix: u64,
    next: AtomicU64,
}

impl BatchIds {
    pub(super) fn new() -> Result<BatchIds> {
        let mut prefix = [0u8; 8];
        getrandom::fill(&mut prefix).map_err(|e| Error::Random(e.to_string()))?;
        Ok(BatchIds {
            prefix: u64::from_be_bytes(prefix),
            next: AtomicU64::new(0),
        })
    }

    /// A new id, 32 hexadecimal characters.
    fn next(&self) -> String {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{number:016x}", self.prefix)
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

impl Cluster {
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
        connection: Option<&RenewableConnection>,
        uid: &str,
        plan: &BatchPlan,
        at_secs: i64,
        now_secs: i64,
        mode: Mode,
    ) -> Result<Reply> {
        let keys = &self.inner.keys;
        let cells = keys.cells(uid);
        let batch_id = self.inner.batch_ids.next();
        let (oldest_month, oldest_day) = self.inner.retention.horizon(now_secs);
        // EVALSHA built here rather than through `ScriptInvocation`: the
        // arguments go straight into the command's one buffer.
        let script = &self.inner.batch_script;
        let mut command = redis::cmd("EVALSHA");
        command
            .arg(script.get_hash())
            .arg(2)
            .arg(&cells)
            .arg(keys.batch_marker(uid, &batch_id))
            .arg(if mode == Mode::Apply {
                "apply"
            } else {
                "check"
            })
            .arg(self.inner.marker_millis)
            .arg(at_secs)
            .arg(oldest_month.0)
            .arg(oldest_day.0);
        plan.write_script_args(&mut command, at_secs);
        // Sent again with the same id: the marker makes it apply once.
        let reply: redis::Value = self
            .retrying_on(
                connection.unwrap_or(&self.inner.connection),
                |mut connection| {
                    let command = &command;
                    async move {
                        match command.query_async(&mut connection).await {
                            // A node without the script (restarted, promoted,
                            // flushed) is given it, then asked again.
                            Err(error)
                                if error.kind()
                                    == redis::ErrorKind::Server(
                                        redis::ServerErrorKind::NoScript,
                                    ) =>
                            {
                                script.load_async(&mut connection).await?;
                                command.query_async(&mut connection).await
                            }
                            outcome => outcome,
                        }
                    }
                },
            )
            .await
            .map_err(|e| self.failed(e))?;
        parse_reply(&cells, reply)
    }
    /// Waits, if asked to, until enough replicas hold the subject's writes.
    /// `connection` is the one the batch was written on: `WAIT` counts
    /// that connection's writes.
    async fn wait_for_replicas(
        &self,
        connection: Option<&RenewableConnection>,
        uid: &str,
    ) -> Result<()> {
        let Some((replicas, timeout)) = self.inner.wait_for_replicas else {
            return Ok(());
        };
        let slot = Slot::for_key(self.inner.keys.cells(uid));
        let acknowledged: i64 = connection
            .map_or_else(|| self.connection(), |leased| leased.get().connection)
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
            "field {} does not hold COUNT:VALUE:LASTUPDATED with canonical 64-bit integers",
            items.get(1).and_then(text).unwrap_or_default()
        ))),
        other => Err(corrupt(format!("the batch script answered {other:?}"))),
    }
}
