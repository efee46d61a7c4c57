//! `cargo run -p grpc-service`: the health service on 127.0.0.1:50051, behind a bearer check.

use baton::token::{Algorithm, Issuer, Key, KeySet, NoCustomClaims};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let issuer = Issuer::new(KeySet::new(Key::generate("grpc", Algorithm::EdDSA)?)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
    let token = issuer.issue("demo-client", None, NoCustomClaims {})?.token;
    println!("gRPC health service on {}", listener.local_addr()?);
    println!(
        "try: grpcurl -plaintext -H 'authorization: Bearer {token}' 127.0.0.1:50051 grpc.health.v1.Health/Check"
    );
    tokio::select! {
        served = grpc_service::serve(listener, issuer.verifier()) => served?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
