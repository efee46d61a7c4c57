//! The resource server against the real login app over TCP: the login app is the issuer
//! (its `/.well-known/openid-configuration` names its JWKS), the resource server finds the
//! keys from the issuer URL alone, and its routes and its gRPC twin take the login app's
//! tokens.

use std::net::SocketAddr;

use baton_bearer::jwks::JwksOptions;
use baton_token::{Issuer, NoCustomClaims};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

async fn call(
    url: &str,
    method: Method,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Option<String>, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map_or(Full::default(), |b| Full::from(b.to_string()));
    let res = client.request(req.body(body).unwrap()).await.unwrap();
    let status = res.status();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        challenge,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The login app on a free loopback port, its own issuer: `(issuer URL, its signing keys)`.
async fn login_app() -> (String, baton_token::KeyRing) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let config = login_app::Config {
        issuer: Some(issuer.clone()),
        public_urls: vec![issuer.clone()],
        ..login_app::Config::default()
    };
    let built = login_app::build(&config).await.unwrap();
    tokio::spawn(login_app::serve(
        listener,
        built.router,
        std::future::pending(),
    ));
    (issuer, built.keys)
}

async fn serve_api(verifier: baton_token::Verifier) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = resource_server::router(verifier).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn the_api_takes_the_login_apps_tokens_found_through_discovery() {
    let (issuer, keys) = login_app().await;

    // The login app publishes where its keys are.
    let (status, _, document) = call(
        &format!("{issuer}/.well-known/openid-configuration"),
        Method::GET,
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["issuer"], issuer.as_str());
    assert_eq!(
        document["jwks_uri"],
        format!("{issuer}/.well-known/jwks.json").as_str()
    );

    // A user of the login app.
    let credentials = json!({"username": "dana", "password": "correct horse battery"});
    let (status, _, _) = call(
        &format!("{issuer}/auth/register"),
        Method::POST,
        None,
        Some(credentials.clone()),
    )
    .await;
    assert!(status.is_success(), "register: {status}");
    let (status, _, body) = call(
        &format!("{issuer}/auth/login"),
        Method::POST,
        None,
        Some(credentials),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();

    // The resource server knows only the issuer's URL.
    let verifier = resource_server::verifier(&issuer, JwksOptions::new().dangerous_allow_http())
        .await
        .unwrap();
    let api = format!("http://{}", serve_api(verifier.clone()).await);

    let (status, _, body) = call(&format!("{api}/api/me"), Method::GET, Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["sub"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );

    // No token, a token of another issuer: 401 with the challenge.
    let (status, challenge, _) = call(&format!("{api}/api/me"), Method::GET, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.unwrap().starts_with("Bearer"));
    let stranger = Issuer::new(
        baton_token::KeySet::new(
            baton_token::Key::generate("k1", baton_token::Algorithm::ES256).unwrap(),
        )
        .unwrap(),
    )
    .with_iss(issuer.clone());
    let forged = stranger
        .issue("dana", None, NoCustomClaims {})
        .unwrap()
        .token;
    let (status, challenge, _) =
        call(&format!("{api}/api/me"), Method::GET, Some(&forged), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.unwrap().contains("invalid_token"));

    // The notes need a scope the login app's tokens do not carry.
    let (status, challenge, _) =
        call(&format!("{api}/api/notes"), Method::GET, Some(&token), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(challenge.unwrap().contains("insufficient_scope"));
    // A token the issuer signs with that scope (its own keys) is taken.
    let signer = Issuer::new(keys).with_iss(issuer.clone());
    let mut claims = signer.claims("svc-reports", NoCustomClaims {}).unwrap();
    claims.scope = Some(resource_server::NOTES_SCOPE.to_owned());
    let scoped = signer.sign(&claims).unwrap();
    let (status, _, body) = call(
        &format!("{api}/api/notes"),
        Method::GET,
        Some(&scoped),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["owner"], "svc-reports");

    // Unknown paths are 404, token or not.
    let (status, _, _) = call(&format!("{api}/nope"), Method::GET, None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The gRPC twin takes the same tokens.
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = listener.local_addr().unwrap();
    tokio::spawn(resource_server::serve_grpc(listener, verifier));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let refused = client
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(HealthCheckRequest::default());
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let answer = client.check(req).await.unwrap().into_inner();
    assert_eq!(answer.status, ServingStatus::Serving as i32);
}

#[tokio::test]
async fn an_issuer_url_the_document_does_not_name_is_refused_with_the_reason() {
    let (issuer, _) = login_app().await;
    // The same server under another name: its document names the other one.
    let other = issuer.replace("127.0.0.1", "localhost");
    let err = resource_server::verifier(&other, JwksOptions::new().dangerous_allow_http())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("another issuer"), "{err}");
    // Plain HTTP is refused unless allowed.
    let err = resource_server::verifier(&issuer, JwksOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, baton_bearer::jwks::JwksError::Insecure(_)),
        "{err}"
    );
    // No discovery document at all.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let empty = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, axum::Router::new()).await });
    let err = resource_server::verifier(&empty, JwksOptions::new().dangerous_allow_http())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("404") || err.contains("status"), "{err}");
}
