//! The prepared-key path (`Verifier::verify`) against the jsonwebtoken reference path
//! (`Verifier::verify_reference`): on valid tokens of every algorithm and on thousands of
//! systematic mutations of them, both must accept and refuse the same tokens with the same
//! error. And against jsonwebtoken's own `decode`: whatever baton accepts, the crate accepts
//! too (baton is stricter: no `crit` at all, one key per `kid`), so nothing jsonwebtoken 12
//! refuses (unknown critical headers, `b64: false`, `sub`/`iss`/`aud`/`exp` of the wrong JSON
//! type) gets through. (`tests/fuzz` has the same checks on arbitrary and mutated input.)

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use baton_token::{
    Algorithm, Claims, ErrorKind, Issuer, Key, KeyRing, KeySet, NoCustomClaims, TestClock,
    TokenCache, Verifier,
};
use serde_json::{Value, json};

const NOW: u64 = 1_800_000_000;

struct Setup {
    verifier: Verifier,
    tokens: Vec<String>,
    /// The same keys as jsonwebtoken's own, by kid.
    crate_keys: Vec<(String, jsonwebtoken::Algorithm, jsonwebtoken::DecodingKey)>,
}

/// One verifier holding a key of every algorithm (public halves only for the asymmetric
/// ones), and a valid token signed by each.
fn setup() -> Setup {
    let clock = TestClock::at_secs(NOW);
    let mut set = KeySet::default();
    let mut tokens = Vec::new();
    let mut crate_keys = Vec::new();
    for alg in Algorithm::ALL {
        let jwt_alg: jsonwebtoken::Algorithm = alg.as_str().parse().unwrap();
        let (signing, verifying) = if alg.is_symmetric() {
            let secret = hmac_secret(alg);
            crate_keys.push((
                alg.as_str().to_owned(),
                jwt_alg,
                jsonwebtoken::DecodingKey::from_secret(&secret).unwrap(),
            ));
            (
                Key::hmac(alg.as_str(), alg, &secret).unwrap(),
                Key::hmac(alg.as_str(), alg, &secret).unwrap(),
            )
        } else {
            let key = Key::generate(alg.as_str(), alg).unwrap();
            let jwk = key.public_jwk_json().unwrap();
            let crate_jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(&jwk).unwrap();
            crate_keys.push((
                alg.as_str().to_owned(),
                jwt_alg,
                jsonwebtoken::DecodingKey::from_jwk(&crate_jwk).unwrap(),
            ));
            let public = Key::from_jwk(&jwk).unwrap();
            (key, public)
        };
        set = set.with_key(verifying).unwrap();
        let issuer = Issuer::new(KeySet::new(signing).unwrap())
            .with_clock(clock.clone())
            .with_iss("https://issuer.test")
            .with_aud("api");
        tokens.push(
            issuer
                .issue("alice", Some("s1"), NoCustomClaims {})
                .unwrap()
                .token,
        );
    }
    // With a cache, so that `agree` also checks `verify_cached` (which alone uses it).
    let verifier = Verifier::new(KeyRing::new(set))
        .with_clock(clock)
        .with_iss("https://issuer.test")
        .with_aud("api")
        .with_cache(TokenCache::new(1 << 14, 64 << 20));
    Setup {
        verifier,
        tokens,
        crate_keys,
    }
}

/// `true` when jsonwebtoken's own `decode` accepts `token` under the same key, issuer and
/// audience (times are baton's to check: its clock is a test clock).
fn crate_accepts(s: &Setup, token: &str) -> bool {
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return false;
    };
    let Some(kid) = header.kid else { return false };
    let Some((_, alg, key)) = s.crate_keys.iter().find(|(k, _, _)| *k == kid) else {
        return false;
    };
    let mut validation = jsonwebtoken::Validation::new(*alg);
    validation.set_issuer(&["https://issuer.test"]);
    validation.set_audience(&["api"]);
    validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    jsonwebtoken::decode::<Value>(token, key, &validation).is_ok()
}

/// [`agree`] on the setup's verifier, and jsonwebtoken's `decode` accepts what baton accepts.
#[track_caller]
fn agree_all(s: &Setup, token: &str) -> Result<(), ErrorKind> {
    let outcome = agree(&s.verifier, token);
    if outcome.is_ok() {
        assert!(
            crate_accepts(s, token),
            "baton accepts what jsonwebtoken refuses: {token}"
        );
    }
    outcome
}

fn hmac_secret(alg: Algorithm) -> Vec<u8> {
    vec![alg.as_str().len() as u8 + 40; 64]
}

