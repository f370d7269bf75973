//! Optional authorization as the platform does it: an `apiKey`, and either
//! a plain `secret` or a signed request (`timestamp`, `nonce`, `sig`).

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use parking_lot::Mutex;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;

use super::envelope::limited;
use crate::error::{Error, Result};

/// The URL base real clients sign: `https://accounts.us1.gigya.com`, to
/// which the request's path (`/accounts.incrementCounters`) is appended.
pub const DEFAULT_PUBLIC_BASE_URL: &str = "https://accounts.us1.gigya.com";

/// How far a signed request's `timestamp` may be from the server's clock.
pub const MAX_SKEW_SECS: i64 = 120;

/// The longest accepted `nonce`, in bytes.
pub const MAX_NONCE_BYTES: usize = 256;

/// RFC 3986: everything but `A-Z a-z 0-9 - . _ ~` is percent-encoded.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

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

    /// Checks a request's credentials; `Ok` lets it through to the method.
    pub(super) fn check(&self, req: &RequestInfo<'_>, params: &[(&str, &str)]) -> Result<()> {
        let api_key = single(params, "apiKey")?.ok_or_else(|| Error::InvalidApiKey {
            reason: "the request has no apiKey".into(),
        })?;
        let Some(site_secret) = self.api_keys.get(api_key) else {
            return Err(Error::InvalidApiKey {
                reason: format!("{:?} is not an API key of this server", limited(api_key)),
            });
        };
        let (key_id, secret) = match single(params, "userKey")? {
            Some(user_key) => match self.user_keys.get(user_key) {
                Some(secret) => (user_key, secret),
                None => {
                    return Err(Error::Unauthorized {
                        reason: format!("{:?} is not a user key of this server", limited(user_key)),
                    });
                }
            },
            None => match site_secret {
                Some(secret) => (api_key, secret),
                None => {
                    return Err(Error::Unauthorized {
                        reason: "this apiKey has no secret of its own: send a userKey".into(),
                    });
                }
            },
        };
        if let Some(given) = single(params, "secret")? {
            let allowed = match self.plain_secrets {
                PlainSecrets::Always => true,
                PlainSecrets::Loopback => req.loopback,
                PlainSecrets::Never => false,
            };
            if !allowed {
                return Err(Error::SecretSentOverHttp);
            }
            return if constant_time_eq(given.as_bytes(), secret.text.as_bytes()) {
                Ok(())
            } else {
                Err(Error::InvalidSignature {
                    reason: "the secret does not match".into(),
                })
            };
        }
        let Some(sig) = single(params, "sig")? else {
            return Err(Error::Unauthorized {
                reason: "send a secret, or sign the request with timestamp, nonce and sig".into(),
            });
        };
        let timestamp_ms = timestamp_millis(single(params, "timestamp")?)?;
        let nonce = single(params, "nonce")?.ok_or_else(|| missing("nonce"))?;
        if nonce.len() > MAX_NONCE_BYTES {
            return Err(Error::InvalidValue {
                name: "nonce".into(),
                reason: format!("longer than {MAX_NONCE_BYTES} bytes"),
            });
        }
        let skew_ms = timestamp_ms.abs_diff(req.now_ms);
        if skew_ms > MAX_SKEW_SECS as u64 * 1000 {
            return Err(Error::RequestExpired {
                timestamp: timestamp_ms.div_euclid(1000),
                skew_secs: (skew_ms / 1000) as i64,
                max_skew_secs: MAX_SKEW_SECS,
            });
        }
        let tag = STANDARD.decode(sig).map_err(|_| Error::InvalidSignature {
            reason: "sig is not base64".into(),
        })?;
        let public = format!("{}{}", self.public_base_url, req.path);
        let own = req
            .host
            .map(|host| format!("http://{}{}", host.to_ascii_lowercase(), req.path));
        let signed = [Some(&public), own.as_ref()]
            .into_iter()
            .flatten()
            .any(|url| verify(&secret.key, &base_string(req.method, url, params), &tag));
        if !signed {
            return Err(Error::InvalidSignature {
                reason: format!(
                    "sig does not match the request as signed for {}{}",
                    limited(&public),
                    own.map(|u| format!(" or {}", limited(&u)))
                        .unwrap_or_default()
                ),
            });
        }
        let forget_at = timestamp_ms.max(req.now_ms) + MAX_SKEW_SECS * 1000 + 1000;
        self.nonces
            .lock()
            .insert(key_id, nonce, forget_at, req.now_ms)
    }
}

