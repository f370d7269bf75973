//! The sharded in-memory store: subjects to their cells.
//!
//! A UID is hashed once (foldhash, seeded randomly per store, or with the
//! seed of the store a loaded snapshot was taken from); the hash picks
//! one of [`SHARDS`] shards, each behind its own lock, and the rest of it
//! finds the subject's record in the slots of the shard's tables
//! (`shard`, `table`). A
//! batch is checked and applied under the subject's shard write lock, so
//! readers see all of a batch or none of it, and incrementing an existing
//! cell allocates nothing. There is no lock but the shard's. Each shard
//! also remembers the last logged batch applied to it, which is how a
//! snapshot says which batches it holds ([`HeldBatches`]). Under
//! write-behind (`Durability::Interval`) batches are not logged: each
//! shard marks the subjects they change, and [`Store::write_back`] hands
//! the log their states later.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam::utils::CachePadded;
use parking_lot::RwLock;

use crate::error::{AmountField, Error};
use crate::period::{Amount, EventTime};
use crate::counter::CounterId;

mod cells;
mod shard;
mod table;

use cells::InPlace;
pub(crate) use cells::{CellsView, SubjectCells};
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
const SHARDS: usize = 256;

/// The most subjects one write-back record holds (and one write-back
/// holds a shard's lock for), so that a record of a shard holding
/// millions of changed subjects stays well under the log's frame limit,
/// and its writers wait well under a millisecond. (Smaller in unit tests,
/// so that they reach several chunks a shard.)
pub(crate) const WRITE_BACK_CHUNK: usize = if cfg!(test) { 64 } else { 4096 };

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

/// Which logged batches a snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HeldBatches {
    /// The hash seed of the store the snapshot was taken from and, for
    /// each shard, the sequence number of the last logged batch applied to
    /// the shard when it was copied. A batch of a subject is in the
    /// snapshot exactly when its sequence number is at most that of the
    /// subject's shard there.
    ByShard { seed: u64, shard_lsns: Vec<u64> },
    /// A version-1 snapshot's: each subject's own last applied batch
    /// (subjects absent held none).
    BySubject(HashMap<String, u64>),
}

impl HeldBatches {
    /// The batches of a snapshot of a store seeded with `seed`, or `None`
    /// if `shard_lsns` does not have one number per shard.
    pub(crate) fn by_shard(seed: u64, shard_lsns: Vec<u64>) -> Option<HeldBatches> {
        (shard_lsns.len() == SHARDS).then_some(HeldBatches::ByShard { seed, shard_lsns })
    }

    /// The batches of a version-1 snapshot, by subject.
    pub(crate) fn by_subject(subject_lsns: HashMap<String, u64>) -> HeldBatches {
        HeldBatches::BySubject(subject_lsns)
    }

    /// Whether the snapshot holds the batch `lsn` of subject `uid`.
    pub(crate) fn holds(&self, uid: &str, lsn: u64) -> bool {
        match self {
            HeldBatches::ByShard { seed, shard_lsns } => {
                let hash = SubjectHasher::with_seed(*seed).hash_one(uid);
                lsn <= shard_lsns[shard_of_hash(hash)]
            }
            HeldBatches::BySubject(lsns) => lsns.get(uid).is_some_and(|&held| lsn <= held),
        }
    }