#[track_caller]
fn agree(verifier: &Verifier, token: &str) -> Result<(), ErrorKind> {
    let fast = verifier.verify::<NoCustomClaims>(token);
    let reference = verifier.verify_reference::<NoCustomClaims>(token);
    // Through the cache: the first call fills it, the second may be served from it.
    for _ in 0..2 {
        let cached = verifier.verify_cached::<NoCustomClaims>(token);
        assert_eq!(
            cached.as_deref().map_err(|e| (e.kind(), e.to_string())),
            fast.as_ref().map_err(|e| (e.kind(), e.to_string())),
            "cached path on {token}"
        );
    }
    match (&fast, &reference) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "{token}");
            Ok(())
        }
        (Err(a), Err(b)) => {
            assert_eq!(
                (a.kind(), a.to_string()),
                (b.kind(), b.to_string()),
                "{token}"
            );
            Err(a.kind())
        }
        _ => panic!("paths disagree on {token:?}: fast {fast:?}, reference {reference:?}"),
    }
}

/// A token with any header and claims, signed with the HMAC key of `alg`.
fn hmac_token(alg: Algorithm, claims: &Value, header: &Value) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
    );
    let key = jsonwebtoken::EncodingKey::from_secret(&hmac_secret(alg)).unwrap();
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg.as_str().parse().unwrap())
        .unwrap();
    format!("{message}.{sig}")
}

fn good_claims() -> Value {
    json!({"iss": "https://issuer.test", "aud": "api", "sub": "alice", "exp": NOW + 300, "iat": NOW, "sid": "s1"})
}

fn valid_tokens(s: &Setup) -> Vec<String> {
    s.tokens.clone()
}

#[test]
fn every_algorithm_verifies_on_both_paths() {
    let s = setup();
    let tokens = valid_tokens(&s);
    assert_eq!(tokens.len(), 8);
    for token in &tokens {
        assert_eq!(agree_all(&s, token), Ok(()), "{token}");
    }
}

#[test]
fn single_byte_edits_of_every_position_agree() {
    let s = setup();
    let mut refused = 0usize;
    let mut checked = 0usize;
    for token in valid_tokens(&s) {
        let bytes = token.as_bytes();
        for at in 0..bytes.len() {
            for replacement in [b'A', b'_', b'-', b'.', b'=', b'+', b'/', b' '] {
                if bytes[at] == replacement {
                    continue;
                }
                let mut edited = bytes.to_vec();
                edited[at] = replacement;
                let edited = String::from_utf8(edited).unwrap();
                if agree_all(&s, &edited).is_err() {
                    refused += 1;
                }
                checked += 1;
            }
            // Deletion.
            let mut edited = bytes.to_vec();
            edited.remove(at);
            let edited = String::from_utf8(edited).unwrap();
            if agree_all(&s, &edited).is_err() {
                refused += 1;
            }
            checked += 1;
        }
    }
    assert!(checked > 10_000, "{checked}");
    // Nearly every edit is refused; the few accepted ones (a base64 character whose change
    // only touches padding bits is refused by the strict engine too) are accepted by both.
    assert!(refused * 100 >= checked * 99, "{refused} of {checked}");
}

#[test]
fn signature_encodings_agree() {
    let s = setup();
    for token in valid_tokens(&s) {
        let (message, signature) = token.rsplit_once('.').unwrap();
        let raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
        let cases = [
            // Padded base64url.
            format!("{message}.{}", URL_SAFE.encode(&raw)),
            // Standard alphabet.
            format!(
                "{message}.{}",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(&raw)
            ),
            // Empty, one byte short, one byte long, doubled.
            format!("{message}."),
            format!(
                "{message}.{}",
                URL_SAFE_NO_PAD.encode(&raw[..raw.len() - 1])
            ),
            format!(
                "{message}.{}",
                URL_SAFE_NO_PAD.encode([&raw[..], &[0]].concat())
            ),
            format!("{message}.{}", URL_SAFE_NO_PAD.encode(raw.repeat(2))),
            // Larger than the stack buffer (1,024 bytes decoded).
            format!("{message}.{}", URL_SAFE_NO_PAD.encode(vec![7u8; 1500])),
            // All zeros of the right length.
            format!("{message}.{}", URL_SAFE_NO_PAD.encode(vec![0u8; raw.len()])),
            // Non-canonical trailing bits in the last character.
            format!("{message}.{}", flip_trailing_bits(signature)),
            // Whitespace and a stray dot.
            format!("{message}. {signature}"),
            format!("{message}.{signature}."),
        ];
        // (A signature without `+` or `/` reads the same in the standard alphabet.)
        for case in cases.into_iter().filter(|case| *case != token) {
            assert!(agree_all(&s, &case).is_err(), "{case}");
        }
    }
}

