//! Opening a data directory: the newest valid snapshot, then the log after it.

use std::path::{Path, PathBuf};

use super::format::{
    FormatError, FormatVersion, HEADER_BYTES, Header, LOG_MAGIC, is_torn_tail, read_frame,
    split_first_lsn,
};
use super::held::HeldBatches;
use super::snapshot::{self, snapshot_number};
use super::wal::{LogRecord, decode_log_frame, segment_number};
use crate::calendar::{END_EVENT_SECS, MIN_EVENT_SECS};
use crate::error::{Error, Result};
use crate::period::{Amount, Horizon};
use crate::registry::Registry;
use crate::store::{ResolvedEntry, Store};
use crate::subject::{TokenStore, validate_uid};

/// No record's LSN reaches this: the log numbers on after the highest.
pub(crate) const MAX_LSN: u64 = u64::MAX;

/// What recovery loaded, replayed and cut when the engine opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The snapshot loaded, if any.
    pub snapshot: Option<PathBuf>,
    /// When the snapshot was taken, Unix milliseconds (engine clock).
    pub snapshot_created_millis: Option<i64>,
    /// Subjects the snapshot held.
    pub snapshot_subjects: u64,
    /// Newer snapshots that were damaged and skipped, with why.
    pub skipped_snapshots: Vec<(PathBuf, String)>,
    /// Log segments replayed, oldest first.
    pub segments: Vec<PathBuf>,
    /// Increment batches applied from the log.
    pub batches_replayed: u64,
    /// Increment batches in the log that the snapshot already held.
    pub batches_skipped: u64,
    /// Subject states written back under [`Durability::Interval`] that
    /// were replayed from the log (each sets one subject's cells).
    ///
    /// [`Durability::Interval`]: crate::Durability::Interval
    pub states_replayed: u64,
    /// Subject states in the log that the snapshot already held (or
    /// held something newer).
    pub states_skipped: u64,
    /// Registry and regToken records replayed.
    pub other_records: u64,
    /// A torn tail cut off the last segment: (file, offset it was cut at, bytes removed).
    pub cut: Option<(PathBuf, u64, u64)>,
}

/// The engine parts recovery fills, and where the log continues.
pub(crate) struct Recovered {
    pub registry: Registry,
    /// Shared with the log's write-behind thread.
    pub store: std::sync::Arc<Store>,
    pub tokens: TokenStore,
    pub report: RecoveryReport,
    pub next_segment: u64,
    pub next_lsn: u64,
}

/// The data files of a directory, by kind, sorted by number.
pub(crate) struct DirListing {
    pub snapshots: Vec<(u64, PathBuf)>,
    pub segments: Vec<(u64, PathBuf)>,
}

pub(crate) fn list(dir: &Path) -> Result<DirListing> {
    let mut listing = DirListing {
        snapshots: Vec::new(),
        segments: Vec::new(),
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = snapshot_number(name) {
            listing.snapshots.push((n, entry.path()));
        } else if let Some(n) = segment_number(name) {
            listing.segments.push((n, entry.path()));
        }
    }
    listing.snapshots.sort();
    listing.segments.sort();
    Ok(listing)
}

/// Recovers the engine state of `dir`. `fresh` makes empty engine parts.
pub(crate) fn recover(
    dir: &Path,
    now_secs: i64,
    horizon: Horizon,
    fresh: &dyn Fn() -> (Registry, Store, TokenStore),
) -> Result<Recovered> {
    let _ = now_secs;
    recover_files(dir, horizon, fresh, true)
}

/// [`recover`] without changing any file, for inspection tools: a torn
/// tail is reported in [`RecoveryReport::cut`] but left on disk.
pub(crate) fn recover_read_only(
    dir: &Path,
    horizon: Horizon,
    fresh: &dyn Fn() -> (Registry, Store, TokenStore),
) -> Result<Recovered> {
    recover_files(dir, horizon, fresh, false)
}

