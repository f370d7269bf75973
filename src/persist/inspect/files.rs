//! What one file of a data directory holds: its header, then each frame
//! in turn, walked without loading it into an engine.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::{FileInspection, FileKind, LogInspection, SnapshotInspection, read};
use crate::error::{Error, Result};
use crate::persist::format::{
    FormatError, FormatVersion, HEADER_BYTES, Header, LOG_MAGIC, SNAPSHOT_MAGIC, is_torn_tail,
    read_frame,
};
use crate::persist::snapshot::{SnapshotRecord, decode_record, snapshot_number};
use crate::persist::wal::{LogRecord, decode_log_frame, segment_number};
use crate::registry::RegistryChange;

pub(super) fn inspect_file(path: &Path) -> Result<FileInspection> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let bytes = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        .len();
    let kind = if let Some(number) = snapshot_number(name) {
        FileKind::Snapshot(inspect_snapshot(path, &read(path)?, number))
    } else if let Some(number) = segment_number(name) {
        FileKind::Log(inspect_log(path, &read(path)?, number))
    } else if name == "LOCK" {
        FileKind::Lock
    } else if name.ends_with(".tmp") {
        FileKind::Temporary
    } else {
        FileKind::Other
    };
    Ok(FileInspection {
        path: path.to_owned(),
        bytes,
        kind,
    })
}

/// How a walk over the frames of a file ended.
enum WalkEnd {
    /// Every byte belongs to a whole, valid frame.
    Clean,
    /// Damage at this offset with no valid frame after it.
    Torn(usize),
    /// Damage at this offset, and why.
    Corrupt(usize, String),
}

/// Decodes the frames of `bytes` from `offset` on, handing each record and
/// its offset to `visit` (which may reject it), until the end or damage.
fn walk<T>(
    bytes: &[u8],
    decode_frame: impl Fn(&[u8]) -> std::result::Result<Vec<T>, FormatError>,
    mut offset: usize,
    mut visit: impl FnMut(T, usize) -> std::result::Result<(), String>,
) -> WalkEnd {
    while offset < bytes.len() {
        let (payload, used) = match read_frame(&bytes[offset..]) {
            Ok(frame) => frame,
            Err(_) if is_torn_tail(&bytes[offset + 1..]) => return WalkEnd::Torn(offset),
            Err(FormatError::Truncated) => {
                return WalkEnd::Corrupt(offset, "truncated frame followed by more records".into());
            }
            Err(FormatError::Corrupt(reason)) => return WalkEnd::Corrupt(offset, reason),
        };
        let records: Vec<T> = match decode_frame(payload) {
            Ok(records) => records,
            Err(FormatError::Truncated) => {
                return WalkEnd::Corrupt(offset, "truncated record".into());
            }
            Err(FormatError::Corrupt(reason)) => return WalkEnd::Corrupt(offset, reason),
        };
        for record in records {
            if let Err(reason) = visit(record, offset) {
                return WalkEnd::Corrupt(offset, reason);
            }
        }
        offset += used;
    }
    WalkEnd::Clean
}

fn corrupt(path: &Path, offset: usize, reason: String) -> Error {
    Error::Corrupt {
        file: path.to_owned(),
        offset: offset as u64,
        reason,
    }
}

/// `range` grown to include `lsn`.
fn widen(range: Option<(u64, u64)>, lsn: u64) -> (u64, u64) {
    match range {
        None => (lsn, lsn),
        Some((low, high)) => (low.min(lsn), high.max(lsn)),
    }
}

fn inspect_log(path: &Path, bytes: &[u8], number: u64) -> LogInspection {
    let mut log = LogInspection {
        number,
        ..LogInspection::default()
    };
    let version = match Header::decode(bytes, LOG_MAGIC) {
        Ok(header) => {
            log.format_version = Some(header.version as u32);
            header.version
        }
        // A crash while a segment was being created leaves a short header.
        Err(FormatError::Truncated) => {
            log.torn_tail = Some(0);
            return log;
        }
        Err(FormatError::Corrupt(reason)) => {
            log.problem = Some(corrupt(path, 0, reason));
            return log;
        }
    };
    let mut subjects = HashSet::new();
    // A log frame holds records of one group commit.
    let decode_frame = |payload: &[u8]| decode_log_frame(version, payload);
    let end = walk(bytes, decode_frame, HEADER_BYTES, |record: LogRecord, _| {
        match record {
            LogRecord::Registry(changes) => {
                log.registry_records += 1;
                for change in changes {
                    match change {
                        RegistryChange::Created { .. } => log.counters_created += 1,
                        RegistryChange::Registered {
                            registered: true, ..
                        } => log.registered += 1,
                        RegistryChange::Registered { .. } => log.unregistered += 1,
                    }
                }
            }
            LogRecord::Token { .. } => log.token_records += 1,
            LogRecord::Increment { lsn, uid, .. } => {
                log.increments += 1;
                log.lsn_range = Some(widen(log.lsn_range, lsn));
                subjects.insert(uid);
            }
            LogRecord::Subjects {
                lsn,
                subjects: states,
            } => {
                log.state_records += 1;
                log.subject_states += states.len() as u64;
                log.lsn_range = Some(widen(log.lsn_range, lsn));
                subjects.extend(states.into_iter().map(|(uid, _)| uid));
            }
            LogRecord::Cells { lsn, uid, from, .. } => {
                log.state_records += 1;
                // A subject's state starts with the part from counter 0.
                if from == 0 {
                    log.subject_states += 1;
                }
                log.lsn_range = Some(widen(log.lsn_range, lsn));
                subjects.insert(uid);
            }
        }
        Ok(())
    });
    log.subjects = subjects.len() as u64;
    match end {
        WalkEnd::Clean => {}
        WalkEnd::Torn(offset) => log.torn_tail = Some(offset as u64),
        WalkEnd::Corrupt(offset, reason) => log.problem = Some(corrupt(path, offset, reason)),
    }
    log
}

