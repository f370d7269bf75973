//! One connection's limits on slow and idle clients.
//!
//! A connection is always in one of three states, each with its own limit:
//!
//! - waiting for a request head: from the accept, or from the first byte
//!   after an idle spell, the head must be complete within the header-read
//!   timeout, else the connection is dropped;
//! - answering a request: the request must arrive in full (head and body)
//!   within the request timeout of its first byte, else the handler, told
//!   so, answers with an envelope and the connection is closed;
//! - idle, after a response: the next request must begin (its first byte
//!   arrive) within the idle timeout, else the connection is dropped.
//!
//! One watcher per connection applies them, fed by the connection's reads
//! ([`Tracked`]) and by the start and end of each request ([`InFlight`]).
//! hyper's own header timer is not used: it runs from the end of the
//! previous response, so it cannot tell an idle keep-alive connection from
//! a slow head. Nor is a timer armed per request (a `tokio::time::timeout`
//! around the body costs about 8% of the requests per second under load):
//! the watcher wakes once per `min(header, idle)` at most while requests
//! follow each other closely, and is woken early only when a deadline
//! falls before its next wake.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::options::Limits;

/// A request's deadline for arriving in full, set by
/// [`serve_with`](super::serve_with) on each request for the handler,
/// which reads the body until it passes.
#[derive(Clone)]
pub(in crate::http) struct ReceiveBy {
    pub(super) activity: Arc<Activity>,
    /// Which request of the connection this is.
    pub(super) request: u64,
}

impl ReceiveBy {
    /// The request timeout, for the error message.
    pub(in crate::http) fn limit(&self) -> Duration {
        Duration::from_millis(self.activity.request)
    }

    /// Completes once the request is past its time.
    pub(in crate::http) async fn passed(&self) {
        loop {
            let notified = self.activity.give_up.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.activity.state.lock().expired == self.request {
                return;
            }
            notified.await;
        }
    }
}

/// What one connection's watcher knows of it. Its lock is taken by the
/// connection's own task (reads, requests) and by its watcher: never
/// contended for long.
pub(super) struct Activity {
    epoch: Instant,
    /// [`Limits::header`], in milliseconds since `epoch` (as all times here).
    header: u64,
    /// [`Limits::idle`].
    idle: u64,
    /// [`Limits::request`].
    request: u64,
    state: Mutex<State>,
    /// Wakes the watcher before its time.
    changed: Notify,
    /// Wakes the handler of a request past its time.
    give_up: Notify,
}

#[derive(Debug, Default, PartialEq)]
struct State {
    /// Requests being answered (at most one: HTTP/1 answers in order).
    in_flight: usize,
    /// Requests begun so far; the latest one's number.
    begun: u64,
    /// When the last response was handed to hyper (or the accept).
    idle_since: u64,
    /// When the head being waited for began: its first byte, or the accept
    /// for a fresh connection; `None` while idle.
    head_since: Option<u64>,
    /// When the request being answered must have arrived in full.
    request_due: u64,
    /// The number of the request told it is past its time (0: none).
    expired: u64,
    /// When the watcher looks next.
    wake_at: u64,
}

/// What the watcher does next.
#[derive(Debug, PartialEq)]
enum Next {
    /// Drop the connection: it is past a limit.
    Close,
    /// Look again at this time.
    WakeAt(u64),
}

