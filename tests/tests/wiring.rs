//! Production wiring that cannot silently go wrong, through the facade over real TCP: the
//! client address per-network limits need, a store shared by instances without a shared
//! feed, `Baton::redis` wiring feed and limits on the store's connection (two instances on a
//! test-started redis-server), and login bodies of the application's own type.

mod common;

use common::{Reply, Users, call};

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use baton::bearer::Authenticated;
use baton::store::{MemoryStore, Policy, RefreshKeys};
use baton::token::{Algorithm, Key, KeyRing, KeySet, NoCustomClaims};
use baton::{
    AuthUnavailable, Authenticator, Baton, ConfigError, LoginRequest, Principal, RateLimits,
};
use baton_redis::{RedisConnection, RedisOptions, RedisStore};
use baton_test::RedisServer;
use http::{Method, StatusCode};
use serde::Deserialize;

const JSON: (&str, &str) = ("content-type", "application/json");

fn keys() -> KeyRing {
    KeyRing::new(KeySet::new(Key::generate("k1", Algorithm::ES256).unwrap()).unwrap())
}

fn memory() -> MemoryStore {
    MemoryStore::new(RefreshKeys::generate().unwrap(), Policy::new())
}

async fn me(Authenticated(claims): Authenticated) -> String {
    claims.sub.clone()
}

/// Serves `baton`'s endpoints and `/api/me` on a free loopback port, handing the endpoints
/// the peer address or not.
async fn serve<S: baton::store::RefreshStore, A: Authenticator<Claims = NoCustomClaims>>(
    baton: &Baton<S, A>,
    with_peer: bool,
) -> String {
    let app: Router = Router::new()
        .route("/api/me", get(me))
        .route_layer(baton.bearer_layer())
        .merge(baton.router());
    if with_peer {
        return format!("http://{}", common::serve_with_peer(app).await);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    origin
}

fn login_body(user: &str, password: &str) -> String {
    format!(r#"{{"username":"{user}","password":"{password}"}}"#)
}

/// `POST /auth/login` with `{"username","password"}` and `headers`.
/// `GET /api/me` with the `Authorization` header `bearer`.
async fn get_me(origin: &str, bearer: &str) -> Reply {
    call(
        origin,
        None,
        Method::GET,
        "/api/me",
        &[("authorization", bearer)],
        "",
    )
    .await
}

async fn login(origin: &str, user: &str, password: &str, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![JSON];
    all.extend_from_slice(headers);
    call(
        origin,
        None,
        Method::POST,
        "/auth/login",
        &all,
        &login_body(user, password),
    )
    .await
}

#[tokio::test]
async fn per_network_limits_need_a_declared_client_address() {
    // Limits on (the default) and nothing said about addresses: refused, saying what to do.
    let err = Baton::builder(memory(), Users, keys()).build().unwrap_err();
    assert!(matches!(err, ConfigError::ClientAddress), "{err}");
    let message = err.to_string();
    for hint in [
        "into_make_service_with_connect_info",
        ".client_addr_from_peer()",
        ".trusted_proxy(",
        ".no_client_addr()",
    ] {
        assert!(message.contains(hint), "{message} lacks {hint}");
    }
    // Any declaration builds, and so do limits without a per-network part.
    assert!(
        Baton::builder(memory(), Users, keys())
            .trusted_proxy("10.0.0.1".parse::<std::net::IpAddr>().unwrap())
            .build()
            .is_ok()
    );
    assert!(
        Baton::builder(memory(), Users, keys())
            .rate_limits(RateLimits::none())
            .build()
            .is_ok()
    );

    // Declared as the peer, but the server hands over none: a loud 500, not one shared bucket.
    let baton = Baton::builder(memory(), Users, keys())
        .client_addr_from_peer()
        .build()
        .unwrap();
    let blind = serve(&baton, false).await;
    let res = login(&blind, "alice", "alice-password", &[]).await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.body["error"], "server_error");
    // Served with the peer address, the same configuration logs in.
    let seeing = serve(&baton, true).await;
    let res = login(&seeing, "alice", "alice-password", &[]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
}

#[tokio::test]
async fn without_client_addresses_no_stranger_locks_out_a_known_browser() {
    // Saying both is a contradiction, refused.
    let err = Baton::builder(memory(), Users, keys())
        .no_client_addr()
        .client_addr_from_peer()
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::ClientAddressConflict), "{err}");

    let baton = Baton::builder(memory(), Users, keys())
        .no_client_addr()
        .build()
        .unwrap();
    let origin = serve(&baton, false).await;
    // Carol's browser logged in before: it holds her device cookie.
    let res = login(&origin, "carol", "carol-password", &[]).await;
    assert_eq!(res.status, StatusCode::OK);
    let device = res
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Secure-device="))
        .map(|v| v.split(';').next().unwrap().to_owned())
        .expect("a device cookie");
    // More logins than the per-network limit (10 a minute) from one address: none refused
    // for the network, since this server cannot tell clients apart.
    for i in 0..12 {
        let user = format!("user{i}");
        let res = login(&origin, &user, &format!("{user}-password"), &[]).await;
        assert_eq!(res.status, StatusCode::OK, "login {i}: {}", res.body);
    }
    // A stranger guessing Carol's password: no bucket shared by every client runs out at 5;
    // the per-name limit for browsers without her device cookie (30 a minute) does.
    let mut statuses = Vec::new();
    for _ in 0..32 {
        let res = login(&origin, "carol", "wrong", &[]).await;
        statuses.push(res.status);
    }
    assert_eq!(statuses[..31], [StatusCode::UNAUTHORIZED; 31]);
    assert_eq!(statuses[31], StatusCode::TOO_MANY_REQUESTS);
    // Carol's own browser still logs in.
    let res = login(&origin, "carol", "carol-password", &[("cookie", &device)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
}

async fn redis_store(server: &RedisServer) -> RedisStore {
    let options = RedisOptions::new();
    let conn = RedisConnection::connect(&server.url(), &options)
        .await
        .unwrap();
    RedisStore::new(
        conn,
        RefreshKeys::new(1, [7u8; 32]).unwrap(),
        Policy::new(),
        &options,
    )
}

#[tokio::test]
async fn a_shared_store_without_a_shared_feed_does_not_build_by_accident() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let err = Baton::builder(redis_store(&server).await, Users, keys())
        .client_addr_from_peer()
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::NoRevocationFeed), "{err}");
    assert!(err.to_string().contains(".single_instance()"), "{err}");
    // Said out loud, or wired with the feed: builds.
    assert!(
        Baton::builder(redis_store(&server).await, Users, keys())
            .client_addr_from_peer()
            .single_instance()
            .build()
            .is_ok()
    );
    assert!(
        Baton::redis(redis_store(&server).await, Users, keys())
            .client_addr_from_peer()
            .build()
            .is_ok()
    );
}

