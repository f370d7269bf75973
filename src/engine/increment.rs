//! Increments: a batch by names or one counter by handle, resolved to its
//! roll-up targets, checked whole, logged and applied in the subject's
//! shard.

use super::targets::TargetBuf;
use super::{Tally, names};
use crate::calendar::{END_EVENT_SECS, MIN_EVENT_SECS};
use crate::error::{Error, Result};
use crate::period::{Amount, EventTime};
use crate::persist::Storage;
use crate::registry::{CounterHandle, Provisional, Targets};
use crate::store::{ApplyError, OverflowAt, ResolvedEntry, Unlogged};
use crate::subject::Subject;

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

/// The most entries of a batch resolved on the stack: a longer batch
/// allocates its resolved entries (one vector each for their targets and
/// for the entries).
const BATCH_ON_STACK: usize = 16;

impl Tally {
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
    /// is then the first bad entry. `resolved` holds the targets
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
                .apply(uid, entries, at, &mut Unlogged)
                .map_err(|error| self.apply_error(error));
        };
        // Under write-behind the batch is not appended, which would
        // otherwise find a failed log: refuse it here.
        wal.check_poison()?;
        // The batch is appended under the subject's lock (so the log holds
        // each subject's batches in order), but synced after it is
        // released. Appending stays out of line.
        let mut log = wal.batch_log();
        store
            .apply(uid, entries, at, &mut log)
            .map_err(|error| self.apply_error(error))?;
        log.settle()
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
}

/// How far [`Tally::resolve_targets`] got.
enum Resolution {
    /// Every entry resolved.
    Resolved,
    /// Entry `.0` is a path of a system class without a counter yet.
    NewPaths(usize),
}

pub(super) fn not_registered(class: &str, path: &str) -> Error {
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

/// An entry with its resolved targets, as the store takes it.
fn resolve<'t>((targets, entry): (&'t TargetBuf, &Increment<'_>)) -> ResolvedEntry<'t> {
    ResolvedEntry {
        targets: targets.as_slice(),
        amount: amount_of(entry),
    }
}

#[inline]
pub(crate) fn check_event_time(at_unix_secs: i64) -> Result<()> {
    if (MIN_EVENT_SECS..END_EVENT_SECS).contains(&at_unix_secs) {
        Ok(())
    } else {
        Err(Error::TimestampOutOfRange {
            unix_secs: at_unix_secs,
        })
    }
}
