//! Pins read amplification: one `getCounters` of 9,000 copies of
//! `{"class":"regex('')","period":"regex('')"}` compiled 18,000 regexes
//! and built a row for every selector × cell × period before removing the
//! duplicates (seconds of a core and hundreds of megabytes for a 44-cell
//! subject). A read now takes at most `max_selectors` selectors (checked
//! before anything is compiled) and returns at most `max_rows` rows, each
//! past its limit a 400006 naming it; a (cell, period) row is built once
//! however many selectors match it; and the regular expressions of one
//! read share one compile budget.

mod stores;

use stores::{Store, StoreKind};
use tally::{Error, Increment, ManualClock, Selector};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC
const UID: &str = "0f8e4c1d2b3a49587a6b5c4d3e2f1a0b";

/// An engine whose subject [`UID`] has `cells` counters of class `c`
/// (and the root), each incremented today.
fn engine_with_cells(kind: StoreKind, cells: usize, max_rows: usize) -> Store {
    let engine = Store::builder(kind)
        .clock(ManualClock::new(NOW))
        .max_rows(max_rows)
        .build();
    let paths: Vec<String> = (0..cells).map(|i| format!("/p{i}")).collect();
    engine
        .register(paths.iter().map(|p| ("c", p.as_str())))
        .unwrap();
    for path in &paths {
        engine.increment(UID, &[Increment::new("c", path)]).unwrap();
    }
    engine
}

fn everything() -> Selector {
    Selector::class("regex('')").period("regex('')")
}

store_tests! {
    fn more_selectors_than_max_selectors_are_refused_before_any_is_compiled(kind) {
        let engine = engine_with_cells(kind, 3, 10_000);
        // Each of these would be an invalid regex: the count is checked first.
        let selectors = vec![Selector::class("regex('(')"); 9_000];
        let err = engine.get(UID, &selectors).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooManySelectors {
                    count: 9_000,
                    max: 100
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.code().number(), 400006);
        assert!(err.to_string().contains("max_selectors"), "{err}");
        assert!(engine.get(UID, &vec![everything(); 100]).is_ok());
        assert!(matches!(
            engine.get(UID, &vec![everything(); 101]),
            Err(Error::TooManySelectors { count: 101, .. })
        ));
    }

    fn an_answer_over_max_rows_is_refused(kind) {
        // Five cells and the root: six rows of `total`.
        let engine = engine_with_cells(kind, 5, 6);
        assert_eq!(engine.get(UID, &[]).unwrap().len(), 6);
        // `total`, this month and today of six cells: eighteen rows.
        let err = engine.get(UID, &[everything()]).unwrap_err();
        assert!(matches!(err, Error::TooManyRows { max: 6 }), "{err:?}");
        assert_eq!(err.code().number(), 400006);
        assert!(err.to_string().contains("max_rows"), "{err}");
        // One cell more than max_rows: even reading everything is refused.
        let engine = engine_with_cells(kind, 6, 6);
        assert!(matches!(
            engine.get(UID, &[]),
            Err(Error::TooManyRows { max: 6 })
        ));
    }

    fn many_selectors_matching_the_same_rows_yield_each_row_once_within_max_rows(kind) {
        // 44 cells and the root, three periods each: 135 rows, exactly max_rows.
        let engine = engine_with_cells(kind, 44, 135);
        let once = engine.get(UID, &[everything()]).unwrap();
        assert_eq!(once.len(), 135);
        let mut overlapping = vec![everything(); 97];
        overlapping.push(Selector::class("c"));
        overlapping.push(Selector::class("c").path("/p1").period("total"));
        overlapping.push(Selector::class("regex('^c$')").period("regex('^\\d{6}$')"));
        assert_eq!(engine.get(UID, &overlapping).unwrap(), once);
    }

    fn the_regexes_of_one_read_share_one_compile_budget(kind) {
        let engine = engine_with_cells(kind, 1, 10_000);
        // Each pattern (about half a megabyte compiled: `\w` is every Unicode
        // word character) compiles alone; a hundred distinct ones do not fit
        // together, while a hundred `\w` (a tenth of the size each) do.
        let pattern = |i: usize| format!("regex('\\w{{10}}{i}')");
        assert!(engine.get(UID, &[Selector::class(pattern(0))]).is_ok());
        let selectors: Vec<Selector> = (0..100).map(|i| Selector::class(pattern(i))).collect();
        let err = engine.get(UID, &selectors).unwrap_err();
        assert!(
            matches!(err.root(), Error::InvalidRegex { reason, .. } if reason.contains("share")),
            "{err:?}"
        );
        assert_eq!(err.code().number(), 400006);
        let small: Vec<Selector> = (0..100)
            .map(|i| Selector::class(format!("regex('\\w{i}')")))
            .collect();
        assert!(engine.get(UID, &small).is_ok());
    }

    fn the_rest_layer_answers_400006_naming_the_limit(kind) {
        let engine = engine_with_cells(kind, 3, 10_000);
        let one = r#"{"class":"regex('')","period":"regex('')"}"#;
        let counters = format!("[{}]", vec![one; 9_000].join(","));
        let response = engine.rest(
            "accounts.getCounters",
            &[("UID", UID), ("counters", &counters)],
        );
        let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
        assert_eq!(body["errorCode"], 400006, "{body}");
        assert!(
            body["errorDetails"]
                .as_str()
                .is_some_and(|d| d.contains("max_selectors")),
            "{body}"
        );
    }
}
