//! A cell — one subject's data for one counter — and its month and day
//! buckets, laid out for the increment hot path:
//!
//! - Only buckets that received data are stored, sorted by key, newest
//!   first (months, whose keys carry [`MONTH_TAG`], before days), so the
//!   current month and day are found at the front.
//! - A cell's buckets are packed into the cell while they are up to two
//!   in a shape [`Packed`] holds (this month and a day of it, the shape
//!   of every cell written in one day; or one month; or one day): their
//!   keys and `lastUpdated` values in one word, beside their amounts, so
//!   that a cell is 64 bytes. Any other buckets live on the heap.
//! - An increment locates its buckets once ([`Cell::plan`], which also
//!   checks every addition against overflow) and then writes them
//!   ([`Cell::commit`]) without searching again.
//!
//! On disk a cell keeps the plain layout of `docs/format.md`; decoding
//! converts and checks it.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Amount, DayKey, EventTime, Horizon, MonthKey, Period};
use std::num::NonZeroU64;

use crate::calendar::{END_EVENT_SECS, MIN_EVENT_SECS, SECS_PER_DAY, month_of_day};
use crate::counter::CounterId;
use crate::error::AmountField;

/// The tag that sets month bucket keys apart from day bucket keys.
const MONTH_TAG: u32 = 1 << 31;

/// One month or day bucket of a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Bucket {
    /// A day number, or a month index with [`MONTH_TAG`] set.
    key: u32,
    /// The latest event time counted in the bucket, Unix seconds (fits until 2106).
    last_updated: u32,
    amount: Amount,
}

const NO_BUCKET: Bucket = Bucket {
    key: 0,
    last_updated: 0,
    amount: Amount { count: 0, value: 0 },
};

/// The shapes of up to two buckets that [`Packed`] holds: the top 3 bits
/// of its word (never 0, which leaves [`Buckets`] a niche for its tag).
mod shape {
    pub(super) const EMPTY: u64 = 1;
    /// One month bucket: its month index (bits 32..48) and `lastUpdated`
    /// (bits 0..32).
    pub(super) const MONTH: u64 = 2;
    /// One day bucket: its day number (bits 32..48) and `lastUpdated`.
    pub(super) const DAY: u64 = 3;
    /// A month bucket and a day bucket of that month, the common shape:
    /// the day number (bits 40..56), the month's `lastUpdated` as an
    /// offset from the day's start, biased by [`super::MONTH_OFFSET_BIAS`]
    /// (bits 17..40), and the day's as seconds into it (bits 0..17). The
    /// month is the day's.
    pub(super) const MONTH_DAY: u64 = 4;
    pub(super) const SHIFT: u32 = 61;
}

/// Added to a month's `lastUpdated` offset from a day of it (within 31
/// days either way) to store it in 23 bits.
const MONTH_OFFSET_BIAS: i64 = 1 << 22;

/// Up to two buckets in one word beside their amounts: a cell's buckets
/// in the shapes of [`shape`], which are those of every cell written in
/// one day, and of most others. Their keys and `lastUpdated` values are
/// thus 8 bytes where two [`Bucket`]s spend 16, and a cell is 64 bytes.
#[derive(Clone, Copy, Debug)]
struct Packed {
    word: NonZeroU64,
    amounts: [Amount; 2],
}

/// The word of a packed shape: never 0, as every shape is.
fn packed_word(shape: u64, fields: u64) -> NonZeroU64 {
    NonZeroU64::new(shape << shape::SHIFT | fields).unwrap_or(NonZeroU64::MIN)
}

impl Packed {
    const EMPTY: Packed = Packed {
        word: NonZeroU64::new(shape::EMPTY << shape::SHIFT).unwrap(),
        amounts: [Amount { count: 0, value: 0 }; 2],
    };

    fn shape(&self) -> u64 {
        self.word.get() >> shape::SHIFT
    }

    /// The day of a [`shape::MONTH_DAY`] word.
    fn day(&self) -> u32 {
        (self.word.get() >> 40 & 0xffff) as u32
    }

    /// Whether the buckets are a month and day `day` of it.
    #[inline(always)]
    fn is_month_and_day(&self, day: u32) -> bool {
        self.word.get() >> 40 == (shape::MONTH_DAY << (shape::SHIFT - 40) | u64::from(day))
    }

