//! Reopening is invisible, checked with proptest: any
//! sequence of registrations, unregistrations, increments dated within the
//! last 60 days (by UID, by regToken and through handles, system class
//! included), regToken issues, clock moves, snapshots and reopens — clean
//! (drop and reopen) or after a crash (no close, files copied) — leaves
//! `get` with every class, path and stored period, `registered()` and the
//! resolution of every issued regToken exactly as they were before each
//! reopen, and equal to the same operations on an in-memory engine. Under
//! `Durability::Always`, and under `Durability::Interval` (write-behind:
//! the log holds subjects' states; a crash follows an explicit `sync`,
//! since the timer is an hour).

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use tally::{Clock, Durability, Increment, ManualClock, RegToken, Tally};

mod common;
use common::State;
use common::copy_dir;

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC
const DAY: i64 = 86_400;
const UIDS: [&str; 3] = ["u0", "u1", "u2"];
/// The registrable pairs; increments may also target the `_sys` system
/// class (any path) and the roots.
const PAIRS: [(&str, &str); 6] = [
    ("shares", "/news"),
    ("shares", "/news/sport"),
    ("shares", "/news/"),
    ("shares", "/"),
    ("likes", "/a"),
    ("likes", "/a/b"),
];
const TARGETS: [(&str, &str); 10] = [
    ("shares", "/news"),
    ("shares", "/news/sport"),
    ("shares", "/news/"),
    ("shares", "/"),
    ("likes", "/a"),
    ("likes", "/a/b"),
    ("likes", "/"),
    ("_sys", "/"),
    ("_sys", "/web"),
    ("_sys", "/web/eu"),
];

#[derive(Clone, Debug)]
enum Op {
    Register(Vec<usize>),
    Unregister(Vec<usize>),
    /// uid, whether through its latest regToken, entries (target, count,
    /// value), days and seconds before now.
    Increment(usize, bool, Vec<(usize, i64, i64)>, i64, i64),
    /// uid, target, count, value: through a handle, at the clock's time.
    Handle(usize, usize, i64, i64),
    IssueToken(usize),
    AdvanceClock(u64),
    Snapshot,
    Reopen {
        crash: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let pairs = || prop::collection::vec(0..PAIRS.len(), 1..3);
    let amount = || -50i64..50;
    prop_oneof![
        2 => pairs().prop_map(Op::Register),
        1 => pairs().prop_map(Op::Unregister),
        6 => (
            0..UIDS.len(),
            any::<bool>(),
            prop::collection::vec((0..TARGETS.len(), amount(), amount()), 1..4),
            0i64..60,
            0i64..DAY,
        )
            .prop_map(|(u, t, e, d, s)| Op::Increment(u, t, e, d, s)),
        2 => (0..UIDS.len(), 0..TARGETS.len(), amount(), amount())
            .prop_map(|(u, t, c, v)| Op::Handle(u, t, c, v)),
        1 => (0..UIDS.len()).prop_map(Op::IssueToken),
        1 => (0u64..3 * 3600).prop_map(Op::AdvanceClock),
        1 => Just(Op::Snapshot),
        2 => any::<bool>().prop_map(|crash| Op::Reopen { crash }),
    ]
}

fn builder(clock: &ManualClock) -> tally::Builder {
    Tally::builder()
        .clock(clock.clone())
        .system_classes(["_sys"])
}

/// The durability of a case: `Always`, or write-behind under an
/// `Interval` too long to fire during the test.
fn durability(write_behind: bool) -> Durability {
    if write_behind {
        Durability::Interval(Duration::from_secs(3600))
    } else {
        Durability::Always
    }
}

fn open(dir: &Path, clock: &ManualClock, durability: Durability) -> Tally {
    builder(clock)
        .data_dir(dir)
        .durability(durability)
        .build()
        .unwrap_or_else(|e| panic!("reopening {}: {e}", dir.display()))
}

fn state(engine: &Tally) -> State {
    common::state(engine, &UIDS)
}

/// How each issued token resolves now: the UID, or the error's text.
fn resolutions(engine: &Tally, tokens: &[RegToken]) -> Vec<Result<String, String>> {
    tokens
        .iter()
        .map(|t| engine.resolve_uid(t.into()).map_err(|e| e.to_string()))
        .collect()
}

/// The durable engine, its directory, and the in-memory twin with its
/// tokens (issued for the same UIDs at the same times).
struct Pair {
    dir: tempfile::TempDir,
    durable: Tally,
    durable_tokens: Vec<RegToken>,
    memory: Tally,
    memory_tokens: Vec<RegToken>,
    latest_token: [Option<usize>; 3],
    clock: ManualClock,
    durability: Durability,
}

impl Pair {
    fn new(durability: Durability) -> Pair {
        let clock = ManualClock::new(NOW);
        let dir = tempfile::tempdir().unwrap();
        Pair {
            durable: open(dir.path(), &clock, durability),
            durability,
            memory: builder(&clock).build().unwrap(),
            dir,
            durable_tokens: Vec::new(),
            memory_tokens: Vec::new(),
            latest_token: [None; 3],
            clock,
        }
    }

