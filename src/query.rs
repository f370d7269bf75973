//! Reading counters: selectors, their compiled matchers, and rows.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::calendar::format_last_updated;
use crate::counter::CounterId;
use crate::counter::validate_class;
use crate::error::{Error, Result};
use crate::path::validate_path;
use crate::period::{Cell, Horizon, Period, PeriodReading};
use crate::registry::RegistryView;

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

/// The compiled-size budget that all the regular expressions of one read
/// share: each distinct expression gets an equal part, and at most
/// [`REGEX_SIZE_LIMIT`]. A request with many expressions therefore cannot
/// take more memory to compile and run them than one with a few.
const READ_REGEX_BUDGET: usize = 8 << 20;

/// A class or path matcher; a regex is an index into [`CompiledRead::regexes`].
#[derive(PartialEq)]
enum TextMatcher {
    Any,
    Exact(String),
    Regex(usize),
}

impl TextMatcher {
    fn matches(&self, text: &str, regexes: &[Regex]) -> bool {
        match self {
            TextMatcher::Any => true,
            TextMatcher::Exact(exact) => exact == text,
            TextMatcher::Regex(i) => regexes[*i].is_match(text),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum PeriodMatcher {
    Exact(Period),
    Regex(usize),
}

/// A validated selector, ready to match.
#[derive(PartialEq)]
struct CompiledSelector {
    class: TextMatcher,
    path: TextMatcher,
    period: PeriodMatcher,
}

/// The selectors of one read, validated and compiled: each distinct
/// `regex('…')` pattern once, within the read's shared budget.
pub(crate) struct CompiledRead {
    selectors: Vec<CompiledSelector>,
    regexes: Vec<Regex>,
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

/// Compiles one expression within `size_limit` bytes (compiled, and for
/// its lazy DFA's cache).
fn compile_regex(pattern: &str, size_limit: usize) -> Result<Regex> {
    let invalid = |reason: String| Error::InvalidRegex {
        pattern: pattern.to_owned(),
        reason,
    };
    RegexBuilder::new(pattern)
        .size_limit(size_limit)
        .dfa_size_limit(size_limit)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) if size_limit < REGEX_SIZE_LIMIT => invalid(format!(
                "the expressions of one read share {READ_REGEX_BUDGET} bytes once compiled, \
                 {size_limit} bytes each here, and this one needs more"
            )),
            other => invalid(other.to_string()),
        })
}

/// The distinct patterns of a read, each compiled once.
#[derive(Default)]
struct Patterns<'s> {
    texts: Vec<&'s str>,
    /// For each pattern, the first selector that uses it (its errors name it).
    first_use: Vec<usize>,
}

impl<'s> Patterns<'s> {
    fn index_of(&mut self, pattern: &'s str, selector: usize) -> usize {
        match self.texts.iter().position(|&p| p == pattern) {
            Some(i) => i,
            None => {
                self.texts.push(pattern);
                self.first_use.push(selector);
                self.texts.len() - 1
            }
        }
    }

    fn compile(self) -> Result<Vec<Regex>> {
        let share = (READ_REGEX_BUDGET / self.texts.len().max(1)).min(REGEX_SIZE_LIMIT);
        self.texts
            .iter()
            .zip(&self.first_use)
            .map(|(pattern, &selector)| {
                compile_regex(pattern, share).map_err(|e| e.at_entry(selector))
            })
            .collect()
    }
}

impl CompiledRead {
    /// Validates and compiles a read's selectors: at most `max_selectors`
    /// of them (checked before anything is compiled); exact classes and
    /// paths must be syntactically valid for an engine of depth
    /// `max_depth`. No selectors reads every counter, period `total`.
    pub(crate) fn compile(
        selectors: &[Selector],
        max_depth: usize,
        max_selectors: usize,
    ) -> Result<Self> {
        if selectors.len() > max_selectors {
            return Err(Error::TooManySelectors {
                count: selectors.len(),
                max: max_selectors,
            });
        }
        if selectors.is_empty() {
            return Ok(CompiledRead {
                selectors: vec![CompiledSelector {
                    class: TextMatcher::Any,
                    path: TextMatcher::Any,
                    period: PeriodMatcher::Exact(Period::Total),
                }],
                regexes: Vec::new(),
            });
        }
        let mut patterns = Patterns::default();
        let mut compiled = Vec::new();
        for (i, selector) in selectors.iter().enumerate() {
            let selector = compile_selector(selector, max_depth, &mut |p| patterns.index_of(p, i))
                .map_err(|e| e.at_entry(i))?;
            // A selector equal to an earlier one matches nothing more.
            if !compiled.contains(&selector) {
                compiled.push(selector);
            }
        }
        Ok(CompiledRead {
            selectors: compiled,
            regexes: patterns.compile()?,
        })
    }
}

