//! regTokens on the shared store: keys that Redis expires, and resolving a
//! subject to its UID.

use std::time::Duration;

use super::Cluster;
use crate::error::{Error, Result};
use crate::subject::{RegToken, Subject, random_hex_128, validate_uid};

/// How long an expired regToken's key is kept after it expires, so that a
/// late caller hears "expired" rather than "unknown".
const EXPIRED_TOKEN_KEPT: Duration = Duration::from_secs(24 * 3600);

impl Cluster {
    /// Issues a regToken for `uid`, valid for the configured time.
    pub async fn issue_reg_token(&self, uid: &str) -> Result<RegToken> {
        validate_uid(uid)?;
        let token = random_hex_128()?;
        let ttl = self.inner.config.reg_token_ttl.as_secs().max(1);
        let expires_at = self.inner.clock.unix_secs().saturating_add(ttl as i64);
        let _: () = redis::cmd("SET")
            .arg(self.inner.keys.token(&token))
            .arg(format!("{expires_at}:{uid}"))
            .arg("EX")
            .arg(ttl + EXPIRED_TOKEN_KEPT.as_secs())
            .query_async(&mut self.connection())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(RegToken::issued(token))
    }

    /// The UID a subject stands for.
    pub async fn resolve_uid(&self, subject: Subject<'_>) -> Result<String> {
        self.uid_of(subject, self.inner.clock.unix_secs()).await
    }

    /// The UID `subject` stands for at `now_secs`.
    pub(super) async fn uid_of(&self, subject: Subject<'_>, now_secs: i64) -> Result<String> {
        let token = match subject {
            Subject::Uid(uid) => {
                validate_uid(uid)?;
                return Ok(uid.to_owned());
            }
            Subject::RegToken(token) => token,
        };
        if token.is_empty() {
            return Err(Error::UnknownRegToken);
        }
        let key = self.inner.keys.token(token);
        let stored: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut self.connection())
            .await
            .map_err(|e| self.failed(e))?;
        let stored = stored.ok_or(Error::UnknownRegToken)?;
        let (expires_at, uid) = stored
            .split_once(':')
            .and_then(|(at, uid)| Some((at.parse::<i64>().ok()?, uid)))
            .ok_or_else(|| Error::StoreCorrupt {
                key,
                reason: "a regToken's key holds no expiry".to_owned(),
            })?;
        if expires_at <= now_secs {
            return Err(Error::ExpiredRegToken {
                expired_at: expires_at,
            });
        }
        Ok(uid.to_owned())
    }
}
