//! regTokens: issuing them, and resolving a subject to its UID.

use super::Tally;
use crate::error::Result;
use crate::persist::RecordRef;
use crate::subject::{RegToken, Subject, resolve_subject};

impl Tally {
    /// Issues a regToken standing for `uid` for the configured time (1 hour by default).
    pub fn issue_reg_token(&self, uid: &str) -> Result<RegToken> {
        self.inner
            .tokens
            .issue(uid, self.now_secs(), |token, issued| {
                match &self.inner.storage {
                    Some(storage) => storage
                        .log(|_| RecordRef::Token {
                            token,
                            uid: &issued.uid,
                            expires_at: issued.expires_at,
                        })
                        .map(drop),
                    None => Ok(()),
                }
            })
    }

    /// The UID a subject stands for: the UID itself, or its regToken's.
    pub fn resolve_uid(&self, subject: Subject<'_>) -> Result<String> {
        self.uid_of(subject, self.now_secs())
            .map(|uid| uid.into_owned())
    }

    #[inline(always)]
    pub(super) fn uid_of<'a>(
        &self,
        subject: Subject<'a>,
        now_secs: i64,
    ) -> Result<std::borrow::Cow<'a, str>> {
        if let Subject::Uid(uid) = subject {
            // The common case, without a call out.
            crate::subject::validate_uid(uid)?;
            return Ok(std::borrow::Cow::Borrowed(uid));
        }
        resolve_subject(
            subject,
            &self.inner.tokens,
            self.inner.resolver.as_deref(),
            now_secs,
        )
    }
}
