//! The sharded in-memory store: subjects to their cells.
//!
//! A [`DashMap`] shards subjects by the hash of their UID; each subject
//! holds its cells in a vector sorted by counter id. A batch is checked and
//! applied under the subject's shard write lock, so readers see all of a
//! batch or none of it, and incrementing an existing cell allocates nothing.

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::error::{AmountField, Error};
use crate::period::{Amount, Cell, EventTime, Projection};
use crate::registry::CounterId;

/// One accepted entry of a batch, resolved to the cells it lands in.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub(crate) struct ResolvedEntry<'a> {
    /// The counter itself, its registered ancestors and the class root.
    pub targets: &'a [CounterId],
    /// What to add.
    pub amount: Amount,
}

/// Why a batch was refused by the store: entry `index` would overflow
/// `field` of the cell of `counter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OverflowAt {
    pub index: usize,
    pub counter: CounterId,
    pub field: AmountField,
}

/// One subject's cells, sorted by counter id.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SubjectCells {
    cells: Vec<(CounterId, Cell)>,
    /// The log sequence number of the last batch applied (0: none logged).
    last_lsn: u64,
}

impl SubjectCells {
    fn find(&self, id: CounterId) -> Result<usize, usize> {
        self.cells
            .binary_search_by_key(&id, |(cell_id, _)| *cell_id)
    }

    fn cell(&self, id: CounterId) -> Option<&Cell> {
        self.find(id).ok().map(|i| &self.cells[i].1)
    }

    fn cell_mut(&mut self, id: CounterId) -> &mut Cell {
        let i = match self.find(id) {
            Ok(i) => i,
            Err(i) => {
                self.cells.insert(i, (id, Cell::default()));
                i
            }
        };
        &mut self.cells[i].1
    }

    /// The subject's cells with their counter ids, in id order.
    pub(crate) fn cells(&self) -> impl Iterator<Item = (CounterId, &Cell)> {
        self.cells.iter().map(|(id, cell)| (*id, cell))
    }

    /// Checks a whole batch against overflow before anything is applied.
    fn check(&self, entries: &[ResolvedEntry<'_>], at: &EventTime) -> Result<(), OverflowAt> {
        let empty = Cell::default();
        let projection = |counter| self.cell(counter).unwrap_or(&empty).projection(at);
        if let [entry] = entries {
            // One entry: its targets are distinct cells.
            for &counter in entry.targets {
                projection(counter)
                    .add(entry.amount)
                    .map_err(|field| OverflowAt {
                        index: 0,
                        counter,
                        field,
                    })?;
            }
            return Ok(());
        }
        // Several entries may land in the same cells: carry each cell's
        // amounts from entry to entry, so that entry `i` is checked on top
        // of entries 0..i, exactly as they will be applied.
        let mut projected: Vec<(CounterId, Projection)> = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            for &counter in entry.targets {
                let slot = match projected.iter().position(|(id, _)| *id == counter) {
                    Some(slot) => slot,
                    None => {
                        projected.push((counter, projection(counter)));
                        projected.len() - 1
                    }
                };
                projected[slot]
                    .1
                    .add(entry.amount)
                    .map_err(|field| OverflowAt {
                        index,
                        counter,
                        field,
                    })?;
            }
        }
        Ok(())
    }

    fn apply(&mut self, entries: &[ResolvedEntry<'_>], at: &EventTime) {
        for entry in entries {
            for &counter in entry.targets {
                self.cell_mut(counter).add(entry.amount, at);
            }
        }
    }

    /// Checks a batch, logs it through `log` (which returns its log
    /// sequence number, or 0 when nothing is logged), then applies it: all
    /// of it or nothing.
    fn check_log_apply<L>(
        &mut self,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
        log: L,
    ) -> Result<(), ApplyError>
    where
        L: FnOnce(&[ResolvedEntry<'_>]) -> Result<u64, Error>,
    {
        self.check(entries, at).map_err(ApplyError::Overflow)?;
        let lsn = log(entries).map_err(ApplyError::Log)?;
        self.apply(entries, at);
        self.last_lsn = self.last_lsn.max(lsn);
        Ok(())
    }

    /// The sequence number of the last logged batch applied.
    pub(crate) fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    /// The highest counter id holding a cell.
    pub(crate) fn max_counter(&self) -> Option<CounterId> {
        self.cells.last().map(|(id, _)| *id)
    }

    /// Whether decoded cells keep the invariants and name only counters below `counters`.
    pub(crate) fn is_well_formed(&self, counters: usize) -> bool {
        self.cells.windows(2).all(|w| w[0].0 < w[1].0)
            && self
                .cells
                .iter()
                .all(|(id, cell)| (*id as usize) < counters && cell.is_well_formed())
    }
}

/// Why the store refused a batch.
#[derive(Debug)]
pub(crate) enum ApplyError {
    /// An addition would overflow.
    Overflow(OverflowAt),
    /// The log could not record the batch.
    Log(Error),
}

/// What a replayed log record did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Replayed {
    /// The batch was applied.
    Applied,
    /// The snapshot already held the batch.
    Skipped,
}

/// The number of lock shards: many small shards keep each one short to
/// walk, so a snapshot holds any shard's lock only briefly.
const SHARDS: usize = 256;

/// The hasher of subject keys: fast, and seeded per process so that
/// crafted UIDs cannot aim at one bucket.
type SubjectHasher = foldhash::fast::RandomState;

/// Every subject's cells, sharded by UID.
pub(crate) struct Store {
    subjects: DashMap<Box<str>, SubjectCells, SubjectHasher>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            subjects: DashMap::with_hasher_and_shard_amount(SubjectHasher::default(), SHARDS),
        }
    }
}

