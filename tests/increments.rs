//! Increments.
//!
//! Pins: a batch is validated whole before any effect and the error names
//! the first bad entry (`Error::Entry { index }`); a rejected batch (bad
//! entry, overflow of a total, month or day amount, batch too large, empty
//! batch) changes nothing; duplicates in a batch both apply; count and value
//! are signed (negative corrects); `max_batch` defaults to 1,000 and is
//! configurable; explicit event times (`increment_at`) date the buckets and
//! `lastUpdated` is the latest event time seen; event times outside
//! 2000..2100 are rejected (crate decision); counter handles keep working
//! across registry changes and are rejected once their counter is unregistered.

mod stores;

use stores::{Store, StoreKind};
use tally::{AmountField, CounterRow, Error, Increment, ManualClock, Selector, Tally};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC
const DAY: i64 = 86_400;

fn engine(kind: StoreKind) -> Store {
    let engine = Store::on_clock(kind, &ManualClock::new(NOW));
    engine
        .register([("c", "/a"), ("c", "/a/b"), ("c", "/x")])
        .unwrap();
    engine
}

fn totals(engine: &Store, uid: &str) -> Vec<(String, i64, i64)> {
    engine
        .get(uid, &[])
        .unwrap()
        .into_iter()
        .map(|r| (r.path, r.count, r.value))
        .collect()
}

fn t(rows: &[(&str, i64, i64)]) -> Vec<(String, i64, i64)> {
    rows.iter().map(|&(p, c, v)| (p.to_owned(), c, v)).collect()
}

/// Every stored row of a subject: totals, months and days.
fn everything(engine: &Store, uid: &str) -> Vec<CounterRow> {
    engine
        .get(uid, &[Selector::class("regex('')").period("regex('')")])
        .unwrap()
}

