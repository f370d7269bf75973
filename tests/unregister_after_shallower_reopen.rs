//! Pins a fault in unregistration after a reopen with a smaller
//! `max_path_depth`: counters registered under the larger depth kept
//! accepting nothing new at their depth, yet `unregister` held their paths
//! to the smaller depth and refused them (`PathTooDeep`), so they could
//! never be unregistered.

use tally::{Durability, ManualClock, Tally};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC

#[test]
fn a_counter_deeper_than_the_reopened_depth_can_be_unregistered() {
    let dir = tempfile::tempdir().unwrap();
    let open = |depth: usize| {
        Tally::builder()
            .clock(ManualClock::new(NOW))
            .max_path_depth(depth)
            .data_dir(dir.path())
            .durability(Durability::Always)
            .build()
            .unwrap()
    };
    {
        let engine = open(3);
        engine.register([("c", "/a/b/c"), ("c", "/a")]).unwrap();
        engine.close().unwrap();
    }
    let engine = open(2);
    engine.unregister([("c", "/a/b/c")]).unwrap();
    let registered: Vec<String> = engine.registered().into_iter().map(|k| k.path).collect();
    assert_eq!(registered, ["/a"]);
    drop(engine);
    // And it stays unregistered.
    assert_eq!(open(2).registered().len(), 1);
}
