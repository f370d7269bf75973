//! The sharded in-memory store: subjects to their cells.
//!
//! A UID is hashed once (foldhash, seeded randomly per store, or with the
//! seed of the store a loaded snapshot was taken from); the hash picks
//! one of [`SHARDS`] shards, each behind its own lock, and the rest of it
//! finds the subject's record in the slots of the shard's tables
//! (`shard`, `table`). A
//! batch is checked and applied under the subject's shard write lock, so
//! readers see all of a batch or none of it, and incrementing an existing
//! cell allocates nothing. There is no lock but the shard's.
//!
//! An increment goes [`Store::apply`] → the subject's shard (found or
//! inserted) → its cells (`cells`), which check the batch, hand it to the
//! [`BatchLog`] the caller passed, and apply it. The store defines what a
//! log is (`log`) and never sees one: each shard keeps the last logged
//! change applied to it, which is how a snapshot says which batches it
//! holds, and under write-behind (`Durability::Interval`) batches are not
//! logged: each shard marks the subjects they change, and
//! [`Store::write_back`] hands a [`StateLog`] their states later.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam::utils::CachePadded;
use parking_lot::RwLock;

use crate::counter::CounterId;
use crate::error::{AmountField, Error};
use crate::period::{Amount, EventTime};

mod carried;
mod cells;
mod log;
mod shard;
mod table;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod write_back_tests;

use cells::InPlace;
pub(crate) use cells::{CellsView, SubjectCells};
use log::UnlessBehind;
pub(crate) use log::{BatchLog, StateLog, Unlogged};
use shard::Shard;

/// One accepted entry of a batch, resolved to the cells it lands in.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
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

/// Why the store refused a batch.
#[derive(Debug)]
pub(crate) enum ApplyError {
    /// An addition would overflow.
    Overflow(OverflowAt),
    /// The log could not record the batch.
    Log(Error),
}

/// The number of lock shards: many small shards keep each one short to
/// walk, so a snapshot holds any shard's lock only briefly, and make two
/// writers rarely meet.
pub(crate) const SHARDS: usize = 256;

/// The hasher of subject keys: fast, and seeded per store (randomly) so
/// that crafted UIDs cannot aim at one shard or bucket. The seed is saved
/// in snapshots: with it, recovery knows which shard held each subject.
pub(super) type SubjectHasher = foldhash::fast::FixedState;

/// The bits of a subject's hash that pick its shard (the top 8).
const SHARD_SHIFT: u32 = 56;

/// The shard of a subject whose UID hashes to `hash`.
#[inline(always)]
fn shard_of_hash(hash: u64) -> usize {
    (hash >> SHARD_SHIFT) as usize % SHARDS
}

/// The shard the subject `uid` is in, in a store seeded with `seed` (that
/// of a store a snapshot was taken from, say).
pub(crate) fn shard_under_seed(seed: u64, uid: &str) -> usize {
    shard_of_hash(SubjectHasher::with_seed(seed).hash_one(uid))
}

/// Every subject's cells, sharded by the hash of their UID.
pub(crate) struct Store {
    seed: u64,
    hasher: SubjectHasher,
    shards: Box<[CachePadded<RwLock<Shard>>]>,
    /// Write-behind is on: batches are not logged one by one; their
    /// subjects are marked changed instead, and [`Store::write_back`]
    /// logs the state of each changed subject later. Read under a shard's
    /// lock, so that whoever turns it off and then writes back every
    /// shard sees every subject marked while it was on.
    write_behind: AtomicBool,
}

impl Default for Store {
    /// An empty store with a random hash seed.
    fn default() -> Self {
        // A per-instance random seed (foldhash's, from the OS's randomness
        // and an instance counter): no system call that could fail.
        let seed = foldhash::fast::RandomState::default().hash_one(SHARDS);
        Store {
            seed,
            hasher: SubjectHasher::with_seed(seed),
            shards: (0..SHARDS).map(|_| CachePadded::default()).collect(),
            write_behind: AtomicBool::new(false),
        }
    }
}

impl Store {
    /// The UID's shard and hash.
    #[inline]
    fn slot(&self, uid: &str) -> (&RwLock<Shard>, u64) {
        let hash = self.hasher.hash_one(uid);
        (&self.shards[shard_of_hash(hash)], hash)
    }

    /// Applies a batch to one subject atomically: checked completely first,
    /// logged through `log`, then applied under the subject's shard lock;
    /// a rejected batch changes nothing and creates no subject. Under
    /// write-behind, `log` is not called: the subject is marked changed
    /// instead.
    #[inline(always)]
    pub(crate) fn apply<L: BatchLog>(
        &self,
        uid: &str,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
        log: &mut L,
    ) -> Result<(), ApplyError> {
        let (shard, hash) = self.slot(uid);
        let mut shard = shard.write();
        let behind = self.write_behind.load(Ordering::Relaxed);
        let mut log = UnlessBehind { behind, log };
        let (place, lsn) = match shard.find(hash, uid) {
            Some(place) => {
                match shard
                    .cells_mut(place)
                    .check_log_apply_in_place(uid, entries, at, &mut log)?
                {
                    InPlace::Applied(lsn) => (place, lsn),
                    InPlace::Grows => {
                        let (moved, applied) = shard.regrow(&self.hasher, hash, place, |cells| {
                            cells.check_log_apply(uid, entries, at, &mut log)
                        });
                        (moved, applied?)
                    }
                }
            }
            None => {
                let targets = entries.iter().map(|entry| entry.targets.len()).sum();
                let mut cells = SubjectCells::new(Vec::with_capacity(targets));
                let lsn = cells.check_log_apply(uid, entries, at, &mut log)?;
                (shard.insert(&self.hasher, hash, uid, cells), lsn)
            }
        };
        if behind {
            shard.mark_changed(place);
        }
        shard.log.applied(lsn);
        Ok(())
    }

