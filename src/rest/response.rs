//! The response envelope: output format, HTTP status mode, `context`, the
//! body fields of the platform, and `callId`s.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::params::{Params, quote_limited};
use super::{JAVASCRIPT_CONTENT_TYPE, JSON_CONTENT_TYPE, MAX_CALLBACK_BYTES, Response};
use crate::calendar::format_iso_millis;
use crate::counter::CounterKey;
use crate::error::{Error, ErrorCode, Result};
use crate::query::CounterRow;

/// What a method answers besides the common fields.
pub(super) enum Data {
    /// Nothing more.
    Nothing,
    /// `counters`: registered `(class, path)` pairs.
    Registered(Vec<CounterKey>),
    /// `counters`: rows read.
    Rows(Vec<CounterRow>),
}

/// The `counters` field of a body.
#[derive(Serialize)]
#[serde(untagged)]
enum Counters {
    Registered(Vec<CounterKey>),
    Rows(Vec<CounterRow>),
}

/// A response body, fields in the order of the platform's documented
/// example (`statusCode`, `errorCode`, `statusReason`, `callId`, `time`;
/// the seed page), an error's message and details after its code, the
/// method's data last.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    status_code: u16,
    error_code: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_details: Option<String>,
    status_reason: &'static str,
    call_id: &'a str,
    time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    counters: Option<Counters>,
}

/// How to wrap and report a response: parsed from `format`, `callback`,
/// `httpStatusCodes` and `context`, which every method uses.
pub(super) struct Envelope<'a> {
    jsonp_callback: Option<&'a str>,
    http_status_codes: bool,
    context: Option<&'a str>,
}

impl<'a> Envelope<'a> {
    /// The envelope, and the first error among its parameters, if any.
    /// A bad parameter falls back to its default (plain JSON, HTTP status
    /// 200, no context), so an unsafe callback is never echoed.
    pub(super) fn parse(params: &Params<'a>) -> (Self, Option<Error>) {
        let mut first_error = None;
        let jsonp_callback = keep(&mut first_error, jsonp_callback(params), None);
        let http_status_codes = keep(&mut first_error, http_status_codes(params), false);
        let context = keep(&mut first_error, params.get("context"), None);
        let envelope = Envelope {
            jsonp_callback,
            http_status_codes,
            context,
        };
        (envelope, first_error)
    }

    /// The response for a method's outcome.
    pub(super) fn respond(&self, now_millis: i64, outcome: Result<Data>) -> Response {
        let (code, details, data) = match outcome {
            Ok(data) => (ErrorCode::Ok, None, data),
            Err(err) => (err.code(), Some(err.to_string()), Data::Nothing),
        };
        let status_code = code.http_status();
        let call_id = next_call_id();
        let time = format_iso_millis(now_millis);
        let body = Body {
            call_id: &call_id,
            error_code: code.number(),
            error_message: details.is_some().then(|| code.message()),
            error_details: details,
            status_code,
            status_reason: reason_phrase(status_code),
            time: &time,
            context: self.context,
            counters: match data {
                Data::Nothing => None,
                Data::Registered(keys) => Some(Counters::Registered(keys)),
                Data::Rows(rows) => Some(Counters::Rows(rows)),
            },
        };
        let (status_code, json) = match serde_json::to_string(&body) {
            Ok(json) => (status_code, json),
            // Unreachable for these types; answer 500001 rather than panic.
            Err(_) => (500, fallback_body(&call_id, &time)),
        };
        let status = if self.http_status_codes {
            status_code
        } else {
            200
        };
        match self.jsonp_callback {
            None => Response {
                status,
                content_type: JSON_CONTENT_TYPE.to_owned(),
                body: json,
            },
            Some(callback) => Response {
                status,
                content_type: JAVASCRIPT_CONTENT_TYPE.to_owned(),
                body: format!("{callback}({});", escape_line_separators(&json)),
            },
        }
    }
}

/// `Ok` values pass; the first error is kept and `fallback` used instead.
fn keep<T>(first_error: &mut Option<Error>, result: Result<T>, fallback: T) -> T {
    result.unwrap_or_else(|err| {
        first_error.get_or_insert(err);
        fallback
    })
}

/// `Some(callback)` for `format=jsonp`, `None` for JSON.
fn jsonp_callback<'a>(params: &Params<'a>) -> Result<Option<&'a str>> {
    match params.get("format")? {
        None | Some("json") => Ok(None),
        Some("jsonp") => {
            let callback = params
                .get("callback")?
                .ok_or_else(|| Error::MissingParameter {
                    name: "callback".to_owned(),
                })?;
            validate_callback(callback)?;
            Ok(Some(callback))
        }
        Some(other) => Err(Error::InvalidValue {
            name: "format".to_owned(),
            reason: format!("expected json or jsonp, found {:?}", quote_limited(other)),
        }),
    }
}

