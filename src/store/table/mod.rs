//! An open-addressed table that keeps its records in its slots, found
//! through one control byte per slot.
//!
//! A lookup reads the control bytes from the record's home slot on, a
//! byte array small enough to stay in the caches (about 1.2 bytes a
//! record), and then the one record whose byte carries its hash's tag:
//! for a subject the caches do not hold, one miss to memory rather than
//! two (an index slot, then the record it points at).
//!
//! Its capacity is any multiple of 16, and it grows by a quarter when it
//! would be more than seven eighths full (removed records' slots
//! included), so that a table of records is 70–88% full whatever its
//! size: a power-of-two table of records would swing between half full
//! and, if kept as full as that, probes too long.
//!
//! Probing is linear and wraps around; removal leaves a tombstone
//! (unless the next slot is empty), so that the records after it stay
//! found. Growing re-hashes every record, as control bytes keep too few
//! of their hash's bits to place them anew, and moves them within the
//! grown vectors rather than into new ones: `realloc` extends a large
//! vector without copying it or touching its pages again.

/// A slot that never held a record: a probe ends here.
const EMPTY: u8 = 0;

/// A slot whose record was removed: a probe goes on past it.
const REMOVED: u8 = 1;

/// A slot whose record is yet to be moved, while the table is rebuilt.
const PENDING: u8 = 2;

/// The bit set in the control byte of a slot holding a record, whose
/// other seven bits are its hash's tag.
const FULL: u8 = 0x80;

/// The bits of a hash that give its tag (7 bits, from 48 up: below the
/// 8 that pick the store's shard, above the 32 that pick the home slot).
const TAG_SHIFT: u32 = 48;

/// The smallest capacity, and the multiple every capacity is of: the
/// slots of one [`Segments`] segment.
const MIN_CAPACITY: usize = SEGMENT;

/// The slots in one segment of a table's records (a power of two).
const SEGMENT: usize = 64;

/// A table's records, in segments of [`SEGMENT`] slots each. Growing adds
/// segments and frees none, so a table never leaves the freed blocks of
/// its smaller sizes behind in the allocator's heap (which a vector grown
/// by `realloc` does below the mmap threshold, and which stay resident):
/// every segment of a kind of record is the same size, and lives as long
/// as its table.
struct Segments<R> {
    segments: Vec<Box<[R]>>,
}

impl<R: Record> Segments<R> {
    #[inline(always)]
    fn get(&self, at: usize) -> &R {
        &self.segments[at / SEGMENT][at % SEGMENT]
    }

    #[inline(always)]
    fn get_mut(&mut self, at: usize) -> &mut R {
        &mut self.segments[at / SEGMENT][at % SEGMENT]
    }

    /// Adds vacant segments up to `capacity` slots (a multiple of [`SEGMENT`]).
    fn grow_to(&mut self, capacity: usize) {
        let segments = capacity / SEGMENT;
        self.segments.reserve_exact(segments - self.segments.len());
        while self.segments.len() < segments {
            let segment: Vec<R> = (0..SEGMENT).map(|_| R::vacant()).collect();
            self.segments.push(segment.into_boxed_slice());
        }
    }

    /// Swaps the records in slots `one` and `other`.
    fn swap(&mut self, one: usize, other: usize) {
        let (low, high) = (one.min(other), one.max(other));
        let (low_segment, high_segment) = (low / SEGMENT, high / SEGMENT);
        if low_segment == high_segment {
            self.segments[low_segment].swap(low % SEGMENT, high % SEGMENT);
        } else {
            let (below, above) = self.segments.split_at_mut(high_segment);
            std::mem::swap(
                &mut below[low_segment][low % SEGMENT],
                &mut above[0][high % SEGMENT],
            );
        }
    }

    fn iter(&self) -> impl Iterator<Item = &R> {
        self.segments.iter().flat_map(|segment| segment.iter())
    }
}

/// What a table keeps: a record, and the placeholder that fills a slot
/// without one.
pub(super) trait Record {
    /// The placeholder of an empty slot.
    fn vacant() -> Self;
}

/// The control byte of a slot holding a record with hash `hash`.
#[inline(always)]
fn tag_of(hash: u64) -> u8 {
    (hash >> TAG_SHIFT) as u8 | FULL
}

/// The slot a probe for `hash` starts at, in a table of `capacity` slots:
/// the low 32 bits of the hash scaled to the capacity (which need not be
/// a power of two).
#[inline(always)]
fn home(hash: u64, capacity: usize) -> usize {
    (((hash & u64::from(u32::MAX)) * capacity as u64) >> 32) as usize
}

