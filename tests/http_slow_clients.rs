//! `tally serve` against slow and idle clients. The fault pinned here: the
//! server kept a connection that had sent half a request line open forever,
//! kept idle keep-alive connections forever, accepted every connection
//! offered (so enough of them exhausted the process's file descriptors),
//! and waited forever for a request body that never came.
//!
//! Each test runs the real binary on an ephemeral loopback port with short
//! limits. No assertion depends on how fast the machine is: a limit is
//! checked as "closed (or answered) eventually, within a generous bound",
//! and the other side as "still open, or not yet answered, well before the
//! limit", which a slower machine only makes easier to hold.

#![cfg(unix)]

mod serve_support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use serve_support::ServeProcess;

/// How long any test waits for something the server must do eventually.
const GENEROUS: Duration = Duration::from_secs(30);

/// What these tests do with a server besides REST calls.
impl ServeProcess {
    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.addr).unwrap();
        stream.set_read_timeout(Some(GENEROUS)).unwrap();
        stream
    }

    /// `GET /healthz` on a fresh connection: served.
    fn assert_healthy(&self) {
        let mut stream = self.connect();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with(r#"{"status":"ok"}"#), "{text}");
    }
}

/// Reads until the server closes the connection, within [`GENEROUS`].
/// Returns what was read; panics if the connection is still open then.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return bytes,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            // A reset is the server closing too.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return bytes,
            Err(e) => panic!("still open after {GENEROUS:?} ({e}); read {bytes:?}"),
        }
    }
}

/// Reads one response with a `Content-Length` body: (head, body).
fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("a response");
        assert_eq!(n, 1, "closed mid-head after {bytes:?}");
        bytes.push(byte[0]);
    }
    let head = String::from_utf8(bytes).unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no Content-Length in {head}"));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (head, String::from_utf8(body).unwrap())
}

/// True if nothing arrives on `stream` within `wait` (the connection open
/// and silent); false if the server answered or closed.
fn silent_for(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    let silent = matches!(
        stream.read(&mut byte),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
    );
    stream.set_read_timeout(Some(GENEROUS)).unwrap();
    silent
}

#[test]
fn half_a_request_line_is_closed_by_the_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(
        dir.path(),
        &["--header-read-timeout", "1", "--idle-timeout", "600"],
    );
    let mut half = server.connect();
    half.write_all(b"GET /accounts.getCo").unwrap();
    let mut silent = server.connect();
    // Meanwhile, other clients are served.
    server.assert_healthy();
    assert!(read_until_closed(&mut half).is_empty());
    // A connection that sends nothing at all is waiting for a head too.
    assert!(read_until_closed(&mut silent).is_empty());
    server.assert_healthy();
    server.stop("-TERM");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_by_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(
        dir.path(),
        &["--idle-timeout", "1", "--header-read-timeout", "600"],
    );
    let mut stream = server.connect();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, r#"{"status":"ok"}"#);
    assert!(read_until_closed(&mut stream).is_empty());
    server.stop("-TERM");
}

/// The two timeouts are distinct: a kept-alive connection waits for its
/// next request for the idle timeout, not the (shorter) header timeout;
/// and a slow head on a fresh connection is closed by the header timeout
/// though the idle timeout is long.
#[test]
fn a_kept_alive_connection_is_not_cut_by_the_shorter_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(
        dir.path(),
        &["--header-read-timeout", "1", "--idle-timeout", "600"],
    );
    let mut stream = server.connect();
    for _ in 0..2 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let (head, _) = read_response(&mut stream);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        // Three header timeouts, far below the idle timeout: still open.
        assert!(silent_for(&mut stream, Duration::from_secs(3)));
    }
    // A head begun on it must still be completed within the header timeout.
    stream.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    assert!(read_until_closed(&mut stream).is_empty());
    server.stop("-TERM");
}

