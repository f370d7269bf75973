//! Reading counters.
//!
//! Pins: class, path and period selectors are exact or `regex('…')`
//! (unanchored searches); an absent path selects every path of the class;
//! the default period is `total`; a period regex runs over the stored keys
//! (`total`, months, days); an empty selector list reads every counter,
//! period `total`; rows are sorted by class, path, then period text, without
//! duplicates; `lastUpdated` is `yyyy-mm-dd hh:mm:ssZ` with the same instant
//! in `lastUpdatedTimestamp`; an unknown subject yields an empty list; bad,
//! oversized or pathological expressions are 400006 errors, never a panic;
//! `CounterRow` serialises with the platform's field names.

mod stores;

use stores::{Store, StoreKind};
use tally::{CounterRow, Error, Increment, MAX_REGEX_BYTES, ManualClock, Period, Selector};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC
const DAY: i64 = 86_400;

/// shares: /, /news, /news/sport, /video; _purchases: /, /shop.
fn engine(kind: StoreKind) -> Store {
    let engine = Store::on_clock(kind, &ManualClock::new(NOW));
    engine
        .register([
            ("shares", "/news"),
            ("shares", "/news/sport"),
            ("shares", "/video"),
            ("_purchases", "/shop"),
        ])
        .unwrap();
    engine
        .increment(
            "u",
            &[
                Increment::new("shares", "/news/sport").count(2),
                Increment::new("shares", "/video"),
                Increment::new("_purchases", "/shop").value(300),
            ],
        )
        .unwrap();
    engine
        .increment_at("u", &[Increment::new("shares", "/news")], NOW - 40 * DAY)
        .unwrap();
    engine
}

fn keys(rows: &[CounterRow]) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|r| (r.class.clone(), r.path.clone(), r.period.to_string()))
        .collect()
}

fn k(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|&(c, p, q)| (c.to_owned(), p.to_owned(), q.to_owned()))
        .collect()
}

fn get(engine: &Store, selectors: &[Selector]) -> Vec<(String, String, String)> {
    keys(&engine.get("u", selectors).unwrap())
}

