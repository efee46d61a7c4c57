//! The axum extractor (feature `axum`).

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use baton_token::{Claims, NoCustomClaims};
use http::request::Parts;
use std::convert::Infallible;

/// The verified claims of the request, for axum handlers behind a
/// [`BearerVerifyLayer`](crate::BearerVerifyLayer).
///
/// Without claims in the request (no layer, or an anonymous request in optional mode) it
/// answers 401 with a `WWW-Authenticate: Bearer` challenge; `Option<Authenticated<C>>` gives
/// `None` instead.
///
/// ```
/// use axum::{Router, routing::get};
/// use baton_bearer::{Authenticated, BearerVerifyLayer};
/// use baton_token::{Algorithm, Key, KeySet, Verifier};
///
/// async fn me(Authenticated(claims): Authenticated) -> String {
///     claims.sub
/// }
///
/// let verifier = Verifier::new(KeySet::new(Key::generate("k", Algorithm::HS256).unwrap()).unwrap());
/// let app: Router = Router::new().route("/me", get(me)).layer(BearerVerifyLayer::new(verifier));
/// ```
#[derive(Clone, Debug)]
pub struct Authenticated<C = NoCustomClaims>(pub Claims<C>);

/// The rejection of [`Authenticated`] when the request has no verified claims.
#[derive(Clone, Copy, Debug)]
pub struct NotAuthenticated;

impl IntoResponse for NotAuthenticated {
    fn into_response(self) -> Response {
        (
            http::StatusCode::UNAUTHORIZED,
            [
                (http::header::WWW_AUTHENTICATE, "Bearer"),
                (http::header::CONTENT_TYPE, "application/json"),
            ],
            r#"{"error":"unauthorized","error_description":"bearer token required"}"#,
        )
            .into_response()
    }
}

impl<S, C> FromRequestParts<S> for Authenticated<C>
where
    S: Send + Sync,
    C: Clone + Send + Sync + 'static,
{
    type Rejection = NotAuthenticated;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Claims<C>>()
            .cloned()
            .map(Authenticated)
            .ok_or(NotAuthenticated)
    }
}

impl<S, C> OptionalFromRequestParts<S> for Authenticated<C>
where
    S: Send + Sync,
    C: Clone + Send + Sync + 'static,
{
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Claims<C>>()
            .cloned()
            .map(Authenticated))
    }
}