/// Validates one selector; its regex patterns become indices by `pattern`.
fn compile_selector<'s>(
    selector: &'s Selector,
    max_depth: usize,
    pattern: &mut dyn FnMut(&'s str) -> usize,
) -> Result<CompiledSelector> {
    let class = match regex_pattern(&selector.class)? {
        Some(p) => TextMatcher::Regex(pattern(checked_length(p)?)),
        None => {
            validate_class(&selector.class)?;
            TextMatcher::Exact(selector.class.clone())
        }
    };
    let path = match selector.path.as_deref() {
        None => TextMatcher::Any,
        Some(path) => match regex_pattern(path)? {
            Some(p) => TextMatcher::Regex(pattern(checked_length(p)?)),
            None => {
                validate_path(path, max_depth)?;
                TextMatcher::Exact(path.to_owned())
            }
        },
    };
    let period = match selector.period.as_deref() {
        None => PeriodMatcher::Exact(Period::Total),
        Some(period) => match regex_pattern(period)? {
            Some(p) => PeriodMatcher::Regex(pattern(checked_length(p)?)),
            None => PeriodMatcher::Exact(period.parse()?),
        },
    };
    Ok(CompiledSelector {
        class,
        path,
        period,
    })
}

fn checked_length(pattern: &str) -> Result<&str> {
    if pattern.len() > MAX_REGEX_BYTES {
        return Err(Error::InvalidRegex {
            pattern: pattern.to_owned(),
            reason: format!("an expression must be at most {MAX_REGEX_BYTES} bytes"),
        });
    }
    Ok(pattern)
}

/// What the selectors of a read want of one cell: its exact periods and
/// its period regexes, each once.
#[derive(Default)]
struct Wanted {
    exact: Vec<Period>,
    regexes: Vec<usize>,
}

impl Wanted {
    fn clear(&mut self) {
        self.exact.clear();
        self.regexes.clear();
    }

    fn add(&mut self, matcher: PeriodMatcher) {
        match matcher {
            PeriodMatcher::Exact(period) if !self.exact.contains(&period) => {
                self.exact.push(period);
            }
            PeriodMatcher::Regex(i) if !self.regexes.contains(&i) => self.regexes.push(i),
            _ => {}
        }
    }
}

/// Reads the rows a subject's cells yield for `read`, sorted by class,
/// path and period text. Each (cell, period) row is built once however
/// many selectors match it, and the read stops with
/// [`Error::TooManyRows`] once it would return more than `max_rows`.
pub(crate) fn read_rows<'c>(
    cells: impl IntoIterator<Item = (CounterId, &'c Cell)>,
    registry: &RegistryView<'_>,
    read: &CompiledRead,
    now_secs: i64,
    horizon: Horizon,
    max_rows: usize,
) -> Result<Vec<CounterRow>> {
    let mut rows = Vec::new();
    let mut wanted = Wanted::default();
    let mut matched: Vec<Period> = Vec::new();
    for (id, cell) in cells {
        let (class, path) = registry.names(id);
        wanted.clear();
        for selector in &read.selectors {
            if selector.class.matches(class, &read.regexes)
                && selector.path.matches(path, &read.regexes)
            {
                wanted.add(selector.period);
            }
        }
        if wanted.exact.is_empty() && wanted.regexes.is_empty() {
            continue;
        }
        let mut push = |reading: PeriodReading| {
            if rows.len() == max_rows {
                return Err(Error::TooManyRows { max: max_rows });
            }
            rows.push(CounterRow {
                class: class.to_owned(),
                path: path.to_owned(),
                period: reading.period,
                count: reading.amount.count,
                value: reading.amount.value,
                last_updated: format_last_updated(reading.last_updated),
                last_updated_timestamp: reading.last_updated,
            });
            Ok(())
        };
        matched.clear();
        if !wanted.regexes.is_empty() {
            for reading in cell.periods(horizon) {
                let text = reading.period.to_string();
                if wanted
                    .regexes
                    .iter()
                    .any(|&i| read.regexes[i].is_match(&text))
                {
                    matched.push(reading.period);
                    push(reading)?;
                }
            }
        }
        for &period in &wanted.exact {
            if matched.contains(&period) {
                continue;
            }
            if let Some(reading) = cell.reading(period, now_secs, horizon) {
                push(reading)?;
            }
        }
    }
    rows.sort_by(|a, b| {
        (&a.class, &a.path, a.period.text_key()).cmp(&(&b.class, &b.path, b.period.text_key()))
    });
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_syntax_is_checked() {
        assert_eq!(regex_pattern("regex('^a')").unwrap(), Some("^a"));
        assert_eq!(regex_pattern("plain").unwrap(), None);
        assert!(regex_pattern("regex(^a)").is_err());
        assert!(compile_regex("(", REGEX_SIZE_LIMIT).is_err());
        assert!(checked_length(&"a".repeat(MAX_REGEX_BYTES + 1)).is_err());
        // Huge repetition counts exceed the size limit instead of hanging.
        assert!(compile_regex("(a{1000}){1000}", REGEX_SIZE_LIMIT).is_err());
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
            let err = CompiledRead::compile(&[Selector::class("c"), selector.clone()], 2, 100)
                .err()
                .unwrap_or_else(|| panic!("{selector:?} compiled"));
            assert!(matches!(err, Error::Entry { index: 1, .. }), "{err:?}");
        }
        assert!(
            CompiledRead::compile(&[Selector::class("c").period("regex('^26')")], 2, 100).is_ok()
        );
    }

    #[test]
    fn a_pattern_used_by_many_selectors_compiles_once() {
        let selectors = vec![Selector::class("regex('')").period("regex('')"); 100];
        let read = CompiledRead::compile(&selectors, 2, 100).unwrap();
        assert_eq!((read.selectors.len(), read.regexes.len()), (1, 1));
    }
}
