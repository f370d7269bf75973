//! Property ("concurrent increments lose nothing"): for any
//! number of threads, any increments per thread and any mix of shared and
//! own subjects, counts and values, the totals after all threads finish are
//! exactly the sums of what every thread added (checked against a model
//! summed up front), for the counter, its registered parent and the root.

use proptest::prelude::*;
use tally::{Increment, ManualClock, Selector, Tally};

#[derive(Clone, Debug)]
struct Work {
    /// Per thread: (shared subject?, count, value) for each increment.
    threads: Vec<Vec<(bool, i64, i64)>>,
}

fn work() -> impl Strategy<Value = Work> {
    prop::collection::vec(
        prop::collection::vec((any::<bool>(), -5i64..50, -1000i64..1000), 1..200),
        2..6,
    )
    .prop_map(|threads| Work { threads })
}

fn total(engine: &Tally, uid: &str, path: &str) -> (i64, i64) {
    engine
        .get(uid, &[Selector::class("c").path(path)])
        .unwrap()
        .first()
        .map_or((0, 0), |row| (row.count, row.value))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn concurrent_increments_lose_nothing(work in work()) {
        let engine = Tally::builder().clock(ManualClock::new(1_795_780_800)).build().unwrap();
        engine.register([("c", "/a"), ("c", "/a/b")]).unwrap();
        let handle = engine.counter("c", "/a/b").unwrap();
        std::thread::scope(|scope| {
            for (t, increments) in work.threads.iter().enumerate() {
                let (engine, handle) = (&engine, &handle);
                scope.spawn(move || {
                    let own = format!("own-{t}");
                    for (i, &(shared, count, value)) in increments.iter().enumerate() {
                        let uid = if shared { "shared" } else { own.as_str() };
                        // Alternate the handle path and the by-name path.
                        if i % 2 == 0 {
                            engine.increment_counter(uid, handle, count, value).unwrap();
                        } else {
                            let entry = [Increment::new("c", "/a/b").count(count).value(value)];
                            engine.increment(uid, &entry).unwrap();
                        }
                    }
                });
            }
        });
        let sum = |pick: &dyn Fn(usize, bool) -> bool| {
            work.threads.iter().enumerate().fold((0i64, 0i64), |acc, (t, incs)| {
                incs.iter()
                    .filter(|(shared, _, _)| pick(t, *shared))
                    .fold(acc, |(c, v), &(_, count, value)| (c + count, v + value))
            })
        };
        let shared = sum(&|_, shared| shared);
        for path in ["/a/b", "/a", "/"] {
            prop_assert_eq!(total(&engine, "shared", path), shared);
        }
        for t in 0..work.threads.len() {
            let own = sum(&|thread, shared| thread == t && !shared);
            prop_assert_eq!(total(&engine, &format!("own-{t}"), "/"), own);
        }
    }
}
