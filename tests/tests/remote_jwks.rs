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
        .with_miss_ttl(Duration::from_secs(5))
        .dangerous_allow_http();
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
        .with_miss_ttl(Duration::from_secs(5))
        .dangerous_allow_http();
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

/// A JWKS endpoint over TLS with a certificate from a test certificate authority, serving
/// whatever `jwks` holds.
async fn tls_jwks_server(jwks: std::sync::Arc<std::sync::Mutex<String>>) -> (u16, Vec<u8>) {
    use std::sync::Arc;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                break;
            };
            let (acceptor, jwks) = (acceptor.clone(), jwks.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_req| {
                    let jwks = jwks.lock().unwrap().clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(jwks)),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, ca.der().to_vec())
}

/// Keys come over HTTPS from an endpoint whose certificate a configured root vouches for;
/// the same endpoint without that root, and a plain `http://` URL, are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_come_over_https_and_plain_http_is_refused() {
    let key = baton_token::Key::generate("tls-key", baton_token::Algorithm::ES256).unwrap();
    let set = baton_token::KeySet::new(key).unwrap();
    let (port, ca) =
        tls_jwks_server(std::sync::Arc::new(std::sync::Mutex::new(set.jwks_json()))).await;
    let uri: http::Uri = format!("https://localhost:{port}/.well-known/jwks.json")
        .parse()
        .unwrap();
    let jwks = RemoteJwks::start(uri.clone(), JwksOptions::new().with_root_certificate(ca))
        .await
        .expect("fetched over TLS");
    assert!(jwks.keys().load().jwks_json().contains("tls-key"));
    // Without the test CA, the certificate is nobody's word.
    let untrusted = RemoteJwks::start(uri, JwksOptions::new()).await;
    assert!(
        matches!(
            untrusted,
            Err(baton::bearer::jwks::JwksError::Unreachable(_))
        ),
        "{untrusted:?}"
    );
    // Plain http is refused before any request.
    let plain = RemoteJwks::start(
        format!("http://127.0.0.1:{port}/jwks").parse().unwrap(),
        JwksOptions::new(),
    )
    .await;
    assert!(
        matches!(plain, Err(baton::bearer::jwks::JwksError::Insecure(_))),
        "{plain:?}"
    );
}

/// A flood of tokens naming junk keys does not use up the refetches: a key the issuer really
/// rotated to is still found within the refetch interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_key_ids_cannot_starve_a_real_rotation() {
    use baton_token::{Algorithm, Issuer, Key, KeySet, NoCustomClaims};
    let first = Key::generate("first", Algorithm::ES256).unwrap();
    let served = std::sync::Arc::new(std::sync::Mutex::new(
        KeySet::new(first).unwrap().jwks_json(),
    ));
    let (port, ca) = tls_jwks_server(served.clone()).await;
    let options = JwksOptions::new()
        .with_root_certificate(ca)
        .with_ttl(Duration::from_secs(3600))
        .with_min_refetch_interval(Duration::from_millis(200))
        .with_miss_ttl(Duration::from_secs(60));
    let jwks = RemoteJwks::start(
        format!("https://localhost:{port}/jwks").parse().unwrap(),
        options,
    )
    .await
    .unwrap();
    let verifier = jwks.verifier();
    // 1,100 junk key ids, more than the misses remembered.
    for i in 0..1100 {
        let junk = Key::hmac(format!("junk-{i}"), Algorithm::HS256, [7u8; 32]).unwrap();
        let token = Issuer::new(KeySet::new(junk).unwrap())
            .issue("mallory", None, NoCustomClaims {})
            .unwrap()
            .token;
        assert!(verifier.verify::<NoCustomClaims>(&token).is_err());
    }
    // The issuer rotates.
    let second = KeySet::new(Key::generate("second", Algorithm::ES256).unwrap()).unwrap();
    *served.lock().unwrap() = second.jwks_json();
    let issuer = Issuer::new(second);
    let token = issuer
        .issue("alice", None, NoCustomClaims {})
        .unwrap()
        .token;
    let started = std::time::Instant::now();
    loop {
        if verifier.verify::<NoCustomClaims>(&token).is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the real key was never fetched"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "real key accepted {:?} after the rotation",
        started.elapsed()
    );
}

