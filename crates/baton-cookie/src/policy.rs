//! `CookiePolicyLayer`: enforces cookie attributes on every outgoing `Set-Cookie`.
//!
//! Whatever the application's handlers do, cookies that match a rule leave with the
//! attributes the rule requires (rewritten: what is missing added, what is weaker
//! tightened), or do not leave at all (stripped). By default, any cookie whose name marks it
//! as a credential (`session`, `token`, `auth`, `refresh`, `access`, `jwt`, `sid`, or a
//! `__Host-`/`__Secure-` prefix) is made `HttpOnly` and `Secure`. Other cookies, and
//! `Set-Cookie` values that do not parse, are left as they are.
//!
//! # Example
//! ```
//! use baton_cookie::{CookiePolicyLayer, CookieSpec};
//! use http::{Request, Response, header::SET_COOKIE};
//! use std::convert::Infallible;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let refresh = CookieSpec::refresh("/auth").build().unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(CookiePolicyLayer::new().enforce(&refresh))
//!     .service(service_fn(|_req: Request<()>| async {
//!         // A careless handler: no HttpOnly, SameSite=Lax, Path=/.
//!         let res = Response::builder()
//!             .header(SET_COOKIE, "__Secure-refresh=v1.x; Secure; SameSite=Lax; Path=/")
//!             .header(SET_COOKIE, "theme=dark")
//!             .body(())
//!             .unwrap();
//!         Ok::<_, Infallible>(res)
//!     }));
//! let res = svc.oneshot(Request::new(())).await.unwrap();
//! let cookies: Vec<_> = res.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
//! assert_eq!(cookies, [
//!     "__Secure-refresh=v1.x; HttpOnly; SameSite=Strict; Secure; Path=/auth",
//!     "theme=dark",
//! ]);
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use cookie::{Cookie, SameSite};
use http::header::SET_COOKIE;
use http::{HeaderValue, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::CookieSpec;

/// Which cookies a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Match {
    /// Exactly this name.
    Name(String),
    /// Names starting with this prefix.
    Prefix(String),
}

impl Match {
    fn matches(&self, name: &str) -> bool {
        match self {
            Match::Name(n) => n == name,
            Match::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

/// The attributes a rule requires.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Requirements {
    /// `HttpOnly`.
    pub http_only: bool,
    /// `Secure`.
    pub secure: bool,
    /// At least this `SameSite` (`Strict` > `Lax` > unset > `None`).
    pub same_site: Option<SameSite>,
    /// Exactly this `Path`.
    pub path: Option<String>,
    /// No `Domain` attribute.
    pub no_domain: bool,
}

impl Requirements {
    /// `HttpOnly` and `Secure`.
    pub fn credential() -> Self {
        Requirements {
            http_only: true,
            secure: true,
            ..Requirements::default()
        }
    }

    /// Also requires at least `same_site`.
    #[must_use]
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = Some(same_site);
        self
    }

    /// Also requires exactly `path`.
    #[must_use]
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    Rewrite(Requirements),
    Strip,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    matcher: Match,
    action: Action,
}

#[derive(Clone, Debug)]
struct Policy {
    rules: Vec<Rule>,
    credential_default: bool,
    allow_insecure: bool,
}

/// Enforces cookie attributes on every `Set-Cookie` of every response (see the
/// [module docs](self)).
#[derive(Clone, Debug)]
#[must_use]
pub struct CookiePolicyLayer {
    policy: Arc<Policy>,
}

impl Default for CookiePolicyLayer {
    fn default() -> Self {
        CookiePolicyLayer::new()
    }
}

impl CookiePolicyLayer {
    /// No rules yet, and the default credential rule on.
    pub fn new() -> Self {
        CookiePolicyLayer {
            policy: Arc::new(Policy {
                rules: Vec::new(),
                credential_default: true,
                allow_insecure: false,
            }),
        }
    }

    fn push(mut self, rule: Rule) -> Self {
        Arc::make_mut(&mut self.policy).rules.push(rule);
        self
    }

    /// Rewrites cookies that match to meet `requirements`. Rules apply in the order added;
    /// the first that matches wins.
    pub fn rewrite(self, matcher: Match, requirements: Requirements) -> Self {
        self.push(Rule {
            matcher,
            action: Action::Rewrite(requirements),
        })
    }

    /// Drops cookies that match (logged), whatever their attributes.
    pub fn strip(self, matcher: Match) -> Self {
        self.push(Rule {
            matcher,
            action: Action::Strip,
        })
    }

    /// Rewrites the cookie of `spec` to exactly its attributes: `HttpOnly`, `Secure`, at
    /// least its `SameSite`, its path, and no `Domain` unless the spec has one.
    pub fn enforce(self, spec: &CookieSpec) -> Self {
        let requirements = Requirements {
            http_only: true,
            secure: spec.is_secure(),
            same_site: Some(spec.same_site()),
            path: Some(spec.path().to_owned()),
            no_domain: spec.domain().is_none(),
        };
        self.rewrite(Match::Name(spec.name().to_owned()), requirements)
    }

    /// Turns the default rule for credential-looking names off.
    pub fn without_credential_default(mut self) -> Self {
        Arc::make_mut(&mut self.policy).credential_default = false;
        self
    }

