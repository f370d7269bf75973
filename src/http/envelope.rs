//! Platform envelopes for the errors the HTTP layer raises itself, before a
//! request reaches [`rest::call`](crate::rest::call): authorization, an
//! unreadable body, a wrong HTTP method.
//!
//! They follow the envelope rules of [`rest`](crate::rest) with whatever
//! parameters could be read: `format=jsonp` with a valid `callback` wraps
//! the body, `httpStatusCodes=true` sets the HTTP status, `context` is
//! echoed. A bad envelope parameter falls back to its default here (plain
//! JSON, status 200, no context): the error being reported is the one that
//! stopped the request.

use serde::Serialize;

use crate::calendar::format_iso_millis;
use crate::error::Error;
use crate::rest::{JAVASCRIPT_CONTENT_TYPE, JSON_CONTENT_TYPE, MAX_CALLBACK_BYTES, Response};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    call_id: &'a str,
    error_code: u32,
    error_message: &'static str,
    error_details: String,
    status_code: u16,
    status_reason: &'static str,
    time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a str>,
}

/// The envelope for `error`, rendered with the request's readable `params`.
pub(super) fn error_response(now_millis: i64, params: &[(&str, &str)], error: &Error) -> Response {
    let code = error.code();
    let status_code = code.http_status();
    let call_id = call_id();
    let time = format_iso_millis(now_millis);
    let body = Body {
        call_id: &call_id,
        error_code: code.number(),
        error_message: code.message(),
        error_details: error.to_string(),
        status_code,
        status_reason: reason_phrase(status_code),
        time: &time,
        context: single(params, "context"),
    };
    // Plain strings and numbers: serializing cannot fail.
    let json = serde_json::to_string(&body).unwrap_or_default();
    let status = match single(params, "httpStatusCodes") {
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => status_code,
        _ => 200,
    };
    let callback = (single(params, "format") == Some("jsonp"))
        .then(|| single(params, "callback"))
        .flatten()
        .filter(|cb| is_callback(cb));
    match callback {
        None => Response {
            status,
            content_type: JSON_CONTENT_TYPE.to_owned(),
            body: json,
        },
        Some(cb) => Response {
            status,
            content_type: JAVASCRIPT_CONTENT_TYPE.to_owned(),
            body: format!(
                "{cb}({});",
                json.replace('\u{2028}', "\\u2028")
                    .replace('\u{2029}', "\\u2029")
            ),
        },
    }
}

/// The value of a parameter, non-empty, read as the REST layer reads it:
/// a repeat of the same value is that value; different values are a
/// conflict, and so the default here (`None`).
fn single<'a>(params: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    let mut found = params.iter().filter(|(k, _)| *k == name).map(|(_, v)| *v);
    let first = found.next()?;
    (!first.is_empty() && found.all(|v| v == first)).then_some(first)
}

/// The JSONP callback rule of the REST layer: a JavaScript identifier path
/// of ASCII letters, digits, `_` and `$`, no name starting with a digit.
fn is_callback(cb: &str) -> bool {
    cb.len() <= MAX_CALLBACK_BYTES
        && cb.split('.').all(|name| {
            name.bytes().next().is_some_and(|b| !b.is_ascii_digit())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
        })
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        409 => "Conflict",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// 32 lowercase hex digits from the OS's random source (a `callId`).
fn call_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Still distinct per call within the process.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&n.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `text` cut to at most 64 bytes on a character boundary, with `…` when
/// cut: the REST layer's rule, shared.
pub(super) use crate::rest::quote_limited as limited;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Tally;
    use serde_json::Value;

    fn engine() -> Tally {
        Tally::builder()
            .clock(crate::clock::ManualClock::new(1_795_780_800))
            .build()
            .unwrap()
    }

    #[test]
    fn errors_follow_the_envelope_rules() {
        let engine = engine();
        let err = Error::DuplicateNonce;
        let resp = error_response(engine.now_millis(), &[("context", "c")], &err);
        assert_eq!(
            (resp.status, resp.content_type.as_str()),
            (200, JSON_CONTENT_TYPE)
        );
        let body: Value = serde_json::from_str(&resp.body).unwrap();
        assert_eq!(body["errorCode"], 403_004);
        assert_eq!(body["statusCode"], 403);
        assert_eq!(body["statusReason"], "Forbidden");
        assert_eq!(body["context"], "c");
        assert_eq!(body["time"], "2026-11-27T12:00:00.000Z");
        assert_eq!(body["callId"].as_str().unwrap().len(), 32);

        let params = [
            ("format", "jsonp"),
            ("callback", "a.b$"),
            ("httpStatusCodes", "TRUE"),
        ];
        let resp = error_response(engine.now_millis(), &params, &err);
        assert_eq!(resp.status, 403);
        assert!(resp.body.starts_with("a.b$({") && resp.body.ends_with("});"));

        for bad in ["alert(1)//", "1a", "a..b", "", "é"] {
            let params = [("format", "jsonp"), ("callback", bad)];
            let resp = error_response(engine.now_millis(), &params, &err);
            assert_eq!(resp.content_type, JSON_CONTENT_TYPE, "{bad}");
        }
    }

    /// A parameter repeated with the same value (an SDK adding `format=json`
    /// to a query that has it, or the query and the body both carrying it)
    /// is that value for `rest::call`; these envelopes used to ignore it and
    /// answer plain JSON with HTTP 200.
    #[test]
    fn identical_repeats_are_that_value_as_in_the_rest_layer() {
        let engine = engine();
        let err = Error::DuplicateNonce;
        let params = [
            ("format", "jsonp"),
            ("callback", "cb"),
            ("httpStatusCodes", "true"),
            ("context", "c"),
            ("format", "jsonp"),
            ("callback", "cb"),
            ("httpStatusCodes", "true"),
            ("context", "c"),
        ];
        let resp = error_response(engine.now_millis(), &params, &err);
        assert_eq!(resp.status, 403);
        assert_eq!(resp.content_type, JAVASCRIPT_CONTENT_TYPE);
        let json = resp
            .body
            .strip_prefix("cb(")
            .and_then(|rest| rest.strip_suffix(");"))
            .unwrap_or_else(|| panic!("not cb(…);: {}", resp.body));
        let body: Value = serde_json::from_str(json).unwrap();
        assert_eq!(body["context"], "c");

        // The same parameters through the REST layer: the same envelope.
        let rest = crate::rest::call(&engine, "accounts.noSuchMethod", &params);
        assert_eq!(
            (rest.status, rest.content_type.as_str()),
            (400, JAVASCRIPT_CONTENT_TYPE)
        );

        // Different values still fall back to the defaults.
        let params = [("httpStatusCodes", "true"), ("httpStatusCodes", "false")];
        let resp = error_response(engine.now_millis(), &params, &err);
        assert_eq!(resp.status, 200);
    }

    #[test]
    fn quotes_are_cut_on_char_boundaries() {
        assert_eq!(limited("abc"), "abc");
        let cut = limited(&"é".repeat(100));
        assert!(cut.len() <= 64 + '…'.len_utf8() && cut.ends_with('…'));
    }
}
