//! The prepared-key path against the jsonwebtoken reference path, and the cached path against
//! both: on arbitrary text and on mutations of valid tokens of every algorithm, all three must
//! accept the same tokens with the same claims and refuse the others with the same error.
#![no_main]

use std::sync::LazyLock;

use baton::token::{
    Algorithm, Claims, Issuer, Key, KeySet, NoCustomClaims, TokenCache, VerifyError, Verifier,
};
use libfuzzer_sys::fuzz_target;

#[path = "edits.rs"]
mod edits;


static SETUP: LazyLock<(Verifier, Vec<String>)> = LazyLock::new(|| {
    let mut set = KeySet::default();
    let mut tokens = Vec::new();
    for alg in Algorithm::ALL {
        let (signing, verifying) = if alg.is_symmetric() {
            (
                Key::hmac(alg.as_str(), alg, [9u8; 64]).unwrap(),
                Key::hmac(alg.as_str(), alg, [9u8; 64]).unwrap(),
            )
        } else {
            let key = Key::generate(alg.as_str(), alg).unwrap();
            let public = Key::from_jwk(&key.public_jwk_json().unwrap()).unwrap();
            (key, public)
        };
        set = set.with_key(verifying).unwrap();
        let issuer = Issuer::new(KeySet::new(signing).unwrap()).with_audience("api");
        tokens.push(issuer.issue("alice", Some("s1"), NoCustomClaims {}).unwrap().token);
    }
    let verifier = Verifier::new(set)
        .with_audience("api")
        .with_cache(TokenCache::new(1024, 4 << 20));
    (verifier, tokens)
});

fn outcome(r: &Result<Claims<NoCustomClaims>, VerifyError>) -> Result<&Claims, (String, String)> {
    r.as_ref()
        .map_err(|e| (format!("{:?}", e.kind()), e.to_string()))
}

fuzz_target!(|data: &[u8]| {
    let (verifier, tokens) = &*SETUP;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode & 1 == 0 {
        // Arbitrary text.
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        text.to_owned()
    } else {
        // A valid token, edited.
        let original = &tokens[usize::from(mode >> 1) % tokens.len()];
        let Some(text) = edits::apply(original, rest) else {
            return;
        };
        text
    };
    let fast = verifier.verify::<NoCustomClaims>(&token);
    let reference = verifier.verify_reference::<NoCustomClaims>(&token);
    assert_eq!(outcome(&fast), outcome(&reference), "{token:?}");
    for _ in 0..2 {
        let cached = verifier.verify_cached::<NoCustomClaims>(&token);
        assert_eq!(outcome(&cached), outcome(&fast), "{token:?}");
    }
    if fast.is_ok() {
        assert!(tokens.contains(&token), "an edited token verified: {token:?}");
    }
});
