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

use super::{Amount, DayKey, EventTime, Horizon, MonthKey, Period};
use crate::calendar::END_EVENT_SECS;
use crate::counter::CounterId;
use crate::error::AmountField;

mod bucket;
mod buckets;
mod encoding;
#[cfg(feature = "redis")]
pub(crate) use encoding::StoredBucket;
mod packed;
#[cfg(test)]
mod tests;

use bucket::{Bucket, BucketSpot, MONTH_TAG, NO_BUCKET, is_retained, locate, write};
use buckets::Buckets;
use packed::Packed;

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
