//! Error responses: one vocabulary and one customisable body for every baton layer.
//!
//! Every layer that refuses a request (the bearer layer, the cross-site guard, the auth
//! endpoints, the rate limits) builds its response through a [`RenderError`], so an
//! application that sets its own format (`application/problem+json`, say) gets it from all of
//! them, and puts a [`Refusal`] into the response's extensions (beside its own typed
//! rejection), so an outer layer or a test can tell what happened without parsing the body.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

/// Builds the body of an error response.
///
/// ```
/// use baton_core::RenderError;
/// use bytes::Bytes;
/// use http::{Response, StatusCode};
///
/// /// RFC 9457 problem details.
/// struct Problems;
///
/// impl RenderError for Problems {
///     fn render(&self, status: StatusCode, error: &str, description: &str) -> Response<Bytes> {
///         let body = serde_json::json!({
///             "type": format!("https://example.com/problems/{error}"),
///             "title": description,
///             "status": status.as_u16(),
///         });
///         let mut res = Response::new(Bytes::from(body.to_string()));
///         *res.status_mut() = status;
///         res.headers_mut().insert("content-type", "application/problem+json".parse().unwrap());
///         res
///     }
/// }
///
/// let res = Problems.render(StatusCode::FORBIDDEN, "cross_site_request", "refused");
/// assert_eq!(res.status(), StatusCode::FORBIDDEN);
/// ```
pub trait RenderError: Send + Sync + 'static {
    /// The response for `status`, a machine-readable `error` code and a description that
    /// leaks nothing. The caller adds the headers its protocol needs (`WWW-Authenticate`,
    /// `Retry-After`, `Cache-Control`) after this returns.
    fn render(&self, status: StatusCode, error: &str, description: &str) -> Response<Bytes>;
}

impl<R: RenderError + ?Sized> RenderError for std::sync::Arc<R> {
    fn render(&self, status: StatusCode, error: &str, description: &str) -> Response<Bytes> {
        (**self).render(status, error, description)
    }
}

/// The default body: `application/json`, `{"error": "...", "error_description": "..."}` (the
/// OAuth 2.0 shape, RFC 6749 section 5.2 and RFC 6750 section 3).
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonErrors;

impl RenderError for JsonErrors {
    fn render(&self, status: StatusCode, error: &str, description: &str) -> Response<Bytes> {
        let body = serde_json::json!({ "error": error, "error_description": description });
        let mut res = Response::new(Bytes::from(body.to_string()));
        *res.status_mut() = status;
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        res
    }
}

/// What a layer refused, as found in the extensions of the response it answered with.
///
/// ```
/// use baton_core::{JsonErrors, Refusal};
/// use http::StatusCode;
/// use std::time::Duration;
///
/// let res = Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "retry")
///     .with_retry_after(Duration::from_secs(2))
///     .render(&JsonErrors);
/// assert_eq!(res.headers()["retry-after"], "2");
/// assert_eq!(res.extensions().get::<Refusal>().unwrap().error(), "temporarily_unavailable");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: Cow<'static, str>,
    retry_after: Option<Duration>,
}

impl Refusal {
    /// A refusal with `status`, a machine-readable `error` code and a description.
    pub fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        Refusal {
            status,
            error,
            description: description.into(),
            retry_after: None,
        }
    }

    /// Tells the client when to try again (`Retry-After`, whole seconds rounded up, at least 1).
    #[must_use]
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable error code (`invalid_request`, `too_many_requests`, ...).
    pub fn error(&self) -> &'static str {
        self.error
    }

    /// The human-readable description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// When the client may retry, for 429 and 503.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// `true` for a 503: the server's passing trouble, which the client should wait out
    /// (a 500 is a fault retrying will not fix).
    pub fn is_unavailable(&self) -> bool {
        self.status == http::StatusCode::SERVICE_UNAVAILABLE
    }

    /// The response: `renderer`'s body, `Retry-After` when set, `Cache-Control: no-store`,
    /// and this refusal in the extensions.
    pub fn render(self, renderer: &(impl RenderError + ?Sized)) -> Response<Bytes> {
        let mut res = renderer.render(self.status, self.error, &self.description);
        let headers = res.headers_mut();
        if let Some(wait) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
        }
        headers
            .entry(CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        res.extensions_mut().insert(self);
        res
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.error,
            self.description
        )
    }
}

/// An error and its causes, `: `-separated: for logs and messages that end a program, where the
/// whole chain should show (`Display` of an error shows only its own level).
///
/// ```
/// use baton_core::ErrorChain;
/// use std::fmt;
///
/// #[derive(Debug)]
/// struct Unavailable(std::io::Error);
/// impl fmt::Display for Unavailable {
///     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
///         f.write_str("session store unavailable")
///     }
/// }
/// impl std::error::Error for Unavailable {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         Some(&self.0)
///     }
/// }
///
/// let e = Unavailable(std::io::Error::other("connection refused"));
/// assert_eq!(e.to_string(), "session store unavailable");
/// assert_eq!(ErrorChain(&e).to_string(), "session store unavailable: connection refused");
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Whole seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
    }

    #[test]
    fn render_keeps_a_renderers_cache_control_and_records_the_refusal() {
        struct Cached;
        impl RenderError for Cached {
            fn render(&self, status: StatusCode, _: &str, _: &str) -> Response<Bytes> {
                let mut res = Response::new(Bytes::new());
                *res.status_mut() = status;
                res.headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("private"));
                res
            }
        }
        let res =
            Refusal::new(StatusCode::NOT_FOUND, "not_found", "no such session").render(&Cached);
        assert_eq!(res.headers()[CACHE_CONTROL], "private");
        assert!(res.headers().get(RETRY_AFTER).is_none());
        let refusal = res.extensions().get::<Refusal>().unwrap();
        assert_eq!(refusal.status(), StatusCode::NOT_FOUND);
        assert!(!refusal.is_unavailable());
        let res =
            Refusal::new(StatusCode::BAD_REQUEST, "invalid_request", "bad").render(&JsonErrors);
        assert_eq!(res.headers()[CACHE_CONTROL], "no-store");
        let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(body["error_description"], "bad");
    }
}
