//! Counters: a (class, path) pair, and the class name rules.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The engine-wide number of a counter; cells are stored under it.
pub(crate) type CounterId = u32;

/// The longest accepted class name, in bytes.
pub const MAX_CLASS_BYTES: usize = 100;

/// The prefix reserved for selector regexes (`regex('…')`).
const REGEX_PREFIX: &str = "regex(";

/// A counter: one (class, path) pair, registered once engine-wide.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CounterKey {
    /// The kind of action counted, e.g. `_purchases`.
    pub class: String,
    /// The extra classification, e.g. `/news/sport`, or `/`.
    pub path: String,
}

impl CounterKey {
    /// A counter key from a class and a path.
    pub fn new(class: impl Into<String>, path: impl Into<String>) -> Self {
        CounterKey {
            class: class.into(),
            path: path.into(),
        }
    }
}

impl<C: Into<String>, P: Into<String>> From<(C, P)> for CounterKey {
    fn from((class, path): (C, P)) -> Self {
        CounterKey::new(class, path)
    }
}

/// Checks a class name: 1..=100 bytes, no whitespace or ASCII control characters,
/// not starting with `regex(`.
pub fn validate_class(class: &str) -> Result<()> {
    let invalid = |reason| Error::InvalidClass {
        class: class.to_owned(),
        reason,
    };
    if class.is_empty() {
        return Err(invalid("a class must not be empty"));
    }
    if class.len() > MAX_CLASS_BYTES {
        return Err(invalid("a class must be at most 100 bytes"));
    }
    // The class rules: whitespace (Unicode's) and ASCII control characters; other
    // characters, C1 controls among them, are allowed.
    if class
        .chars()
        .any(|c| c.is_whitespace() || c.is_ascii_control())
    {
        return Err(invalid(
            "a class must not contain whitespace or ASCII control characters",
        ));
    }
    if class.starts_with(REGEX_PREFIX) {
        return Err(invalid(
            "a class must not start with \"regex(\", the selector syntax",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_rules() {
        assert!(validate_class("_purchases").is_ok());
        assert!(validate_class(&"x".repeat(100)).is_ok());
        for bad in [
            String::new(),
            "x".repeat(101),
            "a b".into(),
            "a\tb".into(),
            "regex('x')".into(),
            "a\u{0}".into(),
        ] {
            assert!(
                matches!(validate_class(&bad), Err(Error::InvalidClass { .. })),
                "{bad:?}"
            );
        }
    }
}
