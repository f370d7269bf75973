//! Pins the cost of overlapping selectors: rows were built for every
//! selector × cell × period and deduplicated afterwards, so 100 copies of
//! one selector allocated about a hundred times what one did (292,022
//! allocations against 2,930 on a 44-cell subject). Each (cell, period)
//! row is now built once, however many selectors match it.
//!
//! A counting global allocator counts the allocations of this test's own
//! thread only (the engine's background threads allocate concurrently).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tally::{Increment, ManualClock, Selector, Tally};

struct CountingAllocator;

thread_local! {
    // Const-initialised and without destructors: using them never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; it only
// counts allocations.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is passed through to System.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed through to System.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is passed through to System.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_of(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn a_hundred_copies_of_a_selector_cost_what_one_does() {
    let uid = "0123456789abcdef0123456789abcdef";
    let engine = Tally::builder()
        .clock(ManualClock::new(1_795_780_800))
        .build()
        .unwrap();
    let paths: Vec<String> = (0..43).map(|i| format!("/p{i}")).collect();
    engine
        .register(paths.iter().map(|p| ("shares", p.as_str())))
        .unwrap();
    for path in &paths {
        engine
            .increment(uid, &[Increment::new("shares", path)])
            .unwrap();
    }
    let one = vec![Selector::class("regex('')").period("regex('')")];
    let hundred = vec![one[0].clone(); 100];
    let rows = engine.get(uid, &one).unwrap();
    assert_eq!(rows.len(), 44 * 3);
    let single = allocations_of(|| assert_eq!(engine.get(uid, &one).unwrap(), rows));
    let many = allocations_of(|| assert_eq!(engine.get(uid, &hundred).unwrap(), rows));
    assert!(
        many <= single * 2,
        "100 selectors: {many} allocations, one: {single}"
    );
}
