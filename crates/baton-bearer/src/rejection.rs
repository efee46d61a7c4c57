//! RFC 6750 rejections, the gRPC form of them, and the pluggable responder.

use std::fmt;
use std::sync::Arc;

use baton_core::{JsonErrors, Refusal, RenderError};
use baton_token::{ErrorKind, VerifyError};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// Why the layer refused a request.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RejectionKind {
    /// No token in the request: 401, a challenge without error code.
    MissingToken,
    /// A malformed request (two `Authorization` headers, bad syntax, header and cookie that
    /// disagree): 400 `invalid_request`.
    InvalidRequest(&'static str),
    /// A token that did not verify or was revoked: 401 `invalid_token`.
    InvalidToken(VerifyError),
    /// A valid token without a required scope or role: 403 `insufficient_scope`.
    InsufficientScope,
    /// A valid token whose authentication is too old or not strong enough for the route
    /// ([`RecentLogin`](crate::RecentLogin)): 401 `insufficient_user_authentication` (RFC
    /// 9470), with `max_age` and `acr_values` in the challenge.
    InsufficientUserAuthentication {
        /// The longest time since the authentication the route accepts, in seconds.
        max_age: Option<u64>,
        /// The `acr` values it accepts, space-separated.
        acr_values: Option<Arc<str>>,
    },
    /// A `DPoP` proof that is missing, bad, replayed or from another key than the token's:
    /// 401 `invalid_dpop_proof` (or `use_dpop_nonce`), with a `DPoP` challenge.
    InvalidDpopProof(baton_token::DpopError),
    /// A token with the wrong scheme for its binding: a DPoP-bound token sent as `Bearer`
    /// (no downgrade), an unbound one sent as `DPoP`, or a bearer token where DPoP is
    /// required: 401 `invalid_token`.
    WrongTokenScheme(&'static str),
    /// The DPoP replay cache cannot tell whether the proof was used before: 503 with
    /// `Retry-After`.
    DpopReplayUnknown,
    /// A valid token, but whether it was revoked cannot be told now (a revocation feed that
    /// fails closed while it cannot read its log): 503 with `Retry-After`, `UNAVAILABLE` for
    /// gRPC. Not a 401: the client should wait, not refresh or sign out.
    RevocationsUnknown,
}

/// A refused request: what went wrong and what the challenge says.
///
/// The layer also puts the `Rejection` into the response's extensions, so an outer layer (a
/// refresh-on-401 layer, say) can tell an expired token from a forged one.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    kind: RejectionKind,
    realm: Arc<str>,
    scope: Option<Arc<str>>,
    grpc: bool,
    dpop: bool,
}

impl Rejection {
    pub(crate) fn new(
        kind: RejectionKind,
        realm: Arc<str>,
        scope: Option<Arc<str>>,
        grpc: bool,
    ) -> Self {
        Rejection {
            kind,
            realm,
            scope,
            grpc,
            dpop: false,
        }
    }

