//! `BearerVerifyLayer`: a Tower layer that verifies access JWTs and answers RFC 6750.
//!
//! The token comes from `Authorization: Bearer` (the scheme matches case-insensitively) and,
//! for cookie-mode apps, optionally from a named cookie. A verified token's
//! [`Claims<C>`](baton_token::Claims) go into the request's extensions; no store is consulted.
//! The layer is generic over request and response bodies, so it wraps axum routers, plain
//! hyper services and tonic services alike.
//!
//! # Example
//! ```
//! use baton_bearer::BearerVerifyLayer;
//! use baton_token::{Algorithm, Claims, Issuer, Key, KeySet, NoCustomClaims};
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode, header};
//! use http_body_util::Full;
//! use std::convert::Infallible;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let issuer = Issuer::new(KeySet::new(Key::generate("k1", Algorithm::ES256).unwrap()).unwrap());
//! let service = ServiceBuilder::new()
//!     .layer(BearerVerifyLayer::new(issuer.verifier()))
//!     .service(service_fn(|req: Request<Full<Bytes>>| async move {
//!         let claims = req.extensions().get::<Claims<NoCustomClaims>>().unwrap();
//!         let body = Full::<Bytes>::from(format!("hello {}", claims.sub));
//!         Ok::<_, Infallible>(Response::new(body))
//!     }));
//!
//! // No token: 401 with a bare challenge.
//! let res = service.clone().oneshot(Request::new(Full::default())).await.unwrap();
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(res.headers()[header::WWW_AUTHENTICATE], r#"Bearer realm="baton""#);
//!
//! // A valid token: the handler sees the claims.
//! let token = issuer.issue("alice", None, NoCustomClaims {}).unwrap().token;
//! let req = Request::builder()
//!     .header(header::AUTHORIZATION, format!("Bearer {token}"))
//!     .body(Full::default())
//!     .unwrap();
//! let res = service.clone().oneshot(req).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//!
//! // A forged token: 401 invalid_token.
//! let req = Request::builder()
//!     .header(header::AUTHORIZATION, format!("Bearer {token}x"))
//!     .body(Full::default())
//!     .unwrap();
//! let res = service.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! assert!(res.headers()[header::WWW_AUTHENTICATE].to_str().unwrap().contains(r#"error="invalid_token""#));
//! # }
//! ```
//!
//! # Responses
//! | request | status | `WWW-Authenticate` | JSON `error` |
//! |---|---|---|---|
//! | no token | 401 | `Bearer realm="..."` | `unauthorized` |
//! | two `Authorization` headers, bad syntax, header and cookie disagree | 400 | `error="invalid_request"` | `invalid_request` |
//! | bad, expired or revoked token | 401 | `error="invalid_token"` | `invalid_token` |
//! | valid token without a required scope or role | 403 | `error="insufficient_scope"`, `scope="..."` | `insufficient_scope` |
//! | with [`Dpop`]: `Authorization: DPoP` and a `DPoP` proof that is bad, replayed, or from another key | 401 | `DPoP algs="ES256 EdDSA", error="invalid_dpop_proof"` | `invalid_dpop_proof` |
//! | with [`Dpop`]: a DPoP-bound token sent as `Bearer`, an unbound one as `DPoP`, or any token without DPoP when it is [required](Dpop::required) | 401 | `error="invalid_token"` | `invalid_token` |
//! | valid token, login too old or of another class ([`RecentLogin`]) | 401 | `error="insufficient_user_authentication"`, `max_age=N`, `acr_values="..."` | `insufficient_user_authentication` |
//! | valid token, revocations unknown (a feed failing closed, [`CheckRevocation::is_known`]) | 503, `Retry-After` | `Bearer realm="..."` | `temporarily_unavailable` |
//!
//! gRPC calls (`content-type: application/grpc...`) get HTTP 200 with `grpc-status` 16
//! (UNAUTHENTICATED), 7 (PERMISSION_DENIED) or 14 (UNAVAILABLE), `grpc-message`, and the same
//! `www-authenticate` as metadata, which tonic clients read as a `Status`. Each rejection also
//! goes into the response's extensions as a [`Rejection`].
//!
//! # Feature flags
//! - `tracing` (default): a `debug` event per rejection, target `baton::bearer`, field `kind`;
//!   never the token.
//! - `axum`: the [`Authenticated`] extractor.
//! - `jwks`: [`jwks::RemoteJwks`], keys fetched from an issuer's JWKS endpoint.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod dpop;
mod extract;
mod future;
mod layer;
mod recent;
mod rejection;
mod service;

#[cfg(feature = "axum")]
mod axum;
#[cfg(feature = "jwks")]
pub mod jwks;

#[cfg(feature = "axum")]
pub use crate::axum::{Authenticated, NotAuthenticated};
pub use baton_core::{
    CheckRevocation, Revocation, RevocationList, Revoke, RevokeError, RevokeFuture, TokenIdentity,
};
pub use baton_core::{ReplayCache, ReplayCheck, ReplayFuture, ReplayKey, ReplayUnknown};
pub use body::ResponseBody;
pub use dpop::{Dpop, DpopCheckError, DpopNonces, MemoryReplayCache};
pub use future::ResponseFuture;
pub use layer::{BearerVerifyLayer, ConfigError};
pub use recent::RecentLogin;
pub use rejection::{
    BuildRejection, JsonRejection, Rejection, RejectionKind, RenderRejection, grpc_response,
};
pub use service::BearerVerify;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