    /// `buckets` packed, if they have one of the shapes.
    fn pack(buckets: &[Bucket]) -> Option<Packed> {
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
    fn unpack(&self) -> ([Bucket; 2], usize) {
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
    fn add_month_day(&mut self, delta: Amount, into_day: u32) {
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

/// A cell's buckets, sorted by key, strictly descending: up to two
/// packed beside the cell, in the shapes [`Packed`] holds; others, and
/// more, on the heap.
#[derive(Clone, Debug)]
enum Buckets {
    Packed(Packed),
    Heap(Vec<Bucket>),
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets::Packed(Packed::EMPTY)
    }
}

impl PartialEq for Buckets {
    fn eq(&self, other: &Self) -> bool {
        *self.view() == *other.view()
    }
}

impl Eq for Buckets {}

/// A cell's buckets to read: unpacked, or borrowed from the heap.
#[derive(Clone, Copy)]
struct View<'a> {
    unpacked: [Bucket; 2],
    len: usize,
    heap: Option<&'a [Bucket]>,
}

impl std::ops::Deref for View<'_> {
    type Target = [Bucket];

    fn deref(&self) -> &[Bucket] {
        match self.heap {
            Some(buckets) => buckets,
            None => &self.unpacked[..self.len],
        }
    }
}

impl Buckets {
    fn from_vec(buckets: Vec<Bucket>) -> Buckets {
        match Packed::pack(&buckets) {
            Some(packed) => Buckets::Packed(packed),
            None => Buckets::Heap(buckets),
        }
    }

    /// The buckets, to read.
    #[inline]
    fn view(&self) -> View<'_> {
        match self {
            Buckets::Packed(packed) => {
                let (unpacked, len) = packed.unpack();
                View {
                    unpacked,
                    len,
                    heap: None,
                }
            }
            Buckets::Heap(buckets) => View {
                unpacked: [NO_BUCKET; 2],
                len: 0,
                heap: Some(buckets),
            },
        }
    }

    /// Changes the buckets with `change` (on a vector of them, for packed
    /// ones, which are packed again if their shape allows).
    fn change(&mut self, change: impl FnOnce(&mut Vec<Bucket>)) {
        match self {
            Buckets::Heap(buckets) => {
                change(buckets);
                if buckets.len() <= 2
                    && let Some(packed) = Packed::pack(buckets)
                {
                    *self = Buckets::Packed(packed);
                }
            }
            Buckets::Packed(_) => {
                let mut buckets = Vec::with_capacity(4);
                buckets.extend_from_slice(&self.view());
                change(&mut buckets);
                *self = Buckets::from_vec(buckets);
            }
        }
    }
}

/// The position of `key` in buckets sorted descending, or where it would go.
#[inline]
fn locate(buckets: &[Bucket], key: u32) -> Result<usize, usize> {
    let at = buckets.partition_point(|b| b.key > key);
    match buckets.get(at) {
        Some(b) if b.key == key => Ok(at),
        _ => Err(at),
    }
}

/// Where an increment writes one of its buckets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum BucketSpot {
    /// Nowhere: the bucket is out of retention.
    #[default]
    Skip,
    /// Into the existing bucket at this index.
    At(u32),
    /// Into a new bucket, inserted at this index.
    New(u32),
}

/// Where an increment writes in a cell: found once, written once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CellSpot {
    month: BucketSpot,
    day: BucketSpot,
}

/// One subject's data for one counter: totals, buckets and `lastUpdated`.
///
/// Buckets are kept sorted by key, newest first, months before days, and
/// only for periods that received an increment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cell {
    /// The counter the cell belongs to: kept here, beside `last_updated`,
    /// it fills what would otherwise be padding (a cell is 64 bytes).
    counter: CounterId,
    /// The latest event time counted, Unix seconds (event times end in 2100).
    last_updated: u32,
    total: Amount,
    buckets: Buckets,
}

/// The stored periods of a cell with their amounts and `lastUpdated`, as read.
pub(crate) struct PeriodReading {
    pub period: Period,
    pub amount: Amount,
    pub last_updated: i64,
}

/// What an increment would make of a cell's amounts: used to check a batch
/// of several entries against overflow before anything is applied.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Projection {
    pub(super) total: Amount,
    pub(super) month: Option<Amount>,
    pub(super) day: Option<Amount>,
}

