//! One shard of the store: its subjects' records and the index that finds
//! them.
//!
//! Records are kept by size class, each class a dense vector: subjects
//! with one cell, with two (a counter and its class root: the commonest
//! shape), and with more, whose cells go to the heap. A subject's UID and
//! its one or two cells are thus one record, found with one index slot:
//! two memory accesses for a subject the caches do not hold.
//! A subject that gains a cell moves to the next class (`swap_remove`
//! keeps each vector dense; the record moved into its place is re-filed).

use std::hash::BuildHasher;

use super::SubjectHasher;
use super::cells::{Cells, CellsView, SubjectCells};
use crate::period::Cell;

/// The bits of a subject's hash kept in its index slot (the 8 below the
/// shard's): a probe compares a UID only when they match, about once in
/// 256 probes for another subject.
pub(super) const TAG_SHIFT: u32 = 48;

/// The bits of a slot holding the record's position plus one.
const POSITION_BITS: u32 = 22;

/// The most records of one size class a shard holds. With 256 shards
/// that is over a billion subjects per class, far beyond what fits in memory.
const MAX_RECORDS: usize = (1 << POSITION_BITS) - 2;

/// A record's size class: how many cells it keeps inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    One = 0,
    Two = 1,
    Spilled = 2,
}

/// Where a record is: its class and its position in that class's vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Place {
    class: Class,
    at: usize,
}

impl Place {
    /// The low 24 bits of an index slot: the class, and the position plus
    /// one (so that no filed record is 0).
    fn encode(self) -> u32 {
        (self.class as u32) << POSITION_BITS | (self.at as u32 + 1)
    }

    fn decode(bits: u32) -> Place {
        // A table rather than a `match`, which compiles to a few
        // comparisons and conditional moves on every lookup.
        const CLASSES: [Class; 4] = [Class::One, Class::Two, Class::Spilled, Class::Spilled];
        let class = CLASSES[(bits >> POSITION_BITS & 0b11) as usize];
        let at = (bits & ((1 << POSITION_BITS) - 1)) as usize - 1;
        Place { class, at }
    }
}

/// A subject found in the index: its slot there and its record's place.
#[derive(Clone, Copy, Debug)]
pub(super) struct Found {
    pub(super) slot: usize,
    pub(super) place: Place,
}

/// A shard's index: an open-addressed table with linear probing, each
/// slot 32 bits: 8 bits of the subject's hash (its tag) and its record's
/// [`Place`] (0: empty). A lookup reads one slot, usually, and then the
/// record; subjects are never removed, so probing needs no tombstones.
/// Growing re-hashes the records' UIDs: slots keep too few hash bits to be
/// moved without them, which is what keeps them at four bytes a subject.
#[derive(Default)]
struct Index {
    slots: Vec<u32>,
}