    /// Challenges with the `DPoP` scheme (the layer takes DPoP and the request used it, or
    /// the refusal is about DPoP).
    pub(crate) fn with_dpop(mut self, dpop: bool) -> Self {
        self.dpop = dpop;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &RejectionKind {
        &self.kind
    }

    /// The token's verification error, for `InvalidToken`.
    pub fn token_error(&self) -> Option<&VerifyError> {
        match &self.kind {
            RejectionKind::InvalidToken(e) => Some(e),
            _ => None,
        }
    }

    /// `true` when the token verified but has expired: the case a refresh can fix.
    pub fn is_expired(&self) -> bool {
        self.token_error()
            .is_some_and(|e| e.kind() == ErrorKind::Expired)
    }

    /// `true` when the request was a gRPC call (`content-type: application/grpc...`).
    pub fn is_grpc(&self) -> bool {
        self.grpc
    }

    /// The HTTP status: 400, 401, 403, or 503 when revocations cannot be checked.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            RejectionKind::MissingToken
            | RejectionKind::InvalidToken(_)
            | RejectionKind::InvalidDpopProof(_)
            | RejectionKind::WrongTokenScheme(_)
            | RejectionKind::InsufficientUserAuthentication { .. } => StatusCode::UNAUTHORIZED,
            RejectionKind::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            RejectionKind::InsufficientScope => StatusCode::FORBIDDEN,
            RejectionKind::RevocationsUnknown | RejectionKind::DpopReplayUnknown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// `true` for a refusal that is the server's trouble (503: retry after `Retry-After`).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self.kind,
            RejectionKind::RevocationsUnknown | RejectionKind::DpopReplayUnknown
        )
    }

    /// The RFC 6750 error code; `None` for a missing token.
    pub fn error_code(&self) -> Option<&'static str> {
        match &self.kind {
            RejectionKind::MissingToken => None,
            RejectionKind::InvalidRequest(_) => Some("invalid_request"),
            RejectionKind::InvalidToken(e) => e.kind().rfc6750_code(),
            RejectionKind::InsufficientScope => Some("insufficient_scope"),
            RejectionKind::InsufficientUserAuthentication { .. } => {
                Some("insufficient_user_authentication")
            }
            RejectionKind::InvalidDpopProof(e) => Some(e.code()),
            RejectionKind::WrongTokenScheme(_) => Some("invalid_token"),
            RejectionKind::RevocationsUnknown | RejectionKind::DpopReplayUnknown => {
                Some("temporarily_unavailable")
            }
        }
    }

    /// A short description that leaks nothing.
    pub fn description(&self) -> &'static str {
        match &self.kind {
            RejectionKind::MissingToken => "bearer token required",
            RejectionKind::InvalidRequest(d) => d,
            RejectionKind::InvalidToken(e) => e.description(),
            RejectionKind::InsufficientScope => "token lacks a required scope or role",
            RejectionKind::InsufficientUserAuthentication { .. } => {
                "a more recent authentication is required"
            }
            RejectionKind::InvalidDpopProof(e) => e.description(),
            RejectionKind::WrongTokenScheme(d) => d,
            RejectionKind::RevocationsUnknown => "revocations cannot be checked now; retry",
            RejectionKind::DpopReplayUnknown => "DPoP proofs cannot be checked now; retry",
        }
    }

    /// The scopes the resource requires, for `insufficient_scope`.
    pub fn required_scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 section 3); a bare one for a 503.
    pub fn www_authenticate(&self) -> HeaderValue {
        let mut value = if self.dpop {
            format!("DPoP realm=\"{}\", algs=\"ES256 EdDSA\"", self.realm)
        } else {
            format!("Bearer realm=\"{}\"", self.realm)
        };
        if let (Some(code), false) = (self.error_code(), self.is_unavailable()) {
            value.push_str(", error=\"");
            value.push_str(code);
            value.push_str("\", error_description=\"");
            value.push_str(self.description());
            value.push('"');
        }
        if let (RejectionKind::InsufficientScope, Some(scope)) = (&self.kind, &self.scope) {
            value.push_str(", scope=\"");
            value.push_str(scope);
            value.push('"');
        }
        if let RejectionKind::InsufficientUserAuthentication {
            max_age,
            acr_values,
        } = &self.kind
        {
            if let Some(acr) = acr_values {
                value.push_str(", acr_values=\"");
                value.push_str(acr);
                value.push('"');
            }
            if let Some(max_age) = max_age {
                value.push_str(", max_age=");
                value.push_str(&max_age.to_string());
            }
        }
        // Realm, scopes and descriptions are checked to be quoted-string safe when configured.
        HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }

    /// The gRPC status code: 16 (UNAUTHENTICATED), 7 (PERMISSION_DENIED) for a missing scope,
    /// 14 (UNAVAILABLE) when revocations cannot be checked.
    pub fn grpc_status(&self) -> u16 {
        match self.kind {
            RejectionKind::InsufficientScope => 7,
            RejectionKind::RevocationsUnknown | RejectionKind::DpopReplayUnknown => 14,
            _ => 16,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// Builds the HTTP response for a [`Rejection`] (gRPC calls are answered by the layer itself).
///
/// Replace the default [`JsonRejection`] with
/// [`BearerVerifyLayer::with_rejection`](crate::BearerVerifyLayer::with_rejection) to change
/// the body (to `application/problem+json`, say). The layer adds the `WWW-Authenticate`
/// challenge when the response lacks one.
pub trait BuildRejection: Clone + Send + Sync + 'static {
    /// The response for `rejection`.
    fn build(&self, rejection: &Rejection) -> Response<Bytes>;
}

impl Rejection {
    /// The shared vocabulary's form of this rejection (status, code, description, and a
    /// `Retry-After` for a 503).
    pub fn refusal(&self) -> Refusal {
        let refusal = Refusal::new(
            self.status(),
            self.error_code().unwrap_or("unauthorized"),
            self.description(),
        );
        if self.is_unavailable() {
            refusal.with_retry_after(std::time::Duration::from_secs(1))
        } else {
            refusal
        }
    }

    /// The response `errors` renders for this rejection, with the challenge.
    pub fn render(&self, errors: &(impl RenderError + ?Sized)) -> Response<Bytes> {
        let mut res = self.refusal().render(errors);
        res.headers_mut()
            .insert(WWW_AUTHENTICATE, self.www_authenticate());
        res
    }
}

/// The default responder: the RFC 6750 status and challenge, and a JSON body
/// `{"error": "...", "error_description": "..."}` ([`JsonErrors`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonRejection;

impl BuildRejection for JsonRejection {
    fn build(&self, rejection: &Rejection) -> Response<Bytes> {
        rejection.render(&JsonErrors)
    }
}

/// Renders rejections through a [`RenderError`], the renderer every baton layer shares, so
/// an application's own error format reaches the bearer layer's 401, 403 and 503 too.
///
/// ```
/// use baton_bearer::{BearerVerifyLayer, RenderRejection};
/// use baton_core::JsonErrors;
/// use baton_token::{Algorithm, Issuer, Key, KeySet};
///
/// let issuer = Issuer::new(KeySet::new(Key::generate("k1", Algorithm::ES256).unwrap()).unwrap());
/// let layer = BearerVerifyLayer::new(issuer.verifier())
///     .with_rejection(RenderRejection::new(JsonErrors));
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct RenderRejection(Arc<dyn RenderError>);

impl RenderRejection {
    /// Renders with `errors`.
    pub fn new(errors: impl RenderError) -> Self {
        RenderRejection(Arc::new(errors))
    }

    /// Renders with a renderer shared with other layers.
    pub fn shared(errors: Arc<dyn RenderError>) -> Self {
        RenderRejection(errors)
    }
}

impl fmt::Debug for RenderRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RenderRejection")
    }
}

impl BuildRejection for RenderRejection {
    fn build(&self, rejection: &Rejection) -> Response<Bytes> {
        rejection.render(&*self.0)
    }
}

/// gRPC `grpc-message` percent-encoding: everything outside printable ASCII, and `%`.
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// The gRPC form of a rejection: HTTP 200, trailers-only, with `grpc-status`, `grpc-message`
/// and the same `www-authenticate` value as metadata.
pub fn grpc_response(rejection: &Rejection) -> Response<Bytes> {
    let mut res = Response::new(Bytes::new());
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(rejection.grpc_status()));
    let message = utf8_percent_encode(rejection.description(), GRPC_MESSAGE).to_string();
    if let Ok(message) = HeaderValue::try_from(message) {
        headers.insert("grpc-message", message);
    }
    headers.insert(WWW_AUTHENTICATE, rejection.www_authenticate());
    res
}