#[tokio::test]
async fn two_instances_from_baton_redis_share_revocations_and_limits() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ring = keys();
    let a = Baton::redis(redis_store(&server).await, Users, ring.clone())
        .client_addr_from_peer()
        .access_ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    let b = Baton::redis(redis_store(&server).await, Users, ring)
        .client_addr_from_peer()
        .access_ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    // Ready once each feed has read the shared log.
    let start = Instant::now();
    while !(a.is_ready() && b.is_ready()) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the feeds never read the log"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (a, b) = (serve(&a, true).await, serve(&b, true).await);

    let first = login(&a, "alice", "alice-password", &[]).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let token = first.access();
    let bearer = format!("Bearer {token}");
    let res = get_me(&b, &bearer).await;
    assert_eq!(res.status, StatusCode::OK);

    // A logout on A: B refuses the access token soon after (the feed), not at its expiry.
    let cookie = format!("__Secure-refresh={}", first.refresh_cookie().unwrap());
    let res = call(
        &a,
        None,
        Method::POST,
        "/auth/logout",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.body);
    let start = Instant::now();
    loop {
        let res = get_me(&b, &bearer).await;
        if res.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(res.status, StatusCode::OK);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "B still takes a token logged out on A"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Failed logins of one name count once across the instances (5 a minute).
    let mut statuses = Vec::new();
    for origin in [&a, &b, &a, &b, &a, &b] {
        let res = login(origin, "bob", "wrong", &[]).await;
        statuses.push(res.status);
    }
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5]);
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_fresh_instance_takes_no_token_before_it_heard_the_feed() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = redis_store(&server).await;
    // Redis stalls as the instance starts: its feed cannot read the log.
    server.pause();
    let baton = Baton::redis(store, Users, keys())
        .client_addr_from_peer()
        .build()
        .unwrap();
    let token = baton
        .issuer()
        .issue("id-alice", None, NoCustomClaims {})
        .unwrap()
        .token;
    let bearer = format!("Bearer {token}");
    assert!(!baton.is_ready());
    let origin = serve(&baton, true).await;
    let res = get_me(&origin, &bearer).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE, "{}", res.body);
    assert!(res.headers.contains_key("retry-after"));
    // Past the start-up wait, the feed's policy (keep serving) decides.
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let res = get_me(&origin, &bearer).await;
        if res.status == StatusCode::OK {
            break;
        }
        assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(start.elapsed() < Duration::from_secs(6), "still 503");
    }
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    server.resume();
}

