//! The one error type of the crate, and the platform's numeric error codes.

use std::fmt;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The platform's numeric error codes.
///
/// Every [`Error`] maps to one of these through [`Error::code`]; the REST
/// layer puts the number in `errorCode`, the message in `errorMessage` and
/// the error's `Display` text in `errorDetails`. The authorization codes
/// (`400093` and `403002` to `403006`) exist only with the `http` feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `0`: success.
    Ok,
    /// `400002`: a required parameter is missing.
    MissingParameter,
    /// `400004`: a parameter is not in the expected format (malformed JSON).
    InvalidParameterFormat,
    /// `400006`: a parameter has an invalid value.
    InvalidParameterValue,
    /// `409011`: the counter is not registered.
    CounterNotRegistered,
    /// `500001`: a storage or I/O failure.
    GeneralServerError,
    /// `400093`: the `apiKey` is missing or not one the server knows.
    #[cfg(feature = "http")]
    InvalidApiKey,
    /// `403002`: a signed request's `timestamp` is too far from the server's clock.
    #[cfg(feature = "http")]
    RequestExpired,
    /// `403003`: the request's `sig` (or plain `secret`) does not match.
    #[cfg(feature = "http")]
    InvalidSignature,
    /// `403004`: a signed request's `nonce` was already used.
    #[cfg(feature = "http")]
    DuplicateNonce,
    /// `403005`: the request carries no usable credentials, or an unknown `userKey`.
    #[cfg(feature = "http")]
    Unauthorized,
    /// `403006`: a plain `secret` was sent where the server does not accept one.
    #[cfg(feature = "http")]
    SecretSentOverHttp,
}

impl ErrorCode {
    /// The numeric code, e.g. `400006`.
    pub const fn number(self) -> u32 {
        match self {
            ErrorCode::Ok => 0,
            ErrorCode::MissingParameter => 400_002,
            ErrorCode::InvalidParameterFormat => 400_004,
            ErrorCode::InvalidParameterValue => 400_006,
            ErrorCode::CounterNotRegistered => 409_011,
            ErrorCode::GeneralServerError => 500_001,
            #[cfg(feature = "http")]
            ErrorCode::InvalidApiKey => 400_093,
            #[cfg(feature = "http")]
            ErrorCode::RequestExpired => 403_002,
            #[cfg(feature = "http")]
            ErrorCode::InvalidSignature => 403_003,
            #[cfg(feature = "http")]
            ErrorCode::DuplicateNonce => 403_004,
            #[cfg(feature = "http")]
            ErrorCode::Unauthorized => 403_005,
            #[cfg(feature = "http")]
            ErrorCode::SecretSentOverHttp => 403_006,
        }
    }

    /// The platform's short message for the code, e.g. `Invalid parameter value`.
    pub const fn message(self) -> &'static str {
        match self {
            ErrorCode::Ok => "OK",
            ErrorCode::MissingParameter => "Missing required parameter",
            ErrorCode::InvalidParameterFormat => "Invalid parameter format",
            ErrorCode::InvalidParameterValue => "Invalid parameter value",
            ErrorCode::CounterNotRegistered => "Counter not registered",
            ErrorCode::GeneralServerError => "General Server Error",
            #[cfg(feature = "http")]
            ErrorCode::InvalidApiKey => "Invalid ApiKey parameter",
            #[cfg(feature = "http")]
            ErrorCode::RequestExpired => "Request has expired",
            #[cfg(feature = "http")]
            ErrorCode::InvalidSignature => "Invalid request signature",
            #[cfg(feature = "http")]
            ErrorCode::DuplicateNonce => "Duplicate nonce",
            #[cfg(feature = "http")]
            ErrorCode::Unauthorized => "Unauthorized user",
            #[cfg(feature = "http")]
            ErrorCode::SecretSentOverHttp => "Secret sent over HTTP",
        }
    }

    /// The HTTP status: the first three digits of the code, 200 for success.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::Ok => 200,
            other => (other.number() / 1000) as u16,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.number(), self.message())
    }
}

/// Which amount of an increment entry an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AmountField {
    /// The `count` field.
    Count,
    /// The `value` field.
    Value,
}

impl fmt::Display for AmountField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AmountField::Count => "count",
            AmountField::Value => "value",
        })
    }
}

