//! Crash safety, sled-style: this test binary launches
//! itself as a child process that increments with `Durability::Always`
//! from several threads while another thread snapshots every few
//! milliseconds, and kills it with SIGKILL at random moments — after a
//! random delay, after a random number of acknowledgements, or right after
//! a snapshot started. After each kill the data directory (the same one
//! across all rounds, so state accumulates) is reopened and every counter
//! cell must hold every acknowledged batch exactly once, plus possibly some
//! attempted but unacknowledged ones, and nothing else: acknowledged ⊆
//! recovered ⊆ attempted, as counts and as sums of unique values. A crash
//! never leaves a damaged snapshot behind, and registrations are all or
//! nothing. A second schedule skips the parent's check every other round,
//! so that the next child recovers a freshly crashed directory itself and
//! is killed at its first snapshot.
//!
//! The child prints `TRY <id> <uid> (<class> <path> <count> <value>)+`
//! before each batch, `ACK …` (the same) once `increment` returned, and
//! `SNAP` before each snapshot.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tally::{Durability, Increment, ManualClock, Period, Selector, Tally};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC
const DIR_VAR: &str = "TALLY_CRASH_CHILD_DIR";
const ROUND_VAR: &str = "TALLY_CRASH_CHILD_ROUND";
const CHILD: &str = "crash_child";
const ROUNDS: u64 = 24;
const WRITERS: u64 = 4;
const UIDS: [&str; 6] = ["u0", "u1", "u2", "u3", "u4", "u5"];
const CLASSES: [&str; 2] = ["clicks", "views"];
/// Registered for both classes; `/` accepts increments of a known class.
const PATHS: [&str; 3] = ["/x", "/x/z", "/y"];
/// A system class: every path accepted, its counters created on first use.
const SYSTEM: &str = "_sys";

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn open(dir: &Path) -> Tally {
    Tally::builder()
        .clock(ManualClock::new(NOW))
        .system_classes([SYSTEM])
        .data_dir(dir)
        .durability(Durability::Always)
        .build()
        .unwrap_or_else(|e| panic!("opening {}: {e}\nfiles: {:?}", dir.display(), listing(dir)))
}

/// The files of a directory with their sizes, for failure messages.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let len = e.metadata().map_or(0, |m| m.len());
                    (e.file_name().to_string_lossy().into_owned(), len)
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn registrations() -> Vec<(&'static str, &'static str)> {
    CLASSES
        .iter()
        .flat_map(|c| PATHS.iter().map(move |p| (*c, *p)))
        .collect()
}

/// One entry of a batch: (class, path, count, value).
type Entry = (String, String, i64, i64);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Batch {
    uid: String,
    entries: Vec<Entry>,
}

fn line(tag: &str, id: u64, batch: &Batch) -> String {
    let mut line = format!("{tag} {id} {}", batch.uid);
    for (class, path, count, value) in &batch.entries {
        line += &format!(" {class} {path} {count} {value}");
    }
    line
}

fn parse(words: &[&str]) -> (u64, Batch) {
    let id = words[0].parse().unwrap();
    let entries = words[2..]
        .chunks(4)
        .map(|e| {
            assert_eq!(e.len(), 4, "{words:?}");
            (
                e[0].to_owned(),
                e[1].to_owned(),
                e[2].parse().unwrap(),
                e[3].parse().unwrap(),
            )
        })
        .collect();
    (
        id,
        Batch {
            uid: words[1].to_owned(),
            entries,
        },
    )
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// The child: increments and snapshots until it is killed. Does nothing
/// unless launched by [`processes_killed_at_random_moments_lose_nothing_acknowledged`].
#[test]
#[ignore = "the child process of the crash test; does nothing when run directly"]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let round: u64 = std::env::var(ROUND_VAR).unwrap().parse().unwrap();
    let engine = open(Path::new(&dir));
    engine.register(registrations()).unwrap();
    say("OPEN");
    for writer in 0..WRITERS {
        let engine = engine.clone();
        std::thread::spawn(move || write_until_killed(&engine, round, writer));
    }
    let snapshots = engine.clone();
    std::thread::spawn(move || {
        let mut rng = Rng::new(round * 1000 + 999);
        loop {
            std::thread::sleep(Duration::from_millis(1 + rng.below(8)));
            say("SNAP");
            if let Err(e) = snapshots.snapshot() {
                say(&format!("ERR snapshot: {e}"));
                return;
            }
            say("SNAPPED");
        }
    });
    // The parent kills long before this; never exit on our own earlier.
    std::thread::sleep(Duration::from_secs(60));
    say("ERR the child was not killed");
}

