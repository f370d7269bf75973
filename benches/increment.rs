//! The hot increment path beside its baselines, in one criterion group per
//! population, so that one run gives the ratios.
//!
//! - `tally/handle`: increment through a resolved `CounterHandle`, existing subject and cell;
//! - `tally/name`: the same by (class, path) names;
//! - `tally/new_subject`: the first increment of a subject;
//! - `tally/batch10`: a batch of 10 entries by name;
//! - `naive`: `DashMap<(String, String, String), (i64, i64)>`, owned key built per call;
//! - `floor`: one `AtomicI64::fetch_add` at a random index of a preallocated vector.
//!
//! Populations: 1,000 hot subjects, and 1,000,000 subjects (cache-missing).
//! The benchmarks whose ratios are targets run next to each other (by
//! handle, naive, by name), so that the host's drift between them is small.
//! Run with `cargo bench --bench increment`.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common::XorShift;
use criterion::{Criterion, criterion_group, criterion_main};
use dashmap::DashMap;
use tally::{Increment, Tally, platform_shaped_uid};

const CLASS: &str = "shares";
const PATH: &str = "/news";

fn uids(count: usize) -> Vec<String> {
    (0..count as u64).map(platform_shaped_uid).collect()
}

fn engine_with(uids: &[String]) -> Tally {
    let engine = Tally::builder().build().expect("engine");
    let mut counters = vec![(CLASS.to_owned(), PATH.to_owned())];
    counters.extend((0..10).map(|i| (CLASS.to_owned(), format!("/c{i}"))));
    engine.register(counters).expect("register");
    let handle = engine.counter(CLASS, PATH).expect("handle");
    for uid in uids {
        engine
            .increment_counter(uid.as_str(), &handle, 1, 0)
            .expect("seed");
    }
    engine
}

fn population(c: &mut Criterion, label: &str, subjects: usize) {
    let uids = uids(subjects);
    let engine = engine_with(&uids);
    let handle = engine.counter(CLASS, PATH).expect("handle");
    let batch: Vec<String> = (0..10).map(|i| format!("/c{i}")).collect();
    let batch: Vec<Increment<'_>> = batch
        .iter()
        .map(|p| Increment::new(CLASS, p).value(5))
        .collect();
    let naive: DashMap<(String, String, String), (i64, i64)> = DashMap::new();
    for uid in &uids {
        naive.insert((uid.clone(), CLASS.to_owned(), PATH.to_owned()), (1, 0));
    }
    let floor: Vec<AtomicI64> = (0..subjects).map(|_| AtomicI64::new(0)).collect();

    let mut group = c.benchmark_group(format!("increment/{label}"));
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    group.bench_function("tally/handle", |b| {
        b.iter(|| {
            let uid = &uids[rng.next(subjects)];
            engine
                .increment_counter(uid.as_str(), &handle, 1, 7)
                .expect("increment");
        })
    });
    group.bench_function("naive", |b| {
        b.iter(|| {
            let uid = &uids[rng.next(subjects)];
            let key = (uid.clone(), CLASS.to_owned(), PATH.to_owned());
            let mut cell = naive.entry(key).or_insert((0, 0));
            cell.0 += 1;
            cell.1 += 7;
        })
    });
    group.bench_function("tally/name", |b| {
        b.iter(|| {
            let uid = &uids[rng.next(subjects)];
            engine
                .increment(uid.as_str(), &[Increment::new(CLASS, PATH).value(7)])
                .expect("increment");
        })
    });
    group.bench_function("tally/batch10", |b| {
        b.iter(|| {
            let uid = &uids[rng.next(subjects)];
            engine.increment(uid.as_str(), &batch).expect("increment");
        })
    });
    let mut fresh = 0u64;
    group.bench_function("tally/new_subject", |b| {
        b.iter(|| {
            fresh += 1;
            let uid = format!("new-{label}-{fresh}");
            engine
                .increment_counter(uid.as_str(), &handle, 1, 7)
                .expect("increment");
        })
    });
    group.bench_function("floor", |b| {
        b.iter(|| {
            black_box(&floor[rng.next(subjects)]).fetch_add(1, Ordering::Relaxed);
        })
    });
    group.finish();
}

/// Throughput of one thread against two threads on disjoint subjects,
/// as time per increment (lower is better; the ratio is the scaling).
fn threads(c: &mut Criterion) {
    const SUBJECTS: usize = 100_000;
    let uids = uids(SUBJECTS);
    let engine = engine_with(&uids);
    let handle = engine.counter(CLASS, PATH).expect("handle");
    let mut group = c.benchmark_group("increment/threads");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for threads in [1usize, 2] {
        group.bench_function(format!("handle/{threads}"), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(threads as u64);
                let start = Instant::now();
                std::thread::scope(|scope| {
                    for t in 0..threads {
                        let (engine, handle, uids) = (&engine, &handle, &uids);
                        scope.spawn(move || {
                            let mut rng = XorShift(0x2545_F491_4F6C_DD1D + t as u64);
                            let half = SUBJECTS / threads;
                            for _ in 0..per_thread {
                                let uid = &uids[t * half + rng.next(half)];
                                engine
                                    .increment_counter(uid.as_str(), handle, 1, 7)
                                    .expect("increment");
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    group.finish();
}

fn hot(c: &mut Criterion) {
    population(c, "hot_1k", 1_000);
}

fn cold(c: &mut Criterion) {
    population(c, "cold_1m", 1_000_000);
}

criterion_group!(benches, hot, cold, threads);
criterion_main!(benches);
