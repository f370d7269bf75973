//! Concurrency ("atomic per subject", `Tally: Send + Sync`).
//!
//! Pins: N threads × M increments to one subject, or to one subject each,
//! lose nothing; a reader running alongside sees every batch whole or not at
//! all (a batch adding 1 to two counters always reads as equal totals, and
//! the root always equals their sum); registry changes racing increments
//! neither lose root counts nor break a batch apart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use tally::{Increment, ManualClock, Selector, Tally};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC
const THREADS: usize = 8;
const PER_THREAD: usize = 2_000;

fn engine() -> Tally {
    let engine = Tally::builder()
        .clock(ManualClock::new(NOW))
        .build()
        .unwrap();
    engine
        .register([("c", "/a"), ("c", "/b"), ("c", "/a/x")])
        .unwrap();
    engine
}

/// The `total` count of (c, path) for `uid`, 0 if absent.
fn total(rows: &[tally::CounterRow], path: &str) -> i64 {
    rows.iter()
        .find(|r| r.class == "c" && r.path == path)
        .map_or(0, |r| r.count)
}

#[test]
fn tally_is_send_and_sync() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Tally>();
    check::<tally::CounterHandle>();
}

#[test]
fn many_threads_on_one_subject_lose_nothing() {
    let engine = engine();
    let handle = engine.counter("c", "/a/x").unwrap();
    thread::scope(|s| {
        for t in 0..THREADS {
            let (engine, handle) = (engine.clone(), handle.clone());
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    if (t + i) % 2 == 0 {
                        engine
                            .increment("u", &[Increment::new("c", "/a/x").value(3)])
                            .unwrap();
                    } else {
                        engine.increment_counter("u", &handle, 1, 3).unwrap();
                    }
                }
            });
        }
    });
    let rows = engine.get("u", &[]).unwrap();
    let n = (THREADS * PER_THREAD) as i64;
    for path in ["/", "/a", "/a/x"] {
        let row = rows.iter().find(|r| r.path == path).unwrap();
        assert_eq!((row.count, row.value), (n, 3 * n), "{path}");
    }
    let months = engine
        .get("u", &[Selector::class("c").path("/a/x").period("2611")])
        .unwrap();
    assert_eq!(months[0].count, n);
}

#[test]
fn many_threads_on_their_own_subjects_lose_nothing() {
    let engine = engine();
    thread::scope(|s| {
        for t in 0..THREADS {
            let engine = engine.clone();
            s.spawn(move || {
                let uid = format!("user-{t}");
                for _ in 0..PER_THREAD {
                    engine
                        .increment(uid.as_str(), &[Increment::new("c", "/b").count(2)])
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(engine.subject_count(), THREADS);
    for t in 0..THREADS {
        let rows = engine.get(format!("user-{t}").as_str(), &[]).unwrap();
        assert_eq!(total(&rows, "/b"), 2 * PER_THREAD as i64);
        assert_eq!(total(&rows, "/"), 2 * PER_THREAD as i64);
    }
}

#[test]
fn readers_see_whole_batches_only() {
    let engine = engine();
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let engine = engine.clone();
                s.spawn(move || {
                    let batch = [Increment::new("c", "/a"), Increment::new("c", "/b")];
                    for _ in 0..PER_THREAD {
                        engine.increment("u", &batch).unwrap();
                    }
                })
            })
            .collect();
        for _ in 0..2 {
            let (engine, done) = (engine.clone(), &done);
            s.spawn(move || {
                let selectors = [
                    Selector::class("c").path("/a"),
                    Selector::class("c").path("/b"),
                    Selector::class("c").path("/"),
                ];
                let mut reads = 0;
                while !done.load(Ordering::Acquire) || reads == 0 {
                    let rows = engine.get("u", &selectors).unwrap();
                    let (a, b, root) = (total(&rows, "/a"), total(&rows, "/b"), total(&rows, "/"));
                    assert_eq!(a, b, "a batch was seen half-applied");
                    assert_eq!(root, a + b);
                    reads += 1;
                    // Leave the writers room on small machines.
                    thread::yield_now();
                }
            });
        }
        for writer in writers {
            writer.join().unwrap();
        }
        done.store(true, Ordering::Release);
    });
    let rows = engine.get("u", &[]).unwrap();
    assert_eq!(total(&rows, "/a"), 4 * PER_THREAD as i64);
    assert_eq!(total(&rows, "/b"), 4 * PER_THREAD as i64);
}

#[test]
fn registry_changes_racing_increments_keep_roots_exact() {
    let engine = engine();
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        // Toggles the parent `/a` while others increment `/a/x`.
        let toggler = {
            let (engine, done) = (engine.clone(), &done);
            s.spawn(move || {
                let mut toggles = 0;
                while !done.load(Ordering::Acquire) || toggles < 2 {
                    engine.unregister([("c", "/a")]).unwrap();
                    engine.register([("c", "/a")]).unwrap();
                    toggles += 2;
                    thread::yield_now();
                }
            })
        };
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let engine = engine.clone();
                s.spawn(move || {
                    let handle = engine.counter("c", "/a/x").unwrap();
                    for i in 0..PER_THREAD {
                        if i % 2 == 0 {
                            engine.increment_counter("u", &handle, 1, 0).unwrap();
                        } else {
                            engine
                                .increment("u", &[Increment::new("c", "/a/x")])
                                .unwrap();
                        }
                        if i % 64 == 0 {
                            let rows = engine.get("u", &[]).unwrap();
                            let (leaf, parent) = (total(&rows, "/a/x"), total(&rows, "/a"));
                            assert_eq!(total(&rows, "/"), leaf);
                            assert!(parent <= leaf, "{parent} > {leaf}");
                        }
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        done.store(true, Ordering::Release);
        toggler.join().unwrap();
    });
    let rows = engine.get("u", &[]).unwrap();
    let n = 4 * PER_THREAD as i64;
    assert_eq!(total(&rows, "/a/x"), n);
    assert_eq!(total(&rows, "/"), n);
    assert!((0..=n).contains(&total(&rows, "/a")));
    assert!(engine.registered().contains(&("c", "/a").into()));
}

#[test]
fn tokens_issued_concurrently_are_distinct() {
    let engine = engine();
    let tokens: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let engine = engine.clone();
                s.spawn(move || {
                    (0..200)
                        .map(|_| engine.issue_reg_token("u").unwrap().as_str().to_owned())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let distinct: std::collections::HashSet<_> = tokens.iter().collect();
    assert_eq!(distinct.len(), THREADS * 200);
}