/// `{"email": "...", "code": "..."}`: a login by e-mail and one-time code.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailCode {
    email: String,
    code: String,
}

impl LoginRequest for EmailCode {
    fn account(&self) -> &str {
        &self.email
    }
    fn expected() -> &'static str {
        "the body must be a JSON object with string fields email and code"
    }
}

struct Codes;

impl Authenticator for Codes {
    type Claims = NoCustomClaims;
    type Credentials = EmailCode;

    async fn authenticate(
        &self,
        login: &EmailCode,
    ) -> Result<Option<Principal<NoCustomClaims>>, AuthUnavailable> {
        let ok = login.email.eq_ignore_ascii_case("dana@example.com") && login.code == "424242";
        Ok(ok.then(|| {
            Principal::new("user-dana", NoCustomClaims {})
                .with_authentication(baton::store::Authentication::new(["otp"]))
        }))
    }
    async fn check_password(&self, _: &str, _: &str) -> Result<bool, AuthUnavailable> {
        Ok(false)
    }
    async fn claims(&self, user_id: &str) -> Result<Option<NoCustomClaims>, AuthUnavailable> {
        Ok((user_id == "user-dana").then_some(NoCustomClaims {}))
    }
}

#[tokio::test]
async fn a_login_body_is_the_applications_own_type() {
    let baton = Baton::builder(memory(), Codes, keys())
        .client_addr_from_peer()
        .build()
        .unwrap();
    let origin = serve(&baton, true).await;
    let post = |body: &'static str| {
        let origin = origin.clone();
        async move { call(&origin, None, Method::POST, "/auth/login", &[JSON], body).await }
    };
    let res = post(r#"{"email":"dana@example.com","code":"424242"}"#).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let claims = common::claims_of(&res.access());
    assert_eq!(claims["sub"], "user-dana");
    assert_eq!(claims["amr"], serde_json::json!(["otp"]));

    // Another shape: 400 saying what the application's type holds.
    let res = post(r#"{"username":"dana","password":"424242"}"#).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        res.body["error_description"],
        "the body must be a JSON object with string fields email and code"
    );

    // Failures count per account, whatever the case it is typed in (5 a minute; the memory
    // limiter refuses once a failure was counted over the limit, so the seventh).
    let mut statuses = Vec::new();
    for email in [
        "dana@example.com",
        "DANA@example.com",
        "Dana@Example.com",
        "dana@example.com",
        "DANA@EXAMPLE.COM",
        "dana@EXAMPLE.com",
        "dana@example.com",
    ] {
        let body = format!(r#"{{"email":"{email}","code":"000000"}}"#);
        let res = call(&origin, None, Method::POST, "/auth/login", &[JSON], &body).await;
        statuses.push(res.status);
    }
    assert_eq!(statuses[..6], [StatusCode::UNAUTHORIZED; 6]);
    assert_eq!(statuses[6], StatusCode::TOO_MANY_REQUESTS);
}

#[test]
fn baton_redis_outside_a_runtime_is_a_clear_error_not_a_panic() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = runtime.block_on(redis_store(&server));
    // Built outside the runtime: the feed could not start its reader.
    let err = Baton::redis(store, Users, keys())
        .client_addr_from_peer()
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::NoRuntime), "{err}");
    assert!(err.to_string().contains("Tokio runtime"), "{err}");
}
