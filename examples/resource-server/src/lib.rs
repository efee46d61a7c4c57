//! An API that takes one layer: it verifies access tokens another service issues (the login
//! app, or any issuer publishing OpenID discovery), finding the keys from the issuer's URL
//! alone. `GET /.well-known/openid-configuration` names the JWKS; the keys are fetched, kept
//! fresh in the background, and fetched again when a token names a key not seen yet.
//!
//! - `GET /api/me`: any valid token of the issuer (`{"sub": ...}`).
//! - `GET /api/notes`: a token with the `notes:read` scope (403 `insufficient_scope`
//!   otherwise).
//! - Any other path: 404, token or not (the layers are route layers).
//!
//! The gRPC twin ([`serve_grpc`]) puts the same verifier in front of a tonic service.

use axum::routing::get;
use axum::{Json, Router};
use baton_bearer::jwks::{JwksError, JwksOptions, RemoteJwks};
use baton_bearer::{Authenticated, BearerVerifyLayer, ConfigError};
use baton_token::Verifier;
use tokio::net::TcpListener;

/// The scope `GET /api/notes` requires.
pub const NOTES_SCOPE: &str = "notes:read";

/// A verifier of `issuer`'s tokens: its keys found through its discovery document and kept
/// fresh, its `iss` required.
///
/// # Errors
/// [`JwksError`] naming what is wrong: the issuer unreachable, a document that is not JSON,
/// names another issuer or has no `jwks_uri`, a key set with no usable key.
pub async fn verifier(issuer: &str, options: JwksOptions) -> Result<Verifier, JwksError> {
    let jwks = RemoteJwks::discover(issuer, options).await?;
    // Exactly as given: tokens carry the issuer's own spelling (a trailing `/` included).
    Ok(jwks.verifier().with_iss(issuer))
}

async fn me(Authenticated(claims): Authenticated) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "sub": claims.sub }))
}

async fn notes(Authenticated(claims): Authenticated) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "owner": claims.sub, "notes": [] }))
}

/// The API's routes behind `verifier`.
///
/// # Errors
/// [`ConfigError`] for an invalid scope (none here: the scope is a constant).
pub fn router(verifier: Verifier) -> Result<Router, ConfigError> {
    let bearer = BearerVerifyLayer::new(verifier);
    let notes = Router::new()
        .route("/api/notes", get(notes))
        .route_layer(bearer.clone().require_scope(NOTES_SCOPE)?);
    Ok(Router::new()
        .route("/api/me", get(me))
        .route_layer(bearer)
        .merge(notes))
}

/// The gRPC twin: the standard health service behind the same verifier (callers without a
/// valid token get `Unauthenticated`), as `examples/grpc-service` serves it.
///
/// # Errors
/// Transport errors.
pub async fn serve_grpc(
    listener: TcpListener,
    verifier: Verifier,
) -> Result<(), tonic::transport::Error> {
    grpc_service::serve(listener, verifier).await
}
