//! Serving a router: the accept loop, with a bound on open connections,
//! and each connection's limits on slow and idle clients.
//!
//! A connection is always in one of three states, each with its own limit:
//!
//! - waiting for a request head: from the accept, or from the first byte
//!   after an idle spell, the head must be complete within the header-read
//!   timeout;
//! - answering a request: the request must arrive in full (head and body)
//!   within the request timeout of its first byte, which the handler
//!   enforces while it reads the body;
//! - idle, after a response: the next request must begin (its first byte
//!   arrive) within the idle timeout.
//!
//! A connection past its limit is dropped (closed without a response),
//! except a request whose body is late, which gets an envelope. hyper's
//! own header timer runs from the end of the previous response, so it
//! cannot tell an idle keep-alive connection from a slow head: it is set
//! to the sum of the two, as a backstop that never fires first, and a
//! small watcher per connection applies the exact limits, fed by the
//! connection's reads and by the service's start and end of each request.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

/// The default [`ServeOptions::header_read_timeout`]: 10 s.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The default [`ServeOptions::idle_timeout`]: 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default [`ServeOptions::request_timeout`]: 30 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The default [`ServeOptions::max_connections`]: 512.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// The longest timeout honoured; longer ones are cut to it (a year), so
/// that no deadline overflows the clock.
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 86_400);

/// How [`serve_with`] treats connections: the limits that keep slow or
/// idle clients from holding the server's file descriptors.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServeOptions {
    /// How long a client has to send a complete request head, from the
    /// accept (a fresh connection) or from the first byte of the request
    /// (a kept-alive one) ([`DEFAULT_HEADER_READ_TIMEOUT`]). Past it the
    /// connection is closed without a response.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait, after a response, for
    /// the first byte of its next request ([`DEFAULT_IDLE_TIMEOUT`]).
    /// Past it the connection is closed. It also bounds a client that
    /// does not read its response.
    pub idle_timeout: Duration,
    /// How long a request may take to arrive in full, head and body, from
    /// its first byte ([`DEFAULT_REQUEST_TIMEOUT`]). A body still missing
    /// then gets a 400006 envelope naming `body` (HTTP 200 unless
    /// `httpStatusCodes=true`, then 400) with `Connection: close`, and
    /// nothing of the request is applied. A REST call that has begun is
    /// never cut off: it is answered with its outcome, however long it
    /// takes (an increment may be waiting for a log sync), so that an
    /// answer never hides an applied increment.
    pub request_timeout: Duration,
    /// The most connections open at once ([`DEFAULT_MAX_CONNECTIONS`]; at
    /// least 1). At the bound the server stops accepting: further clients
    /// wait in the listen backlog until a connection closes. Keep it below
    /// the process's file-descriptor limit less what the engine uses.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl ServeOptions {
    /// Sets [`ServeOptions::header_read_timeout`](#structfield.header_read_timeout).
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: Duration) -> ServeOptions {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets [`ServeOptions::idle_timeout`](#structfield.idle_timeout).
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> ServeOptions {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`ServeOptions::request_timeout`](#structfield.request_timeout).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> ServeOptions {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`ServeOptions::max_connections`](#structfield.max_connections).
    #[must_use]
    pub fn max_connections(mut self, connections: usize) -> ServeOptions {
        self.max_connections = connections;
        self
    }

    fn limits(&self) -> Limits {
        Limits {
            header: self.header_read_timeout.min(MAX_TIMEOUT),
            idle: self.idle_timeout.min(MAX_TIMEOUT),
            request: self.request_timeout.min(MAX_TIMEOUT),
        }
    }
}

/// The per-connection timeouts, each at most [`MAX_TIMEOUT`].
#[derive(Clone, Copy, Debug)]
struct Limits {
    header: Duration,
    idle: Duration,
    request: Duration,
}

/// When a request must have arrived in full, set by [`serve_with`] on each
/// request for the handler, which reads the body until then.
#[derive(Clone, Copy, Debug)]
pub(super) struct ReceiveBy {
    /// The deadline.
    pub at: Instant,
    /// The request timeout it comes from, for the error message.
    pub limit: Duration,
}

/// Serves `router` on `listener` with `options` until `shutdown`
/// completes; then stops accepting, closes the connections that are idle
/// or have not begun a request, and waits for the requests in flight to
/// be answered.
///
/// Errors accepting a connection do not stop the server: it retries, after
/// a second for errors other than a connection's own (running out of file
/// descriptors, say).
pub async fn serve_with<F>(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let limits = options.limits();
    let slots = Arc::new(Semaphore::new(
        options.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    let (stopping_tx, stopping) = watch::channel(false);
    let service = TowerToHyperService::new(router);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header.saturating_add(limits.idle));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_connection_error(&error) => continue,
                Err(_) => {
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked {
            stream,
            activity: Arc::clone(&activity),
        });
        let answer = {
            let activity = Arc::clone(&activity);
            let service = service.clone();
            hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                let began = activity.request_began();
                let extensions = request.extensions_mut();
                extensions.insert(ConnectInfo(peer));
                if let Some(at) = began.checked_add(limits.request) {
                    extensions.insert(ReceiveBy {
                        at,
                        limit: limits.request,
                    });
                }
                let answering = InFlight(Arc::clone(&activity));
                let response = hyper::service::Service::call(&service, request);
                async move {
                    let response = response.await;
                    drop(answering);
                    response
                }
            })
        };
        let connection = graceful.watch(http.serve_connection(io, answer));
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                // A client's protocol error or reset ends only its connection.
                _ = connection => {}
                () = watch_limits(&activity, limits, stopping) => {}
            }
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    graceful.shutdown().await;
    Ok(())
}