store_tests! {
    fn defaults_are_count_one_value_zero(kind) {
        let engine = engine(kind);
        engine.increment("u", &[Increment::new("c", "/x")]).unwrap();
        engine
            .increment("u", &[Increment::new("c", "/x").count(2).value(5)])
            .unwrap();
        assert_eq!(totals(&engine, "u"), t(&[("/", 3, 5), ("/x", 3, 5)]));
    }


    fn negative_amounts_correct(kind) {
        let engine = engine(kind);
        engine
            .increment("u", &[Increment::new("c", "/x").count(5).value(100)])
            .unwrap();
        engine
            .increment("u", &[Increment::new("c", "/x").count(-7).value(-30)])
            .unwrap();
        assert_eq!(totals(&engine, "u"), t(&[("/", -2, 70), ("/x", -2, 70)]));
    }


    fn duplicates_in_a_batch_both_apply(kind) {
        let engine = engine(kind);
        let entry = Increment::new("c", "/a/b").value(10);
        engine.increment("u", &[entry, entry]).unwrap();
        assert_eq!(
            totals(&engine, "u"),
            t(&[("/", 2, 20), ("/a", 2, 20), ("/a/b", 2, 20)])
        );
    }


    fn a_bad_entry_rejects_the_whole_batch_and_is_named(kind) {
        let engine = engine(kind);
        engine.increment("u", &[Increment::new("c", "/x")]).unwrap();
        let before = everything(&engine, "u");
        let batch = [
            Increment::new("c", "/a"),
            Increment::new("c", "/x").count(4),
            Increment::new("c", "/unregistered"),
            Increment::new("c", "/a/b/c"),
        ];
        let err = engine.increment("u", &batch).unwrap_err();
        assert!(matches!(err, Error::Entry { index: 2, .. }), "{err:?}");
        assert!(matches!(
            err.root(),
            Error::NotRegistered { path, .. } if path == "/unregistered"
        ));
        assert_eq!(err.code().number(), 409011);
        assert!(err.to_string().starts_with("entry 2: "), "{err}");
        assert_eq!(everything(&engine, "u"), before);
    }


    fn a_rejected_batch_creates_no_subject(kind) {
        let engine = engine(kind);
        let err = engine
            .increment(
                "fresh",
                &[Increment::new("c", "/a"), Increment::new("nope", "/")],
            )
            .unwrap_err();
        assert!(matches!(err, Error::Entry { index: 1, .. }));
        if let Some(engine) = engine.embedded() {
            assert_eq!(engine.subject_count(), 0);
        }
        assert!(engine.get("fresh", &[]).unwrap().is_empty());
    }


    fn overflow_rejects_the_batch_with_nothing_applied(kind) {
        let engine = engine(kind);
        engine
            .increment("u", &[Increment::new("c", "/a").count(i64::MAX - 1)])
            .unwrap();
        let before = everything(&engine, "u");
        // Entry 0 alone fits; entry 1 on top of it overflows the `/a` cell.
        let err = engine
            .increment(
                "u",
                &[Increment::new("c", "/a"), Increment::new("c", "/a/b")],
            )
            .unwrap_err();
        assert!(matches!(err, Error::Entry { index: 1, .. }), "{err:?}");
        assert!(matches!(
            err.root(),
            Error::Overflow { class, path, field: AmountField::Count }
                if class == "c" && path == "/a"
        ));
        assert_eq!(err.code().number(), 400006);
        assert_eq!(everything(&engine, "u"), before);
    }


    fn the_first_bad_entry_is_named_whichever_check_finds_it(kind) {
        let engine = engine(kind);
        engine
            .increment("u", &[Increment::new("c", "/a").count(i64::MAX)])
            .unwrap();
        let before = everything(&engine, "u");
        let entry_of = |batch: &[Increment<'_>]| match engine.increment("u", batch).unwrap_err() {
            Error::Entry { index, source } => (index, source.code().number()),
            other => panic!("not an entry error: {other:?}"),
        };
        // Entry 0 overflows `/a`; entry 1 names an unregistered path, found
        // while resolving names, before any overflow check: entry 0 is named.
        let overflowing = Increment::new("c", "/a");
        assert_eq!(
            entry_of(&[overflowing, Increment::new("c", "/nope")]),
            (0, 400_006)
        );
        assert_eq!(
            entry_of(&[overflowing, Increment::new("c", "bad")]),
            (0, 400_006)
        );
        // The other way round, the unregistered entry comes first.
        assert_eq!(
            entry_of(&[Increment::new("c", "/nope"), overflowing]),
            (0, 409_011)
        );
        // A fitting entry (adding nothing: `/` is at the maximum too), then an
        // unregistered one, then an overflowing one: the unregistered one is first.
        let fitting = Increment::new("c", "/x").count(0);
        assert_eq!(
            entry_of(&[fitting, Increment::new("c", "/nope"), overflowing]),
            (1, 409_011)
        );
        // Overflow by accumulation before the unregistered entry, on a subject
        // that has no cells yet.
        let half = Increment::new("c", "/x").count(i64::MAX / 2 + 1);
        let err = engine
            .increment("fresh", &[half, half, Increment::new("c", "/nope")])
            .unwrap_err();
        assert!(matches!(err, Error::Entry { index: 1, .. }), "{err:?}");
        assert!(matches!(err.root(), Error::Overflow { .. }), "{err:?}");
        assert_eq!(everything(&engine, "u"), before);
        assert!(engine.get("fresh", &[]).unwrap().is_empty());
    }


    fn overflow_names_the_value_field_and_the_rolled_up_cell(kind) {
        let engine = engine(kind);
        engine
            .increment("u", &[Increment::new("c", "/x").value(i64::MIN)])
            .unwrap();
        // `/a` is empty but rolls up to `/`, which holds i64::MIN.
        let err = engine
            .increment("u", &[Increment::new("c", "/a").value(-1)])
            .unwrap_err();
        assert!(matches!(
            err.root(),
            Error::Overflow { path, field: AmountField::Value, .. } if path == "/"
        ));
        let message = err.to_string();
        assert!(
            message.contains("value") && message.contains('/'),
            "{message}"
        );
    }


    fn overflow_of_a_month_bucket_is_rejected_even_if_the_total_fits(kind) {
        let engine = engine(kind);
        engine
            .increment_at("u", &[Increment::new("c", "/x").count(-10)], NOW - 40 * DAY)
            .unwrap();
        engine
            .increment("u", &[Increment::new("c", "/x").count(i64::MAX)])
            .unwrap();
        // total = MAX - 10 would fit +5, this month's bucket (MAX) would not.
        let err = engine
            .increment("u", &[Increment::new("c", "/x").count(5)])
            .unwrap_err();
        assert!(matches!(
            err.root(),
            Error::Overflow {
                field: AmountField::Count,
                ..
            }
        ));
        let rows = engine.get("u", &[Selector::class("c").path("/x")]).unwrap();
        assert_eq!(rows[0].count, i64::MAX - 10);
    }


    fn a_batch_whose_running_sums_fit_is_accepted(kind) {
        // Crate decision: entry i is rejected only when adding it after entries
        // 0..i would overflow an amount of a cell. Here the cell holds -5 in
        // total, month and day; after entry 0 it holds MAX-5, after entry 1
        // MAX-2: nothing overflows.
        let engine = engine(kind);
        engine
            .increment("u", &[Increment::new("c", "/x").count(-5)])
            .unwrap();
        engine
            .increment(
                "u",
                &[
                    Increment::new("c", "/x").count(i64::MAX),
                    Increment::new("c", "/x").count(3),
                ],
            )
            .unwrap();
        assert_eq!(
            totals(&engine, "u"),
            t(&[("/", i64::MAX - 2, 0), ("/x", i64::MAX - 2, 0)])
        );
    }


    fn max_batch_defaults_to_1000_and_is_configurable(kind) {
        let engine = engine(kind);
        let batch = vec![Increment::new("c", "/x"); 1000];
        engine.increment("u", &batch).unwrap();
        let too_many = vec![Increment::new("c", "/x"); 1001];
        let err = engine.increment("u", &too_many).unwrap_err();
        assert!(matches!(
            err,
            Error::BatchTooLarge {
                len: 1001,
                max: 1000
            }
        ));
        assert_eq!(err.code().number(), 400006);
        assert_eq!(totals(&engine, "u"), t(&[("/", 1000, 0), ("/x", 1000, 0)]));

        let small = Store::builder(kind).max_batch(2).build();
        small.register([("c", "/")]).unwrap();
        small
            .increment("u", &[Increment::new("c", "/"); 2])
            .unwrap();
        assert!(matches!(
            small.increment("u", &[Increment::new("c", "/"); 3]),
            Err(Error::BatchTooLarge { len: 3, max: 2 })
        ));
        assert!(matches!(
            Store::builder(kind).max_batch(0).try_build(),
            Err(Error::Config(_))
        ));
    }


    fn an_empty_batch_is_a_missing_parameter(kind) {
        let engine = engine(kind);
        let err = engine.increment("u", &[]).unwrap_err();
        assert!(matches!(err, Error::EmptyBatch));
        assert_eq!(err.code().number(), 400002);
    }


    fn explicit_event_time_dates_the_buckets(kind) {
        let engine = engine(kind);
        let at = 1_790_000_000; // 2026-09-21 14:13:20 UTC
        engine
            .increment_at("u", &[Increment::new("c", "/x").count(2)], at)
            .unwrap();
        let rows = engine
            .get("u", &[Selector::class("c").path("/x").period("regex('')")])
            .unwrap();
        let periods: Vec<(String, i64)> = rows
            .iter()
            .map(|r| (r.period.to_string(), r.count))
            .collect();
        assert_eq!(
            periods,
            [
                ("2609".to_owned(), 2),
                ("260921".to_owned(), 2),
                ("total".to_owned(), 2)
            ]
        );
        assert!(rows.iter().all(|r| r.last_updated_timestamp == at));
        assert_eq!(rows[0].last_updated, "2026-09-21 14:13:20Z");
    }


    fn last_updated_is_the_latest_event_time_seen(kind) {
        let engine = engine(kind);
        engine.increment("u", &[Increment::new("c", "/x")]).unwrap();
        // A backfill of an earlier event does not move lastUpdated back.
        engine
            .increment_at("u", &[Increment::new("c", "/x")], NOW - 3 * DAY)
            .unwrap();
        let rows = engine.get("u", &[Selector::class("c").path("/x")]).unwrap();
        assert_eq!(rows[0].count, 2);
        assert_eq!(rows[0].last_updated_timestamp, NOW);
        // A later event does.
        engine
            .increment_at("u", &[Increment::new("c", "/x")], NOW + 60)
            .unwrap();
        let rows = engine.get("u", &[Selector::class("c").path("/x")]).unwrap();
        assert_eq!(rows[0].last_updated_timestamp, NOW + 60);
        assert_eq!(rows[0].last_updated, "2026-11-27 12:01:00Z");
    }


    fn event_times_outside_2000_to_2100_are_rejected(kind) {
        let engine = engine(kind);
        let first = 946_684_800; // 2000-01-01T00:00:00Z
        let end = 4_102_444_800; // 2100-01-01T00:00:00Z
        engine
            .increment_at("u", &[Increment::new("c", "/x")], first)
            .unwrap();
        engine
            .increment_at("u", &[Increment::new("c", "/x")], end - 1)
            .unwrap();
        for bad in [first - 1, end, 0, -1, i64::MIN, i64::MAX] {
            let err = engine
                .increment_at("u", &[Increment::new("c", "/x")], bad)
                .unwrap_err();
            assert!(
                matches!(err, Error::TimestampOutOfRange { unix_secs } if unix_secs == bad),
                "{bad}: {err:?}"
            );
            assert_eq!(err.code().number(), 400006);
        }
        assert_eq!(totals(&engine, "u"), t(&[("/", 2, 0), ("/x", 2, 0)]));
    }
}

