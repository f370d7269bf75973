//! Request parameters: looking them up, the subject, and the `counters` JSON.

use std::collections::HashMap;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::counter::CounterKey;
use crate::error::{Error, Result};
use crate::query::Selector;
use crate::subject::Subject;

/// The longest piece of caller text quoted back in an error, in bytes.
const MAX_QUOTED_BYTES: usize = 64;

/// The request's parameters, as the platform receives them.
#[derive(Clone, Copy)]
pub(super) struct Params<'a> {
    pairs: &'a [(&'a str, &'a str)],
}

impl<'a> Params<'a> {
    pub(super) fn new(pairs: &'a [(&'a str, &'a str)]) -> Self {
        Params { pairs }
    }

    /// The value of a parameter the method uses: `None` when absent or
    /// empty, an error when it is given more than once with different
    /// values (a repeat of the same value, as an SDK adding `format=json`
    /// to a query that already has it sends, is that value).
    pub(super) fn get(&self, name: &str) -> Result<Option<&'a str>> {
        let mut found = None;
        for &(key, value) in self.pairs {
            if key == name {
                if found.is_some_and(|first| first != value) {
                    return Err(Error::InvalidValue {
                        name: name.to_owned(),
                        reason: "given more than once, with different values".to_owned(),
                    });
                }
                found = Some(value);
            }
        }
        Ok(found.filter(|value| !value.is_empty()))
    }

    /// The subject: exactly one of `UID` and `regToken`.
    pub(super) fn subject(&self) -> Result<Subject<'a>> {
        match (self.get("UID")?, self.get("regToken")?) {
            (Some(uid), None) => Ok(Subject::Uid(uid)),
            (None, Some(token)) => Ok(Subject::RegToken(token)),
            (Some(_), Some(_)) => Err(Error::BothSubjects),
            (None, None) => Err(missing("UID")),
        }
    }

    /// The `(class, path)` pairs of registerCounters and unregisterCounters.
    pub(super) fn counter_keys(&self) -> Result<Vec<CounterKey>> {
        let entries = self.required_counters()?;
        entries
            .into_iter()
            .enumerate()
            .map(|(i, mut entry)| {
                let class = required_string(&mut entry, i, "class")?;
                let path = required_string(&mut entry, i, "path")?;
                Ok(CounterKey { class, path })
            })
            .collect()
    }

    /// The entries of incrementCounters, parsed in order; a batch longer
    /// than `max_batch` is rejected before any entry is looked at. An entry
    /// whose fields are bad is returned with the entries before it, which
    /// the engine must check first (the first bad entry is named).
    pub(super) fn increments(&self, max_batch: usize) -> Result<Vec<IncrementEntry>, BadEntry> {
        let entries = self.required_counters()?;
        if entries.len() > max_batch {
            return Err(Error::BatchTooLarge {
                len: entries.len(),
                max: max_batch,
            }
            .into());
        }
        let mut parsed = Vec::with_capacity(entries.len());
        for (i, mut entry) in entries.into_iter().enumerate() {
            let fields = (|| {
                Ok(IncrementEntry {
                    class: required_string(&mut entry, i, "class")?,
                    path: required_string(&mut entry, i, "path")?,
                    count: amount(&mut entry, i, "count", 1)?,
                    value: amount(&mut entry, i, "value", 0)?,
                })
            })();
            match fields {
                Ok(fields) => parsed.push(fields),
                Err(error) => {
                    return Err(BadEntry {
                        before: Some(parsed),
                        error,
                    });
                }
            }
        }
        Ok(parsed)
    }

    /// The selectors of getCounters; none (read everything) when `counters`
    /// is absent or `[]`. More than `max_selectors` elements are refused
    /// before any element is parsed.
    pub(super) fn selectors(&self, max_selectors: usize) -> Result<Vec<Selector>> {
        let Some(raw) = self.get("counters")? else {
            return Ok(Vec::new());
        };
        let items = counter_items(raw)?;
        if items.len() > max_selectors {
            return Err(Error::TooManySelectors {
                count: items.len(),
                max: max_selectors,
            });
        }
        objects(items)?
            .into_iter()
            .enumerate()
            .map(|(i, mut entry)| {
                Ok(Selector {
                    class: required_string(&mut entry, i, "class")?,
                    path: optional_string(&mut entry, i, "path")?,
                    period: optional_string(&mut entry, i, "period")?,
                })
            })
            .collect()
    }

    fn required_counters(&self) -> Result<Vec<Entry>> {
        let raw = self.get("counters")?.ok_or_else(|| missing("counters"))?;
        let entries = counter_objects(raw)?;
        if entries.is_empty() {
            return Err(missing("counters"));
        }
        Ok(entries)
    }
}

