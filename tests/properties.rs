//! Properties, checked with proptest against plain models, on both stores
//! (the embedded engine, and the shared store with `cluster-tests`).
//!
//! Pins: (a) a class's `/` total is the sum of every accepted increment of
//! the class (registered and system classes); (b) a registered counter holds
//! its own increments plus those of its descendants made while it was
//! registered (checked against a log of events); (c) a cell's month buckets
//! and day buckets each sum to its total while retention has dropped
//! nothing, and `last7Days` sums the last seven UTC days; (d) a batch with
//! one bad entry (unregistered, too deep, unknown class, overflow) is
//! rejected naming that entry and changes nothing; (e) any sequence of
//! register / unregister / increment / batch / handle operations over
//! several subjects matches a HashMap model, rejections included; (f) a
//! batch of many entries over many cells, duplicates and overflows by
//! accumulation included, does exactly what its entries do one by one, or
//! (refused at the entry that would overflow) nothing; (g) with several
//! bad entries of different kinds in one batch (unregistered, bad syntax,
//! too deep, unknown class, overflow by accumulation), the error names
//! the first entry that one-by-one application refuses, with its error.
//! Counter handles are the embedded engine's only: on the cluster, the
//! sequences of (e) have no handle operations, and (d) does not count
//! subjects.

mod stores;

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use stores::{Store, StoreKind};
use tally::{CounterHandle, Error, Increment, ManualClock, Selector};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC
const DAY: i64 = 86_400;
/// The path universe of class `c`; index 0 is the root.
const PATHS: [&str; 6] = ["/", "/a", "/a/b", "/a/c", "/b", "/b/x"];
const UIDS: [&str; 3] = ["u0", "u1", "u2"];

fn engine(kind: StoreKind) -> Store {
    Store::builder(kind)
        .clock(ManualClock::new(NOW))
        .system_classes(["_sys"])
        .build()
}

fn index_of(path: &str) -> usize {
    PATHS.iter().position(|p| *p == path).unwrap()
}

/// Proper ancestors of a universe path, nearest first, ending with `/`.
fn ancestors(path: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut p = PATHS[path];
    while p != "/" {
        p = match p.rfind('/') {
            Some(0) => "/",
            Some(i) => &p[..i],
            None => unreachable!(),
        };
        out.push(index_of(p));
    }
    out
}

/// (path, count, value) of every `total` row of class `c`.
fn totals(engine: &Store, uid: &str) -> HashMap<String, (i64, i64)> {
    engine
        .get(uid, &[Selector::class("c")])
        .unwrap()
        .into_iter()
        .map(|r| (r.path, (r.count, r.value)))
        .collect()
}

/// The cases of a property on the cluster, where every case is tens to
/// hundreds of round trips.
const CLUSTER_CASES: u32 = 32;