    /// Checks `entries` against overflow on the subject's cells (none if
    /// it has none), changing nothing: for a batch rejected at a later
    /// entry, whose error must name an earlier one that would overflow.
    pub(crate) fn check(
        &self,
        uid: &str,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
    ) -> Result<(), OverflowAt> {
        self.read(uid, |cells| cells.check(entries, at))
            .unwrap_or_else(|| SubjectCells::default().check(entries, at))
    }

    /// The seed of the store's UID hash.
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// Seeds the UID hash with `seed`: that of the store a snapshot being
    /// loaded was taken from, so that its subjects fall in the same shards
    /// and come in shard by shard. The seed stays as secret as the data
    /// directory that holds it. For an empty store only.
    pub(crate) fn reseed(&mut self, seed: u64) {
        assert_eq!(self.subject_count(), 0, "only an empty store is reseeded");
        self.seed = seed;
        self.hasher = SubjectHasher::with_seed(seed);
    }

    /// The shard the UID's subject is in.
    pub(crate) fn shard_of(&self, uid: &str) -> usize {
        shard_of_hash(self.hasher.hash_one(uid))
    }

    /// Puts back subjects loaded from a snapshot, shard by shard, each
    /// shard's tables grown once for all of its subjects among them (a
    /// snapshot lists subjects shard by shard, so a chunk of them spans
    /// few shards). `Err((i, uid))` if `subjects[i]`, `uid`, is already
    /// there or listed twice; the subjects of other shards may be restored.
    pub(crate) fn restore_all(
        &self,
        subjects: Vec<(String, SubjectCells)>,
    ) -> Result<(), (usize, String)> {
        let mut order: Vec<(usize, u64, usize)> = (subjects.iter().enumerate())
            .map(|(i, (uid, _))| {
                let hash = self.hasher.hash_one(uid.as_str());
                (shard_of_hash(hash), hash, i)
            })
            .collect();
        order.sort_unstable_by_key(|&(shard, _, i)| (shard, i));
        let mut subjects: Vec<Option<(String, SubjectCells)>> =
            subjects.into_iter().map(Some).collect();
        for run in order.chunk_by(|a, b| a.0 == b.0) {
            let mut shard = self.shards[run[0].0].write();
            let counts = run
                .iter()
                .map(|&(_, _, i)| subjects[i].as_ref().map_or(0, |(_, cells)| cells.0.len()));
            shard.reserve(&self.hasher, counts);
            for &(_, hash, i) in run {
                let Some((uid, cells)) = subjects[i].take() else {
                    continue;
                };
                if shard.find(hash, &uid).is_some() {
                    return Err((i, uid));
                }
                shard.insert(&self.hasher, hash, &uid, cells);
            }
        }
        Ok(())
    }

    /// Visits every subject, one shard lock at a time; `visit` runs under
    /// the read lock of the subject's shard and must not call back into the store.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(&str, CellsView<'_>)) {
        for shard in 0..self.shard_count() {
            self.for_each_in_shard(shard, &mut visit);
        }
    }

    /// The number of lock shards, for [`Store::for_each_in_shard`].
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Visits the subjects of shard `shard` under its read lock, which
    /// blocks that shard's writers until `visit` has seen them all: keep
    /// `visit` to in-memory work. It must not call back into the store.
    /// Returns the sequence number of the last logged change applied to
    /// the shard, which the subjects visited hold, and no later one.
    pub(crate) fn for_each_in_shard(
        &self,
        shard: usize,
        mut visit: impl FnMut(&str, CellsView<'_>),
    ) -> u64 {
        let shard = self.shards[shard].read();
        for (uid, cells) in shard.subjects() {
            visit(uid, cells);
        }
        shard.log.last_lsn()
    }

    /// Runs `read` on a subject's cells under its shard read lock, or
    /// returns `None` if the subject has no cells.
    ///
    /// `read` must not call back into the store: the lock is held.
    pub(crate) fn read<R>(&self, uid: &str, read: impl FnOnce(CellsView<'_>) -> R) -> Option<R> {
        let (shard, hash) = self.slot(uid);
        let shard = shard.read();
        let place = shard.find(hash, uid)?;
        Some(read(shard.cells_at(place)))
    }

    /// The number of subjects with at least one cell.
    pub(crate) fn subject_count(&self) -> usize {
        self.shards.iter().map(|shard| shard.read().len()).sum()
    }
}
