//! Account security a user can see, through the facade over real TCP, with `MemoryStore` and
//! with `RedisStore` on a test-started redis-server: device identifiers that replace a
//! device's earlier session, the network-change policy (clients on 127.0.0.1 and 127.0.0.2),
//! and recent login for sensitive actions (RFC 9470) with `POST /auth/reauthenticate`.

mod common;

use common::{Reply, Users};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use baton::Baton;
use baton::bearer::{Authenticated, RecentLogin};
use baton::store::{MemoryStore, NetworkChange, Policy, RefreshKeys, RefreshStore};
use baton::token::{Algorithm, Key, KeyRing, KeySet, TestClock};
use baton_redis::{RedisOptions, RedisStore};
use baton_test::RedisServer;
use http::{Method, StatusCode};
use serde_json::{Value, json};

const ACCESS_TTL: u64 = 60;
const RECENT: u64 = 300;

struct Harness {
    addr: SocketAddr,
    clock: TestClock,
    _redis: Option<RedisServer>,
}

/// Every address its own network (/32, /128), so two loopback clients are two networks.
fn policy(network: NetworkChange) -> Policy {
    Policy::builder()
        .network_change(network)
        .network_prefixes(32, 128)
        .build()
        .unwrap()
}

async fn me(Authenticated(claims): Authenticated) -> axum::Json<Value> {
    axum::Json(json!({ "sub": claims.sub }))
}

async fn serve<S: RefreshStore + Clone>(
    store: S,
    clock: TestClock,
    redis: Option<RedisServer>,
) -> Harness {
    let keys = KeyRing::new(KeySet::new(Key::generate("k1", Algorithm::ES256).unwrap()).unwrap());
    let baton = Baton::builder(store, Users, keys)
        .access_ttl(Duration::from_secs(ACCESS_TTL))
        .recent_login(RecentLogin::within(Duration::from_secs(RECENT)))
        // Many logins from one address here; failures still count per user.
        .rate_limits(baton::RateLimits::default().with_login_per_ip(None))
        .clock(Arc::new(clock.clone()))
        .client_addr_from_peer()
        // One instance, on memory or on Redis: its revocations are its own.
        .single_instance()
        .build()
        .unwrap();
    let app = Router::new()
        .route("/api/me", get(me))
        .route_layer(baton.bearer_layer())
        .merge(baton.router());
    let addr = common::serve_with_peer(app).await;
    Harness {
        addr,
        clock,
        _redis: redis,
    }
}

async fn memory(network: NetworkChange) -> Option<Harness> {
    let clock = TestClock::starting_now();
    let store = MemoryStore::new(RefreshKeys::generate().unwrap(), policy(network))
        .with_clock(Arc::new(clock.clone()));
    Some(serve(store, clock, None).await)
}

async fn redis(network: NetworkChange) -> Option<Harness> {
    let server = RedisServer::start()?;
    let clock = TestClock::starting_now();
    let store = RedisStore::connect(
        &server.url(),
        RefreshKeys::generate().unwrap(),
        policy(network),
        RedisOptions::new(),
    )
    .await
    .unwrap()
    .with_clock(Arc::new(clock.clone()));
    Some(serve(store, clock, Some(server)).await)
}

/// One request from the client address `from` (a loopback address).
async fn call(
    h: &Harness,
    from: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    common::call(
        &format!("http://{}", h.addr),
        Some(from),
        method,
        path,
        headers,
        body,
    )
    .await
}

const JSON: (&str, &str) = ("content-type", "application/json");

async fn login_with(h: &Harness, from: &str, user: &str, extra: &[(&str, &str)]) -> Reply {
    let body = json!({ "username": user, "password": format!("{user}-password") }).to_string();
    let mut headers = vec![JSON, ("user-agent", "App/1.0")];
    headers.extend_from_slice(extra);
    call(h, from, Method::POST, "/auth/login", &headers, &body).await
}

/// A login: (access token, refresh cookie).
async fn login(h: &Harness, from: &str, user: &str, extra: &[(&str, &str)]) -> (String, String) {
    let r = login_with(h, from, user, extra).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    (r.access(), r.refresh_cookie().unwrap())
}

async fn refresh(h: &Harness, from: &str, cookie: &str) -> Reply {
    let cookie = format!("__Secure-refresh={cookie}");
    let headers = [("cookie", cookie.as_str()), ("user-agent", "App/1.0")];
    call(h, from, Method::POST, "/auth/refresh", &headers, "").await
}

async fn bearer(h: &Harness, method: Method, path: &str, token: &str, body: &str) -> Reply {
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str()), JSON];
    call(h, "127.0.0.1", method, path, &headers, body).await
}

async fn sessions(h: &Harness, token: &str) -> Vec<Value> {
    let r = bearer(h, Method::GET, "/auth/sessions", token, "").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["sessions"].as_array().unwrap().clone()
}

