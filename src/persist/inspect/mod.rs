//! Read-only inspection of a data directory, for the `tally` tool and for
//! operators: what each file holds ([`inspect`]), whether every checksum
//! is right ([`verify`]), and one subject's counters ([`dump`]).
//!
//! Nothing here takes the directory's `LOCK` or changes a file: a torn log
//! tail is reported, not cut. It is meant for a directory no engine has
//! open (a stopped service, a copy, a backup); on a live directory files
//! may be rotated or removed while they are read, which shows up as an
//! I/O error.
//!
//! ```
//! # fn main() -> Result<(), tally::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let engine = tally::Tally::builder().data_dir(dir.path()).build()?;
//! engine.register([("shares", "/news")])?;
//! engine.increment("user-1", &[tally::Increment::new("shares", "/news")])?;
//! engine.close()?;
//! drop(engine);
//!
//! tally::inspect::verify(dir.path())?;
//! let rows = tally::inspect::dump(dir.path(), "user-1")?;
//! assert!(rows.iter().any(|r| r.path == "/news" && r.count == 1));
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use super::recovery::{Recovered, RecoveryReport, recover_read_only};
use super::snapshot::load_bytes;
use crate::error::{Error, Result};
use crate::period::{DayKey, Horizon, MonthKey};
use crate::query::{CompiledRead, CounterRow, Selector, read_rows};
use crate::registry::Registry;
use crate::store::Store;
use crate::subject::{TokenStore, validate_uid};

mod files;

use files::inspect_file;

/// The deepest path any engine configuration accepts: reading a directory
/// must not reject the paths of an engine configured deeper than the default.
const ANY_DEPTH: usize = crate::path::MAX_PATH_DEPTH;

/// A horizon that keeps every bucket: inspection shows what the files
/// hold, whatever retention the engine that wrote them used.
const KEEP_EVERYTHING: Horizon = (MonthKey(0), DayKey(0));

/// What [`inspect`] found in a data directory.
#[derive(Debug)]
#[non_exhaustive]
pub struct DirInspection {
    /// The directory inspected.
    pub dir: PathBuf,
    /// Every entry of the directory, sorted by name.
    pub files: Vec<FileInspection>,
    /// What an engine opening the directory would load (newest valid
    /// snapshot plus the log after it), or why it would refuse to open.
    pub state: Result<StateSummary>,
}

/// One entry of a data directory.
#[derive(Debug)]
#[non_exhaustive]
pub struct FileInspection {
    /// Its path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// What it is, and what it holds.
    pub kind: FileKind,
}

impl FileInspection {
    /// The entry's file name.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }
}

/// The kinds of entries a data directory holds.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileKind {
    /// A snapshot, `snapshot-N.tsnap`.
    Snapshot(SnapshotInspection),
    /// A log segment, `log-N.tlog`.
    Log(LogInspection),
    /// The `LOCK` file an open engine holds a lock on.
    Lock,
    /// A `*.tmp` file: an unfinished snapshot, removed when an engine opens.
    Temporary,
    /// Anything else; tally ignores it.
    Other,
}

/// What a snapshot file holds.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct SnapshotInspection {
    /// The first log segment to replay after it (from its metadata, or
    /// its name if the metadata cannot be read).
    pub replay_from: u64,
    /// The format version in its header.
    pub format_version: Option<u32>,
    /// When it was taken, Unix milliseconds (engine clock).
    pub created_millis: Option<i64>,
    /// Subjects in it.
    pub subjects: u64,
    /// Cells (subject × counter) in it.
    pub cells: u64,
    /// Counters its registry holds, registered or not.
    pub counters: u64,
    /// Counters registered in it.
    pub registrations: u64,
    /// regTokens in it.
    pub tokens: u64,
    /// The highest log sequence number of a batch it holds (0: none).
    pub max_lsn: u64,
    /// Records (frames) read.
    pub records: u64,
    /// The first damage found in it; counts stop there.
    pub problem: Option<Error>,
}

/// What a log segment holds.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct LogInspection {
    /// The segment number, from its name.
    pub number: u64,
    /// The format version in its header.
    pub format_version: Option<u32>,
    /// Increment batch records.
    pub increments: u64,
    /// Registry change records.
    pub registry_records: u64,
    /// Issued regToken records.
    pub token_records: u64,
    /// Write-back records: subjects' whole states, written under
    /// [`Durability::Interval`](crate::Durability::Interval).
    pub state_records: u64,
    /// Subject states in its write-back records.
    pub subject_states: u64,
    /// The lowest and highest log sequence numbers of its increment
    /// batches and write-back records.
    pub lsn_range: Option<(u64, u64)>,
    /// Distinct subjects its batches increment or its write-back records hold.
    pub subjects: u64,
    /// Counters its registry records create.
    pub counters_created: u64,
    /// Registrations its registry records make.
    pub registered: u64,
    /// Unregistrations its registry records make.
    pub unregistered: u64,
    /// Where a torn tail starts: damage with no whole record after it, as a
    /// crash mid-write leaves. Recovery cuts it off the last segment.
    pub torn_tail: Option<u64>,
    /// The first damage that is not a torn tail; counts stop there.
    pub problem: Option<Error>,
}

/// What an engine opening the directory would load.
#[derive(Debug)]
#[non_exhaustive]
pub struct StateSummary {
    /// What recovery would load, replay and cut (nothing is cut here).
    pub report: RecoveryReport,
    /// Subjects holding at least one cell.
    pub subjects: u64,
    /// Cells (subject × counter).
    pub cells: u64,
    /// Counters that exist, registered or not.
    pub counters: u64,
    /// Counters registered.
    pub registrations: u64,
    /// regTokens remembered (including expired ones).
    pub tokens: u64,
    /// The log sequence number the next batch would get.
    pub next_lsn: u64,
}

