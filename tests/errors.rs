//! Errors.
//!
//! Pins: every `ErrorCode` has the platform's number, message and HTTP
//! status (the code's first three digits, 200 for success); every `Error`
//! variant maps to the code of the platform's table (an `Entry` to its inner
//! error's); `Display` texts name what to fix (the offending value, the
//! limit, the entry index); `root()` and `source()` reach the inner error.

use std::error::Error as _;

mod stores;

use stores::Store;
use tally::{AmountField, Error, ErrorCode, Increment, ManualClock, Selector};

#[test]
fn codes_numbers_messages_and_statuses() {
    let table = [
        (ErrorCode::Ok, 0, "OK", 200),
        (
            ErrorCode::MissingParameter,
            400_002,
            "Missing required parameter",
            400,
        ),
        (
            ErrorCode::InvalidParameterFormat,
            400_004,
            "Invalid parameter format",
            400,
        ),
        (
            ErrorCode::InvalidParameterValue,
            400_006,
            "Invalid parameter value",
            400,
        ),
        (
            ErrorCode::CounterNotRegistered,
            409_011,
            "Counter not registered",
            409,
        ),
        (
            ErrorCode::GeneralServerError,
            500_001,
            "General Server Error",
            500,
        ),
    ];
    for (code, number, message, status) in table {
        assert_eq!(code.number(), number, "{code:?}");
        assert_eq!(code.message(), message, "{code:?}");
        assert_eq!(code.http_status(), status, "{code:?}");
        let shown = code.to_string();
        assert!(
            shown.contains(&number.to_string()) && shown.contains(message),
            "{shown}"
        );
        if number != 0 {
            // statusCode is the first three digits of errorCode.
            assert_eq!(u32::from(status), number / 1000);
        }
    }
}

fn io_error() -> Error {
    Error::Io {
        context: "writing the snapshot".into(),
        source: std::io::Error::other("disk full"),
    }
}

/// Every variant, its code, and words its message must contain.
fn every_variant() -> Vec<(Error, ErrorCode, Vec<&'static str>)> {
    use ErrorCode::*;
    vec![
        (
            Error::MissingParameter { name: "UID".into() },
            MissingParameter,
            vec!["UID"],
        ),
        (
            Error::InvalidFormat {
                name: "counters".into(),
                reason: "expected an array".into(),
            },
            InvalidParameterFormat,
            vec!["counters", "expected an array"],
        ),
        (
            Error::InvalidValue {
                name: "count".into(),
                reason: "not an integer".into(),
            },
            InvalidParameterValue,
            vec!["count", "not an integer"],
        ),
        (
            Error::InvalidClass {
                class: "a b".into(),
                reason: "no whitespace",
            },
            InvalidParameterValue,
            vec!["a b", "no whitespace"],
        ),
        (
            Error::InvalidPath {
                path: "//x".into(),
                reason: "empty segment",
            },
            InvalidParameterValue,
            vec!["//x", "empty segment"],
        ),
        (
            Error::PathTooDeep {
                path: "/a/b/c".into(),
                depth: 3,
                max: 2,
            },
            InvalidParameterValue,
            vec!["/a/b/c", "3", "2"],
        ),
        (
            Error::InvalidUid { reason: "too long" },
            InvalidParameterValue,
            vec!["UID", "too long"],
        ),
        (
            Error::BothSubjects,
            InvalidParameterValue,
            vec!["UID", "regToken"],
        ),
        (
            Error::UnknownRegToken,
            InvalidParameterValue,
            vec!["unknown", "regToken"],
        ),
        (
            Error::ExpiredRegToken {
                expired_at: 1_795_784_400,
            },
            InvalidParameterValue,
            vec!["expired", "1795784400"],
        ),
        (Error::EmptyBatch, MissingParameter, vec!["at least one"]),
        (
            Error::BatchTooLarge {
                len: 1001,
                max: 1000,
            },
            InvalidParameterValue,
            vec!["1001", "1000"],
        ),
        (
            Error::Overflow {
                class: "c".into(),
                path: "/a".into(),
                field: AmountField::Value,
            },
            InvalidParameterValue,
            vec!["c", "/a", "value", "overflow"],
        ),
        (
            Error::TimestampOutOfRange { unix_secs: -5 },
            InvalidParameterValue,
            vec!["-5", "2000", "2099"],
        ),
        (
            Error::InvalidRegex {
                pattern: "(".into(),
                reason: "unclosed group".into(),
            },
            InvalidParameterValue,
            vec!["(", "unclosed group"],
        ),
        (
            Error::InvalidPeriod {
                period: "yesterday".into(),
            },
            InvalidParameterValue,
            vec!["yesterday", "total", "last7Days", "YYMM"],
        ),
        (
            Error::TooManyRegistrations { max: 10_000 },
            InvalidParameterValue,
            vec!["10000"],
        ),
        (
            Error::UnknownClass {
                class: "shares".into(),
            },
            CounterNotRegistered,
            vec!["shares", "register"],
        ),
        (
            Error::NotRegistered {
                class: "shares".into(),
                path: "/x".into(),
            },
            CounterNotRegistered,
            vec!["shares", "/x", "not registered"],
        ),
        (
            Error::ForeignHandle,
            InvalidParameterValue,
            vec!["another engine"],
        ),
        (
            Error::Config("daily_retention".into()),
            InvalidParameterValue,
            vec!["daily_retention"],
        ),
        (
            Error::Random("no entropy".into()),
            GeneralServerError,
            vec!["no entropy"],
        ),
        (
            io_error(),
            GeneralServerError,
            vec!["writing the snapshot", "disk full"],
        ),
    ]
}

