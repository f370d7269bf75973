//! The REST-compatible layer: a method name and the request's
//! string parameters in, the HTTP status, content type and body the
//! platform would send out.
//!
//! Methods: `accounts.registerCounters`, `accounts.unregisterCounters`,
//! `accounts.getRegisteredCounters`, `accounts.incrementCounters` and
//! `accounts.getCounters`. Every body carries `callId`, `errorCode`,
//! `statusCode`, `statusReason` and `time`; errors add `errorMessage` and
//! `errorDetails`; `getCounters` and `getRegisteredCounters` add `counters`.
//!
//! ```
//! use tally::{ManualClock, Tally};
//! use serde_json::Value;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Tally::builder().clock(ManualClock::new(1_795_780_800)).build()?;
//! let counters = r#"[{"class":"shares","path":"/news"}]"#;
//! tally::rest::call(&engine, "accounts.registerCounters", &[("counters", counters)]);
//!
//! // Clients send everything as strings, `count` included.
//! let entries = r#"[{"class":"shares","path":"/news","count":"2"}]"#;
//! let resp = tally::rest::call(
//!     &engine,
//!     "accounts.incrementCounters",
//!     &[("UID", "uid-1"), ("counters", entries), ("apiKey", "ignored")],
//! );
//! assert_eq!((resp.status, resp.content_type.as_str()), (200, "application/json; charset=utf-8"));
//! let body: Value = serde_json::from_str(&resp.body)?;
//! assert_eq!(body["errorCode"], 0);
//! assert_eq!(body["time"], "2026-11-27T12:00:00.000Z");
//!
//! let resp = tally::rest::call(
//!     &engine,
//!     "accounts.getCounters",
//!     &[("UID", "uid-1"), ("format", "jsonp"), ("callback", "cb")],
//! );
//! assert!(resp.body.starts_with("cb(") && resp.body.ends_with(");"));
//! let body: Value = serde_json::from_str(&resp.body[3..resp.body.len() - 2])?;
//! assert_eq!(body["counters"][1]["path"], "/news");
//! assert_eq!(body["counters"][1]["count"], 2);
//!
//! // Errors live in the body; the HTTP status is 200 unless asked otherwise.
//! let resp = tally::rest::call(
//!     &engine,
//!     "accounts.incrementCounters",
//!     &[("UID", "uid-1"), ("counters", "[]"), ("httpStatusCodes", "true")],
//! );
//! assert_eq!(resp.status, 400);
//! let body: Value = serde_json::from_str(&resp.body)?;
//! assert_eq!(body["errorCode"], 400002);
//! # Ok(())
//! # }
//! ```
//!
//! ## Decisions where the specification is silent
//!
//! - Parameter names and method names are case-sensitive; values of
//!   `format` must be exactly `json` or `jsonp`; `httpStatusCodes` accepts
//!   `true`/`false` in any case, and `1`/`0`.
//! - An empty parameter counts as absent (`UID=` is a missing UID, `format=`
//!   is JSON, `context=` is not echoed).
//! - A parameter the call uses, given twice with different values, is
//!   400006; repeated with the same value, it is that value (the HTTP
//!   server merges the query and a form body, and an SDK may put
//!   `format=json` in both). `callback` is used only with `format=jsonp`;
//!   `UID` and `regToken` are not used by the registration methods.
//! - Checks run in this order, the first failure answering: `format` and
//!   `callback`, `httpStatusCodes`, `context`, the method name, the
//!   subject (missing or both), the shape of `counters` (valid JSON, an
//!   array, every element an object: 400004; for incrementCounters, at
//!   most `max_batch` elements; for getCounters, at most `max_selectors`,
//!   counted before any element is parsed), the subject's value (UID syntax,
//!   regToken), and then the entries in order: the error names the first
//!   bad entry, whether its fields are bad (missing, of the
//!   wrong type) or the engine rejects it (class or path syntax,
//!   registration, overflow of the additions up to it). Nothing is
//!   applied unless all pass.
//! - A bad `format`, `callback` or `httpStatusCodes` answers plain JSON; a
//!   bad `httpStatusCodes` answers HTTP 200. Errors of a valid JSONP request
//!   are wrapped in the callback like successes.
//! - JSON `null` in an entry field counts as absent: the default for
//!   `count` (1) and `value` (0), and a missing `class` or `path` (400002).
//!   Unknown entry fields are ignored.
//! - `count` and `value` are JSON integers or strings holding a decimal
//!   integer (optional sign, no spaces), in the signed 64-bit range; `5.0`,
//!   `"5.0"`, `""` and `true` are 400006, and so is a valid JSON number
//!   beyond even `f64`, such as `1e400` (the field is named; where an
//!   array or an object must be, it is 400004 like any other shape error).
//! - `counters` of `[]` is 400002 for the methods that need entries; for
//!   `getCounters` it reads everything, as an absent `counters` does.
//! - A missing subject's `errorDetails` names `UID`.
//! - `callId`s are unique within a process and random across processes.
//!   `time` is the engine clock when the response is built.
//! - Body fields come in a fixed order, that of the platform's documented
//!   example with an error's message and details after its code:
//!   `statusCode`, `errorCode`, `errorMessage`, `errorDetails`,
//!   `statusReason`, `callId`, `time`, `context`, `counters`.
//! - JSONP bodies escape U+2028 and U+2029, which end lines in older
//!   JavaScript; the JSON they carry is unchanged.

