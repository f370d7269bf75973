//! Periods (SPEC §6): the `total`, month and day buckets of a cell, their
//! retention, and the platform's period keys.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::calendar::{Date, civil_from_days, day_of, days_from_civil, is_valid_date, month_index};
use crate::error::{Error, Result};

/// A period a row can be read for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    /// Everything ever counted.
    Total,
    /// Today and the six days before it (engine clock, UTC).
    Last7Days,
    /// A calendar month, key `YYMM`.
    Month(MonthKey),
    /// A calendar day, key `YYMMDD`.
    Day(DayKey),
}

/// A calendar month of 2000..=2099, written `YYMM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonthKey(pub(crate) u32);

/// A calendar day of 2000..=2099, written `YYMMDD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DayKey(pub(crate) u32);

impl MonthKey {
    /// The month containing a Unix time.
    pub(crate) fn of(unix_secs: i64) -> MonthKey {
        MonthKey(month_index(civil_from_days(day_of(unix_secs))).max(0) as u32)
    }
}

impl DayKey {
    /// The day containing a Unix time.
    pub(crate) fn of(unix_secs: i64) -> DayKey {
        DayKey(day_of(unix_secs) as u32)
    }

    fn date(self) -> Date {
        civil_from_days(i64::from(self.0))
    }
}

impl fmt::Display for MonthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}{:02}", self.0 / 12, self.0 % 12 + 1)
    }
}

impl fmt::Display for DayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let date = self.date();
        write!(f, "{:02}{:02}{:02}", date.year - 2000, date.month, date.day)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Total => f.write_str("total"),
            Period::Last7Days => f.write_str("last7Days"),
            Period::Month(m) => m.fmt(f),
            Period::Day(d) => d.fmt(f),
        }
    }
}

impl std::str::FromStr for Period {
    type Err = Error;

    /// Parses `total`, `last7Days`, `YYMM` or `YYMMDD`.
    fn from_str(s: &str) -> Result<Period> {
        let invalid = || Error::InvalidPeriod {
            period: s.to_owned(),
        };
        match s {
            "total" => return Ok(Period::Total),
            "last7Days" => return Ok(Period::Last7Days),
            _ => {}
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let digits = |range: std::ops::Range<usize>| s[range].parse::<u32>().map_err(|_| invalid());
        match s.len() {
            4 => {
                let (year, month) = (digits(0..2)?, digits(2..4)?);
                if !(1..=12).contains(&month) {
                    return Err(invalid());
                }
                Ok(Period::Month(MonthKey(year * 12 + month - 1)))
            }
            6 => {
                let (year, month, day) = (digits(0..2)?, digits(2..4)?, digits(4..6)?);
                let year = 2000 + i64::from(year);
                if !is_valid_date(year, month, day) {
                    return Err(invalid());
                }
                Ok(Period::Day(
                    DayKey(days_from_civil(year, month, day) as u32),
                ))
            }
            _ => Err(invalid()),
        }
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The oldest month and day bucket still kept.
pub(crate) type Horizon = (MonthKey, DayKey);

/// How long month and day buckets are kept, relative to the engine clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retention {
    pub months: u32,
    pub days: u32,
}

impl Retention {
    /// An event at `at_secs` seen when the clock reads `now_secs`; the
    /// calendar is worked out once when both fall on the same day.
    pub(crate) fn event_time(&self, at_secs: i64, now_secs: i64) -> EventTime {
        let at = EventTime::new(at_secs, (MonthKey(0), DayKey(0)));
        let horizon = if at.day == DayKey::of(now_secs) {
            self.horizon_from(at.month, at.day)
        } else {
            self.horizon(now_secs)
        };
        EventTime { horizon, ..at }
    }

    /// The oldest month and day still kept when the clock reads `now_secs`.
    pub(crate) fn horizon(&self, now_secs: i64) -> Horizon {
        self.horizon_from(MonthKey::of(now_secs), DayKey::of(now_secs))
    }

    fn horizon_from(&self, month: MonthKey, day: DayKey) -> Horizon {
        let month = i64::from(month.0) - i64::from(self.months) + 1;
        let day = i64::from(day.0) - i64::from(self.days) + 1;
        (MonthKey(month.max(0) as u32), DayKey(day.max(0) as u32))
    }
}

/// An event time with its bucket keys and the retention horizon, worked
/// out once per batch rather than once per cell.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventTime {
    secs: i64,
    month: MonthKey,
    day: DayKey,
    horizon: Horizon,
}

impl EventTime {
    /// The event time `secs` (Unix seconds, within the supported range),
    /// with buckets older than `horizon` out of retention.
    pub(crate) fn new(secs: i64, horizon: Horizon) -> EventTime {
        EventTime {
            secs,
            month: MonthKey::of(secs),
            day: DayKey::of(secs),
            horizon,
        }
    }

