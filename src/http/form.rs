//! Strict `application/x-www-form-urlencoded` decoding, for query strings
//! and request bodies alike.
//!
//! Unlike the usual lossy decoders, a name or value that is not UTF-8 once
//! percent-decoded is an error naming the parameter, never a silent
//! replacement character.

use percent_encoding::percent_decode;

use crate::error::{Error, Result};

/// Where decoded parameters came from, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// The URL's query string.
    Query,
    /// A form-encoded request body.
    Body,
}

impl Source {
    fn describe(self) -> &'static str {
        match self {
            Source::Query => "the query string",
            Source::Body => "the request body",
        }
    }
}

/// Decodes `name=value&…` pairs: `+` is a space, `%XX` a byte, a piece
/// without `=` a parameter with an empty value, empty pieces are skipped.
/// A `%` not followed by two hex digits stays as it is (as browsers do).
pub(super) fn decode(input: &[u8], source: Source) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for piece in input.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match piece.iter().position(|&b| b == b'=') {
            Some(at) => (&piece[..at], &piece[at + 1..]),
            None => (piece, &[][..]),
        };
        let name = component(name).map_err(|offset| Error::InvalidValue {
            name: format!("a parameter name in {}", source.describe()),
            reason: format!("not valid UTF-8 once percent-decoded (byte {offset})"),
        })?;
        let value = component(value).map_err(|offset| Error::InvalidValue {
            name: super::envelope::limited(&name),
            reason: format!(
                "not valid UTF-8 once percent-decoded (byte {offset} of the value, in {})",
                source.describe()
            ),
        })?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// One percent-decoded component, or the offset of its first bad byte.
fn component(raw: &[u8]) -> std::result::Result<String, usize> {
    let bytes: Vec<u8> = if raw.contains(&b'+') {
        let spaced: Vec<u8> = raw
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        percent_decode(&spaced).collect()
    } else {
        percent_decode(raw).collect()
    };
    String::from_utf8(bytes).map_err(|e| e.utf8_error().valid_up_to())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn ok(input: &str) -> Vec<(String, String)> {
        decode(input.as_bytes(), Source::Query).unwrap()
    }

    #[test]
    fn decodes_pluses_percents_and_bare_names() {
        assert_eq!(
            ok("UID=a+b%2Bc&&flag&counters=%5B%5D&x=%zz"),
            [
                ("UID".into(), "a b+c".into()),
                ("flag".into(), String::new()),
                ("counters".into(), "[]".into()),
                ("x".into(), "%zz".into()),
            ]
        );
        assert_eq!(ok("é=%C3%A9"), [("é".into(), "é".into())]);
        assert!(ok("").is_empty());
    }

    #[test]
    fn invalid_utf8_names_the_parameter() {
        let err = decode(b"UID=u&counters=%FF%FE", Source::Body).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidParameterValue);
        let text = err.to_string();
        assert!(
            text.contains("`counters`") && text.contains("request body"),
            "{text}"
        );

        let err = decode(b"UID=\xC3", Source::Body).unwrap_err();
        assert!(err.to_string().contains("`UID`"), "{err}");

        let err = decode(b"%C3%28=1", Source::Query).unwrap_err();
        assert!(err.to_string().contains("query string"), "{err}");
    }
}
