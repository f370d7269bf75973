//! Paths and classes.
//!
//! Pins: `/` is level 0 and a path's level is its number of `/`; a trailing
//! slash opens a new, distinct level whose parent is the path without it;
//! empty segments other than the last are invalid; the depth limit is 2 by
//! default and configurable 1..=16 with `max_path_depth`; paths are at most
//! 512 bytes with no ASCII control characters; classes are 1..=100 bytes,
//! without whitespace or ASCII control characters, not starting with `regex(`.
//! Each violation maps to its error variant and to code 400006.

mod stores;

use stores::{Store, StoreKind};
use tally::{Error, Increment, ManualClock, Selector, validate_class, validate_path};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC

fn engine(kind: StoreKind) -> Store {
    Store::on_clock(kind, &ManualClock::new(NOW))
}

fn totals(engine: &Store, uid: &str) -> Vec<(String, i64)> {
    engine
        .get(uid, &[])
        .unwrap()
        .into_iter()
        .map(|r| (r.path, r.count))
        .collect()
}

#[test]
fn levels_are_the_number_of_slashes() {
    assert_eq!(validate_path("/", 16).unwrap(), 0);
    assert_eq!(validate_path("/news", 16).unwrap(), 1);
    assert_eq!(validate_path("/news/sport", 16).unwrap(), 2);
    assert_eq!(validate_path("/news/sport/football", 16).unwrap(), 3);
    assert_eq!(validate_path("/news/", 16).unwrap(), 2);
    assert_eq!(validate_path("/a/b/", 16).unwrap(), 3);
}

