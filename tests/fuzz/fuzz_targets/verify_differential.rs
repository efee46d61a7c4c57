//! The prepared-key path against the jsonwebtoken reference path, and the cached path against
//! both: on arbitrary text and on mutations of valid tokens of every algorithm, all three must
//! accept the same tokens with the same claims and refuse the others with the same error; and
//! jsonwebtoken's own `decode` accepts every token baton accepts.
#![no_main]

use std::sync::{Arc, LazyLock};

use baton::token::{
    Algorithm, Claims, Issuer, Key, KeySet, NoCustomClaims, TokenCache, VerifyError, Verifier,
};
use libfuzzer_sys::fuzz_target;

#[path = "edits.rs"]
mod edits;


type CrateKeys = Vec<(String, jsonwebtoken::Algorithm, jsonwebtoken::DecodingKey)>;

static SETUP: LazyLock<(Verifier, Vec<String>, CrateKeys)> = LazyLock::new(|| {
    let mut set = KeySet::default();
    let mut tokens = Vec::new();
    let mut crate_keys = Vec::new();
    for alg in Algorithm::ALL {
        let jwt_alg: jsonwebtoken::Algorithm = alg.as_str().parse().unwrap();
        let (signing, verifying) = if alg.is_symmetric() {
            let decoding = jsonwebtoken::DecodingKey::from_secret(&[9u8; 64]).unwrap();
            crate_keys.push((alg.as_str().to_owned(), jwt_alg, decoding));
            (
                Key::hmac(alg.as_str(), alg, [9u8; 64]).unwrap(),
                Key::hmac(alg.as_str(), alg, [9u8; 64]).unwrap(),
            )
        } else {
            let key = Key::generate(alg.as_str(), alg).unwrap();
            let jwk = key.public_jwk_json().unwrap();
            let crate_jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(&jwk).unwrap();
            let decoding = jsonwebtoken::DecodingKey::from_jwk(&crate_jwk).unwrap();
            crate_keys.push((alg.as_str().to_owned(), jwt_alg, decoding));
            let public = Key::from_jwk(&jwk).unwrap();
            (key, public)
        };
        set = set.with_key(verifying).unwrap();
        let issuer = Issuer::new(KeySet::new(signing).unwrap()).with_aud("api");
        tokens.push(issuer.issue("alice", Some("s1"), NoCustomClaims {}).unwrap().token);
    }
    let verifier = Verifier::new(set)
        .with_aud("api")
        .with_cache(TokenCache::new(1024, 4 << 20));
    (verifier, tokens, crate_keys)
});

/// `true` when jsonwebtoken's `decode` accepts `token` under the same key and audience.
fn crate_accepts(keys: &CrateKeys, token: &str) -> bool {
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return false;
    };
    let Some(kid) = header.kid else { return false };
    let Some((_, alg, key)) = keys.iter().find(|(k, _, _)| *k == kid) else {
        return false;
    };
    let mut validation = jsonwebtoken::Validation::new(*alg);
    validation.set_audience(&["api"]);
    validation.set_required_spec_claims(&["exp", "sub", "aud"]);
    jsonwebtoken::decode::<serde_json::Value>(token, key, &validation).is_ok()
}

fn outcome(r: &Result<Claims<NoCustomClaims>, VerifyError>) -> Result<&Claims, (String, String)> {
    r.as_ref()
        .map_err(|e| (format!("{:?}", e.kind()), e.to_string()))
}

fuzz_target!(|data: &[u8]| {
    let (verifier, tokens, crate_keys) = &*SETUP;
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
        let cached = verifier
            .verify_cached::<NoCustomClaims>(&token)
            .map(Arc::unwrap_or_clone);
        assert_eq!(outcome(&cached), outcome(&fast), "{token:?}");
    }
    if fast.is_ok() {
        assert!(tokens.contains(&token), "an edited token verified: {token:?}");
        assert!(crate_accepts(crate_keys, &token), "jsonwebtoken refuses {token:?}");
    }
});