/// A table's slots' control bytes and counts, and which of its records
/// are marked changed: the part of a table that does not depend on the
/// record type.
#[derive(Default)]
pub(super) struct Control {
    bytes: Vec<u8>,
    len: usize,
    removed: usize,
    /// One bit per slot, set for records marked changed (write-behind,
    /// see `Store::write_back`). Empty until a record is marked.
    changed: Vec<u64>,
}

impl Control {
    /// The number of records.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Marks the record in slot `at` changed.
    #[inline(always)]
    pub(super) fn mark(&mut self, at: usize) {
        if at / 64 >= self.changed.len() {
            self.changed.resize(self.bytes.len().div_ceil(64), 0);
        }
        self.changed[at / 64] |= 1 << (at % 64);
    }

    /// Unmarks the record in slot `at`.
    pub(super) fn unmark(&mut self, at: usize) {
        if let Some(word) = self.changed.get_mut(at / 64) {
            *word &= !(1 << (at % 64));
        }
    }

    /// Swaps the marks of slots `one` and `other`.
    fn swap_marks(&mut self, one: usize, other: usize) {
        let (marked_one, marked_other) = (self.is_marked(one), self.is_marked(other));
        if marked_one != marked_other {
            for at in [one, other] {
                self.changed[at / 64] ^= 1 << (at % 64);
            }
        }
    }

    /// Whether the record in slot `at` is marked changed.
    pub(super) fn is_marked(&self, at: usize) -> bool {
        self.changed
            .get(at / 64)
            .is_some_and(|word| word & 1 << (at % 64) != 0)
    }

    /// The number of records marked changed.
    pub(super) fn marked_count(&self) -> usize {
        self.changed.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The slots of up to `limit` records marked changed, in slot order.
    pub(super) fn marked(&self, limit: usize) -> Vec<usize> {
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

    /// The slot of the record with hash `hash` that `is_it` accepts
    /// (given its slot).
    #[inline(always)]
    fn find(&self, hash: u64, mut is_it: impl FnMut(usize) -> bool) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let capacity = self.bytes.len();
        let tag = tag_of(hash);
        let mut at = home(hash, capacity);
        loop {
            let control = self.bytes[at];
            if control == EMPTY {
                return None;
            }
            if control == tag && is_it(at) {
                return Some(at);
            }
            at += 1;
            if at == capacity {
                at = 0;
            }
        }
    }

    /// The first slot without a record from `hash`'s home on. There is
    /// one: a table is never full.
    fn vacant_slot(&self, hash: u64) -> usize {
        let capacity = self.bytes.len();
        let mut at = home(hash, capacity);
        while self.bytes[at] & FULL != 0 {
            at += 1;
            if at == capacity {
                at = 0;
            }
        }
        at
    }

    /// Files a record with hash `hash` in a vacant slot; returns the slot.
    fn occupy(&mut self, hash: u64) -> usize {
        let at = self.vacant_slot(hash);
        if self.bytes[at] == REMOVED {
            self.removed -= 1;
        }
        self.bytes[at] = tag_of(hash);
        self.len += 1;
        at
    }

    /// Empties slot `at`, and unmarks it.
    fn vacate(&mut self, at: usize) {
        let next = if at + 1 == self.bytes.len() {
            0
        } else {
            at + 1
        };
        // No probe goes past a slot followed by an empty one.
        if self.bytes[next] == EMPTY {
            self.bytes[at] = EMPTY;
        } else {
            self.bytes[at] = REMOVED;
            self.removed += 1;
        }
        self.len -= 1;
        self.unmark(at);
    }

    /// Whether filing one more record needs the table rebuilt: it is kept
    /// at most seven eighths full, counting removed records' slots.
    fn is_full(&self) -> bool {
        (self.len + self.removed + 1) * 8 > self.bytes.len() * 7
    }

    /// The capacity to rebuild to for one more record: the same if
    /// clearing removed slots leaves it at most three quarters full (so
    /// that an eighth of it is free again), else a quarter more, as often
    /// as needed.
    fn rebuilt_capacity(&self) -> usize {
        let wanted = self.len + 1;
        if self.bytes.len() >= MIN_CAPACITY && wanted * 4 <= self.bytes.len() * 3 {
            return self.bytes.len();
        }
        let mut capacity = self.bytes.len().max(MIN_CAPACITY);
        while wanted * 8 > capacity * 7 {
            capacity = (capacity + capacity / 4).next_multiple_of(MIN_CAPACITY);
        }
        capacity
    }
}

/// Records of type `R`, kept in the slots of an open-addressed table.
pub(super) struct Table<R> {
    pub(super) control: Control,
    records: Segments<R>,
}

impl<R> Default for Table<R> {
    /// An empty table, which allocates nothing until its first record.
    fn default() -> Self {
        Table {
            control: Control::default(),
            records: Segments {
                segments: Vec::new(),
            },
        }
    }
}

impl<R: Record> Table<R> {
    /// The slot of the record with hash `hash` that `is_it` accepts.
    #[inline(always)]
    pub(super) fn find(&self, hash: u64, mut is_it: impl FnMut(&R) -> bool) -> Option<usize> {
        self.control.find(hash, |at| is_it(self.records.get(at)))
    }

