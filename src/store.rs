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

/// The number of lock shards: many small shards keep each one short to
/// walk, so a snapshot holds any shard's lock only briefly, and make two
/// writers rarely meet.
const SHARDS: usize = 256;

/// The hasher of subject keys: fast, and seeded per store (randomly) so
/// that crafted UIDs cannot aim at one shard or bucket. The seed is saved
/// in snapshots: with it, recovery knows which shard held each subject.
type SubjectHasher = foldhash::fast::FixedState;

/// The bits of a subject's hash that pick its shard (the top 8).
const SHARD_SHIFT: u32 = 56;

/// The bits of a subject's hash kept in its index slot (the 8 below the
/// shard's): a probe compares a UID only when they match, about once in
/// 256 probes for another subject.
const TAG_SHIFT: u32 = 48;

/// The most records a shard holds: slots keep 24 bits of record number.
/// With [`SHARDS`] shards that is over four billion subjects, far beyond
/// what fits in memory.
const MAX_RECORDS: usize = (1 << 24) - 1;

/// A shard's index: an open-addressed table with linear probing, each
/// slot 32 bits: 8 bits of the subject's hash (its tag) and its record's
/// position plus one (0: empty). A lookup reads one slot, usually, and
/// then the record; subjects are never removed, so probing needs no
/// tombstones. Growing re-hashes the records' UIDs: slots keep too few
/// hash bits to be moved without them, which is what keeps them at four
/// bytes a subject.
#[derive(Default)]
struct Index {
    slots: Vec<u32>,
}