/// Why incrementCounters' entries could not be parsed: `error`, at the
/// entry after those in `before`; `before` is `None` when the error is
/// not an entry's (`counters` missing, malformed, too long).
#[derive(Debug)]
pub(super) struct BadEntry {
    pub before: Option<Vec<IncrementEntry>>,
    pub error: Error,
}

impl From<Error> for BadEntry {
    fn from(error: Error) -> Self {
        BadEntry {
            before: None,
            error,
        }
    }
}

/// One parsed incrementCounters entry, owning its strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct IncrementEntry {
    pub class: String,
    pub path: String,
    pub count: i64,
    pub value: i64,
}

fn missing(name: impl Into<String>) -> Error {
    Error::MissingParameter { name: name.into() }
}

fn field_name(index: usize, field: &str) -> String {
    format!("counters[{index}].{field}")
}

/// One element of `counters`: its fields by name.
type Entry = HashMap<String, Field>;

/// A field of a `counters` element.
enum Field {
    /// A value `serde_json` holds.
    Json(Value),
    /// Valid JSON it cannot hold, such as the number `1e400` (beyond
    /// `f64`): kept as its text, so that the field, not `counters`, is
    /// what the error names.
    Unrepresentable(Box<str>),
}

impl Field {
    fn of(raw: &RawValue) -> Field {
        match serde_json::from_str(raw.get()) {
            Ok(value) => Field::Json(value),
            Err(_) => Field::Unrepresentable(raw.get().into()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Field::Json(value) => describe(value),
            Field::Unrepresentable(text) => describe_raw(text),
        }
    }
}

/// `counters` as a JSON array of objects (otherwise 400004).
/// Parsed as raw JSON first, then field by field, so that a valid number
/// out of `serde_json`'s range is a bad field value (400006), not
/// malformed JSON.
fn counter_objects(raw: &str) -> Result<Vec<Entry>> {
    objects(counter_items(raw)?)
}

/// The elements of `counters`, unparsed; an error unless it is a JSON array.
fn counter_items(raw: &str) -> Result<Vec<Box<RawValue>>> {
    let invalid = |name: String, reason: String| Error::InvalidFormat { name, reason };
    let whole: Box<RawValue> = serde_json::from_str(raw)
        .map_err(|e| invalid("counters".to_owned(), format!("not valid JSON: {e}")))?;
    serde_json::from_str::<Vec<Box<RawValue>>>(whole.get()).map_err(|_| {
        invalid(
            "counters".to_owned(),
            format!(
                "expected a JSON array of objects, found {}",
                describe_raw(whole.get())
            ),
        )
    })
}

/// The elements of `counters` as objects; an error names the first that is not one.
fn objects(items: Vec<Box<RawValue>>) -> Result<Vec<Entry>> {
    let invalid = |name: String, reason: String| Error::InvalidFormat { name, reason };
    items
        .into_iter()
        .enumerate()
        .map(
            |(i, item)| match serde_json::from_str::<HashMap<String, Box<RawValue>>>(item.get()) {
                Ok(fields) => Ok(fields
                    .into_iter()
                    .map(|(name, raw)| (name, Field::of(&raw)))
                    .collect()),
                Err(_) => Err(invalid(
                    format!("counters[{i}]"),
                    format!("expected a JSON object, found {}", describe_raw(item.get())),
                )),
            },
        )
        .collect()
}

/// A string field; absent and `null` are `None`, any other non-string is 400006.
fn optional_string(entry: &mut Entry, index: usize, field: &str) -> Result<Option<String>> {
    match entry.remove(field) {
        None | Some(Field::Json(Value::Null)) => Ok(None),
        Some(Field::Json(Value::String(text))) => Ok(Some(text)),
        Some(other) => Err(Error::InvalidValue {
            name: field_name(index, field),
            reason: format!("expected a string, found {}", other.describe()),
        }),
    }
}

/// A string field that must be present and not `null` (else 400002).
fn required_string(entry: &mut Entry, index: usize, field: &str) -> Result<String> {
    optional_string(entry, index, field)?.ok_or_else(|| missing(field_name(index, field)))
}

/// `count` or `value`: a JSON integer or a string holding one, in the i64
/// range; absent and `null` give `default`.
fn amount(entry: &mut Entry, index: usize, field: &str, default: i64) -> Result<i64> {
    let parsed = match entry.remove(field) {
        None | Some(Field::Json(Value::Null)) => return Ok(default),
        Some(Field::Json(Value::Number(n))) => n.as_i64().ok_or(Field::Json(Value::Number(n))),
        Some(Field::Json(Value::String(text))) => text
            .parse::<i64>()
            .map_err(|_| Field::Json(Value::String(text))),
        Some(other) => Err(other),
    };
    parsed.map_err(|bad| Error::InvalidValue {
        name: field_name(index, field),
        reason: format!(
            "expected an integer in the signed 64-bit range (a JSON number or a string holding one), found {}",
            bad.describe()
        ),
    })
}

/// A short description of valid JSON text, for error messages.
fn describe_raw(text: &str) -> String {
    match serde_json::from_str(text) {
        Ok(value) => describe(&value),
        // Only numbers (bare or nested) are valid JSON that `Value` cannot
        // hold.
        Err(_) if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) => {
            format!("the number {}", quote_limited(text))
        }
        Err(_) => format!("the JSON {}", quote_limited(text)),
    }
}

