//! Valid tokens, mutated: never panics, and only the untouched token verifies.
#![no_main]

use std::sync::LazyLock;

use baton::token::{Algorithm, Issuer, Key, KeySet, NoCustomClaims, Verifier};
use libfuzzer_sys::fuzz_target;

#[path = "edits.rs"]
mod edits;

static SETUP: LazyLock<(Verifier, Vec<String>)> = LazyLock::new(|| {
    let set = KeySet::new(Key::hmac("hs", Algorithm::HS256, [7u8; 32]).unwrap()).unwrap();
    let hs = Issuer::new(set.clone());
    let es = Issuer::new(KeySet::new(Key::generate("ec", Algorithm::ES256).unwrap()).unwrap());
    let keys = set
        .with_key(
            Key::from_jwk(
                &es.keys()
                    .load()
                    .active()
                    .unwrap()
                    .public_jwk_json()
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
    let tokens = vec![
        hs.issue("alice", Some("s1"), NoCustomClaims {})
            .unwrap()
            .token,
        es.issue("bob", None, NoCustomClaims {}).unwrap().token,
    ];
    (Verifier::new(keys), tokens)
});

fuzz_target!(|data: &[u8]| {
    let (verifier, tokens) = &*SETUP;
    let Some((&pick, changes)) = data.split_first() else {
        return;
    };
    let original = &tokens[usize::from(pick) % tokens.len()];
    let Some(mutated) = edits::apply(original, changes) else {
        return;
    };
    if verifier.verify::<NoCustomClaims>(&mutated).is_ok() {
        assert_eq!(&mutated, original, "a mutated token verified");
    }
});
