//! `getCounters` on one subject holding 50 cells (a class root and 49
//! registered paths, each with a week of day buckets), in one criterion
//! group:
//!
//! - `exact`: one (class, path), period `total`: one row;
//! - `class`: every path of the class, period `total`: 50 rows;
//! - `regex`: paths matching `regex('^/p1')`, every stored period
//!   (`regex('.')`): 10 cells, each with its total, month and 7 days.
//!
//! And reads with many selectors, in the group `query/many_selectors`:
//!
//! - `100_same`: 100 copies of `{class: regex(''), period: regex('')}`:
//!   every stored period of every cell, 450 rows, each built once;
//! - `100_distinct`: 100 different selectors (exact paths and
//!   `regex('.')` periods, exact paths and `total`);
//! - `refused_9000`: `accounts.getCounters` through `tally::rest::call`
//!   with 9,000 copies of the first selector (about 380 KB of JSON), which
//!   the engine refuses (more than `max_selectors`) before compiling any.
//!
//! Before the timings, the peak heap each of these takes is printed (a
//! counting allocator: bytes allocated and not yet freed, above what was
//! held before the call).
//!
//! Run with `cargo bench --bench query`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tally::{Increment, ManualClock, Selector, Tally};

/// Counts the bytes allocated and not yet freed, and their peak.
struct PeakAllocator;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; it only
// counts bytes.
unsafe impl GlobalAlloc for PeakAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed through to System.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let held = HELD.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(held, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed through to System.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: PeakAllocator = PeakAllocator;

/// The most heap `f` holds at once beyond what was held before it.
fn peak_heap<R>(f: impl FnOnce() -> R) -> usize {
    let before = HELD.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    black_box(f());
    PEAK.load(Ordering::Relaxed) - before
}

const CLASS: &str = "shares";
/// A platform-shaped UID: 32 hexadecimal characters.
const UID: &str = "7d2c9a41e06b4f53a8c1d9e27f40b6a3";
/// 2026-11-27 12:00:00 UTC.
const NOW: i64 = 1_795_780_800;
const DAY: i64 = 86_400;

fn engine() -> Tally {
    let engine = Tally::builder()
        .clock(ManualClock::new(NOW))
        .build()
        .expect("engine");
    let paths: Vec<String> = (0..49).map(|i| format!("/p{i:02}")).collect();
    engine
        .register(paths.iter().map(|p| (CLASS, p.as_str())))
        .expect("register");
    for day in 0..7 {
        let entries: Vec<Increment<'_>> = paths
            .iter()
            .map(|p| Increment::new(CLASS, p).value(day + 1))
            .collect();
        engine
            .increment_at(UID, &entries, NOW - day * DAY)
            .expect("increment");
    }
    engine
}

fn query(c: &mut Criterion) {
    let engine = engine();
    let exact = [Selector::class(CLASS).path("/p17")];
    let class = [Selector::class(CLASS)];
    let regex = [Selector::class(CLASS)
        .path("regex('^/p1')")
        .period("regex('.')")];
    assert_eq!(engine.get(UID, &exact).expect("get").len(), 1);
    assert_eq!(engine.get(UID, &class).expect("get").len(), 50);
    assert_eq!(engine.get(UID, &regex).expect("get").len(), 10 * 9);

    let mut group = c.benchmark_group("query/50_cells");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (name, selectors) in [("exact", &exact), ("class", &class), ("regex", &regex)] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(engine.get(UID, selectors).expect("get")))
        });
    }
    group.finish();
}

fn many_selectors(c: &mut Criterion) {
    let engine = engine();
    let same = vec![Selector::class("regex('')").period("regex('')"); 100];
    let distinct: Vec<Selector> = (0..100)
        .map(|i| {
            let selector = Selector::class(CLASS).path(format!("/p{:02}", i % 49));
            if i < 49 {
                selector.period("regex('.')")
            } else {
                selector
            }
        })
        .collect();
    let one = r#"{"class":"regex('')","period":"regex('')"}"#;
    let refused = format!("[{}]", vec![one; 9_000].join(","));
    let refused_params = [("UID", UID), ("counters", refused.as_str())];
    assert_eq!(engine.get(UID, &same).expect("get").len(), 50 * 9);
    assert_eq!(engine.get(UID, &distinct).expect("get").len(), 49 * 9);
    let answer = tally::rest::call(&engine, "accounts.getCounters", &refused_params);
    assert!(answer.body.contains("max_selectors"), "{}", answer.body);

    eprintln!(
        "peak heap of one read: 100_same {} B, 100_distinct {} B, refused_9000 {} B ({} B of JSON)",
        peak_heap(|| engine.get(UID, &same)),
        peak_heap(|| engine.get(UID, &distinct)),
        peak_heap(|| tally::rest::call(&engine, "accounts.getCounters", &refused_params)),
        refused.len(),
    );

    let mut group = c.benchmark_group("query/many_selectors");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("100_same", |b| {
        b.iter(|| black_box(engine.get(UID, &same).expect("get")))
    });
    group.bench_function("100_distinct", |b| {
        b.iter(|| black_box(engine.get(UID, &distinct).expect("get")))
    });
    group.bench_function("refused_9000", |b| {
        b.iter(|| {
            black_box(tally::rest::call(
                &engine,
                "accounts.getCounters",
                &refused_params,
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, query, many_selectors);
criterion_main!(benches);
