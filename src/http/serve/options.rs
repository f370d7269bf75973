//! The options of [`serve_with`](super::serve_with): how long a client may
//! take, and how many connections may be open at once.

use std::time::Duration;

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
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 86_400);

/// How [`serve_with`](super::serve_with) treats connections: the limits
/// that keep slow or idle clients from holding the server's file
/// descriptors.
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

    pub(super) fn limits(&self) -> Limits {
        Limits {
            header: self.header_read_timeout.min(MAX_TIMEOUT),
            idle: self.idle_timeout.min(MAX_TIMEOUT),
            request: self.request_timeout.min(MAX_TIMEOUT),
        }
    }
}

/// The per-connection timeouts, each at most [`MAX_TIMEOUT`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) header: Duration,
    pub(super) idle: Duration,
    pub(super) request: Duration,
}