impl Activity {
    pub(super) fn new(limits: Limits) -> Activity {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        Activity {
            epoch: Instant::now(),
            header: millis(limits.header),
            idle: millis(limits.idle),
            request: millis(limits.request),
            state: Mutex::new(State {
                head_since: Some(0),
                ..State::default()
            }),
            changed: Notify::new(),
            give_up: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn instant(&self, millis: u64) -> Instant {
        self.epoch + Duration::from_millis(millis)
    }

    /// Bytes arrived: an idle connection is now reading a head.
    fn bytes_arrived(&self) {
        let mut state = self.state.lock();
        if state.head_since.is_none() {
            let now = self.now();
            state.head_since = Some(now);
            if now.saturating_add(self.header) < state.wake_at {
                self.changed.notify_one();
            }
        }
    }

    /// A request's head is complete: returns its number.
    pub(super) fn request_began(&self) -> u64 {
        let mut state = self.state.lock();
        state.in_flight += 1;
        state.begun += 1;
        // `None`: a pipelined request, read while the previous one was answered.
        let since = state.head_since.take().unwrap_or_else(|| self.now());
        state.request_due = since.saturating_add(self.request);
        if state.request_due < state.wake_at {
            self.changed.notify_one();
        }
        state.begun
    }

    /// The response is handed to hyper: the connection is idle.
    fn request_ended(&self) {
        let mut state = self.state.lock();
        state.in_flight -= 1;
        state.idle_since = self.now();
        state.head_since = None;
    }

    /// What the watcher does as of `now`; tells the handler of a request
    /// past its time.
    fn next(&self, now: u64) -> Next {
        let mut state = self.state.lock();
        let recheck = now.saturating_add(self.header.min(self.idle));
        let wake = if state.in_flight > 0 {
            if state.request_due > now {
                state.request_due.min(recheck)
            } else {
                if state.expired != state.begun {
                    state.expired = state.begun;
                    self.give_up.notify_waiters();
                }
                recheck
            }
        } else if let Some(since) = state.head_since {
            let due = since.saturating_add(self.header);
            if due <= now {
                return Next::Close;
            }
            due
        } else {
            let due = state.idle_since.saturating_add(self.idle);
            if due <= now {
                return Next::Close;
            }
            // A request that follows closely moves no deadline before this.
            let early = state.idle_since.saturating_add(self.header.min(self.idle));
            if early > now { early.min(due) } else { due }
        };
        state.wake_at = wake;
        Next::WakeAt(wake)
    }

    /// Whether the connection has not begun a request yet.
    fn never_used(&self) -> bool {
        self.state.lock().begun == 0
    }
}

/// Marks a request in flight until dropped (answered, or abandoned with
/// its connection).
pub(super) struct InFlight(pub(super) Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// Completes when the connection is past its limit, when the server is
/// gone, or, once the server is stopping, if the connection never began a
/// request (hyper's graceful shutdown waits for such a connection's first
/// request; the others it closes itself once their responses are written).
pub(super) async fn watch_limits(activity: &Activity, mut stopping: watch::Receiver<bool>) {
    let sleep = tokio::time::sleep_until(activity.epoch);
    let mut sleep = std::pin::pin!(sleep);
    loop {
        if *stopping.borrow_and_update() && activity.never_used() {
            return;
        }
        match activity.next(activity.now()) {
            Next::Close => return,
            Next::WakeAt(wake) => sleep.as_mut().reset(activity.instant(wake)),
        }
        tokio::select! {
            () = &mut sleep => {}
            () = activity.changed.notified() => {}
            changed = stopping.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// A connection's stream, telling its [`Activity`] when bytes arrive.
pub(super) struct Tracked {
    pub(super) stream: TcpStream,
    pub(super) activity: Arc<Activity>,
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
    use super::super::options::{MAX_TIMEOUT, ServeOptions};
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
        let activity = Arc::new(Activity::new(limits()));
        // Fresh: the head is waited for from the accept.
        assert_eq!(activity.next(0), Next::WakeAt(10_000));
        assert_eq!(activity.next(9_999), Next::WakeAt(10_000));
        assert_eq!(activity.next(10_000), Next::Close);
        assert_eq!(activity.request_began(), 1);
        assert!(!activity.never_used());
        // In flight: a look every 10 s until the request is due at 30 s.
        assert_eq!(activity.next(25_000), Next::WakeAt(30_000));
        let receive = ReceiveBy {
            activity: Arc::clone(&activity),
            request: 1,
        };
        assert_eq!(receive.limit(), Duration::from_secs(30));
        assert_eq!(activity.next(30_000), Next::WakeAt(40_000));
        assert_eq!(activity.state.lock().expired, 1);
        // The handler learns it (at once: it is already past).
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(receive.passed());
        {
            let mut state = activity.state.lock();
            state.in_flight = 0;
            state.idle_since = 70_000;
        }
        // Idle since 70 s: a look at 80 s, closed at 130 s.
        assert_eq!(activity.next(70_000), Next::WakeAt(80_000));
        assert_eq!(activity.next(80_000), Next::WakeAt(130_000));
        assert_eq!(activity.next(130_000), Next::Close);
        // A head begun at 100 s has until 110 s.
        activity.state.lock().head_since = Some(100_000);
        assert_eq!(activity.next(100_000), Next::WakeAt(110_000));
        assert_eq!(activity.next(110_000), Next::Close);
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
        let activity = Activity::new(limits);
        assert_ne!(activity.next(activity.now()), Next::Close);
        activity.request_began();
        assert_ne!(activity.next(activity.now()), Next::Close);
    }
}