/// Everything that can go wrong in tally.
///
/// Each variant carries what a caller needs to fix the request, and maps to
/// the platform's numeric code through [`Error::code`]. The HTTP server's
/// authorization variants (`InvalidApiKey` and the five after it)
/// exist only with the `http` feature.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A required parameter or field is missing.
    #[error("missing required parameter `{name}`")]
    MissingParameter {
        /// The parameter or field name, e.g. `UID` or `counters[2].path`.
        name: String,
    },
    /// A parameter is not in the expected format, e.g. malformed JSON.
    #[error("parameter `{name}` has an invalid format: {reason}")]
    InvalidFormat {
        /// The parameter name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A parameter has a value outside what is accepted.
    #[error("parameter `{name}` has an invalid value: {reason}")]
    InvalidValue {
        /// The parameter or field name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A counter class name breaks the class rules.
    #[error("invalid class {class:?}: {reason}")]
    InvalidClass {
        /// The offending class.
        class: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A counter path breaks the path rules.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The offending path.
        path: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A counter path is deeper than the engine's maximum depth.
    #[error("path {path:?} is {depth} levels deep; this engine allows at most {max}")]
    PathTooDeep {
        /// The offending path.
        path: String,
        /// Its level.
        depth: usize,
        /// The engine's `max_path_depth`.
        max: usize,
    },
    /// A UID breaks the subject rules.
    #[error("invalid UID: {reason}")]
    InvalidUid {
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// Both a UID and a regToken were given.
    #[error("give exactly one of UID and regToken, not both")]
    BothSubjects,
    /// The regToken is not known to the engine.
    #[error("unknown regToken")]
    UnknownRegToken,
    /// The regToken was issued but has expired.
    #[error("regToken expired at unix time {expired_at}")]
    ExpiredRegToken {
        /// When it expired, Unix seconds.
        expired_at: i64,
    },
    /// An increment batch is empty.
    #[error("an increment batch needs at least one entry")]
    EmptyBatch,
    /// An increment batch has more entries than the engine accepts.
    #[error("batch of {len} entries exceeds the limit of {max}")]
    BatchTooLarge {
        /// Entries in the batch.
        len: usize,
        /// The engine's `max_batch`.
        max: usize,
    },
    /// Applying an increment would overflow a stored 64-bit amount.
    #[error("adding to {field} of ({class}, {path}) would overflow a signed 64-bit integer")]
    Overflow {
        /// The counter class.
        class: String,
        /// The counter path whose cell would overflow (the entry's own path or one it rolls up to).
        path: String,
        /// Which amount overflows.
        field: AmountField,
    },
    /// An event timestamp is outside the supported range (years 2000 to 2099, UTC).
    #[error("timestamp {unix_secs} is outside the supported range (2000-01-01 to 2099-12-31 UTC)")]
    TimestampOutOfRange {
        /// The rejected Unix seconds.
        unix_secs: i64,
    },
    /// A `regex('…')` selector is invalid or too large.
    #[error("invalid regular expression {pattern:?}: {reason}")]
    InvalidRegex {
        /// The expression.
        pattern: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A period selector is neither `total`, `last7Days`, `YYMM`, `YYMMDD` nor a regex.
    #[error("invalid period {period:?}: expected total, last7Days, YYMM, YYMMDD or regex('…')")]
    InvalidPeriod {
        /// The rejected period.
        period: String,
    },
    /// A read has more selectors than the engine accepts.
    #[error("a read of {count} selectors exceeds the limit of {max} (max_selectors)")]
    TooManySelectors {
        /// Selectors in the read.
        count: usize,
        /// The engine's `max_selectors`.
        max: usize,
    },
    /// A read would answer more rows than the engine returns at once.
    #[error("the read would return more than {max} rows (max_rows): narrow its selectors")]
    TooManyRows {
        /// The engine's `max_rows`.
        max: usize,
    },
    /// Registering would exceed the engine's registration limit.
    #[error("registering would exceed the limit of {max} registered counters")]
    TooManyRegistrations {
        /// The engine's `max_registrations`.
        max: usize,
    },
    /// Creating a counter would exceed the engine's counter limit: every
    /// (class, path) that ever existed, registered or not, including the
    /// ones a system class creates on first use.
    #[error("creating counter ({class}, {path}) would exceed the limit of {max} counters")]
    TooManyCounters {
        /// The class of the counter that was not created.
        class: String,
        /// Its path.
        path: String,
        /// The engine's `max_counters`.
        max: usize,
    },
    /// The class is neither a system class nor registered under any path.
    #[error("class {class:?} is not known: register a counter of it first")]
    UnknownClass {
        /// The class.
        class: String,
    },
    /// The (class, path) counter is not registered.
    #[error("counter ({class}, {path}) is not registered")]
    NotRegistered {
        /// The class.
        class: String,
        /// The path.
        path: String,
    },
    /// A handle was resolved by a different engine.
    #[error("the counter handle belongs to another engine")]
    ForeignHandle,
    /// One entry of a batch is bad; the whole batch was rejected.
    #[error("entry {index}: {source}")]
    Entry {
        /// The zero-based index of the first bad entry.
        index: usize,
        /// What is wrong with it.
        source: Box<Error>,
    },
    /// The engine configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The operating system could not provide random bytes.
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    /// A data file is damaged in a way recovery must not paper over.
    #[error("corrupt data file {file} at byte {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        file: std::path::PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A single record (a cell, a regToken, a registry change, a batch)
    /// would be larger than a data file's frame may be, so the engine
    /// refuses to write it rather than write a file it could not read.
    #[error("a record of {bytes} bytes is larger than the {max} a data file's frame may hold")]
    RecordTooLarge {
        /// The record's encoded size.
        bytes: u64,
        /// The most a frame may hold.
        max: u64,
    },
    /// An earlier write or sync of the log failed, so the engine refuses
    /// writes rather than acknowledge what it cannot persist.
    #[error("the engine refuses writes after a failed log write or sync: {reason}")]
    Poisoned {
        /// The first failure.
        reason: String,
    },
    /// Another process (or engine) has the data directory open.
    #[error("data directory {dir} is locked by another engine")]
    Locked {
        /// The directory.
        dir: std::path::PathBuf,
    },
    /// A storage or I/O failure.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the engine was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The shared store (Redis Cluster) did not answer within the bounded
    /// retry: a failover, `CLUSTERDOWN`, a lost connection or a timeout.
    /// The call may be retried; the client reconnects by itself.
    #[cfg(feature = "redis")]
    #[error("the counter store is unavailable: {reason}")]
    StoreUnavailable {
        /// What the store answered, or why it did not.
        reason: String,
    },
    /// The shared store holds data this engine did not write and cannot read.
    #[cfg(feature = "redis")]
    #[error("the counter store holds unreadable data at key {key:?}: {reason}")]
    StoreCorrupt {
        /// The Redis key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    #[cfg(feature = "http")]
    /// The request's `apiKey` is missing or unknown to the server.
    #[error("invalid apiKey: {reason}")]
    InvalidApiKey {
        /// What is wrong with it.
        reason: String,
    },
    #[cfg(feature = "http")]
    /// A signed request's `timestamp` is more than the allowed skew away
    /// from the server's clock.
    #[error(
        "request timestamp {timestamp} is {skew_secs} s away from the server's clock; at most {max_skew_secs} s is accepted"
    )]
    RequestExpired {
        /// The request's timestamp, Unix seconds.
        timestamp: i64,
        /// How far it is from the server's clock, seconds.
        skew_secs: i64,
        /// The accepted skew, seconds.
        max_skew_secs: i64,
    },
    #[cfg(feature = "http")]
    /// The request's `sig` or plain `secret` does not match.
    #[error("invalid request signature: {reason}")]
    InvalidSignature {
        /// What did not match.
        reason: String,
    },
    #[cfg(feature = "http")]
    /// A signed request's `nonce` was already used within the accepted window.
    #[error("duplicate nonce: this nonce was already used by a recent request")]
    DuplicateNonce,
    #[cfg(feature = "http")]
    /// The request carries no usable credentials, or an unknown `userKey`.
    #[error("unauthorized: {reason}")]
    Unauthorized {
        /// What is missing or unknown.
        reason: String,
    },
    #[cfg(feature = "http")]
    /// A plain `secret` was sent where the server does not accept one.
    #[error(
        "a plain secret is not accepted on this connection; sign the request (timestamp, nonce, sig) instead"
    )]
    SecretSentOverHttp,
}

impl Error {
    /// The platform error code this error maps to.
    pub fn code(&self) -> ErrorCode {
        use Error::*;
        match self {
            MissingParameter { .. } | EmptyBatch => ErrorCode::MissingParameter,
            InvalidFormat { .. } => ErrorCode::InvalidParameterFormat,
            InvalidValue { .. }
            | InvalidClass { .. }
            | InvalidPath { .. }
            | PathTooDeep { .. }
            | InvalidUid { .. }
            | BothSubjects
            | UnknownRegToken
            | ExpiredRegToken { .. }
            | BatchTooLarge { .. }
            | Overflow { .. }
            | TimestampOutOfRange { .. }
            | InvalidRegex { .. }
            | InvalidPeriod { .. }
            | TooManyRegistrations { .. }
            | TooManyCounters { .. }
            | TooManySelectors { .. }
            | TooManyRows { .. }
            | ForeignHandle
            | Config(_) => ErrorCode::InvalidParameterValue,
            UnknownClass { .. } | NotRegistered { .. } => ErrorCode::CounterNotRegistered,
            Entry { source, .. } => source.code(),
            Random(_)
            | Io { .. }
            | Corrupt { .. }
            | RecordTooLarge { .. }
            | Poisoned { .. }
            | Locked { .. } => ErrorCode::GeneralServerError,
            #[cfg(feature = "redis")]
            StoreUnavailable { .. } | StoreCorrupt { .. } => ErrorCode::GeneralServerError,
            #[cfg(feature = "http")]
            InvalidApiKey { .. } => ErrorCode::InvalidApiKey,
            #[cfg(feature = "http")]
            RequestExpired { .. } => ErrorCode::RequestExpired,
            #[cfg(feature = "http")]
            InvalidSignature { .. } => ErrorCode::InvalidSignature,
            #[cfg(feature = "http")]
            DuplicateNonce => ErrorCode::DuplicateNonce,
            #[cfg(feature = "http")]
            Unauthorized { .. } => ErrorCode::Unauthorized,
            #[cfg(feature = "http")]
            SecretSentOverHttp => ErrorCode::SecretSentOverHttp,
        }
    }

    /// Wraps `self` as the error of batch entry `index`.
    pub(crate) fn at_entry(self, index: usize) -> Error {
        Error::Entry {
            index,
            source: Box::new(self),
        }
    }

    /// An I/O error with what the engine was doing.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The innermost error: for [`Error::Entry`], the entry's own error.
    pub fn root(&self) -> &Error {
        match self {
            Error::Entry { source, .. } => source.root(),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_follow_the_platform() {
        assert_eq!(ErrorCode::Ok.http_status(), 200);
        assert_eq!(ErrorCode::MissingParameter.number(), 400002);
        assert_eq!(ErrorCode::MissingParameter.http_status(), 400);
        assert_eq!(ErrorCode::CounterNotRegistered.http_status(), 409);
        assert_eq!(ErrorCode::GeneralServerError.http_status(), 500);
        // The authorization codes exist with the HTTP server only.
        #[cfg(feature = "http")]
        {
            assert_eq!(ErrorCode::InvalidApiKey.number(), 400_093);
            assert_eq!(ErrorCode::InvalidApiKey.http_status(), 400);
            for (code, number) in [
                (ErrorCode::RequestExpired, 403_002),
                (ErrorCode::InvalidSignature, 403_003),
                (ErrorCode::DuplicateNonce, 403_004),
                (ErrorCode::Unauthorized, 403_005),
                (ErrorCode::SecretSentOverHttp, 403_006),
            ] {
                assert_eq!((code.number(), code.http_status()), (number, 403));
            }
        }
    }

    #[test]
    fn entry_errors_keep_the_inner_code_and_name_the_index() {
        let e = Error::NotRegistered {
            class: "c".into(),
            path: "/x".into(),
        }
        .at_entry(3);
        assert_eq!(e.code(), ErrorCode::CounterNotRegistered);
        assert!(e.to_string().starts_with("entry 3: "), "{e}");
        assert!(matches!(e.root(), Error::NotRegistered { .. }));
    }
}
