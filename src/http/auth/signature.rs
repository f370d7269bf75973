//! The platform's request signature: the base string a client signs, and
//! base64(HMAC-SHA1) of it under the base64-decoded secret.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;

use super::Secret;
use crate::error::{Error, Result};

/// RFC 3986: everything but `A-Z a-z 0-9 - . _ ~` is percent-encoded.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The base string: `METHOD&` + encoded URL + `&` + the encoded, sorted
/// `name=value` pairs of every parameter but `sig` and `secret`.
pub fn base_string(method: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| *k != "sig" && *k != "secret")
        .map(|(k, v)| (encode(k), encode(v)))
        .collect();
    pairs.sort();
    let query: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        encode(url),
        encode(&query.join("&"))
    )
}

/// `sig` for a base string: base64(HMAC-SHA1(base64-decoded secret, base string)).
pub fn sign(secret_base64: &str, base_string: &str) -> Result<String> {
    let key = Secret::parse("the signing key", secret_base64)?.key;
    let mut mac =
        Hmac::<Sha1>::new_from_slice(&key).map_err(|e| Error::Config(format!("HMAC key: {e}")))?;
    mac.update(base_string.as_bytes());
    Ok(STANDARD.encode(mac.finalize().into_bytes()))
}

/// Whether `tag` is the HMAC-SHA1 of `base_string` under `key`, checked
/// in constant time.
pub(super) fn verify(key: &[u8], base_string: &str, tag: &[u8]) -> bool {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
        return false;
    };
    mac.update(base_string.as_bytes());
    mac.verify_slice(tag).is_ok()
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, RFC3986).to_string()
}
