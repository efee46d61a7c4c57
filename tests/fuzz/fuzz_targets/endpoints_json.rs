//! The auth endpoints on arbitrary bodies: never panics, never a 5xx.
#![no_main]

use std::sync::LazyLock;

use baton::store::{MemoryStore, Policy, RefreshKeys};
use baton::token::{Algorithm, Key, KeyRing, KeySet, NoCustomClaims};
use baton::{AuthUnavailable, Authenticator, Baton, Principal, UsernamePassword};
use http::Request;
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Users;

impl Authenticator for Users {
    type Claims = NoCustomClaims;
    type Credentials = UsernamePassword;
    async fn authenticate(
        &self,
        credentials: &UsernamePassword,
    ) -> Result<Option<Principal<NoCustomClaims>>, AuthUnavailable> {
        Ok((credentials.username == "alice" && credentials.password == "pw")
            .then(|| Principal::new("alice", NoCustomClaims {})))
    }
    async fn check_password(&self, user_id: &str, password: &str) -> Result<bool, AuthUnavailable> {
        Ok(user_id == "alice" && password == "pw")
    }
    async fn claims(&self, _: &str) -> Result<Option<NoCustomClaims>, AuthUnavailable> {
        Ok(Some(NoCustomClaims {}))
    }
}

static BATON: LazyLock<Baton<MemoryStore, Users>> = LazyLock::new(|| {
    let keys =
        KeyRing::new(KeySet::new(Key::hmac("k", Algorithm::HS256, [1u8; 32]).unwrap()).unwrap());
    let store = MemoryStore::new(RefreshKeys::new(1, [2u8; 32]).unwrap(), Policy::new());
    Baton::builder(store, Users, keys)
        .rate_limits(baton::RateLimits::none())
        .build()
        .unwrap()
});

const PATHS: [&str; 5] = [
    "/auth/login",
    "/auth/refresh",
    "/auth/logout",
    "/auth/sessions",
    "/auth/logout-all",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let path = PATHS[usize::from(pick) % PATHS.len()];
    let mut req = Request::post(path).header("content-type", "application/json");
    if pick & 0x80 != 0 {
        if let Ok(text) = std::str::from_utf8(body) {
            req = req
                .header("cookie", format!("__Secure-refresh={}", text.trim()))
                .header("authorization", format!("Bearer {}", text.trim()));
        }
    }
    let Ok(req) = req.body(Full::new(bytes::Bytes::copy_from_slice(body))) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let res = runtime.block_on(BATON.endpoints().oneshot(req)).unwrap();
    assert!(res.status().as_u16() < 500, "{} for {path}", res.status());
});
