//! Durability costs: snapshot write and recovery of 1,000,000 subjects,
//! reopening a data directory holding 1,000,000 live regTokens,
//! acknowledged-increment throughput under
//! `Durability::Always` with 64 writer threads (group commit), and the
//! increment path under `Interval(1 s)` beside the in-memory engine.
//!
//! Run with `cargo bench --bench persistence`. The snapshot size per cell
//! is printed once on stderr.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tally::{Durability, Tally, platform_shaped_uid};

const CLASS: &str = "shares";
const PATH: &str = "/news";
const SUBJECTS: usize = 1_000_000;

fn open(dir: &std::path::Path, durability: Durability) -> Tally {
    Tally::builder()
        .data_dir(dir)
        .durability(durability)
        .build()
        .expect("open")
}

fn populate(engine: &Tally, subjects: usize) {
    engine.register([(CLASS, PATH)]).expect("register");
    let handle = engine.counter(CLASS, PATH).expect("handle");
    for i in 0..subjects {
        let uid = platform_shaped_uid(i as u64);
        engine
            .increment_counter(uid.as_str(), &handle, 1, 7)
            .expect("increment");
    }
}

fn snapshot_and_recovery(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("persistence/1m_subjects");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    {
        let engine = open(dir.path(), Durability::Never);
        populate(&engine, SUBJECTS);
        let summary = engine.snapshot().expect("snapshot");
        // One cell per subject on "/news", plus its roll-up to "/".
        eprintln!(
            "snapshot of {} subjects: {} bytes, {:.1} bytes per cell",
            summary.subjects,
            summary.bytes,
            summary.bytes as f64 / (2 * SUBJECTS) as f64
        );
        group.bench_function("snapshot", |b| {
            b.iter(|| engine.snapshot().expect("snapshot"))
        });
    }
    group.bench_function("recovery", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let engine = open(dir.path(), Durability::Never);
                total += start.elapsed();
                assert_eq!(engine.subject_count(), SUBJECTS);
            }
            total
        })
    });
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    const THREADS: usize = 64;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), Durability::Always);
    populate(&engine, 10_000);
    let handle = engine.counter(CLASS, PATH).expect("handle");
    let mut group = c.benchmark_group("persistence/always");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("64_threads", |b| {
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(THREADS as u64);
            let start = Instant::now();
            std::thread::scope(|scope| {
                for t in 0..THREADS {
                    let (engine, handle) = (&engine, &handle);
                    scope.spawn(move || {
                        for i in 0..per_thread {
                            let uid = platform_shaped_uid((t as u64 * 7919 + i * 104_729) % 10_000);
                            engine
                                .increment_counter(uid.as_str(), handle, 1, 1)
                                .expect("increment");
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

fn interval_against_memory(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let durable = open(dir.path(), Durability::Interval(Duration::from_secs(1)));
    let memory = Tally::builder().build().expect("engine");
    let uids: Vec<String> = (0..1000).map(platform_shaped_uid).collect();
    let mut group = c.benchmark_group("persistence/interval_vs_memory");
    group.measurement_time(Duration::from_secs(3));
    for (name, engine) in [("memory", &memory), ("interval_1s", &durable)] {
        populate(engine, 1000);
        let handle = engine.counter(CLASS, PATH).expect("handle");
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 7) % uids.len();
                engine
                    .increment_counter(uids[i].as_str(), &handle, 1, 7)
                    .expect("increment");
            })
        });
    }
    group.finish();
}

/// Reopening a snapshot of 1,000,000 live regTokens (their frames split
/// within the writers' budget).
fn reg_tokens_reopen(c: &mut Criterion) {
    const TOKENS: usize = 1_000_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let ttl = Duration::from_secs(30 * 86_400);
    let builder = || {
        Tally::builder()
            .data_dir(dir.path())
            .durability(Durability::Never)
            .reg_token_ttl(ttl)
    };
    let token = {
        let engine = builder().build().expect("open");
        let mut last = None;
        for i in 0..TOKENS {
            last = Some(
                engine
                    .issue_reg_token(&platform_shaped_uid(i as u64))
                    .expect("issue"),
            );
        }
        let summary = engine.snapshot().expect("snapshot");
        eprintln!("snapshot of {TOKENS} regTokens: {} bytes", summary.bytes);
        last.expect("a token")
    };
    let mut group = c.benchmark_group("persistence/1m_reg_tokens");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("reopen", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let engine = builder().build().expect("open");
                total += start.elapsed();
                let uid = engine.resolve_uid((&token).into()).expect("resolves");
                assert_eq!(uid, platform_shaped_uid(TOKENS as u64 - 1));
            }
            total
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    interval_against_memory,
    group_commit,
    snapshot_and_recovery,
    reg_tokens_reopen
);
criterion_main!(benches);
