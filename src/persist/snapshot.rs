//! Snapshot files: the whole engine state at one moment, written while
//! writers keep running.
//!
//! A snapshot is a file header (magic `TALLYSNP`, version, body length and
//! CRC-32) and frames: `Meta`, `Tokens`, one `Subject` per subject, the
//! `Registry`, and `End`. Every frame keeps within the writers' budget
//! ([`FRAME_BUDGET_BYTES`]), so that the reader accepts it: the tokens and
//! the registry take as many frames as they need, and a subject too large
//! for one frame goes on over consecutive `Subject` frames of its UID.
//!
//! A shard's subjects are encoded into memory under the shard's read lock,
//! all of them in one go, and written to the file after the lock is
//! released: writers of other shards never wait, and writers of a shard
//! wait while its subjects are encoded (never for the disk). The `End`
//! record carries, for each shard, the sequence number of the last logged
//! batch it held when it was encoded, so replaying the log after the
//! snapshot skips exactly what the snapshot already has. The registry
//! comes after the subjects so that it holds every counter they refer to.
//!
//! A snapshot just written is read back and checked ([`verify`]) before
//! it counts as one that opens.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::format::{
    FRAME_BUDGET_BYTES, FormatError, FormatVersion, HEADER_BYTES, Header, SNAPSHOT_MAGIC, TooLarge,
    decode, encoded_len, read_frame, runs, write_frame,
};
use super::held::HeldBatches;
use super::sync_dir;
use crate::error::{Error, Result};
use crate::registry::{Registry, RegistryChange};
use crate::store::{CellsView, Store, SubjectCells};
use crate::subject::{IssuedToken, TokenStore};

#[cfg(test)]
thread_local! {
    /// Makes this thread's snapshots unreadable (a record no reader
    /// decodes after the metadata), for tests of what happens then.
    pub(crate) static WRITE_UNREADABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The file name of the snapshot after which log segment `replay_from` starts.
pub(crate) fn snapshot_name(replay_from: u64) -> String {
    format!("snapshot-{replay_from:020}.tsnap")
}

/// The replay-from segment number in a file name, if it is a snapshot's.
pub(crate) fn snapshot_number(name: &str) -> Option<u64> {
    name.strip_prefix("snapshot-")?
        .strip_suffix(".tsnap")?
        .parse()
        .ok()
}

/// One frame of a snapshot, as decoded.
#[derive(Debug, Deserialize)]
pub(crate) enum SnapshotRecord {
    Meta {
        created_millis: i64,
        replay_from: u64,
        hash_seed: u64,
    },
    Tokens(Vec<(String, IssuedToken)>),
    Subject(String, SubjectCells),
    Registry(Vec<RegistryChange>),
    End {
        subjects: u64,
        shard_lsns: Vec<u64>,
    },
}

/// One frame of a version-1 snapshot, as decoded: each subject carries
/// the LSN of the last batch applied to it, and there is no hash seed and
/// no shard LSNs.
#[derive(Debug, Deserialize)]
enum SnapshotRecordV1 {
    Meta {
        created_millis: i64,
        replay_from: u64,
    },
    Tokens(Vec<(String, IssuedToken)>),
    Subject(String, SubjectCellsV1),
    Registry(Vec<RegistryChange>),
    End {
        subjects: u64,
    },
}

/// A subject's cells in a version-1 snapshot.
#[derive(Debug, Deserialize)]
struct SubjectCellsV1 {
    cells: SubjectCells,
    last_lsn: u64,
}

/// Decodes one snapshot frame's record written in format `version`. A
/// version-1 `Subject` also yields the subject's own last LSN; the
/// version-2 fields it lacks come back empty (seed 0, no shard LSNs).
pub(crate) fn decode_record(
    version: FormatVersion,
    payload: &[u8],
) -> std::result::Result<(SnapshotRecord, Option<u64>), FormatError> {
    if version != FormatVersion::V1 {
        return decode(payload).map(|record| (record, None));
    }
    Ok(match decode(payload)? {
        SnapshotRecordV1::Meta {
            created_millis,
            replay_from,
        } => (
            SnapshotRecord::Meta {
                created_millis,
                replay_from,
                hash_seed: 0,
            },
            None,
        ),
        SnapshotRecordV1::Tokens(tokens) => (SnapshotRecord::Tokens(tokens), None),
        SnapshotRecordV1::Subject(uid, cells) => (
            SnapshotRecord::Subject(uid, cells.cells),
            Some(cells.last_lsn),
        ),
        SnapshotRecordV1::Registry(changes) => (SnapshotRecord::Registry(changes), None),
        SnapshotRecordV1::End { subjects } => (
            SnapshotRecord::End {
                subjects,
                shard_lsns: Vec::new(),
            },
            None,
        ),
    })
}

/// One frame of a snapshot, to encode, borrowing its parts.
#[derive(Serialize)]
enum SnapshotRecordRef<'a> {
    Meta {
        created_millis: i64,
        replay_from: u64,
        hash_seed: u64,
    },
    Tokens(&'a [(String, IssuedToken)]),
    Subject(&'a str, CellsView<'a>),
    Registry(&'a [RegistryChange]),
    End {
        subjects: u64,
        shard_lsns: &'a [u64],
    },
}

/// What a written snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The file written.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Subjects in it.
    pub subjects: u64,
    /// The first log segment to replay after it.
    pub replay_from: u64,
}

/// Frames written to the body, with the running length and checksum.
struct BodyWriter {
    out: BufWriter<File>,
    crc: crc32fast::Hasher,
    len: u64,
    scratch: Vec<u8>,
}

/// The most bytes the fixed part of a record splitting a list may take
/// around the list's items: the variant index and the list's length.
const LIST_OVERHEAD_BYTES: usize = 16;

/// Where a writer's error goes: I/O to [`Error::Io`] on `temp`, a record
/// too large to [`Error::RecordTooLarge`].
enum WriteError {
    Io(std::io::Error),
    TooLarge(TooLarge),
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        WriteError::Io(e)
    }
}

