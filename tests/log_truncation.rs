//! Torn log tails: a log segment cut at any byte of its
//! last records, or followed by garbage, reopens without error, holding
//! exactly the records wholly before the cut, and `recovery_report().cut`
//! names the segment, where it was cut and how many bytes went. A segment
//! whose header was torn (a crash while it was being created) must not
//! break later recoveries either. The cut logs are written under
//! `Durability::Always` (a record per call) and under write-behind
//! (`Durability::Interval`, synced after every call: a frame of states per
//! call).

use std::path::Path;

use tally::{Durability, Error, Increment, ManualClock, Tally};

mod common;
use common::State;
use common::{copy_dir, segments};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC
const DAY: i64 = 86_400;
const HEADER_BYTES: u64 = 32;
const UIDS: [&str; 4] = ["u0", "u1", "u2", "u3"];

/// One engine call that appends exactly one log record.
#[derive(Clone, Debug)]
enum Op {
    Register(Vec<(&'static str, &'static str)>),
    Unregister(Vec<(&'static str, &'static str)>),
    /// (uid, [(class, path, count, value)], event time)
    Increment(
        &'static str,
        Vec<(&'static str, &'static str, i64, i64)>,
        i64,
    ),
    IssueToken(&'static str),
}

/// The workload: a registration, a run of batches, then an
/// unregistration, a regToken and two more batches as the last records.
fn ops() -> Vec<Op> {
    let mut ops = vec![Op::Register(vec![
        ("shares", "/news"),
        ("shares", "/news/sport"),
        ("likes", "/a"),
    ])];
    let paths = [
        ("shares", "/news/sport"),
        ("shares", "/news"),
        ("shares", "/"),
        ("likes", "/a"),
        ("likes", "/"),
    ];
    for i in 0..12i64 {
        let uid = UIDS[(i % 4) as usize];
        let entries = (0..=(i % 3))
            .map(|j| {
                let (class, path) = paths[((i + j) % 5) as usize];
                (class, path, 1 + j, 100 * i + j)
            })
            .collect();
        ops.push(Op::Increment(uid, entries, NOW - (i % 9) * DAY - i * 60));
    }
    ops.push(Op::Unregister(vec![("shares", "/news")]));
    ops.push(Op::IssueToken("u1"));
    ops.push(Op::Increment(
        "u1",
        vec![("shares", "/news/sport", 1, 7), ("shares", "/", 2, -3)],
        NOW - 2 * DAY,
    ));
    ops.push(Op::Increment("u2", vec![("likes", "/a", 5, -40)], NOW));
    ops
}

/// Applies one op; returns the token if it issued one.
fn apply(engine: &Tally, op: &Op) -> Option<tally::RegToken> {
    match op {
        Op::Register(pairs) => engine.register(pairs.iter().copied()).unwrap(),
        Op::Unregister(pairs) => engine.unregister(pairs.iter().copied()).unwrap(),
        Op::Increment(uid, entries, at) => {
            let batch: Vec<Increment<'_>> = entries
                .iter()
                .map(|&(class, path, count, value)| {
                    Increment::new(class, path).count(count).value(value)
                })
                .collect();
            engine.increment_at(*uid, &batch, *at).unwrap();
        }
        Op::IssueToken(uid) => return Some(engine.issue_reg_token(uid).unwrap()),
    }
    None
}

fn open(dir: &Path) -> Tally {
    Tally::builder()
        .clock(ManualClock::new(NOW))
        .data_dir(dir)
        .durability(Durability::Always)
        .build()
        .unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()))
}

fn state(engine: &Tally) -> State {
    common::state(engine, &UIDS)
}

/// A fresh directory holding a copy of `from` whose file `name` holds `bytes`.
fn copy_with(from: &Path, name: &std::ffi::OsStr, bytes: &[u8]) -> tempfile::TempDir {
    common::copy_with(from, Some((name, bytes)))
}

/// Drops an engine without its final snapshot's syncs (which are slow):
/// its directory goes first, so the snapshot fails at once, and drop
/// ignores that.
fn discard(engine: Tally, dir: tempfile::TempDir) {
    drop(dir);
    drop(engine);
}

/// Simulates a crash: no close, no final snapshot, then a copy of the files.
fn crash(engine: Tally) -> tempfile::TempDir {
    let dir = engine.data_dir().unwrap().to_owned();
    std::mem::forget(engine);
    copy_dir(&dir)
}

/// The end offset of every frame of a log segment (after its 32-byte
/// header: `len u32 | crc u32 | payload [len]`), as docs/format.md lays out.
fn record_ends(bytes: &[u8]) -> Vec<u64> {
    assert_eq!(&bytes[..8], b"TALLYLOG");
    let mut ends = Vec::new();
    let mut at = HEADER_BYTES as usize;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + len;
        ends.push(at as u64);
    }
    assert_eq!(at, bytes.len(), "the frames tile the segment");
    ends
}