fn write_until_killed(engine: &Tally, round: u64, writer: u64) {
    let mut rng = Rng::new(round * 1000 + writer);
    let handles: Vec<(String, String, tally::CounterHandle)> = registrations()
        .into_iter()
        .map(|(c, p)| (c.to_owned(), p.to_owned(), engine.counter(c, p).unwrap()))
        .collect();
    for seq in 0.. {
        // Unique across rounds and writers; every entry's value is unique too.
        let id = (round * WRITERS + writer) * 10_000_000 + seq;
        let uid = UIDS[rng.below(UIDS.len() as u64) as usize].to_owned();
        let len = 1 + rng.below(3);
        let entries: Vec<Entry> = (0..len)
            .map(|j| {
                let (class, path) = match rng.below(6) {
                    0 => (SYSTEM.to_owned(), format!("/p{}", rng.below(12))),
                    1 => (CLASSES[rng.below(2) as usize].to_owned(), "/".to_owned()),
                    _ => (
                        CLASSES[rng.below(2) as usize].to_owned(),
                        PATHS[rng.below(3) as usize].to_owned(),
                    ),
                };
                (class, path, 1 + rng.below(3) as i64, (id * 4 + j) as i64)
            })
            .collect();
        let batch = Batch { uid, entries };
        say(&line("TRY", id, &batch));
        let result = match &batch.entries[..] {
            [(class, path, count, value)]
                if rng.below(2) == 0 && path != "/" && class != SYSTEM =>
            {
                let (_, _, handle) = handles
                    .iter()
                    .find(|(c, p, _)| c == class && p == path)
                    .unwrap();
                engine.increment_counter(batch.uid.as_str(), handle, *count, *value)
            }
            entries => {
                let increments: Vec<Increment<'_>> = entries
                    .iter()
                    .map(|(c, p, count, value)| Increment::new(c, p).count(*count).value(*value))
                    .collect();
                engine.increment(batch.uid.as_str(), &increments)
            }
        };
        match result {
            Ok(()) => say(&line("ACK", id, &batch)),
            Err(e) => {
                say(&format!("ERR increment {id}: {e}"));
                return;
            }
        }
    }
}

/// The cells an entry lands in: itself, its registered ancestors, and `/`.
fn cells_of(class: &str, path: &str) -> Vec<String> {
    let mut cells = vec![path.to_owned()];
    if path == "/x/z" {
        cells.push("/x".to_owned());
    }
    if path != "/" {
        cells.push("/".to_owned());
    }
    assert!(class == SYSTEM || path == "/" || PATHS.contains(&path));
    cells
}

/// (uid, class, path) -> (count, value) of `total`.
type Cells = BTreeMap<(String, String, String), (i64, i64)>;

fn add(cells: &mut Cells, batch: &Batch) {
    for (class, path, count, value) in &batch.entries {
        for cell in cells_of(class, path) {
            let sum = cells
                .entry((batch.uid.clone(), class.clone(), cell))
                .or_default();
            sum.0 += count;
            sum.1 += value;
        }
    }
}

/// Every cell's total; also checks that its month and day (every
/// increment is dated NOW) hold the same amounts.
fn observed(engine: &Tally) -> Cells {
    let mut totals = Cells::new();
    let mut buckets = Vec::new();
    for uid in UIDS {
        let rows = engine
            .get(uid, &[Selector::class("regex('.')").period("regex('.')")])
            .unwrap();
        for row in rows {
            assert_eq!(row.last_updated_timestamp, NOW, "{row:?}");
            let key = (uid.to_owned(), row.class.clone(), row.path.clone());
            match row.period {
                Period::Total => {
                    totals.insert(key, (row.count, row.value));
                }
                _ => buckets.push((key, row)),
            }
        }
    }
    for (key, row) in buckets {
        assert_eq!(totals.get(&key), Some(&(row.count, row.value)), "{row:?}");
    }
    totals
}