/// [`recover`]; `cut_files` says whether a torn tail is also cut off the file.
fn recover_files(
    dir: &Path,
    horizon: Horizon,
    fresh: &dyn Fn() -> (Registry, Store, TokenStore),
    cut_files: bool,
) -> Result<Recovered> {
    let listing = list(dir)?;
    let mut report = RecoveryReport::default();
    let mut loaded = None;
    let mut first_error = None;
    for (_, path) in listing.snapshots.iter().rev() {
        let (registry, mut store, tokens) = fresh();
        match snapshot::load(path, &registry, &mut store, &tokens) {
            Ok(meta) => {
                report.snapshot = Some(path.clone());
                report.snapshot_subjects = meta.subjects;
                report.snapshot_created_millis = Some(meta.created_millis);
                loaded = Some((registry, store, tokens, meta.replay_from, Some(meta.held)));
                break;
            }
            Err(error) => {
                report
                    .skipped_snapshots
                    .push((path.clone(), error.to_string()));
                first_error.get_or_insert(error);
            }
        }
    }
    let (registry, store, tokens, replay_from, held) = match (loaded, first_error) {
        (Some(loaded), _) => loaded,
        (None, Some(error)) => return Err(error),
        (None, None) => {
            let (registry, store, tokens) = fresh();
            (registry, store, tokens, 1, None)
        }
    };
    let mut max_lsn = held.as_ref().map_or(0, HeldBatches::max_lsn);
    let mut last_record_lsn = None;
    let segments: Vec<&(u64, PathBuf)> = listing
        .segments
        .iter()
        .filter(|(n, _)| *n >= replay_from)
        .collect();
    for (i, (number, path)) in segments.iter().enumerate() {
        let expected = replay_from + i as u64;
        if *number != expected {
            return Err(Error::Corrupt {
                file: dir.join(super::wal::segment_name(expected)),
                offset: 0,
                reason: "log segment missing".into(),
            });
        }
        let last = i + 1 == segments.len();
        let mut replayer = Replayer {
            registry: &registry,
            store: &store,
            tokens: &tokens,
            held: held.as_ref(),
            horizon,
            report: &mut report,
            max_lsn: &mut max_lsn,
            last_record_lsn: &mut last_record_lsn,
        };
        replayer.segment(path, last, cut_files)?;
        report.segments.push(path.clone());
    }
    // Every logged batch so far is in: a snapshot taken from here on
    // holds them all, whatever shard each subject now sits in.
    store.mark_applied_through(max_lsn);
    let last_segment = listing.segments.last().map_or(0, |(n, _)| *n);
    Ok(Recovered {
        registry,
        store: std::sync::Arc::new(store),
        tokens,
        report,
        next_segment: last_segment.max(replay_from.saturating_sub(1)) + 1,
        // After every record read, registry and regToken records
        // included, so that sequence numbers never repeat.
        next_lsn: max_lsn.max(last_record_lsn.unwrap_or(0)) + 1,
    })
}

struct Replayer<'a> {
    registry: &'a Registry,
    store: &'a Store,
    tokens: &'a TokenStore,
    /// Which batches the snapshot loaded holds, if one was.
    held: Option<&'a HeldBatches>,
    horizon: Horizon,
    report: &'a mut RecoveryReport,
    max_lsn: &'a mut u64,
    /// The sequence number of the last record read (version 2 and later,
    /// where every record has one, each frame's following on from the
    /// frame before), across segments: a frame that starts further on
    /// means records are missing, as in a segment emptied or cut short.
    last_record_lsn: &'a mut Option<u64>,
}