/// What the authorization check needs to know about a request besides its
/// parameters.
pub(super) struct RequestInfo<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// The path, e.g. `/accounts.getCounters`.
    pub path: &'a str,
    /// The `Host` header, when there is one.
    pub host: Option<&'a str>,
    /// Whether the peer is a loopback address.
    pub loopback: bool,
    /// The engine clock, Unix milliseconds.
    pub now_ms: i64,
}

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

fn verify(key: &[u8], base_string: &str, tag: &[u8]) -> bool {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
        return false;
    };
    mac.update(base_string.as_bytes());
    mac.verify_slice(tag).is_ok()
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, RFC3986).to_string()
}

fn missing(name: &str) -> Error {
    Error::MissingParameter { name: name.into() }
}

/// The value of an authorization parameter: `None` when absent or empty,
/// 400006 when given more than once.
fn single<'a>(params: &[(&str, &'a str)], name: &str) -> Result<Option<&'a str>> {
    let mut found = params.iter().filter(|(k, _)| *k == name);
    match (found.next(), found.next()) {
        (_, Some(_)) => Err(Error::InvalidValue {
            name: name.into(),
            reason: "given more than once".into(),
        }),
        (Some((_, v)), None) if !v.is_empty() => Ok(Some(v)),
        _ => Ok(None),
    }
}

