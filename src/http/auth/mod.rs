//! Optional authorization as the platform does it: an `apiKey`, and either
//! a plain `secret` or a signed request (`timestamp`, `nonce`, `sig`).
//!
//! The keys and policies a server accepts live here; the check of a
//! request's credentials in `check`, the signature's base string and
//! HMAC in `signature`.

mod check;
mod signature;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use check::Nonces;
pub(in crate::http) use check::RequestInfo;
pub use signature::{base_string, sign};

/// The URL base real clients sign: `https://accounts.us1.gigya.com`, to
/// which the request's path (`/accounts.incrementCounters`) is appended.
pub const DEFAULT_PUBLIC_BASE_URL: &str = "https://accounts.us1.gigya.com";

/// How far a signed request's `timestamp` may be from the server's clock.
pub const MAX_SKEW_SECS: i64 = 120;

/// The longest accepted `nonce`, in bytes.
pub const MAX_NONCE_BYTES: usize = 256;

/// Where a plain `secret` parameter is accepted (signed requests are
/// accepted everywhere).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlainSecrets {
    /// Never: every request must be signed.
    Never,
    /// Only from loopback peers (`127.0.0.0/8`, `::1`), where the secret
    /// does not cross a network. The default.
    #[default]
    Loopback,
    /// From any peer: for a server behind a TLS-terminating proxy.
    Always,
}

/// A base64 secret as configured, and the key bytes it decodes to.
#[derive(Clone)]
struct Secret {
    text: String,
    key: Vec<u8>,
}

impl Secret {
    fn parse(owner: &str, text: &str) -> Result<Secret> {
        let key = STANDARD.decode(text).map_err(|e| {
            Error::Config(format!("the secret of {owner:?} is not valid base64: {e}"))
        })?;
        Ok(Secret {
            text: text.to_owned(),
            key,
        })
    }
}

/// The API keys and user keys a server accepts, and how.
///
/// ```
/// use tally::http::{Auth, PlainSecrets};
///
/// let auth = Auth::new()
///     .api_key("3_site", None)?                 // a site key, no secret of its own
///     .user_key("AUserKey", "c2VjcmV0LWJ5dGVz")? // an application key and its base64 secret
///     .plain_secrets(PlainSecrets::Never);
/// # Ok::<(), tally::Error>(())
/// ```
#[derive(Clone)]
pub struct Auth {
    api_keys: HashMap<String, Option<Secret>>,
    user_keys: HashMap<String, Secret>,
    plain_secrets: PlainSecrets,
    public_base_url: String,
    nonces: Arc<Mutex<Nonces>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key names only: never the secrets.
        let mut api: Vec<&String> = self.api_keys.keys().collect();
        let mut user: Vec<&String> = self.user_keys.keys().collect();
        api.sort();
        user.sort();
        f.debug_struct("Auth")
            .field("api_keys", &api)
            .field("user_keys", &user)
            .field("plain_secrets", &self.plain_secrets)
            .field("public_base_url", &self.public_base_url)
            .finish_non_exhaustive()
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth::new()
    }
}

impl Auth {
    /// No keys yet, plain secrets from loopback only, signatures checked
    /// against [`DEFAULT_PUBLIC_BASE_URL`].
    pub fn new() -> Auth {
        Auth {
            api_keys: HashMap::new(),
            user_keys: HashMap::new(),
            plain_secrets: PlainSecrets::default(),
            public_base_url: DEFAULT_PUBLIC_BASE_URL.to_owned(),
            nonces: Arc::default(),
        }
    }

    /// Accepts `apiKey`, optionally with its own base64 `secret` (the
    /// platform's partner secret); without one, requests with this key
    /// must send a `userKey`.
    pub fn api_key(mut self, key: impl Into<String>, secret: Option<&str>) -> Result<Auth> {
        let key = key.into();
        let secret = secret.map(|s| Secret::parse(&key, s)).transpose()?;
        self.api_keys.insert(key, secret);
        Ok(self)
    }

    /// Accepts `userKey` (an application key) with its base64 secret,
    /// together with any accepted `apiKey`.
    pub fn user_key(mut self, key: impl Into<String>, secret: &str) -> Result<Auth> {
        let key = key.into();
        let secret = Secret::parse(&key, secret)?;
        self.user_keys.insert(key, secret);
        Ok(self)
    }

    /// Where a plain `secret` is accepted; [`PlainSecrets::Loopback`] by default.
    #[must_use]
    pub fn plain_secrets(mut self, policy: PlainSecrets) -> Auth {
        self.plain_secrets = policy;
        self
    }

    /// The scheme and host clients sign, e.g. `https://accounts.eu1.gigya.com`;
    /// the request's path is appended. The request's own URL
    /// (`http://` + `Host` + path) is tried too.
    #[must_use]
    pub fn public_base_url(mut self, url: impl Into<String>) -> Auth {
        self.public_base_url = url.into().trim_end_matches('/').to_owned();
        self
    }

    /// Adds the keys of a key file: one key a line, `#` starts a comment.
    ///
    /// ```text
    /// api-key   3_site                     # no secret: send a userKey
    /// api-key   3_other  cGFydG5lcg==      # with a partner secret
    /// user-key  AUserKey c2VjcmV0LWJ5dGVz  # an application key and its secret
    /// ```
    pub fn keys_from_str(mut self, text: &str) -> Result<Auth> {
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default();
            let words: Vec<&str> = line.split_whitespace().collect();
            let bad = |why: &str| Error::Config(format!("key file line {}: {why}", n + 1));
            self = match words.as_slice() {
                [] => self,
                ["api-key", key] => self.api_key(*key, None)?,
                ["api-key", key, secret] => self.api_key(*key, Some(secret))?,
                ["user-key", key, secret] => self.user_key(*key, secret)?,
                ["user-key", ..] => return Err(bad("expected `user-key KEY SECRET`")),
                ["api-key", ..] => return Err(bad("expected `api-key KEY [SECRET]`")),
                _ => {
                    return Err(bad(
                        "expected `api-key KEY [SECRET]` or `user-key KEY SECRET`",
                    ));
                }
            };
        }
        Ok(self)
    }

    /// How many API keys and user keys are accepted.
    pub fn key_counts(&self) -> (usize, usize) {
        (self.api_keys.len(), self.user_keys.len())
    }

    /// Where plain secrets are accepted.
    pub fn plain_secret_policy(&self) -> PlainSecrets {
        self.plain_secrets
    }

    /// The scheme and host signatures are checked against.
    pub fn public_base(&self) -> &str {
        &self.public_base_url
    }
}
