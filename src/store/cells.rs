//! One subject's cells, and how a batch is checked and applied to them.
//!
//! [`Cells`] works over any storage of a subject's cells: the store's
//! records keep one or two inline and more on the heap, and hand out
//! slices; [`SubjectCells`] owns a vector of them. A batch that only
//! writes existing cells is applied in place
//! ([`Cells::check_log_apply_in_place`]); one that creates a cell is applied
//! to the owned form ([`SubjectCells::check_log_apply`]), after which the
//! store files the subject in its new size class.
//!
//! A batch of several entries in place locates each distinct cell once,
//! carries its additions in entry order (checking each against overflow),
//! and writes each cell once with their sum: on the stack unless it
//! reaches more than `CARRIED_ON_STACK` cells (`carried`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::carried::CarriedCells;
use super::{ApplyError, BatchLog, OverflowAt, ResolvedEntry};
use crate::counter::CounterId;
use crate::period::{Cell, CellSpot, EventTime};

/// The most cells a single-entry batch plans on the stack: a counter, its
/// ancestors and the root at the default depth of 2 (and one to spare).
/// Deeper counters take the general path.
const MAX_FUSED: usize = 4;

/// A subject's cells, sorted by counter id, strictly ascending, over any
/// storage `C` of them: a slice ([`Cells<&[Cell]>`]), a mutable slice or a
/// vector ([`SubjectCells`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cells<C>(pub(super) C);

/// A subject's cells, owned.
pub(crate) type SubjectCells = Cells<Vec<Cell>>;

/// A subject's cells, borrowed from the store or a [`SubjectCells`].
pub(crate) type CellsView<'a> = Cells<&'a [Cell]>;

impl<C: AsRef<[Cell]>, D: AsRef<[Cell]>> PartialEq<Cells<D>> for Cells<C> {
    fn eq(&self, other: &Cells<D>) -> bool {
        self.0.as_ref() == other.0.as_ref()
    }
}

impl<C: AsRef<[Cell]>> Eq for Cells<C> {}

impl Default for SubjectCells {
    fn default() -> Self {
        Cells(Vec::new())
    }
}

/// What [`Cells::check_log_apply_in_place`] did.
pub(super) enum InPlace {
    /// The batch is applied; its log sequence number.
    Applied(u64),
    /// Nothing happened (nothing logged either): the batch creates a cell.
    Grows,
}

/// Where a single-entry batch writes: for each target, the index of its
/// cell and the buckets in it.
type Plan = [(usize, CellSpot); MAX_FUSED];

impl<C: AsRef<[Cell]>> Cells<C> {
    #[inline(always)]
    fn as_slice(&self) -> &[Cell] {
        self.0.as_ref()
    }

    /// The index of the cell of counter `id`, or where it would go.
    #[inline(always)]
    fn find(&self, id: CounterId) -> Result<usize, usize> {
        self.as_slice().binary_search_by_key(&id, Cell::counter)
    }

    /// The cell of counter `id`, if the subject has one.
    pub(crate) fn cell(&self, id: CounterId) -> Option<&Cell> {
        self.find(id).ok().map(|i| &self.as_slice()[i])
    }

    /// The subject's cells with their counter ids, in id order.
    pub(crate) fn cells(&self) -> impl Iterator<Item = (CounterId, &Cell)> {
        self.as_slice().iter().map(|cell| (cell.counter(), cell))
    }

