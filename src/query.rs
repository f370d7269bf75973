//! Reading counters (SPEC §7): selectors, their compiled matchers, and rows.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::calendar::format_last_updated;
use crate::counter::validate_class;
use crate::error::{Error, Result};
use crate::path::validate_path;
use crate::period::{Horizon, Period, PeriodReading};
use crate::registry::RegistryView;
use crate::store::CellsView;

/// The longest accepted `regex('…')` pattern, in bytes.
pub const MAX_REGEX_BYTES: usize = 1024;
/// The compiled-size limit of a selector regex, in bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// What to read: a class (exact or `regex('…')`), optionally a path and a period.
///
/// ```
/// use tally::Selector;
/// let every_sport_day = Selector::class("shares").path("/sport").period("regex('^\\d{6}$')");
/// assert_eq!(every_sport_day.path.as_deref(), Some("/sport"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    /// An exact class name, or `regex('<re>')`.
    pub class: String,
    /// An exact path, or `regex('<re>')`; `None` selects every path of the class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `total` (the default), `last7Days`, `YYMM`, `YYMMDD`, or `regex('<re>')`
    /// over the stored keys (`total` and the month and day keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
}

impl Selector {
    /// Selects every path of `class` (exact, or `regex('…')`), period `total`.
    pub fn class(class: impl Into<String>) -> Self {
        Selector {
            class: class.into(),
            path: None,
            period: None,
        }
    }

    /// Narrows the selector to a path (exact, or `regex('…')`).
    #[must_use]
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Chooses the period (see [`Selector::period`](Selector#structfield.period)).
    #[must_use]
    pub fn period(mut self, period: impl Into<String>) -> Self {
        self.period = Some(period.into());
        self
    }
}

/// One row of a `getCounters` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CounterRow {
    /// The counter class.
    pub class: String,
    /// The counter path.
    pub path: String,
    /// The period the amounts are for.
    pub period: Period,
    /// The summed counts.
    pub count: i64,
    /// The summed values.
    pub value: i64,
    /// The latest event time counted, `yyyy-mm-dd hh:mm:ssZ` (UTC).
    pub last_updated: String,
    /// The same instant in Unix seconds.
    pub last_updated_timestamp: i64,
}

enum TextMatcher {
    Any,
    Exact(String),
    Regex(Regex),
}

impl TextMatcher {
    fn matches(&self, text: &str) -> bool {
        match self {
            TextMatcher::Any => true,
            TextMatcher::Exact(exact) => exact == text,
            TextMatcher::Regex(re) => re.is_match(text),
        }
    }
}

enum PeriodMatcher {
    Exact(Period),
    Regex(Regex),
}

/// A validated selector, ready to match.
pub(crate) struct CompiledSelector {
    class: TextMatcher,
    path: TextMatcher,
    period: PeriodMatcher,
}

/// The pattern inside `regex('…')`, `Ok(None)` for plain text, or an error
/// for text that starts like a regex but is not one.
fn regex_pattern(text: &str) -> Result<Option<&str>> {
    if !text.starts_with("regex(") {
        return Ok(None);
    }
    text.strip_prefix("regex('")
        .and_then(|rest| rest.strip_suffix("')"))
        .map(Some)
        .ok_or_else(|| Error::InvalidRegex {
            pattern: text.to_owned(),
            reason: "write a regular expression as regex('<expression>')".to_owned(),
        })
}

fn compile_regex(pattern: &str) -> Result<Regex> {
    let invalid = |reason: String| Error::InvalidRegex {
        pattern: pattern.to_owned(),
        reason,
    };
    if pattern.len() > MAX_REGEX_BYTES {
        return Err(invalid(format!(
            "an expression must be at most {MAX_REGEX_BYTES} bytes"
        )));
    }
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| invalid(e.to_string()))
}