/// Changes the unused low bits of the last base64 character, when the length leaves some.
fn flip_trailing_bits(signature: &str) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = signature.as_bytes().to_vec();
    let last = bytes.pop().unwrap();
    let index = alphabet.iter().position(|&c| c == last).unwrap();
    bytes.push(alphabet[index ^ 1]);
    String::from_utf8(bytes).unwrap()
}

#[test]
fn headers_and_claims_agree() {
    let s = setup();
    let alg = Algorithm::HS256;
    let headers = [
        json!({"alg": "HS256", "kid": "HS256"}),
        json!({"alg": "HS256"}),
        json!({"alg": "HS384", "kid": "HS256"}),
        json!({"alg": "HS256", "kid": "nope"}),
        json!({"alg": "HS256", "kid": "HS256", "crit": ["exp"]}),
        json!({"alg": "HS256", "kid": "HS256", "jku": "https://evil.test/jwks"}),
        json!({"alg": "HS256", "kid": "HS256", "jwk": {"kty": "oct", "k": "AAAA"}}),
        json!({"alg": "HS256", "kid": "HS256", "jwk": 5}),
        json!({"alg": "HS256", "kid": 5}),
        json!({"alg": "HS256", "kid": "HS256", "x5c": ["AAAA"]}),
        json!({"alg": "HS256", "kid": "HS256", "typ": 1}),
        json!({"alg": "none", "kid": "HS256"}),
        json!({"kid": "HS256"}),
        json!(["HS256"]),
        json!(["HS256", "HS256"]),
        json!({"alg": "HS256", "kid": "HS256", "typ": null}),
        json!({"alg": "HS256", "kid": null}),
        json!({"alg": "HS256", "kid": "HS256", "cty": "JWT"}),
        // jsonwebtoken 12 refuses these critical-header forms; baton refuses every `crit`.
        json!({"alg": "HS256", "kid": "HS256", "crit": []}),
        json!({"alg": "HS256", "kid": "HS256", "crit": ["b64"], "b64": true}),
        json!({"alg": "HS256", "kid": "HS256", "crit": ["b64", "b64"], "b64": true}),
        json!({"alg": "HS256", "kid": "HS256", "crit": ["someWeirdExtension"]}),
        json!({"alg": "HS256", "kid": "HS256", "crit": "b64"}),
        json!({"alg": "HS256", "kid": "HS256", "b64": false}),
        json!({"alg": "HS256", "kid": "HS256", "b64": "yes"}),
    ];
    let claims = [
        good_claims(),
        json!({"sub": "alice", "exp": NOW + 300, "iss": "https://issuer.test", "aud": ["x", "api"]}),
        json!({"sub": "alice", "exp": NOW - 31, "iss": "https://issuer.test", "aud": "api"}),
        json!({"sub": "alice", "exp": NOW + 300, "nbf": NOW + 31, "iss": "https://issuer.test", "aud": "api"}),
        json!({"sub": "alice", "exp": "1900000000", "iss": "https://issuer.test", "aud": "api"}),
        json!({"sub": 5, "exp": NOW + 300, "iss": "https://issuer.test", "aud": "api"}),
        // Claim type confusion (fixed in jsonwebtoken 12 for sub, iss and aud).
        json!({"sub": ["alice"], "exp": NOW + 300, "iss": "https://issuer.test", "aud": "api"}),
        json!({"sub": "alice", "exp": NOW + 300, "iss": ["https://issuer.test"], "aud": "api"}),
        json!({"sub": "alice", "exp": NOW + 300, "iss": 5, "aud": "api"}),
        json!({"sub": "alice", "exp": NOW + 300, "iss": "https://issuer.test", "aud": 5}),
        json!({"sub": "alice", "exp": NOW + 300, "iss": "https://issuer.test", "aud": {"api": true}}),
        json!({"sub": "alice", "exp": NOW as f64 + 300.5, "iss": "https://issuer.test", "aud": "api"}),
        json!({"sub": "alice", "exp": NOW + 300, "nbf": "0", "iss": "https://issuer.test", "aud": "api"}),
        json!({"exp": NOW + 300, "iss": "https://issuer.test", "aud": "api"}),
        json!({"sub": "alice", "exp": NOW + 300, "iss": "https://other.test", "aud": "api"}),
        json!({"sub": "alice", "exp": NOW + 300, "iss": "https://issuer.test", "aud": "web"}),
        json!({"sub": "alice", "exp": NOW + 300, "iss": "https://issuer.test", "aud": "api", "big": "x".repeat(3000)}),
        json!("not an object"),
    ];
    let mut accepted = 0;
    for header in &headers {
        for claims in &claims {
            if agree_all(&s, &hmac_token(alg, claims, header)).is_ok() {
                accepted += 1;
            }
        }
    }
    // Headers as raw text: duplicates, escapes, whitespace.
    for raw in [
        r#"{"alg":"HS256","kid":"HS256","alg":"none"}"#,
        r#"{"alg":"HS256","kid":"HS256","kid":"HS256"}"#,
        r#"{"alg":"HS256","kid":"HS\u0032\u00356"}"#,
        r#"{"alg":"H\u005356","kid":"HS256"}"#,
        r#" {"alg":"HS256","kid":"HS256"}"#,
        r#"{"alg":"HS256","kid":"HS256"} "#,
        r#"{"alg":"HS256","kid":"HS256"}x"#,
        r#"{"alg":"HS256","kid":"HS256","typ":"JWT","extra":{"a":[1,2]}}"#,
        r#"{"alg":"HS256","kid":"HS256""#,
        "",
    ] {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(raw),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good_claims()).unwrap())
        );
        let key = jsonwebtoken::EncodingKey::from_secret(&hmac_secret(alg)).unwrap();
        let sig =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                .unwrap();
        if agree_all(&s, &format!("{message}.{sig}")).is_ok() {
            accepted += 1;
        }
    }
    // Good claims with the headers that name the key (with or without harmless extras).
    assert!(accepted >= 4, "{accepted}");
}