    /// Whether every cell `entries` write exists.
    fn holds_targets_of(&self, entries: &[ResolvedEntry<'_>]) -> bool {
        entries
            .iter()
            .flat_map(|entry| entry.targets)
            .all(|&counter| self.find(counter).is_ok())
    }

    /// Checks a whole batch against overflow before anything is applied.
    pub(super) fn check(
        &self,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
    ) -> Result<(), OverflowAt> {
        let distinct =
            |targets: &[CounterId]| (1..targets.len()).all(|i| !targets[..i].contains(&targets[i]));
        if let [entry] = entries
            && distinct(entry.targets)
        {
            // One entry with distinct targets (the registry makes them so;
            // a damaged log might not): each cell takes one addition,
            // checked on its own, without carrying. A cell yet
            // to be created takes it whole, which cannot overflow.
            for &counter in entry.targets {
                let Some(cell) = self.cell(counter) else {
                    continue;
                };
                cell.projection(at)
                    .add(entry.amount)
                    .map_err(|field| OverflowAt {
                        index: 0,
                        counter,
                        field,
                    })?;
            }
            return Ok(());
        }
        self.carry(entries, at).map(drop)
    }

    /// Carries a batch's additions to each distinct cell it reaches, in
    /// entry order, checking each on top of those before it, so that entry
    /// `i` is checked exactly as it will be applied and the first entry
    /// that would overflow is the one named. A cell the subject lacks
    /// starts empty. Nothing is allocated unless the batch reaches more
    /// than [`CARRIED_ON_STACK`] distinct cells.
    fn carry(
        &self,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
    ) -> Result<CarriedCells, OverflowAt> {
        let mut carried = CarriedCells::default();
        for (index, entry) in entries.iter().enumerate() {
            for &counter in entry.targets {
                let to_cell = carried.of(counter, || {
                    let cell = self.find(counter).ok();
                    let projection = match cell {
                        Some(i) => self.as_slice()[i].projection(at),
                        None => Cell::default().projection(at),
                    };
                    (cell, projection)
                });
                to_cell
                    .projection
                    .add(entry.amount)
                    .map_err(|field| OverflowAt {
                        index,
                        counter,
                        field,
                    })?;
                to_cell.sum = to_cell.sum.wrapping_add(entry.amount);
            }
        }
        Ok(carried)
    }

    /// Whether every target of a single entry already has a cell holding
    /// just the buckets an increment at `at` writes (this month's and
    /// today's: the hot path); if so, their indices are in `found`, and
    /// each cell is checked against overflow in the same pass. `false` if
    /// any cell is missing or holds other buckets (then nothing is decided).
    ///
    /// `found` is filled in place rather than returned: copying the array
    /// out would read it back wider than it was written, which stalls.
    #[inline(always)]
    fn check_current_cells(
        &self,
        entry: &ResolvedEntry<'_>,
        at: &EventTime,
        found: &mut [usize; MAX_FUSED],
    ) -> Result<bool, OverflowAt> {
        if !at.is_retained() || entry.targets.len() > MAX_FUSED {
            return Ok(false);
        }
        let cells = self.as_slice();
        for (slot, &counter) in found.iter_mut().zip(entry.targets) {
            let at_cell = if cells.len() <= MAX_FUSED {
                cells.iter().position(|cell| cell.counter() == counter)
            } else {
                cells.binary_search_by_key(&counter, Cell::counter).ok()
            };
            let Some(i) = at_cell else {
                return Ok(false);
            };
            match cells[i].check_current(entry.amount, at) {
                None => return Ok(false),
                Some(checked) => checked.map_err(|field| OverflowAt {
                    index: 0,
                    counter,
                    field,
                })?,
            }
            *slot = i;
        }
        Ok(true)
    }

    /// Locates every cell and bucket a single entry writes, checking each
    /// addition against overflow; nothing changes yet. The entry's targets
    /// are distinct (the registry makes them so), at most [`MAX_FUSED`],
    /// and all have cells.
    fn plan(
        &self,
        entry: &ResolvedEntry<'_>,
        at: &EventTime,
        plan: &mut Plan,
    ) -> Result<(), OverflowAt> {
        let cells = self.as_slice();
        for (slot, &counter) in plan.iter_mut().zip(entry.targets) {
            if let Ok(i) = self.find(counter) {
                let spot = cells[i]
                    .plan(entry.amount, at)
                    .map_err(|field| OverflowAt {
                        index: 0,
                        counter,
                        field,
                    })?;
                *slot = (i, spot);
            }
        }
        Ok(())
    }

    /// The highest counter id holding a cell.
    pub(crate) fn max_counter(&self) -> Option<CounterId> {
        self.as_slice().last().map(Cell::counter)
    }

    /// The cells, copied into an owned [`SubjectCells`].
    pub(crate) fn to_owned_cells(&self) -> SubjectCells {
        Cells(self.as_slice().to_vec())
    }

    /// Whether decoded cells keep the invariants and name only counters below `counters`.
    pub(crate) fn is_well_formed(&self, counters: usize) -> bool {
        let cells = self.as_slice();
        cells.windows(2).all(|w| w[0].counter() < w[1].counter())
            && cells
                .iter()
                .all(|cell| (cell.counter() as usize) < counters && cell.is_well_formed())
    }
}

impl<C: AsRef<[Cell]> + AsMut<[Cell]>> Cells<C> {
    #[inline(always)]
    fn as_mut_slice(&mut self) -> &mut [Cell] {
        self.0.as_mut()
    }

