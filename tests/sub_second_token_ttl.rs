//! Pins a fault in the regToken lifetime: a `reg_token_ttl` under one
//! second was truncated to zero seconds, so every token expired the moment
//! it was issued. Such a lifetime is now refused when the engine is built.

use std::time::Duration;

use tally::{Error, ManualClock, Subject, Tally};

const NOW: i64 = 1_795_780_800; // 2026-11-27 12:00:00 UTC

#[test]
fn a_token_lifetime_under_one_second_is_refused_at_build() {
    let built = Tally::builder()
        .reg_token_ttl(Duration::from_millis(500))
        .build();
    assert!(matches!(built, Err(Error::Config(_))), "{built:?}");
}

#[test]
fn a_one_second_lifetime_issues_a_token_that_resolves() {
    let clock = ManualClock::new(NOW);
    let engine = Tally::builder()
        .clock(clock.clone())
        .reg_token_ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    let token = engine.issue_reg_token("u").unwrap();
    assert_eq!(
        engine
            .resolve_uid(Subject::RegToken(token.as_str()))
            .unwrap(),
        "u"
    );
}