    /// The highest sequence number the snapshot holds.
    pub(crate) fn max_lsn(&self) -> u64 {
        match self {
            HeldBatches::ByShard { shard_lsns, .. } => shard_lsns.iter().copied().max(),
            HeldBatches::BySubject(lsns) => lsns.values().copied().max(),
        }
        .unwrap_or(0)
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
    /// logged, then applied under the subject's shard lock; a rejected
    /// batch changes nothing and creates no subject. Under write-behind,
    /// `log` is not called: the subject is marked changed instead.
    #[inline(always)]
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
        let (shard, hash) = self.slot(uid);
        let mut shard = shard.write();
        let behind = self.write_behind.load(Ordering::Relaxed);
        let log = |entries: &[ResolvedEntry<'_>]| if behind { Ok(0) } else { log(entries) };
        let (place, lsn) = match shard.find(hash, uid) {
            Some(place) => {
                match shard
                    .cells_mut(place)
                    .check_log_apply_in_place(entries, at, log)?
                {
                    InPlace::Applied(lsn) => (place, lsn),
                    InPlace::Grows(log) => {
                        let (moved, applied) = shard.regrow(&self.hasher, hash, place, |cells| {
                            cells.check_log_apply(entries, at, log)
                        });
                        (moved, applied?)
                    }
                }
            }
            None => {
                let targets = entries.iter().map(|entry| entry.targets.len()).sum();
                let mut cells = SubjectCells::new(Vec::with_capacity(targets));
                let lsn = cells.check_log_apply(entries, at, log)?;
                (shard.insert(&self.hasher, hash, uid, cells), lsn)
            }
        };
        if behind {
            shard.mark_changed(place);
        }
        shard.last_lsn = shard.last_lsn.max(lsn);
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

    /// Turns write-behind on or off (see [`Store::write_back`]). Whoever
    /// turns it off must then write back every shard.
    pub(crate) fn set_write_behind(&self, on: bool) {
        self.write_behind.store(on, Ordering::Relaxed);
    }

    /// Writes back the subjects of shard `shard` changed since it was
    /// last written back, [`WRITE_BACK_CHUNK`] at a time, each chunk under
    /// the shard's write lock (taken again for the next, so that writers
    /// wait for one chunk at most): `log` records the chunk's states and
    /// returns the record's sequence number, which the shard then holds.
    /// Returns how many subjects were written. If `log` fails, the
    /// chunk's subjects stay marked.
    ///
    /// It takes as many chunks as the subjects marked at the start fill,
    /// and no more: a subject marked again meanwhile (by a writer hitting
    /// the shard between two chunks) waits for the next write-back,
    /// rather than keep this one going for as long as the writer does.
    pub(crate) fn write_back(
        &self,
        shard: usize,
        mut log: impl FnMut(&[(&str, CellsView<'_>)]) -> Result<u64, Error>,
    ) -> Result<usize, Error> {
        let mut written = 0;
        let mut chunks_left = None;
        loop {
            let mut shard = self.shards[shard].write();
            let chunks_left =
                chunks_left.get_or_insert_with(|| shard.changed_count().div_ceil(WRITE_BACK_CHUNK));
            let places = shard.changed_places(WRITE_BACK_CHUNK);
            if places.is_empty() || *chunks_left == 0 {
                return Ok(written);
            }
            *chunks_left -= 1;
            let states: Vec<_> = places.iter().map(|&at| shard.subject_in(at)).collect();
            let lsn = log(&states)?;
            drop(states);
            shard.unmark(&places);
            shard.last_lsn = shard.last_lsn.max(lsn);
            written += places.len();
        }
    }

    /// Sets a subject's cells to a state written back (replacing what it
    /// had, or creating it), as logged with sequence number `lsn`.
    pub(crate) fn replace(&self, uid: &str, cells: SubjectCells, lsn: u64) {
        let (shard, hash) = self.slot(uid);
        let mut shard = shard.write();
        match shard.find(hash, uid) {
            Some(place) => {
                let (_, replaced): (_, Result<(), std::convert::Infallible>) =
                    shard.regrow(&self.hasher, hash, place, |old| {
                        *old = cells;
                        Ok(())
                    });
                let Ok(()) = replaced;
            }
            None => {
                shard.insert(&self.hasher, hash, uid, cells);
            }
        }
        shard.last_lsn = shard.last_lsn.max(lsn);
    }

    /// Replays logged batch `lsn`, which the snapshot loaded (if any) does
    /// not hold.
    pub(crate) fn replay(
        &self,
        uid: &str,
        entries: &[ResolvedEntry<'_>],
        at: &EventTime,
        lsn: u64,
    ) -> Result<(), OverflowAt> {
        let (shard, hash) = self.slot(uid);
        let mut shard = shard.write();
        let apply = |cells: &mut SubjectCells| {
            cells.check(entries, at)?;
            cells.apply(entries, at);
            Ok(())
        };
        match shard.find(hash, uid) {
            Some(place) => shard.regrow(&self.hasher, hash, place, apply).1?,
            None => {
                let mut cells = SubjectCells::default();
                apply(&mut cells)?;
                shard.insert(&self.hasher, hash, uid, cells);
            }
        }
        shard.last_lsn = shard.last_lsn.max(lsn);
        Ok(())
    }

    /// Records that every logged batch up to `lsn` is applied, in every
    /// shard: what recovery knows once the snapshot and the log are in.
    pub(crate) fn mark_applied_through(&self, lsn: u64) {
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            shard.last_lsn = shard.last_lsn.max(lsn);
        }
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
    /// Returns the sequence number of the last logged batch applied to
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
        shard.last_lsn
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
    fn long_and_short_uids_round_trip_through_records() {
        let store = Store::default();
        let uids = [
            "",
            "a",
            "fifteen-bytes-x",
            "sixteen-bytes-xx",
            &"é".repeat(100),
        ];
        for (i, uid) in uids.iter().enumerate() {
            store
                .apply(uid, &[entry(&[0], i as i64 + 1)], &at(), no_log)
                .unwrap();
        }
        for (i, uid) in uids.iter().enumerate() {
            assert_eq!(total(&store, uid, 0), Some(i as i64 + 1), "{uid:?}");
        }
        let mut seen: Vec<String> = Vec::new();
        store.for_each(|uid, _| seen.push(uid.to_owned()));
        seen.sort();
        let mut expected: Vec<String> = uids.iter().map(|u| u.to_string()).collect();
        expected.sort();
        assert_eq!(seen, expected);
        // A prefix or extension of a stored UID is another subject.
        assert_eq!(total(&store, "fifteen-bytes-", 0), None);
        assert_eq!(total(&store, "sixteen-bytes-xxx", 0), None);
    }

    #[test]
    fn subjects_move_between_size_classes_and_the_rest_stay_found() {
        let store = Store::default();
        let uids: Vec<String> = (0..3000).map(|i| format!("subject-{i}")).collect();
        // Round r gives every third subject (shifted by r) cell r: subjects
        // grow from one cell to two, three and four at different times,
        // and each move takes a record out of the middle of its class.
        let mut expected = vec![Vec::new(); uids.len()];
        for round in 0..4u32 {
            for (i, uid) in uids.iter().enumerate() {
                if !(i + round as usize).is_multiple_of(3) {
                    store
                        .apply(uid, &[entry(&[round], i as i64)], &at(), no_log)
                        .unwrap();
                    expected[i].push(round);
                }
            }
        }
        // A rejected batch that would add a cell leaves the subject as it was.
        let overflow = [entry(&[9], i64::MAX), entry(&[9], 1)];
        assert!(store.apply(&uids[1], &overflow, &at(), no_log).is_err());
        assert_eq!(store.subject_count(), uids.len());
        for (i, uid) in uids.iter().enumerate() {
            for id in 0..10 {
                let want = expected[i].contains(&id).then_some(i as i64);
                assert_eq!(total(&store, uid, id), want, "{uid} counter {id}");
            }
        }
        let mut seen = 0;
        store.for_each(|uid, cells| {
            let i: usize = uid["subject-".len()..].parse().unwrap();
            assert_eq!(cells.cells().count(), expected[i].len(), "{uid}");
            seen += 1;
        });
        assert_eq!(seen, uids.len());
    }

    #[test]
    fn many_subjects_are_all_found() {
        let store = Store::default();
        for i in 0..20_000 {
            let uid = format!("u{i}");
            store.apply(&uid, &[entry(&[0], i)], &at(), no_log).unwrap();
        }
        assert_eq!(store.subject_count(), 20_000);
        for i in (0..20_000).step_by(7) {
            assert_eq!(total(&store, &format!("u{i}"), 0), Some(i));
        }
        assert_eq!(total(&store, "u20000", 0), None);
        let long = "x".repeat(200);
        store
            .apply(&long, &[entry(&[0], 5)], &at(), no_log)
            .unwrap();
        assert_eq!(total(&store, &long, 0), Some(5));
        let mut seen = 0;
        store.for_each(|uid, _| seen += usize::from(uid == long));
        assert_eq!(seen, 1);
    }

    #[test]
    fn subjects_restored_together_are_all_found_and_a_repeated_one_is_named() {
        // Subjects of one, two and three cells, some with long UIDs, in
        // the order a snapshot lists them (shard by shard), into a store
        // that already holds one subject.
        let source = Store::default();
        for i in 0..6_000 {
            let uid = if i % 5 == 0 {
                format!("{i}-{}", "x".repeat(20))
            } else {
                format!("u{i}")
            };
            let targets: &[CounterId] = [&[0][..], &[0, 1], &[0, 1, 2]][i % 3];
            source
                .apply(&uid, &[entry(targets, i as i64)], &at(), no_log)
                .unwrap();
        }
        let mut subjects = Vec::new();
        source.for_each(|uid, cells| {
            subjects.push((uid.to_owned(), SubjectCells::new(cells.0.to_vec())));
        });
        let target = Store::default();
        target
            .apply("already", &[entry(&[0], 1)], &at(), no_log)
            .unwrap();
        target.restore_all(subjects.clone()).unwrap();
        assert_eq!(target.subject_count(), 6_001);
        for (uid, cells) in &subjects {
            let restored = target.read(uid, |c| c.0.to_vec()).expect("restored");
            assert_eq!(&restored, &cells.0, "{uid}");
        }
        assert_eq!(total(&target, "already", 0), Some(1));

        // A subject already there, and one listed twice.
        let mut again = vec![subjects[7].clone()];
        assert_eq!(
            target.restore_all(again.clone()),
            Err((0, subjects[7].0.clone()))
        );
        let fresh = Store::default();
        again.insert(0, subjects[3].clone());
        again.push(subjects[7].clone());
        assert_eq!(fresh.restore_all(again), Err((2, subjects[7].0.clone())));
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
    fn an_entry_naming_a_cell_twice_is_checked_as_two_additions() {
        // The registry never resolves a counter to repeated targets, but a
        // damaged log might; the check must not let the cell wrap.
        let store = Store::default();
        let half = i64::MAX / 2 + 1;
        assert!(
            store
                .replay("u", &[entry(&[0, 0], half)], &at(), 1)
                .is_err()
        );
        assert_eq!(store.subject_count(), 0);
        store.replay("u", &[entry(&[0, 0], 3)], &at(), 2).unwrap();
        assert_eq!(total(&store, "u", 0), Some(6));
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
    fn a_failing_log_applies_nothing() {
        let store = Store::default();
        let failing = |_: &[ResolvedEntry<'_>]| Err(Error::EmptyBatch);
        assert!(matches!(
            store.apply("u", &[entry(&[0], 1)], &at(), failing),
            Err(ApplyError::Log(_))
        ));
        assert_eq!(store.subject_count(), 0);
        assert_eq!(shard_lsns(&store).iter().max(), Some(&0));
    }

    fn shard_lsns(store: &Store) -> Vec<u64> {
        (0..store.shard_count())
            .map(|shard| store.for_each_in_shard(shard, |_, _| {}))
            .collect()
    }

    #[test]
    fn each_shard_knows_the_last_batch_applied_to_it_and_a_snapshot_what_it_holds() {
        let store = Store::default();
        let uids: Vec<String> = (0..2000).map(|i| format!("u{i}")).collect();
        for (i, uid) in uids.iter().enumerate() {
            let lsn = i as u64 + 1;
            store
                .apply(uid, &[entry(&[0], 1)], &at(), |_| Ok(lsn))
                .unwrap();
        }
        let held = HeldBatches::by_shard(store.seed(), shard_lsns(&store)).unwrap();
        assert_eq!(held.max_lsn(), 2000);
        // Every batch applied is held; a later batch of any subject is not.
        for (i, uid) in uids.iter().enumerate() {
            assert!(held.holds(uid, i as u64 + 1), "{uid}");
            assert!(!held.holds(uid, 2001));
        }
        // Per shard, not per store: an early subject's shard may end
        // before a late batch of another shard.
        let lsns = shard_lsns(&store);
        let first_shard_end = lsns.iter().copied().filter(|&l| l > 0).min();
        assert!(first_shard_end < Some(2000));
        assert!(HeldBatches::by_shard(store.seed(), vec![0; 3]).is_none());
        // A version-1 snapshot's, by subject.
        let by_subject = HeldBatches::by_subject(HashMap::from([("u".to_owned(), 7)]));
        assert!(by_subject.holds("u", 7) && !by_subject.holds("u", 8));
        assert!(!by_subject.holds("v", 1));
        assert_eq!(by_subject.max_lsn(), 7);
    }

    /// Writes back every shard; returns the UIDs written (sorted) and
    /// the records' sequence numbers (from 1 on, one per record).
    fn write_back_all(store: &Store) -> (Vec<String>, u64) {
        let mut uids = Vec::new();
        let mut lsn = 0;
        for shard in 0..store.shard_count() {
            store
                .write_back(shard, |subjects| {
                    uids.extend(subjects.iter().map(|(uid, _)| uid.to_string()));
                    lsn += 1;
                    Ok(lsn)
                })
                .unwrap();
        }
        uids.sort();
        (uids, lsn)
    }

    #[test]
    fn write_behind_marks_what_changed_and_a_write_back_clears_it() {
        let store = Store::default();
        // Not on: batches are logged, nothing is marked.
        let mut logged = 0;
        store
            .apply("a", &[entry(&[0], 1)], &at(), |_| {
                logged += 1;
                Ok(1)
            })
            .unwrap();
        assert_eq!(logged, 1);
        assert_eq!(write_back_all(&store).0, Vec::<String>::new());

        store.set_write_behind(true);
        let must_not_log =
            |_: &[ResolvedEntry<'_>]| -> Result<u64, Error> { panic!("logged under write-behind") };
        // An existing subject, one that gains a cell (and moves class),
        // and a new one; then an overflowing batch, which changes nothing.
        for (uid, targets) in [("a", &[0][..]), ("a", &[0, 1]), ("b", &[0])] {
            store
                .apply(uid, &[entry(targets, 1)], &at(), must_not_log)
                .unwrap();
        }
        assert!(
            store
                .apply(
                    "c",
                    &[entry(&[0], i64::MAX), entry(&[0], 1)],
                    &at(),
                    must_not_log
                )
                .is_err()
        );
        let (written, records) = write_back_all(&store);
        assert_eq!(written, ["a", "b"]);
        // Each shard holds the record that wrote its subjects back.
        assert_eq!(shard_lsns(&store).iter().max(), Some(&records));
        assert_eq!(write_back_all(&store).0, Vec::<String>::new());
    }

    #[test]
    fn marks_survive_the_tables_growing_and_records_moving() {
        let store = Store::default();
        store.set_write_behind(true);
        store
            .apply("marked", &[entry(&[0], 1)], &at(), no_log)
            .unwrap();
        store.set_write_behind(false);
        // Every shard's table grows several times under these.
        for i in 0..20_000 {
            let uid = format!("other-{i}");
            store.apply(&uid, &[entry(&[0], 1)], &at(), no_log).unwrap();
        }
        assert_eq!(write_back_all(&store).0, ["marked"]);
    }

    #[test]
    fn a_shard_with_many_changed_subjects_is_written_back_in_chunks() {
        let store = Store::default();
        store.set_write_behind(true);
        let uids: Vec<String> = (0..40_000).map(|i| format!("s{i}")).collect();
        for uid in &uids {
            store.apply(uid, &[entry(&[0], 1)], &at(), no_log).unwrap();
        }
        let mut records = Vec::new();
        for shard in 0..store.shard_count() {
            let written = store
                .write_back(shard, |subjects| {
                    records.push(subjects.iter().map(|(uid, _)| uid.to_string()).collect());
                    Ok(records.len() as u64)
                })
                .unwrap();
            assert!(written > WRITE_BACK_CHUNK, "{written} in shard {shard}");
        }
        assert!(
            records
                .iter()
                .all(|r: &Vec<String>| r.len() <= WRITE_BACK_CHUNK)
        );
        let mut written: Vec<String> = records.concat();
        written.sort();
        let mut expected = uids.clone();
        expected.sort();
        assert_eq!(written, expected, "each subject once");
        assert_eq!(
            shard_lsns(&store).iter().max(),
            Some(&(records.len() as u64))
        );
    }

    #[test]
    fn a_write_back_ends_while_a_writer_keeps_marking_its_shard() {
        let store = Store::default();
        store.set_write_behind(true);
        store
            .apply("hot", &[entry(&[0], 1)], &at(), no_log)
            .unwrap();
        let shard = (0..store.shard_count())
            .find(|&shard| {
                let mut found = false;
                store.for_each_in_shard(shard, |_, _| found = true);
                found
            })
            .unwrap();
        let stop = AtomicBool::new(false);
        let writes = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    store
                        .apply("hot", &[entry(&[0], 1)], &at(), no_log)
                        .unwrap();
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            });
            while writes.load(Ordering::Relaxed) < 10_000 {
                std::hint::spin_loop();
            }
            // One subject marked at the start: one chunk, however often
            // the writer marks it again meanwhile (a second one fails the
            // write-back, rather than let it run on).
            let outcomes: Vec<_> = (0..2_000)
                .map(|_| {
                    let mut records = 0;
                    store.write_back(shard, |_| {
                        records += 1;
                        match records {
                            1 => Ok(1),
                            _ => Err(Error::Config("a second chunk".into())),
                        }
                    })
                })
                .collect();
            stop.store(true, Ordering::Relaxed);
            let longer = outcomes.iter().filter(|o| o.is_err()).count();
            assert_eq!(longer, 0, "{longer} write-backs went on past one chunk");
        });
    }

    #[test]
    fn a_state_written_back_replaces_the_subject_or_creates_it() {
        let source = Store::default();
        source.set_write_behind(true);
        source
            .apply("u", &[entry(&[0, 1], 5)], &at(), no_log)
            .unwrap();
        let mut states = Vec::new();
        for shard in 0..source.shard_count() {
            source
                .write_back(shard, |subjects| {
                    for (uid, cells) in subjects {
                        states.push((uid.to_string(), SubjectCells::new(cells.0.to_vec())));
                    }
                    Ok(9)
                })
                .unwrap();
        }
        let [(uid, state)] = &states[..] else {
            panic!("{} states", states.len())
        };
        let target = Store::default();
        target.replace(uid, state.clone(), 9);
        assert_eq!(total(&target, "u", 1), Some(5));
        // An older state (one cell, count 2) replaced by the newer one.
        let older = Store::default();
        older.apply("u", &[entry(&[0], 2)], &at(), no_log).unwrap();
        older.replace(uid, state.clone(), 9);
        assert_eq!(
            (total(&older, "u", 0), total(&older, "u", 1)),
            (Some(5), Some(5))
        );
        assert_eq!(shard_lsns(&older).iter().max(), Some(&9));
    }

    #[test]
    fn replay_applies_and_moves_the_shard_on() {
        let store = Store::default();
        store.replay("u", &[entry(&[0], 1)], &at(), 7).unwrap();
        store.replay("u", &[entry(&[0], 1)], &at(), 8).unwrap();
        assert_eq!(total(&store, "u", 0), Some(2));
        assert_eq!(shard_lsns(&store).iter().max(), Some(&8));
        store.mark_applied_through(20);
        assert!(shard_lsns(&store).iter().all(|&lsn| lsn == 20));
    }
}
