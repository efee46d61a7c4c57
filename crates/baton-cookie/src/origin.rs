//! `OriginGuardLayer`: refuses cross-site requests with unsafe methods (CSRF).
//!
//! The rules, like the cross-origin protection of Go 1.25's `net/http`:
//! 1. Safe methods (`GET`, `HEAD`, `OPTIONS`, `TRACE`) always pass.
//! 2. Exempt paths, and requests whose `Origin` is in the trusted list, pass.
//! 3. `Sec-Fetch-Site: same-origin` or `none` (the user typed it) passes; `same-site` passes
//!    only when allowed; `cross-site` and anything else is refused with 403.
//! 4. Without `Sec-Fetch-Site`: a request without `Origin` passes (not a browser, or a very
//!    old one); an `Origin` whose host and port equal the request's `Host` passes; anything
//!    else, `Origin: null` included, is refused.
//!
//! Differences from Go: `same-site` requests are refused unless
//! [`allow_same_site`](OriginGuardLayer::allow_same_site) is set (Go always refuses them);
//! trusted origins compare scheme, host and port exactly; exemptions are path prefixes; the
//! refusal has a JSON body.
//!
//! # Example
//! ```
//! use baton_cookie::OriginGuardLayer;
//! use http::{Method, Request, Response, StatusCode};
//! use std::convert::Infallible;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(OriginGuardLayer::new())
//!     .service(service_fn(|_req: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::new()))
//!     }));
//! let cross = Request::post("/auth/refresh")
//!     .header("sec-fetch-site", "cross-site")
//!     .body(String::new())
//!     .unwrap();
//! assert_eq!(svc.clone().oneshot(cross).await.unwrap().status(), StatusCode::FORBIDDEN);
//! let same = Request::post("/auth/refresh")
//!     .header("sec-fetch-site", "same-origin")
//!     .body(String::new())
//!     .unwrap();
//! assert_eq!(svc.oneshot(same).await.unwrap().status(), StatusCode::OK);
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

#[derive(Clone, Debug, Default)]
struct Config {
    trusted: Vec<String>,
    exempt: Vec<String>,
    allow_same_site: bool,
}

/// Refuses unsafe cross-site requests with 403 (see the [module docs](self)).
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct OriginGuardLayer {
    config: Arc<Config>,
}

impl OriginGuardLayer {
    /// Same-origin only, nothing trusted or exempt.
    pub fn new() -> Self {
        OriginGuardLayer::default()
    }

    /// Trusts requests from `origin` (`scheme://host[:port]`, compared exactly).
    pub fn trust_origin(mut self, origin: impl Into<String>) -> Self {
        let origin = origin.into().trim_end_matches('/').to_ascii_lowercase();
        Arc::make_mut(&mut self.config).trusted.push(origin);
        self
    }

    /// Lets requests to paths starting with `prefix` through unchecked.
    pub fn exempt_path(mut self, prefix: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.config).exempt.push(prefix.into());
        self
    }

    /// Lets `Sec-Fetch-Site: same-site` requests (from sibling subdomains) through.
    pub fn allow_same_site(mut self) -> Self {
        Arc::make_mut(&mut self.config).allow_same_site = true;
        self
    }

    /// Checks `req` as the middleware would, for handlers that route by hand.
    ///
    /// # Errors
    /// Why the request is refused.
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), CrossSiteRejection> {
        self.config.check(req)
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrossSiteRejection {
    /// `Sec-Fetch-Site` said `cross-site`, or `same-site` when not allowed, or an unknown value.
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

fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The `host[:port]` of an origin `scheme://host[:port]`.
fn origin_authority(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

impl Config {
    fn check<B>(&self, req: &Request<B>) -> Result<(), CrossSiteRejection> {
        if is_safe(req.method()) {
            return Ok(());
        }
        let path = req.uri().path();
        if self.exempt.iter().any(|p| path.starts_with(p.as_str())) {
            return Ok(());
        }
        let origin = req
            .headers()
            .get(ORIGIN)
            .map(|o| o.to_str().unwrap_or("invalid"));
        if let Some(origin) = origin
            && self.trusted.iter().any(|t| t.eq_ignore_ascii_case(origin))
        {
            return Ok(());
        }
        if let Some(site) = req.headers().get("sec-fetch-site") {
            return match site.as_bytes() {
                b"same-origin" | b"none" => Ok(()),
                b"same-site" if self.allow_same_site => Ok(()),
                _ => Err(CrossSiteRejection::FetchSite),
            };
        }
        let Some(origin) = origin else { return Ok(()) };
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or(req.uri().authority().map(|a| a.as_str()));
        match (origin_authority(origin), host) {
            (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
            _ => Err(CrossSiteRejection::Origin),
        }
    }
}

impl<S> Layer<S> for OriginGuardLayer {
    type Service = OriginGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OriginGuard {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The middleware built by [`OriginGuardLayer`].
#[derive(Clone)]
pub struct OriginGuard<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for OriginGuard<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginGuard")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S> OriginGuard<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the middleware, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

fn forbidden(rejection: CrossSiteRejection) -> Response<Full<Bytes>> {
    let body = format!(
        "{{\"error\":\"cross_site_request\",\"error_description\":\"{}\"}}",
        rejection.description()
    );
    let mut res = Response::new(Full::from(body));
    *res.status_mut() = StatusCode::FORBIDDEN;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.extensions_mut().insert(rejection);
    res
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for OriginGuard<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match self.config.check(&req) {
            Ok(()) => ResponseFuture {
                kind: Kind::Inner {
                    future: self.inner.call(req),
                },
            },
            Err(rejection) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(target: "baton::cookie", kind = ?rejection, method = %req.method(), "cross-site request refused");
                ResponseFuture {
                    kind: Kind::Rejected {
                        response: Some(forbidden(rejection)),
                    },
                }
            }
        }
    }
}

pin_project! {
    /// The response future of [`OriginGuard`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Rejected { response: Option<Response<Full<Bytes>>> },
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Either<B, Full<Bytes>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(Either::Left)))
            }
            KindProj::Rejected { response } => {
                let response = response
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(Ok(response.map(Either::Right)))
            }
        }
    }
}