/// Errors that concern one connection only (axum's list): accept the next.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// No time recorded.
const NONE: u64 = u64::MAX;

/// What one connection's watcher knows of it: times in milliseconds since
/// `epoch`, set by its reads ([`Tracked`]) and its requests ([`InFlight`]).
struct Activity {
    epoch: Instant,
    /// Requests being answered (at most one: HTTP/1 answers in order).
    in_flight: AtomicUsize,
    /// Requests begun on this connection so far.
    begun: AtomicUsize,
    /// When the last response was handed to hyper (or the accept).
    idle_since: AtomicU64,
    /// When the head being waited for began: its first byte, or the
    /// accept for a fresh connection; [`NONE`] while idle.
    head_since: AtomicU64,
    /// Woken when a deadline may have moved.
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            begun: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn instant(&self, millis: u64) -> Instant {
        self.epoch + Duration::from_millis(millis)
    }

    /// Bytes arrived: an idle connection is now reading a head.
    fn bytes_arrived(&self) {
        if self.head_since.load(Ordering::SeqCst) == NONE
            && self
                .head_since
                .compare_exchange(NONE, self.now(), Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    /// A request's head is complete: returns when its first byte came.
    fn request_began(&self) -> Instant {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.begun.fetch_add(1, Ordering::SeqCst);
        let since = self.head_since.swap(NONE, Ordering::SeqCst);
        self.changed.notify_one();
        if since == NONE {
            // A pipelined request, read while the previous one was answered.
            Instant::now()
        } else {
            self.instant(since)
        }
    }

    /// The response is handed to hyper: the connection is idle.
    fn request_ended(&self) {
        self.idle_since.store(self.now(), Ordering::SeqCst);
        self.head_since.store(NONE, Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// When the connection is to be dropped, if nothing happens before;
    /// `None` while a request is answered.
    fn deadline(&self, limits: Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        match self.head_since.load(Ordering::SeqCst) {
            NONE => self
                .instant(self.idle_since.load(Ordering::SeqCst))
                .checked_add(limits.idle),
            since => self.instant(since).checked_add(limits.header),
        }
    }

    /// Whether the connection has neither begun a request nor one in flight.
    fn never_used(&self) -> bool {
        self.begun.load(Ordering::SeqCst) == 0
    }
}

/// Marks a request in flight until dropped (answered, or abandoned with
/// its connection).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// Completes when the connection is past its limit, or, once the server
/// is stopping, if it never began a request (hyper's graceful shutdown
/// waits for such a connection's first request; the others it closes
/// itself once their responses are written).
async fn watch_limits(activity: &Activity, limits: Limits, mut stopping: watch::Receiver<bool>) {
    loop {
        if *stopping.borrow_and_update() && activity.never_used() {
            return;
        }
        let deadline = activity.deadline(limits);
        if deadline.is_some_and(|at| at <= Instant::now()) {
            return;
        }
        let wait_stop = async {
            // A closed channel means the server is gone: stop watching it.
            if stopping.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = activity.changed.notified() => {}
            () = wait_stop => {}
        }
    }
}

/// A connection's stream, telling its [`Activity`] when bytes arrive.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            request: Duration::from_secs(30),
        }
    }

    #[test]
    fn each_state_has_its_deadline() {
        let activity = Activity::new();
        let start = activity.epoch;
        // Fresh: the head is waited for from the accept.
        assert_eq!(activity.deadline(limits()), Some(start + limits().header));
        let began = activity.request_began();
        assert_eq!(began, start);
        assert_eq!(activity.deadline(limits()), None);
        activity.request_ended();
        let idle = activity.deadline(limits()).unwrap();
        assert!(idle >= start + limits().idle, "{idle:?}");
        activity.bytes_arrived();
        let head = activity.deadline(limits()).unwrap();
        assert!(head >= start + limits().header && head < idle, "{head:?}");
        assert!(!activity.never_used());
    }

    #[test]
    fn huge_options_are_cut_and_never_overflow() {
        let options = ServeOptions::default()
            .header_read_timeout(Duration::MAX)
            .idle_timeout(Duration::MAX)
            .request_timeout(Duration::MAX);
        let limits = options.limits();
        assert_eq!(
            (limits.header, limits.idle, limits.request),
            (MAX_TIMEOUT, MAX_TIMEOUT, MAX_TIMEOUT)
        );
        let activity = Activity::new();
        assert!(activity.deadline(limits).is_some());
        assert!(activity.request_began().checked_add(limits.request).is_some());
    }
}