impl From<TooLarge> for WriteError {
    fn from(e: TooLarge) -> Self {
        WriteError::TooLarge(e)
    }
}

impl BodyWriter {
    fn frame(&mut self, record: &SnapshotRecordRef<'_>) -> std::result::Result<(), WriteError> {
        self.scratch.clear();
        write_frame(&mut self.scratch, record)?;
        Ok(self.flush_scratch()?)
    }

    /// Writes `items` as records `wrap` makes of runs of them, as many
    /// frames as the budget needs (one, empty, for no items).
    fn list<T>(
        &mut self,
        items: &[T],
        len: impl Fn(&T) -> usize,
        wrap: impl Fn(&[T]) -> SnapshotRecordRef<'_>,
    ) -> std::result::Result<(), WriteError> {
        for run in runs(items, FRAME_BUDGET_BYTES - LIST_OVERHEAD_BYTES, len)? {
            self.frame(&wrap(&items[run]))?;
        }
        Ok(())
    }

    /// Writes out the frames gathered in `scratch`.
    fn flush_scratch(&mut self) -> std::io::Result<()> {
        self.crc.update(&self.scratch);
        self.len += self.scratch.len() as u64;
        self.out.write_all(&self.scratch)
    }
}

/// Writes a snapshot of the engine into `dir`: to a temporary file, synced,
/// renamed into place, and the folder synced.
pub(crate) fn write(
    dir: &Path,
    replay_from: u64,
    created_millis: i64,
    registry: &Registry,
    store: &Store,
    tokens: &TokenStore,
) -> Result<SnapshotSummary> {
    let path = dir.join(snapshot_name(replay_from));
    let temp = dir.join(format!("{}.tmp", snapshot_name(replay_from)));
    let written = write_to(&temp, replay_from, created_millis, registry, store, tokens);
    let (bytes, subjects) = match written {
        Ok(written) => written,
        Err(error) => {
            let _ = std::fs::remove_file(&temp);
            return Err(error);
        }
    };
    std::fs::rename(&temp, &path)
        .map_err(|e| Error::io(format!("renaming {}", temp.display()), e))?;
    sync_dir(dir)?;
    Ok(SnapshotSummary {
        path,
        bytes,
        subjects,
        replay_from,
    })
}

