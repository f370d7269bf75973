//! Writing a snapshot: each shard's subjects encoded under its read lock,
//! then written out after the lock is released; the file synced and
//! renamed into place.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use super::{SnapshotRecordRef, SnapshotSummary, snapshot_name};
use crate::error::{Error, Result};
use crate::persist::format::{
    FRAME_BUDGET_BYTES, HEADER_BYTES, Header, SNAPSHOT_MAGIC, TooLarge, encoded_len, runs,
    write_frame,
};
use crate::persist::sync_dir;
use crate::registry::Registry;
use crate::store::{CellsView, Store};
use crate::subject::TokenStore;

#[cfg(test)]
thread_local! {
    /// Makes this thread's snapshots unreadable (a record no reader
    /// decodes after the metadata), for tests of what happens then.
    pub(crate) static WRITE_UNREADABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
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
