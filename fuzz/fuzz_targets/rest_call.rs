//! `tally::rest::call` with an arbitrary method and arbitrary parameters:
//! it must never panic, always answer a well-formed envelope, and never
//! change the engine's state when it answers an error (nor on a read).
//!
//! The input drives an `Unstructured` reader through up to four calls on
//! a fresh engine (so a finding reproduces from its input alone, and
//! later calls see what earlier ones did). Each call's method is one of
//! the five or arbitrary text; each parameter's name is a known one or
//! arbitrary text, and its value is picked from values that reach deep
//! into the checks (registered and unregistered counters, integers near
//! the 64-bit limits, regexes, a live regToken, callbacks) or is
//! arbitrary text.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tally::{ManualClock, Subject, Tally};

const METHODS: [&str; 5] = [
    "accounts.registerCounters",
    "accounts.unregisterCounters",
    "accounts.getRegisteredCounters",
    "accounts.incrementCounters",
    "accounts.getCounters",
];
const NAMES: [&str; 9] = [
    "UID",
    "regToken",
    "counters",
    "format",
    "callback",
    "httpStatusCodes",
    "context",
    "apiKey",
    "counters",
];
const UIDS: [&str; 3] = ["u1", "u2", "u3"];

struct Fixture {
    engine: Tally,
    token: String,
}

fn fixture() -> Fixture {
    let engine = Tally::builder()
        .clock(ManualClock::new(1_795_780_800))
        .build()
        .unwrap();
    engine
        .register([
            ("shares", "/news"),
            ("shares", "/news/sport"),
            ("likes", "/"),
        ])
        .unwrap();
    let token = engine.issue_reg_token("u3").unwrap().to_string();
    Fixture { engine, token }
}

fn text(u: &mut Unstructured<'_>, choices: &[&str]) -> Result<String> {
    let i = u.choose_index(choices.len() + 1)?;
    Ok(match choices.get(i) {
        Some(choice) => (*choice).to_owned(),
        None => u.arbitrary()?,
    })
}

fn amount(u: &mut Unstructured<'_>) -> Result<Option<Value>> {
    let n: i64 = match u.choose_index(4)? {
        0 => i64::MAX - u.int_in_range(0..=3)?,
        1 => i64::MIN + u.int_in_range(0..=3)?,
        2 => u.int_in_range(-5..=5)?,
        _ => u.arbitrary()?,
    };
    Ok(match u.choose_index(7)? {
        0 => None,
        1 => Some(json!(n)),
        2 => Some(json!(n.to_string())),
        3 => Some(json!(n as f64 + 0.5)),
        4 => Some(Value::Null),
        5 => Some(json!(true)),
        _ => Some(json!(u.arbitrary::<String>()?)),
    })
}

fn counters(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 5)? {
        return u.arbitrary();
    }
    let mut entries = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let mut entry = serde_json::Map::new();
        if !u.ratio(1, 10)? {
            let class = text(u, &["shares", "likes", "nope", "regex('.*')", "regex('(')"])?;
            entry.insert("class".into(), json!(class));
        }
        if !u.ratio(1, 10)? {
            let paths = [
                "/",
                "/news",
                "/news/sport",
                "/x",
                "//",
                "/a/b/c",
                "regex('^/n')",
            ];
            entry.insert("path".into(), json!(text(u, &paths)?));
        }
        for field in ["count", "value"] {
            if let Some(v) = amount(u)? {
                entry.insert(field.into(), v);
            }
        }
        if u.ratio(1, 3)? {
            let periods = [
                "total",
                "last7Days",
                "2611",
                "261127",
                "regex('^26')",
                "regex('[')",
            ];
            entry.insert("period".into(), json!(text(u, &periods)?));
        }
        entries.push(Value::Object(entry));
    }
    Ok(Value::Array(entries).to_string())
}

/// What a call could change, for the subjects it names and a fixed few.
fn observe(engine: &Tally, subjects: &[String]) -> String {
    let mut out = format!("{:?} {}\n", engine.registered(), engine.subject_count());
    for uid in UIDS
        .iter()
        .copied()
        .chain(subjects.iter().map(String::as_str))
    {
        out += &format!(
            "{uid:?}: {:?}\n",
            engine.get(uid, &[]).map_err(|e| e.to_string())
        );
    }
    for token in subjects {
        let rows = engine.get(Subject::RegToken(token), &[]);
        out += &format!("token {token:?}: {:?}\n", rows.map_err(|e| e.to_string()));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let mut u = Unstructured::new(data);
    for _ in 0..4 {
        if u.is_empty() || one_call(&fixture, &mut u).is_err() {
            break;
        }
    }
});

/// Reads one call from `u`, makes it, and checks the answer.
fn one_call(fixture: &Fixture, u: &mut Unstructured<'_>) -> Result<()> {
    let engine = &fixture.engine;
    let method = text(u, &METHODS)?;
    let mut params: Vec<(String, String)> = Vec::new();
    for _ in 0..u.int_in_range(0..=8)? {
        let name = text(u, &NAMES)?;
        let value = match name.as_str() {
            "UID" => text(u, &["u1", "u2", "", "u\u{1}"])?,
            "regToken" => text(u, &[fixture.token.as_str(), "0000"])?,
            "counters" => counters(u)?,
            "format" => text(u, &["json", "jsonp"])?,
            "callback" => text(u, &["cb", "a.b$", "alert(1)//"])?,
            "httpStatusCodes" => text(u, &["true", "false", "1"])?,
            _ => u.arbitrary()?,
        };
        params.push((name, value));
    }
    let subjects: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "UID" || k == "regToken")
        .map(|(_, v)| v.clone())
        .collect();
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    let before = observe(engine, &subjects);
    let resp = tally::rest::call(engine, &method, &pairs);

    let json = if resp.content_type.starts_with("application/javascript") {
        let open = resp.body.find('(').expect("a JSONP body opens a call");
        assert!(resp.body.ends_with(");"), "{}", resp.body);
        &resp.body[open + 1..resp.body.len() - 2]
    } else {
        assert!(
            resp.content_type.starts_with("application/json"),
            "{resp:?}"
        );
        resp.body.as_str()
    };
    let body: Value = serde_json::from_str(json).expect("the body is JSON");
    let code = body["errorCode"].as_u64().expect("an errorCode");
    assert_eq!(
        body["statusCode"].as_u64(),
        Some(if code == 0 { 200 } else { code / 1000 })
    );
    assert!([200, 400, 403, 409, 500].contains(&resp.status), "{resp:?}");
    let read_only = method == "accounts.getCounters" || method == "accounts.getRegisteredCounters";
    if code != 0 || read_only {
        assert_eq!(
            observe(engine, &subjects),
            before,
            "{method} {params:?} -> {}",
            resp.body
        );
    }
    Ok(())
}
