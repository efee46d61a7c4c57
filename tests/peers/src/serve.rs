//! The variants' servers: one route, `GET /api/me`, answering `{"sub": ...}` from whatever the
//! authentication layer established, on a one-thread tokio runtime.

use std::sync::Arc;
use std::time::Duration;

use baton::bearer::BearerVerifyLayer;
use baton::token::{Algorithm, Claims, Issuer, Key, KeySet, NoCustomClaims, TokenCache};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::announce;

const ISS: &str = "https://bench.baton.test";
const AUD: &str = "api";
/// The HS256 secret, shared by both HS256 variants (32 bytes).
const SECRET: &str = "bench-secret-bench-secret-bench!";

pub(crate) fn serve(variant: &str, redis_url: Option<&str>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        match variant {
            // The bare servers get the same requests (an ES256 token they ignore), so every
            // variant reads the same bytes.
            "bare" => {
                let app = axum::Router::new().route("/api/me", axum::routing::get(me_bare));
                announce(
                    port,
                    &format!("Authorization: Bearer {}", issuer(Algorithm::ES256).1),
                );
                axum::serve(listener, app).await.expect("serve");
            }
            "axum07-bare" => {
                let app = axum07::Router::new().route("/api/me", axum07::routing::get(me_bare07));
                announce(
                    port,
                    &format!("Authorization: Bearer {}", issuer(Algorithm::ES256).1),
                );
                axum07::serve(listener, app).await.expect("serve");
            }
            v if v.starts_with("baton-") => {
                let (issuer, token) = issuer(algorithm(v));
                let mut layer = BearerVerifyLayer::new(issuer.verifier());
                if v.ends_with("-cache") {
                    layer = layer.with_cache(TokenCache::new(100_000, 64 << 20));
                }
                let app = axum::Router::new()
                    .route("/api/me", axum::routing::get(me_baton))
                    .layer(layer);
                announce(port, &format!("Authorization: Bearer {token}"));
                axum::serve(listener, app).await.expect("serve");
            }
            v if v.starts_with("jwt-authorizer-") => {
                use jwt_authorizer::{IntoLayer, JwtAuthorizer, RegisteredClaims, Validation};
                let alg = algorithm(v);
                let (issuer, token) = issuer(alg);
                let builder: JwtAuthorizer<RegisteredClaims> = match alg {
                    Algorithm::HS256 => JwtAuthorizer::from_secret(SECRET),
                    _ => JwtAuthorizer::from_jwks_text(&issuer.keys().load().jwks_json()),
                };
                let layer = builder
                    .validation(Validation::new().iss(&[ISS]).aud(&[AUD]))
                    .build()
                    .await
                    .expect("jwt-authorizer")
                    .into_layer();
                let app = axum07::Router::new()
                    .route("/api/me", axum07::routing::get(me_jwt_authorizer))
                    .layer(layer);
                announce(port, &format!("Authorization: Bearer {token}"));
                axum07::serve(listener, app).await.expect("serve");
            }
            "tower-sessions-redis" => {
                use tower_sessions::SessionManagerLayer;
                use tower_sessions_redis_store::RedisStore;
                use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
                let url = redis_url.expect("--redis-url for tower-sessions");
                let pool = Pool::new(
                    Config::from_url(url).expect("redis url"),
                    None,
                    None,
                    None,
                    2,
                )
                .expect("fred pool");
                let _connection = pool.init().await.expect("connect to redis");
                let app = axum::Router::new()
                    .route("/api/me", axum::routing::get(me_session))
                    .route("/login", axum::routing::post(login_session))
                    .layer(SessionManagerLayer::new(RedisStore::new(pool)).with_secure(false));
                let server = tokio::spawn(async move {
                    axum::serve(listener, app).await.expect("serve");
                });
                let cookie = session_cookie(port).await;
                announce(port, &format!("Cookie: {cookie}"));
                server.await.expect("server task");
            }
            other => panic!("unknown variant {other}"),
        }
    });
}

fn algorithm(variant: &str) -> Algorithm {
    if variant.contains("hs256") {
        Algorithm::HS256
    } else if variant.contains("es256") {
        Algorithm::ES256
    } else if variant.contains("eddsa") {
        Algorithm::EdDSA
    } else {
        panic!("no algorithm in {variant}")
    }
}

/// An issuer with a fresh key (the HS256 one from [`SECRET`]) and an hour-long token.
fn issuer(alg: Algorithm) -> (Issuer, String) {
    let key = match alg {
        Algorithm::HS256 => Key::hmac("k1", alg, SECRET.as_bytes()),
        _ => Key::generate("k1", alg),
    }
    .expect("key");
    let issuer = Issuer::new(KeySet::new(key).expect("key set"))
        .with_iss(ISS)
        .with_aud(AUD)
        .with_ttl(Duration::from_secs(3600));
    let token = issuer
        .issue("bench-user", Some("s1"), NoCustomClaims {})
        .expect("token")
        .token;
    (issuer, token)
}

async fn me_bare() -> axum::Json<Value> {
    axum::Json(json!({ "sub": "bench-user" }))
}

async fn me_bare07() -> axum07::Json<Value> {
    axum07::Json(json!({ "sub": "bench-user" }))
}

async fn me_baton(axum::Extension(claims): axum::Extension<Arc<Claims>>) -> axum::Json<Value> {
    axum::Json(json!({ "sub": claims.sub }))
}

async fn me_jwt_authorizer(
    jwt_authorizer::JwtClaims(claims): jwt_authorizer::JwtClaims<jwt_authorizer::RegisteredClaims>,
) -> axum07::Json<Value> {
    axum07::Json(json!({ "sub": claims.sub }))
}

async fn me_session(
    session: tower_sessions::Session,
) -> Result<axum::Json<Value>, axum::http::StatusCode> {
    match session.get::<String>("sub").await {
        Ok(Some(sub)) => Ok(axum::Json(json!({ "sub": sub }))),
        Ok(None) => Err(axum::http::StatusCode::UNAUTHORIZED),
        Err(_) => Err(axum::http::StatusCode::SERVICE_UNAVAILABLE),
    }
}

async fn login_session(session: tower_sessions::Session) -> axum::http::StatusCode {
    match session.insert("sub", "bench-user").await {
        Ok(()) => axum::http::StatusCode::NO_CONTENT,
        Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Logs in once through the server's own `/login` and returns the session cookie.
async fn session_cookie(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to self");
    stream
        .write_all(
            format!(
                "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no session cookie in {response:?}"))
}