    /// Runs `call` on both engines (with the matching token, if any) and
    /// checks they agree on success, or on the error code.
    fn both<T: std::fmt::Debug>(
        &self,
        token: Option<usize>,
        call: impl Fn(&Tally, Option<&RegToken>) -> tally::Result<T>,
    ) {
        let durable = call(&self.durable, token.map(|t| &self.durable_tokens[t]));
        let memory = call(&self.memory, token.map(|t| &self.memory_tokens[t]));
        match (&durable, &memory) {
            (Ok(_), Ok(_)) => {}
            (Err(d), Err(m)) => assert_eq!(d.code(), m.code(), "{d} / {m}"),
            _ => panic!("durable {durable:?}, in memory {memory:?}"),
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Register(pairs) => {
                self.both(None, |e, _| e.register(pairs.iter().map(|&p| PAIRS[p])))
            }
            Op::Unregister(pairs) => {
                self.both(None, |e, _| e.unregister(pairs.iter().map(|&p| PAIRS[p])))
            }
            Op::Increment(uid, by_token, entries, days, secs) => {
                let batch: Vec<Increment<'_>> = entries
                    .iter()
                    .map(|&(t, count, value)| {
                        let (class, path) = TARGETS[t];
                        Increment::new(class, path).count(count).value(value)
                    })
                    .collect();
                let at = self.clock.unix_millis() / 1000 - days * DAY - secs;
                let token = self.latest_token[*uid].filter(|_| *by_token);
                self.both(token, |e, token| match token {
                    Some(token) => e.increment_at(token, &batch, at),
                    None => e.increment_at(UIDS[*uid], &batch, at),
                });
            }
            Op::Handle(uid, target, count, value) => {
                let (class, path) = TARGETS[*target];
                self.both(None, |e, _| {
                    let handle = e.counter(class, path)?;
                    e.increment_counter(UIDS[*uid], &handle, *count, *value)
                });
            }
            Op::IssueToken(uid) => {
                let durable = self.durable.issue_reg_token(UIDS[*uid]).unwrap();
                let memory = self.memory.issue_reg_token(UIDS[*uid]).unwrap();
                self.durable_tokens.push(durable);
                self.memory_tokens.push(memory);
                self.latest_token[*uid] = Some(self.durable_tokens.len() - 1);
            }
            Op::AdvanceClock(secs) => self.clock.advance(Duration::from_secs(*secs)),
            Op::Snapshot => {
                self.durable.snapshot().unwrap();
            }
            Op::Reopen { crash } => self.reopen(*crash),
        }
    }