    /// The event time, Unix seconds.
    pub(crate) fn secs(&self) -> i64 {
        self.secs
    }
}

/// A count and a value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Amount {
    pub count: i64,
    pub value: i64,
}

impl Amount {
    /// `self + other`, or `None` on overflow, naming the field that overflows.
    pub(crate) fn checked_add(
        self,
        other: Amount,
    ) -> std::result::Result<Amount, crate::error::AmountField> {
        Ok(Amount {
            count: self
                .count
                .checked_add(other.count)
                .ok_or(crate::error::AmountField::Count)?,
            value: self
                .value
                .checked_add(other.value)
                .ok_or(crate::error::AmountField::Value)?,
        })
    }
}

/// What an increment would make of a cell's amounts: used to check a batch
/// against overflow before anything is applied.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Projection {
    total: Amount,
    month: Option<Amount>,
    day: Option<Amount>,
}

impl Projection {
    /// Adds `delta` to every amount, or names the field that would overflow
    /// (and then changes nothing).
    pub(crate) fn add(
        &mut self,
        delta: Amount,
    ) -> std::result::Result<(), crate::error::AmountField> {
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

/// The tag that sets month bucket keys apart from day bucket keys.
const MONTH_TAG: u32 = 1 << 31;

/// One month or day bucket of a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Bucket {
    /// A day number, or a month index with [`MONTH_TAG`] set.
    key: u32,
    /// The latest event time counted in the bucket, Unix seconds (fits until 2106).
    last_updated: u32,
    amount: Amount,
}

/// One subject's data for one counter: totals, buckets and `lastUpdated`.
///
/// Buckets are kept sorted by key, newest first, months before days, and
/// only for periods that received an increment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cell {
    total: Amount,
    last_updated: i64,
    buckets: Vec<Bucket>,
}

/// The stored periods of a cell with their amounts and `lastUpdated`, as read.
pub(crate) struct PeriodReading {
    pub period: Period,
    pub amount: Amount,
    pub last_updated: i64,
}

impl Cell {
    /// Whether a decoded cell keeps the invariants: buckets strictly
    /// descending by key (so lookups work) and `lastUpdated` in range.
    pub(crate) fn is_well_formed(&self) -> bool {
        self.buckets.windows(2).all(|w| w[0].key > w[1].key)
            && (0..crate::calendar::END_EVENT_SECS).contains(&self.last_updated)
    }

    fn position(&self, key: u32) -> std::result::Result<usize, usize> {
        self.buckets.binary_search_by(|b| key.cmp(&b.key))
    }

    fn bucket_amount(&self, key: u32) -> Amount {
        self.position(key)
            .map(|i| self.buckets[i].amount)
            .unwrap_or_default()
    }

    /// The amounts an increment at `at` would change: the total, and the
    /// month and day buckets it would write (none for a bucket already out
    /// of retention).
    pub(crate) fn projection(&self, at: &EventTime) -> Projection {
        Projection {
            total: self.total,
            month: (at.month >= at.horizon.0).then(|| self.bucket_amount(at.month.0 | MONTH_TAG)),
            day: (at.day >= at.horizon.1).then(|| self.bucket_amount(at.day.0)),
        }
    }

    /// Adds `delta` at event time `at`. The caller has checked it with
    /// [`Cell::projection`]. Buckets out of retention are not created, and
    /// creating a bucket drops those that fell out of retention.
    pub(crate) fn add(&mut self, delta: Amount, at: &EventTime) {
        self.total = self.total.checked_add(delta).unwrap_or(self.total);
        self.last_updated = self.last_updated.max(at.secs);
        if at.month >= at.horizon.0 {
            self.add_to_bucket(at.month.0 | MONTH_TAG, delta, at.secs, at.horizon);
        }
        if at.day >= at.horizon.1 {
            self.add_to_bucket(at.day.0, delta, at.secs, at.horizon);
        }
    }

    fn add_to_bucket(&mut self, key: u32, delta: Amount, at_secs: i64, horizon: Horizon) {
        let at = at_secs as u32;
        match self.position(key) {
            Ok(i) => {
                let bucket = &mut self.buckets[i];
                bucket.amount = bucket.amount.checked_add(delta).unwrap_or(bucket.amount);
                bucket.last_updated = bucket.last_updated.max(at);
            }
            Err(i) => {
                self.buckets.insert(
                    i,
                    Bucket {
                        key,
                        last_updated: at,
                        amount: delta,
                    },
                );
                self.buckets.retain(|b| is_retained(b.key, horizon));
            }
        }
    }

