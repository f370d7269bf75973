//! The sharded in-memory store: subjects to their cells.
//!
//! A UID is hashed once (foldhash, seeded per process); the hash picks one
//! of [`SHARDS`] shards, each behind its own lock, and 32 of its bits key
//! the shard's index. A batch is checked and applied under the subject's
//! shard write lock, so readers see all of a batch or none of it, and
//! incrementing an existing cell allocates nothing. There is no lock but
//! the shard's.

use std::hash::BuildHasher;

use crossbeam::utils::CachePadded;
use parking_lot::RwLock;

use crate::error::{AmountField, Error};
use crate::period::{Amount, EventTime};
use crate::registry::CounterId;

mod cells;

pub(crate) use cells::SubjectCells;

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
/// walk, so a snapshot holds any shard's lock only briefly, and make two
/// writers rarely meet.
const SHARDS: usize = 256;

/// The hasher of subject keys: fast, and seeded per process so that
/// crafted UIDs cannot aim at one shard or bucket.
type SubjectHasher = foldhash::fast::RandomState;

/// A shard's index: an open-addressed table with linear probing, each
/// slot one word holding 32 bits of a subject's hash and its record's
/// position plus one (0: empty). A lookup reads one slot, usually, and
/// then the record; subjects are never removed, so probing needs no
/// tombstones, and subjects whose 32 bits coincide simply sit in
/// successive slots.
#[derive(Default)]
struct Index {
    slots: Vec<u64>,
    len: usize,
}

impl Index {
    /// The record (among those filed under `key`) that `is_it` accepts.
    #[inline]
    fn find(&self, key: u32, mut is_it: impl FnMut(u32) -> bool) -> Option<u32> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut at = key as usize & mask;
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return None;
            }
            if (slot >> 32) as u32 == key {
                let record = slot as u32 - 1;
                if is_it(record) {
                    return Some(record);
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// Files record `record` (below `u32::MAX`) under `key`.
    fn insert(&mut self, key: u32, record: u32) {
        // At most three quarters full, so that probes stay short.
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            let grown = vec![0; (self.slots.len() * 2).max(16)];
            let old = std::mem::replace(&mut self.slots, grown);
            for slot in old.into_iter().filter(|&slot| slot != 0) {
                self.put(slot);
            }
        }
        self.put(u64::from(key) << 32 | u64::from(record + 1));
        self.len += 1;
    }

    fn put(&mut self, slot: u64) {
        let mask = self.slots.len() - 1;
        let mut at = (slot >> 32) as usize & mask;
        while self.slots[at] != 0 {
            at = (at + 1) & mask;
        }
        self.slots[at] = slot;
    }
}

/// UIDs of up to this many bytes are kept inside their record.
const INLINE_UID: usize = 22;

/// A subject's UID: inline when short (no allocation, and no second
/// memory access to compare it), else on the heap.
#[derive(Clone)]
enum Uid {
    Inline { len: u8, bytes: [u8; INLINE_UID] },
    Heap(Box<str>),
}

impl Uid {
    fn new(uid: &str) -> Uid {
        match uid.len() {
            len @ 0..=INLINE_UID => {
                let mut bytes = [0; INLINE_UID];
                bytes[..len].copy_from_slice(uid.as_bytes());
                Uid::Inline {
                    len: len as u8,
                    bytes,
                }
            }
            _ => Uid::Heap(uid.into()),
        }
    }

    #[inline]
    fn as_bytes(&self) -> &[u8] {
        match self {
            Uid::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Uid::Heap(uid) => uid.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Made from a `&str`: always UTF-8.
            Uid::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            Uid::Heap(uid) => uid,
        }
    }
}

/// One subject in its shard.
#[derive(Clone)]
struct Record {
    uid: Uid,
    cells: SubjectCells,
}

/// The subjects whose hash picks one shard: never removed, so they live
/// in a dense vector, found through the shard's [`Index`].
#[derive(Default)]
struct Shard {
    index: Index,
    records: Vec<Record>,
}

impl Shard {
    #[inline]
    fn find(&self, key: u32, uid: &str) -> Option<usize> {
        let records = &self.records;
        self.index
            .find(key, |at| {
                records[at as usize].uid.as_bytes() == uid.as_bytes()
            })
            .map(|at| at as usize)
    }

