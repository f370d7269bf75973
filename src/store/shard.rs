//! One shard of the store: its subjects' records, by size class.
//!
//! Each size class is a [`Table`] keeping its records in its slots:
//! subjects with one cell, with two (a counter and its class root: the
//! commonest shape), and with more, whose cells go to the heap. A
//! subject's UID and its one or two cells are thus one record, found
//! through the table's control bytes: one memory access for a subject the
//! caches do not hold. A lookup tries the tables in turn (two cells, one,
//! more); an empty table costs a comparison, and a table without the
//! subject its control bytes only.
//! A subject that gains a cell moves to the next class's table.

use std::hash::BuildHasher;

use super::SubjectHasher;
use super::cells::{Cells, CellsView, SubjectCells};
use super::log::ShardLog;
use super::table::{Control, Record, Table};
use crate::period::Cell;

/// A record's size class: how many cells it keeps inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    One,
    Two,
    Spilled,
}

/// The size classes, in the order lookups try them.
const CLASSES: [Class; 3] = [Class::Two, Class::One, Class::Spilled];

/// Where a subject's record is: its class and its slot in that class's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Place {
    class: Class,
    at: usize,
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

impl<const N: usize> Record for Packed<N> {
    fn vacant() -> Self {
        Packed {
            uid: Uid([0; 16]),
            cells: std::array::from_fn(|_| Cell::default()),
        }
    }
}

/// A subject with more cells (or, decoded from a snapshot, none), on the heap.
struct Spilled {
    uid: Uid,
    cells: Vec<Cell>,
}

impl Record for Spilled {
    fn vacant() -> Self {
        Spilled {
            uid: Uid([0; 16]),
            cells: Vec::new(),
        }
    }
}

/// The subjects whose hash picks one shard, in a table per size class;
/// UIDs too long to keep inline sit end to end in `long_uids` (subjects
/// are never removed, so it only grows).
#[derive(Default)]
pub(super) struct Shard {
    ones: Table<Packed<1>>,
    twos: Table<Packed<2>>,
    spilled: Table<Spilled>,
    long_uids: String,
    /// What the shard keeps for the log.
    pub(super) log: ShardLog,
}

/// The UID `uid` keeps, its bytes in `long_uids` if it is long.
fn uid_str<'a>(long_uids: &'a str, uid: &'a Uid) -> &'a str {
    match uid.arena_range() {
        Some(range) => &long_uids[range],
        // Made from a `&str` of at most INLINE_UID bytes: always UTF-8.
        None => std::str::from_utf8(&uid.0[..usize::from(uid.0[15])]).unwrap_or_default(),
    }
}

impl Shard {
    /// The subject `uid`, whose hash is `hash`.
    #[inline(always)]
    pub(super) fn find(&self, hash: u64, uid: &str) -> Option<Place> {
        match Uid::inline(uid) {
            Some(wanted) => self.find_by(hash, |filed| *filed == wanted),
            None => self.find_by(hash, |filed| {
                filed
                    .arena_range()
                    .is_some_and(|range| &self.long_uids[range] == uid)
            }),
        }
    }

    /// The subject with hash `hash` whose UID `is_it` accepts, trying the
    /// classes in the order of [`CLASSES`].
    #[inline(always)]
    fn find_by(&self, hash: u64, is_it: impl Fn(&Uid) -> bool) -> Option<Place> {
        let place = |class| move |at| Place { class, at };
        (self
            .twos
            .find(hash, |r| is_it(&r.uid))
            .map(place(Class::Two)))
        .or_else(|| (self.ones.find(hash, |r| is_it(&r.uid))).map(place(Class::One)))
        .or_else(|| (self.spilled.find(hash, |r| is_it(&r.uid))).map(place(Class::Spilled)))
    }

    fn control(&self, class: Class) -> &Control {
        match class {
            Class::One => &self.ones.control,
            Class::Two => &self.twos.control,
            Class::Spilled => &self.spilled.control,
        }
    }

    fn control_mut(&mut self, class: Class) -> &mut Control {
        match class {
            Class::One => &mut self.ones.control,
            Class::Two => &mut self.twos.control,
            Class::Spilled => &mut self.spilled.control,
        }
    }

    /// Marks the subject at `place` as changed since its state was last
    /// written back.
    #[inline(always)]
    pub(super) fn mark_changed(&mut self, place: Place) {
        self.control_mut(place.class).mark(place.at);
    }

    /// The number of subjects marked changed.
    pub(super) fn changed_count(&self) -> usize {
        let marked = |class| self.control(class).marked_count();
        CLASSES.into_iter().map(marked).sum()
    }

    /// The places of up to `limit` subjects marked changed.
    pub(super) fn changed_places(&self, limit: usize) -> Vec<Place> {
        let mut places = Vec::new();
        for class in CLASSES {
            let marked = self.control(class).marked(limit - places.len());
            places.extend(marked.into_iter().map(|at| Place { class, at }));
        }
        places
    }

    /// The UID and cells of the subject at `place`.
    pub(super) fn subject_in(&self, place: Place) -> (&str, CellsView<'_>) {
        let uid = uid_str(&self.long_uids, self.uid_at(place));
        (uid, self.cells_at(place))
    }

    /// Unmarks the subjects at `places`.
    pub(super) fn unmark(&mut self, places: &[Place]) {
        for place in places {
            self.control_mut(place.class).unmark(place.at);
        }
    }

    /// The number of subjects.
    pub(super) fn len(&self) -> usize {
        CLASSES
            .into_iter()
            .map(|class| self.control(class).len())
            .sum()
    }

    fn uid_at(&self, place: Place) -> &Uid {
        match place.class {
            Class::One => &self.ones.get(place.at).uid,
            Class::Two => &self.twos.get(place.at).uid,
            Class::Spilled => &self.spilled.get(place.at).uid,
        }
    }

