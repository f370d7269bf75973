//! Reading a subject's counters from the shared store.

use super::shared_registry::SharedRegistry;
use super::{Cluster, cells};
use crate::error::Result;
use crate::query::{CompiledRead, CounterRow, Selector, read_rows};
use crate::subject::Subject;

impl Cluster {
    /// Reads a subject's counters, as [`Tally::get`](crate::Tally::get) does.
    pub async fn get<'s>(
        &self,
        subject: impl Into<Subject<'s>>,
        selectors: &[Selector],
    ) -> Result<Vec<CounterRow>> {
        let now = self.inner.clock.unix_secs();
        let uid = self.uid_of(subject.into(), now).await?;
        let config = &self.inner.config;
        let read = CompiledRead::compile(selectors, config.max_path_depth, config.max_selectors)?;
        self.trusted_registry().await?;
        let key = self.inner.keys.cells(&uid);
        let read_all = redis::cmd("HGETALL").arg(&key).clone();
        let fields: Vec<(String, String)> = self
            .retrying(|mut connection| {
                let read_all = &read_all;
                async move { read_all.query_async(&mut connection).await }
            })
            .await
            .map_err(|e| self.failed(e))?;
        let cells = cells::decode(&key, &fields)?;
        let known = |registry: &SharedRegistry| {
            let count = registry.local().counter_count();
            cells.keys().all(|&id| (id as usize) < count)
        };
        if !known(&self.inner.registry) {
            // Counters another instance created since the last refresh.
            self.refresh_registry().await?;
        }
        let count = self.inner.registry.local().counter_count();
        let view = self.inner.registry.local().view();
        let horizon = self.inner.retention.horizon(now);
        read_rows(
            cells
                .iter()
                .filter(|(id, _)| (**id as usize) < count)
                .map(|(id, cell)| (*id, cell)),
            &view,
            &read,
            now,
            horizon,
            config.max_rows,
        )
    }
}
