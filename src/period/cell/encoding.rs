//! A cell on disk: the plain layout of `docs/format.md`, converted and
//! checked on decoding.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Cell;
use super::bucket::{Bucket, MONTH_TAG};
use super::buckets::Buckets;
use crate::calendar::{END_EVENT_SECS, MIN_EVENT_SECS, SECS_PER_DAY, month_of_day};
use crate::period::Amount;

/// A cell as `docs/format.md` lays it out, to encode.
#[derive(Serialize)]
pub(super) struct CellRef<'a> {
    pub(super) total: Amount,
    pub(super) last_updated: i64,
    pub(super) buckets: &'a [Bucket],
}

/// A cell as `docs/format.md` lays it out, decoded.
#[derive(Deserialize)]
pub(super) struct CellImage {
    pub(super) total: Amount,
    pub(super) last_updated: i64,
    pub(super) buckets: Vec<Bucket>,
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
pub(super) const END_MONTH: u32 = 1200;

impl Bucket {
    /// Why a decoded bucket could not have been written, if it could not:
    /// its key is a month of 2000..=2099 or a day of those years, and its
    /// `lastUpdated` falls in that month or day.
    pub(super) fn impossible(&self) -> Option<String> {
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

/// A month or day bucket as a store outside this process keeps it.
#[cfg(feature = "redis")]
pub(crate) struct StoredBucket {
    /// [`Period::Month`](crate::period::Period::Month) or
    /// [`Period::Day`](crate::period::Period::Day).
    pub period: crate::period::Period,
    pub amount: Amount,
    pub last_updated: i64,
}

#[cfg(feature = "redis")]
impl Cell {
    /// A cell of `counter` rebuilt from what another store kept of it,
    /// checked as a decoded one is (see [`Bucket::impossible`]); the
    /// reason when it could not have been written.
    pub(crate) fn from_parts(
        counter: crate::counter::CounterId,
        total: Amount,
        last_updated: i64,
        buckets: Vec<StoredBucket>,
    ) -> Result<Cell, String> {
        use crate::period::Period;
        let last_updated = u32::try_from(last_updated)
            .ok()
            .filter(|&secs| i64::from(secs) < END_EVENT_SECS)
            .ok_or_else(|| format!("a cell's lastUpdated {last_updated} is out of range"))?;
        let mut kept = Vec::with_capacity(buckets.len());
        for bucket in buckets {
            let key = match bucket.period {
                Period::Month(month) => month.0 | MONTH_TAG,
                Period::Day(day) => day.0,
                other => return Err(format!("{other} is not a month or a day bucket")),
            };
            let bucket = Bucket {
                key,
                last_updated: u32::try_from(bucket.last_updated).map_err(|_| {
                    format!(
                        "a bucket's lastUpdated {} is out of range",
                        bucket.last_updated
                    )
                })?,
                amount: bucket.amount,
            };
            if let Some(reason) = bucket.impossible() {
                return Err(reason);
            }
            kept.push(bucket);
        }
        kept.sort_unstable_by_key(|b| std::cmp::Reverse(b.key));
        Ok(Cell {
            counter,
            total,
            last_updated,
            buckets: Buckets::from_vec(kept),
        })
    }
}