/// A short description of a JSON value, for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {}", quote_limited(&n.to_string())),
        Value::String(s) => format!("the string {:?}", quote_limited(s)),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// Caller text cut to [`MAX_QUOTED_BYTES`] (on a character boundary), with
/// `…` when cut, so that errors never echo megabytes back.
pub(crate) fn quote_limited(text: &str) -> String {
    if text.len() <= MAX_QUOTED_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_QUOTED_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn code_of<T: std::fmt::Debug>(result: Result<T>) -> (u32, String) {
        let err = result.unwrap_err();
        (err.code().number(), err.to_string())
    }

    #[test]
    fn get_treats_empty_as_missing_and_rejects_conflicting_repeats() {
        let pairs = [
            ("UID", ""),
            ("a", "1"),
            ("b", "2"),
            ("b", "3"),
            ("f", "json"),
            ("f", "json"),
        ];
        let params = Params::new(&pairs);
        assert_eq!(params.get("UID").unwrap(), None);
        assert_eq!(params.get("a").unwrap(), Some("1"));
        assert_eq!(params.get("c").unwrap(), None);
        assert_eq!(params.get("f").unwrap(), Some("json"));
        let (code, details) = code_of(params.get("b"));
        assert_eq!(code, 400_006);
        assert!(details.contains("`b`"), "{details}");
    }

    #[test]
    fn subject_needs_exactly_one() {
        let none = Params::new(&[]);
        assert_eq!(
            none.subject().unwrap_err().code(),
            ErrorCode::MissingParameter
        );
        let both = [("UID", "u"), ("regToken", "t")];
        assert!(matches!(
            Params::new(&both).subject(),
            Err(Error::BothSubjects)
        ));
        let token = [("UID", ""), ("regToken", "t")];
        assert_eq!(
            Params::new(&token).subject().unwrap(),
            Subject::RegToken("t")
        );
    }

    #[test]
    fn amounts_accept_integers_and_integer_strings_only() {
        let counters = r#"[{"class":"c","path":"/","count":"5","value":-3},
                          {"class":"c","path":"/","count":null,"value":"-9223372036854775808"}]"#;
        let pairs = [("counters", counters)];
        let entries = Params::new(&pairs).increments(1000).unwrap();
        assert_eq!((entries[0].count, entries[0].value), (5, -3));
        assert_eq!((entries[1].count, entries[1].value), (1, i64::MIN));
        for bad in [
            "1.5",
            "5.0",
            "\"abc\"",
            "\"\"",
            "\" 5\"",
            "true",
            "{}",
            "[1]",
            "12345678901234567890",
            "\"9223372036854775808\"",
        ] {
            let counters =
                format!(r#"[{{"class":"c","path":"/"}},{{"class":"c","path":"/","count":{bad}}}]"#);
            let pairs = [("counters", counters.as_str())];
            let (code, details) = code_of(
                Params::new(&pairs)
                    .increments(1000)
                    .map_err(|bad| bad.error),
            );
            assert_eq!(code, 400_006, "{bad}");
            assert!(details.contains("`counters[1].count`"), "{details}");
        }
    }

    #[test]
    fn shape_errors_are_formats_and_missing_fields_are_missing() {
        let cases = [
            ("not json", 400_004, "`counters`"),
            ("{\"class\":\"c\"}", 400_004, "`counters`"),
            (
                "[{\"class\":\"c\",\"path\":\"/\"}, 3]",
                400_004,
                "`counters[1]`",
            ),
            ("1e400", 400_004, "`counters`"),
            (
                "[{\"class\":1e400,\"path\":\"/\"}]",
                400_006,
                "`counters[0].class`",
            ),
            ("[]", 400_002, "`counters`"),
            ("[{\"path\":\"/\"}]", 400_002, "`counters[0].class`"),
            (
                "[{\"class\":\"c\",\"path\":null}]",
                400_002,
                "`counters[0].path`",
            ),
            (
                "[{\"class\":7,\"path\":\"/\"}]",
                400_006,
                "`counters[0].class`",
            ),
        ];
        for (raw, want, name) in cases {
            let pairs = [("counters", raw)];
            let (code, details) = code_of(Params::new(&pairs).counter_keys());
            assert_eq!(code, want, "{raw}");
            assert!(details.contains(name), "{raw}: {details}");
        }
        assert_eq!(
            Params::new(&[]).counter_keys().unwrap_err().code(),
            ErrorCode::MissingParameter
        );
    }

    #[test]
    fn selectors_are_optional_and_typed() {
        assert!(Params::new(&[]).selectors(100).unwrap().is_empty());
        let pairs = [("counters", "[]")];
        assert!(Params::new(&pairs).selectors(100).unwrap().is_empty());
        let pairs = [(
            "counters",
            r#"[{"class":"c","period":"total","extra":1},{"class":"d","path":null}]"#,
        )];
        let selectors = Params::new(&pairs).selectors(100).unwrap();
        assert_eq!(selectors[0], Selector::class("c").period("total"));
        assert_eq!(selectors[1], Selector::class("d"));
        let pairs = [("counters", r#"[{"class":"c","period":2611}]"#)];
        let (code, details) = code_of(Params::new(&pairs).selectors(100));
        assert_eq!(code, 400_006);
        assert!(details.contains("`counters[0].period`"), "{details}");
    }

    #[test]
    fn quotes_are_limited_on_char_boundaries() {
        assert_eq!(quote_limited("short"), "short");
        let long = "é".repeat(100);
        let quoted = quote_limited(&long);
        assert!(quoted.len() <= MAX_QUOTED_BYTES + '…'.len_utf8());
        assert!(quoted.ends_with('…'));
    }
}