impl Projection {
    /// Adds `delta` to every amount, or names the field that would overflow
    /// (and then changes nothing).
    pub(crate) fn add(&mut self, delta: Amount) -> Result<(), AmountField> {
        let add = |amount: Option<Amount>| amount.map(|a| a.checked_add(delta)).transpose();
        let next = Projection {
            total: self.total.checked_add(delta)?,
            month: add(self.month)?,
            day: add(self.day)?,
        };
        *self = next;
        Ok(())
    }
}

/// Whether `delta` can be added to each of `amounts`, else the field of
/// the first that would overflow.
#[inline(always)]
fn all_fit(amounts: [Amount; 3], delta: Amount) -> Result<(), AmountField> {
    for amount in amounts {
        amount.checked_add(delta)?;
    }
    Ok(())
}

/// An event time as stored in `lastUpdated` fields; event times are
/// checked to fall in 2000..2100 before they reach a cell.
#[inline(always)]
fn stored_secs(at: &EventTime) -> u32 {
    at.stored_secs
}

impl Cell {
    /// A new cell of `counter` holding one increment: what [`Cell::add`]
    /// makes of an empty cell, built directly (its buckets, this month's
    /// and today's unless out of retention, packed).
    pub(crate) fn new(counter: CounterId, delta: Amount, at: &EventTime) -> Cell {
        let secs = stored_secs(at);
        let bucket = |key| Bucket {
            key,
            last_updated: secs,
            amount: delta,
        };
        let mut items = [NO_BUCKET; 2];
        let mut len = 0;
        if at.month >= at.horizon.0 {
            items[len] = bucket(at.month.0 | MONTH_TAG);
            len += 1;
        }
        if at.day >= at.horizon.1 {
            items[len] = bucket(at.day.0);
            len += 1;
        }
        let buckets = match Packed::pack(&items[..len]) {
            Some(packed) => Buckets::Packed(packed),
            None => Buckets::Heap(items[..len].to_vec()),
        };
        Cell {
            counter,
            last_updated: secs,
            total: delta,
            buckets,
        }
    }

    /// The counter the cell belongs to.
    #[inline]
    pub(crate) fn counter(&self) -> CounterId {
        self.counter
    }

    /// The cell, decoded without its counter, given to `counter`.
    pub(crate) fn of_counter(self, counter: CounterId) -> Cell {
        Cell { counter, ..self }
    }

    /// Whether an increment at `at` writes exactly the cell's two packed
    /// buckets, this month's and today's: the common case, which
    /// [`Cell::check_current`] and [`Cell::add_current`] handle without
    /// any search. `at` must be within retention ([`EventTime::is_retained`]).
    #[inline(always)]
    pub(crate) fn holds_current(&self, at: &EventTime) -> bool {
        self.current_buckets(at).is_some()
    }

    /// The amounts of this month's and today's buckets, if they are the
    /// cell's two packed ones (a packed day's month is the day's).
    #[inline(always)]
    fn current_buckets(&self, at: &EventTime) -> Option<&[Amount; 2]> {
        match &self.buckets {
            Buckets::Packed(packed) if packed.is_month_and_day(at.day.0) => Some(&packed.amounts),
            _ => None,
        }
    }

    /// Checks an increment of `delta` at `at` of a cell that
    /// [`Cell::holds_current`] (else `None`, and nothing is checked):
    /// total, then month, then day; count before value. One look at the
    /// buckets both finds and checks them.
    #[inline(always)]
    pub(crate) fn check_current(
        &self,
        delta: Amount,
        at: &EventTime,
    ) -> Option<Result<(), AmountField>> {
        let [month, day] = *self.current_buckets(at)?;
        Some(all_fit([self.total, month, day], delta))
    }

    /// Writes an increment checked by [`Cell::check_current`].
    #[inline(always)]
    pub(crate) fn add_current(&mut self, delta: Amount, at: &EventTime) {
        let secs = stored_secs(at);
        self.total = self.total.wrapping_add(delta);
        self.last_updated = self.last_updated.max(secs);
        if let Buckets::Packed(packed) = &mut self.buckets {
            packed.add_month_day(delta, at.into_day);
        }
    }