fn claims(token: &str) -> Value {
    common::claims_of(token)
}

/// A native app that logs in again with the same `X-Device-Id` replaces its earlier session
/// (whose access token is refused at once) instead of piling sessions up; other devices and
/// other users keep theirs; bad identifiers are a clear 400.
async fn device_id_replaces_the_devices_session(h: Harness) {
    let phone = [("x-device-id", "6f1c2a52-9a3e-4f4b-8d6e-0c1b5e1d2a77")];
    let (first, first_cookie) = login(&h, "127.0.0.1", "alice", &phone).await;
    let (laptop, _) = login(&h, "127.0.0.1", "alice", &[]).await;
    let (bobs, _) = login(&h, "127.0.0.1", "bob", &phone).await;
    let (second, _) = login(&h, "127.0.0.1", "alice", &phone).await;
    assert_eq!(
        bearer(&h, Method::GET, "/api/me", &first, "").await.status,
        StatusCode::UNAUTHORIZED,
        "the replaced session's access token is refused"
    );
    assert_eq!(
        refresh(&h, "127.0.0.1", &first_cookie).await.status,
        StatusCode::UNAUTHORIZED
    );
    for token in [&second, &laptop, &bobs] {
        assert_eq!(
            bearer(&h, Method::GET, "/api/me", token, "").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(sessions(&h, &second).await.len(), 2, "phone and laptop");
    assert_eq!(sessions(&h, &bobs).await.len(), 1);

    // Bad identifiers: 400 with a reason, and no session made.
    let long = "d".repeat(129);
    for bad in ["", "two words", "quote\"d", long.as_str()] {
        let r = login_with(&h, "127.0.0.1", "carol", &[("x-device-id", bad)]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}: {:?}", r.body);
        assert_eq!(r.body["error"], "invalid_request");
    }
    let r = login_with(
        &h,
        "127.0.0.1",
        "carol",
        &[("x-device-id", "a"), ("x-device-id", "b")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "two device ids");
    let (carol, _) = login(&h, "127.0.0.1", "carol", &[]).await;
    assert_eq!(
        sessions(&h, &carol).await.len(),
        1,
        "no session from bad input"
    );

    // A huge user agent is kept capped, and named.
    let huge = format!(
        "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 {}",
        "x".repeat(20_000)
    );
    let r = login_with(&h, "127.0.0.1", "dave", &[("user-agent", &huge)]).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let listed = sessions(&h, &r.access()).await;
    let stored = listed[0]["user_agent"].as_str().unwrap();
    assert!(stored.len() <= 256, "{}", stored.len());
}

/// Under `Flag`, a refresh from another network keeps the session and marks it in the
/// device list; one from the same address does not.
async fn network_change_flags_the_session(h: Harness) {
    let (_, cookie) = login(&h, "127.0.0.1", "alice", &[]).await;
    let r = refresh(&h, "127.0.0.1", &cookie).await;
    assert_eq!(r.status, StatusCode::OK);
    let listed = sessions(&h, &r.access()).await;
    assert_eq!(listed[0]["network_changed_at"], Value::Null);
    let r = refresh(&h, "127.0.0.2", &r.refresh_cookie().unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "kept: {:?}", r.body);
    let listed = sessions(&h, &r.access()).await;
    assert!(listed[0]["network_changed_at"].is_u64(), "{listed:?}");
    assert_eq!(listed[0]["ip"], "127.0.0.2");
}

/// Under `Revoke`, a refresh from another network ends the session: the refresh is refused
/// and the session's access token too.
async fn network_change_revokes_the_session(h: Harness) {
    let (_, cookie) = login(&h, "127.0.0.1", "alice", &[]).await;
    let r = refresh(&h, "127.0.0.1", &cookie).await;
    assert_eq!(r.status, StatusCode::OK);
    let (access, cookie) = (r.access(), r.refresh_cookie().unwrap());
    let r = refresh(&h, "127.0.0.2", &cookie).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert_eq!(r.body["error"], "invalid_grant");
    assert_eq!(
        bearer(&h, Method::GET, "/api/me", &access, "").await.status,
        StatusCode::UNAUTHORIZED,
        "the session's access token is refused at once"
    );
    assert_eq!(
        refresh(&h, "127.0.0.1", &cookie).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Access tokens say when and how the user logged in, and a refresh keeps it. Signing out
/// other devices and ending another device's session need a login within 5 minutes: after
/// that, 401 `insufficient_user_authentication` with `max_age`, until the password is given
/// again at `/auth/reauthenticate`, which renews `auth_time` in the same session. Ending
/// one's own session never needs it.
async fn sensitive_actions_need_a_recent_login(h: Harness) {
    let login_time = baton::token::Clock::now(&h.clock);
    let (access, cookie) = login(&h, "127.0.0.1", "alice", &[]).await;
    let c = claims(&access);
    assert_eq!(c["auth_time"], login_time);
    assert_eq!(c["amr"], json!(["pwd"]));
    let (other, _) = login(&h, "127.0.0.1", "alice", &[]).await;
    let other_sid = claims(&other)["sid"].as_str().unwrap().to_owned();

    h.clock.advance(Duration::from_secs(RECENT + 1));
    let r = refresh(&h, "127.0.0.1", &cookie).await;
    assert_eq!(r.status, StatusCode::OK);
    let (access, cookie) = (r.access(), r.refresh_cookie().unwrap());
    assert_eq!(
        claims(&access)["auth_time"],
        login_time,
        "a refresh is not a login"
    );

    for (method, path) in [
        (Method::POST, "/auth/logout-others".to_owned()),
        (Method::DELETE, format!("/auth/sessions/{other_sid}")),
    ] {
        let r = bearer(&h, method, &path, &access, "").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}: {:?}", r.body);
        assert_eq!(r.body["error"], "insufficient_user_authentication");
        let challenge = r.headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.contains(r#"error="insufficient_user_authentication""#)
                && challenge.ends_with("max_age=300"),
            "{challenge}"
        );
    }
    assert_eq!(sessions(&h, &access).await.len(), 2, "nothing ended");
    // Still a valid token for everything else.
    assert_eq!(
        bearer(&h, Method::GET, "/api/me", &access, "").await.status,
        StatusCode::OK
    );

    // Bad input to reauthenticate: clear 4xx, nothing renewed.
    let cases: [(&str, StatusCode); 5] = [
        ("", StatusCode::BAD_REQUEST),
        ("{}", StatusCode::BAD_REQUEST),
        (r#"{"password":""}"#, StatusCode::BAD_REQUEST),
        (r#"{"password":5}"#, StatusCode::BAD_REQUEST),
        (r#"{"password":"wrong"}"#, StatusCode::FORBIDDEN),
    ];
    for (body, status) in cases {
        let r = bearer(&h, Method::POST, "/auth/reauthenticate", &access, body).await;
        assert_eq!(r.status, status, "{body}: {:?}", r.body);
        assert!(r.body["error"].is_string());
    }
    let r = call(
        &h,
        "127.0.0.1",
        Method::POST,
        "/auth/reauthenticate",
        &[JSON],
        r#"{"password":"alice-password"}"#,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "a bearer token is required"
    );

    // The password: a new access token for the same session, with auth_time now.
    let r = bearer(
        &h,
        Method::POST,
        "/auth/reauthenticate",
        &access,
        r#"{"password":"alice-password"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.refresh_cookie().is_none(), "no rotation");
    let fresh = r.access();
    assert_eq!(
        claims(&fresh)["auth_time"],
        baton::token::Clock::now(&h.clock)
    );
    assert_eq!(claims(&fresh)["sid"], claims(&access)["sid"]);
    let r = bearer(&h, Method::POST, "/auth/logout-others", &fresh, "").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["revoked"], 1);

    // Ending one's own session is a logout: no recent login needed.
    h.clock.advance(Duration::from_secs(RECENT + 1));
    let own_sid = claims(&fresh)["sid"].as_str().unwrap().to_owned();
    let r = refresh(&h, "127.0.0.1", &cookie).await;
    assert_eq!(r.status, StatusCode::OK);
    let access = r.access();
    let r = bearer(
        &h,
        Method::DELETE,
        &format!("/auth/sessions/{own_sid}"),
        &access,
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
}

/// Wrong passwords at `/auth/reauthenticate` count like failed logins: a stolen access token
/// cannot be used to guess the password.
async fn reauthenticate_guesses_are_limited(h: Harness) {
    let (access, _) = login(&h, "127.0.0.1", "alice", &[]).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = bearer(
            &h,
            Method::POST,
            "/auth/reauthenticate",
            &access,
            r#"{"password":"guess"}"#,
        )
        .await;
        statuses.push(r.status);
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers.contains_key("retry-after"));
            break;
        }
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Even the right password waits now.
    let r = bearer(
        &h,
        Method::POST,
        "/auth/reauthenticate",
        &access,
        r#"{"password":"alice-password"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

macro_rules! both_stores {
    ($($name:ident: $network:expr),* $(,)?) => {
        mod memory_store {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(h) = memory($network).await { super::$name(h).await }
                }
            )*
        }
        mod redis_store {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(h) = redis($network).await { super::$name(h).await }
                }
            )*
        }
    };
}

both_stores!(
    device_id_replaces_the_devices_session: NetworkChange::Record,
    network_change_flags_the_session: NetworkChange::Flag,
    network_change_revokes_the_session: NetworkChange::Revoke,
    sensitive_actions_need_a_recent_login: NetworkChange::Record,
    reauthenticate_guesses_are_limited: NetworkChange::Record,
);
