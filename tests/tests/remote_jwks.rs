//! `RemoteJwks` against the login app's `/.well-known/jwks.json` over real TCP, through key
//! rotation on the issuer.

use std::time::{Duration, Instant};

use baton::bearer::jwks::{JwksOptions, RemoteJwks};
use baton::token::{Algorithm, ErrorKind, Key, NoCustomClaims, Verifier};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

async fn post(base: &str, path: &str, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(Full::from(body.to_string()))
        .unwrap();
    let res = client.request(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

async fn login(base: &str) -> String {
    let (status, body) = post(
        base,
        "/auth/login",
        json!({"username": "erin", "password": "correct horse"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    body["access_token"].as_str().unwrap().to_owned()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_follow_the_issuer_through_rotation() {
    let config = login_app::Config {
        alg: Algorithm::EdDSA,
        ..login_app::Config::default()
    };
    let (app, ring) = login_app::app_with_keys(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(login_app::serve(listener, app, async {
        let _ = stopped.await;
    }));
    let (status, _) = post(
        &base,
        "/auth/register",
        json!({"username": "erin", "password": "correct horse"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let options = JwksOptions::new()
        .with_ttl(Duration::from_millis(300))
        .with_min_refetch_interval(Duration::from_millis(500))
        .with_miss_ttl(Duration::from_secs(5));
    let jwks = RemoteJwks::start(
        format!("{base}/.well-known/jwks.json").parse().unwrap(),
        options,
    )
    .await
    .unwrap();
    let verifier: Verifier = jwks.verifier().with_leeway(Duration::ZERO);

    let token = login(&base).await;
    assert_eq!(
        verifier.verify::<NoCustomClaims>(&token).unwrap().sub.len(),
        18
    );

    // The issuer publishes its next key first: the periodic fetch learns it, and once it
    // signs, its tokens verify at the first try.
    ring.update(|set| set.with_next(Key::generate("next", Algorithm::EdDSA)?))
        .unwrap();
    let fetched = jwks.fetches();
    eventually("a periodic fetch", || jwks.fetches() > fetched + 1).await;
    assert!(jwks.keys().load().get("next").is_some());
    ring.update(|set| set.promote_next()).unwrap();
    let token = login(&base).await;
    assert!(
        verifier.verify::<NoCustomClaims>(&token).is_ok(),
        "published before use"
    );

    // A key used without being published: with no periodic fetch due, the first token is
    // refused and triggers one refetch; then tokens verify.
    let lazy = JwksOptions::new()
        .with_ttl(Duration::from_secs(3600))
        .with_min_refetch_interval(Duration::from_millis(200))
        .with_miss_ttl(Duration::from_secs(5));
    let jwks = RemoteJwks::start(
        format!("{base}/.well-known/jwks.json").parse().unwrap(),
        lazy,
    )
    .await
    .unwrap();
    let verifier: Verifier = jwks.verifier().with_leeway(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(250)).await;
    ring.update(|set| set.rotate_to(Key::generate("surprise", Algorithm::EdDSA)?))
        .unwrap();
    let token = login(&base).await;
    let err = verifier.verify::<NoCustomClaims>(&token).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownKey);
    eventually("the refetch", || {
        verifier.verify::<NoCustomClaims>(&token).is_ok()
    })
    .await;
    assert_eq!(jwks.fetches(), 2, "the start and one refetch");

    // Unknown kids from an attacker cannot drive a fetch storm: at most one fetch per
    // interval, one in flight.
    let before = jwks.fetches();
    let header = |kid: usize| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!(r#"{{"alg":"EdDSA","kid":"evil-{kid}"}}"#))
    };
    let started = Instant::now();
    for kid in 0..300 {
        let forged = format!("{}.{}.AAAA", header(kid), token.split('.').nth(1).unwrap());
        assert_eq!(
            verifier
                .verify::<NoCustomClaims>(&forged)
                .unwrap_err()
                .kind(),
            ErrorKind::UnknownKey
        );
        if kid % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let elapsed = started.elapsed().as_millis() as u64;
    let extra = jwks.fetches() - before;
    assert!(
        extra <= elapsed / 200 + 1,
        "{extra} fetches in {elapsed} ms"
    );
    assert!(verifier.verify::<NoCustomClaims>(&token).is_ok());

    // The issuer goes away: fetches fail, the cached keys keep working.
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    assert!(jwks.refetch().await.is_err());
    assert!(verifier.verify::<NoCustomClaims>(&token).is_ok());
}
