//! Subjects: whose counters — a UID, or a regToken that resolves
//! to one.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest accepted UID, in bytes.
pub const MAX_UID_BYTES: usize = 256;

/// Whose counters a call is about.
///
/// `&str` and `&String` convert into [`Subject::Uid`]; `&RegToken` into
/// [`Subject::RegToken`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject<'a> {
    /// A user id.
    Uid(&'a str),
    /// A registration token issued for a user whose registration is pending.
    RegToken(&'a str),
}

impl<'a> From<&'a str> for Subject<'a> {
    fn from(uid: &'a str) -> Self {
        Subject::Uid(uid)
    }
}

impl<'a> From<&'a String> for Subject<'a> {
    fn from(uid: &'a String) -> Self {
        Subject::Uid(uid)
    }
}

impl<'a> From<&'a RegToken> for Subject<'a> {
    fn from(token: &'a RegToken) -> Self {
        Subject::RegToken(token.as_str())
    }
}

/// A registration token: stands for a UID until it expires.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RegToken(String);

impl RegToken {
    /// A token issued with this text.
    #[cfg(feature = "redis")]
    pub(crate) fn issued(text: String) -> RegToken {
        RegToken(text)
    }

    /// The token's text, as clients send it in the `regToken` parameter.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RegToken {
    /// Tokens are credentials: `Debug` does not print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RegToken(…)")
    }
}

/// Resolves regTokens issued by a host's own account system.
///
/// Plug one in with [`Builder::reg_token_resolver`](crate::Builder::reg_token_resolver);
/// the engine asks it about every token it did not issue itself.
pub trait RegTokenResolver: Send + Sync + 'static {
    /// The UID the token stands for at `now_secs` (Unix seconds), or
    /// [`Error::UnknownRegToken`] / [`Error::ExpiredRegToken`].
    fn resolve(&self, token: &str, now_secs: i64) -> Result<String>;
}

/// Checks a UID: 1..=256 bytes, no ASCII control characters.
#[inline]
pub fn validate_uid(uid: &str) -> Result<()> {
    // One comparison and a few word operations on every increment's path;
    // which rule is broken is worked out only for a rejected UID.
    if (1..=MAX_UID_BYTES).contains(&uid.len()) && !has_ascii_control(uid.as_bytes()) {
        return Ok(());
    }
    Err(Error::InvalidUid {
        reason: invalid_uid_reason(uid),
    })
}

/// Why [`validate_uid`] rejects `uid`.
#[cold]
fn invalid_uid_reason(uid: &str) -> &'static str {
    if uid.is_empty() {
        "a UID must not be empty"
    } else if uid.len() > MAX_UID_BYTES {
        "a UID must be at most 256 bytes"
    } else {
        "a UID must not contain control characters"
    }
}

/// Whether any byte is an ASCII control character (`0x00..=0x1F` or
/// `0x7F`), eight bytes at a time: every increment checks its UID. Words
/// overlap rather than falling back to bytes: a UID of 8 to 16 bytes (the
/// usual) is two word loads and no loop.
#[inline]
fn has_ascii_control(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Nonzero iff some byte of `word` is below 0x20 or is 0x7F.
    let control = |word: u64| {
        let below_space = word.wrapping_sub(ONES * 0x20) & !word;
        let del = word ^ (ONES * 0x7F);
        let is_del = del.wrapping_sub(ONES) & !del;
        (below_space | is_del) & HIGHS
    };
    let word = |at: usize| {
        u64::from_ne_bytes(
            bytes
                .get(at..at + 8)
                .and_then(|chunk| chunk.try_into().ok())
                .unwrap_or([b' '; 8]),
        )
    };
    let len = bytes.len();
    match len {
        0..8 => {
            let mut padded = [b' '; 8];
            padded[..len].copy_from_slice(bytes);
            control(u64::from_ne_bytes(padded)) != 0
        }
        8..=16 => control(word(0)) | control(word(len - 8)) != 0,
        _ => {
            let found = (0..len - 8).step_by(8).any(|at| control(word(at)) != 0);
            found || control(word(len - 8)) != 0
        }
    }
}