    /// Stops adding `Secure`, so cookies work over plain HTTP on hosts other than localhost.
    ///
    /// # Security
    /// Tokens then cross the network in clear text. Browsers accept `Secure` cookies on
    /// `http://localhost`, so development does not need this.
    pub fn dangerous_allow_insecure_http(mut self) -> Self {
        #[cfg(feature = "tracing")]
        tracing::warn!(target: "baton::cookie", "cookie policy: Secure is NOT enforced (insecure HTTP allowed)");
        Arc::make_mut(&mut self.policy).allow_insecure = true;
        self
    }
}

/// `true` when a cookie's name marks it as a credential.
pub fn looks_like_credential(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("__host-")
        || lower.starts_with("__secure-")
        || [
            "session", "token", "auth", "refresh", "access", "jwt", "sid",
        ]
        .iter()
        .any(|w| lower.contains(w))
}

fn strength(same_site: Option<SameSite>) -> u8 {
    match same_site {
        Some(SameSite::None) => 0,
        None => 1,
        Some(SameSite::Lax) => 2,
        Some(SameSite::Strict) => 3,
    }
}

enum Outcome {
    Keep,
    Replace(HeaderValue),
    Strip,
}

impl Policy {
    fn action_for(&self, name: &str) -> Option<Action> {
        if let Some(rule) = self.rules.iter().find(|r| r.matcher.matches(name)) {
            return Some(rule.action.clone());
        }
        (self.credential_default && looks_like_credential(name))
            .then(|| Action::Rewrite(Requirements::credential()))
    }

    fn apply(&self, value: &HeaderValue) -> Outcome {
        let Some(cookie) = value.to_str().ok().and_then(|s| Cookie::parse(s).ok()) else {
            #[cfg(feature = "tracing")]
            tracing::debug!(target: "baton::cookie", "Set-Cookie value does not parse; left as is");
            return Outcome::Keep;
        };
        match self.action_for(cookie.name()) {
            None => Outcome::Keep,
            Some(Action::Strip) => {
                #[cfg(feature = "tracing")]
                tracing::warn!(target: "baton::cookie", name = cookie.name(), "Set-Cookie stripped by policy");
                Outcome::Strip
            }
            Some(Action::Rewrite(req)) => self.rewrite(cookie, &req),
        }
    }

    fn rewrite(&self, mut cookie: Cookie<'_>, req: &Requirements) -> Outcome {
        let mut changed = false;
        if req.http_only && cookie.http_only() != Some(true) {
            cookie.set_http_only(true);
            changed = true;
        }
        if req.secure && !self.allow_insecure && cookie.secure() != Some(true) {
            cookie.set_secure(true);
            changed = true;
        }
        if let Some(wanted) = req.same_site
            && strength(cookie.same_site()) < strength(Some(wanted))
        {
            cookie.set_same_site(wanted);
            changed = true;
        }
        if let Some(path) = &req.path
            && cookie.path() != Some(path.as_str())
        {
            cookie.set_path(path.clone());
            changed = true;
        }
        if req.no_domain && cookie.domain().is_some() {
            cookie.unset_domain();
            changed = true;
        }
        if !changed {
            return Outcome::Keep;
        }
        #[cfg(feature = "tracing")]
        tracing::debug!(target: "baton::cookie", name = cookie.name(), "Set-Cookie rewritten by policy");
        match HeaderValue::try_from(cookie.to_string()) {
            Ok(v) => Outcome::Replace(v),
            // Cannot happen for a cookie that parsed from a header value; refuse to send it
            // weaker than required.
            Err(_) => Outcome::Strip,
        }
    }

    fn enforce<B>(&self, response: &mut Response<B>) {
        let headers = response.headers_mut();
        if !headers.contains_key(SET_COOKIE) {
            return;
        }
        let mut kept = Vec::new();
        let mut touched = false;
        for value in headers.get_all(SET_COOKIE) {
            match self.apply(value) {
                Outcome::Keep => kept.push(value.clone()),
                Outcome::Replace(v) => {
                    kept.push(v);
                    touched = true;
                }
                Outcome::Strip => touched = true,
            }
        }
        if touched {
            headers.remove(SET_COOKIE);
            for value in kept {
                headers.append(SET_COOKIE, value);
            }
        }
    }
}

impl<S> Layer<S> for CookiePolicyLayer {
    type Service = CookiePolicy<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CookiePolicy {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The middleware built by [`CookiePolicyLayer`].
#[derive(Clone)]
pub struct CookiePolicy<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S: fmt::Debug> fmt::Debug for CookiePolicy<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookiePolicy")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish()
    }
}

impl<S> CookiePolicy<S> {
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

impl<S, Req, ResBody> Service<Req> for CookiePolicy<S>
where
    S: Service<Req, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture {
            future: self.inner.call(req),
            policy: self.policy.clone(),
        }
    }
}

pin_project! {
    /// The response future of [`CookiePolicy`].
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        policy: Arc<Policy>,
    }
}

impl<F: fmt::Debug> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("future", &self.future)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.future.poll(cx))?;
        this.policy.enforce(&mut response);
        Poll::Ready(Ok(response))
    }
}
