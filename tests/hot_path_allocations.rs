//! Pins the hot-path promise: incrementing an existing cell of an existing
//! subject allocates nothing, by handle or by name, nor does a batch of up
//! to 16 entries (a longer one allocates its resolved entries).
//!
//! A counting global allocator counts each test's allocations in its own
//! thread only. The tests run in parallel, and the engine's background
//! threads (the clock ticker, started on first use) allocate when they
//! start, concurrently: counting across threads made earlier versions of
//! this file flaky.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tally::{Increment, Tally};

struct CountingAllocator;

thread_local! {
    // Const-initialised and without destructors: using them never allocates.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

/// The allocations this thread has counted.
fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: forwards every call to the system allocator unchanged; it only
// counts allocations.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is passed through to System.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed through to System.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is passed through to System.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[test]
fn incrementing_an_existing_cell_allocates_nothing() {
    let engine = Tally::builder().build().unwrap();
    engine
        .register([("shares", "/news"), ("shares", "/news/sport")])
        .unwrap();
    let handle = engine.counter("shares", "/news/sport").unwrap();
    // The first increment creates the subject, its cells and buckets.
    engine.increment_counter("user-1", &handle, 1, 0).unwrap();
    let entry = [Increment::new("shares", "/news/sport").value(3)];
    engine.increment("user-1", &entry).unwrap();

    COUNTING.with(|c| c.set(true));
    let before = allocations();
    for _ in 0..1000 {
        engine.increment_counter("user-1", &handle, 1, 5).unwrap();
    }
    let by_handle = allocations() - before;
    for _ in 0..1000 {
        engine.increment("user-1", &entry).unwrap();
    }
    let by_name = allocations() - before - by_handle;
    assert_eq!(
        (by_handle, by_name),
        (0, 0),
        "allocations by handle and by name"
    );

    // The counting is real: a new subject does allocate.
    engine.increment_counter("user-2", &handle, 1, 0).unwrap();
    assert!(allocations() > before);
    let rows = engine
        .get(
            "user-1",
            &[tally::Selector::class("shares").path("/news/sport")],
        )
        .unwrap();
    assert_eq!(rows[0].count, 2002);
}

#[test]
fn a_batch_of_existing_cells_allocates_nothing() {
    let engine = Tally::builder().build().unwrap();
    let paths: Vec<String> = (0..20).map(|i| format!("/c{i}")).collect();
    engine
        .register(paths.iter().map(|p| ("shares", p.as_str())))
        .unwrap();
    // Sixteen entries over ten counters, duplicates included, and each
    // rolls up to `/`: eleven cells, all created by the first batch.
    let batch: Vec<Increment<'_>> = (0..16)
        .map(|i| Increment::new("shares", &paths[i % 10]).value(2))
        .collect();
    let long: Vec<Increment<'_>> = paths.iter().map(|p| Increment::new("shares", p)).collect();
    engine.increment("user-1", &long).unwrap();
    // Last, so that this thread's memo of names holds the batch's.
    engine.increment("user-1", &batch).unwrap();

    COUNTING.with(|c| c.set(true));
    let before = allocations();
    for _ in 0..1000 {
        engine.increment("user-1", &batch).unwrap();
    }
    let by_batch = allocations() - before;
    engine.increment("user-1", &long).unwrap();
    let by_long_batch = allocations() - before - by_batch;
    COUNTING.with(|c| c.set(false));
    assert_eq!(by_batch, 0, "allocations by 1000 batches of 16 entries");
    // The counting is real: a batch of 20 entries allocates its resolved entries.
    assert!(by_long_batch > 0);

    let rows = engine
        .get("user-1", &[tally::Selector::class("shares").path("/")])
        .unwrap();
    assert_eq!(rows[0].count, 1001 * 16 + 2 * 20);
    let c0 = engine
        .get("user-1", &[tally::Selector::class("shares").path("/c0")])
        .unwrap();
    assert_eq!((c0[0].count, c0[0].value), (1001 * 2 + 2, 1001 * 4));
}
