//! Registration.
//!
//! Pins: `register` validates every pair first and registers nothing when one
//! is bad (the error names its index); registering an existing pair again is
//! not an error; `/` is accepted for every known class, other paths only when
//! registered, unknown classes give 409011; roll-ups reach registered
//! ancestors and always `/`; `unregister` stops increments and roll-ups but
//! keeps data readable, and re-registering resumes on top of the old data;
//! `registered()` is sorted; `max_registrations` is enforced all-or-nothing;
//! system classes accept every valid path without registration.

mod stores;

use stores::{Store, StoreKind};
use tally::{CounterKey, Error, Increment, ManualClock, Selector};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC

fn engine(kind: StoreKind) -> Store {
    Store::on_clock(kind, &ManualClock::new(NOW))
}

fn keys(pairs: &[(&str, &str)]) -> Vec<CounterKey> {
    pairs.iter().map(|&p| CounterKey::from(p)).collect()
}

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

fn inc(engine: &Store, class: &str, path: &str) -> tally::Result<()> {
    engine.increment("u", &[Increment::new(class, path)])
}

store_tests! {
    fn register_is_all_or_nothing_and_names_the_bad_index(kind) {
        let engine = engine(kind);
        let err = engine
            .register([("c", "/a"), ("c", "/b"), ("c", "bad"), ("c", "//x")])
            .unwrap_err();
        assert!(matches!(err, Error::Entry { index: 2, .. }), "{err:?}");
        assert!(matches!(err.root(), Error::InvalidPath { path, .. } if path == "bad"));
        assert_eq!(err.code().number(), 400006);
        assert!(engine.registered().is_empty());
        // Nothing registered means the class is not known either.
        assert!(matches!(
            inc(&engine, "c", "/").unwrap_err().root(),
            Error::UnknownClass { .. }
        ));
    }

    fn registering_again_is_not_an_error(kind) {
        let engine = engine(kind);
        engine.register([("c", "/a")]).unwrap();
        engine.register([("c", "/a"), ("c", "/a")]).unwrap();
        assert_eq!(engine.registered(), keys(&[("c", "/a")]));
        inc(&engine, "c", "/a").unwrap();
        engine.register([("c", "/a")]).unwrap();
        assert_eq!(totals(&engine, "u", "c"), t(&[("/", 1), ("/a", 1)]));
    }

    fn registered_is_sorted_by_class_then_path(kind) {
        let engine = engine(kind);
        engine
            .register([
                ("zeta", "/b"),
                ("alpha", "/z"),
                ("zeta", "/a/b"),
                ("alpha", "/"),
                ("zeta", "/a"),
                ("_sys", "/m"),
            ])
            .unwrap();
        assert_eq!(
            engine.registered(),
            keys(&[
                ("_sys", "/m"),
                ("alpha", "/"),
                ("alpha", "/z"),
                ("zeta", "/a"),
                ("zeta", "/a/b"),
                ("zeta", "/b"),
            ])
        );
    }

    fn unknown_class_and_unregistered_path_are_409011(kind) {
        let engine = engine(kind);
        let err = inc(&engine, "nope", "/").unwrap_err();
        assert!(matches!(err.root(), Error::UnknownClass { class } if class == "nope"));
        assert_eq!(err.code().number(), 409011);
        engine.register([("c", "/a")]).unwrap();
        let err = inc(&engine, "c", "/b").unwrap_err();
        assert!(matches!(
            err.root(),
            Error::NotRegistered { class, path } if class == "c" && path == "/b"
        ));
        assert_eq!(err.code().number(), 409011);
        // A registered child does not make its unregistered parent accept.
        engine.register([("c", "/x/y")]).unwrap();
        assert!(matches!(
            inc(&engine, "c", "/x").unwrap_err().root(),
            Error::NotRegistered { .. }
        ));
    }

    fn root_is_accepted_for_every_known_class(kind) {
        let engine = engine(kind);
        engine.register([("c", "/deep/path")]).unwrap();
        inc(&engine, "c", "/").unwrap();
        assert_eq!(totals(&engine, "u", "c"), t(&[("/", 1)]));
    }

    fn increments_roll_up_to_registered_ancestors_and_root(kind) {
        let engine = engine(kind);
        engine
            .register([("c", "/a"), ("c", "/a/b"), ("c", "/x/y")])
            .unwrap();
        inc(&engine, "c", "/a/b").unwrap();
        // `/x` is not registered: `/x/y` rolls up to `/` only.
        inc(&engine, "c", "/x/y").unwrap();
        assert_eq!(
            totals(&engine, "u", "c"),
            t(&[("/", 2), ("/a", 1), ("/a/b", 1), ("/x/y", 1)])
        );
    }

    fn unregister_stops_counting_and_roll_ups_but_keeps_data(kind) {
        let engine = engine(kind);
        engine.register([("c", "/a"), ("c", "/a/b")]).unwrap();
        inc(&engine, "c", "/a/b").unwrap();
        engine.unregister([("c", "/a")]).unwrap();
        assert_eq!(engine.registered(), keys(&[("c", "/a/b")]));
        let err = inc(&engine, "c", "/a").unwrap_err();
        assert!(matches!(err.root(), Error::NotRegistered { .. }));
        assert_eq!(err.code().number(), 409011);
        // `/a/b` still counts and rolls up to `/`, no longer to `/a`.
        inc(&engine, "c", "/a/b").unwrap();
        assert_eq!(
            totals(&engine, "u", "c"),
            t(&[("/", 2), ("/a", 1), ("/a/b", 2)])
        );
        // Data of an unregistered counter stays readable by exact selector too.
        let rows = engine.get("u", &[Selector::class("c").path("/a")]).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].count, 1);
    }

    fn re_registering_resumes_on_top_of_old_data(kind) {
        let engine = engine(kind);
        engine.register([("c", "/a"), ("c", "/a/b")]).unwrap();
        inc(&engine, "c", "/a").unwrap();
        engine.unregister([("c", "/a")]).unwrap();
        inc(&engine, "c", "/a/b").unwrap(); // not rolled up to /a
        engine.register([("c", "/a")]).unwrap();
        inc(&engine, "c", "/a/b").unwrap(); // rolled up again
        inc(&engine, "c", "/a").unwrap();
        assert_eq!(
            totals(&engine, "u", "c"),
            t(&[("/", 4), ("/a", 3), ("/a/b", 2)])
        );
    }

    fn unregistering_the_last_pair_makes_the_class_unknown(kind) {
        let engine = engine(kind);
        engine.register([("c", "/a")]).unwrap();
        inc(&engine, "c", "/").unwrap();
        engine.unregister([("c", "/a")]).unwrap();
        let err = inc(&engine, "c", "/").unwrap_err();
        assert!(matches!(err.root(), Error::UnknownClass { .. }));
        assert_eq!(err.code().number(), 409011);
        // The data is still there.
        assert_eq!(totals(&engine, "u", "c"), t(&[("/", 1)]));
    }

    fn unregister_of_unregistered_pairs_is_ignored_but_bad_pairs_reject_the_call(kind) {
        let engine = engine(kind);
        engine.register([("c", "/a"), ("c", "/b")]).unwrap();
        engine.unregister([("c", "/zzz"), ("other", "/")]).unwrap();
        assert_eq!(engine.registered().len(), 2);
        let err = engine
            .unregister([("c", "/a"), ("c", "/a/b/c")])
            .unwrap_err();
        assert!(matches!(err, Error::Entry { index: 1, .. }));
        assert!(matches!(err.root(), Error::PathTooDeep { .. }));
        // The valid pair of the rejected call stays registered.
        assert_eq!(engine.registered(), keys(&[("c", "/a"), ("c", "/b")]));
    }

    fn registering_the_root_makes_the_class_known(kind) {
        let engine = engine(kind);
        engine.register([("c", "/")]).unwrap();
        assert_eq!(engine.registered(), keys(&[("c", "/")]));
        inc(&engine, "c", "/").unwrap();
        assert!(inc(&engine, "c", "/a").is_err());
    }

    fn max_registrations_is_all_or_nothing(kind) {
        let engine = Store::builder(kind)
            .clock(ManualClock::new(NOW))
            .max_registrations(3)
            .build();
        engine.register([("c", "/a"), ("c", "/b")]).unwrap();
        let err = engine.register([("c", "/c"), ("c", "/d")]).unwrap_err();
        assert!(
            matches!(err, Error::TooManyRegistrations { max: 3 }),
            "{err:?}"
        );
        assert_eq!(err.code().number(), 400006);
        assert_eq!(engine.registered(), keys(&[("c", "/a"), ("c", "/b")]));
        // Re-registering existing pairs and duplicates in one call do not count twice.
        engine
            .register([("c", "/a"), ("c", "/c"), ("c", "/c")])
            .unwrap();
        assert_eq!(engine.registered().len(), 3);
        engine.register([("c", "/b")]).unwrap();
        // Unregistering frees a slot.
        engine.unregister([("c", "/a")]).unwrap();
        engine.register([("d", "/x")]).unwrap();
        assert!(engine.register([("d", "/y")]).is_err());
    }

    fn default_max_registrations_is_10_000(kind) {
        let engine = engine(kind);
        assert_eq!(engine.config().max_registrations, 10_000);
        let paths: Vec<String> = (0..10_000).map(|i| format!("/p{i}")).collect();
        engine
            .register(paths.iter().map(|p| ("c", p.as_str())))
            .unwrap();
        assert!(matches!(
            engine.register([("c", "/one-more")]).unwrap_err(),
            Error::TooManyRegistrations { max: 10_000 }
        ));
    }

    fn system_classes_accept_every_valid_path_without_registration(kind) {
        let engine = Store::builder(kind)
            .clock(ManualClock::new(NOW))
            .system_classes(["_logins"])
            .build();
        assert!(engine.registered().is_empty());
        engine
            .increment(
                "u",
                &[
                    Increment::new("_logins", "/web/eu"),
                    Increment::new("_logins", "/"),
                ],
            )
            .unwrap();
        // A system class rolls up as if every path were registered.
        assert_eq!(
            totals(&engine, "u", "_logins"),
            t(&[("/", 2), ("/web", 1), ("/web/eu", 1)])
        );
        // Path syntax and depth still apply.
        let err = inc(&engine, "_logins", "/a/b/c").unwrap_err();
        assert!(matches!(err.root(), Error::PathTooDeep { .. }));
        // Other classes are still unknown.
        assert!(matches!(
            inc(&engine, "_other", "/").unwrap_err().root(),
            Error::UnknownClass { .. }
        ));
        // Unregistering a system class path changes nothing about acceptance.
        engine.unregister([("_logins", "/web")]).unwrap();
        inc(&engine, "_logins", "/web").unwrap();
    }

    fn invalid_system_class_is_rejected_by_build(kind) {
        let err = Store::builder(kind)
            .system_classes(["bad class"])
            .try_build()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidClass { .. }), "{err:?}");
    }

    fn unregistering_the_root_pair_keeps_the_root_of_a_known_class(kind) {
        let engine = engine(kind);
        engine.register([("c", "/"), ("c", "/a")]).unwrap();
        engine.unregister([("c", "/")]).unwrap();
        assert_eq!(engine.registered(), keys(&[("c", "/a")]));
        inc(&engine, "c", "/").unwrap();
        inc(&engine, "c", "/a").unwrap();
        assert_eq!(totals(&engine, "u", "c"), t(&[("/", 2), ("/a", 1)]));
    }
}