/// The embedded engine, for counter handles (which only it has).
fn embedded_engine() -> Tally {
    let engine = Tally::builder()
        .clock(ManualClock::new(NOW))
        .build()
        .unwrap();
    engine
        .register([("c", "/a"), ("c", "/a/b"), ("c", "/x")])
        .unwrap();
    engine
}

fn handle_totals(engine: &Tally, uid: &str) -> Vec<(String, i64, i64)> {
    engine
        .get(uid, &[])
        .unwrap()
        .into_iter()
        .map(|r| (r.path, r.count, r.value))
        .collect()
}

#[test]
fn handles_increment_like_entries() {
    let engine = embedded_engine();
    let handle = engine.counter("c", "/a/b").unwrap();
    engine.increment_counter("u", &handle, 2, 7).unwrap();
    assert_eq!(
        handle_totals(&engine, "u"),
        t(&[("/", 2, 7), ("/a", 2, 7), ("/a/b", 2, 7)])
    );
    assert!(matches!(
        engine.counter("c", "/nope").unwrap_err(),
        Error::NotRegistered { .. }
    ));
    assert!(matches!(
        engine.counter("zzz", "/").unwrap_err(),
        Error::UnknownClass { .. }
    ));
}

#[test]
fn a_handle_follows_registry_changes() {
    let engine = embedded_engine();
    engine.register([("c", "/q/r")]).unwrap();
    let handle = engine.counter("c", "/q/r").unwrap();
    engine.increment_counter("u", &handle, 1, 0).unwrap();
    // Registering the parent afterwards: the old handle now rolls up to it.
    engine.register([("c", "/q"), ("other", "/z")]).unwrap();
    engine.increment_counter("u", &handle, 1, 0).unwrap();
    assert_eq!(
        handle_totals(&engine, "u"),
        t(&[("/", 2, 0), ("/q", 1, 0), ("/q/r", 2, 0)])
    );
    // Unregistered: rejected, and nothing applied.
    engine.unregister([("c", "/q/r")]).unwrap();
    let err = engine.increment_counter("u", &handle, 1, 0).unwrap_err();
    assert!(matches!(err.root(), Error::NotRegistered { path, .. } if path == "/q/r"));
    assert_eq!(err.code().number(), 409011);
    // Registered again: the same handle works again.
    engine.register([("c", "/q/r")]).unwrap();
    engine.increment_counter("u", &handle, 1, 0).unwrap();
    assert_eq!(
        handle_totals(&engine, "u"),
        t(&[("/", 3, 0), ("/q", 2, 0), ("/q/r", 3, 0)])
    );
}