    /// Writes a single entry as planned by [`Cells::plan`].
    fn commit(&mut self, entry: &ResolvedEntry<'_>, plan: &Plan, at: &EventTime) {
        let cells = self.as_mut_slice();
        for &(i, spot) in &plan[..entry.targets.len()] {
            cells[i].commit(spot, entry.amount, at);
        }
    }

    /// Checks a batch of subject `uid` that writes only existing cells,
    /// logs it through `log` (which returns its log sequence number, or 0
    /// when nothing is logged), then applies it: all of it or nothing. A
    /// batch that would create a cell is left alone, and not logged.
    #[inline(always)]
    pub(super) fn check_log_apply_in_place<L: BatchLog>(
        &mut self,
        uid: &str,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
        log: &mut L,
    ) -> Result<InPlace, ApplyError> {
        let mut found = [0; MAX_FUSED];
        if let [entry] = entries
            && self
                .check_current_cells(entry, at, &mut found)
                .map_err(ApplyError::Overflow)?
        {
            // The hot path: this month's and today's buckets in every cell.
            let lsn = log
                .append_batch(uid, entries, at)
                .map_err(ApplyError::Log)?;
            let cells = self.as_mut_slice();
            for &i in &found[..entry.targets.len()] {
                if let Some(cell) = cells.get_mut(i) {
                    cell.add_current(entry.amount, at);
                }
            }
            return Ok(InPlace::Applied(lsn));
        }
        self.check_log_apply_off_hot_path(uid, entries, at, log)
    }

    /// [`Cells::check_log_apply_in_place`] for every batch but the hot
    /// path's. Out of line, so that the hot path is compiled on its own.
    #[inline(never)]
    fn check_log_apply_off_hot_path<L: BatchLog>(
        &mut self,
        uid: &str,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
        log: &mut L,
    ) -> Result<InPlace, ApplyError> {
        match entries {
            // One entry: its cells and buckets located once.
            [entry] if entry.targets.len() <= MAX_FUSED => {
                if !self.holds_targets_of(entries) {
                    return Ok(InPlace::Grows);
                }
                let mut plan = [(0, CellSpot::default()); MAX_FUSED];
                self.plan(entry, at, &mut plan)
                    .map_err(ApplyError::Overflow)?;
                let lsn = log
                    .append_batch(uid, entries, at)
                    .map_err(ApplyError::Log)?;
                self.commit(entry, &plan, at);
                Ok(InPlace::Applied(lsn))
            }
            _ => self.check_log_apply_batch_in_place(uid, entries, at, log),
        }
    }

