//! Pins a fault in how registry changes wait for the log: under
//! `Durability::Always`, `register`, `unregister` and a system class's
//! first use of a path held the registry's write lock through the log's
//! sync, so one slow sync stalled every read (`get` takes the registry's
//! read lock) and then the writers of the reader's shard. Changes are now
//! made under the lock and waited for outside it.

use std::sync::mpsc;
use std::time::Duration;

use crate::{Durability, Increment, ManualClock, Selector, Tally};

/// A generous bound for what must not wait on the held sync at all; only
/// a deadlock-like stall exceeds it.
const STALL: Duration = Duration::from_secs(20);

fn engine(dir: &std::path::Path) -> Tally {
    let engine = Tally::builder()
        .clock(ManualClock::new(1_795_780_800))
        .system_classes(["_s"])
        .data_dir(dir)
        .durability(Durability::Always)
        .build()
        .unwrap();
    engine.register([("c", "/a")]).unwrap();
    engine.increment("u", &[Increment::new("c", "/a")]).unwrap();
    engine
}

/// Runs `change` on a thread while the log's syncs are held, waits until
/// it has appended its record, and checks that a reader still gets its
/// answer; then lets the sync go and checks the change succeeded.
fn reads_pass_a_change_waiting_for_its_sync(change: impl FnOnce(&Tally) + Send + 'static) {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let wal = engine.inner.storage.as_ref().unwrap().wal().unwrap();
    let before = wal.appended_end();
    let held = wal.hold_syncs();
    let changer = {
        let engine = engine.clone();
        std::thread::spawn(move || change(&engine))
    };
    while wal.appended_end() == before {
        std::thread::yield_now();
    }
    let (tx, rx) = mpsc::channel();
    let reader = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            let rows = engine.get("u", &[Selector::class("c")]).unwrap();
            let _ = tx.send(rows.len());
        })
    };
    let read = rx.recv_timeout(STALL);
    drop(held);
    changer.join().unwrap();
    reader.join().unwrap();
    assert_eq!(read, Ok(2), "a read waited for another call's log sync");
}

#[test]
fn a_registration_waiting_for_its_sync_does_not_hold_up_reads() {
    reads_pass_a_change_waiting_for_its_sync(|engine| {
        engine.register([("c", "/b")]).unwrap();
    });
}

#[test]
fn an_unregistration_waiting_for_its_sync_does_not_hold_up_reads() {
    reads_pass_a_change_waiting_for_its_sync(|engine| {
        engine.unregister([("c", "/a")]).unwrap();
    });
}

#[test]
fn a_system_class_path_waiting_for_its_sync_does_not_hold_up_reads() {
    reads_pass_a_change_waiting_for_its_sync(|engine| {
        engine
            .increment("v", &[Increment::new("_s", "/new")])
            .unwrap();
    });
}