/// The length of the regTokens this engine issues: 16 random bytes, in
/// lowercase hexadecimal.
const TOKEN_CHARS: usize = 32;

/// Checks a regToken read back from a data file as [`TokenStore::issue`]
/// made it: [`TOKEN_CHARS`] lowercase hexadecimal digits, and a valid UID,
/// or none once a sweep dropped the UID of the expired token.
pub(crate) fn validate_issued_token(token: &str, issued: &IssuedToken) -> Result<()> {
    let is_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if token.len() != TOKEN_CHARS || !token.bytes().all(is_hex) {
        return Err(Error::InvalidFormat {
            name: "regToken".into(),
            reason: format!("an issued regToken is {TOKEN_CHARS} lowercase hexadecimal digits"),
        });
    }
    if issued.uid.is_empty() {
        return Ok(());
    }
    validate_uid(&issued.uid)
}

/// The most expired tokens remembered, so that a late caller hears
/// "expired" rather than "unknown": the latest to expire are
/// kept, without their UIDs, about 100 bytes each.
const MAX_EXPIRED_KEPT: usize = 100_000;

/// Sweep expired tokens after this many issues.
const SWEEP_EVERY: u64 = 1024;

/// 128 random bits from the operating system, as 32 lowercase hex digits:
/// the text of a regToken.
pub(crate) fn random_hex_128() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
    Ok(format!("{:032x}", u128::from_be_bytes(bytes)))
}

/// The `i`-th of a set of distinct, platform-shaped UIDs: 32 lowercase
/// hexadecimal characters, as the hosted platform issues them (random
/// looking, so that their bytes spread over the store's hash as real
/// ones do). The subjects of the benchmarks and of `tally load`.
#[doc(hidden)]
pub fn platform_shaped_uid(i: u64) -> String {
    // splitmix64: a bijection on u64, so distinct `i` give distinct UIDs.
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    format!("{:016x}{:016x}", mix(i), mix(!i))
}

/// A token the engine issued: for whom, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IssuedToken {
    pub uid: String,
    pub expires_at: i64,
}

/// The regTokens this engine issued, looked up by hash in constant time.
pub(crate) struct TokenStore {
    tokens: DashMap<Box<str>, IssuedToken>,
    ttl_secs: i64,
    issued: AtomicU64,
    max_expired: usize,
}

impl TokenStore {
    pub(crate) fn new(ttl: Duration) -> Self {
        TokenStore {
            tokens: DashMap::new(),
            ttl_secs: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            issued: AtomicU64::new(0),
            max_expired: MAX_EXPIRED_KEPT,
        }
    }