/// 64 cases on the embedded engine, [`CLUSTER_CASES`] on the cluster, and
/// no regression files written beside the sources.
fn config(kind: StoreKind) -> ProptestConfig {
    let cases = match kind {
        StoreKind::Embedded => 64,
        StoreKind::Cluster => CLUSTER_CASES,
    };
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

fn amount() -> impl Strategy<Value = i64> {
    -1_000i64..1_000
}

// ---------------------------------------------------------------- (a), (b)

#[derive(Clone, Debug)]
enum RegOp {
    Register(usize),
    Unregister(usize),
    Inc(usize, i64, i64),
    /// An increment of the system class `_sys` at any valid depth-2 path.
    Sys(String, i64),
}

fn reg_op() -> impl Strategy<Value = RegOp> {
    prop_oneof![
        2 => (0..PATHS.len()).prop_map(RegOp::Register),
        1 => (0..PATHS.len()).prop_map(RegOp::Unregister),
        5 => (0..PATHS.len(), amount(), amount()).prop_map(|(p, c, v)| RegOp::Inc(p, c, v)),
        1 => ("(/[a-c]){0,2}/?", amount()).prop_map(|(p, c)| {
            let path = if p.is_empty() || p.matches('/').count() > 2 { "/".into() } else { p };
            RegOp::Sys(path, c)
        }),
    ]
}

/// (a) and (b).
fn prop_roll_ups_match_the_event_log(kind: StoreKind) {
    proptest!(config(kind), |(ops in prop::collection::vec(reg_op(), 1..60))| {
        let engine = engine(kind);
        let mut registered = BTreeSet::new();
        // Accepted events: (path, count, value, registered ancestors then).
        let mut log: Vec<(usize, i64, i64, Vec<usize>)> = Vec::new();
        let mut sys_sum = None::<i64>;
        for op in ops {
            match op {
                RegOp::Register(p) => {
                    engine.register([("c", PATHS[p])]).unwrap();
                    registered.insert(p);
                }
                RegOp::Unregister(p) => {
                    engine.unregister([("c", PATHS[p])]).unwrap();
                    registered.remove(&p);
                }
                RegOp::Inc(p, count, value) => {
                    let accepted = registered.contains(&p) || (p == 0 && !registered.is_empty());
                    let result = engine
                        .increment("u", &[Increment::new("c", PATHS[p]).count(count).value(value)]);
                    prop_assert_eq!(result.is_ok(), accepted, "{:?}", result);
                    if accepted {
                        let rolled = ancestors(p).into_iter().filter(|a| registered.contains(a));
                        log.push((p, count, value, rolled.collect()));
                    }
                }
                RegOp::Sys(path, count) => {
                    engine.increment("u", &[Increment::new("_sys", &path).count(count)]).unwrap();
                    sys_sum = Some(sys_sum.unwrap_or(0) + count);
                }
            }
        }
        let got = totals(&engine, "u");
        // (a) the root holds every accepted increment of its class.
        let root = log.iter().fold(None, |acc: Option<(i64, i64)>, e| {
            let (c, v) = acc.unwrap_or((0, 0));
            Some((c + e.1, v + e.2))
        });
        prop_assert_eq!(got.get("/").copied(), root);
        let sys_root = engine
            .get("u", &[Selector::class("_sys").path("/")])
            .unwrap()
            .first()
            .map(|r| r.count);
        prop_assert_eq!(sys_root, sys_sum);
        // (b) every other cell: its own events plus those rolled up to it.
        for (p, path) in PATHS.iter().enumerate().skip(1) {
            let mine: Vec<_> = log.iter().filter(|e| e.0 == p || e.3.contains(&p)).collect();
            let expected = (!mine.is_empty()).then(|| {
                (mine.iter().map(|e| e.1).sum::<i64>(), mine.iter().map(|e| e.2).sum::<i64>())
            });
            prop_assert_eq!(got.get(*path).copied(), expected, "path {}", path);
        }
    });
}

// ---------------------------------------------------------------- (c)

fn prop_buckets_sum_to_totals_within_retention(kind: StoreKind) {
    proptest!(config(kind), |(
        events in prop::collection::vec(
            (0..PATHS.len(), 0i64..60, 0i64..DAY, amount(), amount()),
            1..40,
        ),
    )| {
        let engine = engine(kind);
        engine.register(PATHS.iter().map(|p| ("c", *p))).unwrap();
        let today = NOW.div_euclid(DAY);
        let mut week = None::<(i64, i64)>;
        for &(p, days_ago, secs, count, value) in &events {
            let at = (today - days_ago) * DAY + secs;
            let entry = Increment::new("c", PATHS[p]).count(count).value(value);
            engine.increment_at("u", &[entry], at).unwrap();
            if days_ago < 7 {
                let (c, v) = week.unwrap_or((0, 0));
                week = Some((c + count, v + value));
            }
        }
        let sum = |period: &str| -> HashMap<String, (i64, i64)> {
            let mut sums = HashMap::new();
            let rows = engine.get("u", &[Selector::class("c").period(period)]).unwrap();
            for r in rows {
                let s = sums.entry(r.path).or_insert((0, 0));
                s.0 += r.count;
                s.1 += r.value;
            }
            sums
        };
        let total = sum("total");
        prop_assert_eq!(sum("regex('^\\d{4}$')"), total.clone());
        prop_assert_eq!(sum("regex('^\\d{6}$')"), total);
        // Every event lands in `/`: its last7Days is the last seven days' sum.
        let root_week = engine
            .get("u", &[Selector::class("c").path("/").period("last7Days")])
            .unwrap()
            .first()
            .map(|r| (r.count, r.value));
        prop_assert_eq!(root_week, week);
    });
}

// ---------------------------------------------------------------- (d)

#[derive(Clone, Copy, Debug)]
enum Bad {
    Unregistered,
    TooDeep,
    UnknownClass,
    Overflow,
}

fn prop_a_rejected_batch_changes_nothing(kind: StoreKind) {
    proptest!(config(kind), |(
        good in prop::collection::vec((1..4usize, amount(), amount()), 0..10),
        bad_at in any::<prop::sample::Index>(),
        bad in prop_oneof![
            Just(Bad::Unregistered), Just(Bad::TooDeep), Just(Bad::UnknownClass), Just(Bad::Overflow)
        ],
        fresh_subject in any::<bool>(),
    )| {
        let engine = engine(kind);
        // Registered: /a, /a/b, /b (indices 1, 2, 4). /b/x is not.
        engine.register([("c", "/a"), ("c", "/a/b"), ("c", "/b")]).unwrap();
        engine.increment("u", &[Increment::new("c", "/b").count(i64::MAX - 100_000)]).unwrap();
        engine.increment_at("u", &[Increment::new("c", "/a").value(7)], NOW - 3 * DAY).unwrap();
        // A fresh subject holds nothing that could overflow.
        let uid = if fresh_subject && !matches!(bad, Bad::Overflow) { "fresh" } else { "u" };
        let paths = ["/a", "/a/b", "/b"];
        let mut batch: Vec<Increment<'_>> = good
            .iter()
            .map(|&(p, c, v)| Increment::new("c", paths[p - 1]).count(c).value(v))
            .collect();
        let index = bad_at.index(batch.len() + 1);
        batch.insert(index, match bad {
            Bad::Unregistered => Increment::new("c", "/b/x"),
            Bad::TooDeep => Increment::new("c", "/a/b/c"),
            Bad::UnknownClass => Increment::new("nope", "/"),
            Bad::Overflow => Increment::new("c", "/a").count(i64::MAX),
        });
        let everything = [Selector::class("regex('')").period("regex('')")];
        let before = (engine.get(uid, &[]).unwrap(), engine.get(uid, &everything).unwrap());
        // Only the embedded engine counts its subjects.
        let subjects = engine.embedded().map(|engine| engine.subject_count());

        let err = engine.increment(uid, &batch).unwrap_err();
        prop_assert!(matches!(err, Error::Entry { index: i, .. } if i == index), "{:?}", err);
        let kind_ok = match bad {
            Bad::Unregistered => matches!(err.root(), Error::NotRegistered { .. }),
            Bad::TooDeep => matches!(err.root(), Error::PathTooDeep { .. }),
            Bad::UnknownClass => matches!(err.root(), Error::UnknownClass { .. }),
            Bad::Overflow => matches!(err.root(), Error::Overflow { .. }),
        };
        prop_assert!(kind_ok, "{:?}", err);
        let after = (engine.get(uid, &[]).unwrap(), engine.get(uid, &everything).unwrap());
        prop_assert_eq!(after, before);
        prop_assert_eq!(engine.embedded().map(|engine| engine.subject_count()), subjects);
    });
}

// ---------------------------------------------------------------- (e)

#[derive(Clone, Debug)]
enum Op {
    Register(usize),
    Unregister(usize),
    Batch(usize, Vec<(usize, i64, i64)>),
    MakeHandle(usize),
    UseHandle(usize, prop::sample::Index, i64, i64),
}

/// The operations on a store of `kind`: counter handles are the embedded
/// engine's only, so the cluster's sequences have none.
fn op(kind: StoreKind) -> BoxedStrategy<Op> {
    let p = 0..PATHS.len();
    let u = 0..UIDS.len();
    match kind {
        StoreKind::Embedded => prop_oneof![
            2 => p.clone().prop_map(Op::Register),
            1 => p.clone().prop_map(Op::Unregister),
            5 => (u.clone(), prop::collection::vec((p.clone(), amount(), amount()), 1..4))
                .prop_map(|(u, e)| Op::Batch(u, e)),
            1 => p.prop_map(Op::MakeHandle),
            2 => (u, any::<prop::sample::Index>(), amount(), amount())
                .prop_map(|(u, h, c, v)| Op::UseHandle(u, h, c, v)),
        ]
        .boxed(),
        StoreKind::Cluster => prop_oneof![
            2 => p.clone().prop_map(Op::Register),
            1 => p.clone().prop_map(Op::Unregister),
            5 => (u, prop::collection::vec((p, amount(), amount()), 1..4))
                .prop_map(|(u, e)| Op::Batch(u, e)),
        ]
        .boxed(),
    }
}

#[derive(Default)]
struct Model {
    registered: BTreeSet<usize>,
    cells: HashMap<(usize, usize), (i64, i64)>,
}

impl Model {
    fn accepts(&self, p: usize) -> bool {
        self.registered.contains(&p) || (p == 0 && !self.registered.is_empty())
    }

    fn apply(&mut self, uid: usize, p: usize, count: i64, value: i64) {
        let mut targets = vec![p];
        targets.extend(
            ancestors(p)
                .into_iter()
                .filter(|&a| a == 0 || self.registered.contains(&a)),
        );
        for t in targets {
            let cell = self.cells.entry((uid, t)).or_default();
            cell.0 += count;
            cell.1 += value;
        }
    }

    fn totals(&self, uid: usize) -> HashMap<String, (i64, i64)> {
        self.cells
            .iter()
            .filter(|((u, _), _)| *u == uid)
            .map(|((_, p), amount)| (PATHS[*p].to_owned(), *amount))
            .collect()
    }
}

fn prop_the_engine_matches_a_hashmap_model(kind: StoreKind) {
    proptest!(config(kind), |(ops in prop::collection::vec(op(kind), 1..50))| {
        let engine = engine(kind);
        let mut model = Model::default();
        let mut handles: Vec<(usize, CounterHandle)> = Vec::new();
        for op in ops {
            match op {
                Op::Register(p) => {
                    engine.register([("c", PATHS[p])]).unwrap();
                    model.registered.insert(p);
                }
                Op::Unregister(p) => {
                    engine.unregister([("c", PATHS[p])]).unwrap();
                    model.registered.remove(&p);
                }
                Op::Batch(uid, entries) => {
                    let batch: Vec<_> = entries
                        .iter()
                        .map(|&(p, c, v)| Increment::new("c", PATHS[p]).count(c).value(v))
                        .collect();
                    let result = engine.increment(UIDS[uid], &batch);
                    match entries.iter().position(|e| !model.accepts(e.0)) {
                        None => {
                            prop_assert!(result.is_ok(), "{:?}", result);
                            for (p, c, v) in entries {
                                model.apply(uid, p, c, v);
                            }
                        }
                        Some(index) => {
                            let err = result.unwrap_err();
                            prop_assert!(
                                matches!(err, Error::Entry { index: i, .. } if i == index),
                                "{:?}", err
                            );
                            prop_assert_eq!(err.code().number(), 409_011);
                            let kind_ok = if model.registered.is_empty() {
                                matches!(err.root(), Error::UnknownClass { .. })
                            } else {
                                matches!(err.root(), Error::NotRegistered { .. })
                            };
                            prop_assert!(kind_ok, "{:?}", err);
                        }
                    }
                }
                Op::MakeHandle(p) => {
                    let embedded = engine.embedded().expect("handles are the embedded engine's");
                    let handle = embedded.counter("c", PATHS[p]);
                    prop_assert_eq!(handle.is_ok(), model.accepts(p));
                    if let Ok(handle) = handle {
                        handles.push((p, handle));
                    }
                }
                Op::UseHandle(uid, which, count, value) => {
                    if handles.is_empty() {
                        continue;
                    }
                    let (p, handle) = &handles[which.index(handles.len())];
                    let embedded = engine.embedded().expect("handles are the embedded engine's");
                    let result = embedded.increment_counter(UIDS[uid], handle, count, value);
                    prop_assert_eq!(result.is_ok(), model.accepts(*p), "{:?}", result);
                    if result.is_ok() {
                        model.apply(uid, *p, count, value);
                    }
                }
            }
            let registered: Vec<_> = engine.registered().into_iter().map(|k| index_of(&k.path)).collect();
            prop_assert_eq!(registered, model.registered.iter().copied().collect::<Vec<_>>());
        }
        for (uid, name) in UIDS.iter().enumerate() {
            prop_assert_eq!(totals(&engine, name), model.totals(uid), "subject {}", name);
        }
    });
}

// ---------------------------------------------------------------- (f)

/// Counts and values small and large: three large ones of a sign overflow.
fn wide_amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => amount(),
        1 => Just(i64::MAX / 3),
        1 => Just(i64::MIN / 3),
    ]
}