/// How one child run went, from its output.
struct Run {
    tried: HashMap<u64, Batch>,
    acked: Vec<u64>,
    snapshots_started: usize,
    snapshots_finished: usize,
    opened: bool,
}

#[derive(Clone, Copy, Debug)]
enum Kill {
    /// After this long.
    After(Duration),
    /// After this many acknowledgements.
    Acks(usize),
    /// Right after the child says it starts this many-th snapshot.
    Snapshot(usize),
    /// This long after the child says it starts this many-th snapshot.
    InSnapshot(usize, Duration),
}

/// Launches the child on `dir`, kills it as `kill` says, and returns what
/// it printed (whole lines only).
fn run_child(dir: &Path, round: u64, kill: Kill) -> Run {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD, "--nocapture", "--ignored"])
        .env(DIR_VAR, dir)
        .env(ROUND_VAR, round.to_string())
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (lines_tx, lines) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        loop {
            let mut line = String::new();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                // A line cut short by the kill says nothing.
                Ok(_) if !line.ends_with('\n') => return,
                Ok(_) => {
                    if lines_tx.send(line.trim_end().to_owned()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let started = Instant::now();
    let deadline = started
        + match kill {
            Kill::After(delay) => delay,
            _ => Duration::from_secs(2),
        };
    let mut output = Vec::new();
    let (mut acks, mut snaps) = (0, 0);
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(wait) {
            Ok(line) => {
                acks += usize::from(line.starts_with("ACK "));
                snaps += usize::from(line == "SNAP");
                output.push(line);
                match kill {
                    Kill::Acks(n) if acks >= n => break,
                    Kill::Snapshot(n) if snaps >= n => break,
                    Kill::InSnapshot(n, delay) if snaps >= n => {
                        std::thread::sleep(delay);
                        break;
                    }
                    _ => {}
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            // The child exited by itself; the status check below reports it.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    output.extend(lines.try_iter());
    let stderr = stderr.join().unwrap();
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round}: the child was not killed but ended with {status}\n\
             stdout: {output:?}\nstderr: {stderr}"
        );
    }
    let mut run = Run {
        tried: HashMap::new(),
        acked: Vec::new(),
        snapshots_started: 0,
        snapshots_finished: 0,
        opened: false,
    };
    for line in output {
        let words: Vec<&str> = line.split(' ').collect();
        match words[0] {
            "TRY" => {
                let (id, batch) = parse(&words[1..]);
                assert!(run.tried.insert(id, batch).is_none(), "{line}");
            }
            "ACK" => {
                let (id, batch) = parse(&words[1..]);
                assert_eq!(run.tried.get(&id), Some(&batch), "ACK without its TRY");
                run.acked.push(id);
            }
            "SNAP" => run.snapshots_started += 1,
            "SNAPPED" => run.snapshots_finished += 1,
            "OPEN" => run.opened = true,
            "ERR" => panic!("round {round}: the child failed: {line}\nstderr: {stderr}"),
            // The test harness's own lines.
            _ => {}
        }
    }
    run
}

/// Every round is checked (and the directory closed cleanly) by the parent.
#[test]
fn processes_killed_at_random_moments_lose_nothing_acknowledged() {
    crash_rounds(
        |round, rng| match round % 3 {
            0 => Kill::After(Duration::from_millis(rng.below(250))),
            1 => Kill::Acks(1 + rng.below(300) as usize),
            _ => Kill::Snapshot(1 + rng.below(4) as usize),
        },
        |_| true,
    );
}

/// Every other round the parent leaves the freshly crashed directory to
/// the next child, which recovers it itself and is killed at its first
/// snapshot: crashes during and right after a recovery.
#[test]
fn crashes_right_after_a_recovery_lose_nothing_acknowledged() {
    crash_rounds(
        |round, rng| {
            let delay = Duration::from_micros(rng.below(8000));
            if round % 2 == 0 {
                Kill::InSnapshot(1 + rng.below(2) as usize, delay)
            } else {
                Kill::InSnapshot(1, delay)
            }
        },
        |round| round % 2 == 1,
    );
}

/// Runs [`ROUNDS`] children on one directory, killed as `kill` says, and
/// checks the recovered counters after the rounds `check` selects (and
/// after the last).
fn crash_rounds(kill: impl Fn(u64, &mut Rng) -> Kill, check: impl Fn(u64) -> bool) {
    // One schedule at a time: a child spawned by one test briefly holds
    // copies of every descriptor of this process, the other test's data
    // directory lock included, until it execs; that lock would then refuse
    // the other test's next child.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Everything known to be recovered so far.
    let mut committed = Cells::new();
    // Attempted but unacknowledged batches not yet found present or absent.
    let mut in_doubt: Vec<Batch> = Vec::new();
    let mut unchecked_runs = 0;
    let mut stats = (0usize, 0usize, 0usize); // acked, recovered unacked, killed mid-snapshot
    let mut ever_opened = false;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let mut rng = Rng::new(round + 7);
        let kill = kill(round, &mut rng);
        let run = run_child(dir.path(), round, kill);
        stats.0 += run.acked.len();
        stats.2 += usize::from(run.snapshots_started > run.snapshots_finished);
        let acked: HashSet<u64> = run.acked.iter().copied().collect();
        for id in &run.acked {
            add(&mut committed, &run.tried[id]);
        }
        in_doubt.extend(
            run.tried
                .iter()
                .filter(|(id, _)| !acked.contains(id))
                .map(|(_, batch)| batch.clone()),
        );
        unchecked_runs += 1;
        assert!(
            in_doubt.len() <= unchecked_runs * WRITERS as usize,
            "one batch per writer at most is in flight at a kill"
        );
        if !check(round) && round + 1 < ROUNDS {
            continue;
        }
        unchecked_runs = 0;
        let engine = open(dir.path());
        let report = engine.recovery_report().unwrap().clone();
        assert!(
            report.skipped_snapshots.is_empty(),
            "round {round}: a crash left a damaged snapshot: {report:?}"
        );
        // Registration is all or nothing, and done once a child said OPEN.
        ever_opened |= run.opened;
        let mut registered: Vec<tally::CounterKey> =
            registrations().into_iter().map(Into::into).collect();
        registered.sort();
        let recovered = engine.registered();
        assert!(
            recovered == registered || (!ever_opened && recovered.is_empty()),
            "round {round}: {recovered:?}"
        );
        let observed = observed(&engine);
        // Which of the batches in doubt made it: some combination of them
        // must explain every cell (values are unique, so sums tell them
        // apart).
        let explained = (0u32..1 << in_doubt.len()).find_map(|mask| {
            let mut expected = committed.clone();
            for (i, batch) in in_doubt.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    add(&mut expected, batch);
                }
            }
            (expected == observed).then_some((mask, expected))
        });
        let Some((mask, expected)) = explained else {
            let diff: Vec<_> = observed
                .keys()
                .chain(committed.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter(|k| observed.get(*k) != committed.get(*k))
                .map(|k| (k, committed.get(k), observed.get(k)))
                .collect();
            panic!(
                "round {round} ({kill:?}): the recovered counters are not the acknowledged \
                 batches plus some of the {} in doubt {in_doubt:?}.\n(cell, acknowledged, \
                 recovered): {diff:?}\nreport: {report:?}",
                in_doubt.len()
            );
        };
        stats.1 += mask.count_ones() as usize;
        committed = expected;
        in_doubt.clear();
        drop(engine);
    }
    // Progress, not timing: the rounds did write and check something.
    assert!(
        stats.0 > 0 && !committed.is_empty(),
        "nothing was acknowledged"
    );
    eprintln!(
        "{ROUNDS} rounds in {:?}: {} acknowledged batches, {} unacknowledged ones \
         recovered, {} kills during a snapshot",
        started.elapsed(),
        stats.0,
        stats.1,
        stats.2
    );
}