/// Encodes the frames of one subject into `out`: one `Subject` frame, or
/// several of its UID with consecutive runs of its cells if one would
/// take more than the budget.
fn subject_frames(out: &mut Vec<u8>, uid: &str, cells: CellsView<'_>) -> Result<(), TooLarge> {
    if write_frame(out, &SnapshotRecordRef::Subject(uid, cells)).is_ok() {
        return Ok(());
    }
    let budget = FRAME_BUDGET_BYTES - LIST_OVERHEAD_BYTES - encoded_len(uid);
    let all: Vec<(u32, &crate::period::Cell)> = cells.cells().collect();
    for run in runs(&all, budget, encoded_len)? {
        write_frame(
            out,
            &SnapshotRecordRef::Subject(uid, cells.slice(run.start..run.end)),
        )?;
    }
    Ok(())
}

/// [`write`] into `temp`: returns the file's size and its subjects.
fn write_to(
    temp: &Path,
    replay_from: u64,
    created_millis: i64,
    registry: &Registry,
    store: &Store,
    tokens: &TokenStore,
) -> Result<(u64, u64)> {
    let io = |what: &str| {
        let what = format!("{what} {}", temp.display());
        move |e| Error::io(what, e)
    };
    let failed = |e: WriteError| match e {
        WriteError::Io(e) => io("writing")(e),
        WriteError::TooLarge(too_large) => Error::from(too_large),
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(temp)
        .map_err(io("creating"))?;
    let mut body = BodyWriter {
        out: BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
        len: 0,
        scratch: Vec::with_capacity(4096),
    };
    body.out
        .write_all(&[0u8; HEADER_BYTES])
        .map_err(io("writing"))?;
    body.frame(&SnapshotRecordRef::Meta {
        created_millis,
        replay_from,
        hash_seed: store.seed(),
    })
    .map_err(failed)?;
    #[cfg(test)]
    if WRITE_UNREADABLE.get() {
        body.scratch.clear();
        write_frame(&mut body.scratch, &u32::MAX).map_err(Error::from)?;
        body.flush_scratch().map_err(io("writing"))?;
    }
    let token_image = tokens.image();
    body.list(&token_image, encoded_len, |run| {
        SnapshotRecordRef::Tokens(run)
    })
    .map_err(failed)?;
    drop(token_image);
    // Each shard's subjects are encoded under its read lock, all in one
    // go, and written after it is released: a shard's writers wait for
    // the encoding, never for the disk.
    let mut subjects = 0u64;
    let mut shard_lsns = Vec::with_capacity(store.shard_count());
    for shard in 0..store.shard_count() {
        body.scratch.clear();
        let mut encoded = Ok(());
        shard_lsns.push(store.for_each_in_shard(shard, |uid, cells| {
            subjects += 1;
            if encoded.is_ok() {
                encoded = subject_frames(&mut body.scratch, uid, cells);
            }
        }));
        encoded.map_err(Error::from)?;
        body.flush_scratch().map_err(io("writing"))?;
    }
    body.list(&registry.image(), encoded_len, |run| {
        SnapshotRecordRef::Registry(run)
    })
    .map_err(failed)?;
    body.frame(&SnapshotRecordRef::End {
        subjects,
        shard_lsns: &shard_lsns,
    })
    .map_err(failed)?;
    let header = Header::new(SNAPSHOT_MAGIC, body.len, body.crc.clone().finalize());
    let mut file = body
        .out
        .into_inner()
        .map_err(|e| io("writing")(e.into_error()))?;
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(&header.encode()))
        .and_then(|()| file.sync_all())
        .map_err(io("syncing"))?;
    Ok((HEADER_BYTES as u64 + body.len, subjects))
}