fn inspect_snapshot(path: &Path, bytes: &[u8], number: u64) -> SnapshotInspection {
    let mut snapshot = SnapshotInspection {
        replay_from: number,
        ..SnapshotInspection::default()
    };
    let header = match Header::decode(bytes, SNAPSHOT_MAGIC) {
        Ok(header) => header,
        Err(FormatError::Truncated) => {
            snapshot.problem = Some(corrupt(path, 0, "file shorter than its header".into()));
            return snapshot;
        }
        Err(FormatError::Corrupt(reason)) => {
            snapshot.problem = Some(corrupt(path, 0, reason));
            return snapshot;
        }
    };
    snapshot.format_version = Some(header.version as u32);
    let body = &bytes[HEADER_BYTES..];
    if header.body_len != body.len() as u64 {
        let reason = format!(
            "header says {} body bytes, file has {}",
            header.body_len,
            body.len()
        );
        snapshot.problem = Some(corrupt(path, HEADER_BYTES, reason));
        return snapshot;
    }
    if crc32fast::hash(body) != header.body_crc {
        snapshot.problem = Some(corrupt(path, HEADER_BYTES, "body checksum mismatch".into()));
        return snapshot;
    }
    // Counter id -> registered, as the registry record leaves it.
    let mut counters = BTreeMap::new();
    let mut ended = false;
    // From version 4 on, a subject's cells may go on over the frames that
    // follow, with its UID: the subject read last, if the last frame was one.
    let split = header.version >= FormatVersion::V4;
    let mut last_subject = None::<String>;
    // A snapshot frame holds exactly one record.
    let decode_frame =
        |payload: &[u8]| decode_record(header.version, payload).map(|record| vec![record]);
    let end = walk(
        bytes,
        decode_frame,
        HEADER_BYTES,
        |(record, subject_lsn): (SnapshotRecord, Option<u64>), offset| {
            if ended {
                return Err("bytes after the end record".into());
            }
            snapshot.records += 1;
            let previous = last_subject.take();
            match record {
                SnapshotRecord::Meta {
                    created_millis,
                    replay_from,
                    ..
                } if offset == HEADER_BYTES => {
                    snapshot.created_millis = Some(created_millis);
                    snapshot.replay_from = replay_from;
                }
                _ if offset == HEADER_BYTES => {
                    return Err("the first record is not the snapshot's metadata".into());
                }
                SnapshotRecord::Meta { .. } => return Err("a second metadata record".into()),
                SnapshotRecord::Tokens(tokens) => snapshot.tokens += tokens.len() as u64,
                SnapshotRecord::Subject(uid, cells) => {
                    if !(split && previous.as_ref() == Some(&uid)) {
                        snapshot.subjects += 1;
                    }
                    last_subject = Some(uid);
                    snapshot.cells += cells.cells().count() as u64;
                    // Version 1: each subject's own last LSN.
                    snapshot.max_lsn = snapshot.max_lsn.max(subject_lsn.unwrap_or(0));
                }
                SnapshotRecord::Registry(changes) => {
                    for change in changes {
                        match change {
                            RegistryChange::Created { id, .. } => {
                                counters.entry(id).or_insert(false);
                            }
                            RegistryChange::Registered { id, registered } => {
                                counters.insert(id, registered);
                            }
                        }
                    }
                }
                SnapshotRecord::End {
                    subjects,
                    shard_lsns,
                } => {
                    let max_shard_lsn = shard_lsns.iter().copied().max().unwrap_or(0);
                    snapshot.max_lsn = snapshot.max_lsn.max(max_shard_lsn);
                    if subjects != snapshot.subjects {
                        return Err(format!(
                            "end record counts {subjects} subjects, found {}",
                            snapshot.subjects
                        ));
                    }
                    ended = true;
                }
            }
            Ok(())
        },
    );
    snapshot.counters = counters.len() as u64;
    snapshot.registrations = counters.values().filter(|&&r| r).count() as u64;
    snapshot.problem = match end {
        // A snapshot is written whole and renamed into place: it has no torn tail.
        WalkEnd::Torn(offset) => Some(corrupt(path, offset, "damaged record".into())),
        WalkEnd::Corrupt(offset, reason) => Some(corrupt(path, offset, reason)),
        WalkEnd::Clean if !ended => Some(corrupt(
            path,
            bytes.len(),
            "the snapshot has no end record".into(),
        )),
        WalkEnd::Clean => None,
    };
    snapshot
}
