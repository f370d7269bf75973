//! Hostile input through every door of the HTTP server: each bad request
//! of the table gets its exact error code (and HTTP status), and changes
//! no counter, no registration and no subject.

mod http_support;

use http_support::{
    NOW, Server, enc, engine, form, pairs, raw, raw_get, raw_post, raw_request, signed,
};
use tally::http::{Auth, Options, PlainSecrets};
use tally::{Increment, Tally};

const SECRET: &str = "c2VjcmV0LWJ5dGVz";
const PUBLIC: &str = "https://accounts.us1.gigya.com";
const INC: &str = "/accounts.incrementCounters";
const GET: &str = "/accounts.getCounters";
const REG: &str = "/accounts.registerCounters";
const UNREG: &str = "/accounts.unregisterCounters";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Door {
    Open,
    Auth,
}

struct Case {
    name: String,
    door: Door,
    request: Vec<u8>,
    code: u32,
    status: u16,
}

/// Everything a bad request could change, as comparable text.
fn state(engine: &Tally) -> String {
    let mut out = format!("{:?}\n{}\n", engine.registered(), engine.subject_count());
    for uid in ["u1", "u2", "fresh"] {
        out += &format!("{uid}: {:?}\n", engine.get(uid, &[]).unwrap());
    }
    out
}

fn seeded() -> Tally {
    let engine = engine();
    engine
        .register([("shares", "/news"), ("shares", "/news/sport")])
        .unwrap();
    let news = Increment::new("shares", "/news").count(3).value(7);
    engine.increment("u1", &[news]).unwrap();
    engine
        .increment("u2", &[Increment::new("shares", "/").value(-2)])
        .unwrap();
    engine
}

fn get(path: &str, params: &[(&str, &str)]) -> Vec<u8> {
    raw_get(format!("{path}?{}", form(params)).as_bytes())
}

fn post(path: &str, params: &[(&str, &str)]) -> Vec<u8> {
    raw_post(path.as_bytes(), form(params).as_bytes())
}

fn entries(json: &str) -> Vec<u8> {
    post(INC, &[("UID", "u1"), ("counters", json)])
}

fn signed_post(params: &[(&str, &str)], timestamp: &str, nonce: &str) -> Vec<(String, String)> {
    signed(
        "POST",
        &format!("{PUBLIC}{INC}"),
        params,
        SECRET,
        timestamp,
        nonce,
    )
}

fn owned_post(params: &[(String, String)]) -> Vec<u8> {
    post(INC, &pairs(params))
}

