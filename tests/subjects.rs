//! Subjects and regTokens.
//!
//! Pins: a UID is 1..=256 bytes without ASCII control characters; the engine
//! issues regTokens that stand for a UID for `reg_token_ttl` (default 1
//! hour, engine clock); increments and reads through a token land on its
//! UID; unknown and expired tokens are distinct 400006 errors (expired ones
//! are remembered for a day, crate decision); tokens are unguessable (1000
//! issued are distinct, at least 32 hex characters = 128 bits) and not
//! printed by `Debug`; a host resolver answers for tokens the engine did not
//! issue.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod stores;

use stores::{Store, StoreKind};
use tally::{Error, Increment, ManualClock, RegTokenResolver, Selector, Subject, Tally};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC

fn engine(kind: StoreKind, clock: &ManualClock) -> Store {
    let engine = Store::on_clock(kind, clock);
    engine.register([("c", "/a")]).unwrap();
    engine
}

fn count(engine: &Store, uid: &str) -> i64 {
    engine
        .get(uid, &[Selector::class("c").path("/a")])
        .unwrap()
        .first()
        .map_or(0, |r| r.count)
}

store_tests! {
    fn uid_rules(kind) {
        let engine = engine(kind, &ManualClock::new(NOW));
        let max = "u".repeat(256);
        engine
            .increment(max.as_str(), &[Increment::new("c", "/a")])
            .unwrap();
        engine
            .increment("ユーザー", &[Increment::new("c", "/a")])
            .unwrap();
        engine
            .increment("with space", &[Increment::new("c", "/a")])
            .unwrap();
        let too_long = "u".repeat(257);
        for bad in ["", too_long.as_str(), "a\nb", "a\u{0}", "a\u{7f}"] {
            let err = engine
                .increment(bad, &[Increment::new("c", "/a")])
                .unwrap_err();
            assert!(matches!(err, Error::InvalidUid { .. }), "{bad:?}: {err:?}");
            assert_eq!(err.code().number(), 400006);
            assert!(matches!(
                engine.get(bad, &[]),
                Err(Error::InvalidUid { .. })
            ));
            assert!(matches!(
                engine.issue_reg_token(bad),
                Err(Error::InvalidUid { .. })
            ));
        }
        if let Some(engine) = engine.embedded() {
            assert_eq!(engine.subject_count(), 3);
        }
    }

    fn a_token_stands_for_its_uid(kind) {
        let engine = engine(kind, &ManualClock::new(NOW));
        let token = engine.issue_reg_token("pending-user").unwrap();
        engine
            .increment(
                Subject::RegToken(token.as_str()),
                &[Increment::new("c", "/a")],
            )
            .unwrap();
        engine
            .increment(&token, &[Increment::new("c", "/a").count(2)])
            .unwrap();
        // Counter handles are the embedded engine's; the cluster gets the
        // same amount through a token by an increment.
        if let Some(embedded) = engine.embedded() {
            let handle = embedded.counter("c", "/a").unwrap();
            embedded.increment_counter(&token, &handle, 4, 0).unwrap();
        } else {
            engine
                .increment(&token, &[Increment::new("c", "/a").count(4)])
                .unwrap();
        }
        assert_eq!(count(&engine, "pending-user"), 7);
        let via_token = engine.get(&token, &[]).unwrap();
        assert_eq!(via_token, engine.get("pending-user", &[]).unwrap());
        assert_eq!(
            engine.resolve_uid(Subject::from(&token)).unwrap(),
            "pending-user"
        );
        // The token text itself is not a UID of anyone's data.
        assert!(engine.get(token.as_str(), &[]).unwrap().is_empty());
    }

    fn tokens_expire_after_an_hour_by_default(kind) {
        let clock = ManualClock::new(NOW);
        let engine = engine(kind, &clock);
        assert_eq!(engine.config().reg_token_ttl, Duration::from_secs(3600));
        let token = engine.issue_reg_token("u").unwrap();
        clock.advance(Duration::from_secs(3599));
        engine
            .increment(&token, &[Increment::new("c", "/a")])
            .unwrap();
        clock.advance(Duration::from_secs(2));
        let err = engine
            .increment(&token, &[Increment::new("c", "/a")])
            .unwrap_err();
        assert!(
            matches!(err, Error::ExpiredRegToken { expired_at } if expired_at == NOW + 3600),
            "{err:?}"
        );
        assert_eq!(err.code().number(), 400006);
        assert!(err.to_string().contains("expired"), "{err}");
        assert!(matches!(
            engine.get(&token, &[]),
            Err(Error::ExpiredRegToken { .. })
        ));
        assert_eq!(count(&engine, "u"), 1);
        // Still "expired", not "unknown", most of a day later.
        clock.advance(Duration::from_secs(23 * 3600));
        assert!(matches!(
            engine.get(&token, &[]),
            Err(Error::ExpiredRegToken { .. })
        ));
    }

    fn the_ttl_is_configurable(kind) {
        let clock = ManualClock::new(NOW);
        let engine = Store::builder(kind)
            .clock(clock.clone())
            .reg_token_ttl(Duration::from_secs(60))
            .build();
        engine.register([("c", "/a")]).unwrap();
        let token = engine.issue_reg_token("u").unwrap();
        clock.advance(Duration::from_secs(59));
        engine
            .increment(&token, &[Increment::new("c", "/a")])
            .unwrap();
        clock.advance(Duration::from_secs(2));
        assert!(matches!(
            engine.increment(&token, &[Increment::new("c", "/a")]),
            Err(Error::ExpiredRegToken { expired_at }) if expired_at == NOW + 60
        ));
        // A token issued later runs from its own issue time.
        let later = engine.issue_reg_token("u").unwrap();
        engine
            .increment(&later, &[Increment::new("c", "/a")])
            .unwrap();
        assert!(matches!(
            Store::builder(kind)
                .reg_token_ttl(Duration::ZERO)
                .try_build(),
            Err(Error::Config(_))
        ));
    }

    fn unknown_tokens_are_told_apart_from_expired_ones(kind) {
        let engine = engine(kind, &ManualClock::new(NOW));
        engine.issue_reg_token("u").unwrap();
        for bad in ["", "nope", "00000000000000000000000000000000"] {
            let err = engine
                .increment(Subject::RegToken(bad), &[Increment::new("c", "/a")])
                .unwrap_err();
            assert!(matches!(err, Error::UnknownRegToken), "{bad:?}: {err:?}");
            assert_eq!(err.code().number(), 400006);
            assert!(err.to_string().contains("unknown"), "{err}");
        }
        if let Some(engine) = engine.embedded() {
            assert_eq!(engine.subject_count(), 0);
        }
    }

    fn tokens_are_distinct_long_random_hex(kind) {
        let engine = engine(kind, &ManualClock::new(NOW));
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let token = engine.issue_reg_token("same-user").unwrap();
            let text = token.as_str();
            assert!(text.len() >= 32, "{text}");
            assert!(text.bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
            assert_eq!(token.to_string(), text);
            assert!(seen.insert(text.to_owned()), "duplicate token {text}");
        }
        // Every token issued is valid at once.
        for text in &seen {
            assert_eq!(
                engine.resolve_uid(Subject::RegToken(text)).unwrap(),
                "same-user"
            );
        }
    }

    fn debug_does_not_print_the_token(kind) {
        let engine = engine(kind, &ManualClock::new(NOW));
        let token = engine.issue_reg_token("u").unwrap();
        assert!(!format!("{token:?}").contains(token.as_str()));
    }
}

