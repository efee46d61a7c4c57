//! The verifier on arbitrary bytes: never panics, and nothing unsigned verifies.
#![no_main]

use std::sync::LazyLock;

use baton::token::{Algorithm, Key, KeySet, NoCustomClaims, Verifier};
use libfuzzer_sys::fuzz_target;

static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    let set = KeySet::new(Key::hmac("hs", Algorithm::HS256, [7u8; 32]).unwrap())
        .unwrap()
        .with_key(Key::generate("ec", Algorithm::ES256).unwrap())
        .unwrap()
        .with_key(Key::generate("ed", Algorithm::EdDSA).unwrap())
        .unwrap();
    Verifier::new(set)
});

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        assert!(
            VERIFIER.verify::<NoCustomClaims>(token).is_err(),
            "an arbitrary token verified"
        );
    }
});
