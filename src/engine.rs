//! The engine: [`Tally`] ties the registry, the store, the clock and the
//! regTokens together behind the public API.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::calendar::{END_EVENT_SECS, MIN_EVENT_SECS};
use crate::clock::Clock;
use crate::config::{Builder, Config};
use crate::counter::CounterKey;
use crate::error::{Error, Result};
use crate::period::{Amount, EventTime, Retention};
use crate::persist::{RecordRef, RecoveryReport, SnapshotSummary, Storage, Wal};
use crate::query::{CompiledRead, CounterRow, Selector, read_rows};
use crate::registry::{CounterHandle, CounterId, PlannedChanges, Provisional, Registry, Targets};
use crate::store::{ApplyError, OverflowAt, ResolvedEntry, Store};
use crate::subject::{RegToken, RegTokenResolver, Subject, TokenStore, resolve_subject};

mod names;
#[cfg(test)]
mod registry_sync_tests;

/// One entry of an increment batch: add `count` and `value` to (class, path).
///
/// ```
/// use tally::Increment;
/// let purchase = Increment::new("_purchases", "/").value(200);
/// assert_eq!((purchase.count, purchase.value), (1, 200));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Increment<'a> {
    /// The counter class.
    pub class: &'a str,
    /// The counter path, `/` or a registered path.
    pub path: &'a str,
    /// How much to add to the count (default 1; negative corrects).
    pub count: i64,
    /// How much to add to the value (default 0; negative corrects).
    pub value: i64,
}

impl<'a> Increment<'a> {
    /// An entry counting one action, worth 0.
    pub fn new(class: &'a str, path: &'a str) -> Self {
        Increment {
            class,
            path,
            count: 1,
            value: 0,
        }
    }

    /// Sets the count to add.
    #[must_use]
    pub fn count(mut self, count: i64) -> Self {
        self.count = count;
        self
    }

    /// Sets the value to add.
    #[must_use]
    pub fn value(mut self, value: i64) -> Self {
        self.value = value;
        self
    }
}

/// The most cells one entry can land in: itself, 15 ancestors and the root.
const MAX_TARGETS: usize = 17;

/// The most entries of a batch resolved on the stack: a longer batch
/// allocates its resolved entries (one vector each for their targets and
/// for the entries).
const BATCH_ON_STACK: usize = 16;

/// A copy of an entry's roll-up targets, on the stack.
#[derive(Clone, Copy)]
struct TargetBuf {
    len: usize,
    ids: [CounterId; MAX_TARGETS],
}

impl TargetBuf {
    /// No targets: a slot yet to be filled.
    const EMPTY: TargetBuf = TargetBuf {
        len: 0,
        ids: [0; MAX_TARGETS],
    };

    fn copy_of(targets: &[CounterId]) -> Self {
        let mut buf = TargetBuf {
            len: targets.len(),
            ids: [0; MAX_TARGETS],
        };
        buf.ids[..targets.len()].copy_from_slice(targets);
        buf
    }