    fn reopen(&mut self, crash: bool) {
        let before = state(&self.durable);
        let tokens_before = resolutions(&self.durable, &self.durable_tokens);
        if crash && self.durability != Durability::Always {
            // What the interval would have written back by now.
            self.durable.sync().unwrap();
        }
        let dir: PathBuf = if crash {
            // No close and no final snapshot: what is on disk now is all
            // there is. The copy stands for the crashed directory; the
            // original goes first, so that dropping the engine cannot
            // write anything more.
            let copy = copy_dir(self.dir.path());
            let old = std::mem::replace(&mut self.dir, copy);
            drop(old);
            self.dir.path().to_owned()
        } else {
            self.dir.path().to_owned()
        };
        let placeholder = builder(&self.clock).build().unwrap();
        drop(std::mem::replace(&mut self.durable, placeholder));
        self.durable = open(&dir, &self.clock, self.durability);
        let report = self.durable.recovery_report().unwrap().clone();
        assert_eq!(report.cut, None, "crash {crash}: {report:?}");
        assert!(report.skipped_snapshots.is_empty(), "{report:?}");
        assert_eq!(state(&self.durable), before, "crash {crash}: {report:?}");
        assert_eq!(
            resolutions(&self.durable, &self.durable_tokens),
            tokens_before,
            "crash {crash}"
        );
    }

    fn check_against_memory(&self) {
        assert_eq!(state(&self.durable), state(&self.memory));
        assert_eq!(
            resolutions(&self.durable, &self.durable_tokens),
            resolutions(&self.memory, &self.memory_tokens)
        );
    }
}

/// 32 cases (every operation is synced to disk), and no regression files
/// written beside the sources.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(32)
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn reopening_changes_nothing_a_reader_can_see(
        ops in prop::collection::vec(op(), 1..30),
        write_behind in any::<bool>(),
    ) {
        let mut pair = Pair::new(durability(write_behind));
        for op in &ops {
            pair.apply(op);
            if matches!(op, Op::Reopen { .. } | Op::Snapshot) {
                pair.check_against_memory();
            }
        }
        pair.check_against_memory();
        pair.reopen(true);
        pair.check_against_memory();
        pair.reopen(false);
        pair.check_against_memory();
    }
}

/// A fixed sequence exercising every operation, so the property cannot
/// pass vacuously on a run of rejected calls.
#[test]
fn a_known_sequence_survives_each_kind_of_reopen() {
    for write_behind in [false, true] {
        known_sequence(durability(write_behind));
    }
}

fn known_sequence(durability: Durability) {
    let mut pair = Pair::new(durability);
    let ops = [
        Op::Register(vec![0, 1, 4, 5]),
        Op::IssueToken(1),
        Op::Increment(0, false, vec![(1, 2, 10), (5, 1, -3), (9, 1, 1)], 3, 100),
        Op::Increment(1, true, vec![(0, 1, 7)], 40, 5),
        Op::Handle(2, 5, 4, 4),
        Op::Snapshot,
        Op::Unregister(vec![0]),
        Op::Increment(1, false, vec![(1, 1, 1), (6, 3, 3)], 0, 0),
        Op::Reopen { crash: true },
        Op::Register(vec![0, 2]),
        Op::Increment(2, false, vec![(2, 1, 1), (0, 1, 1)], 59, 0),
        Op::AdvanceClock(30 * 60),
        Op::Reopen { crash: false },
        Op::Increment(1, true, vec![(8, 5, 5)], 1, 0),
    ];
    for op in &ops {
        pair.apply(op);
    }
    pair.reopen(true);
    pair.check_against_memory();
    let rows = &state(&pair.durable).rows;
    assert!(rows.iter().all(|r| !r.is_empty()), "{rows:?}");
    assert_eq!(pair.durable.registered().len(), 5);
    assert_eq!(
        pair.durable
            .resolve_uid((&pair.durable_tokens[0]).into())
            .unwrap(),
        "u1"
    );
}
