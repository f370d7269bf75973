//! `getCounters` on one subject holding 50 cells (a class root and 49
//! registered paths, each with a week of day buckets), in one criterion
//! group (issue: performance):
//!
//! - `exact`: one (class, path), period `total`: one row;
//! - `class`: every path of the class, period `total`: 50 rows;
//! - `regex`: paths matching `regex('^/p1')`, every stored period
//!   (`regex('.')`): 10 cells, each with its total, month and 7 days.
//!
//! Run with `cargo bench --bench query`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tally::{Increment, ManualClock, Selector, Tally};

const CLASS: &str = "shares";
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
            .increment_at("user-1", &entries, NOW - day * DAY)
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
    assert_eq!(engine.get("user-1", &exact).expect("get").len(), 1);
    assert_eq!(engine.get("user-1", &class).expect("get").len(), 50);
    assert_eq!(engine.get("user-1", &regex).expect("get").len(), 10 * 9);

    let mut group = c.benchmark_group("query/50_cells");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (name, selectors) in [("exact", &exact), ("class", &class), ("regex", &regex)] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(engine.get("user-1", selectors).expect("get")))
        });
    }
    group.finish();
}

criterion_group!(benches, query);
criterion_main!(benches);
