//! The whole login flow over real TCP: the `baton` facade's endpoints and layers in an axum
//! app, once with `MemoryStore` and once with `RedisStore` on a test-started redis-server;
//! then the client-side and server-side refresh layers against it.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use baton::bearer::Authenticated;
use baton::refresh::{HttpRefresher, RefreshOn401Layer, RetryBody};
use baton::store::{MemoryStore, Policy, RefreshKeys, RefreshStore};
use baton::token::{Algorithm, Key, KeyRing, KeySet, NoCustomClaims, TestClock};
use baton::{AuthUnavailable, Authenticator, Baton, Principal, UsernamePassword};
use baton_redis::{RedisOptions, RedisStore};
use baton_test::RedisServer;
use bytes::Bytes;
use http::header::SET_COOKIE;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt};

const ACCESS_TTL: u64 = 60;
const GRACE: u64 = 10;

struct Users;

impl Authenticator for Users {
    type Claims = NoCustomClaims;

    type Credentials = UsernamePassword;

    async fn authenticate(
        &self,
        credentials: &UsernamePassword,
    ) -> Result<Option<Principal<NoCustomClaims>>, AuthUnavailable> {
        let (user, password) = (credentials.username.as_str(), credentials.password.as_str());
        let ok = matches!(
            (user, password),
            ("alice", "alice-password") | ("bob", "bob-password") | ("carol", "carol-password")
        );
        Ok(ok.then(|| Principal::new(format!("id-{user}"), NoCustomClaims {})))
    }

    async fn check_password(&self, user_id: &str, password: &str) -> Result<bool, AuthUnavailable> {
        Ok(user_id
            .strip_prefix("id-")
            .map(|u| format!("{u}-password"))
            .as_deref()
            == Some(password))
    }

    async fn claims(&self, user_id: &str) -> Result<Option<NoCustomClaims>, AuthUnavailable> {
        // Carol's directory entry lives on a server that is down.
        if user_id == "id-carol" {
            return Err(AuthUnavailable("directory down".into()));
        }
        Ok(Some(NoCustomClaims {}))
    }
}

struct Harness<S: RefreshStore> {
    addr: SocketAddr,
    clock: TestClock,
    refreshes: Arc<AtomicUsize>,
    _baton: Baton<S, Users>,
    redis: Option<RedisServer>,
}

fn policy() -> Policy {
    Policy::builder()
        .grace_window(Duration::from_secs(GRACE))
        .build()
        .unwrap()
}

async fn me(Authenticated(claims): Authenticated) -> axum::Json<Value> {
    axum::Json(json!({ "sub": claims.sub, "sid": claims.sid }))
}

async fn upload(body: Bytes) -> String {
    body.len().to_string()
}

async fn serve<S: RefreshStore + Clone>(
    store: S,
    clock: TestClock,
    redis: Option<RedisServer>,
    cookie_mode: bool,
) -> Harness<S> {
    let keys = KeyRing::new(KeySet::new(Key::generate("k1", Algorithm::ES256).unwrap()).unwrap());
    let mut builder = Baton::builder(store, Users, keys)
        .access_ttl(Duration::from_secs(ACCESS_TTL))
        .clock(Arc::new(clock.clone()))
        .client_addr_from_peer()
        // One instance, on memory or on Redis: its revocations are its own.
        .single_instance();
    if cookie_mode {
        builder = builder.cookie_mode().refresh_cookie_path("/app");
    }
    let baton = builder.build().unwrap();
    let refreshes = Arc::new(AtomicUsize::new(0));
    let counter = refreshes.clone();
    let api = Router::new()
        .route("/api/me", get(me))
        .route("/api/upload", post(upload))
        .layer(baton.bearer_layer());
    let app = if cookie_mode {
        Router::new()
            .route("/app/me", get(me))
            .layer(
                ServiceBuilder::new()
                    .layer(baton.cookie_refresh_layer())
                    .layer(baton.bearer_layer()),
            )
            .merge(baton.router())
    } else {
        api.merge(baton.router())
    }
    .layer(tower::util::MapRequestLayer::new(
        move |req: Request<axum::body::Body>| {
            if req.uri().path().ends_with("/refresh") {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            req
        },
    ));
    let addr = common::serve_with_peer(app).await;
    Harness {
        addr,
        clock,
        refreshes,
        _baton: baton,
        redis,
    }
}

async fn memory(cookie_mode: bool) -> Option<Harness<MemoryStore>> {
    let clock = TestClock::starting_now();
    let store = MemoryStore::new(RefreshKeys::generate().unwrap(), policy())
        .with_clock(Arc::new(clock.clone()));
    Some(serve(store, clock, None, cookie_mode).await)
}

async fn redis() -> Option<Harness<RedisStore>> {
    redis_with(false).await
}

async fn redis_with(cookie_mode: bool) -> Option<Harness<RedisStore>> {
    let server = RedisServer::start()?;
    let clock = TestClock::starting_now();
    let options = RedisOptions::new().with_response_timeout(Duration::from_millis(300));
    let store = RedisStore::connect(
        &server.url(),
        RefreshKeys::generate().unwrap(),
        policy(),
        options,
    )
    .await
    .unwrap()
    .with_clock(Arc::new(clock.clone()));
    Some(serve(store, clock, Some(server), cookie_mode).await)
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn refresh_cookie(&self) -> Option<String> {
        self.cookie("__Secure-refresh")
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(|v| v.split(';').next().unwrap()[name.len() + 1..].to_owned())
    }
}

async fn call<S: RefreshStore>(
    h: &Harness<S>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", h.addr));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Full::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

async fn login<S: RefreshStore>(h: &Harness<S>, user: &str, ua: &str) -> (String, String) {
    let body = json!({ "username": user, "password": format!("{user}-password") }).to_string();
    let r = call(
        h,
        Method::POST,
        "/auth/login",
        &[("content-type", "application/json"), ("user-agent", ua)],
        &body,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], ACCESS_TTL);
    let set_cookie = r.headers[SET_COOKIE].to_str().unwrap();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/auth"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    (
        r.body["access_token"].as_str().unwrap().to_owned(),
        r.refresh_cookie().unwrap(),
    )
}

