//! Reading a snapshot back: every frame checked, every decoded field
//! validated as input is, subjects put back shard by shard.

use std::path::Path;

use super::{SnapshotRecord, decode_record};
use crate::error::{Error, Result};
use crate::persist::format::{
    FormatError, FormatVersion, HEADER_BYTES, Header, SNAPSHOT_MAGIC, read_frame,
};
use crate::persist::held::HeldBatches;
use crate::registry::Registry;
use crate::store::{Store, SubjectCells};
use crate::subject::TokenStore;

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
                    if lsn == crate::persist::recovery::MAX_LSN {
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
                        .find(|&&lsn| lsn == crate::persist::recovery::MAX_LSN)
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
