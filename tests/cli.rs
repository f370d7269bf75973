//! The `tally` binary: `inspect`, `verify` and `dump` on a data directory
//! written by the library, read without taking its lock or changing a file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tally::{CounterRow, Durability, Increment, ManualClock, Selector, Tally};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC

fn tally(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .output()
        .expect("run the tally binary")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// A data directory with two snapshots, the log segment between them and
/// the segment after the newest. The engine stays open (the tool must work
/// beside it): dropping it would write a final snapshot.
fn populated(dir: &Path) -> Tally {
    let engine = Tally::builder()
        .clock(ManualClock::new(NOW))
        .data_dir(dir)
        .durability(Durability::Always)
        .build()
        .expect("open");
    engine
        .register([
            ("shares", "/news"),
            ("shares", "/news/sport"),
            ("likes", "/"),
        ])
        .unwrap();
    for (i, uid) in ["u1", "u2", "u3"].iter().enumerate() {
        engine
            .increment(
                *uid,
                &[
                    Increment::new("shares", "/news/sport").count(i as i64 + 1),
                    Increment::new("likes", "/").value(10),
                ],
            )
            .unwrap();
    }
    engine
        .increment_at(
            "u1",
            &[Increment::new("shares", "/news")],
            NOW - 40 * 86_400,
        )
        .unwrap();
    engine.issue_reg_token("u3").unwrap();
    engine.snapshot().unwrap();
    let sport = engine.counter("shares", "/news/sport").unwrap();
    for _ in 0..5 {
        engine.increment_counter("u1", &sport, 1, 2).unwrap();
    }
    engine.snapshot().unwrap();
    engine
        .increment("u4", &[Increment::new("likes", "/")])
        .unwrap();
    engine.unregister([("shares", "/news")]).unwrap();
    engine
}

fn everything(engine: &Tally, uid: &str) -> Vec<CounterRow> {
    let selector = Selector::class("regex('.')").period("regex('.')");
    engine.get(uid, &[selector]).unwrap()
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    files.sort();
    files
}

/// Every file of a directory with its bytes.
fn image(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut image: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    image.sort();
    image
}

/// A copy of the data files of `dir` (not its lock) in a new directory.
fn copy(dir: &Path) -> tempfile::TempDir {
    let target = tempfile::tempdir().unwrap();
    for (path, bytes) in image(dir) {
        let name = path.file_name().unwrap();
        if name != "LOCK" {
            std::fs::write(target.path().join(name), bytes).unwrap();
        }
    }
    target
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn inspect_lists_the_files_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let _engine = populated(dir.path());
    let output = tally(&["inspect", arg(dir.path())]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    let snapshots = files(dir.path(), "snapshot-");
    let logs = files(dir.path(), "log-");
    assert_eq!((snapshots.len(), logs.len()), (2, 2), "{out}");
    for file in snapshots.iter().chain(&logs) {
        let name = file.file_name().unwrap().to_string_lossy();
        assert!(out.contains(&*name), "{name} missing from:\n{out}");
    }
    // The snapshots hold u1..u3, four counters (three registered, and the
    // root of `shares`) and the token; the last segment adds u4 and
    // unregisters a counter.
    assert!(
        out.contains("3 subjects, 12 cells, 4 counters, 3 registrations, 1 regToken,"),
        "{out}"
    );
    // The segment between the snapshots holds u1's five batches.
    assert!(
        out.contains("..=") && out.contains(": 5 batches of 1 subject\n"),
        "{out}"
    );
    assert!(out.contains("subjects      4"), "{out}");
    assert!(out.contains("counters      4"), "{out}");
    assert!(out.contains("registrations 2"), "{out}");
    assert!(out.contains("lock"), "{out}");
}

#[test]
fn inspect_counts_the_write_backs_of_interval_durability() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Tally::builder()
        .clock(ManualClock::new(NOW))
        .data_dir(dir.path())
        .durability(Durability::Interval(std::time::Duration::from_secs(3600)))
        .build()
        .expect("open");
    engine.register([("shares", "/news")]).unwrap();
    for uid in ["u1", "u2", "u1", "u1"] {
        engine
            .increment(uid, &[Increment::new("shares", "/news")])
            .unwrap();
    }
    engine.sync().unwrap();
    let output = tally(&["inspect", arg(dir.path())]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    // Two subjects changed: their states, not the four batches (in one
    // write-back record per store shard, and the two UIDs' shards depend
    // on the store's random hash seed).
    assert!(out.contains(": 0 batches, "), "{out}");
    assert!(out.contains(" (2 subject states) of 2 subjects,"), "{out}");
    assert!(
        out.contains("write-backs   2 subject states replayed, 0 already in the snapshot"),
        "{out}"
    );
}

#[test]
fn verify_passes_a_sound_directory_and_names_a_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let _engine = populated(dir.path());
    let output = tally(&["verify", arg(dir.path())]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).starts_with("ok"), "{}", text(&output));

    // A flipped byte in the first record of a segment with records after it.
    let damaged = copy(dir.path());
    let segment = files(damaged.path(), "log-")[0].clone();
    flip(&segment, 32 + 8 + 2);
    let output = tally(&["verify", arg(damaged.path())]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let name = segment.file_name().unwrap().to_string_lossy();
    assert!(text(&output).contains(&*name), "{}", text(&output));
    assert!(text(&output).contains("at byte 32"), "{}", text(&output));

    // A flipped byte anywhere in a snapshot.
    let damaged = copy(dir.path());
    let snapshot = files(damaged.path(), "snapshot-")[0].clone();
    let len = std::fs::metadata(&snapshot).unwrap().len() as usize;
    flip(&snapshot, len / 2);
    let output = tally(&["verify", arg(damaged.path())]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let name = snapshot.file_name().unwrap().to_string_lossy();
    assert!(text(&output).contains(&*name), "{}", text(&output));
}

#[test]
fn inspect_exits_with_one_only_when_an_engine_would_refuse_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _engine = populated(dir.path());

    // A damaged older snapshot is shown, but an engine opens the newer one.
    let damaged = copy(dir.path());
    let snapshot = files(damaged.path(), "snapshot-")[0].clone();
    let len = std::fs::metadata(&snapshot).unwrap().len() as usize;
    flip(&snapshot, len / 2);
    let output = tally(&["inspect", arg(damaged.path())]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("problem:"), "{out}");

    // A flipped byte in the last segment's first record, with a record
    // after it: not a torn tail, so an engine refuses to open.
    let damaged = copy(dir.path());
    let segment = files(damaged.path(), "log-").pop().unwrap();
    flip(&segment, 32 + 8 + 2);
    let output = tally(&["inspect", arg(damaged.path())]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("an engine would refuse to open it"), "{out}");
    // The listing is still printed in full.
    let name = segment.file_name().unwrap().to_string_lossy();
    assert!(out.contains(&*name), "{out}");
}

#[test]
fn verify_accepts_a_torn_tail_of_the_last_segment_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let _engine = populated(dir.path());
    let damaged = copy(dir.path());
    let segment = files(damaged.path(), "log-").pop().unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    std::fs::write(&segment, &bytes[..bytes.len() - 3]).unwrap();
    let output = tally(&["verify", arg(damaged.path())]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("torn tail"), "{}", text(&output));
    // The same cut in a segment that is not the last is corruption.
    let older = files(damaged.path(), "log-")[0].clone();
    let bytes = std::fs::read(&older).unwrap();
    std::fs::write(&older, &bytes[..bytes.len() - 3]).unwrap();
    let output = tally(&["verify", arg(damaged.path())]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let name = older.file_name().unwrap().to_string_lossy();
    assert!(text(&output).contains(&*name), "{}", text(&output));
}

#[test]
fn dump_prints_the_rows_the_engine_reads() {
    let dir = tempfile::tempdir().unwrap();
    let engine = populated(dir.path());
    for uid in ["u1", "u2", "u4"] {
        let output = tally(&["dump", arg(dir.path()), "--uid", uid]);
        assert!(output.status.success(), "{}", text(&output));
        let rows: Vec<CounterRow> = serde_json::from_slice(&output.stdout).expect("JSON rows");
        let expected = everything(&engine, uid);
        assert!(!expected.is_empty());
        assert_eq!(rows, expected, "{uid}");
    }
    let output = tally(&["dump", arg(dir.path()), "--uid", "nobody"]);
    assert!(output.status.success(), "{}", text(&output));
    let rows: Vec<CounterRow> = serde_json::from_slice(&output.stdout).unwrap();
    assert!(rows.is_empty());
}

#[test]
fn the_tool_changes_nothing_even_on_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let engine = populated(dir.path());
    let expected = everything(&engine, "u1");
    let torn = copy(dir.path());
    let segment = files(torn.path(), "log-").pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&[7, 0, 0, 0, 1, 2]);
    std::fs::write(&segment, &bytes).unwrap();
    let before = image(torn.path());
    for args in [
        vec!["inspect", arg(torn.path())],
        vec!["verify", arg(torn.path())],
        vec!["dump", arg(torn.path()), "--uid", "u1"],
    ] {
        let output = tally(&args);
        assert!(output.status.success(), "{args:?}: {}", text(&output));
        if args[0] == "dump" {
            let rows: Vec<CounterRow> = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(rows, expected);
            // The rows leave the torn tail out, and say so on stderr.
            let warning = String::from_utf8_lossy(&output.stderr);
            assert!(warning.contains("torn tail"), "{warning}");
        }
    }
    assert_eq!(image(torn.path()), before);
    assert!(!torn.path().join("LOCK").exists());
}

#[test]
fn errors_exit_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    for args in [
        vec!["inspect", arg(&missing)],
        vec!["verify", arg(&missing)],
        vec!["dump", arg(&missing), "--uid", "u1"],
        vec!["dump", arg(dir.path()), "--uid", ""],
    ] {
        let output = tally(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", text(&output));
    }
    // Without a subcommand clap prints its usage and exits with 2.
    assert_eq!(tally(&[]).status.code(), Some(2));
}
