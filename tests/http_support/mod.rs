//! Helpers shared by the `tests/http_*.rs` scenarios: an in-process server
//! on an ephemeral loopback port, an HTTP client, and a raw HTTP/1.1 socket
//! for requests a well-behaved client would refuse to send.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;
use tally::http::Options;
use tally::{ManualClock, Tally};

/// 2026-11-27 12:00:00 UTC.
pub const NOW: i64 = 1_795_780_800;

/// An in-memory engine on a manual clock standing at [`NOW`].
pub fn engine() -> Tally {
    Tally::builder()
        .clock(ManualClock::new(NOW))
        .build()
        .unwrap()
}

/// The real router served on `127.0.0.1:0` by a tokio runtime on its own
/// thread; dropping it shuts the server down gracefully.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(engine: Tally, options: Options) -> Server {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let router = tally::http::router_with(engine, options);
                let shutdown = async {
                    let _ = stopped.await;
                };
                tally::http::serve(listener, router, shutdown)
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server started");
        Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An HTTP client that returns 4xx and 5xx responses instead of failing.
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// A response: status, content type, body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Reply {
    /// The body as JSON (asserting a JSON content type).
    pub fn json(&self) -> Value {
        assert_eq!(
            self.content_type, "application/json; charset=utf-8",
            "{self:?}"
        );
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// The JSON inside a `callback(<json>);` body.
    pub fn jsonp(&self, callback: &str) -> Value {
        assert_eq!(self.content_type, "application/javascript", "{self:?}");
        let inner = self
            .body
            .strip_prefix(&format!("{callback}("))
            .and_then(|rest| rest.strip_suffix(");"))
            .unwrap_or_else(|| panic!("not {callback}(…);: {}", self.body));
        serde_json::from_str(inner).unwrap()
    }

    pub fn error_code(&self) -> u64 {
        self.json()["errorCode"].as_u64().unwrap()
    }
}

fn reply(mut resp: ureq::http::Response<ureq::Body>) -> Reply {
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    Reply {
        status: resp.status().as_u16(),
        content_type,
        body: resp.body_mut().read_to_string().unwrap(),
    }
}

/// `GET path?params` (the client percent-encodes them).
pub fn get(server: &Server, path: &str, params: &[(&str, &str)]) -> Reply {
    let mut request = client().get(server.url(path));
    for (k, v) in params {
        request = request.query(*k, *v);
    }
    reply(request.call().unwrap())
}

/// `POST path` with `params` as an `application/x-www-form-urlencoded` body.
pub fn post(server: &Server, path: &str, params: &[(&str, &str)]) -> Reply {
    let request = client().post(server.url(path));
    reply(request.send_form(params.iter().copied()).unwrap())
}

/// Sends `request` as it is on a fresh connection and reads the answer.
pub fn raw(server: &Server, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The server may answer (413) before reading everything: ignore a
    // failed write and read what it said.
    let _ = stream.write_all(request);
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let text = String::from_utf8(bytes).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    Reply {
        status,
        content_type,
        body: body.to_owned(),
    }
}

/// A raw `GET target` (target sent byte for byte).
pub fn raw_get(target: &[u8]) -> Vec<u8> {
    raw_request(b"GET", target, None, b"")
}

/// A raw form `POST target` with `body`.
pub fn raw_post(target: &[u8], body: &[u8]) -> Vec<u8> {
    raw_request(
        b"POST",
        target,
        Some(b"application/x-www-form-urlencoded"),
        body,
    )
}

/// A raw request with an optional content type and `Connection: close`.
pub fn raw_request(
    method: &[u8],
    target: &[u8],
    content_type: Option<&[u8]>,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(ct) = content_type {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(ct);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// Percent-encodes every byte but unreserved ones (for query strings and
/// form bodies built by hand).
pub fn enc(text: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, SET).to_string()
}

/// `k=v&…`, encoded.
pub fn form(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Signs `params` (adding `timestamp`, `nonce` and `sig`) for `method`
/// and `url`, with the base64 `secret`.
pub fn signed(
    method: &str,
    url: &str,
    params: &[(&str, &str)],
    secret: &str,
    timestamp: &str,
    nonce: &str,
) -> Vec<(String, String)> {
    let mut all: Vec<(&str, &str)> = params.to_vec();
    all.push(("timestamp", timestamp));
    all.push(("nonce", nonce));
    let sig = tally::http::sign(secret, &tally::http::base_string(method, url, &all)).unwrap();
    let mut owned: Vec<(String, String)> = all
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    owned.push(("sig".into(), sig));
    owned
}

/// Borrows owned pairs.
pub fn pairs(owned: &[(String, String)]) -> Vec<(&str, &str)> {
    owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}