/// A snapshot read back into fresh engine parts.
pub(crate) struct Loaded {
    pub created_millis: i64,
    pub replay_from: u64,
    pub subjects: u64,
    /// Which logged batches the snapshot holds.
    pub held: HeldBatches,
}

/// Reads and checks a whole snapshot file into `registry`, `store` and
/// `tokens` (which must be empty). On error they hold partial data and
/// must be discarded.
pub(crate) fn load(
    path: &Path,
    registry: &Registry,
    store: &mut Store,
    tokens: &TokenStore,
) -> Result<Loaded> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    load_bytes(path, &bytes, registry, store, tokens)
}

/// Subjects decoded from a snapshot and not yet restored. They are
/// restored a shard at a time ([`Store::restore_all`]), as a snapshot
/// lists them shard by shard, so that each shard's tables grow once
/// rather than once for every quarter of their size, rebuilding as they go.
#[derive(Default)]
struct PendingSubjects {
    subjects: Vec<(String, SubjectCells)>,
    /// The file offset of each subject's frame.
    offsets: Vec<usize>,
    /// The shard of the pending subjects.
    shard: usize,
}

impl PendingSubjects {
    /// The most subjects kept pending, whatever their shards: a few
    /// megabytes (a shard of a snapshot of 1,000,000 subjects holds
    /// about 4,000).
    const MOST: usize = 16_384;

    /// Adds a subject of shard `shard`, first restoring the pending ones
    /// into `store` if they are of another shard or too many.
    fn push(
        &mut self,
        store: &Store,
        path: &Path,
        shard: usize,
        subject: (String, SubjectCells),
        at: usize,
    ) -> Result<()> {
        if shard != self.shard || self.subjects.len() >= Self::MOST {
            self.restore_into(store, path)?;
            self.shard = shard;
        }
        self.subjects.push(subject);
        self.offsets.push(at);
        Ok(())
    }

    /// Restores the pending subjects into `store`; a subject already
    /// there makes the snapshot at `path` corrupt at its frame.
    fn restore_into(&mut self, store: &Store, path: &Path) -> Result<()> {
        let subjects = std::mem::take(&mut self.subjects);
        let offsets = std::mem::take(&mut self.offsets);
        store
            .restore_all(subjects)
            .map_err(|(i, uid)| Error::Corrupt {
                file: path.to_owned(),
                offset: offsets[i] as u64,
                reason: format!("subject {uid:?} appears twice"),
            })
    }
}

/// [`load`] from bytes already read; `path` names them in errors.
pub(crate) fn load_bytes(
    path: &Path,
    bytes: &[u8],
    registry: &Registry,
    store: &mut Store,
    tokens: &TokenStore,
) -> Result<Loaded> {
    read_bytes(path, bytes, registry, Some((store, tokens)))
}

/// Reads back the snapshot at `path` and checks it as [`load`] would,
/// without keeping its subjects or regTokens: whether it opens.
pub(crate) fn verify(path: &Path) -> Result<()> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let registry = Registry::new(crate::path::MAX_PATH_DEPTH, usize::MAX);
    read_bytes(path, &bytes, &registry, None).map(drop)
}

/// The subject being read: a version-4 snapshot may continue its cells
/// over the frames that follow, with the same UID.
struct CurrentSubject {
    uid: String,
    cells: SubjectCells,
    /// The offset of its first frame.
    at: usize,
}