/// `httpStatusCodes`: true/false or 1/0, in any case; false when absent.
fn http_status_codes(params: &Params<'_>) -> Result<bool> {
    let Some(text) = params.get("httpStatusCodes")? else {
        return Ok(false);
    };
    if text.eq_ignore_ascii_case("true") || text == "1" {
        Ok(true)
    } else if text.eq_ignore_ascii_case("false") || text == "0" {
        Ok(false)
    } else {
        Err(Error::InvalidValue {
            name: "httpStatusCodes".to_owned(),
            reason: format!("expected true or false, found {:?}", quote_limited(text)),
        })
    }
}

/// Checks a JSONP callback: a JavaScript identifier path such as
/// `jQuery123.cb_1$`. The reason never quotes the callback.
pub(super) fn validate_callback(callback: &str) -> Result<()> {
    let invalid = |reason: &str| Error::InvalidValue {
        name: "callback".to_owned(),
        reason: reason.to_owned(),
    };
    if callback.len() > MAX_CALLBACK_BYTES {
        return Err(invalid("a callback must be at most 128 bytes"));
    }
    for segment in callback.split('.') {
        let Some(first) = segment.bytes().next() else {
            return Err(invalid(
                "a callback is names separated by single dots, none of them empty",
            ));
        };
        if first.is_ascii_digit() {
            return Err(invalid("a callback name must not start with a digit"));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
        {
            return Err(invalid(
                "a callback may contain only ASCII letters, digits, `_`, `$` and `.`",
            ));
        }
    }
    Ok(())
}

/// U+2028 and U+2029 are valid inside JSON strings but end lines in older
/// JavaScript; escape them in JSONP (the JSON value is unchanged).
fn escape_line_separators(json: &str) -> String {
    json.replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// The standard reason phrase of an HTTP status.
pub(super) fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn fallback_body(call_id: &str, time: &str) -> String {
    let code = ErrorCode::GeneralServerError;
    format!(
        r#"{{"callId":"{call_id}","errorCode":{},"errorMessage":"{}","errorDetails":"the response could not be encoded","statusCode":{},"statusReason":"{}","time":"{time}"}}"#,
        code.number(),
        code.message(),
        code.http_status(),
        reason_phrase(code.http_status()),
    )
}

/// The splitmix64 finalizer: a bijection on `u64`.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Two process-wide seeds: from the OS, or (if it fails) the time and the
/// address of a stack variable, which still keeps ids unique in-process.
fn seeds() -> (u64, u64) {
    static SEEDS: OnceLock<(u64, u64)> = OnceLock::new();
    *SEEDS.get_or_init(|| match (getrandom::u64(), getrandom::u64()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let local = 0u8;
            let address = std::ptr::from_ref(&local) as usize as u64;
            (mix(nanos), mix(address ^ u64::from(std::process::id())))
        }
    })
}

/// A fresh `callId`: 32 lowercase hex digits, unique within the process
/// (each half is a bijection of a counter) and unpredictable across processes.
pub(super) fn next_call_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let (a, b) = seeds();
    format!("{:016x}{:016x}", mix(a ^ n), mix(b.wrapping_add(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_are_identifier_paths() {
        for good in [
            "cb",
            "jQuery123_456",
            "a.b.c",
            "$",
            "_x$.y9",
            &"a".repeat(128),
        ] {
            assert!(validate_callback(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "alert(1)//",
            "a b",
            "<script>",
            "1abc",
            "a..b",
            ".a",
            "a.",
            "a.1b",
            "a-b",
            "é",
            "cb;x",
            &"a".repeat(129),
        ] {
            let err = validate_callback(bad).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidParameterValue, "{bad}");
        }
    }

    #[test]
    fn call_ids_are_32_lowercase_hex_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| next_call_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        }
    }

    #[test]
    fn reasons_and_line_separators() {
        assert_eq!(reason_phrase(ErrorCode::Ok.http_status()), "OK");
        assert_eq!(
            reason_phrase(ErrorCode::CounterNotRegistered.http_status()),
            "Conflict"
        );
        assert_eq!(
            reason_phrase(ErrorCode::GeneralServerError.http_status()),
            "Internal Server Error"
        );
        assert_eq!(escape_line_separators("\"a\u{2028}b\""), "\"a\\u2028b\"");
        let body = fallback_body("00", "t");
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["errorCode"], 500_001);
    }
}
