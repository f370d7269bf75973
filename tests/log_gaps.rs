//! Missing log records ("no corrupt file is ever loaded
//! silently"; acknowledged increments survive). Pins a bug where a log
//! segment in the middle of the log, emptied or cut short at a frame
//! boundary, was replayed as if it had held nothing: the engine opened
//! with fewer counts than it had acknowledged, and reported nothing. Every
//! log record has a sequence number and each frame follows on from the
//! one before, so a frame that starts further on is `Error::Corrupt`.

use std::path::Path;

use tally::{Durability, Error, Increment, ManualClock, Selector, Tally};

mod common;
use common::segments;

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC
const HEADER_BYTES: usize = 32;

fn open(dir: &Path) -> tally::Result<Tally> {
    Tally::builder()
        .clock(ManualClock::new(NOW))
        .data_dir(dir)
        .durability(Durability::Always)
        .build()
}

fn total(engine: &Tally) -> i64 {
    engine
        .get("u", &[Selector::class("c").path("/a")])
        .unwrap()
        .iter()
        .map(|row| row.count)
        .sum()
}

/// Three openings of five acknowledged increments each, every one ended
/// by a crash (no final snapshot): three segments, no snapshot.
fn three_crashed_openings() -> tempfile::TempDir {
    let mut dir = tempfile::tempdir().unwrap();
    for opening in 0..3 {
        let engine = open(dir.path()).unwrap();
        if opening == 0 {
            engine.register([("c", "/a")]).unwrap();
        }
        for _ in 0..5 {
            engine.increment("u", &[Increment::new("c", "/a")]).unwrap();
        }
        assert_eq!(total(&engine), 5 * (opening + 1));
        std::mem::forget(engine);
        dir = common::copy_dir(dir.path());
    }
    dir
}

#[test]
fn an_undamaged_log_of_several_openings_recovers_every_count() {
    let dir = three_crashed_openings();
    assert_eq!(segments(dir.path()).len(), 3);
    tally::inspect::verify(dir.path()).unwrap();
    let engine = open(dir.path()).unwrap();
    assert_eq!(total(&engine), 15);
    assert_eq!(engine.recovery_report().unwrap().cut, None);
}

#[test]
fn an_emptied_middle_segment_is_an_error_not_lost_counts() {
    let dir = three_crashed_openings();
    let middle = &segments(dir.path())[1];
    std::fs::write(middle, b"").unwrap();
    let expect_missing = |result: tally::Result<()>| match result {
        Err(Error::Corrupt { file, reason, .. }) => {
            assert_eq!(file, segments(dir.path())[2], "{reason}");
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    };
    expect_missing(open(dir.path()).map(drop));
    expect_missing(tally::inspect::verify(dir.path()).map(drop));
}

#[test]
fn a_middle_segment_cut_at_a_frame_boundary_is_an_error() {
    let dir = three_crashed_openings();
    let middle = segments(dir.path())[1].clone();
    let bytes = std::fs::read(&middle).unwrap();
    // Under `Always` each increment is its own frame: keep the header and
    // the first frame only.
    let first_len = u32::from_le_bytes(bytes[HEADER_BYTES..HEADER_BYTES + 4].try_into().unwrap());
    let first_end = HEADER_BYTES + 8 + first_len as usize;
    assert!(first_end < bytes.len(), "more than one frame");
    std::fs::write(&middle, &bytes[..first_end]).unwrap();
    match open(dir.path()) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("missing"), "{reason}"),
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(engine) => panic!("opened with {} of 15 counts", total(&engine)),
    }
    assert!(tally::inspect::verify(dir.path()).is_err());
}

#[test]
fn sequence_numbers_go_on_after_registry_records_across_a_reopen() {
    // A opening whose last records are registry changes, then a crash:
    // the next opening's records must number on after them, or the check
    // above would have nothing to tell a reused number from a gap.
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).unwrap();
    engine.register([("c", "/a")]).unwrap();
    engine.increment("u", &[Increment::new("c", "/a")]).unwrap();
    engine.register([("c", "/b")]).unwrap();
    engine.register([("c", "/x")]).unwrap();
    std::mem::forget(engine);
    let dir = common::copy_dir(dir.path());
    // Records 1 to 4: a registration, the increment, two registrations.
    let state = tally::inspect::inspect(dir.path()).unwrap().state.unwrap();
    assert_eq!(state.next_lsn, 5);
    let engine = open(dir.path()).unwrap();
    engine.increment("u", &[Increment::new("c", "/a")]).unwrap();
    std::mem::forget(engine);
    let dir = common::copy_dir(dir.path());
    let ranges: Vec<_> = tally::inspect::inspect(dir.path())
        .unwrap()
        .files
        .into_iter()
        .filter_map(|file| match file.kind {
            tally::inspect::FileKind::Log(log) => log.lsn_range,
            _ => None,
        })
        .collect();
    assert_eq!(ranges, [(2, 2), (5, 5)]);
    tally::inspect::verify(dir.path()).unwrap();
    assert_eq!(total(&open(dir.path()).unwrap()), 2);
}