impl CompiledSelector {
    /// Validates and compiles a selector; exact classes and paths must be
    /// syntactically valid for an engine of depth `max_depth`.
    pub(crate) fn compile(selector: &Selector, max_depth: usize) -> Result<Self> {
        let class = match regex_pattern(&selector.class)? {
            Some(pattern) => TextMatcher::Regex(compile_regex(pattern)?),
            None => {
                validate_class(&selector.class)?;
                TextMatcher::Exact(selector.class.clone())
            }
        };
        let path = match selector.path.as_deref() {
            None => TextMatcher::Any,
            Some(path) => match regex_pattern(path)? {
                Some(pattern) => TextMatcher::Regex(compile_regex(pattern)?),
                None => {
                    validate_path(path, max_depth)?;
                    TextMatcher::Exact(path.to_owned())
                }
            },
        };
        let period = match selector.period.as_deref() {
            None => PeriodMatcher::Exact(Period::Total),
            Some(period) => match regex_pattern(period)? {
                Some(pattern) => PeriodMatcher::Regex(compile_regex(pattern)?),
                None => PeriodMatcher::Exact(period.parse()?),
            },
        };
        Ok(CompiledSelector {
            class,
            path,
            period,
        })
    }

    /// Every counter of the subject, period `total`: what an empty selector list reads.
    pub(crate) fn everything() -> Self {
        CompiledSelector {
            class: TextMatcher::Any,
            path: TextMatcher::Any,
            period: PeriodMatcher::Exact(Period::Total),
        }
    }
}

/// Reads the rows a subject's cells yield for `selectors`, sorted by class,
/// path and period text, without duplicates.
pub(crate) fn read_rows(
    cells: CellsView<'_>,
    registry: &RegistryView<'_>,
    selectors: &[CompiledSelector],
    now_secs: i64,
    horizon: Horizon,
) -> Vec<CounterRow> {
    let mut rows = Vec::new();
    for (id, cell) in cells.cells() {
        let (class, path) = registry.names(id);
        for selector in selectors {
            if !selector.class.matches(class) || !selector.path.matches(path) {
                continue;
            }
            let row = |reading: PeriodReading| CounterRow {
                class: class.to_owned(),
                path: path.to_owned(),
                period: reading.period,
                count: reading.amount.count,
                value: reading.amount.value,
                last_updated: format_last_updated(reading.last_updated),
                last_updated_timestamp: reading.last_updated,
            };
            match &selector.period {
                PeriodMatcher::Exact(period) => {
                    rows.extend(cell.reading(*period, now_secs, horizon).map(row));
                }
                PeriodMatcher::Regex(re) => rows.extend(
                    cell.periods(horizon)
                        .filter(|r| re.is_match(&r.period.to_string()))
                        .map(row),
                ),
            }
        }
    }
    rows.sort_by(|a, b| {
        (&a.class, &a.path, a.period.text_key()).cmp(&(&b.class, &b.path, b.period.text_key()))
    });
    rows.dedup_by(|a, b| a.class == b.class && a.path == b.path && a.period == b.period);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_syntax_is_checked() {
        assert_eq!(regex_pattern("regex('^a')").unwrap(), Some("^a"));
        assert_eq!(regex_pattern("plain").unwrap(), None);
        assert!(regex_pattern("regex(^a)").is_err());
        assert!(compile_regex("(").is_err());
        assert!(compile_regex(&"a".repeat(MAX_REGEX_BYTES + 1)).is_err());
        // Huge repetition counts exceed the size limit instead of hanging.
        assert!(compile_regex("(a{1000}){1000}").is_err());
    }

    #[test]
    fn selectors_validate_their_parts() {
        let bad = [
            Selector::class("has space"),
            Selector::class("c").path("no-slash"),
            Selector::class("c").path("/a/b/c"),
            Selector::class("c").period("yesterday"),
            Selector::class("regex('(')"),
        ];
        for selector in bad {
            assert!(
                CompiledSelector::compile(&selector, 2).is_err(),
                "{selector:?}"
            );
        }
        assert!(CompiledSelector::compile(&Selector::class("c").period("regex('^26')"), 2).is_ok());
    }
}
