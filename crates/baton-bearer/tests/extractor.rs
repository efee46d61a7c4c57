//! The axum extractor over a real server: the claims type the layer verifies into and the one
//! a handler asks for must agree, and a mix-up is a loud 500, never a 401 for a valid token.
#![cfg(feature = "axum")]

use axum::{Router, routing::get};
use baton_bearer::{Authenticated, BearerVerifyLayer};
use baton_token::{Algorithm, Issuer, Key, KeySet, NoCustomClaims};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct AppClaims {
    tenant: String,
}

// Through `Deref`: the extractor reads as the claims.
async fn plain(claims: Authenticated) -> String {
    claims.sub.clone()
}

async fn typed(Authenticated(claims): Authenticated<AppClaims>) -> String {
    format!("{} of {}", claims.sub, claims.custom.tenant)
}

async fn optional(claims: Option<Authenticated<NoCustomClaims>>) -> String {
    claims.map_or_else(|| "anonymous".to_owned(), |c| c.sub.clone())
}

/// Serves `app` on a free loopback port; answers `(status, body)` of `GET path`.
async fn get_with(app: Router, path: &str, token: Option<&str>) -> (u16, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", "127.0.0.1");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let res = send
        .send_request(
            req.body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    server.abort();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn a_handler_asking_for_another_claims_type_is_a_500_not_a_401() {
    let issuer = Issuer::new(KeySet::new(Key::generate("k1", Algorithm::HS256).unwrap()).unwrap());
    let token = issuer
        .issue(
            "alice",
            None,
            AppClaims {
                tenant: "acme".into(),
            },
        )
        .unwrap()
        .token;
    let layer = BearerVerifyLayer::new(issuer.verifier()).with_claims::<AppClaims>();
    let app = Router::new()
        .route("/plain", get(plain))
        .route("/typed", get(typed))
        .route("/optional", get(optional))
        .layer(layer.clone().optional());

    // The type the layer verified into: the claims.
    assert_eq!(
        get_with(app.clone(), "/typed", Some(&token)).await,
        (200, "alice of acme".to_owned())
    );
    // Another type behind a layer that verified the token: the application's mix-up, loud in
    // a debug build; a release build, without the per-request marker, answers 401 (and logs
    // a warning once).
    let (status, body) = get_with(app.clone(), "/plain", Some(&token)).await;
    let (mixed_up, optional_mixed_up) = if cfg!(debug_assertions) {
        (500, 500)
    } else {
        (401, 200)
    };
    assert_eq!(status, mixed_up, "{body}");
    if cfg!(debug_assertions) {
        assert!(body.contains("server_error"), "{body}");
    }
    let (status, _) = get_with(app.clone(), "/optional", Some(&token)).await;
    assert_eq!(status, optional_mixed_up);
    // No token at all is still the caller's 401, or `None` for the optional extractor.
    let (status, body) = get_with(app.clone(), "/plain", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("bearer token required"), "{body}");
    assert_eq!(
        get_with(app, "/optional", None).await,
        (200, "anonymous".to_owned())
    );
}