fn prop_a_batch_does_what_its_entries_do_one_by_one(kind: StoreKind) {
    proptest!(config(kind), |(
        seeded in prop::collection::vec((0..40usize, wide_amount()), 0..40),
        entries in prop::collection::vec((0..40usize, wide_amount(), wide_amount()), 1..60),
        days_ago in 0i64..3,
        every_cell_exists in prop::bool::weighted(0.75),
    )| {
        // Forty counters: a batch reaches more distinct cells (and has more
        // entries) than are kept on the stack.
        let paths: Vec<String> = (0..40).map(|i| format!("/p{i}")).collect();
        let (batched, one_by_one) = (engine(kind), engine(kind));
        for engine in [&batched, &one_by_one] {
            engine.register(paths.iter().map(|p| ("c", p.as_str()))).unwrap();
            if every_cell_exists {
                // The batch then writes its cells in place, else it creates some.
                for path in &paths {
                    engine.increment("u", &[Increment::new("c", path)]).unwrap();
                }
            }
            for &(p, count) in &seeded {
                // Seeding may overflow too: the same in both engines.
                let _ = engine.increment("u", &[Increment::new("c", &paths[p]).count(count)]);
            }
        }
        let at = NOW - days_ago * DAY;
        let batch: Vec<Increment<'_>> = entries
            .iter()
            .map(|&(p, c, v)| Increment::new("c", &paths[p]).count(c).value(v))
            .collect();
        let everything = [Selector::class("regex('')").period("regex('')")];
        let before = batched.get("u", &everything).unwrap();

        let result = batched.increment_at("u", &batch, at);
        let refused_at = batch
            .iter()
            .position(|entry| one_by_one.increment_at("u", std::slice::from_ref(entry), at).is_err());
        match refused_at {
            None => {
                prop_assert!(result.is_ok(), "{:?}", result);
                prop_assert_eq!(
                    batched.get("u", &everything).unwrap(),
                    one_by_one.get("u", &everything).unwrap()
                );
            }
            Some(index) => {
                let err = result.unwrap_err();
                prop_assert!(matches!(err, Error::Entry { index: i, .. } if i == index), "{:?}", err);
                prop_assert!(matches!(err.root(), Error::Overflow { .. }), "{:?}", err);
                prop_assert_eq!(batched.get("u", &everything).unwrap(), before);
            }
        }
    });
}