store_tests! {
    fn an_empty_selector_list_reads_every_total_sorted(kind) {
        let rows = engine(kind).get("u", &[]).unwrap();
        assert_eq!(
            keys(&rows),
            k(&[
                ("_purchases", "/", "total"),
                ("_purchases", "/shop", "total"),
                ("shares", "/", "total"),
                ("shares", "/news", "total"),
                ("shares", "/news/sport", "total"),
                ("shares", "/video", "total"),
            ])
        );
        let amounts: Vec<(i64, i64)> = rows.iter().map(|r| (r.count, r.value)).collect();
        assert_eq!(
            amounts,
            [(1, 300), (1, 300), (4, 0), (3, 0), (2, 0), (1, 0)]
        );
    }

    fn exact_class_path_and_period(kind) {
        let engine = engine(kind);
        let rows = engine
            .get(
                "u",
                &[Selector::class("shares").path("/news/sport").period("2611")],
            )
            .unwrap();
        assert_eq!(keys(&rows), k(&[("shares", "/news/sport", "2611")]));
        assert_eq!(rows[0].count, 2);
        assert_eq!(
            get(
                &engine,
                &[Selector::class("shares").path("/news").period("261018")]
            ),
            k(&[("shares", "/news", "261018")])
        );
        // Exact means exact: no prefix matching.
        assert!(get(&engine, &[Selector::class("share")]).is_empty());
        assert!(get(&engine, &[Selector::class("shares").path("/new")]).is_empty());
    }

    fn absent_path_selects_every_path_and_period_defaults_to_total(kind) {
        assert_eq!(
            get(&engine(kind), &[Selector::class("_purchases")]),
            k(&[
                ("_purchases", "/", "total"),
                ("_purchases", "/shop", "total")
            ])
        );
    }

    fn regex_selectors_are_unanchored_searches(kind) {
        let engine = engine(kind);
        assert_eq!(
            get(
                &engine,
                &[Selector::class("regex('ha')").path("regex('port')")]
            ),
            k(&[("shares", "/news/sport", "total")])
        );
        assert_eq!(
            get(
                &engine,
                &[Selector::class("regex('^_')").path("regex('^/$')")]
            ),
            k(&[("_purchases", "/", "total")])
        );
        assert_eq!(
            get(
                &engine,
                &[Selector::class("shares")
                    .path("regex('^/news')")
                    .period("regex('^26')")]
            ),
            k(&[
                ("shares", "/news", "2610"),
                ("shares", "/news", "261018"),
                ("shares", "/news", "2611"),
                ("shares", "/news", "261127"),
                ("shares", "/news/sport", "2611"),
                ("shares", "/news/sport", "261127"),
            ])
        );
    }

    fn a_period_regex_runs_over_total_months_and_days(kind) {
        let engine = engine(kind);
        assert_eq!(
            get(
                &engine,
                &[Selector::class("_purchases")
                    .path("/shop")
                    .period("regex('')")]
            ),
            k(&[
                ("_purchases", "/shop", "2611"),
                ("_purchases", "/shop", "261127"),
                ("_purchases", "/shop", "total"),
            ])
        );
        // `last7Days` is derived, not stored: a regex never yields it.
        assert!(
            get(
                &engine,
                &[Selector::class("shares").period("regex('last')")]
            )
            .is_empty()
        );
        assert_eq!(
            get(
                &engine,
                &[Selector::class("shares").path("/").period("regex('^t')")]
            ),
            k(&[("shares", "/", "total")])
        );
    }

    fn several_selectors_merge_sorted_without_duplicates(kind) {
        let rows = get(
            &engine(kind),
            &[
                Selector::class("shares").path("/video"),
                Selector::class("_purchases").path("/shop").period("2611"),
                Selector::class("regex('')").path("/video"),
                Selector::class("shares").path("/video").period("2611"),
                Selector::class("_purchases").path("/shop"),
            ],
        );
        assert_eq!(
            rows,
            k(&[
                ("_purchases", "/shop", "2611"),
                ("_purchases", "/shop", "total"),
                ("shares", "/video", "2611"),
                ("shares", "/video", "total"),
            ])
        );
    }

    fn last_updated_format_and_timestamp(kind) {
        let engine = engine(kind);
        let rows = engine
            .get(
                "u",
                &[Selector::class("shares").path("/news").period("regex('')")],
            )
            .unwrap();
        let stamps: Vec<(String, &str, i64)> = rows
            .iter()
            .map(|r| {
                (
                    r.period.to_string(),
                    r.last_updated.as_str(),
                    r.last_updated_timestamp,
                )
            })
            .collect();
        let old = NOW - 40 * DAY;
        let s = |p: &str, text, ts| (p.to_owned(), text, ts);
        assert_eq!(
            stamps,
            [
                s("2610", "2026-10-18 12:00:00Z", old),
                s("261018", "2026-10-18 12:00:00Z", old),
                s("2611", "2026-11-27 12:00:00Z", NOW),
                s("261127", "2026-11-27 12:00:00Z", NOW),
                // total: the latest event time seen (a roll-up from /news/sport).
                s("total", "2026-11-27 12:00:00Z", NOW),
            ]
        );
        engine
            .increment_at(
                "v",
                &[Increment::new("shares", "/video")],
                946_684_800 + 3_661,
            )
            .unwrap();
        let rows = engine
            .get("v", &[Selector::class("shares").path("/video")])
            .unwrap();
        assert_eq!(rows[0].last_updated, "2000-01-01 01:01:01Z");
        assert_eq!(rows[0].last_updated_timestamp, 946_688_461);
    }

    fn unknown_subject_yields_an_empty_list(kind) {
        let engine = engine(kind);
        assert!(engine.get("nobody", &[]).unwrap().is_empty());
        assert!(
            engine
                .get("nobody", &[Selector::class("shares").period("last7Days")])
                .unwrap()
                .is_empty()
        );
        // Reading creates no subject.
        if let Some(engine) = engine.embedded() {
            assert_eq!(engine.subject_count(), 1);
        }
    }

    fn bad_regexes_are_invalid_parameter_values(kind) {
        let engine = engine(kind);
        let selectors = [
            Selector::class("regex('(')"),
            Selector::class("shares").path("regex('[a-')"),
            Selector::class("shares").period("regex('*')"),
            Selector::class("regex(unquoted)"),
            Selector::class("regex('no close"),
        ];
        for selector in selectors {
            let err = engine
                .get("u", std::slice::from_ref(&selector))
                .unwrap_err();
            assert!(
                matches!(err.root(), Error::InvalidRegex { .. }),
                "{selector:?}: {err:?}"
            );
            assert_eq!(err.code().number(), 400006);
        }
        // The error names the selector's index.
        let err = engine
            .get(
                "u",
                &[Selector::class("shares"), Selector::class("regex('(')")],
            )
            .unwrap_err();
        assert!(matches!(err, Error::Entry { index: 1, .. }), "{err:?}");
    }

    fn oversized_and_pathological_regexes_are_rejected_without_panic(kind) {
        let engine = engine(kind);
        for pattern in ["(a{1000}){1000}", "((a{100}){100}){100}", "\\w{5000}"] {
            let selector = Selector::class(format!("regex('{pattern}')"));
            let err = engine.get("u", &[selector]).unwrap_err();
            assert!(
                matches!(err.root(), Error::InvalidRegex { .. }),
                "{pattern}"
            );
            assert_eq!(err.code().number(), 400006);
        }
        let long = format!("regex('{}')", "a".repeat(MAX_REGEX_BYTES + 1));
        let err = engine
            .get("u", &[Selector::class("shares").path(long)])
            .unwrap_err();
        assert!(matches!(err.root(), Error::InvalidRegex { .. }));
        // Just at the limit is fine.
        let max = format!("regex('{}')", "a".repeat(MAX_REGEX_BYTES));
        assert!(engine.get("u", &[Selector::class(max)]).unwrap().is_empty());
    }

    fn bad_exact_selectors_are_rejected(kind) {
        let engine = engine(kind);
        let err = engine
            .get("u", &[Selector::class("shares").period("yesterday")])
            .unwrap_err();
        assert!(matches!(err.root(), Error::InvalidPeriod { period } if period == "yesterday"));
        assert_eq!(err.code().number(), 400006);
        let err = engine
            .get("u", &[Selector::class("shares").path("news")])
            .unwrap_err();
        assert!(matches!(err.root(), Error::InvalidPath { .. }));
        let err = engine
            .get("u", &[Selector::class("shares").path("/a/b/c")])
            .unwrap_err();
        assert!(matches!(err.root(), Error::PathTooDeep { .. }));
    }

    fn unregistered_and_unknown_classes_read_without_error(kind) {
        let engine = engine(kind);
        assert!(get(&engine, &[Selector::class("never-registered")]).is_empty());
        engine.unregister([("_purchases", "/shop")]).unwrap();
        assert_eq!(get(&engine, &[Selector::class("_purchases")]).len(), 2);
    }

    fn rows_serialise_with_the_platform_field_names(kind) {
        let rows = engine(kind)
            .get("u", &[Selector::class("_purchases").path("/shop")])
            .unwrap();
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "class": "_purchases",
                "path": "/shop",
                "period": "total",
                "count": 1,
                "value": 300,
                "lastUpdated": "2026-11-27 12:00:00Z",
                "lastUpdatedTimestamp": NOW,
            })
        );
        let back: CounterRow = serde_json::from_value(json).unwrap();
        assert_eq!(back, rows[0]);
        assert_eq!(back.period, Period::Total);
    }

    fn periods_of_one_path_sort_by_their_text(kind) {
        let rows = get(
            &engine(kind),
            &[
                Selector::class("_purchases").path("/shop").period("total"),
                Selector::class("_purchases")
                    .path("/shop")
                    .period("last7Days"),
                Selector::class("_purchases").path("/shop").period("261127"),
                Selector::class("_purchases").path("/shop").period("2611"),
            ],
        );
        assert_eq!(
            rows,
            k(&[
                ("_purchases", "/shop", "2611"),
                ("_purchases", "/shop", "261127"),
                ("_purchases", "/shop", "last7Days"),
                ("_purchases", "/shop", "total"),
            ])
        );
    }
}

#[test]
fn selectors_deserialise_with_optional_path_and_period() {
    let s: Selector = serde_json::from_str(r#"{"class":"shares"}"#).unwrap();
    assert_eq!(s, Selector::class("shares"));
    let s: Selector =
        serde_json::from_str(r#"{"class":"shares","path":"/news","period":"2611"}"#).unwrap();
    assert_eq!(s, Selector::class("shares").path("/news").period("2611"));
}
