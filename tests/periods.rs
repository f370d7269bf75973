//! Periods and retention.
//!
//! Pins: every accepted increment lands in `total`, its month bucket `YYMM`
//! and its day bucket `YYMMDD` (UTC); months are kept for
//! `monthly_retention` months counting the current one (default 24) and days
//! for `daily_retention` days counting today (default 90, at least 7, else
//! `build` fails); dropped buckets keep their amounts in `total`; a backfill
//! older than retention lands in `total` only (crate decision);
//! `last7Days` is today plus the six days before (engine clock) with the
//! latest `lastUpdated` among them, and yields no row when empty.

use std::time::Duration;

mod stores;

use stores::{Store, StoreKind};
use tally::{Error, Increment, ManualClock, Period, Selector};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC
const DAY: i64 = 86_400;

fn engine_with(kind: StoreKind, clock: &ManualClock, months: u32, days: u32) -> Store {
    let engine = Store::builder(kind)
        .clock(clock.clone())
        .monthly_retention(months)
        .daily_retention(days)
        .build();
    engine.register([("c", "/")]).unwrap();
    engine
}

fn engine(kind: StoreKind, clock: &ManualClock) -> Store {
    engine_with(kind, clock, 24, 90)
}

fn at(engine: &Store, unix_secs: i64, count: i64) {
    engine
        .increment_at("u", &[Increment::new("c", "/").count(count)], unix_secs)
        .unwrap();
}

/// (period, count) of the root cell for a period selector.
fn read(engine: &Store, period: &str) -> Vec<(String, i64)> {
    engine
        .get("u", &[Selector::class("c").path("/").period(period)])
        .unwrap()
        .into_iter()
        .map(|r| (r.period.to_string(), r.count))
        .collect()
}

fn p(rows: &[(&str, i64)]) -> Vec<(String, i64)> {
    rows.iter().map(|&(k, c)| (k.to_owned(), c)).collect()
}

