//! Pins the hot-path promise: incrementing an existing cell of an existing
//! subject allocates nothing, by handle or by name. A counting global
//! allocator counts the allocations of the test's own thread only: the
//! engine's background threads (the clock ticker, started on first use)
//! allocate when they start, concurrently, and made an earlier version of
//! this test flaky.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use tally::{Increment, Tally};

struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Const-initialised and without a destructor: reading it never allocates.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
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
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..1000 {
        engine.increment_counter("user-1", &handle, 1, 5).unwrap();
    }
    let by_handle = ALLOCATIONS.load(Ordering::Relaxed) - before;
    for _ in 0..1000 {
        engine.increment("user-1", &entry).unwrap();
    }
    let by_name = ALLOCATIONS.load(Ordering::Relaxed) - before - by_handle;
    assert_eq!(
        (by_handle, by_name),
        (0, 0),
        "allocations by handle and by name"
    );

    // The counting is real: a new subject does allocate.
    engine.increment_counter("user-2", &handle, 1, 0).unwrap();
    assert!(ALLOCATIONS.load(Ordering::Relaxed) > before);
    let rows = engine
        .get(
            "user-1",
            &[tally::Selector::class("shares").path("/news/sport")],
        )
        .unwrap();
    assert_eq!(rows[0].count, 2002);
}
