//! With a token cache, a repeated access token skips the signature check, and a revoked one is
//! still refused at once (logout-all revokes; the cached entry must not let it through).

use baton::{AuthUnavailable, Authenticator, Baton, Principal, UsernamePassword};
use baton_store::{MemoryStore, Policy, RefreshKeys};
use baton_token::{Algorithm, Key, KeyRing, KeySet, NoCustomClaims, TokenCache};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};

struct Alice;

impl Authenticator for Alice {
    type Claims = NoCustomClaims;
    type Credentials = UsernamePassword;

    async fn authenticate(
        &self,
        credentials: &UsernamePassword,
    ) -> Result<Option<Principal<NoCustomClaims>>, AuthUnavailable> {
        let (username, password) = (credentials.username.as_str(), credentials.password.as_str());
        Ok((username == "alice" && password == "pw")
            .then(|| Principal::new("user-alice", NoCustomClaims {})))
    }
    async fn check_password(&self, user_id: &str, password: &str) -> Result<bool, AuthUnavailable> {
        Ok(user_id == "user-alice" && password == "pw")
    }
    async fn claims(&self, _: &str) -> Result<Option<NoCustomClaims>, AuthUnavailable> {
        Ok(Some(NoCustomClaims {}))
    }
}

async fn api_status(baton: &Baton<MemoryStore, Alice>, token: &str) -> StatusCode {
    let api = baton
        .bearer_layer()
        .layer(service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default()))
        }));
    let req = Request::get("/api/me")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    api.oneshot(req).await.unwrap().status()
}

#[tokio::test]
async fn cached_tokens_are_served_until_revoked() {
    let keys = KeyRing::new(KeySet::new(Key::generate("k", Algorithm::ES256).unwrap()).unwrap());
    let store = MemoryStore::new(RefreshKeys::generate().unwrap(), Policy::new());
    let baton = Baton::builder(store, Alice, keys)
        .token_cache(TokenCache::new(1024, 1 << 20))
        .no_client_addr()
        .build()
        .unwrap();
    let cache = baton.bearer_layer().verifier().cache().cloned().unwrap();

    let login = Request::post("/auth/login")
        .header(CONTENT_TYPE, "application/json")
        .header("sec-fetch-site", "same-origin")
        .body(Full::from(r#"{"username":"alice","password":"pw"}"#))
        .unwrap();
    let res = baton.endpoints().oneshot(login).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();

    assert_eq!(api_status(&baton, &token).await, StatusCode::OK);
    assert_eq!(cache.len(), 1, "verified once, cached");
    assert_eq!(api_status(&baton, &token).await, StatusCode::OK);
    assert_eq!(cache.len(), 1);

    let logout_all = Request::post("/auth/logout-all")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header("sec-fetch-site", "same-origin")
        .body(Full::default())
        .unwrap();
    let res = baton.endpoints().oneshot(logout_all).await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(
        api_status(&baton, &token).await,
        StatusCode::UNAUTHORIZED,
        "revoked, although its claims are still in the cache"
    );
}

#[test]
fn the_cache_is_on_by_default_and_can_be_turned_off() {
    let keys = || KeyRing::new(KeySet::new(Key::generate("k", Algorithm::ES256).unwrap()).unwrap());
    let store = || MemoryStore::new(RefreshKeys::generate().unwrap(), Policy::new());
    let on = Baton::builder(store(), Alice, keys())
        .no_client_addr()
        .build()
        .unwrap();
    assert!(on.bearer_layer().verifier().cache().is_some());
    let off = Baton::builder(store(), Alice, keys())
        .no_token_cache()
        .no_client_addr()
        .build()
        .unwrap();
    assert!(off.bearer_layer().verifier().cache().is_none());
}
