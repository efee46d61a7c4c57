//! The login app signs users in with an OpenID Connect provider: a real `oidc-provider` on
//! node over HTTPS (started by the test), the app's users as the account directory, in memory,
//! on Redis and on PostgreSQL. On Redis a sign-in started on one instance finishes on another (the flow key
//! is shared), and the provider identity finds the same user from either.

mod common;

use std::time::Duration;

use baton_test::{OidcClient, OidcServer, ProviderBrowser, RedisServer};
use bytes::Bytes;
use common::call;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use login_app::{Config, OidcProvider};

/// A listener bound now, so the redirect URI is known before the provider starts.
async fn listener() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    (listener, base)
}

/// The app's one client at the provider, for its public origin `public`.
fn client_for(public: &str) -> Vec<OidcClient> {
    vec![OidcClient {
        id: "app".to_owned(),
        secret: "app-secret".to_owned(),
        redirect_uri: format!("{public}/auth/oidc/test-provider/callback"),
    }]
}

async fn serve(listener: tokio::net::TcpListener, config: &Config) {
    let app = login_app::app(config).await.unwrap();
    tokio::spawn(login_app::serve(listener, app, std::future::pending()));
}

fn config_for(server: &OidcServer, public: &str, redis: Option<String>) -> Config {
    Config {
        redis_url: redis,
        public_urls: vec![public.to_owned()],
        oidc: vec![OidcProvider {
            name: "Test Provider".to_owned(),
            issuer: server.issuer(),
            client_id: "app".to_owned(),
            client_secret: Some("app-secret".to_owned()),
        }],
        oidc_roots: vec![server.ca_der().to_vec()],
        ..Config::default()
    }
}

