//! Periods: the `total`, month and day buckets of a cell, their
//! retention, and the platform's period keys.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::calendar::{
    Date, civil_from_days, day_of, days_from_civil, is_valid_date, month_of_day,
};
use crate::error::{Error, Result};

mod cell;

#[cfg(feature = "redis")]
pub(crate) use cell::StoredBucket;
pub(crate) use cell::{Cell, CellSpot, PeriodReading, Projection};

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
    #[inline]
    pub(crate) fn of(unix_secs: i64) -> MonthKey {
        MonthKey(month_of_day(day_of(unix_secs)))
    }
}

impl DayKey {
    /// The day containing a Unix time.
    #[inline]
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

impl Period {
    /// A key that orders periods as their texts do, without allocating:
    /// the text, zero-padded to the longest (`last7Days`, 9 bytes), and
    /// since zero sorts before every character, a prefix first.
    pub(crate) fn text_key(&self) -> [u8; 9] {
        struct Buf([u8; 9], usize);
        impl fmt::Write for Buf {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                let end = self.1 + s.len();
                self.0
                    .get_mut(self.1..end)
                    .ok_or(fmt::Error)?
                    .copy_from_slice(s.as_bytes());
                self.1 = end;
                Ok(())
            }
        }
        let mut buf = Buf([0; 9], 0);
        fmt::Write::write_fmt(&mut buf, format_args!("{self}")).expect("period texts fit 9 bytes");
        buf.0
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Retention {
    pub months: u32,
    pub days: u32,
}

/// The last event time a thread worked out, with what it was worked out
/// from: increments come many to a second, and each asks again.
#[derive(Clone, Copy)]
struct LastEventTime {
    at_secs: i64,
    now_secs: i64,
    retention: Retention,
    event_time: EventTime,
}

thread_local! {
    static LAST_EVENT_TIME: std::cell::Cell<LastEventTime> = const {
        std::cell::Cell::new(LastEventTime {
            // No event is dated before 2000 (`MIN_EVENT_SECS`): never a hit.
            at_secs: i64::MIN,
            now_secs: i64::MIN,
            retention: Retention { months: 0, days: 0 },
            event_time: EventTime {
                secs: i64::MIN,
                month: MonthKey(0),
                day: DayKey(0),
                stored_secs: 0,
                into_day: 0,
                horizon: (MonthKey(0), DayKey(0)),
            },
        })
    };
}

impl Retention {
    /// An event at `at_secs` seen when the clock reads `now_secs`: this
    /// thread's last answer when asked the same again (the common case, as
    /// increments are dated by the clock's cached second), else worked out.
    #[inline]
    pub(crate) fn event_time(&self, at_secs: i64, now_secs: i64) -> EventTime {
        LAST_EVENT_TIME.with(|last| {
            let cached = last.get();
            if cached.at_secs == at_secs && cached.now_secs == now_secs && cached.retention == *self
            {
                return cached.event_time;
            }
            let event_time = self.work_out_event_time(at_secs, now_secs);
            last.set(LastEventTime {
                at_secs,
                now_secs,
                retention: *self,
                event_time,
            });
            event_time
        })
    }

    /// [`Retention::event_time`] worked out; the calendar once when the
    /// event and the clock fall on the same day.
    #[cold]
    #[inline(never)]
    fn work_out_event_time(&self, at_secs: i64, now_secs: i64) -> EventTime {
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

    #[inline]
    fn horizon_from(&self, month: MonthKey, day: DayKey) -> Horizon {
        let month = i64::from(month.0) - i64::from(self.months) + 1;
        let day = i64::from(day.0) - i64::from(self.days) + 1;
        (MonthKey(month.max(0) as u32), DayKey(day.max(0) as u32))
    }
}

/// An event time with its bucket keys and the retention horizon, worked
/// out once per batch rather than once per cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EventTime {
    secs: i64,
    month: MonthKey,
    day: DayKey,
    /// `secs` as cells store it (event times fall in 2000..2100).
    stored_secs: u32,
    /// Seconds since the start of `day`.
    into_day: u32,
    horizon: Horizon,
}

impl EventTime {
    /// The event time `secs` (Unix seconds, within the supported range),
    /// with buckets older than `horizon` out of retention.
    #[inline]
    pub(crate) fn new(secs: i64, horizon: Horizon) -> EventTime {
        EventTime {
            secs,
            month: MonthKey::of(secs),
            day: DayKey::of(secs),
            stored_secs: u32::try_from(secs).unwrap_or(u32::MAX),
            into_day: secs.rem_euclid(crate::calendar::SECS_PER_DAY) as u32,
            horizon,
        }
    }

    /// The event time, Unix seconds.
    pub(crate) fn secs(&self) -> i64 {
        self.secs
    }

    /// Whether both the event's month and its day are within retention,
    /// so that an increment writes a bucket of each.
    #[inline]
    pub(crate) fn is_retained(&self) -> bool {
        self.month >= self.horizon.0 && self.day >= self.horizon.1
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
    #[inline]
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

    /// `self + other` for amounts already checked against overflow (or
    /// sums of additions each checked: the wrapped sum then adds up to
    /// exactly the checked result).
    #[inline]
    pub(crate) fn wrapping_add(self, other: Amount) -> Amount {
        Amount {
            count: self.count.wrapping_add(other.count),
            value: self.value.wrapping_add(other.value),
        }
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
    fn event_times_are_the_same_remembered_or_worked_out() {
        let long = Retention {
            months: 24,
            days: 90,
        };
        let short = Retention { months: 1, days: 7 };
        let day = 86_400;
        let asks = [
            (long, NOV_27_2026, NOV_27_2026),
            (long, NOV_27_2026, NOV_27_2026),
            (short, NOV_27_2026, NOV_27_2026),
            (long, NOV_27_2026 - 40 * day, NOV_27_2026),
            (long, NOV_27_2026 - 40 * day, NOV_27_2026 + 400 * day),
            (short, NOV_27_2026 - 40 * day, NOV_27_2026 + 400 * day),
            (short, NOV_27_2026 + 1, NOV_27_2026 + 1),
            (long, NOV_27_2026 + 1, NOV_27_2026 + 1),
        ];
        for (retention, at, now) in asks {
            let expected = EventTime::new(at, retention.horizon(now));
            assert_eq!(retention.event_time(at, now), expected, "{at} {now}");
        }
    }

    #[test]
    fn text_keys_order_as_the_texts_do() {
        let texts = [
            "total",
            "last7Days",
            "2611",
            "261127",
            "2612",
            "261201",
            "0001",
            "991231",
        ];
        let mut by_key: Vec<Period> = texts.iter().map(|t| t.parse().unwrap()).collect();
        by_key.sort_by_key(Period::text_key);
        let mut by_text = texts.to_vec();
        by_text.sort();
        let sorted: Vec<String> = by_key.iter().map(Period::to_string).collect();
        assert_eq!(sorted, by_text);
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