#[test]
fn every_variant_has_its_code_and_a_message_naming_the_fix() {
    for (error, code, words) in every_variant() {
        assert_eq!(error.code(), code, "{error:?}");
        let message = error.to_string();
        for word in words {
            assert!(
                message.contains(word),
                "{message:?} should mention {word:?}"
            );
        }
    }
}

#[test]
fn an_entry_error_keeps_the_inner_code_and_names_the_index() {
    for (inner, code, _) in every_variant() {
        let inner_text = inner.to_string();
        let error = Error::Entry {
            index: 7,
            source: Box::new(inner),
        };
        assert_eq!(error.code(), code);
        assert_eq!(error.to_string(), format!("entry 7: {inner_text}"));
        assert_eq!(error.root().to_string(), inner_text);
        assert_eq!(error.source().unwrap().to_string(), inner_text);
    }
}

#[test]
fn root_of_a_plain_error_is_itself_and_io_keeps_its_source() {
    let error = Error::EmptyBatch;
    assert!(matches!(error.root(), Error::EmptyBatch));
    assert_eq!(io_error().source().unwrap().to_string(), "disk full");
}

store_tests! {
    fn engine_errors_carry_the_table_codes(kind) {
        let engine = Store::on_clock(kind, &ManualClock::new(1_795_780_800));
        engine.register([("c", "/a")]).unwrap();
        let number = |r: tally::Result<()>| r.unwrap_err().code().number();
        assert_eq!(number(engine.increment("u", &[])), 400_002);
        assert_eq!(
            number(engine.increment("", &[Increment::new("c", "/a")])),
            400_006
        );
        assert_eq!(
            number(engine.increment("u", &[Increment::new("c", "/a/b/c")])),
            400_006
        );
        assert_eq!(
            number(engine.increment("u", &[Increment::new("c", "/b")])),
            409_011
        );
        assert_eq!(
            number(engine.increment("u", &[Increment::new("d", "/")])),
            409_011
        );
        assert_eq!(number(engine.register([("c", "x")])), 400_006);
        assert_eq!(
            engine
                .get("u", &[Selector::class("regex('(')")])
                .unwrap_err()
                .code()
                .number(),
            400_006
        );
        assert_eq!(
            number(Store::builder(kind).daily_retention(1).try_build().map(drop)),
            400_006
        );
    }
}
