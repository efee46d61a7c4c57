//! `BearerVerifyLayer` around an axum `Router`, a plain hyper service and a tonic service,
//! each served on 127.0.0.1 over real TCP.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use baton_bearer::{Authenticated, BearerVerifyLayer};
use baton_token::{Algorithm, Claims, Issuer, Key, KeySet, NoCustomClaims};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tower::Layer;

fn issuer() -> Issuer {
    Issuer::new(KeySet::new(Key::generate("k1", Algorithm::ES256).unwrap()).unwrap())
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

async fn get_json(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = Request::get(format!("http://{addr}{path}"));
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let res = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let challenge = res
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, challenge, json)
}

#[tokio::test]
async fn axum_router_over_tcp() {
    let issuer = issuer();
    async fn me(Authenticated(claims): Authenticated) -> axum::Json<Value> {
        axum::Json(serde_json::json!({ "sub": claims.sub }))
    }
    async fn hello(user: Option<Authenticated>) -> String {
        user.map_or("hello stranger".to_owned(), |Authenticated(c)| {
            format!("hello {}", c.sub)
        })
    }
    let app = Router::new()
        .route("/api/me", get(me))
        .layer(BearerVerifyLayer::new(issuer.verifier()))
        .merge(
            Router::new()
                .route("/hello", get(hello))
                .layer(BearerVerifyLayer::new(issuer.verifier()).optional()),
        );
    let (listener, addr) = listener().await;
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (status, challenge, body) = get_json(addr, "/api/me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge, r#"Bearer realm="baton""#);
    assert_eq!(body["error"], "unauthorized");

    let token = issuer
        .issue("alice", None, NoCustomClaims {})
        .unwrap()
        .token;
    let (status, _, body) = get_json(addr, "/api/me", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["sub"], "alice");

    let (status, challenge, body) = get_json(addr, "/api/me", Some(&format!("{token}x"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert_eq!(body["error"], "invalid_token");

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let res = client
        .get(format!("http://{addr}/hello").parse().unwrap())
        .await
        .unwrap();
    let text = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&text[..], b"hello stranger");
}

#[tokio::test]
async fn plain_hyper_service_over_tcp() {
    let issuer = issuer();
    let (listener, addr) = listener().await;
    let layer = BearerVerifyLayer::new(issuer.verifier());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = layer.layer(tower::service_fn(
                |req: Request<hyper::body::Incoming>| async move {
                    let sub = req
                        .extensions()
                        .get::<Arc<Claims<NoCustomClaims>>>()
                        .unwrap()
                        .sub
                        .clone();
                    Ok::<_, Infallible>(Response::new(Full::<Bytes>::from(format!(
                        "{{\"sub\":\"{sub}\"}}"
                    ))))
                },
            ));
            tokio::spawn(async move {
                let service = hyper_util::service::TowerToHyperService::new(service);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let (status, challenge, _) = get_json(addr, "/", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge, r#"Bearer realm="baton""#);
    let token = issuer.issue("bob", None, NoCustomClaims {}).unwrap().token;
    let (status, _, body) = get_json(addr, "/", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["sub"], "bob");
}

#[tokio::test]
async fn tonic_service_over_tcp() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let issuer = issuer();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let (listener, addr) = listener().await;
    let layer = BearerVerifyLayer::new(issuer.verifier());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);

    let status = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(status.message(), "bearer token required");
    assert_eq!(
        status.metadata().get("www-authenticate").unwrap(),
        r#"Bearer realm="baton""#
    );

    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    req.metadata_mut()
        .insert("authorization", "Bearer not.a.token".parse().unwrap());
    let status = client.check(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(status.message(), "token header is not valid");

    let token = issuer
        .issue("carol", None, NoCustomClaims {})
        .unwrap()
        .token;
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let res = client.check(req).await.unwrap().into_inner();
    assert_eq!(
        res.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}