impl Index {
    /// The record (among those whose hash is `hash`'s) that `is_it` accepts.
    #[inline]
    fn find(&self, hash: u64, mut is_it: impl FnMut(usize) -> bool) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        let tag = tag_of(hash);
        let mut at = hash as usize & mask;
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return None;
            }
            if slot >> 24 == tag {
                let record = (slot & 0x00ff_ffff) as usize - 1;
                if is_it(record) {
                    return Some(record);
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// Whether filing one more record needs a bigger table: it is kept at
    /// most three quarters full, so that probes stay short.
    fn is_full(&self, records: usize) -> bool {
        (records + 1) * 4 > self.slots.len() * 3
    }

    /// An empty table of `len` slots (a power of two).
    fn with_len(len: usize) -> Index {
        Index {
            slots: vec![0; len],
        }
    }

    /// Files record `record` (at most [`MAX_RECORDS`] - 1) under `hash`.
    fn put(&mut self, hash: u64, record: usize) {
        let mask = self.slots.len() - 1;
        let mut at = hash as usize & mask;
        while self.slots[at] != 0 {
            at = (at + 1) & mask;
        }
        self.slots[at] = tag_of(hash) << 24 | (record as u32 + 1);
    }
}

#[inline]
fn tag_of(hash: u64) -> u32 {
    (hash >> TAG_SHIFT) as u32 & 0xff
}

/// UIDs of up to this many bytes are kept inside their record.
const INLINE_UID: usize = 15;

/// The last byte of a [`Uid`] whose bytes are in the shard's UID arena.
const IN_ARENA: u8 = u8::MAX;

/// A subject's UID in 16 bytes. Up to [`INLINE_UID`] bytes are kept
/// inline, their length in the last byte, so that finding a subject
/// compares two words and allocates nothing; a longer UID lives in its
/// shard's append-only arena, and the first 8 bytes locate it there
/// (offset and length, little-endian `u32`s) while the last is
/// [`IN_ARENA`].
#[derive(Clone, Copy)]
struct Uid([u8; 16]);

impl PartialEq for Uid {
    /// Two words compared, without a call to `memcmp`.
    #[inline(always)]
    fn eq(&self, other: &Uid) -> bool {
        u128::from_ne_bytes(self.0) == u128::from_ne_bytes(other.0)
    }
}

impl Eq for Uid {}

impl Uid {
    /// The inline form of `uid`, or `None` if it is too long. Built from
    /// whole-word loads (two overlapping ones cover any length from 4 to
    /// 15) rather than a copy of variable length, as it is on every
    /// increment's path.
    #[inline(always)]
    fn inline(uid: &str) -> Option<Uid> {
        let from = uid.as_bytes();
        let len = from.len();
        let word = |at: usize| u64::from_le_bytes(from[at..at + 8].try_into().unwrap_or_default());
        let half = |at: usize| {
            u64::from(u32::from_le_bytes(
                from[at..at + 4].try_into().unwrap_or_default(),
            ))
        };
        // The UID's bytes 0..8 and 8..15, zero-padded, little-endian.
        let (low, high) = match len {
            8 => (word(0), 0),
            9..=INLINE_UID => (word(0), word(len - 8) >> (8 * (16 - len))),
            4..=7 => (half(0) | half(len - 4) << (8 * (len - 4)), 0),
            0..=3 => (
                from.iter()
                    .enumerate()
                    .fold(0, |word, (i, &byte)| word | u64::from(byte) << (8 * i)),
                0,
            ),
            _ => return None,
        };
        let high = high | (len as u64) << 56;
        Some(Uid((u128::from(high) << 64 | u128::from(low)).to_le_bytes()))
    }

    /// A UID stored at `offset..offset + len` of the shard's arena.
    fn in_arena(offset: u32, len: u32) -> Uid {
        let mut bytes = [0; 16];
        bytes[..4].copy_from_slice(&offset.to_le_bytes());
        bytes[4..8].copy_from_slice(&len.to_le_bytes());
        bytes[15] = IN_ARENA;
        Uid(bytes)
    }

    /// Where the UID is in the shard's arena, if it is there.
    #[inline]
    fn arena_range(&self) -> Option<std::ops::Range<usize>> {
        (self.0[15] == IN_ARENA).then(|| {
            let word = |at: usize| {
                u32::from_le_bytes([self.0[at], self.0[at + 1], self.0[at + 2], self.0[at + 3]])
                    as usize
            };
            word(0)..word(0) + word(4)
        })
    }
}

/// One subject in its shard.
struct Record {
    uid: Uid,
    cells: SubjectCells,
}

/// The subjects whose hash picks one shard: never removed, so they live
/// in a dense vector, found through the shard's [`Index`]; UIDs too long
/// to keep inline sit end to end in `long_uids`.
#[derive(Default)]
struct Shard {
    index: Index,
    records: Vec<Record>,
    long_uids: String,
    /// The log sequence number of the last logged batch applied to a
    /// subject of this shard (0: none). Batches are logged and applied
    /// under the shard's lock, so the shard holds exactly the logged
    /// batches of its subjects up to this one: a snapshot records it per
    /// shard, rather than each subject carrying its own.
    last_lsn: u64,
}

impl Shard {
    #[inline(always)]
    fn find(&self, hash: u64, uid: &str) -> Option<usize> {
        let records = &self.records;
        match Uid::inline(uid) {
            Some(wanted) => self.index.find(hash, |at| records[at].uid == wanted),
            None => self.index.find(hash, |at| {
                records[at]
                    .uid
                    .arena_range()
                    .is_some_and(|range| &self.long_uids[range] == uid)
            }),
        }
    }

    /// The UID of a record.
    fn uid_of<'a>(&'a self, record: &'a Record) -> &'a str {
        match record.uid.arena_range() {
            Some(range) => &self.long_uids[range],
            // Made from a `&str` of at most INLINE_UID bytes: always UTF-8.
            None => std::str::from_utf8(&record.uid.0[..usize::from(record.uid.0[15])])
                .unwrap_or_default(),
        }
    }

    /// Adds a subject that [`Shard::find`] did not find; `hash` is its
    /// UID's under `hasher`, which also re-files the others if the index grows.
    fn insert(&mut self, hasher: &SubjectHasher, hash: u64, uid: &str, cells: SubjectCells) {
        let at = self.records.len();
        assert!(
            at < MAX_RECORDS,
            "fewer than 2^24 - 1 subjects in one shard"
        );
        if self.index.is_full(at) {
            let mut grown = Index::with_len((self.index.slots.len() * 2).max(16));
            for (record, filed) in self.records.iter().enumerate() {
                grown.put(hasher.hash_one(self.uid_of(filed)), record);
            }
            self.index = grown;
        }
        self.index.put(hash, at);
        let uid = Uid::inline(uid).unwrap_or_else(|| {
            let offset =
                u32::try_from(self.long_uids.len()).expect("under 4 GiB of long UIDs in one shard");
            self.long_uids.push_str(uid);
            let len = u32::try_from(uid.len()).expect("a UID under 4 GiB");
            Uid::in_arena(offset, len)
        });
        self.records.push(Record { uid, cells });
    }
}

/// Every subject's cells, sharded by the hash of their UID.
pub(crate) struct Store {
    seed: u64,
    hasher: SubjectHasher,
    shards: Box<[CachePadded<RwLock<Shard>>]>,
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
        }
    }
}

/// Which logged batches a snapshot holds: the hash seed of the store it
/// was taken from and, for each shard, the sequence number of the last
/// logged batch applied to the shard when it was copied. A batch of a
/// subject is in the snapshot exactly when its sequence number is at most
/// that of the subject's shard there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeldBatches {
    seed: u64,
    shard_lsns: Vec<u64>,
}

impl HeldBatches {
    /// The batches of a snapshot of a store seeded with `seed`, or `None`
    /// if `shard_lsns` does not have one number per shard.
    pub(crate) fn new(seed: u64, shard_lsns: Vec<u64>) -> Option<HeldBatches> {
        (shard_lsns.len() == SHARDS).then_some(HeldBatches { seed, shard_lsns })
    }