async fn refresh<S: RefreshStore>(h: &Harness<S>, cookie: &str) -> Reply {
    call(
        h,
        Method::POST,
        "/auth/refresh",
        &[("cookie", &format!("__Secure-refresh={cookie}"))],
        "",
    )
    .await
}

async fn get_me<S: RefreshStore>(h: &Harness<S>, token: &str) -> Reply {
    call(
        h,
        Method::GET,
        "/api/me",
        &[("authorization", &format!("Bearer {token}"))],
        "",
    )
    .await
}

fn assert_refused_and_cleared(r: &Reply) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert_eq!(r.body["error"], "invalid_grant");
    let cleared = r.headers[SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("__Secure-refresh=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

async fn full_flow<S: RefreshStore>(h: Harness<S>) {
    let (access, cookie) = login(&h, "alice", "Firefox/130").await;
    let r = get_me(&h, &access).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["sub"], "id-alice");

    h.clock.advance(Duration::from_secs(ACCESS_TTL));
    let r = get_me(&h, &access).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );

    let r = refresh(&h, &cookie).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["cache-control"], "no-store");
    let access = r.body["access_token"].as_str().unwrap().to_owned();
    let cookie2 = r.refresh_cookie().unwrap();
    assert_ne!(cookie2, cookie);
    assert_eq!(get_me(&h, &access).await.status, StatusCode::OK);

    let r = call(
        &h,
        Method::POST,
        "/auth/logout",
        &[("cookie", &format!("__Secure-refresh={cookie2}"))],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        r.headers[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_refused_and_cleared(&refresh(&h, &cookie2).await);
    // The access token of the logged-out session is refused at once, not at expiry.
    assert_eq!(get_me(&h, &access).await.status, StatusCode::UNAUTHORIZED);
    // Logout is idempotent.
    let r = call(
        &h,
        Method::POST,
        "/auth/logout",
        &[("cookie", &format!("__Secure-refresh={cookie2}"))],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    drop(h.redis);
}

async fn reuse_after_grace_revokes<S: RefreshStore>(h: Harness<S>) {
    let (_, c0) = login(&h, "alice", "Firefox/130").await;
    let r = refresh(&h, &c0).await;
    let c1 = r.refresh_cookie().unwrap();
    let access = r.body["access_token"].as_str().unwrap().to_owned();
    h.clock.advance(Duration::from_secs(GRACE + 1));
    assert_refused_and_cleared(&refresh(&h, &c0).await);
    assert_refused_and_cleared(&refresh(&h, &c1).await);
    assert_eq!(
        get_me(&h, &access).await.status,
        StatusCode::UNAUTHORIZED,
        "the thief's session is dead"
    );
}

async fn two_refreshes_inside_grace<S: RefreshStore>(h: Harness<S>) {
    let (_, c0) = login(&h, "alice", "Firefox/130").await;
    let (a, b) = tokio::join!(refresh(&h, &c0), refresh(&h, &c0));
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(
        a.refresh_cookie(),
        b.refresh_cookie(),
        "both tabs converge on one refresh token"
    );
    assert_eq!(
        refresh(&h, &a.refresh_cookie().unwrap()).await.status,
        StatusCode::OK
    );
}

async fn logout_all_kills_the_other_device<S: RefreshStore>(h: Harness<S>) {
    let (access_a, _) = login(&h, "alice", "Firefox/130").await;
    let (access_b, cookie_b) = login(&h, "alice", "Safari/17").await;
    let (access_bob, _) = login(&h, "bob", "curl/8").await;
    let r = call(
        &h,
        Method::POST,
        "/auth/logout-all",
        &[("authorization", &format!("Bearer {access_a}"))],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_refused_and_cleared(&refresh(&h, &cookie_b).await);
    assert_eq!(get_me(&h, &access_b).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get_me(&h, &access_a).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get_me(&h, &access_bob).await.status, StatusCode::OK);
    let r = call(&h, Method::POST, "/auth/logout-all", &[], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

/// Every session logout-all revoked is refused by id, also its tokens issued in the very
/// second of the logout; a login right after it, in that same second, works.
async fn logout_all_refuses_each_revoked_session_but_not_a_later_login<S: RefreshStore>(
    h: Harness<S>,
) {
    // The test clock stands still: every token below has the same `iat` second.
    let (access_a, _) = login(&h, "alice", "Firefox/130").await;
    let (access_b, _) = login(&h, "alice", "Safari/17").await;
    let r = call(
        &h,
        Method::POST,
        "/auth/logout-all",
        &[("authorization", &format!("Bearer {access_a}"))],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(get_me(&h, &access_a).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get_me(&h, &access_b).await.status, StatusCode::UNAUTHORIZED);
    let (access_c, cookie_c) = login(&h, "alice", "Firefox/130").await;
    assert_eq!(
        get_me(&h, &access_c).await.status,
        StatusCode::OK,
        "a login after logout-all, in the same second, is not caught by the cut-off"
    );
    assert_eq!(refresh(&h, &cookie_c).await.status, StatusCode::OK);
}

/// The user directory fails after the rotation happened: the 503 carries the successor, so a
/// client that keeps the cookies it is given never presents a spent token.
async fn a_directory_outage_after_rotation_hands_back_the_successor<S: RefreshStore>(
    h: Harness<S>,
) {
    let (_, mut cookie) = login(&h, "carol", "Firefox/130").await;
    for round in 0..3 {
        let r = refresh(&h, &cookie).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
        assert_eq!(r.headers["retry-after"], "1");
        let successor = r
            .refresh_cookie()
            .unwrap_or_else(|| panic!("round {round}: the successor comes with the 503"));
        assert_ne!(successor, cookie);
        cookie = successor;
        // The client comes back much later: still no reuse, it holds the live token.
        h.clock.advance(Duration::from_secs(GRACE * 3));
    }
}

const CHROME_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

async fn sessions_list_and_delete<S: RefreshStore>(h: Harness<S>) {
    let (access_a, _) = login(&h, "alice", CHROME_LINUX).await;
    h.clock.advance(Duration::from_secs(1));
    let (access_b, cookie_b) = login(&h, "alice", SAFARI_IPHONE).await;
    let (access_bob, _) = login(&h, "bob", "curl/8").await;
    let bearer = format!("Bearer {access_a}");
    let r = call(
        &h,
        Method::GET,
        "/auth/sessions",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let sessions = r.body["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["user_agent"], SAFARI_IPHONE);
    assert_eq!(sessions[0]["current"], false);
    assert_eq!(
        sessions[0]["device"],
        json!({"browser": "Safari", "os": "iPhone", "kind": "mobile"})
    );
    assert_eq!(sessions[1]["user_agent"], CHROME_LINUX);
    assert_eq!(sessions[1]["current"], true);
    assert_eq!(
        sessions[1]["device"],
        json!({"browser": "Chrome", "os": "Linux", "kind": "desktop"})
    );
    assert_eq!(sessions[1]["ip"], "127.0.0.1");
    let other = sessions[0]["id"].as_str().unwrap().to_owned();

    let bob = format!("Bearer {access_bob}");
    let path = format!("/auth/sessions/{other}");
    assert_eq!(
        call(&h, Method::DELETE, &path, &[("authorization", &bob)], "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&h, Method::DELETE, &path, &[("authorization", &bearer)], "")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&h, Method::DELETE, &path, &[("authorization", &bearer)], "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_refused_and_cleared(&refresh(&h, &cookie_b).await);
    assert_eq!(
        get_me(&h, &access_b).await.status,
        StatusCode::UNAUTHORIZED,
        "the deleted device's access token is refused at once"
    );
    let r = call(
        &h,
        Method::DELETE,
        "/auth/sessions/not-a-session",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["error"], "not_found");
    assert_eq!(
        call(&h, Method::GET, "/auth/sessions", &[], "")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

async fn cross_site_refresh_is_refused<S: RefreshStore>(h: Harness<S>) {
    let (_, cookie) = login(&h, "alice", "Firefox/130").await;
    let headers = [
        ("cookie", format!("__Secure-refresh={cookie}")),
        ("sec-fetch-site", "cross-site".to_owned()),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = call(&h, Method::POST, "/auth/refresh", &headers, "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["error"], "cross_site_request");
    assert_eq!(
        refresh(&h, &cookie).await.status,
        StatusCode::OK,
        "the refused request rotated nothing"
    );
}

async fn bad_input_gets_clear_errors<S: RefreshStore>(h: Harness<S>) {
    let json = [("content-type", "application/json")];
    let unknown = call(
        &h,
        Method::POST,
        "/auth/login",
        &json,
        r#"{"username":"mallory","password":"x"}"#,
    )
    .await;
    let wrong = call(
        &h,
        Method::POST,
        "/auth/login",
        &json,
        r#"{"username":"alice","password":"x"}"#,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        unknown.body, wrong.body,
        "unknown user and wrong password look the same"
    );
    assert!(unknown.headers.get(SET_COOKIE).is_none());
    let r = call(&h, Method::POST, "/auth/login", &json, "{not json").await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let r = call(&h, Method::POST, "/auth/login", &json, r#"{"username":1}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(
        &h,
        Method::POST,
        "/auth/login",
        &[("content-type", "text/plain")],
        "{}",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = format!(r#"{{"username":"{}","password":"x"}}"#, "a".repeat(20_000));
    let r = call(&h, Method::POST, "/auth/login", &json, &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = call(&h, Method::GET, "/auth/login", &[], "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = call(
        &h,
        Method::POST,
        "/auth/refresh",
        &[("cookie", "__Secure-refresh=garbage")],
        "",
    )
    .await;
    assert_refused_and_cleared(&r);
    let r = call(
        &h,
        Method::POST,
        "/auth/refresh",
        &[("cookie", "__Secure-refresh=a; __Secure-refresh=b")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(&h, Method::POST, "/auth/refresh", &[], "").await;
    assert_refused_and_cleared(&r);
    let r = call(&h, Method::GET, "/.well-known/jwks.json", &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["keys"][0]["kid"], "k1");
}

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(h) = super::memory(false).await { super::$name(h).await }
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(h) = super::redis().await { super::$name(h).await }
                }
            )*
        }
    };
}

/// Signing out other devices ends every other session of the user (their refresh refused,
/// their access tokens refused at once) and keeps the caller's; another user is untouched.
async fn logout_others_keeps_the_callers_session<S: RefreshStore>(h: Harness<S>) {
    let (access_a, cookie_a) = login(&h, "alice", "Firefox/130").await;
    let (access_b, cookie_b) = login(&h, "alice", "Safari/17").await;
    let (access_c, _) = login(&h, "alice", "curl/8").await;
    let (access_bob, cookie_bob) = login(&h, "bob", "curl/8").await;
    // POST /auth/logout-others (or another method) with `token`.
    let others = |method: Method, token: &str| {
        let auth = format!("Bearer {token}");
        let h = &h;
        async move {
            call(
                h,
                method,
                "/auth/logout-others",
                &[("authorization", &auth)],
                "",
            )
            .await
        }
    };
    let r = others(Method::POST, &access_a).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["revoked"], 2);
    assert!(
        r.headers.get(SET_COOKIE).is_none(),
        "the caller's cookie is kept"
    );
    assert_refused_and_cleared(&refresh(&h, &cookie_b).await);
    assert_eq!(get_me(&h, &access_b).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get_me(&h, &access_c).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get_me(&h, &access_a).await.status, StatusCode::OK);
    assert_eq!(refresh(&h, &cookie_a).await.status, StatusCode::OK);
    assert_eq!(get_me(&h, &access_bob).await.status, StatusCode::OK);
    assert_eq!(refresh(&h, &cookie_bob).await.status, StatusCode::OK);
    // Alone now: nothing more to end; a repeat is harmless.
    let r = others(Method::POST, &access_a).await;
    assert_eq!(
        (r.status, r.body["revoked"].as_u64()),
        (StatusCode::OK, Some(0))
    );
    // No token, a GET, a revoked caller: clear refusals.
    let r = call(&h, Method::POST, "/auth/logout-others", &[], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = others(Method::GET, &access_a).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = others(Method::POST, &access_b).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

both_stores!(
    logout_others_keeps_the_callers_session,
    full_flow,
    reuse_after_grace_revokes,
    two_refreshes_inside_grace,
    logout_all_kills_the_other_device,
    logout_all_refuses_each_revoked_session_but_not_a_later_login,
    a_directory_outage_after_rotation_hands_back_the_successor,
    sessions_list_and_delete,
    cross_site_refresh_is_refused,
    bad_input_gets_clear_errors,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_refresh_is_503_and_bearer_routes_still_work() {
    let Some(mut h) = redis().await else { return };
    let (access, cookie) = login(&h, "alice", "Firefox/130").await;
    h.redis.as_mut().unwrap().stop();
    let r = refresh(&h, &cookie).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers["retry-after"], "1");
    assert!(r.headers.get(SET_COOKIE).is_none(), "the cookie is kept");
    assert_eq!(get_me(&h, &access).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_session_data_is_a_500_that_says_nothing_more() {
    let Some(h) = redis().await else { return };
    let (access, _cookie) = login(&h, "alice", "Firefox/130").await;
    let server = h.redis.as_ref().unwrap();
    let key = format!("baton:{{{}}}", baton_store::user_tag_of("id-alice"));
    assert_eq!(
        server
            .command(&["SET", &key, "junk", "KEEPTTL", "XX"])
            .unwrap()
            .trim(),
        "OK"
    );
    let r = call(
        &h,
        Method::GET,
        "/auth/sessions",
        &[("authorization", &format!("Bearer {access}"))],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{:?}", r.body);
    assert_eq!(r.body["error"], "server_error");
    assert_eq!(r.body["error_description"], "internal error");
    assert!(
        r.headers.get("retry-after").is_none(),
        "not a 503: retrying will not fix it"
    );
}

/// Signing out other devices while Redis is paused: 503 with `Retry-After`, the other session
/// still works; once Redis is back the repeat ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_others_the_store_cannot_take_is_503_and_a_repeat_finishes_it() {
    let Some(h) = redis().await else { return };
    let (access_a, _) = login(&h, "alice", "Firefox/130").await;
    let (access_b, cookie_b) = login(&h, "alice", "Safari/17").await;
    let auth = format!("Bearer {access_a}");
    let server = h.redis.as_ref().unwrap();
    server.pause();
    let r = call(
        &h,
        Method::POST,
        "/auth/logout-others",
        &[("authorization", &auth)],
        "",
    )
    .await;
    server.resume();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(
        get_me(&h, &access_b).await.status,
        StatusCode::OK,
        "nothing ended"
    );
    let r = call(
        &h,
        Method::POST,
        "/auth/logout-others",
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(
        (r.status, r.body["revoked"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    assert_eq!(get_me(&h, &access_b).await.status, StatusCode::UNAUTHORIZED);
    assert_refused_and_cleared(&refresh(&h, &cookie_b).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_the_store_cannot_take_is_503_and_the_session_stays() {
    let Some(h) = redis().await else { return };
    let (access, cookie) = login(&h, "alice", "Firefox/130").await;
    let server = h.redis.as_ref().unwrap();
    server.pause();
    let r = call(
        &h,
        Method::POST,
        "/auth/logout",
        &[("cookie", &format!("__Secure-refresh={cookie}"))],
        "",
    )
    .await;
    server.resume();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(r.headers["retry-after"], "1");
    assert!(r.headers.get(SET_COOKIE).is_none(), "the cookie is kept");
    assert_eq!(
        get_me(&h, &access).await.status,
        StatusCode::OK,
        "not logged out"
    );
    // The retry logs out for good.
    let r = call(
        &h,
        Method::POST,
        "/auth/logout",
        &[("cookie", &format!("__Secure-refresh={cookie}"))],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(get_me(&h, &access).await.status, StatusCode::UNAUTHORIZED);
    assert_refused_and_cleared(&refresh(&h, &cookie).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_layer_waits_out_a_503_refresh_and_keeps_the_session() {
    let Some(h) = redis().await else { return };
    let (refresher, api) = clients(&h);
    client_login(&h, &refresher).await;
    h.clock.advance(Duration::from_secs(ACCESS_TTL + 1));
    let service = ServiceBuilder::new()
        .layer(RefreshOn401Layer::new(refresher.clone()))
        .service(api);
    // Redis stalls for 1.5 s: the first refresh answers 503 (after the 1 s write timeout),
    // the retry after `Retry-After` (1 s) gets through.
    h.redis.as_ref().unwrap().pause();
    let started = std::time::Instant::now();
    let call = tokio::spawn(
        service.oneshot(
            Request::get(format!("http://{}/api/me", h.addr))
                .body(Full::default())
                .unwrap(),
        ),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.redis.as_ref().unwrap().resume();
    let res = call.await.unwrap().unwrap();
    eprintln!(
        "answered after {:?}, {} refresh calls",
        started.elapsed(),
        refresher.refreshes()
    );
    assert_eq!(res.status(), StatusCode::OK);
    assert!(refresher.refreshes() >= 2, "the 503 was retried");
    assert_eq!(
        h.refreshes.load(Ordering::SeqCst) as u64,
        refresher.refreshes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_layer_answers_503_not_401_when_the_store_is_down() {
    let Some(h) = redis_with(true).await else {
        return;
    };
    let body = json!({ "username": "alice", "password": "alice-password" }).to_string();
    let r = call(
        &h,
        Method::POST,
        "/auth/login",
        &[("content-type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let cookies = format!(
        "__Host-access={}; __Secure-refresh={}",
        r.cookie("__Host-access").unwrap(),
        r.refresh_cookie().unwrap()
    );
    h.clock.advance(Duration::from_secs(ACCESS_TTL + 1));
    h.redis.as_ref().unwrap().pause();
    let r = call(&h, Method::GET, "/app/me", &[("cookie", &cookies)], "").await;
    h.redis.as_ref().unwrap().resume();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers["retry-after"], "1");
    assert!(
        r.headers.get("www-authenticate").is_none(),
        "not a sign-out"
    );
    assert!(r.headers.get(SET_COOKIE).is_none(), "the cookies are kept");
    let r = call(&h, Method::GET, "/app/me", &[("cookie", &cookies)], "").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.refresh_cookie().is_some());
}

type RetryClient = Client<HttpConnector, RetryBody<Full<Bytes>>>;

fn clients<S: RefreshStore>(
    h: &Harness<S>,
) -> (
    HttpRefresher<Client<HttpConnector, Full<Bytes>>>,
    RetryClient,
) {
    let plain = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let refresher = HttpRefresher::new(
        plain,
        format!("http://{}/auth/refresh", h.addr).parse().unwrap(),
    );
    let api = Client::builder(TokioExecutor::new()).build_http::<RetryBody<Full<Bytes>>>();
    (refresher, api)
}

async fn client_login<S: RefreshStore>(
    h: &Harness<S>,
    refresher: &HttpRefresher<Client<HttpConnector, Full<Bytes>>>,
) {
    let uri = format!("http://{}/auth/login", h.addr).parse().unwrap();
    refresher
        .login(
            uri,
            &json!({"username": "alice", "password": "alice-password"}),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_layer_refreshes_once_for_fifty_concurrent_failures() {
    let h = memory(false).await.unwrap();
    let (refresher, api) = clients(&h);
    client_login(&h, &refresher).await;
    h.clock.advance(Duration::from_secs(ACCESS_TTL + 1));
    let service = ServiceBuilder::new()
        .layer(RefreshOn401Layer::new(refresher.clone()))
        .service(api);
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let service = service.clone();
        let uri = format!("http://{}/api/me", h.addr);
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            let res = service
                .oneshot(Request::get(uri).body(Full::default()).unwrap())
                .await
                .unwrap();
            res.status()
        });
    }
    let mut ok = 0;
    while let Some(status) = tasks.join_next().await {
        if status.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 50);
    assert_eq!(
        h.refreshes.load(Ordering::SeqCst),
        1,
        "one refresh call reached the server"
    );
    assert_eq!(refresher.refreshes(), 1);
}

/// Logs the user of `token` out everywhere, behind a client's back.
async fn logout_everywhere<S: RefreshStore>(h: &Harness<S>, token: &str) {
    let r = call(
        h,
        Method::POST,
        "/auth/logout-all",
        &[("authorization", &format!("Bearer {token}"))],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_layer_returns_the_original_401_when_refresh_fails() {
    let h = memory(false).await.unwrap();
    let (refresher, api) = clients(&h);
    client_login(&h, &refresher).await;
    // Log out behind the client's back: its refresh cookie is dead.
    logout_everywhere(&h, &refresher.access_token().unwrap()).await;
    let service = ServiceBuilder::new()
        .layer(RefreshOn401Layer::new(refresher.clone()))
        .service(api);
    let res = service
        .oneshot(
            Request::get(format!("http://{}/api/me", h.addr))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("token revoked")
    );
    assert_eq!(
        h.refreshes.load(Ordering::SeqCst),
        1,
        "one refresh, no loop"
    );
}

/// 1 MiB in 64 KiB chunks, with no size hint: a stream that cannot be replayed.
struct Streaming {
    left: usize,
}

impl Body for Streaming {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(64 * 1024);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; n])))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_layer_does_not_retry_a_streaming_body() {
    let h = memory(false).await.unwrap();
    let (refresher, _) = clients(&h);
    client_login(&h, &refresher).await;
    let api = Client::builder(TokioExecutor::new()).build_http::<RetryBody<Streaming>>();
    let service = ServiceBuilder::new()
        .layer(RefreshOn401Layer::new(refresher.clone()))
        .service(api);
    // Fresh token: the stream goes through once.
    let req = Request::post(format!("http://{}/api/upload", h.addr))
        .body(Streaming { left: 1 << 20 })
        .unwrap();
    let res = service.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        &res.into_body().collect().await.unwrap().to_bytes()[..],
        b"1048576"
    );
    // Expired token: 401 comes back as it is; no refresh, no retry.
    h.clock.advance(Duration::from_secs(ACCESS_TTL + 1));
    let req = Request::post(format!("http://{}/api/upload", h.addr))
        .body(Streaming { left: 1 << 20 })
        .unwrap();
    // The server answers 401 without reading the body, so the client may see the response
    // or a broken pipe while still writing: either way, nothing is refreshed or retried.
    match service.oneshot(req).await {
        Ok(res) => assert_eq!(res.status(), StatusCode::UNAUTHORIZED),
        Err(e) => assert!(format!("{e:?}").contains("BodyWrite"), "{e:?}"),
    }
    assert_eq!(h.refreshes.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_layer_renews_both_cookies_on_an_expired_access_cookie() {
    let h = memory(true).await.unwrap();
    let body = json!({ "username": "alice", "password": "alice-password" }).to_string();
    let r = call(
        &h,
        Method::POST,
        "/auth/login",
        &[("content-type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let access = r
        .cookie("__Host-access")
        .expect("access cookie in cookie mode");
    let refresh_cookie = r.refresh_cookie().unwrap();
    let set = r
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert!(
        set.iter()
            .any(|c| c.starts_with("__Secure-refresh=") && c.contains("Path=/app")),
        "{set:?}"
    );

    let cookies = format!("__Host-access={access}; __Secure-refresh={refresh_cookie}");
    let r = call(&h, Method::GET, "/app/me", &[("cookie", &cookies)], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers.get(SET_COOKIE).is_none(), "nothing to renew yet");

    h.clock.advance(Duration::from_secs(ACCESS_TTL + 1));
    let r = call(&h, Method::GET, "/app/me", &[("cookie", &cookies)], "").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["sub"], "id-alice");
    let new_access = r.cookie("__Host-access").expect("access cookie renewed");
    let new_refresh = r.refresh_cookie().expect("refresh cookie renewed");
    assert_ne!(new_access, access);
    assert_ne!(new_refresh, refresh_cookie);
    assert_eq!(
        h.refreshes.load(Ordering::SeqCst),
        0,
        "no call to /auth/refresh: done in place"
    );

    let cookies = format!("__Host-access={new_access}; __Secure-refresh={new_refresh}");
    let r = call(&h, Method::GET, "/app/me", &[("cookie", &cookies)], "").await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_layer_refreshes_proactively_before_expiry() {
    let h = memory(false).await.unwrap();
    let (refresher, api) = clients(&h);
    client_login(&h, &refresher).await;
    let before = refresher.access_token().unwrap();
    // The token lives 60 s; a 120 s margin means "refresh before sending".
    let service = ServiceBuilder::new()
        .layer(
            RefreshOn401Layer::new(refresher.clone())
                .with_proactive_refresh(Duration::from_secs(120)),
        )
        .service(api);
    let res = service
        .oneshot(
            Request::get(format!("http://{}/api/me", h.addr))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        h.refreshes.load(Ordering::SeqCst),
        1,
        "refreshed before the call, not after a 401"
    );
    assert_ne!(refresher.access_token().unwrap(), before);
}

/// A revocation feed that fails closed while its log is unreadable makes the bearer layer
/// answer 503 with `Retry-After`, not 401: clients wait instead of refreshing or signing out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_failing_closed_answers_503_not_401() {
    use baton::bearer::CheckRevocation;
    use baton::redis::{DisconnectPolicy, FeedOptions, RevocationFeed};
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let feed = RevocationFeed::start(
        &server.url(),
        FeedOptions::new(Duration::from_secs(900))
            .with_disconnect_policy(DisconnectPolicy::RefuseAll),
    )
    .await
    .unwrap();
    let keys = KeyRing::new(KeySet::new(Key::generate("k1", Algorithm::ES256).unwrap()).unwrap());
    let store = MemoryStore::new(RefreshKeys::generate().unwrap(), policy());
    let baton = Baton::builder(store, Users, keys)
        .revocations(feed.clone())
        .no_client_addr()
        .build()
        .unwrap();
    let token = baton
        .issuer()
        .issue("id-alice", None, NoCustomClaims {})
        .unwrap()
        .token;
    let service = ServiceBuilder::new()
        .layer(baton.bearer_layer())
        .service(tower::service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(axum::http::Response::new(Full::<Bytes>::from("ok")))
        }));
    let get = || {
        Request::get("/api/me")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let res = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    server.stop();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while feed.is_known() {
        assert!(std::time::Instant::now() < deadline, "never disconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    assert!(
        !res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token"),
        "no refresh trigger"
    );
    server.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !feed.is_known() {
        assert!(std::time::Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = service.oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// Cookie mode: a junk or forged refresh cookie (8 KiB of it) next to an expired access
/// cookie gets the original 401 and touches nothing; a genuine one still refreshes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_layer_ignores_junk_refresh_cookies() {
    let h = memory(true).await.unwrap();
    let body = json!({ "username": "alice", "password": "alice-password" }).to_string();
    let r = call(
        &h,
        Method::POST,
        "/auth/login",
        &[("content-type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let access = r.cookie("__Host-access").unwrap();
    let genuine = r.refresh_cookie().unwrap();
    h.clock.advance(Duration::from_secs(ACCESS_TTL + 1));
    let forged = RefreshKeys::new(1, [0x66; 32]).unwrap().mint(
        &h._baton.store().keys().verify(&genuine).unwrap().session_id,
        0,
    );
    for junk in [
        "x".repeat(8 * 1024),
        format!("v1.{}", "A".repeat(87)),
        forged.expose().to_owned(),
    ] {
        let cookies = format!("__Host-access={access}; __Secure-refresh={junk}");
        let r = call(&h, Method::GET, "/app/me", &[("cookie", &cookies)], "").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
        assert!(r.headers.get(SET_COOKIE).is_none());
    }
    let cookies = format!("__Host-access={access}; __Secure-refresh={genuine}");
    let r = call(&h, Method::GET, "/app/me", &[("cookie", &cookies)], "").await;
    assert_eq!(r.status, StatusCode::OK);
}

/// The client's token goes to its own origin only, and another origin's 401 never triggers a
/// refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_layer_sends_the_token_to_its_origin_only() {
    let h = memory(false).await.unwrap();
    let other = memory(false).await.unwrap();
    let (refresher, api) = clients(&h);
    client_login(&h, &refresher).await;
    let service = ServiceBuilder::new()
        .layer(RefreshOn401Layer::new(refresher.clone()))
        .service(api);
    // The other host sees no token: "bearer token required", not a token of ours.
    let res = service
        .clone()
        .oneshot(
            Request::get(format!("http://{}/api/me", other.addr))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let challenge = res.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!challenge.contains("invalid_token"), "{challenge}");
    // Its 401 invalid_token (to a token the caller set itself) is not ours to refresh.
    let res = service
        .clone()
        .oneshot(
            Request::get(format!("http://{}/api/me", other.addr))
                .header("authorization", "Bearer not.a.token")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refresher.refreshes(), 0);
    assert_eq!(other.refreshes.load(Ordering::SeqCst), 0);
    // Its own origin gets the token.
    let res = service
        .oneshot(
            Request::get(format!("http://{}/api/me", h.addr))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// A refused refresh stands: many calls after it make one refresh request, not one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_layer_backs_off_after_a_refused_refresh() {
    let h = memory(false).await.unwrap();
    let (refresher, api) = clients(&h);
    client_login(&h, &refresher).await;
    logout_everywhere(&h, &refresher.access_token().unwrap()).await;
    let service = ServiceBuilder::new()
        .layer(RefreshOn401Layer::new(refresher.clone()))
        .service(api);
    for _ in 0..5 {
        let res = service
            .clone()
            .oneshot(
                Request::get(format!("http://{}/api/me", h.addr))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(h.refreshes.load(Ordering::SeqCst), 1, "one refresh request");
    // A new login lifts it.
    client_login(&h, &refresher).await;
    let res = service
        .oneshot(
            Request::get(format!("http://{}/api/me", h.addr))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}
