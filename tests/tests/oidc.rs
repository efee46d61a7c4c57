//! Sign-in with an OpenID provider through the facade over real TCP, against a real
//! `oidc-provider` on node (HTTPS, loopback, started by the test): the provider list, the
//! redirect out, the provider's login and consent, the callback opening an ordinary session
//! (refresh, the same user on a second sign-in, logout), and every failure landing on the page
//! with its code: no flow cookie, an off-site `return_to`, the user cancelling, an unknown
//! provider, the provider down, too many callbacks from one address.

mod common;

use common::{Reply, Users};

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use baton::Baton;
use baton::oidc::{MemoryAccounts, Oidc, OidcOptions, ProviderConfig};
use baton::store::{MemoryStore, Policy, RefreshKeys};
use baton::token::{Algorithm, Key, KeyRing, KeySet};
use baton_test::{OidcClient, OidcServer, ProviderBrowser};
use http::{Method, StatusCode};

struct App {
    origin: String,
    server: OidcServer,
}

async fn app() -> Option<App> {
    app_with(baton::RateLimits::none()).await
}

async fn app_with(limits: baton::RateLimits) -> Option<App> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let client = OidcClient {
        id: "app".to_owned(),
        secret: "app-secret".to_owned(),
        redirect_uri: format!("{origin}/auth/oidc/test/callback"),
    };
    let server = OidcServer::start(&[client], Duration::from_secs(3600))?;
    let provider = ProviderConfig::new("test", "Test provider", server.issuer(), "app")
        .with_secret("app-secret");
    let oidc = Oidc::discover(
        &origin,
        "/auth",
        vec![provider],
        &[9; 32],
        OidcOptions::new().with_root_certificate(server.ca_der().to_vec()),
    )
    .await
    .unwrap();
    let store = MemoryStore::new(RefreshKeys::generate().unwrap(), Policy::new());
    let keys = KeyRing::new(KeySet::new(Key::generate("k1", Algorithm::ES256).unwrap()).unwrap());
    let baton = Baton::builder(store, Users, keys)
        .oidc(oidc, MemoryAccounts::new())
        .rate_limits(limits)
        .client_addr_from_peer()
        .build()
        .unwrap();
    let router = Router::new().merge(baton.router());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Some(App { origin, server })
}

async fn get(app: &App, path: &str, cookie: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    common::call(&app.origin, None, Method::GET, path, &headers, "").await
}

fn location(r: &Reply) -> String {
    r.headers["location"].to_str().unwrap().to_owned()
}

/// The `name=value` of the cookie named `name` that `r` sets.
fn set_cookie(r: &Reply, name: &str) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")) && !v.starts_with(&format!("{name}=;")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// `true` when `r` clears the cookie named `name` (sets it empty).
fn clears_cookie(r: &Reply, name: &str) -> bool {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.starts_with(&format!("{name}=;")))
}

