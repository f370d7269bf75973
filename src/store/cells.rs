//! One subject's cells, and how a batch is checked and applied to them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ApplyError, OverflowAt, ResolvedEntry};
use crate::error::Error;
use crate::period::{Cell, CellSpot, EventTime, Projection};
use crate::registry::CounterId;

/// The most cells a single-entry batch plans on the stack: a counter, its
/// ancestors and the root at the default depth of 2 (and one to spare).
/// Deeper counters take the general path.
const MAX_FUSED: usize = 4;

/// A cell index meaning "no cell yet: create one".
const NEW_CELL: u32 = u32::MAX;

/// A subject's cells, sorted by counter id: the common one-cell subject
/// keeps its cell inline, more go to the heap.
#[derive(Clone, Debug)]
enum Cells {
    One(Cell),
    Many(Vec<Cell>),
}

impl Default for Cells {
    fn default() -> Self {
        Cells::Many(Vec::new())
    }
}

impl Cells {
    fn from_vec(mut cells: Vec<Cell>) -> Cells {
        match cells.pop() {
            Some(last) if cells.is_empty() => Cells::One(last),
            Some(last) => {
                cells.push(last);
                Cells::Many(cells)
            }
            None => Cells::default(),
        }
    }

    #[inline]
    fn as_slice(&self) -> &[Cell] {
        match self {
            Cells::One(cell) => std::slice::from_ref(cell),
            Cells::Many(cells) => cells,
        }
    }

    #[inline]
    fn as_mut_slice(&mut self) -> &mut [Cell] {
        match self {
            Cells::One(cell) => std::slice::from_mut(cell),
            Cells::Many(cells) => cells,
        }
    }

    fn insert(&mut self, index: usize, cell: Cell) {
        *self = match std::mem::take(self) {
            Cells::Many(mut cells) if !cells.is_empty() => {
                cells.insert(index, cell);
                Cells::Many(cells)
            }
            Cells::Many(_) => Cells::One(cell),
            Cells::One(first) => {
                let mut cells = Vec::with_capacity(2);
                cells.push(first);
                cells.insert(index, cell);
                Cells::Many(cells)
            }
        };
    }
}

/// One subject's cells, sorted by counter id. (Which logged batches they
/// hold is tracked per shard, not per subject: see the store.)
#[derive(Clone, Debug, Default)]
pub(crate) struct SubjectCells {
    cells: Cells,
}

impl PartialEq for SubjectCells {
    fn eq(&self, other: &Self) -> bool {
        self.cells.as_slice() == other.cells.as_slice()
    }
}

impl Eq for SubjectCells {}

/// Where a single-entry batch writes: for each target, the index of its
/// cell (or [`NEW_CELL`]) and the buckets in it.
type Plan = [(u32, CellSpot); MAX_FUSED];

impl SubjectCells {
    fn find(&self, id: CounterId) -> Result<usize, usize> {
        self.cells
            .as_slice()
            .binary_search_by_key(&id, Cell::counter)
    }

    pub(super) fn cell(&self, id: CounterId) -> Option<&Cell> {
        self.find(id).ok().map(|i| &self.cells.as_slice()[i])
    }

    /// Adds `delta` to the cell of `id`, creating it if needed.
    fn add_to(&mut self, id: CounterId, entry: &ResolvedEntry<'_>, at: &EventTime) {
        match self.find(id) {
            Ok(i) => self.cells.as_mut_slice()[i].add(entry.amount, at),
            Err(i) => self.cells.insert(i, Cell::new(id, entry.amount, at)),
        }
    }

    /// The subject's cells with their counter ids, in id order.
    pub(crate) fn cells(&self) -> impl Iterator<Item = (CounterId, &Cell)> {
        self.cells
            .as_slice()
            .iter()
            .map(|cell| (cell.counter(), cell))
    }