#[test]
fn a_handle_stops_rolling_up_to_an_unregistered_parent() {
    let engine = embedded_engine();
    let handle = engine.counter("c", "/a/b").unwrap();
    engine.unregister([("c", "/a")]).unwrap();
    engine.increment_counter("u", &handle, 1, 0).unwrap();
    assert_eq!(
        handle_totals(&engine, "u"),
        t(&[("/", 1, 0), ("/a/b", 1, 0)])
    );
}

#[test]
fn a_handle_checks_overflow_and_time() {
    let engine = embedded_engine();
    let handle = engine.counter("c", "/x").unwrap();
    engine.increment_counter("u", &handle, i64::MAX, 0).unwrap();
    let err = engine.increment_counter("u", &handle, 1, 0).unwrap_err();
    assert!(matches!(err.root(), Error::Overflow { .. }));
    let err = engine
        .increment_counter_at("u", &handle, 1, 0, 0)
        .unwrap_err();
    assert!(matches!(err, Error::TimestampOutOfRange { .. }));
    assert_eq!(
        handle_totals(&engine, "u"),
        t(&[("/", i64::MAX, 0), ("/x", i64::MAX, 0)])
    );
}

#[test]
fn a_handle_of_another_engine_is_rejected() {
    let one = embedded_engine();
    let two = embedded_engine();
    let handle = one.counter("c", "/x").unwrap();
    let err = two.increment_counter("u", &handle, 1, 0).unwrap_err();
    assert!(matches!(err, Error::ForeignHandle));
    assert!(two.get("u", &[]).unwrap().is_empty());
    // A clone of an engine is the same engine.
    one.clone().increment_counter("u", &handle, 1, 0).unwrap();
    assert_eq!(one.get("u", &[]).unwrap().len(), 2);
}

#[test]
fn a_handle_of_a_system_class_path_needs_no_registration() {
    let engine = Tally::builder()
        .clock(ManualClock::new(NOW))
        .system_classes(["_logins"])
        .build()
        .unwrap();
    let handle = engine.counter("_logins", "/web/eu").unwrap();
    engine.increment_counter("u", &handle, 1, 0).unwrap();
    engine.register([("other", "/")]).unwrap(); // the registry changes
    engine.increment_counter("u", &handle, 1, 0).unwrap();
    assert_eq!(
        handle_totals(&engine, "u"),
        t(&[("/", 2, 0), ("/web", 2, 0), ("/web/eu", 2, 0)])
    );
}
