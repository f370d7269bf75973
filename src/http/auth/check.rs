//! Checking a request's credentials: the `apiKey`, the key whose secret
//! applies, then a plain `secret` or a signature, and last the nonce.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::signature::{base_string, verify};
use super::{Auth, MAX_NONCE_BYTES, MAX_SKEW_SECS, PlainSecrets};
use crate::error::{Error, Result};
use crate::http::envelope::limited;

impl Auth {
    /// Checks a request's credentials; `Ok` lets it through to the method.
    pub(in crate::http) fn check(
        &self,
        req: &RequestInfo<'_>,
        params: &[(&str, &str)],
    ) -> Result<()> {
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
pub(in crate::http) struct RequestInfo<'a> {
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
pub(super) struct Nonces {
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
