//! The axum extractor (feature `axum`).

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use baton_token::{Claims, NoCustomClaims};
use http::request::Parts;

use crate::BearerVerified;

/// The verified claims of the request, for axum handlers behind a
/// [`BearerVerifyLayer`](crate::BearerVerifyLayer).
///
/// The claims are shared with the request (and, for a cached token, with the cache and every
/// request presenting the same token): taking them counts a reference, whatever they hold.
/// Fields read through it (`claims.sub`); a handler that wants a field of its own clones that
/// field. Application claims with interior mutability would be shared the same way (see
/// [`Verifier::verify_cached`](baton_token::Verifier::verify_cached)).
///
/// Without claims in the request (no layer, or an anonymous request in optional mode) it
/// answers 401 with a `WWW-Authenticate: Bearer` challenge; `Option<Authenticated<C>>` gives
/// `None` instead. `C` must be the layer's claims type
/// ([`with_claims`](crate::BearerVerifyLayer::with_claims)). In a debug build, a handler asking
/// for another one behind a layer that verified the token answers 500 and logs an error naming
/// the type, rather than refusing a valid token as if there were none. A release build leaves
/// out the per-request marker that tells the two apart (see
/// [`BearerVerified`](crate::BearerVerified)): it answers 401, and logs a warning once when the
/// request did carry a bearer token.
///
/// ```
/// use axum::{Router, routing::get};
/// use baton_bearer::{Authenticated, BearerVerifyLayer};
/// use baton_token::{Algorithm, Key, KeySet, Verifier};
///
/// async fn me(claims: Authenticated) -> String {
///     format!("hello {}", claims.sub)
/// }
///
/// let verifier = Verifier::new(KeySet::new(Key::generate("k", Algorithm::HS256).unwrap()).unwrap());
/// let app: Router = Router::new().route("/me", get(me)).layer(BearerVerifyLayer::new(verifier));
/// ```
#[derive(Debug)]
pub struct Authenticated<C = NoCustomClaims>(pub Arc<Claims<C>>);

// Not derived: a derive would ask `C: Clone`, which sharing the claims does not need.
impl<C> Clone for Authenticated<C> {
    fn clone(&self) -> Self {
        Authenticated(Arc::clone(&self.0))
    }
}

impl<C> Deref for Authenticated<C> {
    type Target = Claims<C>;

    fn deref(&self) -> &Claims<C> {
        &self.0
    }
}

/// The rejection of [`Authenticated`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotAuthenticated {
    /// No bearer layer verified a token for this request (no layer, or an anonymous request
    /// in optional mode): 401 with a `WWW-Authenticate: Bearer` challenge.
    Missing,
    /// A bearer layer verified the token, but into another claims type than the handler asks
    /// for (a layer built `.with_claims::<AppClaims>()` and a handler taking plain
    /// `Authenticated`): the application's bug, not the client's. 500, logged as an error
    /// naming the type asked for. Debug builds only (see [`BearerVerified`]).
    ClaimsType {
        /// The claims type the handler asked for.
        expected: &'static str,
    },
}

impl IntoResponse for NotAuthenticated {
    fn into_response(self) -> Response {
        match self {
            NotAuthenticated::Missing => (
                http::StatusCode::UNAUTHORIZED,
                [
                    (http::header::WWW_AUTHENTICATE, "Bearer"),
                    (http::header::CONTENT_TYPE, "application/json"),
                ],
                r#"{"error":"unauthorized","error_description":"bearer token required"}"#,
            )
                .into_response(),
            NotAuthenticated::ClaimsType { .. } => (
                http::StatusCode::INTERNAL_SERVER_ERROR,
                [(http::header::CONTENT_TYPE, "application/json")],
                r#"{"error":"server_error","error_description":"internal error"}"#,
            )
                .into_response(),
        }
    }
}

/// The claims of type `C` in `parts`, `None` when no layer verified a token, or the mismatch
/// (logged) when a layer verified it into another type.
fn claims_of<C: Send + Sync + 'static>(
    parts: &Parts,
) -> Result<Option<Authenticated<C>>, NotAuthenticated> {
    if let Some(claims) = parts.extensions.get::<Arc<Claims<C>>>() {
        return Ok(Some(Authenticated(Arc::clone(claims))));
    }
    if parts.extensions.get::<BearerVerified>().is_none() {
        #[cfg(all(not(debug_assertions), feature = "tracing"))]
        warn_bearer_without_claims::<C>(parts);
        return Ok(None);
    }
    let expected = std::any::type_name::<C>();
    #[cfg(feature = "tracing")]
    tracing::error!(
        target: "baton::bearer",
        expected,
        "a handler asks for Authenticated<{expected}>, but the bearer layer verified the token \
         into another claims type: build the layer with .with_claims::<{expected}>() (with the \
         facade, the Authenticator's Claims), or take that type in the handler; answering 500"
    );
    Err(NotAuthenticated::ClaimsType { expected })
}

/// A release build's hint at a claims-type mix-up (see [`BearerVerified`]): a request that
/// carries a bearer or DPoP token in its `Authorization` header but no claims of type `C`.
/// Logged once per process.
#[cfg(all(not(debug_assertions), feature = "tracing"))]
fn warn_bearer_without_claims<C>(parts: &Parts) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    // A token in a cookie is not seen here: the extractor does not know the cookie's name.
    let bearer = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| {
            let v = v.as_bytes();
            v.get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer "))
                || v.get(..5).is_some_and(|s| s.eq_ignore_ascii_case(b"dpop "))
        });
    if bearer && !WARNED.swap(true, Ordering::Relaxed) {
        let expected = std::any::type_name::<C>();
        tracing::warn!(
            target: "baton::bearer",
            expected,
            "a request with a bearer token reached a handler asking for Authenticated<{expected}> \
             without claims of that type: no bearer layer on this route, or one verifying into \
             another claims type (build it with .with_claims::<{expected}>()); answering 401"
        );
    }
}

impl<S, C> FromRequestParts<S> for Authenticated<C>
where
    S: Send + Sync,
    C: Send + Sync + 'static,
{
    type Rejection = NotAuthenticated;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        claims_of(parts)?.ok_or(NotAuthenticated::Missing)
    }
}

impl<S, C> OptionalFromRequestParts<S> for Authenticated<C>
where
    S: Send + Sync,
    C: Send + Sync + 'static,
{
    type Rejection = NotAuthenticated;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        claims_of(parts)
    }
}