/// The natural one-liner keeps its keys fresh: the handle is dropped at once and only the
/// verifier lives, the issuer rotates to a key it never published before, and the periodic
/// fetch (not an unknown-key refetch: those are off here) brings the new key in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_alone_keeps_the_keys_fresh() {
    let config = login_app::Config {
        alg: Algorithm::EdDSA,
        ..login_app::Config::default()
    };
    let (app, ring) = login_app::app_with_keys(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(login_app::serve(listener, app, std::future::pending()));
    let (status, _) = post(
        &base,
        "/auth/register",
        json!({"username": "erin", "password": "correct horse"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let options = JwksOptions::new()
        .with_ttl(Duration::from_millis(300))
        // No refetch on an unknown key within the test: only the periodic fetch can help.
        .with_min_refetch_interval(Duration::from_secs(3600))
        .dangerous_allow_http();
    let verifier: Verifier = RemoteJwks::start(
        format!("{base}/.well-known/jwks.json").parse().unwrap(),
        options,
    )
    .await
    .unwrap()
    .verifier()
    .with_leeway(Duration::ZERO);
    let token = login(&base).await;
    assert!(verifier.verify::<NoCustomClaims>(&token).is_ok());
    ring.update(|set| set.rotate_to(Key::generate("rotated", Algorithm::EdDSA)?))
        .unwrap();
    let token = login(&base).await;
    eventually("the rotated key, by the periodic fetch", || {
        verifier.verify::<NoCustomClaims>(&token).is_ok()
    })
    .await;
}

/// A plain HTTP server answering `/.well-known/openid-configuration` with what `document`
/// holds.
async fn discovery_server(document: std::sync::Arc<std::sync::Mutex<String>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                break;
            };
            let document = document.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<_>| {
                    let body = if req.uri().path() == "/.well-known/openid-configuration" {
                        Some(document.lock().unwrap().clone())
                    } else {
                        None
                    };
                    async move {
                        let mut res = hyper::Response::new(Full::new(Bytes::from(
                            body.clone().unwrap_or_default(),
                        )));
                        if body.is_none() {
                            *res.status_mut() = StatusCode::NOT_FOUND;
                        }
                        Ok::<_, std::convert::Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    base
}

/// OpenID discovery: the issuer's document names its `jwks_uri`, whose keys then verify the
/// issuer's tokens; a document that is not JSON, names another issuer, or has no `jwks_uri`
/// is refused with an error naming what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_found_through_the_issuers_discovery_document() {
    let (app, _ring) = login_app::app_with_keys(&login_app::Config::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let login_base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(login_app::serve(listener, app, std::future::pending()));
    let document = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let issuer = discovery_server(document.clone()).await;
    let options = JwksOptions::new().dangerous_allow_http();
    let set = |value: serde_json::Value| *document.lock().unwrap() = value.to_string();

    set(json!({"issuer": issuer, "jwks_uri": format!("{login_base}/.well-known/jwks.json")}));
    let jwks = RemoteJwks::discover(&format!("{issuer}/"), options.clone())
        .await
        .expect("discovered");
    let (status, _) = post(
        &login_base,
        "/auth/register",
        json!({"username": "erin", "password": "correct horse"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let token = login(&login_base).await;
    assert!(jwks.verifier().verify::<NoCustomClaims>(&token).is_ok());

    let refused = |what: &'static str| {
        let (issuer, options) = (issuer.clone(), options.clone());
        async move {
            match RemoteJwks::discover(&issuer, options).await {
                Err(baton::bearer::jwks::JwksError::Invalid(why)) => why,
                other => panic!("{what}: {other:?}"),
            }
        }
    };
    *document.lock().unwrap() = "<html>not json</html>".to_owned();
    assert!(refused("not JSON").await.contains("not JSON"));
    set(
        json!({"issuer": "https://elsewhere.example", "jwks_uri": format!("{login_base}/.well-known/jwks.json")}),
    );
    assert!(refused("another issuer").await.contains("another issuer"));
    set(json!({"issuer": issuer}));
    assert!(refused("no jwks_uri").await.contains("jwks_uri"));
    // A JWKS of junk keys: refused, with why.
    set(
        json!({"issuer": issuer, "jwks_uri": format!("{issuer}/.well-known/openid-configuration")}),
    );
    assert!(!refused("junk keys").await.is_empty());
    // Plain http is refused before any request, unless allowed.
    let plain = RemoteJwks::discover(&issuer, JwksOptions::new()).await;
    assert!(
        matches!(plain, Err(baton::bearer::jwks::JwksError::Insecure(_))),
        "{plain:?}"
    );
}