    /// Whether a decoded cell keeps the invariants: buckets strictly
    /// descending by key (so lookups work) and `lastUpdated` in range.
    pub(crate) fn is_well_formed(&self) -> bool {
        self.buckets.view().windows(2).all(|w| w[0].key > w[1].key)
            && i64::from(self.last_updated) < END_EVENT_SECS
    }

    /// The buckets an increment at `at` writes: this month's and today's,
    /// unless out of retention. They are usually at the front (the newest
    /// month first, the newest day right after the months), so the front
    /// is tried before a binary search.
    #[inline]
    fn spot(&self, at: &EventTime) -> CellSpot {
        let view = self.buckets.view();
        let buckets = &*view;
        // Day keys sort after every month key: the day search starts where
        // the month search ended.
        let mut from = 0;
        let month = if at.month >= at.horizon.0 {
            let key = at.month.0 | MONTH_TAG;
            match buckets.first() {
                Some(first) if first.key == key => {
                    from = 1;
                    BucketSpot::At(0)
                }
                _ => match locate(buckets, key) {
                    Ok(i) => {
                        from = i + 1;
                        BucketSpot::At(i as u32)
                    }
                    Err(i) => {
                        from = i;
                        BucketSpot::New(i as u32)
                    }
                },
            }
        } else {
            BucketSpot::Skip
        };
        let day = if at.day >= at.horizon.1 {
            match buckets.get(from) {
                Some(next) if next.key == at.day.0 => BucketSpot::At(from as u32),
                _ => match locate(&buckets[from..], at.day.0) {
                    Ok(i) => BucketSpot::At((from + i) as u32),
                    Err(i) => BucketSpot::New((from + i) as u32),
                },
            }
        } else {
            BucketSpot::Skip
        };
        CellSpot { month, day }
    }

    /// Locates the buckets an increment of `delta` at `at` writes, and
    /// checks that no amount it changes overflows (total, then month, then
    /// day; count before value). Nothing changes until [`Cell::commit`].
    #[inline]
    pub(crate) fn plan(&self, delta: Amount, at: &EventTime) -> Result<CellSpot, AmountField> {
        self.total.checked_add(delta)?;
        let spot = self.spot(at);
        let view = self.buckets.view();
        let buckets = &*view;
        for bucket in [spot.month, spot.day] {
            if let BucketSpot::At(i) = bucket {
                buckets[i as usize].amount.checked_add(delta)?;
            }
        }
        Ok(spot)
    }

    /// Writes an increment planned by [`Cell::plan`] on this unchanged cell.
    /// Creating a bucket drops those that fell out of retention.
    #[inline]
    pub(crate) fn commit(&mut self, spot: CellSpot, delta: Amount, at: &EventTime) {
        self.total = self.total.wrapping_add(delta);
        let secs = stored_secs(at);
        self.last_updated = self.last_updated.max(secs);
        let (day, month) = (at.day.0, at.month.0 | MONTH_TAG);
        // One change of the buckets (packed ones unpacked and packed again
        // once). The day bucket sits after the month bucket: writing it
        // first keeps the month's index valid.
        self.buckets.change(|buckets| {
            let created_day = write(buckets, spot.day, day, delta, secs);
            let created_month = write(buckets, spot.month, month, delta, secs);
            if created_day || created_month {
                buckets.retain(|b| is_retained(b.key, at.horizon));
            }
        });
    }

    fn bucket_amount(&self, key: u32) -> Amount {
        let view = self.buckets.view();
        let buckets = &*view;
        locate(buckets, key)
            .map(|i| buckets[i].amount)
            .unwrap_or_default()
    }

    /// The amounts an increment at `at` would change: the total, and the
    /// month and day buckets it would write (none for a bucket already out
    /// of retention).
    pub(crate) fn projection(&self, at: &EventTime) -> Projection {
        if at.is_retained()
            && let Some(&[month, day]) = self.current_buckets(at)
        {
            // The common case: this month's and today's buckets, packed.
            return Projection {
                total: self.total,
                month: Some(month),
                day: Some(day),
            };
        }
        Projection {
            total: self.total,
            month: (at.month >= at.horizon.0).then(|| self.bucket_amount(at.month.0 | MONTH_TAG)),
            day: (at.day >= at.horizon.1).then(|| self.bucket_amount(at.day.0)),
        }
    }

