//! Error responses: JSON by default, replaceable.

use std::sync::Arc;

use baton_bearer::{BuildRejection, Rejection};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

/// Renders error responses of the endpoints and of the bearer layer.
pub trait RenderError: Send + Sync + 'static {
    /// The response for `status`, a machine-readable `error` code and a description.
    fn render(&self, status: StatusCode, error: &str, description: &str) -> Response<Bytes>;
}

/// `application/json` bodies: `{"error": "...", "error_description": "..."}`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonErrors;

impl RenderError for JsonErrors {
    fn render(&self, status: StatusCode, error: &str, description: &str) -> Response<Bytes> {
        let body = serde_json::json!({ "error": error, "error_description": description });
        let mut res = Response::new(Bytes::from(body.to_string()));
        *res.status_mut() = status;
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        res.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}

/// Adapts a [`RenderError`] to the bearer layer's [`BuildRejection`], so the bearer layer's
/// 401/403 bodies look like the endpoints' errors.
#[derive(Clone)]
pub struct RenderRejection(pub(crate) Arc<dyn RenderError>);

impl std::fmt::Debug for RenderRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RenderRejection")
    }
}

impl BuildRejection for RenderRejection {
    fn build(&self, rejection: &Rejection) -> Response<Bytes> {
        let mut res = self.0.render(
            rejection.status(),
            rejection.error_code().unwrap_or("unauthorized"),
            rejection.description(),
        );
        res.headers_mut()
            .insert(WWW_AUTHENTICATE, rejection.www_authenticate());
        if rejection.is_unavailable() {
            res.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}
