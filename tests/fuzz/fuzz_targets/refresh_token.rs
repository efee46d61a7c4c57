//! Refresh-token parsing: never panics; only minted tokens verify.
#![no_main]

use std::sync::LazyLock;

use baton::store::{RefreshKeys, SessionId};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<(RefreshKeys, String)> = LazyLock::new(|| {
    let keys = RefreshKeys::new(1, [9u8; 32]).unwrap();
    let minted = keys
        .mint(&SessionId::generate("alice").unwrap(), 3)
        .into_string();
    (keys, minted)
});

fuzz_target!(|data: &[u8]| {
    let (keys, minted) = &*KEYS;
    if let Ok(text) = std::str::from_utf8(data) {
        if keys.verify(text).is_some() {
            assert_eq!(text, minted, "an unminted refresh token verified");
        }
        let _ = text.parse::<SessionId>();
    }
    // Mutations of the minted token.
    let mut token = minted.clone().into_bytes();
    for (i, b) in data.iter().enumerate().take(4) {
        let at = (usize::from(*b) + i * 31) % token.len();
        token[at] ^= b | 1;
    }
    if let Ok(text) = String::from_utf8(token) {
        assert!(keys.verify(&text).is_none() || &text == minted);
    }
});
