//! The baton login app.
//!
//! At this stage it serves a protected route with an in-memory signing key, and prints a
//! ready-to-use token for a demo user:
//!
//! ```text
//! cargo run -p login-app
//! curl -H "Authorization: Bearer <token printed at start>" http://127.0.0.1:3000/api/me
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use baton_bearer::{Authenticated, BearerVerifyLayer};
use baton_token::{Algorithm, Issuer, Key, KeySet, NoCustomClaims};
use clap::Parser;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Command-line flags; each is also read from `BATON_<FLAG>`.
#[derive(Debug, Parser)]
#[command(version, about = "The baton login app")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "BATON_ADDR", default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Access-token lifetime in seconds.
    #[arg(long, env = "BATON_ACCESS_TTL", default_value_t = 900)]
    access_ttl: u64,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    #[arg(long, env = "BATON_LEEWAY", default_value_t = 0)]
    leeway: u64,
    /// Signing algorithm: HS256, ES256, EdDSA or RS256.
    #[arg(long, env = "BATON_ALG", default_value = "ES256")]
    alg: Algorithm,
}

async fn me(Authenticated(claims): Authenticated) -> Json<Value> {
    Json(json!({ "sub": claims.sub }))
}

fn app(issuer: &Issuer, leeway: Duration) -> Router {
    let keys = issuer.keys().clone();
    let api = Router::new()
        .route("/api/me", get(me))
        .layer(BearerVerifyLayer::new(
            issuer.verifier().with_leeway(leeway),
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/.well-known/jwks.json",
            get(move || {
                let jwks = keys.load().jwks_json();
                async move { ([(http::header::CONTENT_TYPE, "application/json")], jwks) }
            }),
        )
        .merge(api)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,baton=debug".into()),
        )
        .init();
    let args = Args::parse();
    let key = Key::generate("login-app-1", args.alg)?;
    let issuer = Issuer::new(KeySet::new(key)?).with_ttl(Duration::from_secs(args.access_ttl));
    let listener = TcpListener::bind(args.addr).await?;
    let addr = listener.local_addr()?;
    let demo = issuer.issue("demo", None, NoCustomClaims {})?;
    println!("baton login app listening on http://{addr}");
    println!("a token for the demo user, valid {} s:", demo.expires_in);
    println!(
        "  curl -H 'Authorization: Bearer {}' http://{addr}/api/me",
        demo.token
    );
    axum::serve(listener, app(&issuer, Duration::from_secs(args.leeway)))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_the_protected_route_over_tcp() {
        let issuer =
            Issuer::new(KeySet::new(Key::generate("t", Algorithm::ES256).unwrap()).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = app(&issuer, Duration::ZERO);
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let token = issuer.issue("demo", None, NoCustomClaims {}).unwrap().token;
        let request = format!(
            "GET /api/me HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
        );
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with(r#"{"sub":"demo"}"#), "{response}");

        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET /api/me HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 401"), "{response}");
        assert!(
            response
                .to_lowercase()
                .contains("www-authenticate: bearer realm=\"baton\""),
            "{response}"
        );
    }
}
