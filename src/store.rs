//! The sharded in-memory store: subjects to their cells.
//!
//! A [`DashMap`] shards subjects by the hash of their UID; each subject
//! holds its cells in a vector sorted by counter id. A batch is checked and
//! applied under the subject's shard write lock, so readers see all of a
//! batch or none of it, and incrementing an existing cell allocates nothing.

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::error::AmountField;
use crate::period::{Amount, Cell, DayKey, MonthKey};
use crate::registry::CounterId;

/// One accepted entry of a batch, resolved to the cells it lands in.
#[derive(Clone, Copy, Debug)]
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
#[derive(Clone, Debug, Default)]
pub(crate) struct SubjectCells {
    cells: Vec<(CounterId, Cell)>,
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
    fn check(&self, entries: &[ResolvedEntry<'_>], at_secs: i64) -> Result<(), OverflowAt> {
        let empty = Cell::default();
        if let [entry] = entries {
            // One entry: its targets are distinct cells, nothing is pending.
            for &counter in entry.targets {
                let cell = self.cell(counter).unwrap_or(&empty);
                cell.check_add(Amount::default(), entry.amount, at_secs)
                    .map_err(|field| OverflowAt {
                        index: 0,
                        counter,
                        field,
                    })?;
            }
            return Ok(());
        }
        // Several entries may land in the same cells: track what earlier
        // entries add to each, so entry `i` is checked on top of them.
        let mut pending: Vec<(CounterId, Amount)> = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            for &counter in entry.targets {
                let slot = match pending.iter().position(|(id, _)| *id == counter) {
                    Some(slot) => slot,
                    None => {
                        pending.push((counter, Amount::default()));
                        pending.len() - 1
                    }
                };
                let cell = self.cell(counter).unwrap_or(&empty);
                let before = pending[slot].1;
                let overflow = |field| OverflowAt {
                    index,
                    counter,
                    field,
                };
                cell.check_add(before, entry.amount, at_secs)
                    .map_err(overflow)?;
                pending[slot].1 = before.checked_add(entry.amount).map_err(overflow)?;
            }
        }
        Ok(())
    }

    fn apply(&mut self, entries: &[ResolvedEntry<'_>], at_secs: i64, horizon: (MonthKey, DayKey)) {
        for entry in entries {
            for &counter in entry.targets {
                self.cell_mut(counter).add(entry.amount, at_secs, horizon);
            }
        }
    }

    /// Checks, then applies, a batch: all of it or nothing.
    pub(crate) fn check_and_apply(
        &mut self,
        entries: &[ResolvedEntry<'_>],
        at_secs: i64,
        horizon: (MonthKey, DayKey),
    ) -> Result<(), OverflowAt> {
        self.check(entries, at_secs)?;
        self.apply(entries, at_secs, horizon);
        Ok(())
    }
}

/// Every subject's cells, sharded by UID.
#[derive(Default)]
pub(crate) struct Store {
    subjects: DashMap<Box<str>, SubjectCells>,
}

impl Store {
    /// Applies a batch to one subject atomically: checked completely first,
    /// then applied under the subject's lock; a rejected batch changes
    /// nothing and creates no subject.
    pub(crate) fn apply(
        &self,
        uid: &str,
        entries: &[ResolvedEntry<'_>],
        at_secs: i64,
        horizon: (MonthKey, DayKey),
    ) -> Result<(), OverflowAt> {
        if let Some(mut subject) = self.subjects.get_mut(uid) {
            return subject.check_and_apply(entries, at_secs, horizon);
        }
        match self.subjects.entry(uid.into()) {
            Entry::Occupied(mut occupied) => occupied
                .get_mut()
                .check_and_apply(entries, at_secs, horizon),
            Entry::Vacant(vacant) => {
                let mut subject = SubjectCells::default();
                subject.check_and_apply(entries, at_secs, horizon)?;
                vacant.insert(subject);
                Ok(())
            }
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

    fn horizon() -> (MonthKey, DayKey) {
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
            .apply("u", &[entry(&[2, 1, 0], 3), entry(&[0], 4)], AT, horizon())
            .unwrap();
        assert_eq!(total(&store, "u", 0), Some(7));
        assert_eq!(total(&store, "u", 1), Some(3));
        assert_eq!(total(&store, "u", 2), Some(3));
    }

    #[test]
    fn an_overflowing_batch_changes_nothing() {
        let store = Store::default();
        store
            .apply("u", &[entry(&[5, 0], i64::MAX - 1)], AT, horizon())
            .unwrap();
        let err = store
            .apply("u", &[entry(&[1, 0], 1), entry(&[0], 1)], AT, horizon())
            .unwrap_err();
        assert_eq!(
            err,
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
                .apply("v", &[entry(&[0], i64::MAX), entry(&[0], 1)], AT, horizon())
                .is_err()
        );
        assert_eq!(store.subject_count(), 1);
    }
}
