//! Up to two buckets packed in one word beside their amounts: the shapes
//! of every cell written in one day, and of most others.

use std::num::NonZeroU64;

use super::bucket::{Bucket, MONTH_TAG, NO_BUCKET};
use crate::calendar::{SECS_PER_DAY, month_of_day};
use crate::period::Amount;

/// The shapes of up to two buckets that [`Packed`] holds: the top 3 bits
/// of its word (never 0, which leaves [`Buckets`] a niche for its tag).
pub(super) mod shape {
    pub(in crate::period::cell) const EMPTY: u64 = 1;
    /// One month bucket: its month index (bits 32..48) and `lastUpdated`
    /// (bits 0..32).
    pub(in crate::period::cell) const MONTH: u64 = 2;
    /// One day bucket: its day number (bits 32..48) and `lastUpdated`.
    pub(in crate::period::cell) const DAY: u64 = 3;
    /// A month bucket and a day bucket of that month, the common shape:
    /// the day number (bits 40..56), the month's `lastUpdated` as an
    /// offset from the day's start, biased by [`super::MONTH_OFFSET_BIAS`]
    /// (bits 17..40), and the day's as seconds into it (bits 0..17). The
    /// month is the day's.
    pub(in crate::period::cell) const MONTH_DAY: u64 = 4;
    pub(in crate::period::cell) const SHIFT: u32 = 61;
}

/// Added to a month's `lastUpdated` offset from a day of it (within 31
/// days either way) to store it in 23 bits.
pub(super) const MONTH_OFFSET_BIAS: i64 = 1 << 22;

/// Up to two buckets in one word beside their amounts: a cell's buckets
/// in the shapes of [`shape`], which are those of every cell written in
/// one day, and of most others. Their keys and `lastUpdated` values are
/// thus 8 bytes where two [`Bucket`]s spend 16, and a cell is 64 bytes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Packed {
    pub(super) word: NonZeroU64,
    pub(super) amounts: [Amount; 2],
}

/// The word of a packed shape: never 0, as every shape is.
pub(super) fn packed_word(shape: u64, fields: u64) -> NonZeroU64 {
    NonZeroU64::new(shape << shape::SHIFT | fields).unwrap_or(NonZeroU64::MIN)
}

impl Packed {
    pub(super) const EMPTY: Packed = Packed {
        word: NonZeroU64::new(shape::EMPTY << shape::SHIFT).unwrap(),
        amounts: [Amount { count: 0, value: 0 }; 2],
    };

    pub(super) fn shape(&self) -> u64 {
        self.word.get() >> shape::SHIFT
    }

    /// The day of a [`shape::MONTH_DAY`] word.
    pub(super) fn day(&self) -> u32 {
        (self.word.get() >> 40 & 0xffff) as u32
    }

    /// Whether the buckets are a month and day `day` of it.
    #[inline(always)]
    pub(super) fn is_month_and_day(&self, day: u32) -> bool {
        self.word.get() >> 40 == (shape::MONTH_DAY << (shape::SHIFT - 40) | u64::from(day))
    }

    /// `buckets` packed, if they have one of the shapes.
    pub(super) fn pack(buckets: &[Bucket]) -> Option<Packed> {
        let is_month = |b: &Bucket| b.key & MONTH_TAG != 0;
        let (shape, fields) = match buckets {
            [] => (shape::EMPTY, 0),
            [one] => {
                let key = u64::from(one.key & !MONTH_TAG);
                if key > 0xffff {
                    return None;
                }
                let shape = if is_month(one) {
                    shape::MONTH
                } else {
                    shape::DAY
                };
                (shape, key << 32 | u64::from(one.last_updated))
            }
            [month, day] if is_month(month) && !is_month(day) => {
                if day.key > 0xffff || month_of_day(i64::from(day.key)) != month.key & !MONTH_TAG {
                    return None;
                }
                let day_start = i64::from(day.key) * SECS_PER_DAY;
                let month_offset = i64::from(month.last_updated) - day_start + MONTH_OFFSET_BIAS;
                let day_offset = i64::from(day.last_updated) - day_start;
                if !(0..1 << 23).contains(&month_offset) || !(0..1 << 17).contains(&day_offset) {
                    return None;
                }
                let fields =
                    u64::from(day.key) << 40 | (month_offset as u64) << 17 | day_offset as u64;
                (shape::MONTH_DAY, fields)
            }
            _ => return None,
        };
        let mut amounts = [Amount::default(); 2];
        for (amount, bucket) in amounts.iter_mut().zip(buckets) {
            *amount = bucket.amount;
        }
        Some(Packed {
            word: packed_word(shape, fields),
            amounts,
        })
    }

    /// The buckets, and how many there are.
    pub(super) fn unpack(&self) -> ([Bucket; 2], usize) {
        let word = self.word.get();
        let key = (word >> 32 & 0xffff) as u32;
        let low = word as u32;
        let bucket = |key, last_updated, amount| Bucket {
            key,
            last_updated,
            amount,
        };
        let [first, second] = self.amounts;
        match self.shape() {
            shape::MONTH => ([bucket(key | MONTH_TAG, low, first), NO_BUCKET], 1),
            shape::DAY => ([bucket(key, low, first), NO_BUCKET], 1),
            shape::MONTH_DAY => {
                let day = self.day();
                let day_start = i64::from(day) * SECS_PER_DAY;
                let month_offset = (word >> 17 & ((1 << 23) - 1)) as i64 - MONTH_OFFSET_BIAS;
                let month_secs = u32::try_from(day_start + month_offset).unwrap_or_default();
                let day_secs =
                    u32::try_from(day_start + (word & ((1 << 17) - 1)) as i64).unwrap_or_default();
                let month = month_of_day(i64::from(day)) | MONTH_TAG;
                (
                    [
                        bucket(month, month_secs, first),
                        bucket(day, day_secs, second),
                    ],
                    2,
                )
            }
            _ => ([NO_BUCKET; 2], 0),
        }
    }

    /// Adds `delta` at `into_day` seconds into the day of a
    /// [`shape::MONTH_DAY`] word, to both its buckets: their `lastUpdated`
    /// offsets move there if it is later. Each offset is compared in place.
    #[inline(always)]
    pub(super) fn add_month_day(&mut self, delta: Amount, into_day: u32) {
        const DAY_BITS: u64 = (1 << 17) - 1;
        const MONTH_BITS: u64 = ((1 << 23) - 1) << 17;
        for amount in &mut self.amounts {
            *amount = amount.wrapping_add(delta);
        }
        let into_day = u64::from(into_day);
        let word = self.word.get();
        let day_offset = (word & DAY_BITS).max(into_day);
        let month_offset = (word & MONTH_BITS).max((into_day + MONTH_OFFSET_BIAS as u64) << 17);
        let fields = word & !(DAY_BITS | MONTH_BITS) | month_offset | day_offset;
        self.word = NonZeroU64::new(fields).unwrap_or(self.word);
    }
}