/// A workload written with `Durability::Always`, or with write-behind and a
/// `sync` after each call, and crashed: the directory
/// (one segment, no snapshot), the expected state after each prefix of the
/// ops, and the issued token with the index of its op.
struct Crashed {
    dir: tempfile::TempDir,
    segment_name: std::ffi::OsString,
    bytes: Vec<u8>,
    ends: Vec<u64>,
    expected: Vec<State>,
    token: tally::RegToken,
    /// The index of the token's record in the segment.
    token_op: usize,
}

fn crashed_workload(write_behind: bool) -> Crashed {
    let ops = ops();
    let live = tempfile::tempdir().unwrap();
    let engine = if write_behind {
        Tally::builder()
            .clock(ManualClock::new(NOW))
            .data_dir(live.path())
            .durability(Durability::Interval(std::time::Duration::from_secs(3600)))
            .build()
            .unwrap()
    } else {
        open(live.path())
    };
    let mirror = Tally::builder()
        .clock(ManualClock::new(NOW))
        .build()
        .unwrap();
    let mut expected = vec![state(&mirror)];
    let mut token = None;
    for (i, op) in ops.iter().enumerate() {
        if let Some(t) = apply(&engine, op) {
            token = Some((t, i));
        }
        if write_behind {
            engine.sync().unwrap();
        }
        apply(&mirror, op);
        expected.push(state(&mirror));
    }
    assert_eq!(state(&engine), *expected.last().unwrap());
    let dir = crash(engine);
    let segments = segments(dir.path());
    assert_eq!(segments.len(), 1, "{segments:?}");
    let bytes = std::fs::read(&segments[0]).unwrap();
    let ends = record_ends(&bytes);
    let log = tally::inspect::inspect(dir.path())
        .unwrap()
        .files
        .into_iter()
        .find_map(|file| match file.kind {
            tally::inspect::FileKind::Log(log) => Some(log),
            _ => None,
        });
    let log = log.expect("a segment");
    // Under write-behind the log holds states, never batches.
    assert_eq!(
        (log.increments == 0, log.state_records == 14),
        (write_behind, write_behind),
        "{log:?}"
    );
    // One frame per call, after what the open itself logged (its system
    // class roots: an empty registry record here).
    let opening = ends
        .len()
        .checked_sub(ops.len())
        .expect("a record per call");
    assert!(opening <= 1, "{opening} records before the first call");
    let expected = [vec![expected[0].clone(); opening], expected].concat();
    let (token, token_op) = token.unwrap();
    Crashed {
        segment_name: segments[0].file_name().unwrap().to_owned(),
        dir,
        bytes,
        ends,
        expected,
        token,
        token_op: token_op + opening,
    }
}

/// The number of records wholly before `cut`, and where the last of them ends.
fn whole_records(ends: &[u64], cut: u64) -> (usize, u64) {
    let k = ends.iter().take_while(|&&end| end <= cut).count();
    (k, if k == 0 { HEADER_BYTES } else { ends[k - 1] })
}

#[test]
fn a_log_cut_at_every_byte_of_its_last_records_recovers_the_whole_ones() {
    cut_at_every_byte_of_the_last_records(false);
}

#[test]
fn a_write_behind_log_cut_at_every_byte_of_its_last_records_recovers_the_whole_ones() {
    cut_at_every_byte_of_the_last_records(true);
}

/// Reopened under `Durability::Always`, whichever way the log was written.
fn cut_at_every_byte_of_the_last_records(write_behind: bool) {
    let crashed = crashed_workload(write_behind);
    let n = crashed.ends.len();
    let first = crashed.ends[n - 5]; // the start of the 4th-last record
    let len = crashed.bytes.len() as u64;
    let mut cuts_reported = 0;
    for cut in first..=len {
        let copy = copy_with(
            crashed.dir.path(),
            &crashed.segment_name,
            &crashed.bytes[..cut as usize],
        );
        let segment = copy.path().join(&crashed.segment_name);
        let (k, boundary) = whole_records(&crashed.ends, cut);
        let engine = open(copy.path());
        let report = engine.recovery_report().unwrap().clone();
        if cut == boundary {
            assert_eq!(report.cut, None, "cut at {cut}, a record boundary");
        } else {
            assert_eq!(
                report.cut,
                Some((segment.clone(), boundary, cut - boundary)),
                "cut at {cut}"
            );
            cuts_reported += 1;
        }
        assert!(report.snapshot.is_none(), "{report:?}");
        assert_eq!(
            std::fs::metadata(&segment).unwrap().len(),
            boundary,
            "the torn tail is removed from the file (cut at {cut})"
        );
        assert_eq!(state(&engine), crashed.expected[k], "cut at {cut}");
        let resolved = engine.resolve_uid((&crashed.token).into());
        if k > crashed.token_op {
            assert_eq!(resolved.unwrap(), "u1", "cut at {cut}");
        } else {
            assert!(
                matches!(resolved, Err(Error::UnknownRegToken)),
                "cut at {cut}: {resolved:?}"
            );
        }
        if cut != boundary && !(cut - first).is_multiple_of(16) {
            discard(engine, copy);
            continue;
        }
        // The engine keeps working on the repaired log, and a clean reopen
        // sees the same state with nothing left to cut.
        engine
            .increment_at("u3", &[Increment::new("likes", "/").value(9)], NOW)
            .unwrap();
        let after = state(&engine);
        drop(engine);
        let engine = open(copy.path());
        assert_eq!(engine.recovery_report().unwrap().cut, None, "cut at {cut}");
        assert_eq!(state(&engine), after, "cut at {cut}, reopened");
    }
    assert!(cuts_reported > 100, "{cuts_reported}");
}