    /// [`Cells::check_log_apply_in_place`] for several entries (or one
    /// with more targets than [`MAX_FUSED`]): each distinct cell is
    /// located once, every addition to it checked in entry order on top of
    /// those before it (so the first entry that would overflow is the one
    /// named; [`Cells::carry`]), and the cell then written once, with
    /// their sum.
    fn check_log_apply_batch_in_place<L: BatchLog>(
        &mut self,
        uid: &str,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
        log: &mut L,
    ) -> Result<InPlace, ApplyError> {
        let carried = self.carry(entries, at).map_err(ApplyError::Overflow)?;
        if carried
            .as_slice()
            .iter()
            .any(|to_cell| to_cell.cell.is_none())
        {
            return Ok(InPlace::Grows);
        }
        let lsn = log
            .append_batch(uid, entries, at)
            .map_err(ApplyError::Log)?;
        let cells = self.as_mut_slice();
        for to_cell in carried.as_slice() {
            if let Some(i) = to_cell.cell {
                cells[i].add(to_cell.sum, at);
            }
        }
        Ok(InPlace::Applied(lsn))
    }
}

impl<'a> CellsView<'a> {
    /// The cells at `range` of these (by position, not counter id).
    pub(crate) fn slice(&self, range: std::ops::Range<usize>) -> CellsView<'a> {
        Cells(&self.0[range])
    }
}

impl SubjectCells {
    /// Appends `more`, the cells that follow these in a data file: `false`
    /// (and nothing appended) unless every counter of `more` is above every
    /// counter of these.
    pub(crate) fn extend_with(&mut self, more: SubjectCells) -> bool {
        if let (Some(last), Some(first)) = (self.0.last(), more.0.first())
            && first.counter() <= last.counter()
        {
            return false;
        }
        self.0.extend(more.0);
        true
    }

    /// Replaces the cells whose counters are in `from..until` (`until`
    /// `None`: no upper bound) with `with`: `false` (and nothing changed)
    /// unless every counter of `with` is in that range.
    pub(crate) fn replace_range(
        &mut self,
        from: CounterId,
        until: Option<CounterId>,
        with: SubjectCells,
    ) -> bool {
        let inside = |counter: CounterId| counter >= from && until.is_none_or(|end| counter < end);
        if !with.0.iter().all(|cell| inside(cell.counter())) {
            return false;
        }
        let start = self.0.partition_point(|cell| cell.counter() < from);
        let end = start + self.0[start..].partition_point(|cell| inside(cell.counter()));
        self.0.splice(start..end, with.0);
        true
    }

    /// Cells sorted by counter id.
    pub(super) fn new(cells: Vec<Cell>) -> SubjectCells {
        Cells(cells)
    }

    /// The cells, sorted by counter id.
    pub(super) fn into_vec(self) -> Vec<Cell> {
        self.0
    }

    /// Adds an entry to the cell of `id`, creating it if needed.
    fn add_to(&mut self, id: CounterId, entry: &ResolvedEntry<'_>, at: &EventTime) {
        match self.find(id) {
            Ok(i) => self.0[i].add(entry.amount, at),
            Err(i) => self.0.insert(i, Cell::new(id, entry.amount, at)),
        }
    }

    /// Applies a batch checked with [`Cells::check`], creating cells.
    pub(super) fn apply(&mut self, entries: &[ResolvedEntry<'_>], at: &EventTime) {
        for entry in entries {
            for &counter in entry.targets {
                self.add_to(counter, entry, at);
            }
        }
    }

    /// Checks a batch of subject `uid`, logs it through `log` (which returns its log
    /// sequence number, or 0 when nothing is logged), then applies it,
    /// creating cells as needed: all of it or nothing. Returns the batch's
    /// log sequence number.
    pub(super) fn check_log_apply<L: BatchLog>(
        &mut self,
        uid: &str,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
        log: &mut L,
    ) -> Result<u64, ApplyError> {
        self.check(entries, at).map_err(ApplyError::Overflow)?;
        let lsn = log
            .append_batch(uid, entries, at)
            .map_err(ApplyError::Log)?;
        self.apply(entries, at);
        Ok(lsn)
    }
}

/// On disk a subject's cells are a sequence of (counter id, cell) pairs
/// (`docs/format.md`): each cell after its counter id.
impl<C: AsRef<[Cell]>> Serialize for Cells<C> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.as_slice().iter().map(|cell| (cell.counter(), cell)))
    }
}

impl<'de> Deserialize<'de> for SubjectCells {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let cells = Vec::<(CounterId, Cell)>::deserialize(deserializer)?
            .into_iter()
            .map(|(counter, cell)| cell.of_counter(counter))
            .collect();
        Ok(Cells(cells))
    }
}