impl Replayer<'_> {
    /// Replays one segment file; a torn tail of the last segment is
    /// reported, and cut off the file if `cut_file`.
    fn segment(&mut self, path: &Path, last: bool, cut_file: bool) -> Result<()> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if let Some(offset) = self.segment_bytes(path, &bytes, last)? {
            if cut_file {
                cut(path, offset)?;
            }
            self.report.cut = Some((
                path.to_owned(),
                offset as u64,
                (bytes.len() - offset) as u64,
            ));
        }
        Ok(())
    }

    /// Replays the bytes of one segment (`path` names it in errors).
    /// Returns where a torn tail starts, if the segment is the `last` and
    /// ends in one; damage anywhere else is an error.
    fn segment_bytes(&mut self, path: &Path, bytes: &[u8], last: bool) -> Result<Option<usize>> {
        let corrupt = |offset: usize, reason: String| Error::Corrupt {
            file: path.to_owned(),
            offset: offset as u64,
            reason,
        };
        if bytes.is_empty() {
            // A segment whose header a crash tore was cut to nothing; it
            // holds no records, wherever it sits.
            return Ok(None);
        }
        let version = match Header::decode(bytes, LOG_MAGIC) {
            Ok(header) => header.version,
            // A crash while a segment was being created leaves a short header.
            Err(FormatError::Truncated) if last => return Ok(Some(0)),
            Err(FormatError::Truncated) => {
                return Err(corrupt(0, "segment shorter than its header".into()));
            }
            Err(FormatError::Corrupt(reason)) => return Err(corrupt(0, reason)),
        };
        let mut offset = HEADER_BYTES;
        while offset < bytes.len() {
            match read_frame(&bytes[offset..]) {
                Ok((payload, used)) => {
                    let records = decode_log_frame(version, payload).map_err(|e| match e {
                        FormatError::Truncated => corrupt(offset, "truncated record".into()),
                        FormatError::Corrupt(reason) => corrupt(offset, reason),
                    })?;
                    if version != FormatVersion::V1 {
                        self.follow_on(payload, records.len())
                            .map_err(|reason| corrupt(offset, reason))?;
                    }
                    for record in records {
                        self.apply(record)
                            .map_err(|reason| corrupt(offset, reason))?;
                    }
                    offset += used;
                }
                Err(error) => {
                    // Damage with nothing valid after it is a torn tail;
                    // anything else is corruption in the middle of the log.
                    if last && is_torn_tail(&bytes[offset + 1..]) {
                        return Ok(Some(offset));
                    }
                    let reason = match error {
                        FormatError::Truncated => "truncated frame followed by more records".into(),
                        FormatError::Corrupt(reason) => reason,
                    };
                    return Err(corrupt(offset, reason));
                }
            }
        }
        Ok(None)
    }

    /// Checks that a frame of `records` records (`payload`, version 2 or
    /// later) starts right after the last record read, if any, and moves
    /// that on. A frame may start earlier, never later: an engine of an
    /// earlier version, reopening, numbered on from its last increment, so
    /// registry and regToken records logged after that were numbered again.
    fn follow_on(&mut self, payload: &[u8], records: usize) -> std::result::Result<(), String> {
        let (first, _) = split_first_lsn(payload).map_err(|e| format!("{e:?}"))?;
        if let Some(last) = *self.last_record_lsn
            && first > last.saturating_add(1)
        {
            return Err(format!(
                "log records {} to {} are missing: a segment before this one was emptied, cut short or removed",
                last + 1,
                first - 1
            ));
        }
        let last = first
            .checked_add(records.saturating_sub(1) as u64)
            .filter(|&last| last != MAX_LSN)
            .ok_or("LSN overflow")?;
        *self.last_record_lsn = Some(last);
        Ok(())
    }

    fn apply(&mut self, record: LogRecord) -> std::result::Result<(), String> {
        // The log goes on after the highest LSN read: none may be the last.
        if let LogRecord::Increment { lsn, .. }
        | LogRecord::Subjects { lsn, .. }
        | LogRecord::Cells { lsn, .. } = record
            && lsn == MAX_LSN
        {
            return Err(format!("LSN {lsn} out of range"));
        }
        match record {
            LogRecord::Registry(changes) => {
                self.registry.replay(&changes)?;
                self.report.other_records += 1;
            }
            LogRecord::Token {
                token,
                uid,
                expires_at,
            } => {
                // A logged token was just issued: it has its UID.
                validate_uid(&uid).map_err(|e| e.to_string())?;
                let issued = crate::subject::IssuedToken { uid, expires_at };
                crate::subject::validate_issued_token(&token, &issued)
                    .map_err(|e| e.to_string())?;
                self.tokens.restore(&token, issued);
                self.report.other_records += 1;
            }
            LogRecord::Increment {
                lsn,
                uid,
                at,
                entries,
            } => {
                validate_uid(&uid).map_err(|e| e.to_string())?;
                if !(MIN_EVENT_SECS..END_EVENT_SECS).contains(&at) {
                    return Err(format!("event time {at} out of range"));
                }
                let counters = self.registry.counter_count();
                let resolved: Vec<ResolvedEntry<'_>> = entries
                    .iter()
                    .map(|e| ResolvedEntry {
                        targets: &e.targets,
                        amount: Amount {
                            count: e.amount.count,
                            value: e.amount.value,
                        },
                    })
                    .collect();
                let bad_target = resolved.iter().any(|e| {
                    e.targets.is_empty()
                        || e.targets.len() > 17
                        || e.targets.iter().any(|&t| t as usize >= counters)
                });
                if resolved.is_empty() || bad_target {
                    return Err(format!("batch {lsn} refers to counters that do not exist"));
                }
                let at = crate::period::EventTime::new(at, self.horizon);
                if self.held.is_some_and(|held| held.holds(&uid, lsn)) {
                    self.report.batches_skipped += 1;
                } else {
                    self.store
                        .replay(&uid, &resolved, &at, lsn)
                        .map_err(|_| format!("batch {lsn} overflows on replay"))?;
                    self.report.batches_replayed += 1;
                }
                *self.max_lsn = (*self.max_lsn).max(lsn);
            }
            LogRecord::Subjects { lsn, subjects } => {
                let counters = self.registry.counter_count();
                for (uid, cells) in subjects {
                    validate_uid(&uid).map_err(|e| e.to_string())?;
                    if !cells.is_well_formed(counters) {
                        return Err(format!("malformed state of subject {uid:?} at {lsn}"));
                    }
                    if self.held.is_some_and(|held| held.holds(&uid, lsn)) {
                        self.report.states_skipped += 1;
                    } else {
                        self.store.replace(&uid, cells, lsn);
                        self.report.states_replayed += 1;
                    }
                }
                *self.max_lsn = (*self.max_lsn).max(lsn);
            }
            LogRecord::Cells {
                lsn,
                uid,
                from,
                until,
                cells,
            } => {
                validate_uid(&uid).map_err(|e| e.to_string())?;
                if !cells.is_well_formed(self.registry.counter_count()) {
                    return Err(format!("malformed state of subject {uid:?} at {lsn}"));
                }
                if self.held.is_some_and(|held| held.holds(&uid, lsn)) {
                    self.report.states_skipped += 1;
                } else {
                    let mut state = (self.store)
                        .read(&uid, |cells| cells.to_owned_cells())
                        .unwrap_or_default();
                    if !state.replace_range(from, until, cells) {
                        return Err(format!(
                            "part of the state of subject {uid:?} at {lsn} outside its counters"
                        ));
                    }
                    self.store.replace(&uid, state, lsn);
                    // A state is counted once, by its first part.
                    if from == 0 {
                        self.report.states_replayed += 1;
                    }
                }
                *self.max_lsn = (*self.max_lsn).max(lsn);
            }
        }
        Ok(())
    }
}

/// Cuts a torn tail off a segment file at `offset`, durably.
fn cut(path: &Path, offset: usize) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    file.set_len(offset as u64)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(format!("truncating {}", path.display()), e))
}

/// Replays the bytes of one log segment into fresh engine parts, as the
/// last segment of a recovery; returns where a torn tail starts. For fuzzing.
pub(crate) fn replay_segment_bytes(
    bytes: &[u8],
    parts: &(Registry, Store, TokenStore),
    horizon: Horizon,
) -> Result<Option<usize>> {
    let mut report = RecoveryReport::default();
    let mut max_lsn = 0;
    let mut last_record_lsn = None;
    let mut replayer = Replayer {
        registry: &parts.0,
        store: &parts.1,
        tokens: &parts.2,
        held: None,
        horizon,
        report: &mut report,
        max_lsn: &mut max_lsn,
        last_record_lsn: &mut last_record_lsn,
    };
    replayer.segment_bytes(Path::new("<bytes>"), bytes, true)
}