impl Store {
    /// Applies a batch to one subject atomically: checked completely first,
    /// logged, then applied under the subject's lock; a rejected batch
    /// changes nothing and creates no subject.
    pub(crate) fn apply<L>(
        &self,
        uid: &str,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
        log: L,
    ) -> Result<(), ApplyError>
    where
        L: FnOnce(&[ResolvedEntry<'_>]) -> Result<u64, Error>,
    {
        if let Some(mut subject) = self.subjects.get_mut(uid) {
            return subject.check_log_apply(entries, at, log);
        }
        match self.subjects.entry(uid.into()) {
            Entry::Occupied(mut occupied) => occupied.get_mut().check_log_apply(entries, at, log),
            Entry::Vacant(vacant) => {
                let mut subject = SubjectCells::default();
                subject.check_log_apply(entries, at, log)?;
                vacant.insert(subject);
                Ok(())
            }
        }
    }

    /// Replays a logged batch unless the subject already holds it.
    pub(crate) fn replay(
        &self,
        uid: &str,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
        lsn: u64,
    ) -> Result<Replayed, OverflowAt> {
        let mut subject = self.subjects.entry(uid.into()).or_default();
        if lsn <= subject.last_lsn {
            return Ok(Replayed::Skipped);
        }
        subject.check(entries, at)?;
        subject.apply(entries, at);
        subject.last_lsn = lsn;
        Ok(Replayed::Applied)
    }

    /// Puts a subject's cells back, as loaded from a snapshot; `false`
    /// (and no change) if the subject is already there.
    pub(crate) fn restore(&self, uid: &str, cells: SubjectCells) -> bool {
        match self.subjects.entry(uid.into()) {
            Entry::Occupied(_) => false,
            Entry::Vacant(vacant) => {
                vacant.insert(cells);
                true
            }
        }
    }

    /// Visits every subject, one shard lock at a time; `visit` runs under
    /// the lock of the subject's shard and must not call back into the store.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(&str, &SubjectCells)) {
        for item in self.subjects.iter() {
            visit(item.key(), item.value());
        }
    }

    /// Runs `read` on a subject's cells under its shard read lock, or
    /// returns `None` if the subject has no cells.
    ///
    /// `read` must not call back into the store: the lock is held.
    pub(crate) fn read<R>(&self, uid: &str, read: impl FnOnce(&SubjectCells) -> R) -> Option<R> {
        self.subjects.get(uid).map(|subject| read(&subject))
    }

    /// The number of subjects with at least one cell.
    pub(crate) fn subject_count(&self) -> usize {
        self.subjects.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::Retention;

    const AT: i64 = 1_795_737_600;

    fn no_log(_: &[ResolvedEntry<'_>]) -> Result<u64, Error> {
        Ok(0)
    }

    fn at() -> EventTime {
        EventTime::new(AT, horizon())
    }

    fn horizon() -> crate::period::Horizon {
        Retention {
            months: 24,
            days: 90,
        }
        .horizon(AT)
    }

    fn entry(targets: &[CounterId], count: i64) -> ResolvedEntry<'_> {
        ResolvedEntry {
            targets,
            amount: Amount { count, value: 0 },
        }
    }

    fn total(store: &Store, uid: &str, id: CounterId) -> Option<i64> {
        store
            .read(uid, |s| {
                s.cell(id).map(|c| {
                    c.reading(crate::period::Period::Total, AT, horizon())
                        .unwrap()
                        .amount
                        .count
                })
            })
            .flatten()
    }

    #[test]
    fn applies_to_every_target() {
        let store = Store::default();
        store
            .apply("u", &[entry(&[2, 1, 0], 3), entry(&[0], 4)], &at(), no_log)
            .unwrap();
        assert_eq!(total(&store, "u", 0), Some(7));
        assert_eq!(total(&store, "u", 1), Some(3));
        assert_eq!(total(&store, "u", 2), Some(3));
    }

    #[test]
    fn an_overflowing_batch_changes_nothing() {
        let store = Store::default();
        store
            .apply("u", &[entry(&[5, 0], i64::MAX - 1)], &at(), no_log)
            .unwrap();
        let err = store
            .apply("u", &[entry(&[1, 0], 1), entry(&[0], 1)], &at(), no_log)
            .unwrap_err();
        assert_eq!(
            match err {
                ApplyError::Overflow(at) => at,
                ApplyError::Log(e) => panic!("unexpected log error {e}"),
            },
            OverflowAt {
                index: 1,
                counter: 0,
                field: AmountField::Count
            }
        );
        assert_eq!(total(&store, "u", 0), Some(i64::MAX - 1));
        assert_eq!(total(&store, "u", 1), None);
        // A rejected batch of a new subject creates no subject.
        assert!(
            store
                .apply("v", &[entry(&[0], i64::MAX), entry(&[0], 1)], &at(), no_log)
                .is_err()
        );
        assert_eq!(store.subject_count(), 1);
    }

    #[test]
    fn a_failing_log_applies_nothing_and_replay_skips_what_is_held() {
        let store = Store::default();
        let failing = |_: &[ResolvedEntry<'_>]| Err(Error::EmptyBatch);
        assert!(matches!(
            store.apply("u", &[entry(&[0], 1)], &at(), failing),
            Err(ApplyError::Log(_))
        ));
        assert_eq!(store.subject_count(), 0);
        store
            .apply("u", &[entry(&[0], 1)], &at(), |_| Ok(7))
            .unwrap();
        assert_eq!(
            store.replay("u", &[entry(&[0], 1)], &at(), 7),
            Ok(Replayed::Skipped)
        );
        assert_eq!(
            store.replay("u", &[entry(&[0], 1)], &at(), 8),
            Ok(Replayed::Applied)
        );
        assert_eq!(total(&store, "u", 0), Some(2));
    }
}