    /// Issues a fresh token for `uid`, valid for the configured time;
    /// `log` records it durably first.
    pub(crate) fn issue(
        &self,
        uid: &str,
        now_secs: i64,
        log: impl FnOnce(&str, &IssuedToken) -> Result<()>,
    ) -> Result<RegToken> {
        validate_uid(uid)?;
        let text = random_hex_128()?;
        let issued = IssuedToken {
            uid: uid.to_owned(),
            expires_at: now_secs.saturating_add(self.ttl_secs),
        };
        // Insert first, then log: a snapshot that starts in between holds
        // the token, and one that starts later finds its record in the
        // log after it. Nobody knows the fresh token until we return it.
        self.tokens.insert(text.as_str().into(), issued.clone());
        if let Err(error) = log(&text, &issued) {
            self.tokens.remove(text.as_str());
            return Err(error);
        }
        if self.issued.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(now_secs);
        }
        Ok(RegToken(text))
    }

    /// Drops the UIDs of the tokens expired at `now_secs`, and the tokens
    /// themselves beyond the latest [`MAX_EXPIRED_KEPT`] to expire.
    fn sweep(&self, now_secs: i64) {
        let mut expiries = Vec::new();
        for mut token in self.tokens.iter_mut() {
            if token.expires_at <= now_secs {
                if !token.uid.is_empty() {
                    token.uid = String::new();
                }
                expiries.push(token.expires_at);
            }
        }
        if expiries.len() > self.max_expired {
            let dropped = expiries.len() - self.max_expired;
            let (_, &mut oldest_kept, _) = expiries.select_nth_unstable(dropped);
            self.tokens
                .retain(|_, t| t.expires_at > now_secs || t.expires_at >= oldest_kept);
        }
    }

    /// Puts back a token issued before a restart, checked with
    /// [`validate_issued_token`].
    pub(crate) fn restore(&self, token: &str, issued: IssuedToken) {
        self.tokens.insert(token.into(), issued);
    }

    /// Every token kept, for a snapshot: live ones, and expired ones
    /// (whose UIDs a sweep may have dropped), so that "expired" survives
    /// a restart too.
    pub(crate) fn image(&self) -> Vec<(String, IssuedToken)> {
        self.tokens
            .iter()
            .map(|t| (t.key().to_string(), t.value().clone()))
            .collect()
    }

    /// The UID of an issued token, `Ok(None)` if this store never issued it.
    pub(crate) fn lookup(&self, token: &str, now_secs: i64) -> Result<Option<String>> {
        match self.tokens.get(token) {
            None => Ok(None),
            // A token without a UID is one a sweep found expired (were
            // the clock to go back since).
            Some(t) if t.expires_at <= now_secs || t.uid.is_empty() => {
                Err(Error::ExpiredRegToken {
                    expired_at: t.expires_at,
                })
            }
            Some(t) => Ok(Some(t.uid.clone())),
        }
    }
}

