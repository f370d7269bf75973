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

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::format::{FormatError, FormatVersion, decode};
use crate::registry::RegistryChange;
use crate::store::{CellsView, SubjectCells};
use crate::subject::IssuedToken;

mod read;
mod write;

pub(crate) use read::{load, load_bytes, verify};
#[cfg(test)]
pub(crate) use write::WRITE_UNREADABLE;
pub(crate) use write::write;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use crate::store::Store;
    use crate::subject::TokenStore;

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