impl Index {
    /// The record (among those whose hash is `hash`'s) that `is_it` accepts.
    #[inline(always)]
    fn find(&self, hash: u64, mut is_it: impl FnMut(Place) -> bool) -> Option<Found> {
        let mask = self.slots.len().checked_sub(1)?;
        let tag = tag_of(hash);
        let mut at = hash as usize & mask;
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return None;
            }
            if slot >> 24 == tag {
                let place = Place::decode(slot & 0x00ff_ffff);
                if is_it(place) {
                    return Some(Found { slot: at, place });
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

    /// Files the record at `place` under `hash`; returns its slot.
    fn put(&mut self, hash: u64, place: Place) -> usize {
        let mask = self.slots.len() - 1;
        let mut at = hash as usize & mask;
        while self.slots[at] != 0 {
            at = (at + 1) & mask;
        }
        self.slots[at] = tag_of(hash) << 24 | place.encode();
        at
    }

    /// Points slot `slot` (holding a record filed under `hash`) at `place`.
    fn set(&mut self, slot: usize, hash: u64, place: Place) {
        self.slots[slot] = tag_of(hash) << 24 | place.encode();
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
pub(super) struct Uid([u8; 16]);

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

/// A subject with `N` cells, kept inline.
struct Packed<const N: usize> {
    uid: Uid,
    cells: [Cell; N],
}

/// A subject with more cells (or, decoded from a snapshot, none), on the heap.
struct Spilled {
    uid: Uid,
    cells: Vec<Cell>,
}

/// The subjects whose hash picks one shard, by size class, found through
/// the shard's [`Index`]; UIDs too long to keep inline sit end to end in
/// `long_uids` (subjects are never removed, so it only grows).
#[derive(Default)]
pub(super) struct Shard {
    index: Index,
    ones: Vec<Packed<1>>,
    twos: Vec<Packed<2>>,
    spilled: Vec<Spilled>,
    long_uids: String,
    /// The log sequence number of the last logged batch applied to a
    /// subject of this shard (0: none). Batches are logged and applied
    /// under the shard's lock, so the shard holds exactly the logged
    /// batches of its subjects up to this one: a snapshot records it per
    /// shard, rather than each subject carrying its own.
    pub(super) last_lsn: u64,
    /// One bit per index slot: the subjects changed since their state was
    /// last written to the log (write-behind, see `Store::write_back`).
    /// Empty until a subject is marked.
    changed: Vec<u64>,
}

impl Shard {
    /// The subject `uid`, whose hash is `hash`.
    #[inline(always)]
    pub(super) fn find(&self, hash: u64, uid: &str) -> Option<Found> {
        match Uid::inline(uid) {
            Some(wanted) => self.index.find(hash, |place| *self.uid_at(place) == wanted),
            None => self.index.find(hash, |place| {
                self.uid_at(place)
                    .arena_range()
                    .is_some_and(|range| &self.long_uids[range] == uid)
            }),
        }
    }

    /// Marks the subject filed in index slot `slot` as changed since its
    /// state was last written back.
    #[inline(always)]
    pub(super) fn mark_changed(&mut self, slot: usize) {
        let word = slot / 64;
        if word >= self.changed.len() {
            self.changed.resize(self.index.slots.len().div_ceil(64), 0);
        }
        self.changed[word] |= 1 << (slot % 64);
    }

    /// The number of subjects marked changed.
    pub(super) fn changed_count(&self) -> usize {
        self.changed
            .iter()
            .map(|word| word.count_ones() as usize)
            .sum()
    }

    /// The index slots of up to `limit` subjects marked changed.
    pub(super) fn changed_slots(&self, limit: usize) -> Vec<usize> {
        let mut slots = Vec::new();
        for (at, &word) in self.changed.iter().enumerate() {
            let mut bits = word;
            while bits != 0 && slots.len() < limit {
                slots.push(at * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
        slots
    }

    /// The UID and cells of the subject filed in index slot `slot`.
    pub(super) fn subject_in(&self, slot: usize) -> (&str, CellsView<'_>) {
        let place = Place::decode(self.index.slots[slot] & 0x00ff_ffff);
        (self.uid_str(self.uid_at(place)), self.cells_at(place))
    }

    /// Unmarks the subjects in index slots `slots`.
    pub(super) fn unmark(&mut self, slots: &[usize]) {
        for &slot in slots {
            self.changed[slot / 64] &= !(1 << (slot % 64));
        }
    }

    /// Whether index slot `slot` is marked changed.
    fn is_changed(&self, slot: usize) -> bool {
        self.changed
            .get(slot / 64)
            .is_some_and(|word| word & 1 << (slot % 64) != 0)
    }

    /// The number of subjects.
    pub(super) fn len(&self) -> usize {
        self.ones.len() + self.twos.len() + self.spilled.len()
    }

    #[inline(always)]
    fn uid_at(&self, place: Place) -> &Uid {
        match place.class {
            Class::One => &self.ones[place.at].uid,
            Class::Two => &self.twos[place.at].uid,
            Class::Spilled => &self.spilled[place.at].uid,
        }
    }

    /// The cells of the subject at `place`.
    pub(super) fn cells_at(&self, place: Place) -> CellsView<'_> {
        Cells(match place.class {
            Class::One => &self.ones[place.at].cells[..],
            Class::Two => &self.twos[place.at].cells[..],
            Class::Spilled => &self.spilled[place.at].cells[..],
        })
    }

    /// The cells of the subject at `place`, to change in place.
    #[inline(always)]
    pub(super) fn cells_mut(&mut self, place: Place) -> Cells<&mut [Cell]> {
        Cells(match place.class {
            Class::One => &mut self.ones[place.at].cells[..],
            Class::Two => &mut self.twos[place.at].cells[..],
            Class::Spilled => &mut self.spilled[place.at].cells[..],
        })
    }

    /// The UID a record keeps.
    fn uid_str<'a>(&'a self, uid: &'a Uid) -> &'a str {
        match uid.arena_range() {
            Some(range) => &self.long_uids[range],
            // Made from a `&str` of at most INLINE_UID bytes: always UTF-8.
            None => std::str::from_utf8(&uid.0[..usize::from(uid.0[15])]).unwrap_or_default(),
        }
    }

    /// Every subject with its cells, by class.
    pub(super) fn subjects(&self) -> impl Iterator<Item = (&str, CellsView<'_>)> {
        let ones = self.ones.iter().map(|r| (&r.uid, &r.cells[..]));
        let twos = self.twos.iter().map(|r| (&r.uid, &r.cells[..]));
        let spilled = self.spilled.iter().map(|r| (&r.uid, &r.cells[..]));
        ones.chain(twos)
            .chain(spilled)
            .map(|(uid, cells)| (self.uid_str(uid), Cells(cells)))
    }

    /// Adds a subject that [`Shard::find`] did not find; `hash` is its
    /// UID's under `hasher`, which also re-files the others (and their
    /// changed marks) if the index grows. Returns the subject's index slot.
    pub(super) fn insert(
        &mut self,
        hasher: &SubjectHasher,
        hash: u64,
        uid: &str,
        cells: SubjectCells,
    ) -> usize {
        if self.index.is_full(self.len()) {
            let mut grown = Index::with_len((self.index.slots.len() * 2).max(16));
            let mut changed = Vec::new();
            for (slot, &bits) in self.index.slots.iter().enumerate() {
                if bits == 0 {
                    continue;
                }
                let place = Place::decode(bits & 0x00ff_ffff);
                let moved_to = grown.put(hasher.hash_one(self.uid_str(self.uid_at(place))), place);
                if self.is_changed(slot) {
                    changed.resize(grown.slots.len().div_ceil(64), 0);
                    changed[moved_to / 64] |= 1 << (moved_to % 64);
                }
            }
            self.index = grown;
            self.changed = changed;
        }
        let uid = Uid::inline(uid).unwrap_or_else(|| {
            let offset =
                u32::try_from(self.long_uids.len()).expect("under 4 GiB of long UIDs in one shard");
            self.long_uids.push_str(uid);
            let len = u32::try_from(uid.len()).expect("a UID under 4 GiB");
            Uid::in_arena(offset, len)
        });
        let place = self.push(uid, cells.into_vec());
        self.index.put(hash, place)
    }

    /// Stores a record in the class its number of cells picks.
    fn push(&mut self, uid: Uid, cells: Vec<Cell>) -> Place {
        let place = match <[Cell; 1]>::try_from(cells) {
            Ok(cells) => {
                self.ones.push(Packed { uid, cells });
                Place {
                    class: Class::One,
                    at: self.ones.len() - 1,
                }
            }
            Err(cells) => match <[Cell; 2]>::try_from(cells) {
                Ok(cells) => {
                    self.twos.push(Packed { uid, cells });
                    Place {
                        class: Class::Two,
                        at: self.twos.len() - 1,
                    }
                }
                Err(mut cells) => {
                    cells.shrink_to_fit();
                    self.spilled.push(Spilled { uid, cells });
                    Place {
                        class: Class::Spilled,
                        at: self.spilled.len() - 1,
                    }
                }
            },
        };
        assert!(
            place.at < MAX_RECORDS,
            "fewer than 2^22 - 2 subjects of a size in one shard"
        );
        place
    }

    /// Runs `change` on the owned cells of the subject `found`, then files
    /// them in the class their new number picks (also if `change` fails,
    /// when they are unchanged). For changes that add cells.
    pub(super) fn regrow<R, E>(
        &mut self,
        hasher: &SubjectHasher,
        found: Found,
        change: impl FnOnce(&mut SubjectCells) -> Result<R, E>,
    ) -> Result<R, E> {
        let (uid, cells) = self.remove(hasher, found.place);
        let mut cells = SubjectCells::new(cells);
        let result = change(&mut cells);
        let place = self.push(uid, cells.into_vec());
        // The slot keeps the subject's tag: only its place changes.
        let tag = u64::from(self.index.slots[found.slot] >> 24) << TAG_SHIFT;
        self.index.set(found.slot, tag, place);
        result
    }

    /// Takes the record at `place` out of its class's vector. The vector's
    /// last record moves into the gap, and its slot is pointed there; the
    /// taken record's slot is left for the caller to re-point.
    fn remove(&mut self, hasher: &SubjectHasher, place: Place) -> (Uid, Vec<Cell>) {
        let (taken, last) = match place.class {
            Class::One => {
                let last = self.ones.len() - 1;
                let r = self.ones.swap_remove(place.at);
                ((r.uid, Vec::from(r.cells)), last)
            }
            Class::Two => {
                let last = self.twos.len() - 1;
                let r = self.twos.swap_remove(place.at);
                ((r.uid, Vec::from(r.cells)), last)
            }
            Class::Spilled => {
                let last = self.spilled.len() - 1;
                let r = self.spilled.swap_remove(place.at);
                ((r.uid, r.cells), last)
            }
        };
        if place.at != last {
            let moved_from = Place {
                class: place.class,
                at: last,
            };
            let moved = *self.uid_at(place);
            let hash = hasher.hash_one(self.uid_str(&moved));
            let found = self
                .index
                .find(hash, |filed| filed == moved_from)
                .expect("every record is filed in the index");
            self.index.set(found.slot, hash, place);
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_keeps_subjects_whose_hash_bits_coincide_apart() {
        let mut index = Index::with_len(2048);
        // Every record under one of three hashes, two of them with the same
        // tag and home slot: long probe runs, wrapping around the end.
        let hashes = [7 | 5 << TAG_SHIFT, 7 | 5 << TAG_SHIFT | 1 << 40, 2047];
        let place = |at| Place {
            class: [Class::One, Class::Two, Class::Spilled][at % 3],
            at,
        };
        for record in 0..1000 {
            index.put(hashes[record % 3], place(record));
        }
        for record in 0..1000 {
            let found = index.find(hashes[record % 3], |p| p == place(record));
            assert_eq!(found.map(|f| f.place), Some(place(record)));
        }
        assert!(index.find(8 | 9 << TAG_SHIFT, |_| true).is_none());
        assert!(index.find(7 | 5 << TAG_SHIFT, |_| false).is_none());
        assert!(Index::default().find(7, |_| true).is_none());
    }

    #[test]
    fn places_encode_and_decode() {
        for class in [Class::One, Class::Two, Class::Spilled] {
            for at in [0, 1, 12345, MAX_RECORDS - 1] {
                let place = Place { class, at };
                assert_eq!(Place::decode(place.encode()), place);
                assert_ne!(place.encode(), 0);
                assert!(place.encode() < 1 << 24);
            }
        }
    }

    #[test]
    fn records_are_their_uid_and_their_cells() {
        // The memory budget (issue: performance) rests on these sizes.
        assert_eq!(size_of::<Uid>(), 16);
        assert_eq!(size_of::<Cell>(), 64);
        assert_eq!(size_of::<Packed<1>>(), 80);
        assert_eq!(size_of::<Packed<2>>(), 144);
    }
}