store_tests! {
    fn keys_are_yymm_and_yymmdd_in_utc(kind) {
        let clock = ManualClock::new(NOW);
        let engine = engine(kind, &clock);
        at(&engine, 1_796_083_199, 1); // 2026-11-30 23:59:59Z
        at(&engine, 1_796_083_200, 2); // 2026-12-01 00:00:00Z
        assert_eq!(read(&engine, "2611"), p(&[("2611", 1)]));
        assert_eq!(read(&engine, "261130"), p(&[("261130", 1)]));
        assert_eq!(read(&engine, "2612"), p(&[("2612", 2)]));
        assert_eq!(read(&engine, "261201"), p(&[("261201", 2)]));
        assert_eq!(read(&engine, "total"), p(&[("total", 3)]));
    }

    fn keys_cover_leap_days_and_the_century_edges(kind) {
        let clock = ManualClock::new(4_102_444_799); // 2099-12-31 23:59:59Z
        let engine = engine_with(kind, &clock, 1200, 40_000);
        at(&engine, 947_030_400, 1); // 2000-01-05
        at(&engine, 1_835_431_200, 2); // 2028-02-29 10:00
        at(&engine, 4_102_444_799, 4); // 2099-12-31
        assert_eq!(
            read(&engine, "regex('')"),
            p(&[
                ("0001", 1),
                ("000105", 1),
                ("2802", 2),
                ("280229", 2),
                ("9912", 4),
                ("991231", 4),
                ("total", 7),
            ])
        );
    }

    fn a_period_without_data_yields_no_row(kind) {
        let clock = ManualClock::new(NOW);
        let engine = engine(kind, &clock);
        at(&engine, NOW, 1);
        assert!(read(&engine, "2610").is_empty());
        assert!(read(&engine, "261126").is_empty());
        assert_eq!(read(&engine, "2611"), p(&[("2611", 1)]));
    }

    fn last7days_is_today_and_the_six_days_before(kind) {
        let clock = ManualClock::new(NOW);
        let engine = engine(kind, &clock);
        for days_ago in 0..10 {
            at(&engine, NOW - days_ago * DAY, 1 << days_ago);
        }
        let rows = engine
            .get("u", &[Selector::class("c").period("last7Days")])
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].period, Period::Last7Days);
        assert_eq!(rows[0].count, 0b111_1111);
        assert_eq!(rows[0].last_updated_timestamp, NOW);

        // A day later, today is empty and the window lost its oldest day.
        clock.advance(Duration::from_secs(DAY as u64));
        assert_eq!(read(&engine, "last7Days"), p(&[("last7Days", 0b11_1111)]));
        // Its lastUpdated is the latest event in the window.
        clock.advance(Duration::from_secs(5 * DAY as u64));
        let rows = engine
            .get("u", &[Selector::class("c").period("last7Days")])
            .unwrap();
        assert_eq!(rows[0].count, 0b1);
        assert_eq!(rows[0].last_updated_timestamp, NOW);
        // Once the window holds nothing, there is no row; total is intact.
        clock.advance(Duration::from_secs(DAY as u64));
        assert!(read(&engine, "last7Days").is_empty());
        assert_eq!(read(&engine, "total"), p(&[("total", (1 << 10) - 1)]));
    }

    fn last7days_uses_utc_day_boundaries(kind) {
        // Just after midnight: "six days before" starts at 00:00 six days ago.
        let clock = ManualClock::new(1_795_737_600 + 1); // 2026-11-27 00:00:01Z
        let engine = engine(kind, &clock);
        at(&engine, 1_795_737_600 - 6 * DAY, 1); // 2026-11-21 00:00:00
        at(&engine, 1_795_737_600 - 6 * DAY - 1, 10); // 2026-11-20 23:59:59
        assert_eq!(read(&engine, "last7Days"), p(&[("last7Days", 1)]));
    }

    fn last7days_works_with_the_minimum_daily_retention(kind) {
        let clock = ManualClock::new(NOW);
        let engine = engine_with(kind, &clock, 24, 7);
        for days_ago in 0..9 {
            at(&engine, NOW - days_ago * DAY, 1);
        }
        assert_eq!(read(&engine, "last7Days"), p(&[("last7Days", 7)]));
        assert_eq!(read(&engine, "regex('^\\d{6}$')").len(), 7);
        assert_eq!(read(&engine, "total"), p(&[("total", 9)]));
    }

    fn daily_retention_below_seven_is_rejected_by_build(kind) {
        for days in [0, 1, 6] {
            let err = Store::builder(kind)
                .daily_retention(days)
                .try_build()
                .unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{days}");
            assert!(err.to_string().contains('7'), "{err}");
        }
        Store::builder(kind).daily_retention(7).build();
        assert!(matches!(
            Store::builder(kind).monthly_retention(0).try_build(),
            Err(Error::Config(_))
        ));
    }

    fn default_retention_is_24_months_and_90_days(kind) {
        let clock = ManualClock::new(NOW);
        let engine = engine(kind, &clock);
        assert_eq!(engine.config().monthly_retention, 24);
        assert_eq!(engine.config().daily_retention, 90);
        at(&engine, NOW - 89 * DAY, 1); // kept: the 90th day counting today
        at(&engine, NOW - 90 * DAY, 2); // older than 90 days: total only
        at(&engine, 1_734_220_800, 4); // 2024-12-15: the 24th month counting this one
        at(&engine, 1_732_924_800, 8); // 2024-11-30: the 25th month
        let days = read(&engine, "regex('^\\d{6}$')");
        assert_eq!(days, p(&[("260830", 1)]));
        let months = read(&engine, "regex('^\\d{4}$')");
        assert_eq!(months, p(&[("2412", 4), ("2608", 3)]));
        assert_eq!(read(&engine, "total"), p(&[("total", 15)]));
    }

    fn buckets_drop_out_as_the_clock_moves_but_totals_stay(kind) {
        let clock = ManualClock::new(NOW);
        let engine = engine_with(kind, &clock, 3, 10);
        at(&engine, NOW - 60 * DAY, 1); // 2026-09-28
        at(&engine, NOW - 30 * DAY, 2); // 2026-10-28
        at(&engine, NOW, 4); // 2026-11-27
        assert_eq!(
            read(&engine, "regex('^\\d{4}$')"),
            p(&[("2609", 1), ("2610", 2), ("2611", 4)])
        );
        assert_eq!(read(&engine, "regex('^\\d{6}$')"), p(&[("261127", 4)]));

        clock.advance(Duration::from_secs(35 * DAY as u64)); // 2027-01-01
        assert_eq!(read(&engine, "regex('^\\d{4}$')"), p(&[("2611", 4)]));
        assert!(read(&engine, "regex('^\\d{6}$')").is_empty());
        assert!(read(&engine, "2609").is_empty());
        assert_eq!(read(&engine, "total"), p(&[("total", 7)]));

        // New increments still land in fresh buckets after the old ones dropped.
        at(&engine, NOW + 35 * DAY, 16);
        assert_eq!(
            read(&engine, "regex('')"),
            p(&[("2611", 4), ("2701", 16), ("270101", 16), ("total", 23)])
        );
    }

    fn a_backfill_older_than_retention_lands_in_total_only(kind) {
        let clock = ManualClock::new(NOW);
        let engine = engine_with(kind, &clock, 2, 7);
        at(&engine, NOW - 100 * DAY, 5);
        assert_eq!(read(&engine, "regex('')"), p(&[("total", 5)]));
        let rows = engine.get("u", &[]).unwrap();
        assert_eq!(rows[0].last_updated_timestamp, NOW - 100 * DAY);
    }

    fn month_and_day_buckets_carry_their_own_last_updated(kind) {
        let clock = ManualClock::new(NOW);
        let engine = engine(kind, &clock);
        at(&engine, NOW - 2 * DAY, 1);
        at(&engine, NOW - 3 * DAY, 1);
        let rows = engine
            .get("u", &[Selector::class("c").period("regex('')")])
            .unwrap();
        let stamps: Vec<(String, i64)> = rows
            .iter()
            .map(|r| (r.period.to_string(), r.last_updated_timestamp))
            .collect();
        assert_eq!(
            stamps,
            [
                ("2611".to_owned(), NOW - 2 * DAY),
                ("261124".to_owned(), NOW - 3 * DAY),
                ("261125".to_owned(), NOW - 2 * DAY),
                ("total".to_owned(), NOW - 2 * DAY),
            ]
        );
    }

    fn last7days_saturates_instead_of_wrapping(kind) {
        // Crate decision: partial sums can exceed i64 after corrections; they saturate.
        let clock = ManualClock::new(NOW);
        let engine = engine(kind, &clock);
        at(&engine, NOW - 10 * DAY, -i64::MAX);
        at(&engine, NOW - DAY, i64::MAX);
        at(&engine, NOW, i64::MAX);
        assert_eq!(read(&engine, "total"), p(&[("total", i64::MAX)]));
        assert_eq!(read(&engine, "last7Days"), p(&[("last7Days", i64::MAX)]));
    }

    fn a_backfill_into_a_dropped_bucket_is_not_rejected_for_overflow(kind) {
        // Crate decision: a backfill older than retention lands in `total` only,
        // so a stale bucket it would have landed in cannot make it overflow.
        let clock = ManualClock::new(1_731_672_000); // 2024-11-15 12:00Z
        let engine = engine(kind, &clock);
        at(&engine, 1_731_672_000, i64::MAX); // 2411 and 241115 hold MAX
        at(&engine, 1_728_561_600, -10); // 2024-10-10: total MAX - 10
        clock.set(NOW); // 2026-11: 2411 is out of the 24-month retention
        assert_eq!(read(&engine, "regex('^\\d{4}$')"), p(&[]));
        engine
            .increment_at("u", &[Increment::new("c", "/").count(5)], 1_732_104_000)
            .unwrap(); // 2024-11-20, older than retention
        assert_eq!(read(&engine, "total"), p(&[("total", i64::MAX - 5)]));
    }
}

#[test]
fn period_keys_parse_and_print() {
    for text in [
        "total",
        "last7Days",
        "2611",
        "261127",
        "0001",
        "991231",
        "280229",
    ] {
        assert_eq!(text.parse::<Period>().unwrap().to_string(), text);
    }
    for bad in [
        "2613",
        "2600",
        "261131",
        "270229",
        "26112",
        "Total",
        "last7days",
        "-611",
    ] {
        let err = bad.parse::<Period>().unwrap_err();
        assert!(matches!(err, Error::InvalidPeriod { .. }), "{bad}");
        assert_eq!(err.code().number(), 400006);
    }
}