/// A GET without following redirects: status, `Location`, and every `Set-Cookie` as
/// `name=value`.
async fn get(url: &str, cookie: Option<&str>) -> (StatusCode, String, Vec<String>) {
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Full<Bytes>>(hyper_util::client::legacy::connect::HttpConnector::new());
    let mut req = http::Request::get(url);
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    let res = client
        .request(req.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let location = res
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let cookies = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .filter(|c| !c.ends_with('='))
        .collect();
    let _ = res.into_body().collect().await;
    (status, location, cookies)
}

/// Starts a sign-in at `start_base`, goes through the provider's pages as `login`, and
/// finishes it at `finish_base` (a load balancer sending the callback to another instance
/// than the start): the page it lands on and the refresh cookie.
async fn sign_in(
    server: &OidcServer,
    public: &str,
    start_base: &str,
    finish_base: &str,
    login: &str,
) -> (String, Option<String>) {
    let (status, authorize, cookies) = get(
        &format!("{start_base}/auth/oidc/test-provider/start?return_to=/"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{authorize}");
    let flow = cookies
        .iter()
        .find(|c| c.starts_with("__Host-baton-oidc-test-provider="))
        .expect("the flow cookie")
        .clone();
    let query = ProviderBrowser::new(server.ca_der(), public)
        .sign_in(&server.issuer(), &authorize, login, false)
        .await;
    let (status, landing, cookies) = get(
        &format!("{finish_base}/auth/oidc/test-provider/callback?{query}"),
        Some(&flow),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{landing}");
    let refresh = cookies
        .into_iter()
        .find(|c| c.starts_with("__Secure-refresh=v1."));
    (landing, refresh)
}

/// The name `/api/me` gives the holder of `refresh`'s session.
async fn username(base: &str, refresh: &str) -> (String, String) {
    let refreshed = call(
        base,
        Method::POST,
        "/auth/refresh",
        &[("cookie", refresh.to_owned())],
        None,
    )
    .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{:?}", refreshed.body);
    let token = refreshed.body["access_token"].as_str().unwrap().to_owned();
    let me = call(
        base,
        Method::GET,
        "/api/me",
        &[("authorization", format!("Bearer {token}"))],
        None,
    )
    .await;
    assert_eq!(me.status, StatusCode::OK);
    (
        me.body["username"].as_str().unwrap().to_owned(),
        me.body["sub"].as_str().unwrap().to_owned(),
    )
}

/// The page lists the provider; a sign-in opens a session whose user is shown by the
/// provider's name for them and its host; the same identity comes back to the same user, and
/// another identity is another user; a cancelled sign-in lands on the page with its code.
async fn scenario(server: &OidcServer, a: &str, b: &str) {
    let providers = call(a, Method::GET, "/auth/oidc/providers", &[], None).await;
    assert_eq!(providers.status, StatusCode::OK);
    assert_eq!(providers.body["providers"][0]["id"], "test-provider");
    assert_eq!(providers.body["providers"][0]["name"], "Test Provider");

    let (landing, refresh) = sign_in(server, a, a, a, "zoe").await;
    assert_eq!(landing, "/");
    let (name, zoe) = username(a, &refresh.expect("a session")).await;
    assert_eq!(name, "zoe (127.0.0.1)");

    // Started on one instance, finished on the other: the same user.
    let (landing, refresh) = sign_in(server, a, a, b, "zoe").await;
    assert_eq!(landing, "/");
    let (_, again) = username(b, &refresh.expect("a session")).await;
    assert_eq!(again, zoe, "the same identity is the same user");

    let (_, refresh) = sign_in(server, a, b, b, "yuri").await;
    let (name, yuri) = username(b, &refresh.expect("a session")).await;
    assert_eq!(name, "yuri (127.0.0.1)");
    assert_ne!(yuri, zoe);

    // A provider-made user has no password: a password login with its name fails.
    let login = call(
        a,
        Method::POST,
        "/auth/login",
        &[],
        Some(serde_json::json!({"username": "zoe (127.0.0.1)", "password": "anything at all"})),
    )
    .await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);

    // No flow cookie (a callback replayed into another browser): the page, with its code.
    let (status, landing, cookies) = get(
        &format!("{a}/auth/oidc/test-provider/callback?code=x&state=y"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(landing, "/?oidc_error=expired");
    assert!(cookies.iter().all(|c| !c.starts_with("__Secure-refresh")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory() {
    let (listener, base) = listener().await;
    let Some(server) = OidcServer::start(&client_for(&base), Duration::from_secs(3600)) else {
        return;
    };
    serve(listener, &config_for(&server, &base, None)).await;
    scenario(&server, &base, &base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (listener_a, a) = listener().await;
    let (listener_b, b) = listener().await;
    let Some(server) = OidcServer::start(&client_for(&a), Duration::from_secs(3600)) else {
        return;
    };
    // One public origin and one client at the provider for the deployment, as behind a load
    // balancer; the flow key, the users and their links are shared in Redis.
    serve(listener_a, &config_for(&server, &a, Some(redis.url()))).await;
    serve(listener_b, &config_for(&server, &a, Some(redis.url()))).await;
    scenario(&server, &a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres() {
    let Some(pg) = baton_test::PgServer::start() else {
        return;
    };
    let database = pg.create_database();
    let (listener_a, a) = listener().await;
    let (listener_b, b) = listener().await;
    let Some(server) = OidcServer::start(&client_for(&a), Duration::from_secs(3600)) else {
        return;
    };
    let config = Config {
        database_url: Some(database),
        ..config_for(&server, &a, None)
    };
    serve(listener_a, &config).await;
    serve(listener_b, &config).await;
    scenario(&server, &a, &b).await;
}

#[test]
fn provider_ids_come_from_their_names() {
    let id = |name: &str| {
        OidcProvider {
            name: name.to_owned(),
            issuer: String::new(),
            client_id: String::new(),
            client_secret: None,
        }
        .id()
    };
    assert_eq!(id("Google"), "google");
    assert_eq!(id("Kakao Login"), "kakao-login");
    assert_eq!(id("  My -- IdP!  "), "my-idp");
    assert_eq!(id(&"x".repeat(40)), "x".repeat(32));
}

/// Redis stops answering (paused) while the provider sends the browser back: the callback
/// lands on the page with `unavailable` (no session, no 500) within the store's timeouts, and
/// once Redis answers again the same identity signs in, to one user, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_during_the_callback() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (listener, base) = listener().await;
    let Some(server) = OidcServer::start(&client_for(&base), Duration::from_secs(3600)) else {
        return;
    };
    serve(listener, &config_for(&server, &base, Some(redis.url()))).await;

    let (status, authorize, cookies) = get(
        &format!("{base}/auth/oidc/test-provider/start?return_to=/"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let flow = cookies
        .iter()
        .find(|c| c.starts_with("__Host-baton-oidc-test-provider="))
        .unwrap()
        .clone();
    let query = ProviderBrowser::new(server.ca_der(), &base)
        .sign_in(&server.issuer(), &authorize, "ines", false)
        .await;
    redis.pause();
    let callback = tokio::time::timeout(
        Duration::from_secs(30),
        get(
            &format!("{base}/auth/oidc/test-provider/callback?{query}"),
            Some(&flow),
        ),
    )
    .await;
    redis.resume();
    let (status, landing, cookies) = callback.expect("the callback answers while Redis is paused");
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(landing, "/?oidc_error=unavailable");
    assert!(
        cookies.iter().all(|c| !c.starts_with("__Secure-refresh")),
        "{cookies:?}"
    );

    let (landing, refresh) = sign_in(&server, &base, &base, &base, "ines").await;
    assert_eq!(landing, "/");
    let (name, first) = username(&base, &refresh.expect("a session")).await;
    assert_eq!(name, "ines (127.0.0.1)");
    let (_, refresh) = sign_in(&server, &base, &base, &base, "ines").await;
    let (_, second) = username(&base, &refresh.expect("a session")).await;
    assert_eq!(first, second, "one user for the identity after the stall");
}