    /// The cells of the subject at `place`.
    pub(super) fn cells_at(&self, place: Place) -> CellsView<'_> {
        Cells(match place.class {
            Class::One => &self.ones.get(place.at).cells[..],
            Class::Two => &self.twos.get(place.at).cells[..],
            Class::Spilled => &self.spilled.get(place.at).cells[..],
        })
    }

    /// The cells of the subject at `place`, to change in place.
    #[inline(always)]
    pub(super) fn cells_mut(&mut self, place: Place) -> Cells<&mut [Cell]> {
        Cells(match place.class {
            Class::One => &mut self.ones.get_mut(place.at).cells[..],
            Class::Two => &mut self.twos.get_mut(place.at).cells[..],
            Class::Spilled => &mut self.spilled.get_mut(place.at).cells[..],
        })
    }

    /// Every subject with its cells, by class.
    pub(super) fn subjects(&self) -> impl Iterator<Item = (&str, CellsView<'_>)> {
        let ones = self.ones.records().map(|(_, r)| (&r.uid, &r.cells[..]));
        let twos = self.twos.records().map(|(_, r)| (&r.uid, &r.cells[..]));
        let spilled = self.spilled.records().map(|(_, r)| (&r.uid, &r.cells[..]));
        ones.chain(twos)
            .chain(spilled)
            .map(|(uid, cells)| (uid_str(&self.long_uids, uid), Cells(cells)))
    }

    /// Adds a subject that [`Shard::find`] did not find; `hash` is its
    /// UID's under `hasher`, which also re-files the others (and their
    /// changed marks) if its table grows. Returns the subject's place.
    pub(super) fn insert(
        &mut self,
        hasher: &SubjectHasher,
        hash: u64,
        uid: &str,
        cells: SubjectCells,
    ) -> Place {
        let uid = Uid::inline(uid).unwrap_or_else(|| {
            let offset =
                u32::try_from(self.long_uids.len()).expect("under 4 GiB of long UIDs in one shard");
            self.long_uids.push_str(uid);
            let len = u32::try_from(uid.len()).expect("a UID under 4 GiB");
            Uid::in_arena(offset, len)
        });
        self.file(hasher, hash, uid, cells.into_vec())
    }

    /// Makes room for subjects with these numbers of cells, each table
    /// growing at most once (see [`Table::reserve`]).
    pub(super) fn reserve(
        &mut self,
        hasher: &SubjectHasher,
        cell_counts: impl Iterator<Item = usize>,
    ) {
        let mut by_class = [0; 3];
        for count in cell_counts {
            by_class[match count {
                1 => 0,
                2 => 1,
                _ => 2,
            }] += 1;
        }
        let long_uids = &self.long_uids;
        let hash_of = |uid: &Uid| hasher.hash_one(uid_str(long_uids, uid));
        let [ones, twos, spilled] = by_class;
        self.ones.reserve(ones, |r| hash_of(&r.uid));
        self.twos.reserve(twos, |r| hash_of(&r.uid));
        self.spilled.reserve(spilled, |r| hash_of(&r.uid));
    }

    /// Files a record in the table its number of cells picks.
    fn file(&mut self, hasher: &SubjectHasher, hash: u64, uid: Uid, cells: Vec<Cell>) -> Place {
        let long_uids = &self.long_uids;
        let hash_of = |uid: &Uid| hasher.hash_one(uid_str(long_uids, uid));
        match <[Cell; 1]>::try_from(cells) {
            Ok(cells) => Place {
                class: Class::One,
                at: (self.ones).insert(hash, Packed { uid, cells }, |r| hash_of(&r.uid)),
            },
            Err(cells) => match <[Cell; 2]>::try_from(cells) {
                Ok(cells) => Place {
                    class: Class::Two,
                    at: (self.twos).insert(hash, Packed { uid, cells }, |r| hash_of(&r.uid)),
                },
                Err(mut cells) => {
                    cells.shrink_to_fit();
                    let record = Spilled { uid, cells };
                    Place {
                        class: Class::Spilled,
                        at: (self.spilled).insert(hash, record, |r| hash_of(&r.uid)),
                    }
                }
            },
        }
    }

    /// Runs `change` on the owned cells of the subject at `place` (whose
    /// hash is `hash`), then files them in the class their new number
    /// picks (also if `change` fails, when they are unchanged), its
    /// changed mark with it. For changes that add cells. Returns the
    /// subject's new place, and what `change` returned.
    pub(super) fn regrow<R, E>(
        &mut self,
        hasher: &SubjectHasher,
        hash: u64,
        place: Place,
        change: impl FnOnce(&mut SubjectCells) -> Result<R, E>,
    ) -> (Place, Result<R, E>) {
        let (uid, cells, marked) = match place.class {
            Class::One => {
                let (r, marked) = self.ones.remove(place.at);
                (r.uid, Vec::from(r.cells), marked)
            }
            Class::Two => {
                let (r, marked) = self.twos.remove(place.at);
                (r.uid, Vec::from(r.cells), marked)
            }
            Class::Spilled => {
                let (r, marked) = self.spilled.remove(place.at);
                (r.uid, r.cells, marked)
            }
        };
        let mut cells = SubjectCells::new(cells);
        let result = change(&mut cells);
        let place = self.file(hasher, hash, uid, cells.into_vec());
        if marked {
            self.mark_changed(place);
        }
        (place, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_their_uid_and_their_cells() {
        // The memory budget rests on these sizes.
        assert_eq!(size_of::<Uid>(), 16);
        assert_eq!(size_of::<Cell>(), 64);
        assert_eq!(size_of::<Packed<1>>(), 80);
        assert_eq!(size_of::<Packed<2>>(), 144);
    }
}
