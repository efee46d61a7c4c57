//! `OriginGuardLayer`: refuses cross-site requests with unsafe methods (CSRF).
//!
//! The engine is tower-http's [`CsrfLayer`], the cross-origin
//! protection of Go 1.25's `net/http`:
//! 1. `GET`, `HEAD` and `OPTIONS` always pass (`TRACE` does not: it is not safe here).
//! 2. `Sec-Fetch-Site: same-origin` or `none` (the user typed it) passes.
//! 3. A request with neither `Sec-Fetch-Site` nor `Origin` passes (not a browser).
//! 4. An `Origin` whose host and port equal the request's (`:authority` or `Host`) passes.
//! 5. A trusted origin (compared exactly, as browsers send it) or an exempt path passes;
//!    anything else is refused with 403, `same-site` (a sibling subdomain) and `Origin: null`
//!    included.
//!
//! What baton adds: the refusal goes through the shared [`RenderError`] (a JSON body by
//! default) with a [`CrossSiteRejection`] and a [`Refusal`] in its extensions; exemptions match
//! whole path segments (`/webhooks` exempts `/webhooks` and `/webhooks/stripe`, never
//! `/webhooks-admin`); trusted origins are validated when added.
//!
//! # Example
//! ```
//! use baton_cookie::OriginGuardLayer;
//! use http::{Method, Request, Response, StatusCode};
//! use std::convert::Infallible;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let guard = OriginGuardLayer::new()
//!     .trust_origin("https://partner.example")?
//!     .exempt_path("/webhooks")?;
//! let svc = ServiceBuilder::new()
//!     .layer(guard)
//!     .service(service_fn(|_req: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::new()))
//!     }));
//! let cross = Request::post("/auth/refresh")
//!     .header("sec-fetch-site", "cross-site")
//!     .body(String::new())?;
//! assert_eq!(svc.clone().oneshot(cross).await?.status(), StatusCode::FORBIDDEN);
//! let same = Request::post("/auth/refresh")
//!     .header("sec-fetch-site", "same-origin")
//!     .body(String::new())?;
//! assert_eq!(svc.clone().oneshot(same).await?.status(), StatusCode::OK);
//! let hook = Request::post("/webhooks/stripe")
//!     .header("sec-fetch-site", "cross-site")
//!     .body(String::new())?;
//! assert_eq!(svc.oneshot(hook).await?.status(), StatusCode::OK);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use baton_core::{JsonErrors, Refusal, RenderError};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tower_http::csrf::{
    Csrf, CsrfLayer, ProtectionError, ProtectionErrorKind, ResponseForProtectionError,
};
use tower_layer::Layer;
use tower_service::Service;

/// A configuration the guard refuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OriginGuardError {
    /// A trusted origin that is not `http(s)://host[:port]` as a browser sends it (no path,
    /// no trailing slash, punycode hosts).
    #[error("invalid trusted origin")]
    TrustedOrigin(#[source] tower_http::csrf::ConfigError),
    /// A trusted origin that parses but that no browser ever sends (a default port, a host
    /// ending in a dot, user information): it would never match.
    #[error("trusted origin {0:?} never matches what a browser sends")]
    NeverMatches(String),
    /// An exempt path that does not start with `/`.
    #[error("an exempt path must start with / (got {0:?})")]
    ExemptPath(String),
}

/// Refuses unsafe cross-site requests with 403 (see the [module docs](self)).
#[derive(Clone)]
#[must_use]
pub struct OriginGuardLayer {
    csrf: CsrfLayer<Refuse>,
    exempt: Arc<Vec<String>>,
    errors: Arc<dyn RenderError>,
}

impl Default for OriginGuardLayer {
    fn default() -> Self {
        let errors: Arc<dyn RenderError> = Arc::new(JsonErrors);
        OriginGuardLayer {
            csrf: CsrfLayer::new().with_rejection_response(Refuse {
                errors: errors.clone(),
            }),
            exempt: Arc::default(),
            errors,
        }
    }
}

