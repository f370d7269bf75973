//! Increments by name go through a per-thread memo of resolved names that
//! compares names of up to 16 bytes by their length and end words only.
//! Pins, through the public API: names that share their
//! length and both end words but differ in the middle land in their own
//! cells; a name that differs from a remembered one only in length (a
//! trailing byte) is resolved and checked on its own, not taken for it; and
//! what the memo remembers stops being used when the registry changes or on
//! another engine.

use tally::{Error, Increment, ManualClock, Tally};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC

fn engine() -> Tally {
    Tally::builder()
        .clock(ManualClock::new(NOW))
        .build()
        .unwrap()
}

fn total(engine: &Tally, uid: &str, class: &str, path: &str) -> Option<(i64, i64)> {
    engine
        .get(uid, &[])
        .unwrap()
        .into_iter()
        .find(|row| row.class == class && row.path == path)
        .map(|row| (row.count, row.value))
}

#[test]
fn long_names_alike_at_both_ends_count_apart() {
    let engine = engine();
    // 17 and 18 bytes: byte 8 is in neither their first nor their last 8 bytes.
    let (class_a, class_b) = ("sharesAAXbbbbbbbb", "sharesAAYbbbbbbbb");
    let (path_a, path_b) = ("/aaaaaaaXaaaaaaaaa", "/aaaaaaaYaaaaaaaaa");
    engine
        .register([
            (class_a, path_a),
            (class_a, path_b),
            (class_b, path_a),
            (class_b, path_b),
        ])
        .unwrap();
    for _ in 0..3 {
        for (i, (class, path)) in [
            (class_a, path_a),
            (class_a, path_b),
            (class_b, path_a),
            (class_b, path_b),
        ]
        .into_iter()
        .enumerate()
        {
            engine
                .increment("u", &[Increment::new(class, path).value(i as i64 + 1)])
                .unwrap();
        }
    }
    assert_eq!(total(&engine, "u", class_a, path_a), Some((3, 3)));
    assert_eq!(total(&engine, "u", class_a, path_b), Some((3, 6)));
    assert_eq!(total(&engine, "u", class_b, path_a), Some((3, 9)));
    assert_eq!(total(&engine, "u", class_b, path_b), Some((3, 12)));
    assert_eq!(total(&engine, "u", class_a, "/"), Some((6, 9)));
    assert_eq!(total(&engine, "u", class_b, "/"), Some((6, 21)));
}

#[test]
fn a_name_one_byte_longer_than_a_remembered_one_is_checked_on_its_own() {
    let engine = engine();
    engine.register([("shares", "/news")]).unwrap();
    engine
        .increment("u", &[Increment::new("shares", "/news")])
        .unwrap();
    // Same first bytes, one more: not registered, and not the remembered name.
    let err = engine
        .increment("u", &[Increment::new("shares", "/news/")])
        .unwrap_err();
    assert!(matches!(err.root(), Error::NotRegistered { .. }), "{err:?}");
    let err = engine
        .increment("u", &[Increment::new("shares", "/news\u{7f}")])
        .unwrap_err();
    assert!(matches!(err.root(), Error::InvalidPath { .. }), "{err:?}");
    assert_eq!(total(&engine, "u", "shares", "/news"), Some((1, 0)));
}

#[test]
fn the_memo_follows_registry_changes_and_engines() {
    let (first, second) = (engine(), engine());
    // `/z` keeps the class known once `/a` is unregistered.
    first.register([("c", "/a"), ("c", "/z")]).unwrap();
    second.register([("c", "/b")]).unwrap();
    first.increment("u", &[Increment::new("c", "/a")]).unwrap();
    // Remembered on this thread for `first`, but `second` never registered it.
    let err = second
        .increment("u", &[Increment::new("c", "/a")])
        .unwrap_err();
    assert!(matches!(err.root(), Error::NotRegistered { .. }), "{err:?}");
    first.unregister([("c", "/a")]).unwrap();
    let err = first
        .increment("u", &[Increment::new("c", "/a")])
        .unwrap_err();
    assert!(matches!(err.root(), Error::NotRegistered { .. }), "{err:?}");
    first.register([("c", "/a")]).unwrap();
    first.increment("u", &[Increment::new("c", "/a")]).unwrap();
    assert_eq!(total(&first, "u", "c", "/a"), Some((2, 0)));
    assert_eq!(total(&first, "u", "c", "/"), Some((2, 0)));
}