#[test]
fn connections_past_the_bound_wait_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(
        dir.path(),
        &[
            "--max-connections",
            "2",
            "--header-read-timeout",
            "600",
            "--idle-timeout",
            "600",
        ],
    );
    let mut held: Vec<TcpStream> = (0..2).map(|_| server.connect()).collect();
    for stream in &mut held {
        stream.write_all(b"GET /heal").unwrap();
    }
    // The kernel completes the handshake, but the server does not take
    // the third connection while two are open.
    let mut third = server.connect();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(
        silent_for(&mut third, Duration::from_secs(2)),
        "a third connection was served while the bound of two was held"
    );
    drop(held.pop());
    let text = String::from_utf8(read_until_closed(&mut third)).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with(r#"{"status":"ok"}"#), "{text}");
    drop(held);
    server.stop("-TERM");
}

#[test]
fn a_body_that_does_not_arrive_in_time_gets_an_envelope_and_a_close() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(
        dir.path(),
        &[
            "--request-timeout",
            "1",
            "--header-read-timeout",
            "600",
            "--idle-timeout",
            "600",
        ],
    );
    for (query, status) in [("", 200), ("?httpStatusCodes=true", 400)] {
        let mut stream = server.connect();
        let head = format!(
            "POST /accounts.incrementCounters{query} HTTP/1.1\r\nHost: t\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(b"UID=u1&counters=").unwrap();
        let text = String::from_utf8(read_until_closed(&mut stream)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["errorCode"], 400_006, "{body}");
        let details = body["errorDetails"].as_str().unwrap();
        assert!(
            details.contains("`body`") && details.contains("1 s"),
            "{details}"
        );
    }
    // Nothing of the cut-off request was applied, and others are served.
    server.assert_healthy();
    let mut stream = server.connect();
    stream
        .write_all(
            b"GET /accounts.getCounters?UID=u1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let text = String::from_utf8(read_until_closed(&mut stream)).unwrap();
    let body: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["errorCode"], 0, "{body}");
    assert_eq!(body["counters"], serde_json::json!([]), "{body}");
    server.stop("-TERM");
}

/// Graceful shutdown with the limits in place: a request in flight when
/// SIGTERM arrives is finished and its increment kept, and connections
/// that are idle or half-way through a head do not hold the exit up.
#[test]
fn sigterm_finishes_the_request_in_flight_and_closes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(dir.path(), &["--durability", "always"]);
    let mut idle = server.connect();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    read_response(&mut idle);
    let mut half = server.connect();
    half.write_all(b"GET /heal").unwrap();

    let body = "UID=u1&counters=%5B%7B%22class%22%3A%22shares%22%2C%22path%22%3A%22%2F%22%7D%5D";
    let mut in_flight = server.connect();
    let head = format!(
        "POST /accounts.incrementCounters HTTP/1.1\r\nHost: t\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    in_flight.write_all(head.as_bytes()).unwrap();
    in_flight.write_all(&body.as_bytes()[..10]).unwrap();
    // The class must be known: register it on another connection first.
    let mut reg = server.connect();
    let reg_body = "counters=%5B%7B%22class%22%3A%22shares%22%2C%22path%22%3A%22%2Fx%22%7D%5D";
    let reg_req = format!(
        "POST /accounts.registerCounters HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{reg_body}",
        reg_body.len()
    );
    reg.write_all(reg_req.as_bytes()).unwrap();
    let text = String::from_utf8(read_until_closed(&mut reg)).unwrap();
    assert!(text.contains(r#""errorCode":0"#), "{text}");

    server.signal("-TERM");
    // The signal stops new work; the request in flight still completes.
    std::thread::sleep(Duration::from_millis(500));
    in_flight.write_all(&body.as_bytes()[10..]).unwrap();
    let (head, reply) = read_response(&mut in_flight);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(reply.contains(r#""errorCode":0"#), "{reply}");
    assert!(read_until_closed(&mut idle).is_empty());
    assert!(read_until_closed(&mut half).is_empty());

    let rest = server.wait();
    assert!(rest.contains("final snapshot"), "{rest}");

    let server = ServeProcess::start(dir.path(), &[]);
    let mut stream = server.connect();
    stream
        .write_all(
            b"GET /accounts.getCounters?UID=u1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let text = String::from_utf8(read_until_closed(&mut stream)).unwrap();
    assert!(text.contains(r#""count":1"#), "{text}");
    server.stop("-TERM");
}