    /// The stored periods of the cell within retention: `total`, then
    /// months and days, newest first.
    pub(crate) fn periods(&self, horizon: Horizon) -> impl Iterator<Item = PeriodReading> + '_ {
        let total = PeriodReading {
            period: Period::Total,
            amount: self.total,
            last_updated: self.last_updated,
        };
        std::iter::once(total).chain(
            self.buckets
                .iter()
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

fn is_retained(key: u32, (month, day): Horizon) -> bool {
    if key & MONTH_TAG != 0 {
        key & !MONTH_TAG >= month.0
    } else {
        key >= day.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOV_27_2026: i64 = 1_795_737_600; // 2026-11-27T00:00:00Z

    fn amount(count: i64, value: i64) -> Amount {
        Amount { count, value }
    }

    #[test]
    fn keys_print_and_parse() {
        assert_eq!(MonthKey::of(NOV_27_2026).to_string(), "2611");
        assert_eq!(DayKey::of(NOV_27_2026).to_string(), "261127");
        for text in ["total", "last7Days", "2611", "261127", "000101", "9912"] {
            assert_eq!(text.parse::<Period>().unwrap().to_string(), text);
        }
        for bad in [
            "", "Total", "2613", "261131", "26113", "+611", "2611270", "260229",
        ] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
    }

    #[test]
    fn buckets_sum_to_total_and_last7days_spans_a_week() {
        let retention = Retention {
            months: 24,
            days: 90,
        };
        let horizon = retention.horizon(NOV_27_2026);
        let mut cell = Cell::default();
        for day in 0..10 {
            let at = NOV_27_2026 - day * 86_400 + 5;
            let at = EventTime::new(at, horizon);
            cell.projection(&at).add(amount(1, 10)).unwrap();
            cell.add(amount(1, 10), &at);
        }
        let readings: Vec<_> = cell.periods(horizon).collect();
        assert_eq!(readings[0].amount, amount(10, 100));
        let months: i64 = readings
            .iter()
            .filter(|r| matches!(r.period, Period::Month(_)))
            .map(|r| r.amount.count)
            .sum();
        let days: i64 = readings
            .iter()
            .filter(|r| matches!(r.period, Period::Day(_)))
            .map(|r| r.amount.count)
            .sum();
        assert_eq!((months, days), (10, 10));
        let week = cell
            .reading(Period::Last7Days, NOV_27_2026 + 100, horizon)
            .unwrap();
        assert_eq!(week.amount, amount(7, 70));
        assert_eq!(week.last_updated, NOV_27_2026 + 5);
    }

    #[test]
    fn retention_drops_old_buckets_but_keeps_the_total() {
        let retention = Retention {
            months: 24,
            days: 7,
        };
        let mut cell = Cell::default();
        let old = NOV_27_2026 - 30 * 86_400;
        cell.add(amount(2, 0), &EventTime::new(old, retention.horizon(old)));
        cell.add(
            amount(3, 0),
            &EventTime::new(NOV_27_2026, retention.horizon(NOV_27_2026)),
        );
        let horizon = retention.horizon(NOV_27_2026);
        let days: Vec<_> = cell
            .periods(horizon)
            .filter(|r| matches!(r.period, Period::Day(_)))
            .collect();
        assert_eq!(days.len(), 1);
        assert_eq!(
            cell.reading(Period::Total, NOV_27_2026, horizon)
                .unwrap()
                .amount,
            amount(5, 0)
        );
    }

    #[test]
    fn overflow_is_detected_in_every_bucket() {
        let horizon = Retention {
            months: 24,
            days: 90,
        }
        .horizon(NOV_27_2026);
        let mut cell = Cell::default();
        let now = EventTime::new(NOV_27_2026, horizon);
        cell.add(amount(i64::MAX - 5, 0), &now);
        let mut projection = cell.projection(&now);
        assert_eq!(
            projection.add(amount(6, 0)),
            Err(crate::error::AmountField::Count)
        );
        // A rejected addition leaves the projection as it was.
        projection.add(amount(5, 0)).unwrap();
        assert_eq!(
            projection.add(amount(1, 0)),
            Err(crate::error::AmountField::Count)
        );
        projection.add(amount(-10, i64::MAX)).unwrap();
        assert_eq!(
            projection.add(amount(0, 1)),
            Err(crate::error::AmountField::Value)
        );
        // A bucket out of retention is not checked: it will not be written.
        let later = EventTime::new(
            NOV_27_2026 + 100 * 86_400,
            Retention { months: 1, days: 7 }.horizon(NOV_27_2026 + 400 * 86_400),
        );
        assert!(cell.projection(&later).day.is_none());
    }
}