/// Starts a sign-in, goes through the provider as `login`, and comes back to the callback:
/// the callback's reply.
async fn sign_in(app: &App, return_to: &str, login: &str, cancel: bool) -> Reply {
    let r = get(
        app,
        &format!("/auth/oidc/test/start?return_to={return_to}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let flow = set_cookie(&r, "__Host-baton-oidc-test").expect("the flow cookie");
    through_provider(app, &location(&r), &flow, login, cancel).await
}

/// From the provider's authorization URL `to`, through its pages as `login`, back to the
/// callback with the `flow` cookie: the callback's reply.
async fn through_provider(app: &App, to: &str, flow: &str, login: &str, cancel: bool) -> Reply {
    let mut browser = ProviderBrowser::new(app.server.ca_der(), &app.origin);
    let query = browser
        .sign_in(&app.server.issuer(), to, login, cancel)
        .await;
    get(
        app,
        &format!("/auth/oidc/test/callback?{query}"),
        Some(flow),
    )
    .await
}

/// The user a callback reply signed in: its refresh cookie refreshed, the access token's `sub`.
async fn user_of(app: &App, callback: &Reply) -> serde_json::Value {
    let cookie = set_cookie(callback, "__Secure-refresh").expect("a session");
    let r = refresh(app, &cookie).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    common::claims_of(&r.access())["sub"].clone()
}

async fn refresh(app: &App, cookie: &str) -> Reply {
    common::call(
        &app.origin,
        None,
        Method::POST,
        "/auth/refresh",
        &[("cookie", cookie)],
        "",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_sign_in_opens_an_ordinary_session() {
    let Some(app) = app().await else {
        return;
    };
    let r = get(&app, "/auth/oidc/providers", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["providers"][0]["id"], "test");
    assert_eq!(r.body["providers"][0]["name"], "Test provider");
    assert_eq!(r.body["providers"][0]["start"], "/auth/oidc/test/start");

    let r = sign_in(&app, "/account", "alice", false).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
    assert_eq!(location(&r), "/account");
    let cookie = set_cookie(&r, "__Secure-refresh").expect("a session");
    let r = refresh(&app, &cookie).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let user = common::claims_of(&r.access())["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(user.starts_with("oidc-"), "{user}");
    let cookie = r
        .refresh_cookie()
        .map(|c| format!("__Secure-refresh={c}"))
        .unwrap();

    // The same identity again: the same local user, a second session.
    let r = sign_in(&app, "/", "alice", false).await;
    assert_eq!(user_of(&app, &r).await, user.as_str());
    // Another identity: another user.
    let r = sign_in(&app, "/", "bob", false).await;
    assert_ne!(user_of(&app, &r).await, user.as_str());

    // Logout ends the session like any other.
    let r = common::call(
        &app.origin,
        None,
        Method::POST,
        "/auth/logout",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        refresh(&app, &cookie).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_lands_on_the_page_with_its_code() {
    let Some(mut app) = app().await else {
        return;
    };
    // An off-site return_to: the sign-in works and lands on the home page.
    let r = sign_in(&app, "https://evil.example/", "carol", false).await;
    assert_eq!(location(&r), "/");
    let r = sign_in(&app, "//evil.example/", "carol", false).await;
    assert_eq!(location(&r), "/");
    // The user cancels at the provider.
    let r = sign_in(&app, "/", "carol", true).await;
    assert_eq!(location(&r), "/?oidc_error=access_denied");
    assert!(set_cookie(&r, "__Secure-refresh").is_none());
    // A callback without the flow cookie (someone else's link): no session.
    let r = get(&app, "/auth/oidc/test/start", None).await;
    let mut browser = ProviderBrowser::new(app.server.ca_der(), &app.origin);
    let query = browser
        .sign_in(&app.server.issuer(), &location(&r), "carol", false)
        .await;
    let callback = format!("/auth/oidc/test/callback?{query}");
    let r = get(&app, &callback, None).await;
    assert_eq!(location(&r), "/?oidc_error=expired");
    assert!(set_cookie(&r, "__Secure-refresh").is_none());
    // A forged `?error=` link while a sign-in is in progress: it neither cancels nor spends
    // the flow, which then completes.
    let r = get(&app, "/auth/oidc/test/start", None).await;
    let flow = set_cookie(&r, "__Host-baton-oidc-test").unwrap();
    let query = browser
        .sign_in(&app.server.issuer(), &location(&r), "carol", false)
        .await;
    let r = get(
        &app,
        "/auth/oidc/test/callback?error=access_denied",
        Some(&flow),
    )
    .await;
    assert_eq!(location(&r), "/?oidc_error=state_mismatch");
    assert!(
        !clears_cookie(&r, "__Host-baton-oidc-test"),
        "the flow cookie is kept"
    );
    let r = get(
        &app,
        &format!("/auth/oidc/test/callback?{query}"),
        Some(&flow),
    )
    .await;
    assert_eq!(location(&r), "/");
    assert!(
        clears_cookie(&r, "__Host-baton-oidc-test"),
        "the flow is spent"
    );
    assert!(set_cookie(&r, "__Secure-refresh").is_some());
    // An unknown provider.
    let r = get(&app, "/auth/oidc/nope/start", None).await;
    assert_eq!(location(&r), "/?oidc_error=unknown_provider");
    // The provider down between the start and the callback.
    let r = get(&app, "/auth/oidc/test/start", None).await;
    let flow = set_cookie(&r, "__Host-baton-oidc-test").unwrap();
    let query = browser
        .sign_in(&app.server.issuer(), &location(&r), "carol", false)
        .await;
    app.server.stop();
    let r = get(
        &app,
        &format!("/auth/oidc/test/callback?{query}"),
        Some(&flow),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/?oidc_error=provider_unavailable");
}

/// A signed-in user links a provider identity: later sign-ins with it are that user. An
/// identity linked to someone else is never moved; linking needs the user's bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_user_links_a_provider_identity() {
    let Some(app) = app().await else {
        return;
    };
    let login = |user: &'static str| {
        let body = format!(r#"{{"username":"{user}","password":"{user}-password"}}"#);
        let origin = app.origin.clone();
        async move {
            common::call(
                &origin,
                None,
                Method::POST,
                "/auth/login",
                &[("content-type", "application/json")],
                &body,
            )
            .await
            .access()
        }
    };
    let link = |token: Option<String>| {
        let origin = app.origin.clone();
        async move {
            let auth = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("authorization", a.as_str())).collect();
            common::call(
                &origin,
                None,
                Method::POST,
                "/auth/oidc/test/link?return_to=/account",
                &headers,
                "",
            )
            .await
        }
    };
    assert_eq!(link(None).await.status, StatusCode::UNAUTHORIZED);

    // alice links the provider identity "zed".
    let r = link(Some(login("alice").await)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let flow = set_cookie(&r, "__Host-baton-oidc-test").unwrap();
    let to = r.body["redirect"].as_str().unwrap().to_owned();
    let r = through_provider(&app, &to, &flow, "zed", false).await;
    assert_eq!(location(&r), "/account");
    assert!(
        set_cookie(&r, "__Secure-refresh").is_none(),
        "no new session"
    );

    // Signing in as "zed" is now signing in as alice.
    let r = sign_in(&app, "/", "zed", false).await;
    assert_eq!(user_of(&app, &r).await, "id-alice");

    // bob cannot take "zed" over.
    let r = link(Some(login("bob").await)).await;
    let flow = set_cookie(&r, "__Host-baton-oidc-test").unwrap();
    let to = r.body["redirect"].as_str().unwrap().to_owned();
    let r = through_provider(&app, &to, &flow, "zed", false).await;
    assert_eq!(location(&r), "/?oidc_error=identity_taken");
    let r = sign_in(&app, "/", "zed", false).await;
    assert_eq!(user_of(&app, &r).await, "id-alice");
}

/// Each callback may cost an exchange with the provider, so callbacks count against the login
/// limit per address: past it, the browser lands on the page with `too_many_requests` (not a
/// JSON 429 in the middle of a navigation), and its flow cookie is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_callbacks_from_one_address_land_on_the_page() {
    let limits = baton::RateLimits::none().with_login_per_ip(Some(baton::Rule::new(3, 3)));
    let Some(app) = app_with(limits).await else {
        return;
    };
    let r = get(&app, "/auth/oidc/test/start", None).await;
    let flow = set_cookie(&r, "__Host-baton-oidc-test").unwrap();
    let mut codes = Vec::new();
    for _ in 0..10 {
        let r = get(&app, "/auth/oidc/test/callback?code=x&state=y", Some(&flow)).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        let code = location(&r);
        if code == "/?oidc_error=too_many_requests" {
            assert!(
                !clears_cookie(&r, "__Host-baton-oidc-test"),
                "a refused callback leaves the flow alone"
            );
            codes.push(code);
            break;
        }
        codes.push(code);
    }
    let (last, before) = codes.split_last().unwrap();
    assert_eq!(last, "/?oidc_error=too_many_requests", "{codes:?}");
    assert!(
        (3..=4).contains(&before.len())
            && before.iter().all(|c| c == "/?oidc_error=state_mismatch"),
        "{codes:?}"
    );
}