    /// Adds `delta` at event time `at`. The caller has checked it with
    /// [`Cell::projection`] or [`Cell::plan`].
    pub(crate) fn add(&mut self, delta: Amount, at: &EventTime) {
        if at.is_retained() && self.holds_current(at) {
            self.add_current(delta, at);
            return;
        }
        let spot = self.spot(at);
        self.commit(spot, delta, at);
    }

    /// The stored periods of the cell within retention: `total`, then
    /// months and days, newest first.
    pub(crate) fn periods(&self, horizon: Horizon) -> impl Iterator<Item = PeriodReading> + '_ {
        let total = PeriodReading {
            period: Period::Total,
            amount: self.total,
            last_updated: i64::from(self.last_updated),
        };
        let view = self.buckets.view();
        std::iter::once(total).chain(
            (0..view.len())
                .map(move |i| view[i])
                .filter(move |b| is_retained(b.key, horizon))
                .map(|b| PeriodReading {
                    period: if b.key & MONTH_TAG != 0 {
                        Period::Month(MonthKey(b.key & !MONTH_TAG))
                    } else {
                        Period::Day(DayKey(b.key))
                    },
                    amount: b.amount,
                    last_updated: i64::from(b.last_updated),
                }),
        )
    }

    /// The reading of one period, or `None` if the cell holds no data for it.
    pub(crate) fn reading(
        &self,
        period: Period,
        now_secs: i64,
        horizon: Horizon,
    ) -> Option<PeriodReading> {
        match period {
            Period::Last7Days => {
                let today = DayKey::of(now_secs).0;
                let first = today.saturating_sub(6);
                let mut found = None::<PeriodReading>;
                for reading in self.periods(horizon) {
                    let Period::Day(DayKey(day)) = reading.period else {
                        continue;
                    };
                    if !(first..=today).contains(&day) {
                        continue;
                    }
                    let sum = found.get_or_insert(PeriodReading {
                        period: Period::Last7Days,
                        amount: Amount::default(),
                        last_updated: i64::MIN,
                    });
                    // Partial sums can exceed i64 even when the total does
                    // not (corrections); saturate rather than wrap.
                    sum.amount = Amount {
                        count: sum.amount.count.saturating_add(reading.amount.count),
                        value: sum.amount.value.saturating_add(reading.amount.value),
                    };
                    sum.last_updated = sum.last_updated.max(reading.last_updated);
                }
                found
            }
            wanted => self.periods(horizon).find(|r| r.period == wanted),
        }
    }
}

/// Writes one bucket of `buckets`; `true` if it had to be created.
#[inline]
fn write(buckets: &mut Vec<Bucket>, spot: BucketSpot, key: u32, delta: Amount, secs: u32) -> bool {
    match spot {
        BucketSpot::Skip => false,
        BucketSpot::At(i) => {
            let bucket = &mut buckets[i as usize];
            bucket.amount = bucket.amount.wrapping_add(delta);
            bucket.last_updated = bucket.last_updated.max(secs);
            false
        }
        BucketSpot::New(i) => {
            let bucket = Bucket {
                key,
                last_updated: secs,
                amount: delta,
            };
            buckets.insert(i as usize, bucket);
            true
        }
    }
}

fn is_retained(key: u32, (month, day): Horizon) -> bool {
    if key & MONTH_TAG != 0 {
        key & !MONTH_TAG >= month.0
    } else {
        key >= day.0
    }
}

/// A cell as `docs/format.md` lays it out, to encode.
#[derive(Serialize)]
struct CellRef<'a> {
    total: Amount,
    last_updated: i64,
    buckets: &'a [Bucket],
}

/// A cell as `docs/format.md` lays it out, decoded.
#[derive(Deserialize)]
struct CellImage {
    total: Amount,
    last_updated: i64,
    buckets: Vec<Bucket>,
}

impl Serialize for Cell {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        CellRef {
            total: self.total,
            last_updated: i64::from(self.last_updated),
            buckets: &self.buckets.view(),
        }
        .serialize(serializer)
    }
}

/// Months of 2000..=2099: bucket month indices are below this.
const END_MONTH: u32 = 1200;

