//! Increment by handle at 1,000,000 subjects, by the shape of the
//! subjects' records: how the store finds a subject whose cells are not
//! the benchmark's usual two (one counter and `/`), beside the naive map.
//!
//! - `two_cells`: every subject has one counter (two cells with `/`);
//! - `three_cells`: every subject has two counters (three cells, on the heap);
//! - `mixed`: half the subjects one counter, half two.
//!
//! Run with `cargo bench --bench shapes`.

mod common;

use std::time::Duration;

use common::XorShift;
use criterion::{Criterion, criterion_group, criterion_main};
use dashmap::DashMap;
use tally::{Tally, platform_shaped_uid};

const CLASS: &str = "shares";
const SUBJECTS: usize = 1_000_000;

/// A shape's label, and which subjects get a second counter.
type Shape = (&'static str, fn(usize) -> bool);

/// An engine whose subject `i` has counters `/a` and, if `second(i)`, `/b`.
fn engine_with(uids: &[String], second: impl Fn(usize) -> bool) -> Tally {
    let engine = Tally::builder().build().expect("engine");
    engine
        .register([(CLASS, "/a"), (CLASS, "/b")])
        .expect("register");
    let a = engine.counter(CLASS, "/a").expect("handle");
    let b = engine.counter(CLASS, "/b").expect("handle");
    for (i, uid) in uids.iter().enumerate() {
        engine
            .increment_counter(uid.as_str(), &a, 1, 0)
            .expect("seed");
        if second(i) {
            engine
                .increment_counter(uid.as_str(), &b, 1, 0)
                .expect("seed");
        }
    }
    engine
}

fn shapes(c: &mut Criterion) {
    let uids: Vec<String> = (0..SUBJECTS as u64).map(platform_shaped_uid).collect();
    let naive: DashMap<(String, String, String), (i64, i64)> = DashMap::new();
    for uid in &uids {
        naive.insert((uid.clone(), CLASS.to_owned(), "/a".to_owned()), (1, 0));
    }
    let mut group = c.benchmark_group("shapes_1m");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let shapes: [Shape; 3] = [
        ("two_cells", |_| false),
        ("three_cells", |_| true),
        ("mixed", |i| i % 2 == 1),
    ];
    for (label, second) in shapes {
        let engine = engine_with(&uids, second);
        let a = engine.counter(CLASS, "/a").expect("handle");
        group.bench_function(format!("tally/{label}"), |bench| {
            bench.iter(|| {
                let uid = &uids[rng.next(SUBJECTS)];
                engine
                    .increment_counter(uid.as_str(), &a, 1, 7)
                    .expect("increment");
            })
        });
        drop(engine);
        group.bench_function(format!("naive/{label}"), |bench| {
            bench.iter(|| {
                let uid = &uids[rng.next(SUBJECTS)];
                let key = (uid.clone(), CLASS.to_owned(), "/a".to_owned());
                let mut cell = naive.entry(key).or_insert((0, 0));
                cell.0 += 1;
                cell.1 += 7;
            })
        });
    }
    group.finish();
}

criterion_group!(benches, shapes);
criterion_main!(benches);