/// What [`verify`] checked.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Verification {
    /// Snapshots and log segments checked.
    pub files: u64,
    /// Records (frames) checked in them.
    pub records: u64,
    /// A torn tail of the last log segment, which recovery cuts off when
    /// an engine opens: (file, offset, bytes). Not an error.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
}

/// Lists every entry of a data directory with what it holds, and what an
/// engine opening it would load. Damage is reported per file, not returned
/// as an error; only a directory that cannot be listed or read fails.
pub fn inspect(dir: &Path) -> Result<DirInspection> {
    let listing =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    let mut paths = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        paths.push(entry.path());
    }
    paths.sort();
    let files = paths
        .into_iter()
        .map(|path| inspect_file(&path))
        .collect::<Result<Vec<_>>>()?;
    let state = load(dir).map(|recovered| summarize(&recovered));
    Ok(DirInspection {
        dir: dir.to_owned(),
        files,
        state,
    })
}

/// Checks every snapshot and log segment of a data directory — header
/// checksums, snapshot body checksums, every record's checksum and
/// decoding, and the snapshots' contents — and then that an engine could
/// open it. Returns the first problem, usually [`Error::Corrupt`] naming
/// the file and offset.
///
/// A torn tail of the last log segment is not an error (recovery cuts it
/// off); it is reported in [`Verification::torn_tail`].
pub fn verify(dir: &Path) -> Result<Verification> {
    let inspection = inspect(dir)?;
    let last_segment = inspection
        .files
        .iter()
        .filter_map(|f| match &f.kind {
            FileKind::Log(log) => Some(log.number),
            _ => None,
        })
        .max();
    let mut verification = Verification::default();
    for file in inspection.files {
        match file.kind {
            FileKind::Snapshot(snapshot) => {
                if let Some(problem) = snapshot.problem {
                    return Err(problem);
                }
                // The walk checked checksums and decoding; loading checks
                // what recovery checks (UIDs, cells, counters, the end record).
                let bytes = read(&file.path)?;
                let (registry, mut store, tokens) = fresh();
                load_bytes(&file.path, &bytes, &registry, &mut store, &tokens)?;
                verification.records += snapshot.records;
            }
            FileKind::Log(log) => {
                if let Some(problem) = log.problem {
                    return Err(problem);
                }
                if let Some(offset) = log.torn_tail {
                    // Recovery cuts a torn tail off the last segment only.
                    // A zero-byte segment is what such a cut of a torn
                    // header leaves, and holds nothing wherever it sits;
                    // whether records are missing is the sequence check
                    // of the engine's own opening (below).
                    if file.bytes == 0 {
                        verification.files += 1;
                        continue;
                    }
                    if Some(log.number) != last_segment {
                        let reason = if offset == 0 {
                            "segment shorter than its header"
                        } else {
                            "damaged record in a segment that is not the last"
                        };
                        return Err(Error::Corrupt {
                            file: file.path,
                            offset,
                            reason: reason.into(),
                        });
                    }
                    verification.torn_tail =
                        Some((file.path, offset, file.bytes.saturating_sub(offset)));
                }
                verification.records +=
                    log.increments + log.registry_records + log.token_records + log.state_records;
            }
            FileKind::Lock | FileKind::Temporary | FileKind::Other => continue,
        }
        verification.files += 1;
    }
    inspection.state?;
    Ok(verification)
}

/// One subject's rows, as the files hold them: the newest valid snapshot
/// and the log after it are loaded into memory (nothing on disk changes),
/// and every counter of the subject is read for `total` and every stored
/// month and day, sorted by class, path and period.
///
/// No retention is applied: buckets the engine's retention would already
/// hide, but that are still stored, are included. A subject without
/// counters yields no rows; a directory an engine would refuse to open is
/// an error.
pub fn dump(dir: &Path, uid: &str) -> Result<Vec<CounterRow>> {
    validate_uid(uid)?;
    let everything = Selector::class("regex('')").period("regex('')");
    let everything = CompiledRead::compile(&[everything], ANY_DEPTH, 1)?;
    let recovered = load(dir)?;
    let rows = recovered.store.read(uid, |cells| {
        let view = recovered.registry.view();
        read_rows(
            cells.cells(),
            &view,
            &everything,
            0,
            KEEP_EVERYTHING,
            usize::MAX,
        )
    });
    rows.unwrap_or_else(|| Ok(Vec::new()))
}

/// Empty engine parts that accept whatever any engine configuration wrote.
fn fresh() -> (Registry, Store, TokenStore) {
    (
        Registry::new(ANY_DEPTH, usize::MAX),
        Store::default(),
        TokenStore::new(std::time::Duration::ZERO),
    )
}

/// Loads a directory as recovery would, without changing it.
fn load(dir: &Path) -> Result<Recovered> {
    if !dir.is_dir() {
        return Err(Error::io(
            format!("opening {}", dir.display()),
            std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        ));
    }
    recover_read_only(dir, KEEP_EVERYTHING, &fresh)
}

fn summarize(recovered: &Recovered) -> StateSummary {
    let mut cells = 0u64;
    recovered
        .store
        .for_each(|_, subject| cells += subject.cells().count() as u64);
    StateSummary {
        report: recovered.report.clone(),
        subjects: recovered.store.subject_count() as u64,
        cells,
        counters: recovered.registry.counter_count() as u64,
        registrations: recovered.registry.registered().len() as u64,
        tokens: recovered.tokens.image().len() as u64,
        next_lsn: recovered.next_lsn,
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}