impl Bucket {
    /// Why a decoded bucket could not have been written, if it could not:
    /// its key is a month of 2000..=2099 or a day of those years, and its
    /// `lastUpdated` falls in that month or day.
    fn impossible(&self) -> Option<String> {
        let secs = i64::from(self.last_updated);
        if self.key & MONTH_TAG != 0 {
            let month = self.key & !MONTH_TAG;
            if month >= END_MONTH {
                return Some(format!("a month bucket's index {month} is past 2099"));
            }
            if !(MIN_EVENT_SECS..END_EVENT_SECS).contains(&secs)
                || month_of_day(secs.div_euclid(SECS_PER_DAY)) != month
            {
                return Some(format!(
                    "month bucket {month}'s lastUpdated {secs} is not in that month"
                ));
            }
        } else {
            let (first, end) = (MIN_EVENT_SECS / SECS_PER_DAY, END_EVENT_SECS / SECS_PER_DAY);
            let day = i64::from(self.key);
            if !(first..end).contains(&day) {
                return Some(format!("a day bucket's day {day} is outside 2000..=2099"));
            }
            if secs.div_euclid(SECS_PER_DAY) != day {
                return Some(format!(
                    "day bucket {day}'s lastUpdated {secs} is not in that day"
                ));
            }
        }
        None
    }
}

