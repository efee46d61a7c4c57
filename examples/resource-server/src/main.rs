//! `cargo run -p resource-server -- --issuer http://127.0.0.1:3000 --dangerous-allow-http`
//! beside `cargo run -p login-app`: an API verifying the login app's tokens.

use baton_bearer::jwks::JwksOptions;
use clap::Parser;

/// An API verifying another service's access tokens through its discovery document.
#[derive(Parser)]
struct Args {
    /// The issuer whose tokens are accepted (`https://login.example.com`); its
    /// `/.well-known/openid-configuration` names the JWKS.
    #[arg(long, env = "ISSUER")]
    issuer: String,
    /// Where the HTTP API listens.
    #[arg(long, env = "ADDR", default_value = "127.0.0.1:4000")]
    addr: std::net::SocketAddr,
    /// Where the gRPC twin listens; none without it.
    #[arg(long, env = "GRPC_ADDR")]
    grpc_addr: Option<std::net::SocketAddr>,
    /// Reach the issuer over plain HTTP (a login app on this machine); never in production.
    #[arg(long)]
    dangerous_allow_http: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut options = JwksOptions::new();
    if args.dangerous_allow_http {
        options = options.dangerous_allow_http();
    }
    let verifier = resource_server::verifier(&args.issuer, options)
        .await
        .map_err(|e| format!("--issuer {}: {e}", args.issuer))?;
    if let Some(addr) = args.grpc_addr {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("gRPC health service on {}", listener.local_addr()?);
        let verifier = verifier.clone();
        tokio::spawn(async move {
            if let Err(e) = resource_server::serve_grpc(listener, verifier).await {
                tracing::error!(error = %e, "the gRPC listener stopped");
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!("API on http://{}", listener.local_addr()?);
    axum::serve(listener, resource_server::router(verifier)?)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