/// [`load_bytes`], restoring into `into` (a store and its tokens), or,
/// without, only checking.
fn read_bytes(
    path: &Path,
    bytes: &[u8],
    registry: &Registry,
    mut into: Option<(&mut Store, &TokenStore)>,
) -> Result<Loaded> {
    let corrupt = |offset: usize, reason: String| Error::Corrupt {
        file: path.to_owned(),
        offset: offset as u64,
        reason,
    };
    let header = Header::decode(bytes, SNAPSHOT_MAGIC).map_err(|e| match e {
        FormatError::Truncated => corrupt(0, "file shorter than its header".into()),
        FormatError::Corrupt(reason) => corrupt(0, reason),
    })?;
    let body = &bytes[HEADER_BYTES..];
    if header.body_len != body.len() as u64 {
        return Err(corrupt(
            HEADER_BYTES,
            format!(
                "header says {} body bytes, file has {}",
                header.body_len,
                body.len()
            ),
        ));
    }
    if crc32fast::hash(body) != header.body_crc {
        return Err(corrupt(HEADER_BYTES, "body checksum mismatch".into()));
    }
    let mut offset = 0usize;
    let mut next = || -> Result<Option<(SnapshotRecord, Option<u64>, usize)>> {
        if offset == body.len() {
            return Ok(None);
        }
        let at = HEADER_BYTES + offset;
        let (payload, used) = read_frame(&body[offset..]).map_err(|e| match e {
            FormatError::Truncated => corrupt(at, "truncated frame".into()),
            FormatError::Corrupt(reason) => corrupt(at, reason),
        })?;
        let (record, subject_lsn) =
            decode_record(header.version, payload).map_err(|e| match e {
                FormatError::Truncated => corrupt(at, "truncated record".into()),
                FormatError::Corrupt(reason) => corrupt(at, reason),
            })?;
        offset += used;
        Ok(Some((record, subject_lsn, at)))
    };
    let Some((
        SnapshotRecord::Meta {
            replay_from,
            created_millis,
            hash_seed,
        },
        _,
        _,
    )) = next()?
    else {
        return Err(corrupt(
            HEADER_BYTES,
            "the first record is not the snapshot's metadata".into(),
        ));
    };
    // The store takes the snapshot's seed (a version-1 snapshot has
    // none), so that its subjects come in shard by shard and each shard's
    // tables are sized once for them.
    if header.version != FormatVersion::V1
        && let Some((store, _)) = &mut into
    {
        store.reseed(hash_seed);
    }
    let into = into.map(|(store, tokens)| (&*store, tokens));
    // Before version 4, the tokens and the registry are one frame each,
    // and a subject is one frame.
    let split = header.version >= FormatVersion::V4;
    let mut subjects = 0u64;
    let held;
    // A version-1 snapshot's per-subject last LSNs.
    let mut subject_lsns = std::collections::HashMap::new();
    let mut max_counter = None::<u32>;
    let (mut seen_tokens, mut seen_registry) = (false, false);
    let mut pending = PendingSubjects::default();
    let mut current = None::<CurrentSubject>;
    // Files the subject read, once its last frame is behind.
    let finish = |current: &mut Option<CurrentSubject>,
                  subjects: &mut u64,
                  max_counter: &mut Option<u32>,
                  pending: &mut PendingSubjects|
     -> Result<()> {
        let Some(CurrentSubject { uid, cells, at }) = current.take() else {
            return Ok(());
        };
        *max_counter = (*max_counter).max(cells.max_counter());
        *subjects += 1;
        if let Some((store, _)) = into {
            let shard = store.shard_of(&uid);
            pending.push(store, path, shard, (uid, cells), at)?;
        }
        Ok(())
    };
    loop {
        let Some((record, subject_lsn, at)) = next()? else {
            return Err(corrupt(
                bytes.len(),
                "the snapshot has no end record".into(),
            ));
        };
        if !matches!(&record, SnapshotRecord::Subject(uid, _)
            if split && current.as_ref().is_some_and(|c| c.uid == *uid))
        {
            finish(&mut current, &mut subjects, &mut max_counter, &mut pending)?;
        }
        match record {
            SnapshotRecord::Tokens(_) if seen_tokens && !split => {
                return Err(corrupt(at, "a second token record".into()));
            }
            SnapshotRecord::Registry(_) if seen_registry && !split => {
                return Err(corrupt(at, "a second registry record".into()));
            }
            SnapshotRecord::Tokens(list) => {
                seen_tokens = true;
                for (token, issued) in list {
                    crate::subject::validate_issued_token(&token, &issued)
                        .map_err(|e| corrupt(at, e.to_string()))?;
                    if let Some((_, tokens)) = into {
                        tokens.restore(&token, issued);
                    }
                }
            }
            SnapshotRecord::Subject(uid, cells) => {
                crate::subject::validate_uid(&uid).map_err(|e| corrupt(at, e.to_string()))?;
                if !cells.is_well_formed(u32::MAX as usize) {
                    return Err(corrupt(at, format!("malformed cells of subject {uid:?}")));
                }
                if let Some(lsn) = subject_lsn {
                    if lsn == super::recovery::MAX_LSN {
                        return Err(corrupt(at, format!("LSN {lsn} out of range")));
                    }
                    subject_lsns.insert(uid.clone(), lsn);
                }
                match &mut current {
                    Some(current) if current.uid == uid => {
                        if !current.cells.extend_with(cells) {
                            return Err(corrupt(
                                at,
                                format!("cells of subject {uid:?} out of order across frames"),
                            ));
                        }
                    }
                    _ => current = Some(CurrentSubject { uid, cells, at }),
                }
            }
            SnapshotRecord::Registry(changes) => {
                seen_registry = true;
                registry
                    .replay(&changes)
                    .map_err(|reason| corrupt(at, reason))?;
            }
            SnapshotRecord::End {
                subjects: expected,
                shard_lsns,
            } => {
                if let Some((store, _)) = into {
                    pending.restore_into(store, path)?;
                }
                if !(seen_tokens && seen_registry) {
                    return Err(corrupt(
                        at,
                        "the snapshot lacks its token or registry record".into(),
                    ));
                }
                if expected != subjects {
                    return Err(corrupt(
                        at,
                        format!("end record counts {expected} subjects, found {subjects}"),
                    ));
                }
                if offset != body.len() {
                    return Err(corrupt(at, "bytes after the end record".into()));
                }
                held = if header.version == FormatVersion::V1 {
                    HeldBatches::by_subject(std::mem::take(&mut subject_lsns))
                } else {
                    if let Some(lsn) = shard_lsns
                        .iter()
                        .find(|&&lsn| lsn == super::recovery::MAX_LSN)
                    {
                        return Err(corrupt(at, format!("LSN {lsn} out of range")));
                    }
                    let shards = shard_lsns.len();
                    HeldBatches::by_shard(hash_seed, shard_lsns).ok_or_else(|| {
                        corrupt(at, format!("the end record lists {shards} shards"))
                    })?
                };
                break;
            }
            SnapshotRecord::Meta { .. } => {
                return Err(corrupt(at, "a second metadata record".into()));
            }
        }
    }
    if let Some(max) = max_counter.filter(|&max| max as usize >= registry.counter_count()) {
        return Err(corrupt(
            HEADER_BYTES,
            format!("cells refer to counter {max}, which the registry lacks"),
        ));
    }
    Ok(Loaded {
        created_millis,
        replay_from,
        subjects,
        held,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> (Registry, Store, TokenStore) {
        (
            Registry::new(2, 10_000),
            Store::default(),
            TokenStore::new(std::time::Duration::from_secs(3600)),
        )
    }

    #[test]
    fn a_loaded_store_takes_the_hash_seed_of_the_store_the_snapshot_was_taken_from() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, source, tokens) = parts();
        let summary = write(dir.path(), 1, 0, &registry, &source, &tokens).unwrap();
        let (registry, mut loaded, tokens) = parts();
        assert_ne!(loaded.seed(), source.seed());
        load(&summary.path, &registry, &mut loaded, &tokens).unwrap();
        assert_eq!(loaded.seed(), source.seed());
    }
}