/// The table: name, door, request bytes, expected `errorCode`, expected HTTP status.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: &str, door: Door, request: Vec<u8>, code: u32, status: u16| {
        cases.push(Case { name: name.to_owned(), door, request, code, status });
    };
    use Door::{Auth, Open};
    let one = r#"[{"class":"shares","path":"/news"}]"#;

    // Missing and duplicate parameters.
    add("no UID", Open, post(INC, &[("counters", one)]), 400_002, 200);
    add("no counters", Open, post(INC, &[("UID", "u1")]), 400_002, 200);
    add("empty counters", Open, entries("[]"), 400_002, 200);
    add("empty UID", Open, post(INC, &[("UID", ""), ("counters", one)]), 400_002, 200);
    add("UID twice", Open, post(INC, &[("UID", "u1"), ("UID", "u2"), ("counters", one)]), 400_006, 200);
    // (A repeat of the same value is that value; different values conflict.)
    let other = r#"[{"class":"shares","path":"/news/sport"}]"#;
    add("counters twice", Open, post(INC, &[("UID", "u1"), ("counters", one), ("counters", other)]), 400_006, 200);
    let target = format!("{INC}?counters={}", enc(one));
    add("counters in query and body", Open, raw_post(target.as_bytes(), form(&[("UID", "u1"), ("counters", other)]).as_bytes()), 400_006, 200);
    add("UID and regToken", Open, post(INC, &[("UID", "u1"), ("regToken", "t"), ("counters", one)]), 400_006, 200);
    add("unknown regToken", Open, post(INC, &[("regToken", "0123456789abcdef"), ("counters", one)]), 400_006, 200);
    add("entry without class", Open, entries(r#"[{"path":"/news"}]"#), 400_002, 200);
    add("entry without path", Open, entries(r#"[{"class":"shares"}]"#), 400_002, 200);
    add("register without counters", Open, post(REG, &[]), 400_002, 200);
    add("unregister without counters", Open, post(UNREG, &[("counters", "[]")]), 400_002, 200);
    add("format twice", Open, post(GET, &[("UID", "u1"), ("format", "json"), ("format", "jsonp"), ("callback", "cb")]), 400_006, 200);

    // Wrong types and malformed JSON.
    add("counters not JSON", Open, entries("[{class:shares}]"), 400_004, 200);
    add("counters an object", Open, entries(r#"{"class":"shares","path":"/"}"#), 400_004, 200);
    add("counters a string", Open, entries(r#""shares""#), 400_004, 200);
    add("entry a number", Open, entries(r#"[{"class":"shares","path":"/"},7]"#), 400_004, 200);
    add("entry an array", Open, entries(r#"[["shares","/"]]"#), 400_004, 200);
    add("count a fraction", Open, entries(r#"[{"class":"shares","path":"/news","count":1.5}]"#), 400_006, 200);
    add("count a boolean", Open, entries(r#"[{"class":"shares","path":"/news","count":true}]"#), 400_006, 200);
    add("count an object", Open, entries(r#"[{"class":"shares","path":"/news","count":{}}]"#), 400_006, 200);
    add("value with letters", Open, entries(r#"[{"class":"shares","path":"/news","value":"12abc"}]"#), 400_006, 200);
    add("class a number", Open, entries(r#"[{"class":7,"path":"/news"}]"#), 400_006, 200);
    add("path a number", Open, entries(r#"[{"class":"shares","path":7}]"#), 400_006, 200);
    add("count beyond i64", Open, entries(r#"[{"class":"shares","path":"/news","count":"9223372036854775808"}]"#), 400_006, 200);
    add("count 1e400", Open, entries(r#"[{"class":"shares","path":"/news","count":1e400}]"#), 400_006, 200);
    add("period a number", Open, post(GET, &[("UID", "u1"), ("counters", r#"[{"class":"shares","period":2611}]"#)]), 400_006, 200);
    add("bad percent escape", Open, raw_post(INC.as_bytes(), b"UID=u1&counters=%zz%5B"), 400_004, 200);

    // Bad names, paths and subjects.
    add("unregistered path", Open, entries(r#"[{"class":"shares","path":"/sport"}]"#), 409_011, 200);
    add("unknown class", Open, entries(r#"[{"class":"likes","path":"/"}]"#), 409_011, 200);
    add("second entry bad", Open, entries(r#"[{"class":"shares","path":"/news"},{"class":"shares","path":"/x"}]"#), 409_011, 200);
    add("path too deep", Open, entries(r#"[{"class":"shares","path":"/news/sport/football"}]"#), 400_006, 200);
    add("empty segment", Open, entries(r#"[{"class":"shares","path":"//news"}]"#), 400_006, 200);
    add("path without slash", Open, entries(r#"[{"class":"shares","path":"news"}]"#), 400_006, 200);
    add("control character in path", Open, entries("[{\"class\":\"shares\",\"path\":\"/a\\u0000\"}]"), 400_006, 200);
    add("class with a space", Open, post(REG, &[("counters", r#"[{"class":"a b","path":"/"}]"#)]), 400_006, 200);
    add("register batch with one bad pair", Open, post(REG, &[("counters", r#"[{"class":"likes","path":"/a"},{"class":"likes","path":"/a/b/c"}]"#)]), 400_006, 200);
    add("control character in UID", Open, post(INC, &[("UID", "u\u{1}"), ("counters", one)]), 400_006, 200);

    // Huge strings and batches.
    let long_uid = "u".repeat(300);
    add("300-byte UID", Open, post(INC, &[("UID", &long_uid), ("counters", one)]), 400_006, 200);
    add("101-byte class", Open, entries(&format!(r#"[{{"class":"{}","path":"/"}}]"#, "c".repeat(101))), 400_006, 200);
    add("600-byte path", Open, entries(&format!(r#"[{{"class":"shares","path":"/{}"}}]"#, "p".repeat(600))), 400_006, 200);
    let batch = vec![r#"{"class":"shares","path":"/news"}"#; 10_000].join(",");
    add("10,000-entry increment", Open, entries(&format!("[{batch}]")), 400_006, 200);
    let regs: Vec<String> = (0..10_000).map(|i| format!(r#"{{"class":"bulk","path":"/p{i}"}}"#)).collect();
    add("10,000 registrations", Open, post(REG, &[("counters", &format!("[{}]", regs.join(",")))]), 400_006, 200);
    let huge = format!("UID=u1&counters={}", "a".repeat(1 << 20));
    add("body over 1 MiB", Open, raw_post(INC.as_bytes(), huge.as_bytes()), 400_006, 200);
    // HTTP 200 unless httpStatusCodes=true, even for what the HTTP layer refuses.
    let with_codes = format!("{INC}?httpStatusCodes=true");
    add("body over 1 MiB, httpStatusCodes", Open, raw_post(with_codes.as_bytes(), huge.as_bytes()), 400_006, 400);
    add("PUT, httpStatusCodes", Open, raw_request(b"PUT", with_codes.as_bytes(), None, b""), 400_006, 400);

    // Overflow.
    add("count overflows a stored total", Open, entries(&format!(r#"[{{"class":"shares","path":"/news","count":"{}"}}]"#, i64::MAX)), 400_006, 200);
    let min = r#"[{"class":"shares","path":"/","value":-9223372036854775808},{"class":"shares","path":"/","value":-1}]"#;
    add("values overflow within a batch", Open, post(INC, &[("UID", "fresh"), ("counters", min)]), 400_006, 200);

    // Invalid UTF-8.
    add("invalid UTF-8 value in body", Open, raw_post(INC.as_bytes(), b"UID=u1&counters=%FF%FE"), 400_006, 200);
    add("raw invalid UTF-8 in body", Open, raw_post(INC.as_bytes(), b"UID=\xC3\x28&counters=[]"), 400_006, 200);
    add("invalid UTF-8 name in body", Open, raw_post(INC.as_bytes(), b"%C0%AF=1&UID=u1"), 400_006, 200);
    add("invalid UTF-8 in query", Open, raw_get(b"/accounts.incrementCounters?UID=%ED%A0%80"), 400_006, 200);

    // Pathological regexes.
    let selector = |json: &str| post(GET, &[("UID", "u1"), ("counters", json)]);
    add("regex over the size limit", Open, selector(r#"[{"class":"regex('((a{100}){100}){100}')"}]"#), 400_006, 200);
    add("regex unbalanced", Open, selector(r#"[{"class":"regex('(')"}]"#), 400_006, 200);
    add("regex unterminated", Open, selector(r#"[{"class":"regex('abc"}]"#), 400_006, 200);
    add("regex huge repetition", Open, selector(r#"[{"class":"regex('\\w{1000}{1000}')"}]"#), 400_006, 200);
    add("period regex invalid", Open, selector(r#"[{"class":"shares","period":"regex('[')"}]"#), 400_006, 200);
    add("period unknown", Open, selector(r#"[{"class":"shares","period":"yesterday"}]"#), 400_006, 200);

    // JSONP callback injection and envelope parameters.
    for (name, callback) in [
        ("callback with a call", "alert(document.cookie)//"),
        ("callback with a script tag", "</script><script>alert(1)</script>"),
        ("callback with a statement", "cb;alert(1)"),
        ("callback with a line separator", "cb\u{2028}alert(1)"),
        ("callback of 129 bytes", &"a".repeat(129)),
    ] {
        add(name, Open, get(INC, &[("UID", "u1"), ("counters", one), ("format", "jsonp"), ("callback", callback)]), 400_006, 200);
    }
    add("jsonp without callback", Open, get(INC, &[("UID", "u1"), ("counters", one), ("format", "jsonp")]), 400_002, 200);
    add("format xml", Open, get(INC, &[("UID", "u1"), ("counters", one), ("format", "xml")]), 400_006, 200);
    add("httpStatusCodes maybe", Open, get(INC, &[("UID", "u1"), ("counters", one), ("httpStatusCodes", "maybe")]), 400_006, 200);

    // Unknown methods, deep and malformed paths, wrong HTTP methods.
    let query = format!("?UID=u1&counters={}", enc(one));
    for (name, path) in [
        ("unknown method", "/accounts.deleteAccount".to_owned()),
        ("method in the wrong case", "/accounts.incrementcounters".to_owned()),
        ("trailing slash", format!("{INC}/")),
        ("dot segments", format!("{INC}/../../etc/passwd")),
        ("encoded path", "/accounts.increment%43ounters".to_owned()),
        ("encoded invalid UTF-8 path", "/%FF%FE".to_owned()),
        ("deep path", "/a".repeat(1000)),
        ("root path", "/".to_owned()),
        ("matrix parameter", format!("{INC};x=1")),
    ] {
        add(name, Open, raw_get(format!("{path}{query}").as_bytes()), 400_006, 200);
    }
    let body = form(&[("UID", "u1"), ("counters", one)]);
    add("PUT", Open, raw_request(b"PUT", INC.as_bytes(), Some(b"application/x-www-form-urlencoded"), body.as_bytes()), 400_006, 200);
    add("DELETE", Open, raw_request(b"DELETE", format!("{INC}{query}").as_bytes(), None, b""), 400_006, 200);
    add("JSON body", Open, raw_request(b"POST", INC.as_bytes(), Some(b"application/json"), br#"{"UID":"u1"}"#), 400_006, 200);

    // Authorization (plain secrets refused on this server).
    let ts = NOW.to_string();
    let base = [("apiKey", "3_partner"), ("UID", "u1"), ("counters", one)];
    add("no apiKey", Auth, post(INC, &[("UID", "u1"), ("counters", one)]), 400_093, 200);
    add("unknown apiKey", Auth, post(INC, &[("apiKey", "3_nope"), ("UID", "u1"), ("counters", one)]), 400_093, 200);
    add("apiKey twice", Auth, post(INC, &[("apiKey", "3_partner"), ("apiKey", "3_partner"), ("UID", "u1")]), 400_006, 200);
    add("no credentials", Auth, post(INC, &base), 403_005, 200);
    add("unknown userKey", Auth, post(INC, &[("apiKey", "3_partner"), ("userKey", "nope"), ("secret", SECRET)]), 403_005, 200);
    let mut with_secret = base.to_vec();
    with_secret.push(("secret", SECRET));
    add("plain secret refused", Auth, post(INC, &with_secret), 403_006, 200);
    let mut bad_sig = signed_post(&base, &ts, "bad-sig");
    bad_sig.last_mut().unwrap().1 = "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    add("wrong sig", Auth, owned_post(&bad_sig), 403_003, 200);
    bad_sig.last_mut().unwrap().1 = "not base64!".into();
    add("sig not base64", Auth, owned_post(&bad_sig), 403_003, 200);
    let mut tampered = signed_post(&base, &ts, "tampered");
    tampered[2].1 = r#"[{"class":"shares","path":"/news","count":1000}]"#.into();
    add("counters changed after signing", Auth, owned_post(&tampered), 403_003, 200);
    let old = (NOW - 3600).to_string();
    add("timestamp an hour old", Auth, owned_post(&signed_post(&base, &old, "old")), 403_002, 200);
    let ahead = ((NOW + 600) * 1000).to_string();
    add("timestamp ten minutes ahead, ms", Auth, owned_post(&signed_post(&base, &ahead, "ahead")), 403_002, 200);
    let mut no_nonce = signed_post(&base, &ts, "x");
    no_nonce.retain(|(k, _)| k != "nonce");
    add("no nonce", Auth, owned_post(&no_nonce), 400_002, 200);
    let mut no_ts = signed_post(&base, &ts, "no-ts");
    no_ts.retain(|(k, _)| k != "timestamp");
    add("no timestamp", Auth, owned_post(&no_ts), 400_002, 200);
    add("timestamp not a number", Auth, owned_post(&signed_post(&base, "soon", "soon")), 400_006, 200);
    add("nonce of 300 bytes", Auth, owned_post(&signed_post(&base, &ts, &"n".repeat(300))), 400_006, 200);
    add("replayed nonce", Auth, owned_post(&signed_post(&base, &ts, "used-once")), 403_004, 200);
    let unregistered = [("apiKey", "3_partner"), ("UID", "u1"), ("counters", r#"[{"class":"shares","path":"/x"}]"#)];
    add("signed but unregistered", Auth, owned_post(&signed_post(&unregistered, &ts, "fine")), 409_011, 200);
    cases
}

#[test]
fn every_bad_request_gets_its_code_and_changes_nothing() {
    let open_engine = seeded();
    let open = Server::start(open_engine.clone(), Options::default());
    let auth_engine = seeded();
    let auth = Auth::new()
        .api_key("3_partner", Some(SECRET))
        .unwrap()
        .plain_secrets(PlainSecrets::Never);
    // This one runs calls on the async workers (the open one on the blocking pool).
    let options = Options::default().auth(auth).blocking_pool(false);
    let authed = Server::start(auth_engine.clone(), options);
    // The nonce the table replays, first used by a valid request.
    let base = [
        ("apiKey", "3_partner"),
        ("UID", "u1"),
        ("counters", r#"[{"class":"shares","path":"/news"}]"#),
    ];
    let first = raw(
        &authed,
        &owned_post(&signed_post(&base, &NOW.to_string(), "used-once")),
    );
    assert_eq!(first.error_code(), 0, "{first:?}");

    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let before = (state(&open_engine), state(&auth_engine));
    let mut failures = Vec::new();
    for case in &cases {
        let server = match case.door {
            Door::Open => &open,
            Door::Auth => &authed,
        };
        let reply = raw(server, &case.request);
        let body: serde_json::Value = match serde_json::from_str(&reply.body) {
            Ok(body) if reply.content_type.starts_with("application/json") => body,
            _ => {
                failures.push(format!("{}: not a JSON envelope: {reply:?}", case.name));
                continue;
            }
        };
        let code = body["errorCode"].as_u64().unwrap_or(0) as u32;
        if (code, reply.status) != (case.code, case.status) {
            failures.push(format!(
                "{}: got {code} (HTTP {}), want {} (HTTP {}): {}",
                case.name, reply.status, case.code, case.status, body["errorDetails"]
            ));
        }
        if body["statusCode"] != case.code / 1000 || !body["errorDetails"].is_string() {
            failures.push(format!("{}: envelope {body}", case.name));
        }
        if reply.body.contains("alert(") {
            failures.push(format!("{}: echoes script: {}", case.name, reply.body));
        }
        let after = (state(&open_engine), state(&auth_engine));
        if after != before {
            failures.push(format!(
                "{}: changed state:\n{}\n{}",
                case.name, after.0, after.1
            ));
            break;
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
