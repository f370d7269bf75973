//! Pins unbounded growth through system classes. A system class accepts
//! any valid path, and each new path creates counters (and a log record).
//! They were created while a batch was being resolved, so a batch that was
//! then rejected (a later bad entry, an overflow) and the REST layer's
//! pre-check of a request it then refused left the counters behind, logged;
//! and nothing bounded how many a client could create. Now nothing is
//! created for a rejected batch, and counters count against
//! `max_counters`, past which an increment fails with 400006.

mod stores;

use stores::{Store, StoreKind};
use tally::{Error, Increment, ManualClock, Selector, Tally};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC

fn engine(kind: StoreKind, max_counters: usize) -> Store {
    Store::builder(kind)
        .clock(ManualClock::new(NOW))
        .system_classes(["_s"])
        .max_counters(max_counters)
        .build()
}

/// The id the next new counter gets: one more than the counters that exist.
/// (The engine starts with one: the root of `_s`.) Counter handles, and so
/// the ids, are the embedded engine's.
fn next_id(engine: &Tally, probe: &str) -> u32 {
    engine.counter("_s", probe).unwrap().id()
}

store_tests! {
    fn a_batch_rejected_by_a_later_entry_creates_no_counter(kind) {
        let engine = engine(kind, 100);
        let err = engine
            .increment(
                "u",
                &[
                    Increment::new("_s", "/new/path"),
                    Increment::new("nope", "/"),
                ],
            )
            .unwrap_err();
        assert!(matches!(err, Error::Entry { index: 1, .. }), "{err:?}");
        assert_eq!(err.code().number(), 409011);
        if let Some(engine) = engine.embedded() {
            assert_eq!(next_id(engine, "/probe"), 1);
        }
        assert!(engine.get("u", &[]).unwrap().is_empty());
    }

    fn a_batch_that_would_overflow_a_new_path_creates_no_counter(kind) {
        let engine = engine(kind, 100);
        let err = engine
            .increment(
                "u",
                &[
                    Increment::new("_s", "/n").count(i64::MAX),
                    Increment::new("_s", "/n").count(1),
                ],
            )
            .unwrap_err();
        assert!(matches!(err, Error::Entry { index: 1, .. }), "{err:?}");
        assert!(
            matches!(err.root(), Error::Overflow { path, .. } if path == "/n"),
            "{err:?}"
        );
        if let Some(engine) = engine.embedded() {
            assert_eq!(next_id(engine, "/probe"), 1);
        }
    }

    fn the_rest_pre_check_of_a_refused_request_creates_no_counter(kind) {
        let engine = engine(kind, 100);
        let counters = r#"[{"class":"_s","path":"/new"},{"class":"_s","path":"/b","count":"x"}]"#;
        let response = engine.rest(
            "accounts.incrementCounters",
            &[("UID", "u"), ("counters", counters)],
        );
        let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
        assert_eq!(body["errorCode"], 400006, "{body}");
        if let Some(engine) = engine.embedded() {
            assert_eq!(next_id(engine, "/probe"), 1);
        }
    }

    fn new_paths_past_max_counters_are_refused_and_earlier_ones_count(kind) {
        // The root of `_s`, then `/a`, `/b` and `/c`: four counters.
        let engine = engine(kind, 4);
        for path in ["/a", "/b", "/c"] {
            engine
                .increment("u", &[Increment::new("_s", path)])
                .unwrap();
        }
        let err = engine
            .increment("u", &[Increment::new("_s", "/d")])
            .unwrap_err();
        assert!(
            matches!(err.root(), Error::TooManyCounters { max: 4, path, .. } if path == "/d"),
            "{err:?}"
        );
        assert_eq!(err.code().number(), 400006);
        // A two-level path needs its parent too: refused whole.
        assert!(matches!(
            engine
                .increment("u", &[Increment::new("_s", "/a/b")])
                .unwrap_err()
                .root(),
            Error::TooManyCounters { .. }
        ));
        // Registrations that would create counters are held to the same bound.
        assert!(matches!(
            engine.register([("other", "/x")]),
            Err(Error::TooManyCounters { .. })
        ));
        // Existing paths keep counting.
        engine
            .increment("u", &[Increment::new("_s", "/a")])
            .unwrap();
        let rows = engine.get("u", &[Selector::class("_s")]).unwrap();
        let totals: Vec<(&str, i64)> = rows.iter().map(|r| (r.path.as_str(), r.count)).collect();
        assert_eq!(totals, [("/", 4), ("/a", 2), ("/b", 1), ("/c", 1)]);
    }
}
