//! The sign-in flow against a real OpenID provider (`oidc-provider` on node, over HTTPS on a
//! loopback port, started by the test): discovery, the code flow with PKCE, state and nonce,
//! the ID token checked; and each attack refused: a wrong or missing state, a replayed code,
//! a flow cookie of another provider, an ID token for another client, another issuer's
//! provider, an expired ID token, `return_to` off-site, the user cancelling; and the same
//! provider taken as a plain OAuth 2.0 one (no ID token read: its user-info endpoint).

use std::time::Duration;

use baton_oidc::{OAuth2Endpoints, Oidc, OidcFailure, OidcOptions, ProviderConfig};
use baton_test::{OidcClient, OidcServer, ProviderBrowser as Browser};

const APP: &str = "http://127.0.0.1:3000";
const KEY: [u8; 32] = [7; 32];

fn client(id: &str) -> OidcClient {
    OidcClient {
        id: id.to_owned(),
        secret: format!("{id}-secret"),
        redirect_uri: format!("{APP}/auth/oidc/test/callback"),
    }
}

async fn oidc_for(server: &OidcServer, id: &str) -> Oidc {
    let config = ProviderConfig::new("test", "Test", server.issuer(), id)
        .with_secret(format!("{id}-secret"));
    Oidc::discover(
        APP,
        "/auth",
        vec![config],
        &KEY,
        OidcOptions::new().with_root_certificate(server.ca_der().to_vec()),
    )
    .await
    .unwrap()
}

/// The flow cookie's value from a `Set-Cookie`, as the callback's `Cookie` header.
fn cookie_line(set_cookie: &str) -> String {
    let c = cookie::Cookie::parse(set_cookie.to_owned()).unwrap();
    format!("{}={}", c.name(), c.value())
}

