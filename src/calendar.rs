//! UTC calendar arithmetic: days since the epoch, months, and the
//! platform's period keys (`YYMM`, `YYMMDD`) and timestamp formats.
//!
//! Dates use Howard Hinnant's `days_from_civil` algorithm; no time-zone
//! database is involved because every period is UTC.

/// 2000-01-01T00:00:00Z, the first supported event time.
pub(crate) const MIN_EVENT_SECS: i64 = 946_684_800;
/// 2100-01-01T00:00:00Z, the first unsupported event time (keys have two-digit years).
pub(crate) const END_EVENT_SECS: i64 = 4_102_444_800;

use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) const SECS_PER_DAY: i64 = 86_400;

/// A UTC calendar date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Date {
    pub year: i64,
    pub month: u32,
    pub day: u32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (days since 1970-01-01).
pub(crate) fn civil_from_days(days: i64) -> Date {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Date { year, month, day }
}

/// The day number of a Unix time.
#[inline]
pub(crate) fn day_of(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(SECS_PER_DAY)
}

/// Months since January 2000 of a date (January 2000 is 0).
pub(crate) fn month_index(date: Date) -> i64 {
    (date.year - 2000) * 12 + i64::from(date.month) - 1
}

/// The month index (months since January 2000, clamped at 0) of a day
/// number.
///
/// Increments ask this for the same day over and over, so the answer for
/// the last day asked is remembered in one atomic word, shared by every
/// engine (the mapping is a pure function): a hit costs one load.
#[inline]
pub(crate) fn month_of_day(day: i64) -> u32 {
    static LAST: AtomicU64 = AtomicU64::new(u64::MAX);
    let Ok(key) = u32::try_from(day) else {
        return month_index(civil_from_days(day)).max(0) as u32;
    };
    let last = LAST.load(Ordering::Relaxed);
    if (last >> 32) as u32 == key && key != u32::MAX {
        return last as u32;
    }
    let month = month_index(civil_from_days(day)).clamp(0, i64::from(u32::MAX)) as u32;
    LAST.store(u64::from(key) << 32 | u64::from(month), Ordering::Relaxed);
    month
}

/// Whether a day/month/year triple is a real date.
pub(crate) fn is_valid_date(year: i64, month: u32, day: u32) -> bool {
    (1..=12).contains(&month) && day >= 1 && {
        let next = if month == 12 {
            days_from_civil(year + 1, 1, 1)
        } else {
            days_from_civil(year, month + 1, 1)
        };
        i64::from(day) <= next - days_from_civil(year, month, 1)
    }
}

/// `yyyy-mm-dd hh:mm:ssZ`, the `lastUpdated` format of a row.
pub(crate) fn format_last_updated(unix_secs: i64) -> String {
    let date = civil_from_days(day_of(unix_secs));
    let secs = unix_secs.rem_euclid(SECS_PER_DAY);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        date.year,
        date.month,
        date.day,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// ISO 8601 with milliseconds, `2015-03-22T11:42:25.943Z`, the REST `time` field.
pub(crate) fn format_iso_millis(unix_millis: i64) -> String {
    let secs = unix_millis.div_euclid(1000);
    let date = civil_from_days(day_of(secs));
    let in_day = secs.rem_euclid(SECS_PER_DAY);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        date.year,
        date.month,
        date.day,
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60,
        unix_millis.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 1, 1) * SECS_PER_DAY, MIN_EVENT_SECS);
        assert_eq!(days_from_civil(2100, 1, 1) * SECS_PER_DAY, END_EVENT_SECS);
        for days in [-1000, 0, 10_957, 20_000, 20_419, 47_482] {
            let d = civil_from_days(days);
            assert_eq!(days_from_civil(d.year, d.month, d.day), days);
        }
        assert_eq!(
            civil_from_days(days_from_civil(2024, 2, 29)),
            Date {
                year: 2024,
                month: 2,
                day: 29
            }
        );
    }

    #[test]
    fn month_of_day_matches_the_calendar_whatever_was_asked_before() {
        for day in [10_957, 20_784, 20_784, 20_785, 47_481, 0, -5, 20_784, 31] {
            let expected = month_index(civil_from_days(day)).max(0) as u32;
            assert_eq!(month_of_day(day), expected, "day {day}");
        }
        assert_eq!(month_of_day(20_784), 26 * 12 + 10); // 2026-11-27
    }

    #[test]
    fn validates_dates() {
        assert!(is_valid_date(2024, 2, 29));
        assert!(!is_valid_date(2026, 2, 29));
        assert!(!is_valid_date(2026, 13, 1));
        assert!(!is_valid_date(2026, 4, 31));
        assert!(!is_valid_date(2026, 4, 0));
    }

    #[test]
    fn formats_timestamps() {
        assert_eq!(format_last_updated(0), "1970-01-01 00:00:00Z");
        assert_eq!(
            format_iso_millis(1_427_024_545_943),
            "2015-03-22T11:42:25.943Z"
        );
        assert_eq!(format_last_updated(1_427_024_545), "2015-03-22 11:42:25Z");
    }
}
