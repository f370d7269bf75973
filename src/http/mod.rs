//! The HTTP server (feature `http`, on by default): the REST-compatible
//! layer behind an axum router, wire-compatible with the platform's REST
//! API, with the platform's optional authorization.
//!
//! [`router`] mounts `/accounts.registerCounters`,
//! `/accounts.unregisterCounters`, `/accounts.getRegisteredCounters`,
//! `/accounts.incrementCounters` and `/accounts.getCounters`, each
//! answering `GET` with query parameters and `POST` with an
//! `application/x-www-form-urlencoded` body through [`rest::call`], with
//! the status, content type and body it returns; and `GET /healthz`.
//!
//! ```no_run
//! use tally::{Durability, Tally};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Tally::builder().data_dir("./tally-data").durability(Durability::Always).build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let shutdown = async { tokio::signal::ctrl_c().await.ok(); };
//! tally::http::serve(listener, tally::http::router(engine.clone()), shutdown).await?;
//! engine.close()?;
//! # Ok(())
//! # }
//! ```
//!
//! [`serve`] applies the default [`ServeOptions`]; [`serve_with`] takes
//! others. They keep slow and idle clients from holding the server's file
//! descriptors:
//!
//! | limit | default | past it |
//! |---|---|---|
//! | [`header_read_timeout`](ServeOptions#structfield.header_read_timeout): a complete request head, from the accept or from the request's first byte | 10 s | the connection is closed, no response |
//! | [`idle_timeout`](ServeOptions#structfield.idle_timeout): the first byte of the next request after a response (and the reading of that response) | 60 s | the connection is closed |
//! | [`request_timeout`](ServeOptions#structfield.request_timeout): the whole request, head and body, from its first byte | 30 s | a 400006 envelope naming `body`, `Connection: close`; nothing applied |
//! | [`max_connections`](ServeOptions#structfield.max_connections): connections open at once | 512 | no more are accepted until one closes; clients wait in the listen backlog |
//!
//! A request past its time gets the envelope of any error this layer
//! raises (HTTP 200 unless `httpStatusCodes=true`, then 400), not a 408
//! or 503, since the platform's clients read errors from the body. A REST
//! call that has begun is never cut off: it is answered with its outcome,
//! so that no answer hides an increment that was applied. On shutdown the
//! server stops accepting, closes connections that are idle or have not
//! begun a request, and answers the requests in flight.
//!
//! With [`Options::auth`] set, every request must carry a known `apiKey`
//! and either a plain `secret` (where [`PlainSecrets`] allows) or a
//! signature: `timestamp`, `nonce` and `sig` = base64(HMAC-SHA1(base64-
//! decoded secret, [`base_string`])). Without it the server is open.
//!
//! ## Decisions where the specification is silent
//!
//! - Query and body parameters are merged, query first; a parameter given
//!   in both with different values is a conflicting duplicate (the REST
//!   layer's 400006 where it is used); with the same value, it is that value.
//! - A `POST` body is read as a form when its `Content-Type` is
//!   `application/x-www-form-urlencoded` (any parameters) or absent; any
//!   other type is 400006. A `GET` body is not read.
//! - A name or value that is not UTF-8 once percent-decoded is 400006
//!   naming the parameter; a `%` without two hex digits stays literal.
//! - Errors raised here, before the REST layer (authorization, the body,
//!   the content type), are platform envelopes following the REST
//!   layer's rules with the parameters that could be read (`format`,
//!   `callback`, `httpStatusCodes`, `context`), HTTP status included:
//!   200 unless `httpStatusCodes=true`, as in the REST layer. So a
//!   body over the limit and a method other than `GET` and `POST` are
//!   400006 envelopes like any other error (the latter with
//!   `Allow: GET, POST`), not 413 or 405.
//! - Any other path is passed to the REST layer as a method name (`/x`
//!   is method `x`), so it gets the REST layer's "unknown method" 400006,
//!   after authorization. Paths are matched as sent, not percent-decoded.
//! - Authorization, when configured, runs in this order: `apiKey`
//!   (missing or unknown: 400093), `userKey` if given (unknown: 403005),
//!   the secret to check (the user key's, else the API key's own; none:
//!   403005), then a plain `secret` (not allowed here: 403006, wrong:
//!   403003), else `sig` (absent: 403005) with `timestamp` (absent:
//!   400002, not digits: 400006, more than 120 s off: 403002), `nonce`
//!   (absent: 400002, over 256 bytes: 400006), the signature (403003),
//!   and last the nonce's novelty (403004), so that only correctly signed
//!   requests use up nonces. An authorization parameter given twice is
//!   400006. `/healthz` needs no credentials.
//! - A `timestamp` of 10^11 or more is milliseconds, below that seconds;
//!   it is compared with the engine clock. Nonces are remembered per key
//!   (`userKey`, else `apiKey`) until their timestamp could no longer pass.
//! - The URLs a signature may be made for: the public base URL (default
//!   [`DEFAULT_PUBLIC_BASE_URL`]) followed by the request's path, and
//!   `http://` + the `Host` header, lowercased, + the path. The signed
//!   HTTP method is the request's. Pairs are sorted by encoded name, then
//!   encoded value.
//! - Plain secrets are compared as the configured base64 text, in constant
//!   time; signatures with the HMAC's constant-time check.
//! - The REST call runs on tokio's blocking pool by default, since an
//!   increment may wait for a log sync (`Durability::Always`);
//!   [`Options::blocking_pool`](Options#structfield.blocking_pool) turns
//!   that off where calls never wait. `tally serve` turns it off unless
//!   `--durability always`.