/// Decoded without its counter (the layout keeps it beside the cell):
/// [`Cell::of_counter`] gives it one. Every bucket is checked to be one
/// the engine could have written (see [`Bucket::impossible`]), so that
/// reading it never meets a period key outside the calendar.
impl<'de> Deserialize<'de> for Cell {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let image = CellImage::deserialize(deserializer)?;
        let last_updated = u32::try_from(image.last_updated)
            .ok()
            .filter(|&secs| i64::from(secs) < END_EVENT_SECS)
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "a cell's lastUpdated {} is out of range",
                    image.last_updated
                ))
            })?;
        if let Some(reason) = image.buckets.iter().find_map(Bucket::impossible) {
            return Err(D::Error::custom(reason));
        }
        Ok(Cell {
            counter: 0,
            total: image.total,
            last_updated,
            buckets: Buckets::from_vec(image.buckets),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::Retention;

    const NOV_27_2026: i64 = 1_795_737_600; // 2026-11-27T00:00:00Z
    const DAY: i64 = 86_400;

    fn amount(count: i64, value: i64) -> Amount {
        Amount { count, value }
    }

    fn at(secs: i64, days: u32) -> EventTime {
        let horizon = Retention { months: 24, days }.horizon(NOV_27_2026);
        EventTime::new(secs, horizon)
    }

    #[test]
    fn a_fresh_cell_keeps_its_buckets_packed_newest_first() {
        let mut cell = Cell::new(0, amount(1, 2), &at(NOV_27_2026, 90));
        assert!(matches!(cell.buckets, Buckets::Packed(p) if p.shape() == shape::MONTH_DAY));
        let spot = cell.plan(amount(1, 2), &at(NOV_27_2026 + 5, 90)).unwrap();
        assert_eq!(
            spot,
            CellSpot {
                month: BucketSpot::At(0),
                day: BucketSpot::At(1)
            }
        );
        cell.commit(spot, amount(1, 2), &at(NOV_27_2026 + 5, 90));
        // The day before: a third bucket moves them to the heap, in order.
        cell.add(amount(1, 0), &at(NOV_27_2026 - DAY, 90));
        assert!(matches!(cell.buckets, Buckets::Heap(_)));
        assert!(cell.is_well_formed());
        let keys: Vec<String> = cell
            .periods(at(NOV_27_2026, 90).horizon)
            .map(|r| r.period.to_string())
            .collect();
        assert_eq!(keys, ["total", "2611", "261127", "261126"]);
        assert_eq!(cell.total, amount(3, 4));
    }

    #[test]
    fn a_new_cell_is_an_empty_one_incremented() {
        let horizon = |days| Retention { months: 2, days }.horizon(NOV_27_2026);
        let times = [
            // This month and today, both kept.
            EventTime::new(NOV_27_2026 + 5, horizon(7)),
            // Ten days ago: its day is out of a 7-day retention, its month kept.
            EventTime::new(NOV_27_2026 - 10 * DAY, horizon(7)),
            // Its day kept (90 days), its month out of a 2-month retention.
            EventTime::new(NOV_27_2026 - 70 * DAY, horizon(90)),
            // A year ago: both out.
            EventTime::new(NOV_27_2026 - 365 * DAY, horizon(90)),
        ];
        for at in &times {
            let mut added = Cell::default().of_counter(3);
            added.add(amount(2, -7), at);
            assert_eq!(Cell::new(3, amount(2, -7), at), added, "{at:?}");
            assert!(Cell::new(3, amount(2, -7), at).is_well_formed());
        }
        let kept = |at: &EventTime| Cell::new(0, amount(1, 0), at).periods(at.horizon).count();
        assert_eq!(times.iter().map(kept).collect::<Vec<_>>(), [3, 2, 2, 1]);
    }

    #[test]
    fn packed_shapes_unpack_to_the_buckets_they_were_packed_from() {
        let month = |key: u32, secs: i64| Bucket {
            key: key | MONTH_TAG,
            last_updated: secs as u32,
            amount: amount(secs, -secs),
        };
        let day = |secs: i64| Bucket {
            key: DayKey::of(secs).0,
            last_updated: secs as u32,
            amount: amount(7, secs),
        };
        // 2026-10-01 and 2026-10-31, 00:00:00Z: a 31-day month's ends.
        let (first, last) = (NOV_27_2026 - 57 * DAY, NOV_27_2026 - 27 * DAY);
        let october = MonthKey::of(first).0;
        let packable: Vec<Vec<Bucket>> = vec![
            vec![],
            vec![month(october, first)],
            vec![day(last + DAY - 1)],
            vec![month(october, first), day(first)],
            // The month's latest event 30 days before or after the day's.
            vec![month(october, first), day(last + DAY - 1)],
            vec![month(october, last + DAY - 1), day(first)],
        ];
        for buckets in packable {
            let packed = Packed::pack(&buckets).expect("a packed shape");
            let (unpacked, len) = packed.unpack();
            assert_eq!(&unpacked[..len], &buckets[..]);
            let as_buckets = Buckets::from_vec(buckets.clone());
            assert!(matches!(as_buckets, Buckets::Packed(_)));
            assert_eq!(*as_buckets.view(), buckets[..]);
        }
        let november = MonthKey::of(NOV_27_2026).0;
        let unpackable: Vec<Vec<Bucket>> = vec![
            // Two months; a day of another month; two days; three buckets.
            vec![month(november, NOV_27_2026), month(october, first)],
            vec![month(november, NOV_27_2026), day(last)],
            vec![day(last), day(first)],
            vec![month(october, last), day(last), day(first)],
        ];
        for buckets in unpackable {
            assert!(Packed::pack(&buckets).is_none());
            let as_buckets = Buckets::from_vec(buckets.clone());
            assert!(matches!(as_buckets, Buckets::Heap(_)));
            assert_eq!(*as_buckets.view(), buckets[..]);
        }
    }

    #[test]
    fn an_increment_of_a_packed_cell_equals_the_same_on_the_heap() {
        // Every second of a day, and the seconds around it, in a spread.
        for step in 0..200 {
            let secs = NOV_27_2026 + (step * 7_919) % (3 * DAY) - DAY;
            let first = at(NOV_27_2026 + 3_600, 90);
            let mut packed = Cell::new(1, amount(1, 1), &first);
            let mut heap = packed.clone();
            heap.buckets = Buckets::Heap(heap.buckets.view().to_vec());
            let later = at(secs, 90);
            for cell in [&mut packed, &mut heap] {
                cell.plan(amount(2, -3), &later).expect("no overflow");
                cell.add(amount(2, -3), &later);
            }
            assert_eq!(packed, heap, "{secs}");
            let periods = |cell: &Cell| -> Vec<(String, i64, i64)> {
                cell.periods(later.horizon)
                    .map(|r| (r.period.to_string(), r.amount.count, r.last_updated))
                    .collect()
            };
            assert_eq!(periods(&packed), periods(&heap));
            assert!(packed.is_well_formed());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::with_cases(4096)
        })]

        /// Whatever the order of events over two months, packed or not, a
        /// cell reads back each period's sum and latest event time. Each
        /// event comes on a later (or the same) day than the one before,
        /// so that with a 7-day retention a backfilled event can be a
        /// month's latest while its day is not kept: a packed month and day
        /// with different `lastUpdated` values.
        #[test]
        fn every_period_reads_back_its_sum_and_latest_event(
            mut events in proptest::collection::vec(
                (0i64..20, 0i64..30, 0i64..DAY, -5i64..5),
                1..6,
            ),
            days in proptest::prop_oneof![proptest::strategy::Just(7u32), proptest::strategy::Just(90)],
        ) {
            use std::collections::BTreeMap;
            let horizon = |now: i64| Retention { months: 24, days }.horizon(now);
            // Days before 27 November that each event is made on, latest last.
            events.sort_by_key(|event| std::cmp::Reverse(event.0));
            let now = EventTime::new(NOV_27_2026, horizon(NOV_27_2026));
            let mut cell = Cell::default();
            let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
            for &(made_before, days_ago, secs, count) in &events {
                let made = NOV_27_2026 - made_before * DAY;
                let when = made - days_ago * DAY + secs;
                let event = EventTime::new(when, horizon(made));
                cell.plan(amount(count, 1), &event).expect("no overflow");
                cell.add(amount(count, 1), &event);
                let mut keys = vec!["total".to_owned(), MonthKey::of(when).to_string()];
                if DayKey::of(when) >= now.horizon.1 {
                    keys.push(DayKey::of(when).to_string());
                }
                for key in keys {
                    let (sum, latest) = expected.entry(key).or_insert((0, i64::MIN));
                    *sum += count;
                    *latest = (*latest).max(when);
                }
                proptest::prop_assert!(cell.is_well_formed());
            }
            let read: BTreeMap<String, (i64, i64)> = cell
                .periods(now.horizon)
                .map(|r| (r.period.to_string(), (r.amount.count, r.last_updated)))
                .collect();
            proptest::prop_assert_eq!(read, expected);
            // And through a snapshot's encoding.
            let mut bytes = Vec::new();
            crate::persist::write_record(&mut bytes, &cell);
            let decoded = crate::persist::decode_record::<Cell>(&bytes).expect("decodes");
            proptest::prop_assert_eq!(decoded.of_counter(cell.counter()), cell);
        }
    }

    #[test]
    fn new_buckets_go_between_existing_ones() {
        let mut cell = Cell::default();
        for day in [0, 4, 2, 6, 1] {
            cell.add(amount(1, 0), &at(NOV_27_2026 - day * DAY, 90));
        }
        cell.add(amount(1, 0), &at(NOV_27_2026 - 40 * DAY, 90));
        assert!(cell.is_well_formed());
        assert_eq!(cell.buckets.view().len(), 2 + 6);
    }

    #[test]
    fn retention_moves_a_cell_back_into_its_packed_word() {
        let mut cell = Cell::default();
        for day in 0..5 {
            cell.add(amount(1, 0), &at(NOV_27_2026 - day * DAY, 90));
        }
        // Two years later, with a 7-day retention, everything old goes.
        let later = NOV_27_2026 + 800 * DAY;
        let horizon = Retention { months: 1, days: 7 }.horizon(later);
        cell.add(amount(1, 0), &EventTime::new(later, horizon));
        assert!(matches!(cell.buckets, Buckets::Packed(p) if p.shape() == shape::MONTH_DAY));
        assert_eq!(cell.total, amount(6, 0));
    }

    #[test]
    fn plan_reports_the_first_overflowing_amount() {
        let now = at(NOV_27_2026, 90);
        let mut cell = Cell::new(0, amount(i64::MAX - 1, 0), &now);
        assert_eq!(cell.plan(amount(2, 0), &now), Err(AmountField::Count));
        assert_eq!(cell.plan(amount(-5, 0), &now).map(drop), Ok(()));
        cell.add(amount(-5, i64::MIN + 1), &now);
        assert_eq!(cell.plan(amount(0, -2), &now), Err(AmountField::Value));
    }

    #[test]
    fn decoding_checks_last_updated() {
        use crate::persist::{decode_record, write_record};
        let cell = Cell::new(0, amount(1, 0), &at(NOV_27_2026, 90));
        let mut bytes = Vec::new();
        write_record(&mut bytes, &cell);
        assert_eq!(decode_record::<Cell>(&bytes).unwrap(), cell);
        let bad = CellRef {
            total: Amount::default(),
            last_updated: END_EVENT_SECS,
            buckets: &[],
        };
        let mut bytes = Vec::new();
        write_record(&mut bytes, &bad);
        let decoded = decode_record::<Cell>(&bytes);
        assert!(decoded.is_err());
    }
}