    fn as_slice(&self) -> &[CounterId] {
        &self.ids[..self.len]
    }
}

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
    /// A builder with the SPEC defaults: in memory, system clock, depth 2.
    pub fn builder() -> Builder {
        Builder::default()
    }

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

    /// Makes planned registry changes: logs them, applies them (which
    /// releases the registry's lock), and only then waits for the log as
    /// the durability asks, so that no reader or writer waits on the
    /// registry through a disk sync. If the log refuses the record the
    /// changes are dropped; if the sync then fails the call fails and the
    /// engine refuses further writes, though readers may have seen them.
    fn commit_registry(&self, planned: PlannedChanges<'_>) -> Result<()> {
        let wal = self.inner.storage.as_ref().and_then(Storage::wal);
        let logged_end = match wal {
            Some(wal) if !planned.changes().is_empty() => {
                Some(wal.append(|_| RecordRef::Registry(planned.changes()))?.1)
            }
            _ => None,
        };
        planned.commit();
        match (wal, logged_end) {
            (Some(wal), Some(end)) => wal.settle(end),
            _ => Ok(()),
        }
    }

    /// Writes a snapshot of the whole engine now, while writers keep
    /// running, and drops the log and snapshots it makes obsolete.
    ///
    /// Fails with [`Error::Config`] on an in-memory engine.
    pub fn snapshot(&self) -> Result<SnapshotSummary> {
        let storage = self.storage()?;
        storage.snapshot(
            self.now_millis(),
            &self.inner.registry,
            &self.inner.store,
            &self.inner.tokens,
        )
    }

    /// Makes every write acknowledged so far durable now, without waiting
    /// for the [`Durability::Interval`] timer: writes back the subjects
    /// changed since the last write-back and syncs the log. (Under
    /// [`Durability::Always`] there is nothing to wait for; under
    /// [`Durability::Never`] use [`Tally::snapshot`].)
    ///
    /// Fails with [`Error::Config`] on an in-memory engine.
    ///
    /// [`Durability::Interval`]: crate::Durability::Interval
    /// [`Durability::Always`]: crate::Durability::Always
    /// [`Durability::Never`]: crate::Durability::Never
    pub fn sync(&self) -> Result<()> {
        self.storage()?.sync(&self.inner.store)
    }

    /// Syncs the log and writes a final snapshot. Dropping the last clone
    /// of a durable engine does the same, ignoring errors.
    pub fn close(&self) -> Result<()> {
        let storage = self.storage()?;
        storage.close()?;
        self.snapshot().map(drop)
    }

    /// What recovery loaded, replayed and cut when the engine opened;
    /// `None` for an in-memory engine.
    pub fn recovery_report(&self) -> Option<&RecoveryReport> {
        self.inner.storage.as_ref().map(Storage::report)
    }

    /// The data directory, if the engine is durable.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.inner.storage.as_ref().map(Storage::dir)
    }

    fn storage(&self) -> Result<&Storage> {
        self.inner
            .storage
            .as_ref()
            .ok_or_else(|| Error::Config("the engine has no data directory".into()))
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

    /// Registers (class, path) pairs: all of them, or none if any is invalid
    /// (the error names the index) or the registration limit would be
    /// exceeded. Registering a registered pair again is not an error.
    pub fn register<I>(&self, counters: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<CounterKey>,
    {
        let keys: Vec<CounterKey> = counters.into_iter().map(Into::into).collect();
        self.commit_registry(self.inner.registry.plan_register(&keys)?)
    }

    /// Unregisters (class, path) pairs: they stop accepting increments and
    /// receiving roll-ups; their data stays readable. Pairs that are not
    /// registered are ignored; an invalid pair rejects the whole call.
    pub fn unregister<I>(&self, counters: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<CounterKey>,
    {
        let keys: Vec<CounterKey> = counters.into_iter().map(Into::into).collect();
        self.commit_registry(self.inner.registry.plan_unregister(&keys)?)
    }

    /// The registered pairs, sorted by class then path.
    pub fn registered(&self) -> Vec<CounterKey> {
        self.inner.registry.registered()
    }

    /// Resolves (class, path) once into a handle for
    /// [`Tally::increment_counter`], which then does no string work.
    ///
    /// For a path of a system class this creates its counter (and its
    /// ancestors') if new, within [`Config::max_counters`].
    pub fn counter(&self, class: &str, path: &str) -> Result<CounterHandle> {
        let registry = &self.inner.registry;
        let found = match registry.resolve(class, path)? {
            Some(found) => Some(found),
            None => {
                self.commit_registry(registry.plan_new_counters(&[CounterKey::new(class, path)])?)?;
                registry.resolve(class, path)?
            }
        };
        let (id, targets, generation) = found.ok_or_else(|| not_registered(class, path))?;
        Ok(CounterHandle {
            engine: self.inner.id,
            id,
            generation,
            targets,
        })
    }

    /// Issues a regToken standing for `uid` for the configured time (1 hour by default).
    pub fn issue_reg_token(&self, uid: &str) -> Result<RegToken> {
        self.inner
            .tokens
            .issue(uid, self.now_secs(), |token, issued| {
                match &self.inner.storage {
                    Some(storage) => storage
                        .log(|_| RecordRef::Token {
                            token,
                            uid: &issued.uid,
                            expires_at: issued.expires_at,
                        })
                        .map(drop),
                    None => Ok(()),
                }
            })
    }

    /// The UID a subject stands for: the UID itself, or its regToken's.
    pub fn resolve_uid(&self, subject: Subject<'_>) -> Result<String> {
        self.uid_of(subject, self.now_secs())
            .map(|uid| uid.into_owned())
    }

    #[inline(always)]
    fn uid_of<'a>(&self, subject: Subject<'a>, now_secs: i64) -> Result<std::borrow::Cow<'a, str>> {
        if let Subject::Uid(uid) = subject {
            // The common case, without a call out.
            crate::subject::validate_uid(uid)?;
            return Ok(std::borrow::Cow::Borrowed(uid));
        }
        resolve_subject(
            subject,
            &self.inner.tokens,
            self.inner.resolver.as_deref(),
            now_secs,
        )
    }

    /// Increments a batch at the engine clock's time. See [`Tally::increment_at`].
    pub fn increment<'s>(
        &self,
        subject: impl Into<Subject<'s>>,
        entries: &[Increment<'_>],
    ) -> Result<()> {
        // The clock read inline, as in `increment_counter`.
        let now = self.inner.clock.unix_secs();
        self.increment_batch(subject.into(), entries, now, now)
    }

    /// Validates a batch as [`Tally::increment`] would, applying nothing:
    /// for the REST layer, which parses entries in order and, on a bad
    /// one, must still name any earlier entry the engine would reject.
    ///
    /// Creates nothing: a system class's new paths are checked as the
    /// counters they would become.
    pub(crate) fn check_increment(
        &self,
        subject: Subject<'_>,
        entries: &[Increment<'_>],
    ) -> Result<()> {
        let now = self.now_secs();
        let uid = self.uid_of(subject, now)?;
        let at = self.inner.retention.event_time(now, now);
        self.check_provisionally(&uid, entries, &at).map(drop)
    }

    /// Checks a whole batch against the registry and the subject's cells,
    /// with the counters its new system-class paths would create standing
    /// in for them (see [`Provisional`]); creates nothing. On success,
    /// the counters to create.
    fn check_provisionally(
        &self,
        uid: &str,
        entries: &[Increment<'_>],
        at: &EventTime,
    ) -> Result<Provisional> {
        let mut provisional = self
            .inner
            .registry
            .resolve_provisionally(entries.iter().map(|e| (e.class, e.path)));
        let resolved: Vec<ResolvedEntry<'_>> = provisional
            .targets
            .iter()
            .zip(entries)
            .map(|(targets, entry)| ResolvedEntry {
                targets,
                amount: amount_of(entry),
            })
            .collect();
        // An entry before the first that does not resolve may overflow:
        // that one is then the first bad entry.
        if let Err(overflow) = self.inner.store.check(uid, &resolved, at) {
            return Err(self.overflow_error_with(overflow, Some(&provisional)));
        }
        match provisional.failure.take() {
            Some(error) => Err(error),
            None => Ok(provisional),
        }
    }

    /// Increments a batch that uses paths of system classes not created
    /// yet: the batch is checked whole first, so that a rejected batch
    /// creates and logs nothing; then the counters are created, and the
    /// batch applied as any other.
    #[cold]
    #[inline(never)]
    fn increment_creating(
        &self,
        uid: &str,
        entries: &[Increment<'_>],
        at: &EventTime,
    ) -> Result<()> {
        let provisional = self.check_provisionally(uid, entries, at)?;
        self.commit_registry(
            self.inner
                .registry
                .plan_new_counters(&provisional.new_counters())
                .map_err(|e| e.at_entry(0))?,
        )?;
        let mut targets = vec![TargetBuf::EMPTY; entries.len()];
        match self.resolve_targets(uid, entries, at, &mut targets)? {
            Resolution::Resolved => {
                let resolved: Vec<ResolvedEntry<'_>> =
                    targets.iter().zip(entries).map(resolve).collect();
                self.apply(uid, &resolved, at)
            }
            Resolution::NewPaths(index) => {
                let entry = &entries[index];
                Err(not_registered(entry.class, entry.path).at_entry(index))
            }
        }
    }

    /// Increments a batch dated `at_unix_secs` (backfill and replay).
    ///
    /// The whole batch is validated first — subject, size, every entry's
    /// class, path and registration, and that no addition overflows — and
    /// then applied atomically for the subject; a rejected batch changes
    /// nothing, and its error names the first bad entry.
    pub fn increment_at<'s>(
        &self,
        subject: impl Into<Subject<'s>>,
        entries: &[Increment<'_>],
        at_unix_secs: i64,
    ) -> Result<()> {
        self.increment_batch(subject.into(), entries, at_unix_secs, self.now_secs())
    }

    fn increment_batch(
        &self,
        subject: Subject<'_>,
        entries: &[Increment<'_>],
        at_unix_secs: i64,
        now_secs: i64,
    ) -> Result<()> {
        self.check_batch_len(entries.len())?;
        let uid = self.uid_of(subject, now_secs)?;
        check_event_time(at_unix_secs)?;
        let at = self.inner.retention.event_time(at_unix_secs, now_secs);
        let resolve = |(index, entry): (usize, &Increment<'_>)| {
            self.targets_by_name(entry.class, entry.path)
                .map_err(|e| e.at_entry(index))
        };
        if let [entry] = entries {
            let Some(targets) = resolve((0, entry))? else {
                return self.increment_creating(&uid, entries, &at);
            };
            let resolved = [ResolvedEntry {
                targets: targets.as_slice(),
                amount: amount_of(entry),
            }];
            return self.apply(&uid, &resolved, &at);
        }
        self.apply_batch(&uid, entries, &at)
    }

    /// Resolves the targets of a batch of several entries, then applies
    /// it: on the stack for up to [`BATCH_ON_STACK`] entries.
    #[inline(never)]
    fn apply_batch(&self, uid: &str, entries: &[Increment<'_>], at: &EventTime) -> Result<()> {
        let mut on_stack = [TargetBuf::EMPTY; BATCH_ON_STACK];
        let mut on_heap = Vec::new();
        let targets = if entries.len() <= BATCH_ON_STACK {
            &mut on_stack[..entries.len()]
        } else {
            on_heap.resize(entries.len(), TargetBuf::EMPTY);
            &mut on_heap[..]
        };
        if let Resolution::NewPaths(_) = self.resolve_targets(uid, entries, at, targets)? {
            return self.increment_creating(uid, entries, at);
        }
        if entries.len() <= BATCH_ON_STACK {
            let mut resolved = [ResolvedEntry::default(); BATCH_ON_STACK];
            for (slot, entry) in resolved.iter_mut().zip(targets.iter().zip(entries)) {
                *slot = resolve(entry);
            }
            self.apply(uid, &resolved[..entries.len()], at)
        } else {
            let resolved: Vec<ResolvedEntry<'_>> =
                targets.iter().zip(entries).map(resolve).collect();
            self.apply(uid, &resolved, at)
        }
    }

    /// Resolves each entry's targets into `targets` (as long as
    /// `entries`), in order; an entry that does not resolve is the
    /// batch's error, unless one before it would overflow (see
    /// [`Tally::first_bad_entry`]). Stops at the first path of a system
    /// class without a counter yet.
    #[inline(always)]
    fn resolve_targets(
        &self,
        uid: &str,
        entries: &[Increment<'_>],
        at: &EventTime,
        targets: &mut [TargetBuf],
    ) -> Result<Resolution> {
        for (index, entry) in entries.iter().enumerate() {
            match self.targets_by_name(entry.class, entry.path) {
                Ok(Some(found)) => targets[index] = found,
                Ok(None) => return Ok(Resolution::NewPaths(index)),
                Err(error) => {
                    let before = &targets[..index];
                    return Err(self.first_bad_entry(
                        uid,
                        before,
                        entries,
                        at,
                        error.at_entry(index),
                    ));
                }
            }
        }
        Ok(Resolution::Resolved)
    }

    /// The error of a batch whose entry `resolved.len()` did not resolve
    /// (`error`): that one, unless an entry before it would overflow, which
    /// is then the first bad entry (SPEC §5). `resolved` holds the targets
    /// of the entries before it.
    #[cold]
    #[inline(never)]
    fn first_bad_entry(
        &self,
        uid: &str,
        resolved: &[TargetBuf],
        entries: &[Increment<'_>],
        at: &EventTime,
        error: Error,
    ) -> Error {
        let before: Vec<ResolvedEntry<'_>> = resolved.iter().zip(entries).map(resolve).collect();
        match self.inner.store.check(uid, &before, at) {
            Err(overflow) => self.overflow_error(overflow),
            Ok(()) => error,
        }
    }

    /// The roll-up targets of (class, path), from this thread's memo while
    /// the registry is unchanged, else resolved (and validated) by the
    /// registry; `None` for a path of a system class without a counter yet.
    #[inline(always)]
    fn targets_by_name(&self, class: &str, path: &str) -> Result<Option<TargetBuf>> {
        let generation = self.inner.registry.generation();
        match names::lookup(self.inner.id, generation, class, path) {
            Some(targets) => Ok(Some(targets)),
            None => self.resolve_name(class, path),
        }
    }

    /// [`Tally::targets_by_name`] for a name this thread's memo does not
    /// hold (yet): resolved by the registry, then remembered.
    #[cold]
    #[inline(never)]
    fn resolve_name(&self, class: &str, path: &str) -> Result<Option<TargetBuf>> {
        let found = self
            .inner
            .registry
            .resolve_with(class, path, |_, targets, generation| {
                (TargetBuf::copy_of(targets), generation)
            })?;
        Ok(found.map(|(targets, generation)| {
            names::remember(self.inner.id, generation, class, path, targets);
            targets
        }))
    }

    /// The hot path: adds `count` and `value` to a resolved counter at the
    /// engine clock's time. Incrementing an existing cell allocates nothing.
    pub fn increment_counter<'s>(
        &self,
        subject: impl Into<Subject<'s>>,
        counter: &CounterHandle,
        count: i64,
        value: i64,
    ) -> Result<()> {
        // The clock read here rather than through `now_secs`, which callers
        // in other crates would call out of line.
        let now = self.inner.clock.unix_secs();
        self.increment_handle(subject.into(), counter, Amount { count, value }, now, now)
    }

    /// [`Tally::increment_counter`] dated `at_unix_secs`.
    pub fn increment_counter_at<'s>(
        &self,
        subject: impl Into<Subject<'s>>,
        counter: &CounterHandle,
        count: i64,
        value: i64,
        at_unix_secs: i64,
    ) -> Result<()> {
        let amount = Amount { count, value };
        self.increment_handle(
            subject.into(),
            counter,
            amount,
            at_unix_secs,
            self.now_secs(),
        )
    }

    #[inline(always)]
    fn increment_handle(
        &self,
        subject: Subject<'_>,
        counter: &CounterHandle,
        amount: Amount,
        at_unix_secs: i64,
        now_secs: i64,
    ) -> Result<()> {
        if counter.engine != self.inner.id {
            return Err(Error::ForeignHandle);
        }
        let uid = self.uid_of(subject, now_secs)?;
        check_event_time(at_unix_secs)?;
        let at = self.inner.retention.event_time(at_unix_secs, now_secs);
        // Without a lock or a copy while the registry is unchanged.
        let current: Option<Targets> = self
            .inner
            .registry
            .targets_of(counter)
            .map_err(|e| e.at_entry(0))?;
        let targets = current.as_deref().unwrap_or(&counter.targets);
        let resolved = [ResolvedEntry { targets, amount }];
        self.apply(&uid, &resolved, &at)
    }

    fn check_batch_len(&self, len: usize) -> Result<()> {
        if len == 0 {
            return Err(Error::EmptyBatch);
        }
        if len > self.inner.config.max_batch {
            return Err(Error::BatchTooLarge {
                len,
                max: self.inner.config.max_batch,
            });
        }
        Ok(())
    }

    #[inline(always)]
    fn apply(&self, uid: &str, entries: &[ResolvedEntry<'_>], at: &EventTime) -> Result<()> {
        let store = &self.inner.store;
        let Some(wal) = self.inner.storage.as_ref().and_then(Storage::wal) else {
            // In memory: a log step that captures nothing, inlined away
            // (one that captured the log, even unused, cost a tenth of
            // an increment: its captures built on the stack, a call).
            return store
                .apply(uid, entries, at, |_| Ok(0))
                .map_err(|error| self.apply_error(error));
        };
        // Under write-behind the batch is not appended, which would
        // otherwise find a failed log: refuse it here.
        wal.check_poison()?;
        // The batch is appended under the subject's lock (so the log holds
        // each subject's batches in order), but synced after it is
        // released. Appending stays out of line.
        let mut logged_end = None;
        let log = |entries: &[ResolvedEntry<'_>]| {
            append_increment(wal, uid, entries, at, &mut logged_end)
        };
        store
            .apply(uid, entries, at, log)
            .map_err(|error| self.apply_error(error))?;
        match logged_end {
            Some(end) => wal.settle(end),
            None => Ok(()),
        }
    }

    #[cold]
    fn apply_error(&self, error: ApplyError) -> Error {
        match error {
            ApplyError::Overflow(overflow) => self.overflow_error(overflow),
            ApplyError::Log(error) => error,
        }
    }

    fn overflow_error(&self, overflow: OverflowAt) -> Error {
        self.overflow_error_with(overflow, None)
    }

    /// [`Tally::overflow_error`], for a batch checked against counters it
    /// would create (`provisional`), which the registry cannot name.
    fn overflow_error_with(
        &self,
        overflow: OverflowAt,
        provisional: Option<&Provisional>,
    ) -> Error {
        let view = self.inner.registry.view();
        let (class, path) = provisional
            .and_then(|p| p.names(overflow.counter))
            .unwrap_or_else(|| view.names(overflow.counter));
        Error::Overflow {
            class: class.to_owned(),
            path: path.to_owned(),
            field: overflow.field,
        }
        .at_entry(overflow.index)
    }

    /// Reads a subject's counters (SPEC §7). An empty selector list reads
    /// every counter, period `total`; a subject with no counters yields no rows.
    ///
    /// Rows exist only for periods that hold data: a month, day or
    /// `last7Days` in which the cell received nothing yields no row. Each
    /// row appears once however many selectors match it. At most
    /// [`Config::max_selectors`] selectors, and at most
    /// [`Config::max_rows`] rows in the answer: past either, the read
    /// fails ([`Error::TooManySelectors`], [`Error::TooManyRows`]).
    pub fn get<'s>(
        &self,
        subject: impl Into<Subject<'s>>,
        selectors: &[Selector],
    ) -> Result<Vec<CounterRow>> {
        let now = self.now_secs();
        let uid = self.uid_of(subject.into(), now)?;
        let config = &self.inner.config;
        let read = CompiledRead::compile(
            selectors,
            self.inner.registry.max_depth(),
            config.max_selectors,
        )?;
        let horizon = self.inner.retention.horizon(now);
        // The registry's lock is taken before the shard's, never inside it.
        let view = self.inner.registry.view();
        let rows = self.inner.store.read(&uid, |cells| {
            read_rows(cells, &view, &read, now, horizon, config.max_rows)
        });
        rows.unwrap_or_else(|| Ok(Vec::new()))
    }

    /// The number of subjects holding at least one cell.
    pub fn subject_count(&self) -> usize {
        self.inner.store.subject_count()
    }
}

/// How far [`Tally::resolve_targets`] got.
enum Resolution {
    /// Every entry resolved.
    Resolved,
    /// Entry `.0` is a path of a system class without a counter yet.
    NewPaths(usize),
}

fn not_registered(class: &str, path: &str) -> Error {
    Error::NotRegistered {
        class: class.to_owned(),
        path: path.to_owned(),
    }
}

fn amount_of(entry: &Increment<'_>) -> Amount {
    Amount {
        count: entry.count,
        value: entry.value,
    }
}

/// Appends an increment batch to the log; returns its sequence number and
/// keeps where its record ends, for the sync after the subject's lock.
#[inline(never)]
fn append_increment(
    wal: &Wal,
    uid: &str,
    entries: &[ResolvedEntry<'_>],
    at: &EventTime,
    logged_end: &mut Option<u64>,
) -> Result<u64> {
    let (lsn, end) = wal.append(|lsn| RecordRef::Increment {
        lsn,
        uid,
        at: at.secs(),
        entries,
    })?;
    *logged_end = Some(end);
    Ok(lsn)
}

/// An entry with its resolved targets, as the store takes it.
fn resolve<'t>((targets, entry): (&'t TargetBuf, &Increment<'_>)) -> ResolvedEntry<'t> {
    ResolvedEntry {
        targets: targets.as_slice(),
        amount: amount_of(entry),
    }
}

#[inline]
fn check_event_time(at_unix_secs: i64) -> Result<()> {
    if (MIN_EVENT_SECS..END_EVENT_SECS).contains(&at_unix_secs) {
        Ok(())
    } else {
        Err(Error::TimestampOutOfRange {
            unix_secs: at_unix_secs,
        })
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