/// A `timestamp` in Unix seconds or milliseconds (13 digits and more, any
/// value from 10^11 up), as milliseconds.
fn timestamp_millis(text: Option<&str>) -> Result<i64> {
    let text = text.ok_or_else(|| missing("timestamp"))?;
    let value: i64 = text
        .parse()
        .ok()
        .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| Error::InvalidValue {
            name: "timestamp".into(),
            reason: format!(
                "expected Unix seconds or milliseconds, found {:?}",
                limited(text)
            ),
        })?;
    Ok(if value >= 100_000_000_000 {
        value
    } else {
        value * 1000
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Nonces seen with a valid signature, per key, until their timestamp can
/// no longer pass the skew check.
#[derive(Default)]
struct Nonces {
    seen: HashMap<(String, String), i64>,
    prune_at: usize,
}

impl Nonces {
    fn insert(&mut self, key: &str, nonce: &str, forget_at: i64, now_ms: i64) -> Result<()> {
        if self.seen.len() >= self.prune_at {
            self.seen.retain(|_, until| *until > now_ms);
            self.prune_at = (self.seen.len() * 2).max(1024);
        }
        let entry = (key.to_owned(), nonce.to_owned());
        match self.seen.get(&entry) {
            Some(until) if *until > now_ms => Err(Error::DuplicateNonce),
            _ => {
                self.seen.insert(entry, forget_at);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    const SECRET: &str = "c2VjcmV0LWJ5dGVz";
    const NOW: i64 = 1_795_780_800_000;

    fn auth() -> Auth {
        Auth::new()
            .keys_from_str("api-key site\napi-key partner cGFydG5lcg== # comment\n\nuser-key app c2VjcmV0LWJ5dGVz")
            .unwrap()
    }

    fn info(loopback: bool) -> RequestInfo<'static> {
        RequestInfo {
            method: "POST",
            path: "/accounts.getCounters",
            host: Some("127.0.0.1:8080"),
            loopback,
            now_ms: NOW,
        }
    }

    fn code(result: Result<()>) -> u32 {
        match result {
            Ok(()) => 0,
            Err(e) => e.code().number(),
        }
    }

    fn signed<'a>(
        extra: &[(&'a str, &'a str)],
        ts: &'a str,
        nonce: &'a str,
    ) -> Vec<(String, String)> {
        let mut params: Vec<(&str, &str)> = vec![("apiKey", "site"), ("userKey", "app")];
        params.extend_from_slice(extra);
        params.push(("timestamp", ts));
        params.push(("nonce", nonce));
        let url = "https://accounts.us1.gigya.com/accounts.getCounters";
        let sig = sign(SECRET, &base_string("POST", url, &params)).unwrap();
        let mut owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        owned.push(("sig".into(), sig));
        owned
    }

    fn check(auth: &Auth, info: &RequestInfo<'_>, params: &[(String, String)]) -> u32 {
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        code(auth.check(info, &pairs))
    }

    #[test]
    fn base_string_sorts_and_encodes_rfc3986() {
        let params = [
            ("b", "x y"),
            ("a", "1~*"),
            ("sig", "no"),
            ("secret", "no"),
            ("a", "0"),
        ];
        assert_eq!(
            base_string("get", "https://h/p", &params),
            "GET&https%3A%2F%2Fh%2Fp&a%3D0%26a%3D1~%252A%26b%3Dx%2520y"
        );
    }

    #[test]
    fn keys_and_plain_secrets() {
        let auth = auth();
        assert_eq!(auth.key_counts(), (2, 1));
        let p = |pairs: &[(&'static str, &'static str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(check(&auth, &info(true), &p(&[])), 400_093);
        assert_eq!(
            check(&auth, &info(true), &p(&[("apiKey", "nope")])),
            400_093
        );
        assert_eq!(
            check(&auth, &info(true), &p(&[("apiKey", "site")])),
            403_005
        );
        assert_eq!(
            check(
                &auth,
                &info(true),
                &p(&[("apiKey", "site"), ("userKey", "x")])
            ),
            403_005
        );
        let good = p(&[("apiKey", "site"), ("userKey", "app"), ("secret", SECRET)]);
        assert_eq!(check(&auth, &info(true), &good), 0);
        assert_eq!(check(&auth, &info(false), &good), 403_006);
        let partner = p(&[("apiKey", "partner"), ("secret", "cGFydG5lcg==")]);
        assert_eq!(check(&auth, &info(true), &partner), 0);
        let wrong = p(&[("apiKey", "partner"), ("secret", SECRET)]);
        assert_eq!(check(&auth, &info(true), &wrong), 403_003);
        let never = auth.clone().plain_secrets(PlainSecrets::Never);
        assert_eq!(check(&never, &info(true), &good), 403_006);
        let always = auth.plain_secrets(PlainSecrets::Always);
        assert_eq!(check(&always, &info(false), &good), 0);
    }

    #[test]
    fn signatures_timestamps_and_nonces() {
        let auth = auth();
        let secs = (NOW / 1000).to_string();
        let params = signed(&[("UID", "u 1/é")], &secs, "n1");
        assert_eq!(check(&auth, &info(false), &params), 0);
        assert_eq!(check(&auth, &info(false), &params), 403_004);
        let millis = (NOW + 119_000).to_string();
        assert_eq!(check(&auth, &info(false), &signed(&[], &millis, "n2")), 0);
        let late = (NOW / 1000 - 121).to_string();
        assert_eq!(
            check(&auth, &info(false), &signed(&[], &late, "n3")),
            403_002
        );
        let mut tampered = signed(&[("UID", "u1")], &secs, "n4");
        tampered[2].1 = "u2".into();
        assert_eq!(check(&auth, &info(false), &tampered), 403_003);
        let mut no_ts = signed(&[], &secs, "n5");
        no_ts.retain(|(k, _)| k != "timestamp");
        assert_eq!(check(&auth, &info(false), &no_ts), 400_002);
        assert_eq!(
            check(&auth, &info(false), &signed(&[], "12x", "n6")),
            400_006
        );
        // Signed for this server's own URL instead of the public one.
        let mut own: Vec<(&str, &str)> = vec![("apiKey", "site"), ("userKey", "app")];
        own.extend([("timestamp", secs.as_str()), ("nonce", "n7")]);
        let base = base_string("POST", "http://127.0.0.1:8080/accounts.getCounters", &own);
        let sig = sign(SECRET, &base).unwrap();
        own.push(("sig", &sig));
        assert_eq!(code(auth.check(&info(false), &own)), 0);
        assert_eq!(
            auth.check(&info(false), &own).unwrap_err().code(),
            ErrorCode::DuplicateNonce
        );
    }

    #[test]
    fn key_file_errors_name_the_line() {
        let err = Auth::new()
            .keys_from_str("api-key a\nuser-key b")
            .unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = Auth::new()
            .keys_from_str("user-key b not*base64")
            .unwrap_err();
        assert!(err.to_string().contains("base64"), "{err}");
        assert!(!format!("{:?}", auth()).contains(SECRET));
    }
}