    /// Adds a subject that [`Shard::find`] did not find.
    fn insert(&mut self, key: u32, uid: &str, cells: SubjectCells) {
        let at = u32::try_from(self.records.len())
            .ok()
            .filter(|&at| at < u32::MAX)
            .expect("fewer than 2^32 - 1 subjects in one shard");
        self.index.insert(key, at);
        self.records.push(Record {
            uid: Uid::new(uid),
            cells,
        });
    }
}

/// Every subject's cells, sharded by the hash of their UID.
pub(crate) struct Store {
    hasher: SubjectHasher,
    shards: Box<[CachePadded<RwLock<Shard>>]>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            hasher: SubjectHasher::default(),
            shards: (0..SHARDS).map(|_| CachePadded::default()).collect(),
        }
    }
}

impl Store {
    /// The UID's shard and index key, from one hash of the UID.
    #[inline]
    fn slot(&self, uid: &str) -> (&RwLock<Shard>, u32) {
        let hash = self.hasher.hash_one(uid);
        let shard = (hash >> 56) as usize % SHARDS;
        (&self.shards[shard], hash as u32)
    }

    /// Applies a batch to one subject atomically: checked completely first,
    /// logged, then applied under the subject's shard lock; a rejected
    /// batch changes nothing and creates no subject.
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
        let (shard, key) = self.slot(uid);
        let mut shard = shard.write();
        match shard.find(key, uid) {
            Some(at_record) => shard.records[at_record]
                .cells
                .check_log_apply(entries, at, log),
            None => {
                let mut cells = SubjectCells::default();
                cells.check_log_apply(entries, at, log)?;
                shard.insert(key, uid, cells);
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
        let (shard, key) = self.slot(uid);
        let mut shard = shard.write();
        let found = shard.find(key, uid);
        let mut fresh = SubjectCells::default();
        let cells = match found {
            Some(at_record) => &mut shard.records[at_record].cells,
            None => &mut fresh,
        };
        if lsn <= cells.last_lsn() {
            return Ok(Replayed::Skipped);
        }
        cells.check(entries, at)?;
        cells.apply(entries, at);
        cells.set_last_lsn(lsn);
        if found.is_none() {
            shard.insert(key, uid, fresh);
        }
        Ok(Replayed::Applied)
    }

    /// Puts a subject's cells back, as loaded from a snapshot; `false`
    /// (and no change) if the subject is already there.
    pub(crate) fn restore(&self, uid: &str, cells: SubjectCells) -> bool {
        let (shard, key) = self.slot(uid);
        let mut shard = shard.write();
        if shard.find(key, uid).is_some() {
            return false;
        }
        shard.insert(key, uid, cells);
        true
    }

    /// Visits every subject, one shard lock at a time; `visit` runs under
    /// the read lock of the subject's shard and must not call back into the store.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(&str, &SubjectCells)) {
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
    pub(crate) fn for_each_in_shard(
        &self,
        shard: usize,
        mut visit: impl FnMut(&str, &SubjectCells),
    ) {
        let shard = self.shards[shard].read();
        for record in &shard.records {
            visit(record.uid.as_str(), &record.cells);
        }
    }

    /// Runs `read` on a subject's cells under its shard read lock, or
    /// returns `None` if the subject has no cells.
    ///
    /// `read` must not call back into the store: the lock is held.
    pub(crate) fn read<R>(&self, uid: &str, read: impl FnOnce(&SubjectCells) -> R) -> Option<R> {
        let (shard, key) = self.slot(uid);
        let shard = shard.read();
        let at = shard.find(key, uid)?;
        Some(read(&shard.records[at].cells))
    }

    /// The number of subjects with at least one cell.
    pub(crate) fn subject_count(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.read().records.len())
            .sum()
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
    fn the_index_keeps_subjects_whose_hash_bits_coincide_apart() {
        let mut index = Index::default();
        // Every record under one of three keys: long probe runs, wrapping.
        for record in 0..1000u32 {
            index.insert([7, 7 + 64, u32::MAX][record as usize % 3], record);
        }
        assert_eq!(index.len, 1000);
        for record in 0..1000u32 {
            let key = [7, 7 + 64, u32::MAX][record as usize % 3];
            assert_eq!(index.find(key, |r| r == record), Some(record));
        }
        assert_eq!(index.find(8, |_| true), None);
        assert_eq!(index.find(7, |_| false), None);
        assert_eq!(Index::default().find(7, |_| true), None);
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
