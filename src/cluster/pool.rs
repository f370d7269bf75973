//! Connections of their own for batches that wait for replicas.
//!
//! Redis's `WAIT` blocks the connection it is sent on until the replicas
//! answer or its timeout passes, and counts the writes sent on that
//! connection. On the shared multiplexed connection every other call to
//! that node would queue behind it; so with the wait option each batch
//! leases a connection, runs its script and its `WAIT` there, and gives
//! it back.

use parking_lot::Mutex;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::renewable::RenewableConnection;

/// How many batches wait for replicas at once, per instance.
pub(super) const WAITING_CONNECTIONS: usize = 16;

/// Connections leased one batch at a time.
pub(super) struct ConnectionPool {
    free: Mutex<Vec<RenewableConnection>>,
    permits: Semaphore,
}

impl ConnectionPool {
    pub(super) fn new(connections: Vec<RenewableConnection>) -> ConnectionPool {
        ConnectionPool {
            permits: Semaphore::new(connections.len()),
            free: Mutex::new(connections),
        }
    }

    /// A connection no other batch uses until the lease is dropped.
    pub(super) async fn lease(&self) -> Lease<'_> {
        // The semaphore is never closed.
        let permit = self.permits.acquire().await.expect("the pool is open");
        let connection = self
            .free
            .lock()
            .pop()
            .expect("a permit means a free connection");
        Lease {
            pool: self,
            connection: Some(connection),
            _permit: permit,
        }
    }
}

/// A leased connection, given back on drop.
pub(super) struct Lease<'p> {
    pool: &'p ConnectionPool,
    connection: Option<RenewableConnection>,
    _permit: SemaphorePermit<'p>,
}

impl Lease<'_> {
    /// The leased connection.
    pub(super) fn connection(&self) -> &RenewableConnection {
        self.connection.as_ref().expect("held until drop")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.pool.free.lock().push(connection);
        }
    }
}