mod auth;
mod envelope;
mod form;
mod handler;
mod serve;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get};

pub use auth::{
    Auth, DEFAULT_PUBLIC_BASE_URL, MAX_NONCE_BYTES, MAX_SKEW_SECS, PlainSecrets, base_string, sign,
};
pub use serve::{
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT, ServeOptions, serve_with,
};

use crate::engine::Tally;
use crate::rest;

/// The default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// How the server treats requests besides the REST layer's rules.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// The largest accepted request body, in bytes ([`DEFAULT_BODY_LIMIT`]).
    pub body_limit: usize,
    /// The keys requests must carry; `None` (the default) serves everyone.
    pub auth: Option<Auth>,
    /// Run each REST call on tokio's blocking pool (the default), so that
    /// a call that waits does not hold up the async workers. Needed with
    /// [`Durability::Always`](crate::Durability::Always), where an
    /// increment waits for a log sync, or a
    /// [`RegTokenResolver`](crate::RegTokenResolver) that does I/O. Turned
    /// off, calls run on the workers themselves: about twice the
    /// throughput where calls never wait (`Interval` and `Never`
    /// durability only buffer the log in memory).
    pub blocking_pool: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            body_limit: DEFAULT_BODY_LIMIT,
            auth: None,
            blocking_pool: true,
        }
    }
}

impl Options {
    /// Sets the body limit, in bytes.
    #[must_use]
    pub fn body_limit(mut self, bytes: usize) -> Options {
        self.body_limit = bytes;
        self
    }

    /// Whether REST calls run on tokio's blocking pool (see [`Options::blocking_pool`](#structfield.blocking_pool)).
    #[must_use]
    pub fn blocking_pool(mut self, on: bool) -> Options {
        self.blocking_pool = on;
        self
    }

    /// Requires these keys on every request but `/healthz`.
    #[must_use]
    pub fn auth(mut self, auth: Auth) -> Options {
        self.auth = Some(auth);
        self
    }
}

/// The router of an open server (no authorization) with the default body
/// limit. See [`router_with`].
pub fn router(engine: Tally) -> Router {
    router_with(engine, Options::default())
}

/// The router: the five `/accounts.*` methods, `/healthz`, and every other
/// path answered by the REST layer as an unknown method.
///
/// Serve it with [`serve`] or [`serve_with`] (or with
/// `into_make_service_with_connect_info::<SocketAddr>()`, without the
/// limits of [`ServeOptions`]): without the peer address no request counts
/// as coming from loopback.
pub fn router_with(engine: Tally, options: Options) -> Router {
    mount(handler::Served::Embedded(engine), options)
}

/// The router of an open server answering from the shared store on Redis
/// Cluster, with the default body limit. See [`cluster_router_with`].
#[cfg(feature = "redis")]
pub fn cluster_router(cluster: crate::cluster::Cluster) -> Router {
    cluster_router_with(cluster, Options::default())
}

/// The router of [`router_with`], answering from the shared store: the
/// same paths, parameters, authorization and envelopes, each call run by
/// `rest::call_cluster` on the async workers ([`Options::blocking_pool`](Options#structfield.blocking_pool)
/// does not apply). `/healthz` answers 503 with `"status":"unavailable"`
/// and the reason while the cluster cannot be reached or is not whole.
#[cfg(feature = "redis")]
pub fn cluster_router_with(cluster: crate::cluster::Cluster, options: Options) -> Router {
    mount(handler::Served::Cluster(cluster), options)
}

fn mount(store: handler::Served, options: Options) -> Router {
    let state = Arc::new(handler::AppState { store, options });
    let mut router = Router::new().route("/healthz", get(handler::healthz));
    for method in rest::METHODS {
        router = router.route(&format!("/{method}"), any(handler::handle));
    }
    router.fallback(handler::handle).with_state(state)
}

/// Serves `router` on `listener` with the default [`ServeOptions`] until
/// `shutdown` completes, then stops accepting and waits for the requests
/// in flight to finish. See [`serve_with`].
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_with(listener, router, ServeOptions::default(), shutdown).await
}
