//! Reading a subject's counters.

use super::Tally;
use crate::error::Result;
use crate::query::{CompiledRead, CounterRow, Selector, read_rows};
use crate::subject::Subject;

impl Tally {
    /// Reads a subject's counters. An empty selector list reads
    /// every counter, period `total`; a subject with no counters yields no rows.
    ///
    /// Rows exist only for periods that hold data: a month, day or
    /// `last7Days` in which the cell received nothing yields no row. Each
    /// row appears once however many selectors match it. At most
    /// [`Config::max_selectors`](crate::Config::max_selectors) selectors, and at most
    /// [`Config::max_rows`](crate::Config::max_rows) rows in the answer: past either, the read
    /// fails ([`Error::TooManySelectors`](crate::Error::TooManySelectors), [`Error::TooManyRows`](crate::Error::TooManyRows)).
    pub fn get<'s>(
        &self,
        subject: impl Into<Subject<'s>>,
        selectors: &[Selector],
    ) -> Result<Vec<CounterRow>> {
        let now = self.now_secs();
        let uid = self.uid_of(subject.into(), now)?;
        let config = &self.inner.config;
        let read = CompiledRead::compile(
            selectors,
            self.inner.registry.max_depth(),
            config.max_selectors,
        )?;
        let horizon = self.inner.retention.horizon(now);
        // The registry's lock is taken before the shard's, never inside it.
        let view = self.inner.registry.view();
        let rows = self.inner.store.read(&uid, |cells| {
            read_rows(cells.cells(), &view, &read, now, horizon, config.max_rows)
        });
        rows.unwrap_or_else(|| Ok(Vec::new()))
    }
}