#[test]
fn garbage_after_the_last_record_is_cut_and_reported() {
    let crashed = crashed_workload(false);
    let n = crashed.ends.len();
    let last_frame = &crashed.bytes[crashed.ends[n - 2] as usize..];
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut random = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let mut tails = vec![
        vec![0u8; 1],
        vec![0u8; 8],
        vec![0u8; 4096],
        vec![0xFF; 3],
        vec![0xFF; 64],
        last_frame[..last_frame.len() - 1].to_vec(),
        last_frame[..8].to_vec(),
        // A frame header claiming more bytes than follow.
        [&200u32.to_le_bytes()[..], &[1, 2, 3, 4, 5, 6, 7, 8, 9]].concat(),
        // A plausible frame with a wrong checksum.
        {
            let mut bad = last_frame.to_vec();
            bad[4] ^= 0x01;
            bad
        },
    ];
    for len in [1, 7, 8, 9, 100, 1000] {
        tails.push(random(len));
    }
    for tail in tails {
        let copy = copy_with(
            crashed.dir.path(),
            &crashed.segment_name,
            &[&crashed.bytes[..], &tail].concat(),
        );
        let segment = copy.path().join(&crashed.segment_name);
        let engine = open(copy.path());
        let report = engine.recovery_report().unwrap().clone();
        let len = crashed.bytes.len() as u64;
        assert_eq!(
            report.cut,
            Some((segment.clone(), len, tail.len() as u64)),
            "tail {tail:?}"
        );
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), len);
        assert_eq!(state(&engine), *crashed.expected.last().unwrap());
        assert_eq!(engine.resolve_uid((&crashed.token).into()).unwrap(), "u1");
        discard(engine, copy);
    }
}

/// A crash while a new segment is being created (at a snapshot's log
/// rotation) can leave it shorter than its header. Recovery cuts it to
/// nothing; that empty file must not make a later recovery fail.
#[test]
fn a_torn_segment_header_is_cut_and_later_recoveries_still_work() {
    for cut in [0u64, 1, 8, 31] {
        let live = tempfile::tempdir().unwrap();
        let engine = open(live.path());
        let mirror = Tally::builder()
            .clock(ManualClock::new(NOW))
            .build()
            .unwrap();
        for op in &ops()[..8] {
            apply(&engine, op);
            apply(&mirror, op);
        }
        engine.snapshot().unwrap();
        let copy = crash(engine);
        let last = segments(copy.path()).pop().unwrap();
        assert_eq!(std::fs::metadata(&last).unwrap().len(), HEADER_BYTES);
        let header = std::fs::read(&last).unwrap();
        std::fs::write(&last, &header[..cut as usize]).unwrap();

        let engine = open(copy.path());
        let report = engine.recovery_report().unwrap().clone();
        assert!(report.snapshot.is_some(), "{report:?}");
        if cut > 0 {
            assert_eq!(report.cut, Some((last.clone(), 0, cut)), "cut at {cut}");
        }
        assert_eq!(state(&engine), state(&mirror), "cut at {cut}");
        // Acknowledged writes after the repair, then another crash.
        for op in &ops()[8..] {
            apply(&engine, op);
            apply(&mirror, op);
        }
        let again = crash(engine);
        // The segment the repair emptied sits in the middle of the log
        // now: `verify` agrees with recovery that it holds nothing.
        if let Err(e) = tally::inspect::verify(again.path()) {
            panic!("header cut at {cut}: verify refuses the repaired directory: {e}");
        }
        let engine = Tally::builder()
            .clock(ManualClock::new(NOW))
            .data_dir(again.path())
            .durability(Durability::Always)
            .build();
        let engine = match engine {
            Ok(engine) => engine,
            Err(e) => panic!("header cut at {cut}: the second recovery fails: {e}"),
        };
        assert_eq!(state(&engine), state(&mirror), "cut at {cut}");
    }
}