    /// Whether the snapshot holds the batch `lsn` of subject `uid`.
    pub(crate) fn holds(&self, uid: &str, lsn: u64) -> bool {
        let hash = SubjectHasher::with_seed(self.seed).hash_one(uid);
        lsn <= self.shard_lsns[(hash >> SHARD_SHIFT) as usize % SHARDS]
    }

    /// The highest sequence number the snapshot holds.
    pub(crate) fn max_lsn(&self) -> u64 {
        self.shard_lsns.iter().copied().max().unwrap_or(0)
    }

    /// The numbers per shard, in shard order.
    #[cfg(test)]
    pub(crate) fn shard_lsns(&self) -> &[u64] {
        &self.shard_lsns
    }
}

impl Store {
    /// The UID's shard and hash.
    #[inline]
    fn slot(&self, uid: &str) -> (&RwLock<Shard>, u64) {
        let hash = self.hasher.hash_one(uid);
        let shard = (hash >> SHARD_SHIFT) as usize % SHARDS;
        (&self.shards[shard], hash)
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
        let lsn = match shard.find(key, uid) {
            Some(at_record) => shard.records[at_record]
                .cells
                .check_log_apply(entries, at, log)?,
            None => {
                let mut cells = SubjectCells::default();
                let lsn = cells.check_log_apply(entries, at, log)?;
                shard.insert(&self.hasher, key, uid, cells);
                lsn
            }
        };
        shard.last_lsn = shard.last_lsn.max(lsn);
        Ok(())
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
        let (shard, key) = self.slot(uid);
        let mut shard = shard.write();
        let found = shard.find(key, uid);
        let mut fresh = SubjectCells::default();
        let cells = match found {
            Some(at_record) => &mut shard.records[at_record].cells,
            None => &mut fresh,
        };
        cells.check(entries, at)?;
        cells.apply(entries, at);
        if found.is_none() {
            shard.insert(&self.hasher, key, uid, fresh);
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

    /// Puts a subject's cells back, as loaded from a snapshot; `false`
    /// (and no change) if the subject is already there.
    pub(crate) fn restore(&self, uid: &str, cells: SubjectCells) -> bool {
        let (shard, key) = self.slot(uid);
        let mut shard = shard.write();
        if shard.find(key, uid).is_some() {
            return false;
        }
        shard.insert(&self.hasher, key, uid, cells);
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
    /// Returns the sequence number of the last logged batch applied to
    /// the shard, which the subjects visited hold, and no later one.
    pub(crate) fn for_each_in_shard(
        &self,
        shard: usize,
        mut visit: impl FnMut(&str, &SubjectCells),
    ) -> u64 {
        let shard = self.shards[shard].read();
        for record in &shard.records {
            visit(shard.uid_of(record), &record.cells);
        }
        shard.last_lsn
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
        let mut index = Index::with_len(2048);
        // Every record under one of three hashes, two of them with the same
        // tag and home slot: long probe runs, wrapping around the end.
        let hashes = [7 | 5 << TAG_SHIFT, 7 | 5 << TAG_SHIFT | 1 << 40, 2047];
        for record in 0..1000 {
            index.put(hashes[record % 3], record);
        }
        for record in 0..1000 {
            assert_eq!(
                index.find(hashes[record % 3], |r| r == record),
                Some(record)
            );
        }
        assert_eq!(index.find(8 | 9 << TAG_SHIFT, |_| true), None);
        assert_eq!(index.find(7 | 5 << TAG_SHIFT, |_| false), None);
        assert_eq!(Index::default().find(7, |_| true), None);
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
    fn a_one_cell_record_is_its_uid_and_its_cell() {
        // The memory budget (issue: performance) rests on these sizes.
        assert_eq!(size_of::<Uid>(), 16);
        assert_eq!(size_of::<crate::period::Cell>(), 80);
        assert_eq!(size_of::<Record>(), 96);
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
        let held = HeldBatches::new(store.seed(), shard_lsns(&store)).unwrap();
        assert_eq!(held.max_lsn(), 2000);
        // Every batch applied is held; a later batch of any subject is not.
        for (i, uid) in uids.iter().enumerate() {
            assert!(held.holds(uid, i as u64 + 1), "{uid}");
            assert!(!held.holds(uid, 2001));
        }
        // Per shard, not per store: an early subject's shard may end
        // before a late batch of another shard.
        let first_shard_end = held.shard_lsns().iter().copied().filter(|&l| l > 0).min();
        assert!(first_shard_end < Some(2000));
        assert!(HeldBatches::new(store.seed(), vec![0; 3]).is_none());
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
