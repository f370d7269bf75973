//! Pins a fault in system-class roll-up: a path of a system class that was
//! registered explicitly (`register([("_s", "/x/y")])`), or that existed
//! before its class became a system class on reopen, rolled its increments
//! up to itself and to `/` but never to `/x`, because the intermediate
//! ancestor was never created. A system class is treated as if every valid
//! path were registered, so every ancestor receives the increment.

mod stores;

use stores::Store;
use tally::{Increment, ManualClock, Selector, Tally};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC

fn totals(engine: &Store, uid: &str, class: &str) -> Vec<(String, i64)> {
    engine
        .get(uid, &[Selector::class(class)])
        .unwrap()
        .into_iter()
        .map(|r| (r.path, r.count))
        .collect()
}

fn t(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|&(p, c)| (p.to_owned(), c)).collect()
}

store_tests! {
    fn a_registered_path_of_a_system_class_rolls_up_to_every_ancestor(kind) {
        let engine = Store::builder(kind)
            .clock(ManualClock::new(NOW))
            .system_classes(["_s"])
            .build();
        engine.register([("_s", "/x/y")]).unwrap();
        engine
            .increment("u", &[Increment::new("_s", "/x/y")])
            .unwrap();
        // Counter handles are the embedded engine's; the cluster gets the same
        // amount by an increment.
        if let Some(embedded) = engine.embedded() {
            let handle = embedded.counter("_s", "/x/y").unwrap();
            embedded.increment_counter("u", &handle, 2, 0).unwrap();
        } else {
            engine
                .increment("u", &[Increment::new("_s", "/x/y").count(2)])
                .unwrap();
        }
        assert_eq!(
            totals(&engine, "u", "_s"),
            t(&[("/", 3), ("/x", 3), ("/x/y", 3)])
        );
    }
}

// Reopens a data directory: the embedded engine only.
#[test]
fn a_class_that_becomes_a_system_class_on_reopen_rolls_up_to_every_ancestor() {
    let dir = tempfile::tempdir().unwrap();
    let open = |system: &[&str]| {
        Tally::builder()
            .clock(ManualClock::new(NOW))
            .system_classes(system.iter().copied())
            .data_dir(dir.path())
            .build()
            .unwrap()
    };
    {
        let engine = open(&[]);
        engine.register([("_s", "/x/y")]).unwrap();
        engine
            .increment("u", &[Increment::new("_s", "/x/y")])
            .unwrap();
        engine.close().unwrap();
    }
    let engine = Store::Embedded(open(&["_s"]));
    engine
        .increment("u", &[Increment::new("_s", "/x/y")])
        .unwrap();
    // Before the reopen `/x` was not registered: it counts from then on.
    assert_eq!(
        totals(&engine, "u", "_s"),
        t(&[("/", 2), ("/x", 1), ("/x/y", 2)])
    );
}