#[test]
fn a_verifier_rejecting_everything_agrees_too() {
    // Key bytes aws-lc-rs refuses (an RSA modulus too small for RS256's 2048-bit minimum):
    // both paths must refuse every token signed for it.
    let small = r#"{"kty":"RSA","kid":"small","alg":"RS256","n":"wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB","e":"AQAB"}"#;
    let key = Key::from_jwk(small).expect("the key itself parses; only verification refuses it");
    let verifier = Verifier::new(KeySet::verify_only([key]).unwrap());
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"small"}"#);
    let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good_claims()).unwrap());
    let token = format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode([1u8; 64]));
    assert_eq!(agree(&verifier, &token), Err(ErrorKind::BadSignature));
}

#[test]
fn claims_of_the_fast_path_are_the_issued_claims() {
    let s = setup();
    for token in valid_tokens(&s) {
        let claims: Claims<NoCustomClaims> = s.verifier.verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.sid.as_deref(), Some("s1"));
    }
}

#[test]
fn a_remembered_header_follows_the_key_set() {
    // The fast path remembers the last header and the key it selected; it must forget it as
    // soon as that key leaves the set, or another key takes its kid, or a kid-less header's
    // key stops being the only one.
    let ring = KeyRing::new(KeySet::new(Key::generate("k1", Algorithm::ES256).unwrap()).unwrap());
    let issuer = Issuer::new(ring.clone());
    let verifier = issuer.verifier();
    let token = issuer
        .issue("alice", None, NoCustomClaims {})
        .unwrap()
        .token;
    assert_eq!(agree(&verifier, &token), Ok(()));
    assert_eq!(agree(&verifier, &token), Ok(()));
    ring.update(|set| set.rotate_to(Key::generate("k2", Algorithm::ES256)?))
        .unwrap();
    assert_eq!(agree(&verifier, &token), Ok(()));
    ring.update(|set| set.without("k1")).unwrap();
    assert_eq!(agree(&verifier, &token), Err(ErrorKind::UnknownKey));
    ring.update(|set| set.with_key(Key::generate("k1", Algorithm::ES256)?))
        .unwrap();
    assert_eq!(agree(&verifier, &token), Err(ErrorKind::BadSignature));

    // Without kid: accepted while the set has one key only.
    let ring =
        KeyRing::new(KeySet::new(Key::hmac("only", Algorithm::HS256, [3u8; 32]).unwrap()).unwrap());
    let verifier = Verifier::new(ring.clone());
    let claims = json!({"sub": "alice", "exp": 4_000_000_000u64});
    let header = json!({"alg": "HS256"});
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
    );
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(&[3u8; 32]).unwrap(),
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    let kid_less = format!("{message}.{sig}");
    assert_eq!(agree(&verifier, &kid_less), Ok(()));
    assert_eq!(agree(&verifier, &kid_less), Ok(()));
    ring.update(|set| set.with_key(Key::hmac("other", Algorithm::HS256, [4u8; 32])?))
        .unwrap();
    assert_eq!(agree(&verifier, &kid_less), Err(ErrorKind::UnknownKey));
}
