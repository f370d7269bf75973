//! The registry shared through the cluster: a log of registry changes in
//! one slot, which every instance replays into its own copy.
//!
//! The log's length is the registry's version. A change is planned
//! against the local copy at the latest version — so every check of the
//! embedded registry holds, `max_registrations` included — and appended
//! by a script only if the log is still at that version; otherwise the
//! instance reads what it missed and plans again. Replaying the same log
//! gives every instance the same counter ids: they are assigned once,
//! cluster-wide.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use redis::Script;
use redis::cluster_async::ClusterConnection;

use super::unavailable;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::registry::{PlannedChanges, Registry, RegistryChange};

/// How many times a change is planned again when other instances keep
/// changing the registry first.
const MAX_PLANS: usize = 16;

/// This instance's copy of the shared registry.
pub(super) struct SharedRegistry {
    local: Registry,
    /// Log elements replayed into `local`.
    applied: AtomicUsize,
    /// Held while reading the log or changing the registry, so that
    /// changes are replayed in order, once.
    sync: tokio::sync::Mutex<()>,
    /// Set after the store failed a call: the copy is read again before
    /// it is trusted (the instance may have missed changes while
    /// disconnected).
    stale: AtomicBool,
    log_key: String,
    append: Script,
}

impl SharedRegistry {
    pub(super) fn new(config: &Config, log_key: String) -> Self {
        SharedRegistry {
            local: Registry::new(config.max_path_depth, config.max_registrations)
                .with_max_counters(config.max_counters),
            applied: AtomicUsize::new(0),
            sync: tokio::sync::Mutex::new(()),
            stale: AtomicBool::new(true),
            log_key,
            append: Script::new(include_str!("registry.lua")),
        }
    }

    /// The local copy.
    pub(super) fn local(&self) -> &Registry {
        &self.local
    }

    /// The version the local copy is at.
    pub(super) fn version(&self) -> usize {
        self.applied.load(Ordering::Acquire)
    }

    /// Marks the copy as possibly behind: after a failed call to the store.
    pub(super) fn mark_stale(&self) {
        self.stale.store(true, Ordering::Release);
    }

    /// Whether the copy must be read again before it is used.
    pub(super) fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Acquire)
    }

    /// Replays the changes the copy has not seen yet.
    pub(super) async fn refresh(&self, connection: &mut ClusterConnection) -> Result<()> {
        let _sync = self.sync.lock().await;
        self.pull(connection).await
    }

    async fn pull(&self, connection: &mut ClusterConnection) -> Result<()> {
        let from = self.applied.load(Ordering::Acquire);
        let items: Vec<String> = redis::cmd("LRANGE")
            .arg(&self.log_key)
            .arg(from)
            .arg(-1)
            .query_async(connection)
            .await
            .map_err(|e| {
                self.mark_stale();
                unavailable(e)
            })?;
        for (offset, item) in items.iter().enumerate() {
            let corrupt = |reason: String| Error::StoreCorrupt {
                key: self.log_key.clone(),
                reason: format!("element {}: {reason}", from + offset),
            };
            let changes: Vec<RegistryChange> =
                serde_json::from_str(item).map_err(|e| corrupt(e.to_string()))?;
            self.local.replay(&changes).map_err(corrupt)?;
            self.applied.store(from + offset + 1, Ordering::Release);
        }
        self.stale.store(false, Ordering::Release);
        Ok(())
    }

    /// Makes a change planned by `plan` against the latest version: the
    /// local copy is brought up to date, the change planned (and checked),
    /// then appended if nobody changed the registry meanwhile, else
    /// planned again. A plan that changes nothing in the log (a pair
    /// registered already, or only marking system classes) is committed
    /// locally.
    pub(super) async fn change<F>(&self, connection: &mut ClusterConnection, plan: F) -> Result<()>
    where
        F: Fn(&Registry) -> Result<PlannedChanges<'_>>,
    {
        let _sync = self.sync.lock().await;
        for _ in 0..MAX_PLANS {
            self.pull(connection).await?;
            let version = self.version();
            let changes = {
                let planned = plan(&self.local)?;
                if planned.changes().is_empty() {
                    planned.commit();
                    return Ok(());
                }
                planned.changes().to_vec()
                // Dropped uncommitted: the copy changes only by replay.
            };
            let encoded = serde_json::to_string(&changes).map_err(|e| Error::StoreCorrupt {
                key: self.log_key.clone(),
                reason: format!("a registry change does not encode: {e}"),
            })?;
            let appended: i64 = self
                .append
                .key(&self.log_key)
                .arg(version)
                .arg(encoded)
                .invoke_async(connection)
                .await
                .map_err(|e| {
                    self.mark_stale();
                    unavailable(e)
                })?;
            if appended == 1 {
                self.pull(connection).await?;
                // What the plan marks without a change to log (system
                // classes) takes effect now; if others changed the
                // registry since, their changes stand.
                let planned = plan(&self.local)?;
                if planned.changes().is_empty() {
                    planned.commit();
                }
                return Ok(());
            }
        }
        Err(Error::StoreUnavailable {
            reason: format!("the registry changed under each of {MAX_PLANS} attempts to change it"),
        })
    }
}
