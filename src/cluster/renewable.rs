//! A connection replaced by a new one when commands on it time out: the
//! shared connection, and each of the wait option's leased ones.
//!
//! After a master dies, the client's connection can go on routing a slot
//! to the dead node, or holding commands for it, for longer than the
//! cluster takes to promote its replica: every attempt then ends at the
//! response timeout, although the cluster is whole again. A new
//! connection reads the slots afresh from the seeds. So a command that
//! timed out renews the connection before it is sent again; the commands
//! that timed out on the same connection at the same moment renew it
//! once.

use std::time::Duration;

use parking_lot::RwLock;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

/// A connection callers clone, and the client that makes new ones.
pub(super) struct RenewableConnection {
    client: ClusterClient,
    current: RwLock<Current>,
    /// Held while a new connection is made, so that one is made at a time.
    renewing: tokio::sync::Mutex<()>,
}

struct Current {
    connection: ClusterConnection,
    /// How many times the connection was renewed.
    generation: u64,
}

/// A clone of the current connection, and which one it was.
pub(super) struct Leased {
    pub(super) connection: ClusterConnection,
    pub(super) generation: u64,
}

impl RenewableConnection {
    pub(super) fn new(client: ClusterClient, connection: ClusterConnection) -> Self {
        RenewableConnection {
            client,
            current: RwLock::new(Current {
                connection,
                generation: 0,
            }),
            renewing: tokio::sync::Mutex::new(()),
        }
    }

    /// A clone of the current connection (cheap: it is multiplexed).
    pub(super) fn get(&self) -> Leased {
        let current = self.current.read();
        Leased {
            connection: current.connection.clone(),
            generation: current.generation,
        }
    }

    /// Replaces the connection of `generation` by a new one, unless it was
    /// replaced already, trying for `within` at most. A connection that
    /// cannot be made leaves the current one in place: the caller's next
    /// attempt will tell.
    pub(super) async fn renew(&self, generation: u64, within: Duration) {
        let _renewing = self.renewing.lock().await;
        if self.current.read().generation != generation {
            return;
        }
        let made = tokio::time::timeout(within, self.client.get_async_connection()).await;
        if let Ok(Ok(connection)) = made {
            let mut current = self.current.write();
            current.connection = connection;
            current.generation += 1;
        }
    }
}