mod params;
#[cfg(feature = "http")]
pub(crate) use params::quote_limited;
mod request;
mod response;

#[cfg(feature = "redis")]
mod on_cluster;
#[cfg(feature = "redis")]
pub use on_cluster::call_cluster;

use crate::engine::Tally;
use crate::error::Result;
use params::Params;
use request::{Request, as_increments};
use response::{Data, Envelope};

/// The content type of a JSON response.
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";
/// The content type of a JSONP response, exactly as the platform sends it
/// (the body is UTF-8, as every response's is).
pub const JAVASCRIPT_CONTENT_TYPE: &str = "application/javascript";
/// The longest accepted JSONP `callback`, in bytes.
pub const MAX_CALLBACK_BYTES: usize = 128;

/// The methods [`call`] answers.
pub const METHODS: [&str; 5] = [
    "accounts.registerCounters",
    "accounts.unregisterCounters",
    "accounts.getRegisteredCounters",
    "accounts.incrementCounters",
    "accounts.getCounters",
];

/// What the platform would send back: HTTP status, content type and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status: 200 unless `httpStatusCodes=true`, then the body's `statusCode`.
    pub status: u16,
    /// `application/json; charset=utf-8`, or `application/javascript` for JSONP.
    pub content_type: String,
    /// The JSON body, or `callback(<json>);` for JSONP.
    pub body: String,
}

/// Answers one request: `method` (e.g. `accounts.incrementCounters`) with
/// its string parameters as the platform receives them.
///
/// Never panics on any input; every problem is an error response. See the
/// [module docs](self) for an example and the rules.
pub fn call(engine: &Tally, method: &str, params: &[(&str, &str)]) -> Response {
    let params = Params::new(params);
    let (envelope, envelope_error) = Envelope::parse(&params);
    let outcome = match envelope_error {
        Some(err) => Err(err),
        None => Request::parse(method, &params, engine.config()).and_then(|r| execute(engine, r)),
    };
    envelope.respond(engine.now_millis(), outcome)
}

/// Runs a parsed request on the embedded engine.
fn execute(engine: &Tally, request: Request<'_>) -> Result<Data> {
    match request {
        Request::Register(keys) => engine.register(keys).map(|()| Data::Nothing),
        Request::Unregister(keys) => engine.unregister(keys).map(|()| Data::Nothing),
        Request::Registered => Ok(Data::Registered(engine.registered())),
        Request::Increment { subject, entries } => engine
            .increment(subject, &as_increments(&entries))
            .map(|()| Data::Nothing),
        Request::BadIncrement {
            subject,
            before,
            error,
        } => {
            // The engine's checks of the subject and of the entries
            // before come first: an earlier entry it rejects is the first
            // bad one.
            if let Some(before) = &before {
                engine.check_increment(subject, &as_increments(before))?;
            }
            Err(error)
        }
        Request::Get { subject, selectors } => Ok(Data::Rows(engine.get(subject, &selectors)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use serde_json::Value;

    fn engine() -> Tally {
        Tally::builder()
            .clock(ManualClock::new(1_795_780_800))
            .build()
            .unwrap()
    }

    fn body(resp: &Response) -> Value {
        serde_json::from_str(&resp.body).unwrap()
    }

    #[test]
    fn every_method_answers() {
        let engine = engine();
        for method in METHODS {
            let resp = call(&engine, method, &[]);
            assert_eq!(resp.status, 200, "{method}");
            assert!(body(&resp)["errorCode"].is_number(), "{method}");
        }
    }

    #[test]
    fn unknown_method_names_it() {
        let resp = call(&engine(), "accounts.nope", &[("UID", "u")]);
        let b = body(&resp);
        assert_eq!(b["errorCode"], 400_006);
        assert!(
            b["errorDetails"]
                .as_str()
                .unwrap()
                .contains("accounts.nope")
        );
    }

    #[test]
    fn body_fields_are_in_the_documented_order() {
        let in_order = |resp: &Response, keys: &[&str]| {
            let positions: Vec<usize> = keys
                .iter()
                .map(|k| resp.body.find(&format!("\"{k}\"")).unwrap())
                .collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "{}", resp.body);
        };
        let resp = call(
            &engine(),
            "accounts.getCounters",
            &[("UID", "u"), ("context", "c")],
        );
        let keys = [
            "statusCode",
            "errorCode",
            "statusReason",
            "callId",
            "time",
            "context",
            "counters",
        ];
        in_order(&resp, &keys);
        let resp = call(&engine(), "accounts.getCounters", &[]);
        let keys = [
            "statusCode",
            "errorCode",
            "errorMessage",
            "errorDetails",
            "statusReason",
            "callId",
            "time",
        ];
        in_order(&resp, &keys);
    }
}