// ---------------------------------------------------------------- (g)

/// An entry of a batch with several bad entries: good ones of twelve
/// registered counters (amounts large enough to overflow by accumulation),
/// and each kind of entry the engine rejects.
#[derive(Clone, Debug)]
enum MixedEntry {
    Good(usize, i64),
    Unregistered,
    BadPath,
    TooDeep,
    UnknownClass,
}

fn mixed_entry() -> impl Strategy<Value = MixedEntry> {
    prop_oneof![
        12 => (0..12usize, wide_amount()).prop_map(|(p, c)| MixedEntry::Good(p, c)),
        1 => Just(MixedEntry::Unregistered),
        1 => Just(MixedEntry::BadPath),
        1 => Just(MixedEntry::TooDeep),
        1 => Just(MixedEntry::UnknownClass),
    ]
}

/// "The error names the index of the first bad entry": with
/// entries of several kinds of badness in one batch, found by
/// different checks (names resolved first, overflow after), the error
/// names the first entry that applying the batch's entries one by one
/// refuses, with that entry's error, and the batch changes nothing.
fn prop_the_error_names_the_first_entry_one_by_one_application_refuses(kind: StoreKind) {
    proptest!(config(kind), |(
        seeded in prop::collection::vec((0..12usize, wide_amount()), 0..12),
        entries in prop::collection::vec(mixed_entry(), 1..30),
    )| {
        let paths: Vec<String> = (0..12).map(|i| format!("/p{i}")).collect();
        let (batched, one_by_one) = (engine(kind), engine(kind));
        for engine in [&batched, &one_by_one] {
            engine.register(paths.iter().map(|p| ("c", p.as_str()))).unwrap();
            for &(p, count) in &seeded {
                let _ = engine.increment("u", &[Increment::new("c", &paths[p]).count(count)]);
            }
        }
        let batch: Vec<Increment<'_>> = entries
            .iter()
            .map(|entry| match *entry {
                MixedEntry::Good(p, count) => Increment::new("c", &paths[p]).count(count),
                MixedEntry::Unregistered => Increment::new("c", "/q"),
                MixedEntry::BadPath => Increment::new("c", "p0"),
                MixedEntry::TooDeep => Increment::new("c", "/p0/x/y"),
                MixedEntry::UnknownClass => Increment::new("nope", "/"),
            })
            .collect();
        let everything = [Selector::class("regex('')").period("regex('')")];
        let before = batched.get("u", &everything).unwrap();

        let result = batched.increment("u", &batch);
        let refused = batch.iter().enumerate().find_map(|(index, entry)| {
            one_by_one
                .increment("u", std::slice::from_ref(entry))
                .err()
                .map(|err| (index, err))
        });
        match refused {
            None => prop_assert!(result.is_ok(), "{:?}", result),
            Some((index, alone)) => {
                let err = result.unwrap_err();
                prop_assert!(matches!(err, Error::Entry { index: i, .. } if i == index), "{:?}", err);
                prop_assert_eq!(
                    std::mem::discriminant(err.root()),
                    std::mem::discriminant(alone.root()),
                    "{:?} against {:?}", err, alone
                );
                prop_assert_eq!(batched.get("u", &everything).unwrap(), before);
            }
        }
    });
}

// ---------------------------------------------------------------- both stores

store_tests! {
    fn roll_ups_match_the_event_log(kind) {
        prop_roll_ups_match_the_event_log(kind);
    }

    fn buckets_sum_to_totals_within_retention(kind) {
        prop_buckets_sum_to_totals_within_retention(kind);
    }

    fn a_rejected_batch_changes_nothing(kind) {
        prop_a_rejected_batch_changes_nothing(kind);
    }

    fn the_engine_matches_a_hashmap_model(kind) {
        prop_the_engine_matches_a_hashmap_model(kind);
    }

    fn a_batch_does_what_its_entries_do_one_by_one(kind) {
        prop_a_batch_does_what_its_entries_do_one_by_one(kind);
    }

    fn the_error_names_the_first_entry_one_by_one_application_refuses(kind) {
        prop_the_error_names_the_first_entry_one_by_one_application_refuses(kind);
    }
}