impl fmt::Debug for OriginGuardLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginGuardLayer")
            .field("csrf", &self.csrf)
            .field("exempt", &self.exempt)
            .finish_non_exhaustive()
    }
}

/// `true` when `path` is `prefix` or below it, segment by segment.
fn is_below(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl OriginGuardLayer {
    /// Same-origin only, nothing trusted or exempt.
    pub fn new() -> Self {
        OriginGuardLayer::default()
    }

    /// Trusts requests from `origin`, exactly as a browser sends it: `https://host[:port]`,
    /// lowercase host (it is lowercased here), punycode for international names, no default
    /// port, no path and no trailing slash.
    ///
    /// # Errors
    /// [`OriginGuardError::TrustedOrigin`] for anything that can never be a browser's
    /// `Origin` (`null`, `file://`, a path, a bare host); [`OriginGuardError::NeverMatches`]
    /// for one that parses but is not written as browsers write it (`:443` on https, a
    /// trailing dot, `user@`).
    pub fn trust_origin(mut self, origin: impl AsRef<str>) -> Result<Self, OriginGuardError> {
        let origin = origin.as_ref().to_ascii_lowercase();
        if let Ok(uri) = origin.parse::<Uri>() {
            let default_port = match uri.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            };
            let authority = uri.authority().map_or("", |a| a.as_str());
            if (default_port.is_some() && uri.port_u16() == default_port)
                || uri.host().is_some_and(|h| h.ends_with('.'))
                || authority.contains('@')
            {
                return Err(OriginGuardError::NeverMatches(origin));
            }
        }
        self.csrf = self
            .csrf
            .add_trusted_origin(origin)
            .map_err(OriginGuardError::TrustedOrigin)?;
        Ok(self)
    }

    /// Lets unsafe requests to `path` and below it through unchecked, by whole segments:
    /// `/webhooks` exempts `/webhooks` and `/webhooks/stripe`, not `/webhooks-admin`. An
    /// exempt endpoint needs its own protection (a signature, a token).
    ///
    /// # Errors
    /// [`OriginGuardError::ExemptPath`] when `path` does not start with `/`.
    pub fn exempt_path(mut self, path: impl Into<String>) -> Result<Self, OriginGuardError> {
        let path = path.into();
        if !path.starts_with('/') {
            return Err(OriginGuardError::ExemptPath(path));
        }
        let mut exempt = (*self.exempt).clone();
        exempt.push(path.trim_end_matches('/').to_owned());
        let exempt = Arc::new(exempt);
        self.exempt = exempt.clone();
        self.csrf = self
            .csrf
            .with_insecure_bypass(move |_: &Method, uri: &Uri| {
                exempt.iter().any(|p| is_below(p, uri.path()))
            });
        Ok(self)
    }

    /// Renders refusals with `errors` (the same renderer the other baton layers use).
    pub fn with_errors(self, errors: impl RenderError) -> Self {
        self.with_shared_errors(Arc::new(errors))
    }

    /// Like [`with_errors`](Self::with_errors), sharing one renderer.
    pub fn with_shared_errors(mut self, errors: Arc<dyn RenderError>) -> Self {
        self.csrf = self.csrf.with_rejection_response(Refuse {
            errors: errors.clone(),
        });
        self.errors = errors;
        self
    }

    /// Checks `req` as the middleware would, for handlers that route by hand.
    ///
    /// # Errors
    /// Why the request is refused.
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), CrossSiteRejection> {
        // The engine decides on a request's head only; run it over a copy of the head and a
        // service that answers at once.
        let mut probe = Request::new(());
        *probe.method_mut() = req.method().clone();
        *probe.uri_mut() = req.uri().clone();
        *probe.headers_mut() = req.headers().clone();
        // The same engine and settings, answering a refusal with an empty response (the
        // engine puts its error in the extensions): nothing is rendered twice.
        let engine = self
            .csrf
            .clone()
            .with_rejection_response(|_: ProtectionError| Response::new(()));
        let mut svc = engine.layer(Pass);
        let mut future = std::pin::pin!(svc.call(probe));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(res)) => match res.extensions().get::<ProtectionError>() {
                Some(error) => Err(CrossSiteRejection::from(error)),
                None => Ok(()),
            },
            // `Pass` answers at once and never fails.
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => Err(CrossSiteRejection::Origin),
        }
    }

    /// The refusal `check` reported, as the layer renders it.
    pub fn refuse(&self, rejection: CrossSiteRejection) -> Response<Bytes> {
        forbidden(&*self.errors, rejection)
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrossSiteRejection {
    /// `Sec-Fetch-Site` said `cross-site`, `same-site` or an unknown value.
    FetchSite,
    /// No `Sec-Fetch-Site`, and an `Origin` that is neither the request's own nor trusted.
    Origin,
}

impl CrossSiteRejection {
    /// A short description for the response body.
    pub fn description(self) -> &'static str {
        match self {
            CrossSiteRejection::FetchSite => "cross-site request refused (Sec-Fetch-Site)",
            CrossSiteRejection::Origin => "cross-site request refused (Origin)",
        }
    }
}