/// Resolves a subject to a UID: borrowed for a UID, owned for a token.
pub(crate) fn resolve_subject<'a>(
    subject: Subject<'a>,
    tokens: &TokenStore,
    resolver: Option<&dyn RegTokenResolver>,
    now_secs: i64,
) -> Result<Cow<'a, str>> {
    match subject {
        Subject::Uid(uid) => {
            validate_uid(uid)?;
            Ok(Cow::Borrowed(uid))
        }
        Subject::RegToken(token) => {
            if token.is_empty() {
                return Err(Error::UnknownRegToken);
            }
            if let Some(uid) = tokens.lookup(token, now_secs)? {
                return Ok(Cow::Owned(uid));
            }
            match resolver {
                Some(resolver) => {
                    let uid = resolver.resolve(token, now_secs)?;
                    validate_uid(&uid)?;
                    Ok(Cow::Owned(uid))
                }
                None => Err(Error::UnknownRegToken),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_rules() {
        assert!(validate_uid("u").is_ok());
        assert!(validate_uid(&"u".repeat(256)).is_ok());
        assert!(validate_uid("").is_err());
        assert!(validate_uid(&"u".repeat(257)).is_err());
        assert!(validate_uid("a\nb").is_err());
        let reason = |uid: &str| match validate_uid(uid) {
            Err(Error::InvalidUid { reason }) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(""), "a UID must not be empty");
        assert_eq!(reason(&"u".repeat(257)), "a UID must be at most 256 bytes");
        assert_eq!(reason(&"\n".repeat(257)), "a UID must be at most 256 bytes");
        assert_eq!(reason("a\nb"), "a UID must not contain control characters");
    }

    #[test]
    fn control_characters_are_found_at_every_position() {
        for len in 0..=40 {
            for at in 0..len {
                for byte in (0u8..=0x7F).chain([0x80, 0xC3, 0xFF]) {
                    let mut bytes = vec![b'u'; len];
                    bytes[at] = byte;
                    assert_eq!(
                        has_ascii_control(&bytes),
                        byte.is_ascii_control(),
                        "byte {byte:#x} at {at} of {len}"
                    );
                }
            }
        }
        assert!(validate_uid("user-0000\u{7f}1").is_err());
        assert!(validate_uid("usér-00000001-ünïcødé").is_ok());
    }

    #[test]
    fn tokens_resolve_until_they_expire() {
        let store = TokenStore::new(Duration::from_secs(3600));
        let token = store.issue("uid-1", 1000, |_, _| Ok(())).unwrap();
        assert_eq!(token.as_str().len(), 32);
        let subject = Subject::from(&token);
        assert_eq!(
            resolve_subject(subject, &store, None, 1000).unwrap(),
            "uid-1"
        );
        assert!(matches!(
            resolve_subject(subject, &store, None, 4600),
            Err(Error::ExpiredRegToken { expired_at: 4600 })
        ));
        assert!(matches!(
            resolve_subject(Subject::RegToken("nope"), &store, None, 1000),
            Err(Error::UnknownRegToken)
        ));
        assert_ne!(store.issue("uid-1", 1000, |_, _| Ok(())).unwrap(), token);
    }

    fn resolved_at(store: &TokenStore, token: &RegToken, now_secs: i64) -> Result<String> {
        resolve_subject(Subject::from(token), store, None, now_secs).map(Cow::into_owned)
    }

    #[test]
    fn expired_tokens_stay_expired_until_the_latest_kept_crowd_them_out() {
        let mut store = TokenStore::new(Duration::from_secs(3600));
        store.max_expired = 500;
        let issue = |store: &TokenStore, uid, now| store.issue(uid, now, |_, _| Ok(())).unwrap();
        let first = issue(&store, "uid-1", 1000);
        // A year on, after a sweep (every 1024 issues): still "expired",
        // its UID dropped, and in the snapshot image.
        let year = 1000 + 365 * 86_400;
        let later: Vec<RegToken> = (0..SWEEP_EVERY as i64)
            .map(|i| issue(&store, "uid-2", year + i))
            .collect();
        assert!(matches!(
            resolved_at(&store, &first, year + 2000),
            Err(Error::ExpiredRegToken { expired_at: 4600 })
        ));
        assert_eq!(store.tokens.get(first.as_str()).unwrap().uid, "");
        assert!(store.image().iter().any(|(t, _)| t == first.as_str()));
        assert_eq!(
            resolved_at(&store, &later[1023], year + 2000).unwrap(),
            "uid-2"
        );
        // Ten days on, 1,025 tokens have expired: the latest 500 to expire
        // are kept, and the earlier ones are forgotten.
        let then = year + 10 * 86_400;
        for i in 0..SWEEP_EVERY as i64 {
            issue(&store, "uid-3", then + i);
        }
        assert!(matches!(
            resolved_at(&store, &first, then),
            Err(Error::UnknownRegToken)
        ));
        assert!(matches!(
            resolved_at(&store, &later[0], then),
            Err(Error::UnknownRegToken)
        ));
        assert!(matches!(
            resolved_at(&store, &later[1023], then),
            Err(Error::ExpiredRegToken { .. })
        ));
        let expired_kept = store.tokens.iter().filter(|t| t.expires_at <= then).count();
        assert_eq!(expired_kept, 500);
    }

    #[test]
    fn a_host_resolver_answers_for_foreign_tokens() {
        struct Host;
        impl RegTokenResolver for Host {
            fn resolve(&self, token: &str, _now: i64) -> Result<String> {
                match token {
                    "host-token" => Ok("uid-9".into()),
                    _ => Err(Error::UnknownRegToken),
                }
            }
        }
        let store = TokenStore::new(Duration::from_secs(3600));
        let uid = resolve_subject(Subject::RegToken("host-token"), &store, Some(&Host), 0).unwrap();
        assert_eq!(uid, "uid-9");
    }
}
