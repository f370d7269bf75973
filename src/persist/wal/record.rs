//! Log records: as decoded from every format version ([`LogRecord`]), and
//! as appended ([`RecordRef`], laid out as [`RecordV2Ref`]).

use serde::{Deserialize, Serialize};

use crate::counter::CounterId;
use crate::persist::format::{FormatError, FormatVersion, decode_all, split_first_lsn};
use crate::registry::RegistryChange;
use crate::store::{CellsView, ResolvedEntry, SubjectCells};

/// One logged entry of a batch, as decoded.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub(crate) struct LoggedEntry {
    pub targets: Vec<CounterId>,
    pub amount: crate::period::Amount,
}

/// A log record, as decoded from either format version. It is also the
/// version-1 layout, which bincode decodes into it directly.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub(crate) enum LogRecord {
    /// Registry changes, in the order they applied.
    Registry(Vec<RegistryChange>),
    /// An issued regToken.
    Token {
        token: String,
        uid: String,
        expires_at: i64,
    },
    /// An accepted increment batch of one subject, with its event time and
    /// resolved roll-up targets (so replay lands in the same cells and buckets).
    Increment {
        lsn: u64,
        uid: String,
        at: i64,
        entries: Vec<LoggedEntry>,
    },
    /// The whole state of subjects changed since they were last written
    /// back (format version 3 on): replay sets each subject's cells to
    /// these. Not in the version-1 layout.
    Subjects {
        lsn: u64,
        subjects: Vec<(String, SubjectCells)>,
    },
    /// Part of the state of a subject written back whose state is too
    /// large for one record (format version 4 on): replay sets the
    /// subject's cells of the counters `from..until` (no upper bound if
    /// `None`) to these, and keeps its others. A subject's state takes
    /// consecutive records, whose ranges follow on from 0.
    Cells {
        lsn: u64,
        uid: String,
        from: CounterId,
        until: Option<CounterId>,
        cells: SubjectCells,
    },
}

/// A log record in format version 2 or 3, as decoded: an increment carries
/// neither its LSN (the frame's first LSN plus its position) nor its
/// absolute event time (the previous increment's in the frame, or 0,
/// plus `at_delta`).
#[derive(Deserialize)]
enum LogRecordV2 {
    Registry(Vec<RegistryChange>),
    Token {
        token: String,
        uid: String,
        expires_at: i64,
    },
    Increment {
        uid: String,
        at_delta: i64,
        entries: Vec<LoggedEntry>,
    },
    /// Version 3 on.
    Subjects(Vec<(String, SubjectCells)>),
    /// Version 4 on.
    Cells {
        uid: String,
        from: CounterId,
        until: Option<CounterId>,
        cells: SubjectCells,
    },
}

/// A log record in format version 4, to encode. The engine encodes
/// increments by hand (`write_increment_record`, pinned to this layout by
/// a test); the other records go through this.
#[derive(Serialize)]
pub(crate) enum RecordV2Ref<'a> {
    Registry(&'a [RegistryChange]),
    Token {
        token: &'a str,
        uid: &'a str,
        expires_at: i64,
    },
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "increments are encoded by hand; a test compares")
    )]
    Increment {
        uid: &'a str,
        at_delta: i64,
        entries: &'a [ResolvedEntry<'a>],
    },
    Subjects(&'a [(&'a str, CellsView<'a>)]),
    Cells {
        uid: &'a str,
        from: CounterId,
        until: Option<CounterId>,
        cells: CellsView<'a>,
    },
}

/// Decodes the records of a log frame's payload written in `version`.
pub(crate) fn decode_log_frame(
    version: FormatVersion,
    payload: &[u8],
) -> std::result::Result<Vec<LogRecord>, FormatError> {
    let states_unknown = || {
        FormatError::Corrupt(format!(
            "subject states in a version-{} log",
            version as u32
        ))
    };
    if version == FormatVersion::V1 {
        let records: Vec<LogRecord> = decode_all(payload)?;
        if records
            .iter()
            .any(|r| matches!(r, LogRecord::Subjects { .. }))
        {
            return Err(states_unknown());
        }
        return Ok(records);
    }
    let (first_lsn, records) = split_first_lsn(payload)?;
    let mut at = 0i64;
    let mut decoded = Vec::new();
    for (position, record) in decode_all::<LogRecordV2>(records)?.into_iter().enumerate() {
        let lsn = || {
            first_lsn
                .checked_add(position as u64)
                .ok_or_else(|| FormatError::Corrupt("LSN overflow".into()))
        };
        decoded.push(match record {
            LogRecordV2::Registry(changes) => LogRecord::Registry(changes),
            LogRecordV2::Token {
                token,
                uid,
                expires_at,
            } => LogRecord::Token {
                token,
                uid,
                expires_at,
            },
            LogRecordV2::Increment {
                uid,
                at_delta,
                entries,
            } => {
                let lsn = lsn()?;
                at = at
                    .checked_add(at_delta)
                    .ok_or_else(|| FormatError::Corrupt("event time overflow".into()))?;
                LogRecord::Increment {
                    lsn,
                    uid,
                    at,
                    entries,
                }
            }
            LogRecordV2::Subjects(_) if version == FormatVersion::V2 => {
                return Err(states_unknown());
            }
            LogRecordV2::Subjects(subjects) => LogRecord::Subjects {
                lsn: lsn()?,
                subjects,
            },
            LogRecordV2::Cells { .. } if version < FormatVersion::V4 => {
                return Err(FormatError::Corrupt(format!(
                    "a part of a subject's state in a version-{} log",
                    version as u32
                )));
            }
            LogRecordV2::Cells {
                uid,
                from,
                until,
                cells,
            } => LogRecord::Cells {
                lsn: lsn()?,
                uid,
                from,
                until,
                cells,
            },
        });
    }
    Ok(decoded)
}

/// A log record to append, borrowing its parts. Its layout on disk is
/// [`RecordV2Ref`]'s.
#[derive(Clone, Copy)]
pub(crate) enum RecordRef<'a> {
    /// See [`LogRecord::Registry`].
    Registry(&'a [RegistryChange]),
    /// See [`LogRecord::Token`].
    Token {
        token: &'a str,
        uid: &'a str,
        expires_at: i64,
    },
    /// See [`LogRecord::Increment`]. `lsn` must be the one
    /// [`Wal::append`] handed out for this record.
    Increment {
        lsn: u64,
        uid: &'a str,
        at: i64,
        entries: &'a [ResolvedEntry<'a>],
    },
    /// See [`LogRecord::Subjects`]; its LSN is the one [`Wal::append`]
    /// returns.
    Subjects(&'a [(&'a str, CellsView<'a>)]),
    /// See [`LogRecord::Cells`]; its LSN is the one [`Wal::append`]
    /// returns.
    Cells {
        uid: &'a str,
        from: CounterId,
        until: Option<CounterId>,
        cells: CellsView<'a>,
    },
}
