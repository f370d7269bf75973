//! A request parsed from the platform's parameters, ready to run on
//! either store: what each method asks for, in the order the platform
//! checks it.

use super::METHODS;
use super::params::{self, IncrementEntry, Params};
use crate::config::Config;
use crate::counter::CounterKey;
use crate::engine::Increment;
use crate::error::{Error, Result};
use crate::query::Selector;
use crate::subject::Subject;

/// One parsed call.
pub(super) enum Request<'a> {
    /// `accounts.registerCounters`.
    Register(Vec<CounterKey>),
    /// `accounts.unregisterCounters`.
    Unregister(Vec<CounterKey>),
    /// `accounts.getRegisteredCounters`.
    Registered,
    /// `accounts.incrementCounters` with every entry parsed.
    Increment {
        subject: Subject<'a>,
        entries: Vec<IncrementEntry>,
    },
    /// `accounts.incrementCounters` with an entry that does not parse:
    /// `error` answers, unless the store rejects one of the entries
    /// `before` it (when there are any), which is then the first bad one.
    BadIncrement {
        subject: Subject<'a>,
        before: Option<Vec<IncrementEntry>>,
        error: Error,
    },
    /// `accounts.getCounters`.
    Get {
        subject: Subject<'a>,
        selectors: Vec<Selector>,
    },
}

impl<'a> Request<'a> {
    /// Parses the method's parameters within the store's limits.
    pub(super) fn parse(method: &str, params: &Params<'a>, config: &Config) -> Result<Self> {
        match method {
            "accounts.registerCounters" => Ok(Request::Register(params.counter_keys()?)),
            "accounts.unregisterCounters" => Ok(Request::Unregister(params.counter_keys()?)),
            "accounts.getRegisteredCounters" => Ok(Request::Registered),
            "accounts.incrementCounters" => {
                let subject = params.subject()?;
                Ok(match params.increments(config.max_batch) {
                    Ok(entries) => Request::Increment { subject, entries },
                    Err(bad) => Request::BadIncrement {
                        subject,
                        before: bad.before,
                        error: bad.error,
                    },
                })
            }
            "accounts.getCounters" => {
                let subject = params.subject()?;
                let selectors = params.selectors(config.max_selectors)?;
                Ok(Request::Get { subject, selectors })
            }
            other => Err(Error::InvalidValue {
                name: "method".to_owned(),
                reason: format!(
                    "unknown method {:?}; expected one of {}",
                    params::quote_limited(other),
                    METHODS.join(", ")
                ),
            }),
        }
    }
}

/// Parsed incrementCounters entries as the stores take them.
pub(super) fn as_increments(entries: &[IncrementEntry]) -> Vec<Increment<'_>> {
    entries
        .iter()
        .map(|e| {
            Increment::new(&e.class, &e.path)
                .count(e.count)
                .value(e.value)
        })
        .collect()
}