/// Starts a sign-in at `oidc` and goes through the provider's pages as `login` (or cancels):
/// the callback's query and the flow cookie to present with it.
async fn through_provider(
    server: &OidcServer,
    oidc: &Oidc,
    return_to: Option<&str>,
    login: &str,
    cancel: bool,
) -> (String, String) {
    let started = oidc.start("test", return_to, None).await.unwrap();
    let query = Browser::new(server.ca_der(), APP)
        .sign_in(&server.issuer(), &started.redirect, login, cancel)
        .await;
    (query, cookie_line(&started.set_cookie))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_signs_in_and_the_same_identity_comes_back() {
    let Some(server) = OidcServer::start(&[client("app")], Duration::from_secs(3600)) else {
        return;
    };
    let oidc = oidc_for(&server, "app").await;
    assert_eq!(oidc.providers().collect::<Vec<_>>(), vec![("test", "Test")]);
    let mut browser = Browser::new(server.ca_der(), APP);

    let started = oidc
        .start("test", Some("/account?tab=devices"), None)
        .await
        .unwrap();
    assert!(
        started.redirect.contains("code_challenge_method=S256"),
        "{}",
        started.redirect
    );
    assert!(started.set_cookie.contains("HttpOnly"));
    assert!(started.set_cookie.contains("SameSite=Lax"));
    assert!(started.set_cookie.starts_with("__Host-baton-oidc-test="));
    assert!(started.set_cookie.contains("Path=/"));
    assert!(started.set_cookie.contains("Secure"));
    let query = browser
        .sign_in(&server.issuer(), &started.redirect, "alice", false)
        .await;
    let cookie = cookie_line(&started.set_cookie);
    let finished = oidc
        .finish("test", Some(&query), &[cookie.as_str()])
        .await
        .unwrap();
    assert_eq!(finished.identity.issuer, server.issuer());
    assert_eq!(finished.identity.subject, "alice");
    assert_eq!(
        finished.identity.email.as_deref(),
        Some("alice@example.test")
    );
    assert_eq!(finished.return_to, "/account?tab=devices");

    // A second sign-in: the same subject, so the same local user.
    let (query, cookie) = through_provider(&server, &oidc, None, "alice", false).await;
    let second = oidc
        .finish("test", Some(&query), &[cookie.as_str()])
        .await
        .unwrap();
    assert_eq!(second.identity.subject, "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_code_is_refused() {
    let Some(server) = OidcServer::start(&[client("app")], Duration::from_secs(3600)) else {
        return;
    };
    let oidc = oidc_for(&server, "app").await;
    let (query, cookie) = through_provider(&server, &oidc, None, "alice", false).await;
    let first = oidc.finish("test", Some(&query), &[cookie.as_str()]).await;
    assert_eq!(first.unwrap().identity.subject, "alice");
    // The same callback again, flow cookie and all: the provider takes each code once.
    let again = oidc.finish("test", Some(&query), &[cookie.as_str()]).await;
    assert!(
        matches!(again, Err(OidcFailure::CodeRefused(_))),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_off_site_return_to_lands_on_the_home_page() {
    let Some(server) = OidcServer::start(&[client("app")], Duration::from_secs(3600)) else {
        return;
    };
    let oidc = oidc_for(&server, "app").await;
    for off_site in [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
    ] {
        let (query, cookie) =
            through_provider(&server, &oidc, Some(off_site), "alice", false).await;
        let finished = oidc
            .finish("test", Some(&query), &[cookie.as_str()])
            .await
            .unwrap();
        assert_eq!(finished.return_to, "/", "{off_site}");
    }
}

/// A provider, the app, and a sign-in of "bob" through the provider: its callback query and
/// flow cookie, not yet presented.
async fn bob() -> Option<(OidcServer, Oidc, String, String)> {
    let server = OidcServer::start(&[client("app")], Duration::from_secs(3600))?;
    let oidc = oidc_for(&server, "app").await;
    let (query, cookie) = through_provider(&server, &oidc, None, "bob", false).await;
    Some((server, oidc, query, cookie))
}

/// After a refused callback, the real pair still works: nothing refused spent the code.
async fn still_finishes(oidc: &Oidc, query: &str, cookie: &str) {
    let r = oidc.finish("test", Some(query), &[cookie]).await;
    assert_eq!(r.unwrap().identity.subject, "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_without_its_flow_cookie_is_refused() {
    let Some((_server, oidc, query, cookie)) = bob().await else {
        return;
    };
    // A callback forged into another browser, or replayed without the cookie.
    let r = oidc.finish("test", Some(&query), &[]).await;
    assert!(matches!(r, Err(OidcFailure::NoFlow)), "{r:?}");
    // A cookie sealed for another provider id does not open there.
    let r = oidc.finish("other", Some(&query), &[cookie.as_str()]).await;
    assert!(matches!(r, Err(OidcFailure::UnknownProvider)), "{r:?}");
    // A cookie that is not sealed by this server.
    let r = oidc
        .finish("test", Some(&query), &["__Host-baton-oidc-test=forged"])
        .await;
    assert!(matches!(r, Err(OidcFailure::NoFlow)), "{r:?}");
    still_finishes(&oidc, &query, &cookie).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_with_another_state_is_refused() {
    let Some((_server, oidc, query, cookie)) = bob().await else {
        return;
    };
    // Another flow's cookie (the attacker's own flow, planted): its state is not this one's.
    let other = oidc.start("test", None, None).await.unwrap();
    let other_cookie = cookie_line(&other.set_cookie);
    let r = oidc
        .finish("test", Some(&query), &[other_cookie.as_str()])
        .await;
    assert!(matches!(r, Err(OidcFailure::StateMismatch)), "{r:?}");
    still_finishes(&oidc, &query, &cookie).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_without_a_state_is_refused() {
    let Some((_server, oidc, query, cookie)) = bob().await else {
        return;
    };
    let stripped: String = query
        .split('&')
        .filter(|p| !p.starts_with("state="))
        .collect::<Vec<_>>()
        .join("&");
    let r = oidc
        .finish("test", Some(&stripped), &[cookie.as_str()])
        .await;
    assert!(matches!(r, Err(OidcFailure::StateMismatch)), "{r:?}");
    // The state given twice (the right one and another): refused too.
    let doubled = format!("{query}&state=another");
    let r = oidc
        .finish("test", Some(&doubled), &[cookie.as_str()])
        .await;
    assert!(matches!(r, Err(OidcFailure::StateMismatch)), "{r:?}");
    still_finishes(&oidc, &query, &cookie).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_cancelling_is_access_denied() {
    let Some(server) = OidcServer::start(&[client("app")], Duration::from_secs(3600)) else {
        return;
    };
    let oidc = oidc_for(&server, "app").await;
    let (query, cookie) = through_provider(&server, &oidc, None, "carol", true).await;
    let r = oidc.finish("test", Some(&query), &[cookie.as_str()]).await;
    let failure = r.unwrap_err();
    assert_eq!(failure.code(), "access_denied", "{failure:?}");
}

/// The `nonce` claim of a real ID token (read, not checked: the test hands it back).
fn nonce_of(id_token: &str) -> String {
    use base64::Engine as _;
    let payload = id_token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["nonce"].as_str().unwrap().to_owned()
}

/// A whole sign-in of `login` through `oidc`.
async fn signed_in(server: &OidcServer, oidc: &Oidc, login: &str) -> baton_oidc::Finished {
    let (query, cookie) = through_provider(server, oidc, None, login, false).await;
    oidc.finish("test", Some(&query), &[cookie.as_str()])
        .await
        .unwrap()
}

/// A real ID token: a whole sign-in of `login` through `oidc`.
async fn id_token(server: &OidcServer, oidc: &Oidc, login: &str) -> String {
    signed_in(server, oidc, login).await.id_token.unwrap()
}

fn refused(r: Result<baton_oidc::Identity, OidcFailure>, why: &str) {
    match r {
        Err(OidcFailure::InvalidIdToken(e)) => eprintln!("{why}: refused ({e})"),
        other => panic!("{why}: expected an invalid ID token, got {other:?}"),
    }
}

/// A provider (its ID tokens living `ttl`) with a client "app" and "other", the app's
/// sign-in, and a real ID token of "frank" for the app with its nonce.
async fn frank(ttl: Duration) -> Option<(OidcServer, Oidc, String, String)> {
    let server = OidcServer::start(&[client("app"), client("other")], ttl)?;
    let app = oidc_for(&server, "app").await;
    let own = id_token(&server, &app, "frank").await;
    let nonce = nonce_of(&own);
    assert_eq!(
        app.check_id_token("test", &own, &nonce).unwrap().subject,
        "frank"
    );
    Some((server, app, own, nonce))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_with_another_nonce_is_refused() {
    let Some((_server, app, own, _)) = frank(Duration::from_secs(3600)).await else {
        return;
    };
    refused(
        app.check_id_token("test", &own, "another-nonce"),
        "wrong nonce",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_for_another_client_is_refused() {
    let Some((server, app, _, _)) = frank(Duration::from_secs(3600)).await else {
        return;
    };
    // The provider's own, real token, but for another client (audience).
    let other = oidc_for(&server, "other").await;
    let foreign = id_token(&server, &other, "frank").await;
    refused(
        app.check_id_token("test", &foreign, &nonce_of(&foreign)),
        "another client",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_of_another_issuer_is_refused() {
    let Some((_server, app, _, _)) = frank(Duration::from_secs(3600)).await else {
        return;
    };
    // Another issuer's real token, for a client of the same name.
    let Some(elsewhere) = OidcServer::start(&[client("app")], Duration::from_secs(3600)) else {
        return;
    };
    let app_elsewhere = oidc_for(&elsewhere, "app").await;
    let elsewhere_token = id_token(&elsewhere, &app_elsewhere, "frank").await;
    refused(
        app.check_id_token("test", &elsewhere_token, &nonce_of(&elsewhere_token)),
        "another issuer",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_with_a_forged_signature_is_refused() {
    let Some((_server, app, own, nonce)) = frank(Duration::from_secs(3600)).await else {
        return;
    };
    // A signature that is not the provider's: one character of it changed.
    let (signed, signature) = own.rsplit_once('.').unwrap();
    let mut signature: Vec<char> = signature.chars().collect();
    signature[5] = if signature[5] == 'A' { 'B' } else { 'A' };
    let forged = format!("{signed}.{}", signature.into_iter().collect::<String>());
    refused(
        app.check_id_token("test", &forged, &nonce),
        "forged signature",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_id_token_is_refused() {
    // This provider's tokens live 2 s.
    let Some((_server, app, own, nonce)) = frank(Duration::from_secs(2)).await else {
        return;
    };
    tokio::time::sleep(Duration::from_millis(3100)).await;
    refused(app.check_id_token("test", &own, &nonce), "expired");
}

/// The provider rotates its signing keys (restarted with new ones): the next sign-in's ID
/// token names a key the document read at start did not have, so the keys are fetched again
/// and the sign-in goes through, with no restart of the application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_provider_keys_are_fetched_when_a_token_names_one() {
    let Some(mut server) = OidcServer::start(&[client("app")], Duration::from_secs(3600)) else {
        return;
    };
    let oidc = oidc_for(&server, "app").await;
    assert_eq!(id_token_subject(&server, &oidc, "gina").await, "gina");
    server.restart();
    assert_eq!(id_token_subject(&server, &oidc, "gina").await, "gina");
}

async fn id_token_subject(server: &OidcServer, oidc: &Oidc, login: &str) -> String {
    signed_in(server, oidc, login).await.identity.subject
}

/// The provider as a plain OAuth 2.0 one: `/auth`, `/token`, and its user-info endpoint `/me`,
/// the fields at `endpoints`.
async fn plain_for(server: &OidcServer, endpoints: OAuth2Endpoints) -> Oidc {
    let config = ProviderConfig::oauth2("test", "Plain", "app", endpoints)
        .with_secret("app-secret")
        // The provider's user info answers access tokens issued for `openid`.
        .with_scopes(["openid", "email", "profile"]);
    Oidc::discover(
        APP,
        "/auth",
        vec![config],
        &KEY,
        OidcOptions::new().with_root_certificate(server.ca_der().to_vec()),
    )
    .await
    .unwrap()
}

fn endpoints_of(server: &OidcServer) -> OAuth2Endpoints {
    let issuer = server.issuer();
    OAuth2Endpoints::new(
        format!("{issuer}/auth"),
        format!("{issuer}/token"),
        format!("{issuer}/me"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_oauth2_provider_names_the_user_through_its_user_info() {
    let Some(server) = OidcServer::start(&[client("app")], Duration::from_secs(3600)) else {
        return;
    };
    let oidc = plain_for(&server, endpoints_of(&server)).await;
    let started = oidc.start("test", Some("/after"), None).await.unwrap();
    assert!(started.redirect.contains("code_challenge_method=S256"));
    assert!(
        !started.redirect.contains("nonce="),
        "no ID token, so no nonce: {}",
        started.redirect
    );
    let (query, cookie) = through_provider(&server, &oidc, Some("/after"), "hana", false).await;
    let finished = oidc
        .finish("test", Some(&query), &[cookie.as_str()])
        .await
        .unwrap();
    assert_eq!(finished.identity.issuer, server.issuer());
    assert_eq!(finished.identity.subject, "hana");
    assert_eq!(
        finished.identity.email.as_deref(),
        Some("hana@example.test")
    );
    assert_eq!(finished.identity.name.as_deref(), Some("hana"));
    assert_eq!(finished.identity.email_verified, None);
    assert_eq!(finished.id_token, None);
    assert_eq!(finished.return_to, "/after");
    // The code again: refused by the provider, as with OpenID Connect.
    let again = oidc.finish("test", Some(&query), &[cookie.as_str()]).await;
    assert!(
        matches!(again, Err(OidcFailure::CodeRefused(_))),
        "{again:?}"
    );
    // The state is checked the same way.
    let other = oidc.start("test", None, None).await.unwrap();
    let other_cookie = cookie_line(&other.set_cookie);
    let r = oidc
        .finish("test", Some(&query), &[other_cookie.as_str()])
        .await;
    assert!(matches!(r, Err(OidcFailure::StateMismatch)), "{r:?}");
    // No ID tokens to check from such a provider.
    let r = oidc.check_id_token("test", "a.b.c", "nonce");
    assert!(matches!(r, Err(OidcFailure::InvalidIdToken(_))), "{r:?}");

    // A mapping that names a field the answer does not have: a clear failure, no user.
    let wrong = plain_for(&server, endpoints_of(&server).subject_at("/response/id")).await;
    let (query, cookie) = through_provider(&server, &wrong, None, "hana", false).await;
    let r = wrong.finish("test", Some(&query), &[cookie.as_str()]).await;
    let failure = r.unwrap_err();
    assert_eq!(failure.code(), "invalid_user_info", "{failure:?}");

    // A user-info endpoint that refuses the token (here: one that does not exist).
    let issuer = server.issuer();
    let refusing = plain_for(
        &server,
        OAuth2Endpoints::new(
            format!("{issuer}/auth"),
            format!("{issuer}/token"),
            format!("{issuer}/no-such-endpoint"),
        ),
    )
    .await;
    let (query, cookie) = through_provider(&server, &refusing, None, "hana", false).await;
    let r = refusing
        .finish("test", Some(&query), &[cookie.as_str()])
        .await;
    let failure = r.unwrap_err();
    assert_eq!(failure.code(), "invalid_user_info", "{failure:?}");
}
