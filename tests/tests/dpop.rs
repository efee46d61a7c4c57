//! DPoP through the facade over real TCP, with `MemoryStore` and with `RedisStore` on a
//! test-started redis-server: a login with a proof binds the session and its tokens to the
//! client's key; the API takes them only as `DPoP` with a fresh proof; a stolen refresh cookie
//! or access token is useless without the key; clients without DPoP work as before unless it
//! is required.

mod common;

use common::{Reply, Users};

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use baton::Baton;
use baton::bearer::{Authenticated, Dpop};
use baton::store::{MemoryStore, Policy, RefreshKeys, RefreshStore};
use baton::token::{Algorithm, DpopKey, Key, KeyRing, KeySet};
use baton_redis::{RedisConnection, RedisOptions, RedisReplayCache, RedisStore};
use baton_test::RedisServer;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

struct Harness {
    origin: String,
    _redis: Option<RedisServer>,
}

async fn me(Authenticated(claims): Authenticated) -> axum::Json<Value> {
    axum::Json(json!({ "sub": claims.sub }))
}

/// Serves one instance on `listener`, with `dpop` and the signing `keys` (shared by the
/// instances behind one load balancer).
async fn instance<S: RefreshStore + Clone>(
    listener: tokio::net::TcpListener,
    store: S,
    keys: KeyRing,
    dpop: Dpop,
) {
    let baton = Baton::builder(store, Users, keys)
        .dpop(dpop)
        .rate_limits(baton::RateLimits::none())
        .single_instance()
        .build()
        .unwrap();
    let app = Router::new()
        .route("/api/me", get(me))
        .route_layer(baton.bearer_layer())
        .merge(baton.router());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
}

fn signing_keys() -> KeyRing {
    KeyRing::new(KeySet::new(Key::generate("k1", Algorithm::ES256).unwrap()).unwrap())
}

async fn serve<S: RefreshStore + Clone>(
    store: S,
    redis: Option<RedisServer>,
    required: bool,
) -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let mut dpop = Dpop::new(&origin).unwrap();
    if required {
        dpop = dpop.required();
    }
    instance(listener, store, signing_keys(), dpop).await;
    Harness {
        origin,
        _redis: redis,
    }
}

async fn memory(required: bool) -> Option<Harness> {
    let store = MemoryStore::new(RefreshKeys::generate().unwrap(), Policy::new());
    Some(serve(store, None, required).await)
}

async fn redis(required: bool) -> Option<Harness> {
    let server = RedisServer::start()?;
    let store = RedisStore::connect(
        &server.url(),
        RefreshKeys::generate().unwrap(),
        Policy::new(),
        RedisOptions::new(),
    )
    .await
    .unwrap();
    Some(serve(store, Some(server), required).await)
}

async fn call(
    h: &Harness,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    common::call(&h.origin, None, method, path, headers, body).await
}

fn proof(h: &Harness, key: &DpopKey, method: &str, path: &str, token: Option<&str>) -> String {
    key.proof(method, &format!("{}{path}", h.origin), token, None)
        .unwrap()
}

async fn login(h: &Harness, key: Option<&DpopKey>) -> Reply {
    let body = json!({ "username": "alice", "password": "alice-password" }).to_string();
    let p = key.map(|k| proof(h, k, "POST", "/auth/login", None));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(p) = &p {
        headers.push(("dpop", p));
    }
    call(h, Method::POST, "/auth/login", &headers, &body).await
}

async fn refresh(h: &Harness, cookie: &str, key: Option<&DpopKey>) -> Reply {
    let cookie = format!("__Secure-refresh={cookie}");
    let p = key.map(|k| proof(h, k, "POST", "/auth/refresh", None));
    let mut headers = vec![("cookie", cookie.as_str())];
    if let Some(p) = &p {
        headers.push(("dpop", p));
    }
    call(h, Method::POST, "/auth/refresh", &headers, "").await
}

/// `GET /api/me` with a DPoP-bound `token` and `proof`.
async fn me_with(h: &Harness, token: &str, proof: &str) -> Reply {
    let auth = format!("DPoP {token}");
    call(
        h,
        Method::GET,
        "/api/me",
        &[("authorization", &auth), ("dpop", proof)],
        "",
    )
    .await
}

async fn api(h: &Harness, token: &str, key: Option<&DpopKey>) -> Reply {
    match key {
        Some(k) => me_with(h, token, &proof(h, k, "GET", "/api/me", Some(token))).await,
        None => {
            let auth = format!("Bearer {token}");
            call(h, Method::GET, "/api/me", &[("authorization", &auth)], "").await
        }
    }
}