impl From<&ProtectionError> for CrossSiteRejection {
    fn from(e: &ProtectionError) -> Self {
        match e.kind() {
            ProtectionErrorKind::CrossOriginRequest => CrossSiteRejection::FetchSite,
            _ => CrossSiteRejection::Origin,
        }
    }
}

fn forbidden(errors: &dyn RenderError, rejection: CrossSiteRejection) -> Response<Bytes> {
    let mut res = Refusal::new(
        StatusCode::FORBIDDEN,
        "cross_site_request",
        rejection.description(),
    )
    .render(errors);
    res.extensions_mut().insert(rejection);
    res
}

/// The engine's rejection response: the shared renderer's body.
#[derive(Clone)]
struct Refuse {
    errors: Arc<dyn RenderError>,
}

impl<B> ResponseForProtectionError<Either<B, Full<Bytes>>> for Refuse {
    fn response_for_protection_error(
        &mut self,
        error: ProtectionError,
    ) -> Response<Either<B, Full<Bytes>>> {
        let rejection = CrossSiteRejection::from(&error);
        #[cfg(feature = "tracing")]
        tracing::debug!(target: "baton::cookie", kind = ?rejection, "cross-site request refused");
        forbidden(&*self.errors, rejection).map(|body| Either::Right(Full::new(body)))
    }
}

/// The inner service of [`check`](OriginGuardLayer::check): answers 200 at once.
#[derive(Clone, Copy, Debug)]
struct Pass;

impl Service<Request<()>> for Pass {
    type Response = Response<()>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Response<()>, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        std::future::ready(Ok(Response::new(())))
    }
}

/// Puts the inner service's body on the left of the guard's `Either`.
#[derive(Clone, Debug)]
struct Left<S>(S);

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Left<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = S::Error;
    type Future = LeftFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        LeftFuture {
            future: self.0.call(req),
        }
    }
}

pin_project! {
    /// The response future of [`OriginGuard`] for a request that passed.
    pub struct LeftFuture<F> {
        #[pin]
        future: F,
    }
}

impl<F> fmt::Debug for LeftFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeftFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for LeftFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Either<B, Full<Bytes>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(self.project().future.poll(cx))?;
        Poll::Ready(Ok(response.map(Either::Left)))
    }
}

impl<S> Layer<S> for OriginGuardLayer {
    type Service = OriginGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OriginGuard {
            inner: self.csrf.layer(Left(inner)),
        }
    }
}

/// The middleware built by [`OriginGuardLayer`].
#[derive(Clone)]
pub struct OriginGuard<S> {
    inner: Csrf<Left<S>, Refuse>,
}

impl<S> fmt::Debug for OriginGuard<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginGuard").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for OriginGuard<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = S::Error;
    type Future = OriginGuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        self.inner.call(req)
    }
}

/// The response future of [`OriginGuard`].
pub type OriginGuardFuture<F> = tower_http::csrf::ResponseFuture<LeftFuture<F>>;