    /// The record in slot `at`.
    #[inline(always)]
    pub(super) fn get(&self, at: usize) -> &R {
        self.records.get(at)
    }

    /// The record in slot `at`, to change.
    #[inline(always)]
    pub(super) fn get_mut(&mut self, at: usize) -> &mut R {
        self.records.get_mut(at)
    }

    /// Every record with its slot.
    pub(super) fn records(&self) -> impl Iterator<Item = (usize, &R)> {
        let full = self.control.bytes.iter().map(|&byte| byte & FULL != 0);
        self.records
            .iter()
            .enumerate()
            .zip(full)
            .filter_map(|(record, full)| full.then_some(record))
    }

    /// Files `record`, whose hash is `hash`; returns its slot. If the table
    /// is rebuilt, `hash_of` gives the hash of each record filed (and the
    /// marks move with them).
    pub(super) fn insert(&mut self, hash: u64, record: R, hash_of: impl Fn(&R) -> u64) -> usize {
        if self.control.is_full() {
            self.rebuild(self.control.rebuilt_capacity(), hash_of);
        }
        let at = self.control.occupy(hash);
        *self.records.get_mut(at) = record;
        at
    }

    /// Makes room for `additional` more records, so that filing them
    /// rebuilds the table at most once, here (to the capacity the same
    /// inserts would have grown it to): for loading many records at once.
    pub(super) fn reserve(&mut self, additional: usize, hash_of: impl Fn(&R) -> u64) {
        let control = &self.control;
        if (control.len + control.removed + additional) * 8 <= control.bytes.len() * 7 {
            return;
        }
        let wanted = control.len + additional;
        let mut capacity = control.bytes.len().max(MIN_CAPACITY);
        while wanted * 8 > capacity * 7 {
            capacity = (capacity + capacity / 4).next_multiple_of(MIN_CAPACITY);
        }
        self.rebuild(capacity, hash_of);
    }

    /// Takes the record out of slot `at`, and whether it was marked.
    pub(super) fn remove(&mut self, at: usize) -> (R, bool) {
        let marked = self.control.is_marked(at);
        self.control.vacate(at);
        (
            std::mem::replace(self.records.get_mut(at), R::vacant()),
            marked,
        )
    }

    /// Re-files every record in a table of `capacity` slots, in place:
    /// the vectors are extended (`realloc`, which keeps their pages), then
    /// each record is swapped to where a probe under the new capacity
    /// finds it, with whatever is there: an empty slot's placeholder, or
    /// a record not yet moved, which is moved next. Slots a moved record's probe passes are all filled
    /// by moved records, and stay so: every record stays found.
    fn rebuild(&mut self, capacity: usize, hash_of: impl Fn(&R) -> u64) {
        let control = &mut self.control;
        for byte in &mut control.bytes {
            *byte = if *byte & FULL != 0 { PENDING } else { EMPTY };
        }
        control.removed = 0;
        let more = capacity - control.bytes.len();
        control.bytes.reserve_exact(more);
        control.bytes.resize(capacity, EMPTY);
        if !control.changed.is_empty() {
            let words = capacity.div_ceil(64);
            control.changed.reserve_exact(words - control.changed.len());
            control.changed.resize(words, 0);
        }
        self.records.grow_to(capacity);
        for from in 0..capacity {
            // Slot `from` holds a record not yet moved: move it, and then
            // the one it evicts (swapped into `from`), until none is.
            while self.control.bytes[from] == PENDING {
                let hash = hash_of(self.records.get(from));
                self.control.bytes[from] = EMPTY;
                let to = self.control.vacant_slot(hash);
                let evicted = self.control.bytes[to] == PENDING;
                self.control.bytes[to] = tag_of(hash);
                if to != from {
                    self.records.swap(from, to);
                    self.control.swap_marks(from, to);
                    if evicted {
                        self.control.bytes[from] = PENDING;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