/// A host account system: knows `host-1` (valid) and `host-old` (expired),
/// and records the times it was asked at.
struct Host {
    asked_at: Arc<Mutex<Vec<i64>>>,
}

impl RegTokenResolver for Host {
    fn resolve(&self, token: &str, now_secs: i64) -> tally::Result<String> {
        self.asked_at.lock().unwrap().push(now_secs);
        match token {
            "host-1" => Ok("host-user".to_owned()),
            "host-bad-uid" => Ok(String::new()),
            "host-old" => Err(Error::ExpiredRegToken { expired_at: 42 }),
            _ => Err(Error::UnknownRegToken),
        }
    }
}

// A host resolver is an option of the embedded engine only.
#[test]
fn a_host_resolver_answers_for_foreign_tokens() {
    let asked_at = Arc::new(Mutex::new(Vec::new()));
    let clock = ManualClock::new(NOW);
    let engine = Store::Embedded(
        Tally::builder()
            .clock(clock.clone())
            .reg_token_resolver(Host {
                asked_at: asked_at.clone(),
            })
            .build()
            .unwrap(),
    );
    engine.register([("c", "/a")]).unwrap();
    engine
        .increment(Subject::RegToken("host-1"), &[Increment::new("c", "/a")])
        .unwrap();
    assert_eq!(count(&engine, "host-user"), 1);
    assert_eq!(*asked_at.lock().unwrap(), [NOW]);
    assert!(matches!(
        engine.get(Subject::RegToken("host-old"), &[]),
        Err(Error::ExpiredRegToken { expired_at: 42 })
    ));
    assert!(matches!(
        engine.get(Subject::RegToken("other"), &[]),
        Err(Error::UnknownRegToken)
    ));
    // The UID a resolver returns is checked like any other.
    assert!(matches!(
        engine.get(Subject::RegToken("host-bad-uid"), &[]),
        Err(Error::InvalidUid { .. })
    ));
    // The engine's own tokens still work, without asking the host.
    let own = engine.issue_reg_token("own-user").unwrap();
    let asked = asked_at.lock().unwrap().len();
    engine
        .increment(&own, &[Increment::new("c", "/a")])
        .unwrap();
    assert_eq!(asked_at.lock().unwrap().len(), asked);
    assert_eq!(count(&engine, "own-user"), 1);
}
