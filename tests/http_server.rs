//! The HTTP server on an ephemeral loopback port, driven by an HTTP client:
//! GET and POST, JSON and JSONP, `httpStatusCodes`, `/healthz`, and the
//! platform's authorization (plain secrets, signed requests valid and not),
//! and a graceful shutdown that finishes the request in flight.

mod http_support;

use http_support::{NOW, Server, engine, get, pairs, post, signed};
use tally::http::{Auth, Options};

const COUNTERS: &str = r#"[{"class":"shares","path":"/news"}]"#;
const SECRET: &str = "c2VjcmV0LWJ5dGVz"; // base64 of "secret-bytes"
const PUBLIC: &str = "https://accounts.us1.gigya.com";

fn open_server() -> Server {
    Server::start(engine(), Options::default())
}

#[test]
fn get_and_post_answer_json_through_the_rest_layer() {
    let server = open_server();
    let resp = post(
        &server,
        "/accounts.registerCounters",
        &[("counters", COUNTERS)],
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["errorCode"], 0);

    let entries = r#"[{"class":"shares","path":"/news","count":"2","value":"5"}]"#;
    let resp = get(
        &server,
        "/accounts.incrementCounters",
        &[
            ("UID", "user 1/é"),
            ("counters", entries),
            ("apiKey", "ignored"),
        ],
    );
    assert_eq!(resp.json()["errorCode"], 0, "{resp:?}");
    let resp = post(
        &server,
        "/accounts.incrementCounters",
        &[("UID", "user 1/é"), ("counters", entries)],
    );
    assert_eq!(resp.json()["errorCode"], 0, "{resp:?}");

    let body = post(
        &server,
        "/accounts.getCounters",
        &[("UID", "user 1/é"), ("context", "ctx")],
    )
    .json();
    assert_eq!(body["context"], "ctx");
    assert_eq!(body["time"], "2026-11-27T12:00:00.000Z");
    assert_eq!(body["callId"].as_str().unwrap().len(), 32);
    let rows = body["counters"].as_array().unwrap();
    let got: Vec<(&str, i64, i64)> = rows
        .iter()
        .map(|r| {
            let path = r["path"].as_str().unwrap();
            (
                path,
                r["count"].as_i64().unwrap(),
                r["value"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [("/", 4, 10), ("/news", 4, 10)]);

    let body = get(&server, "/accounts.getRegisteredCounters", &[]).json();
    assert_eq!(body["counters"][0]["path"], "/news");
}

#[test]
fn jsonp_wraps_successes_and_errors() {
    let server = open_server();
    let params = [
        ("UID", "u"),
        ("format", "jsonp"),
        ("callback", "jQuery1.cb_$"),
    ];
    let resp = get(&server, "/accounts.getCounters", &params);
    assert_eq!(resp.status, 200);
    let body = resp.jsonp("jQuery1.cb_$");
    assert_eq!(body["errorCode"], 0);
    assert_eq!(body["counters"], serde_json::json!([]));

    let params = [
        ("UID", "u"),
        ("format", "jsonp"),
        ("callback", "cb"),
        ("counters", "["),
    ];
    let body = post(&server, "/accounts.incrementCounters", &params).jsonp("cb");
    assert_eq!(body["errorCode"], 400_004);
}

#[test]
fn http_status_codes_moves_the_error_into_the_status() {
    let server = open_server();
    let entries = r#"[{"class":"nope","path":"/x"}]"#;
    let resp = get(
        &server,
        "/accounts.incrementCounters",
        &[("UID", "u"), ("counters", entries)],
    );
    assert_eq!((resp.status, resp.error_code()), (200, 409_011));
    let resp = post(
        &server,
        "/accounts.incrementCounters",
        &[
            ("UID", "u"),
            ("counters", entries),
            ("httpStatusCodes", "true"),
        ],
    );
    assert_eq!((resp.status, resp.error_code()), (409, 409_011));
    assert_eq!(resp.json()["statusReason"], "Conflict");
    let resp = get(
        &server,
        "/accounts.unknownMethod",
        &[("httpStatusCodes", "true")],
    );
    assert_eq!((resp.status, resp.error_code()), (400, 400_006));
}

#[test]
fn healthz_answers_without_credentials() {
    let auth = Auth::new().api_key("site", Some(SECRET)).unwrap();
    let server = Server::start(engine(), Options::default().auth(auth));
    let resp = get(&server, "/healthz", &[]);
    assert_eq!(
        (resp.status, resp.json()["status"].as_str()),
        (200, Some("ok"))
    );
}

fn auth_server() -> Server {
    let auth = Auth::new()
        .api_key("3_site", None)
        .unwrap()
        .api_key("3_partner", Some(SECRET))
        .unwrap()
        .user_key("AUser", SECRET)
        .unwrap();
    let server = Server::start(engine(), Options::default().auth(auth));
    // Open the class "shares" for increments at "/".
    let resp = post(
        &server,
        "/accounts.registerCounters",
        &[
            ("apiKey", "3_partner"),
            ("secret", SECRET),
            ("counters", COUNTERS),
        ],
    );
    assert_eq!(resp.error_code(), 0, "{resp:?}");
    server
}

const INCREMENT: &str = r#"[{"class":"shares","path":"/"}]"#;

fn shares(server: &Server) -> i64 {
    let body = post(
        server,
        "/accounts.getCounters",
        &[("apiKey", "3_partner"), ("secret", SECRET), ("UID", "u1")],
    )
    .json();
    assert_eq!(body["errorCode"], 0, "{body}");
    body["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "/")
        .map_or(0, |r| r["count"].as_i64().unwrap())
}

#[test]
fn plain_secrets_from_loopback() {
    let server = auth_server();
    let base = [("UID", "u1"), ("counters", INCREMENT)];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut params = base.to_vec();
        params.extend_from_slice(extra);
        post(&server, "/accounts.incrementCounters", &params).error_code()
    };
    assert_eq!(
        with(&[
            ("apiKey", "3_site"),
            ("userKey", "AUser"),
            ("secret", SECRET)
        ]),
        0
    );
    assert_eq!(with(&[("apiKey", "3_partner"), ("secret", SECRET)]), 0);
    assert_eq!(
        with(&[("apiKey", "3_partner"), ("secret", "d3Jvbmc=")]),
        403_003
    );
    assert_eq!(with(&[("apiKey", "3_site"), ("secret", SECRET)]), 403_005);
    assert_eq!(with(&[("apiKey", "3_other"), ("secret", SECRET)]), 400_093);
    assert_eq!(with(&[]), 400_093);
    assert_eq!(shares(&server), 2);
}

#[test]
fn signed_requests_valid_and_invalid() {
    let server = auth_server();
    let secs = NOW.to_string();
    let method_path = "/accounts.incrementCounters";
    let public = format!("{PUBLIC}{method_path}");
    let own = server.url(method_path);
    let params = [
        ("apiKey", "3_site"),
        ("userKey", "AUser"),
        ("UID", "u1"),
        ("counters", INCREMENT),
        ("httpStatusCodes", "true"),
    ];

    // Signed for the public URL, as real SDKs do; POST and GET.
    let ok = signed("POST", &public, &params, SECRET, &secs, "n1");
    let resp = post(&server, method_path, &pairs(&ok));
    assert_eq!((resp.status, resp.error_code()), (200, 0), "{resp:?}");
    let ok = signed("GET", &public, &params, SECRET, &secs, "n2");
    assert_eq!(get(&server, method_path, &pairs(&ok)).error_code(), 0);
    // Signed for this server's own URL, with a millisecond timestamp.
    let millis = (NOW * 1000 + 119_000).to_string();
    let ok = signed("POST", &own, &params, SECRET, &millis, "n3");
    assert_eq!(post(&server, method_path, &pairs(&ok)).error_code(), 0);
    assert_eq!(shares(&server), 3);

    // Replayed: the same nonce again.
    let resp = post(&server, method_path, &pairs(&ok));
    assert_eq!((resp.status, resp.error_code()), (403, 403_004));
    // Signed as GET, sent as POST: the signature does not match.
    let wrong_method = signed("GET", &public, &params, SECRET, &secs, "n4");
    assert_eq!(
        post(&server, method_path, &pairs(&wrong_method)).error_code(),
        403_003
    );
    // A parameter changed after signing.
    let mut tampered = signed("POST", &public, &params, SECRET, &secs, "n5");
    tampered[2].1 = "u2".into();
    assert_eq!(
        post(&server, method_path, &pairs(&tampered)).error_code(),
        403_003
    );
    // Signed with another secret.
    let other = signed("POST", &public, &params, "d3Jvbmc=", &secs, "n6");
    assert_eq!(
        post(&server, method_path, &pairs(&other)).error_code(),
        403_003
    );
    // Too old and too new.
    let old = (NOW - 121).to_string();
    let expired = signed("POST", &public, &params, SECRET, &old, "n7");
    let resp = post(&server, method_path, &pairs(&expired));
    assert_eq!((resp.status, resp.error_code()), (403, 403_002));
    let future = ((NOW + 121) * 1000).to_string();
    let expired = signed("POST", &public, &params, SECRET, &future, "n8");
    assert_eq!(
        post(&server, method_path, &pairs(&expired)).error_code(),
        403_002
    );
    // No signature and no secret.
    assert_eq!(post(&server, method_path, &params).error_code(), 403_005);

    assert_eq!(shares(&server), 3, "no rejected request counted");
}

#[test]
fn shutdown_finishes_the_request_in_flight_and_stops_accepting() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    let engine = engine();
    engine.register([("shares", "/news")]).unwrap();
    let server = Server::start(engine.clone(), Options::default());
    let addr = server.addr;
    let body = http_support::form(&[("UID", "u1"), ("counters", INCREMENT)]);
    let (first, rest) = body.split_at(body.len() / 2);

    // Headers and half the body, then the shutdown, then the other half.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST /accounts.incrementCounters HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(first.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stopper = std::thread::spawn(move || drop(server));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting 10 s after the shutdown signal"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stream.write_all(rest.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""errorCode":0"#), "{answer}");
    stopper.join().unwrap();
    let rows = engine.get("u1", &[]).unwrap();
    assert_eq!(rows[0].count, 1);
}