    /// Checks a whole batch against overflow before anything is applied.
    pub(super) fn check(
        &self,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
    ) -> Result<(), OverflowAt> {
        let empty = Cell::default();
        let projection = |counter| self.cell(counter).unwrap_or(&empty).projection(at);
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

    /// Applies a batch checked with [`SubjectCells::check`].
    pub(super) fn apply(&mut self, entries: &[ResolvedEntry<'_>], at: &EventTime) {
        for entry in entries {
            for &counter in entry.targets {
                self.add_to(counter, entry, at);
            }
        }
    }

    /// Finds the cell of each of `targets` (their indices into `found`) if
    /// every one exists and holds just the buckets an increment at `at`
    /// writes: then the entry is checked and written without planning.
    #[inline(always)]
    fn locate_current(
        &self,
        targets: &[CounterId],
        at: &EventTime,
        found: &mut [usize; MAX_FUSED],
    ) -> bool {
        if !at.is_retained() {
            return false;
        }
        let cells = self.cells.as_slice();
        for (target, &counter) in targets.iter().enumerate() {
            let at_cell = if cells.len() <= 4 {
                cells.iter().position(|cell| cell.counter() == counter)
            } else {
                cells.binary_search_by_key(&counter, Cell::counter).ok()
            };
            match at_cell {
                Some(i) if cells[i].holds_current(at) => found[target] = i,
                _ => return false,
            }
        }
        true
    }

    /// Locates every cell and bucket a single entry writes, checking each
    /// addition against overflow; nothing changes yet. The entry's targets
    /// are distinct (the registry makes them so), at most [`MAX_FUSED`].
    #[inline]
    fn plan(
        &self,
        entry: &ResolvedEntry<'_>,
        at: &EventTime,
        plan: &mut Plan,
    ) -> Result<(), OverflowAt> {
        let cells = self.cells.as_slice();
        for (slot, &counter) in plan.iter_mut().zip(entry.targets) {
            // A new cell starts from zero: one addition cannot overflow it.
            if let Ok(i) = cells.binary_search_by_key(&counter, Cell::counter) {
                let spot = cells[i]
                    .plan(entry.amount, at)
                    .map_err(|field| OverflowAt {
                        index: 0,
                        counter,
                        field,
                    })?;
                *slot = (i as u32, spot);
            }
        }
        Ok(())
    }

    /// Writes a single entry as planned by [`SubjectCells::plan`].
    #[inline]
    fn commit(&mut self, entry: &ResolvedEntry<'_>, plan: &Plan, at: &EventTime) {
        let cells = self.cells.as_mut_slice();
        let mut creates = false;
        for &(i, spot) in &plan[..entry.targets.len()] {
            match cells.get_mut(i as usize) {
                Some(cell) => cell.commit(spot, entry.amount, at),
                None => creates = true,
            }
        }
        // Existing cells are written first: inserting shifts their indices.
        if creates {
            for (&(i, _), &counter) in plan.iter().zip(entry.targets) {
                if i == NEW_CELL {
                    self.add_to(counter, entry, at);
                }
            }
        }
    }

    /// Checks a batch, logs it through `log` (which returns its log
    /// sequence number, or 0 when nothing is logged), then applies it: all
    /// of it or nothing. Returns the batch's log sequence number.
    #[inline(always)]
    pub(super) fn check_log_apply<L>(
        &mut self,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
        log: L,
    ) -> Result<u64, ApplyError>
    where
        L: FnOnce(&[ResolvedEntry<'_>]) -> Result<u64, Error>,
    {
        match entries {
            // The hot path: one entry, its cells and buckets located once.
            [entry] if entry.targets.len() <= MAX_FUSED => {
                let mut found = [0; MAX_FUSED];
                if self.locate_current(entry.targets, at, &mut found) {
                    let found = &found[..entry.targets.len()];
                    let cells = self.cells.as_mut_slice();
                    for &i in found {
                        let cell = &cells[i];
                        cell.check_current(entry.amount).map_err(|field| {
                            ApplyError::Overflow(OverflowAt {
                                index: 0,
                                counter: cell.counter(),
                                field,
                            })
                        })?;
                    }
                    let lsn = log(entries).map_err(ApplyError::Log)?;
                    for &i in found {
                        cells[i].add_current(entry.amount, at);
                    }
                    return Ok(lsn);
                }
                let mut plan = [(NEW_CELL, CellSpot::default()); MAX_FUSED];
                self.plan(entry, at, &mut plan)
                    .map_err(ApplyError::Overflow)?;
                let lsn = log(entries).map_err(ApplyError::Log)?;
                self.commit(entry, &plan, at);
                Ok(lsn)
            }
            _ => {
                self.check(entries, at).map_err(ApplyError::Overflow)?;
                let lsn = log(entries).map_err(ApplyError::Log)?;
                self.apply(entries, at);
                Ok(lsn)
            }
        }
    }

    /// The highest counter id holding a cell.
    pub(crate) fn max_counter(&self) -> Option<CounterId> {
        self.cells.as_slice().last().map(Cell::counter)
    }

    /// Whether decoded cells keep the invariants and name only counters below `counters`.
    pub(crate) fn is_well_formed(&self, counters: usize) -> bool {
        let cells = self.cells.as_slice();
        cells.windows(2).all(|w| w[0].counter() < w[1].counter())
            && cells
                .iter()
                .all(|cell| (cell.counter() as usize) < counters && cell.is_well_formed())
    }
}

/// On disk a subject's cells are a sequence of (counter id, cell) pairs
/// (`docs/format.md`): each cell after its counter id.
impl Serialize for SubjectCells {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.cells
                .as_slice()
                .iter()
                .map(|cell| (cell.counter(), cell)),
        )
    }
}

impl<'de> Deserialize<'de> for SubjectCells {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let cells = Vec::<(CounterId, Cell)>::deserialize(deserializer)?
            .into_iter()
            .map(|(counter, cell)| cell.of_counter(counter))
            .collect();
        Ok(SubjectCells {
            cells: Cells::from_vec(cells),
        })
    }
}
