use super::*;
use crate::error::ErrorCode;

const SECRET: &str = "c2VjcmV0LWJ5dGVz";
const NOW: i64 = 1_795_780_800_000;

fn auth() -> Auth {
    Auth::new()
        .keys_from_str(
            "api-key site\napi-key partner cGFydG5lcg== # comment\n\nuser-key app c2VjcmV0LWJ5dGVz",
        )
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

fn signed<'a>(extra: &[(&'a str, &'a str)], ts: &'a str, nonce: &'a str) -> Vec<(String, String)> {
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