store_tests! {
    fn trailing_slash_is_a_distinct_child_level(kind) {
        let engine = engine(kind);
        engine.register([("c", "/news"), ("c", "/news/")]).unwrap();
        engine
            .increment("u", &[Increment::new("c", "/news/").count(3)])
            .unwrap();
        engine
            .increment("u", &[Increment::new("c", "/news")])
            .unwrap();
        // `/news/` is its own cell and rolls up to its parent `/news`, then `/`.
        assert_eq!(
            totals(&engine, "u"),
            [
                ("/".to_owned(), 4),
                ("/news".to_owned(), 4),
                ("/news/".to_owned(), 3)
            ]
        );
    }

    fn trailing_slash_counts_as_a_level_for_the_depth_limit(kind) {
        let engine = engine(kind);
        let err = engine.register([("c", "/news/sport/")]).unwrap_err();
        assert!(matches!(
            err.root(),
            Error::PathTooDeep {
                depth: 3,
                max: 2,
                ..
            }
        ));
        assert_eq!(err.code().number(), 400006);
    }

    fn empty_segments_other_than_the_last_are_invalid(kind) {
        let engine = engine(kind);
        for bad in ["//x", "/a//b", "//", "//a/"] {
            let err = engine.register([("c", bad)]).unwrap_err();
            assert!(
                matches!(err.root(), Error::InvalidPath { path, .. } if path == bad),
                "{bad:?}: {err:?}"
            );
            assert_eq!(err.code().number(), 400006);
        }
        assert!(engine.registered().is_empty());
    }

    fn default_depth_is_two(kind) {
        let engine = engine(kind);
        engine.register([("c", "/news/sport")]).unwrap();
        let err = engine
            .register([("c", "/news/sport/football")])
            .unwrap_err();
        assert!(matches!(
            err.root(),
            Error::PathTooDeep { path, depth: 3, max: 2 } if path == "/news/sport/football"
        ));
        assert_eq!(err.code().number(), 400006);
        // An increment of a too-deep path is rejected for the same reason.
        let err = engine
            .increment("u", &[Increment::new("c", "/news/sport/football")])
            .unwrap_err();
        assert!(matches!(err.root(), Error::PathTooDeep { depth: 3, .. }));
        assert_eq!(err.code().number(), 400006);
    }

    fn depth_is_configurable(kind) {
        let deep = Store::builder(kind)
            .clock(ManualClock::new(NOW))
            .max_path_depth(4)
            .build();
        deep.register([("c", "/a/b/c/d"), ("c", "/a/b")]).unwrap();
        deep.increment("u", &[Increment::new("c", "/a/b/c/d")])
            .unwrap();
        assert_eq!(
            totals(&deep, "u"),
            [
                ("/".to_owned(), 1),
                ("/a/b".to_owned(), 1),
                ("/a/b/c/d".to_owned(), 1)
            ]
        );
        let err = deep.register([("c", "/a/b/c/d/e")]).unwrap_err();
        assert!(matches!(
            err.root(),
            Error::PathTooDeep {
                depth: 5,
                max: 4,
                ..
            }
        ));

        let shallow = Store::builder(kind).max_path_depth(1).build();
        shallow.register([("c", "/a")]).unwrap();
        assert!(matches!(
            shallow.register([("c", "/a/b")]).unwrap_err().root(),
            Error::PathTooDeep {
                depth: 2,
                max: 1,
                ..
            }
        ));
        // `/a/` is level 2 as well.
        assert!(shallow.register([("c", "/a/")]).is_err());

        let sixteen = Store::builder(kind).max_path_depth(16).build();
        let path: String = (0..16).map(|i| format!("/s{i}")).collect();
        sixteen.register([("c", path.as_str())]).unwrap();
    }

    fn depth_outside_1_to_16_is_a_config_error(kind) {
        for depth in [0, 17, 100] {
            let err = Store::builder(kind)
                .max_path_depth(depth)
                .try_build()
                .unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{depth}: {err:?}");
            assert_eq!(err.code().number(), 400006);
        }
    }

    fn paths_are_at_most_512_bytes(kind) {
        let engine = Store::builder(kind).max_path_depth(1).build();
        let max = format!("/{}", "x".repeat(511));
        assert_eq!(max.len(), 512);
        engine.register([("c", max.as_str())]).unwrap();
        let over = format!("/{}", "x".repeat(512));
        let err = engine.register([("c", over.as_str())]).unwrap_err();
        assert!(matches!(err.root(), Error::InvalidPath { .. }));
        assert_eq!(err.code().number(), 400006);
        // Bytes, not characters: 256 two-byte characters plus the slash.
        let multibyte = format!("/{}", "é".repeat(256));
        assert_eq!(multibyte.len(), 513);
        assert!(engine.register([("c", multibyte.as_str())]).is_err());
    }

    fn paths_reject_control_characters(kind) {
        let engine = engine(kind);
        for bad in ["/a\nb", "/a\tb", "/a\u{0}", "/a\u{7f}", "/a/\u{1b}"] {
            let err = engine.register([("c", bad)]).unwrap_err();
            assert!(matches!(err.root(), Error::InvalidPath { .. }), "{bad:?}");
            assert_eq!(err.code().number(), 400006);
        }
        // Non-ASCII text and spaces are fine in paths.
        engine.register([("c", "/café/a b")]).unwrap();
    }

    fn bad_classes_are_rejected_by_register_increment_and_get(kind) {
        let engine = engine(kind);
        let err = engine.register([("has space", "/a")]).unwrap_err();
        assert!(matches!(err, Error::Entry { index: 0, .. }));
        assert!(matches!(err.root(), Error::InvalidClass { .. }));
        let err = engine
            .increment("u", &[Increment::new("regex('x')", "/")])
            .unwrap_err();
        assert!(matches!(err.root(), Error::InvalidClass { .. }));
        assert_eq!(err.code().number(), 400006);
        let err = engine.get("u", &[Selector::class("")]).unwrap_err();
        assert!(matches!(err.root(), Error::InvalidClass { .. }));
        assert_eq!(err.code().number(), 400006);
    }

    fn syntax_errors_win_over_registration_errors(kind) {
        // An invalid path of an unknown class is a 400006, not a 409011.
        let engine = engine(kind);
        let err = engine
            .increment("u", &[Increment::new("never", "a")])
            .unwrap_err();
        assert!(matches!(err.root(), Error::InvalidPath { .. }));
        assert_eq!(err.code().number(), 400006);
    }
}

#[test]
fn paths_must_start_with_a_slash_and_not_be_empty() {
    for bad in ["", "news", "news/sport"] {
        let err = validate_path(bad, 2).unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }), "{bad:?}");
        assert_eq!(err.code().number(), 400006);
    }
}

#[test]
fn class_rules() {
    validate_class("_purchases").unwrap();
    validate_class(&"x".repeat(100)).unwrap();
    validate_class("regex").unwrap();
    validate_class("my-regex(").unwrap();
    // Only ASCII controls are excluded: a C1 control is allowed,
    // but U+0085 is also whitespace, and Unicode whitespace is not.
    validate_class("a\u{80}b").unwrap();
    validate_class("a\u{9f}").unwrap();
    let bad = [
        "a\u{85}b".into(),
        "a\u{2003}b".into(),
        String::new(),
        "x".repeat(101),
        "a b".into(),
        "a\tb".into(),
        "a\nb".into(),
        "a\u{7f}".into(),
        "a\u{0}b".into(),
        "regex('x')".into(),
        "regex(".into(),
    ];
    for class in bad {
        let err = validate_class(&class).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidClass { class: c, .. } if *c == class),
            "{class:?}: {err:?}"
        );
        assert_eq!(err.code().number(), 400006);
    }
}

#[test]
fn class_length_is_in_bytes() {
    let hundred_bytes = "é".repeat(50); // 100 bytes
    validate_class(&hundred_bytes).unwrap();
    assert!(validate_class(&format!("{hundred_bytes}x")).is_err());
}