fn jkt_of(token: &str) -> Value {
    common::claims_of(token)["cnf"]["jkt"].clone()
}

/// The whole bound flow, and what a thief holding the cookie and the token can do: nothing.
async fn bound_session_flow(h: Harness) {
    let key = DpopKey::generate(Algorithm::ES256).unwrap();
    let r = login(&h, Some(&key)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["token_type"], "DPoP");
    let (access, cookie) = (r.access(), r.refresh_cookie().unwrap());
    assert_eq!(jkt_of(&access), key.jkt());
    assert_eq!(api(&h, &access, Some(&key)).await.status, StatusCode::OK);

    // The thief has the access token and the refresh cookie, not the key.
    let r = api(&h, &access, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "no downgrade to Bearer");
    let thief = DpopKey::generate(Algorithm::EdDSA).unwrap();
    let r = api(&h, &access, Some(&thief)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["error"], "invalid_dpop_proof");
    for stolen in [None, Some(&thief)] {
        let r = refresh(&h, &cookie, stolen).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
        assert_eq!(r.body["error"], "invalid_grant");
    }
    // ... and the user's session is untouched: the real client refreshes.
    let r = refresh(&h, &cookie, Some(&key)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["token_type"], "DPoP");
    let access = r.access();
    assert_eq!(jkt_of(&access), key.jkt());
    assert_eq!(api(&h, &access, Some(&key)).await.status, StatusCode::OK);

    // A replayed login proof is refused at the token endpoint.
    let body = json!({ "username": "alice", "password": "alice-password" }).to_string();
    let p = proof(&h, &key, "POST", "/auth/login", None);
    let headers = [("content-type", "application/json"), ("dpop", p.as_str())];
    assert_eq!(
        call(&h, Method::POST, "/auth/login", &headers, &body)
            .await
            .status,
        StatusCode::OK
    );
    let r = call(&h, Method::POST, "/auth/login", &headers, &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "invalid_dpop_proof");
    // A proof for another endpoint.
    let p = proof(&h, &key, "POST", "/auth/refresh", None);
    let headers = [("content-type", "application/json"), ("dpop", p.as_str())];
    let r = call(&h, Method::POST, "/auth/login", &headers, &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // The sensitive endpoints take the bound token with a proof.
    let p = proof(&h, &key, "POST", "/auth/logout-others", Some(&access));
    let auth = format!("DPoP {access}");
    let r = call(
        &h,
        Method::POST,
        "/auth/logout-others",
        &[("authorization", &auth), ("dpop", &p)],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["revoked"], 1);

    // Ending another device's session: one proof, checked once (the recent-login rule is
    // applied to the claims already verified).
    let other = login(&h, Some(&key)).await;
    assert_eq!(other.status, StatusCode::OK);
    let other_sid = common::claims_of(&other.access())["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/auth/sessions/{other_sid}");
    let p = proof(&h, &key, "DELETE", &path, Some(&access));
    let r = call(
        &h,
        Method::DELETE,
        &path,
        &[("authorization", &auth), ("dpop", &p)],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);

    // A logout with the stolen cookie but without the key only clears that cookie: the
    // session goes on for the key's holder, who can end it.
    let cookie = refresh(&h, &cookie_after(&h, &key).await, Some(&key))
        .await
        .refresh_cookie()
        .unwrap();
    let header = format!("__Secure-refresh={cookie}");
    let r = call(&h, Method::POST, "/auth/logout", &[("cookie", &header)], "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = refresh(&h, &cookie, Some(&key)).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the session survived: {:?}",
        r.body
    );
    let cookie = r.refresh_cookie().unwrap();
    let header = format!("__Secure-refresh={cookie}");
    // A proof of the key that does not hold (made out for another endpoint): told so, and
    // the session is not ended behind the client's back, nor its cookie cleared.
    let p = proof(&h, &key, "POST", "/auth/refresh", None);
    let r = call(
        &h,
        Method::POST,
        "/auth/logout",
        &[("cookie", &header), ("dpop", &p)],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.body["error"], "invalid_dpop_proof");
    assert!(r.refresh_cookie().is_none());
    let p = proof(&h, &key, "POST", "/auth/logout", None);
    let r = call(
        &h,
        Method::POST,
        "/auth/logout",
        &[("cookie", &header), ("dpop", &p)],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        refresh(&h, &cookie, Some(&key)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// A fresh bound session's refresh cookie.
async fn cookie_after(h: &Harness, key: &DpopKey) -> String {
    let r = login(h, Some(key)).await;
    assert_eq!(r.status, StatusCode::OK);
    r.refresh_cookie().unwrap()
}

/// Without a proof, the bearer flow is as before.
async fn bearer_clients_are_unchanged(h: Harness) {
    let r = login(&h, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(jkt_of(&r.access()), Value::Null);
    assert_eq!(api(&h, &r.access(), None).await.status, StatusCode::OK);
    let r = refresh(&h, &r.refresh_cookie().unwrap(), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["token_type"], "Bearer");
}

/// With DPoP required, a client without a key gets nowhere.
async fn required_refuses_bearer_clients(h: Harness) {
    let r = login(&h, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "invalid_dpop_proof");
    let key = DpopKey::generate(Algorithm::EdDSA).unwrap();
    let r = login(&h, Some(&key)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        api(&h, &r.access(), Some(&key)).await.status,
        StatusCode::OK
    );
}

macro_rules! both_stores {
    ($($name:ident: $required:expr),* $(,)?) => {
        mod memory_store {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(h) = memory($required).await { super::$name(h).await }
                }
            )*
        }
        mod redis_store {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(h) = redis($required).await { super::$name(h).await }
                }
            )*
        }
    };
}

both_stores!(
    bound_session_flow: false,
    bearer_clients_are_unchanged: false,
    required_refuses_bearer_clients: true,
);

/// The Rust client with a DPoP key, against the login app over TCP with DPoP required: it
/// logs in, calls the API, and refreshes when the access token expires, every request with a
/// fresh proof; the same client without a key is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_proves_its_key_to_the_login_app() {
    use baton::refresh::{HttpRefresher, RefreshOn401Layer, RetryBody};
    use tower::{ServiceBuilder, ServiceExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = login_app::Config {
        // Long enough that the nonce step below (2.1 s in) is well within it on a busy machine.
        access_ttl: std::time::Duration::from_secs(6),
        public_urls: vec![base.clone()],
        require_dpop: true,
        // Nonces that turn every second: the client is asked for them at the login, by the
        // API once its nonce is two periods old, and at the refresh.
        dpop_nonces: Some(std::time::Duration::from_secs(1)),
        ..login_app::Config::default()
    };
    let app = login_app::app(&config).await.unwrap();
    tokio::spawn(login_app::serve(listener, app, std::future::pending()));
    let h = Harness {
        origin: base.clone(),
        _redis: None,
    };
    let credentials = json!({ "username": "alice", "password": "correct horse battery" });
    let r = call(
        &h,
        Method::POST,
        "/auth/register",
        &[("content-type", "application/json")],
        &credentials.to_string(),
    )
    .await;
    assert!(r.status.is_success(), "{:?}", r.body);

    let plain = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let refresh_uri: http::Uri = format!("{base}/auth/refresh").parse().unwrap();
    let login_uri: http::Uri = format!("{base}/auth/login").parse().unwrap();
    // Without a key: refused, DPoP is required.
    let bare = HttpRefresher::new(plain.clone(), refresh_uri.clone());
    assert!(bare.login(login_uri.clone(), &credentials).await.is_err());

    let key = DpopKey::generate(Algorithm::EdDSA).unwrap();
    // Any key shows whether nonces are required (the nonce is checked before the key).
    let key_for_check = DpopKey::generate(Algorithm::ES256).unwrap();
    let jkt = key.jkt().to_owned();
    // By hand first: a login proof without a nonce is refused with the nonce to use; with it
    // the login goes through, and the token response hands out the nonce to use next.
    let login = |p: &str| {
        let body = credentials.to_string();
        let p = p.to_owned();
        let h = &h;
        async move {
            call(
                h,
                Method::POST,
                "/auth/login",
                &[("content-type", "application/json"), ("dpop", &p)],
                &body,
            )
            .await
        }
    };
    let login_url = format!("{base}/auth/login");
    let r = login(&key_for_check.proof("POST", &login_url, None, None).unwrap()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "use_dpop_nonce");
    let nonce = r.headers["dpop-nonce"].to_str().unwrap().to_owned();
    let r = login(
        &key_for_check
            .proof("POST", &login_url, None, Some(&nonce))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.headers.contains_key("dpop-nonce"));
    let refresher = HttpRefresher::new(plain, refresh_uri).with_dpop_key(key);
    refresher.login(login_uri, &credentials).await.unwrap();
    assert_eq!(jkt_of(&refresher.access_token().unwrap()), jkt.as_str());
    let http = Client::builder(TokioExecutor::new()).build_http::<RetryBody<Full<Bytes>>>();
    let service = ServiceBuilder::new()
        .layer(RefreshOn401Layer::new(refresher.clone()))
        .service(http);
    let me = || {
        Request::get(format!("{base}/api/me"))
            .body(Full::default())
            .unwrap()
    };
    let res = service.clone().oneshot(me()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(refresher.refreshes(), 0);
    // The server does require nonces: the same call with a proof that has none is refused.
    let token = refresher.access_token().unwrap();
    let r = api(&h, &token, Some(&key_for_check)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("use_dpop_nonce")
    );
    assert!(r.headers.contains_key("dpop-nonce"));
    // Two nonce periods on, the token still good: the API asks for a new nonce, the client
    // sends the call again with it, no refresh.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let res = service.clone().oneshot(me()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(refresher.refreshes(), 0);
    // Past the access token's life: one refresh, with a proof, and the call goes through.
    tokio::time::sleep(std::time::Duration::from_millis(4500)).await;
    let res = service.clone().oneshot(me()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(refresher.refreshes(), 1);
    assert_eq!(jkt_of(&refresher.access_token().unwrap()), jkt.as_str());
}

/// Two instances behind one load balancer (one public origin), on one Redis with the shared
/// replay cache: a proof used at one is refused at the other, at the token endpoints and the
/// API alike; with Redis gone the answer is 503 with `Retry-After` (never a pass), and with
/// Redis back the instances answer again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_one_redis_see_each_proof_once() {
    const PUBLIC: &str = "https://api.example";
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let options = RedisOptions::new();
    let conn = RedisConnection::connect(&server.url(), &options)
        .await
        .unwrap();
    let store = RedisStore::new(
        conn.clone(),
        RefreshKeys::generate().unwrap(),
        Policy::new(),
        &options,
    );
    let replay = RedisReplayCache::new(conn, "t:");
    let keys = signing_keys();
    let mut origins = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        origins.push(format!("http://{}", listener.local_addr().unwrap()));
        let dpop = Dpop::new(PUBLIC).unwrap().with_replay_cache(replay.clone());
        instance(listener, store.clone(), keys.clone(), dpop).await;
    }
    let at = |i: usize| Harness {
        origin: origins[i].clone(),
        _redis: None,
    };
    let (a, b) = (at(0), at(1));
    let key = DpopKey::generate(Algorithm::ES256).unwrap();
    let public_proof = |method: &str, path: &str, token: Option<&str>| {
        key.proof(method, &format!("{PUBLIC}{path}"), token, None)
            .unwrap()
    };

    // A login proof, used at A, replayed at B.
    let body = json!({ "username": "alice", "password": "alice-password" }).to_string();
    let p = public_proof("POST", "/auth/login", None);
    let headers = [("content-type", "application/json"), ("dpop", p.as_str())];
    let r = call(&a, Method::POST, "/auth/login", &headers, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let access = r.access();
    let r = call(&b, Method::POST, "/auth/login", &headers, &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "invalid_dpop_proof");

    // An API proof, used at A, replayed at B; a fresh one passes at B.
    let fresh = || public_proof("GET", "/api/me", Some(&access));
    let p = fresh();
    assert_eq!(me_with(&a, &access, &p).await.status, StatusCode::OK);
    let r = me_with(&b, &access, &p).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_dpop_proof")
    );
    assert_eq!(me_with(&b, &access, &fresh()).await.status, StatusCode::OK);

    // Redis gone: the proof cannot be checked, so the request is refused, for now.
    server.stop();
    for h in [&a, &b] {
        let r = me_with(h, &access, &fresh()).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
        assert!(r.headers.contains_key("retry-after"));
        let p = public_proof("POST", "/auth/login", None);
        let headers = [("content-type", "application/json"), ("dpop", p.as_str())];
        let r = call(h, Method::POST, "/auth/login", &headers, &body).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    }

    // Redis back: the same instances answer again.
    server.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = me_with(&a, &access, &fresh()).await;
        if r.status == StatusCode::OK {
            break;
        }
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
        assert!(
            std::time::Instant::now() < deadline,
            "Redis is back but the instance is not"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
