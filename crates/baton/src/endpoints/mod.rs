//! The auth endpoints as one tower `Service`.

// Handlers return `Result<_, Response>`: the error side is the finished error response, built
// only on failure paths.
#![allow(clippy::result_large_err)]

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use baton_bearer::Revocation;
use baton_core::Refusal;
use baton_store::{
    Device, RefreshStore, RotateContext, RotateError, Rotation, RotationKind, Session, SessionId,
    StoreError,
};
use baton_token::Claims;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA, SET_COOKIE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use tower_service::Service;

use crate::device::{client_ip, user_agent};
use crate::{Authenticator, Inner};

mod login;
#[cfg(feature = "oidc")]
pub(crate) mod oidc;
mod refresh;
mod sessions;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `POST {base}/login`, `/refresh`, `/logout`, `/logout-others`, `/logout-all`,
/// `/reauthenticate`, `GET {base}/sessions`,
/// `DELETE {base}/sessions/{id}` and `GET /.well-known/jwks.json`, built by
/// [`Baton::endpoints`](crate::Baton::endpoints). Every failure is a response; the error
/// type is `Infallible`.
pub struct AuthEndpoints<S, A: Authenticator> {
    pub(crate) inner: Arc<Inner<S, A>>,
}

impl<S, A: Authenticator> Clone for AuthEndpoints<S, A> {
    fn clone(&self) -> Self {
        AuthEndpoints {
            inner: self.inner.clone(),
        }
    }
}

impl<S, A: Authenticator> fmt::Debug for AuthEndpoints<S, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthEndpoints")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

/// Why a refresh did not produce new credentials.
pub(crate) enum RotateFailure {
    /// The token cannot be used (401, cookie cleared).
    Refused(&'static str),
    /// The store failed (503 with `Retry-After` when unavailable, 500 when corrupted).
    Store(StoreError),
    /// The rotation happened but no access token could be issued: 503 with the successor.
    Unavailable(String),
}

impl RotateFailure {
    fn into_response<S: RefreshStore, A: Authenticator>(
        self,
        inner: &Inner<S, A>,
    ) -> Response<Bytes> {
        match self {
            RotateFailure::Refused(why) => inner.refresh_refused(why),
            RotateFailure::Store(e) => inner.store_failed(e),
            RotateFailure::Unavailable(successor) => {
                let mut res = inner.unavailable("no access token could be issued; retry");
                if let Ok(cookie) = inner.refresh_cookie.set(&successor) {
                    res.headers_mut().append(SET_COOKIE, cookie);
                }
                res
            }
        }
    }
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Bytes> {
    let mut res = Response::new(Bytes::from(value.to_string()));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The type of the session's access tokens: `DPoP` when it is bound to a key, `Bearer`
/// otherwise.
fn token_type(session: &Session) -> &'static str {
    if session.dpop_jkt.is_some() {
        "DPoP"
    } else {
        "Bearer"
    }
}

/// A public JSON document (keys, discovery) that caches may keep five minutes.
fn public_json(body: Bytes) -> Response<Bytes> {
    let mut res = Response::new(body);
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    res
}

fn empty(status: StatusCode) -> Response<Bytes> {
    let mut res = Response::new(Bytes::new());
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn outcome(name: &'static str, what: &'static str) {
    metrics::counter!(name, "outcome" => what).increment(1);
}

impl<S: RefreshStore, A: Authenticator> Inner<S, A> {
    /// An error response through the shared renderer, its [`Refusal`] in the extensions.
    fn error(
        &self,
        status: StatusCode,
        code: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> Response<Bytes> {
        Refusal::new(status, code, description).render(&*self.errors)
    }

    fn unavailable(&self, what: &'static str) -> Response<Bytes> {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            what,
        )
        .with_retry_after(std::time::Duration::from_secs(1))
        .render(&*self.errors)
    }

    /// Hands one event to the audit sink, with the client's address and user agent.
    pub(crate) fn audit(
        &self,
        event: crate::AuditEvent,
        ip: Option<std::net::IpAddr>,
        user_agent: Option<&str>,
    ) {
        self.audit.record(&crate::AuditRecord {
            event,
            ip,
            user_agent: user_agent.map(|ua| crate::audit::capped(ua, 256)),
            at_ms: self.clock.now_millis(),
        });
    }

    /// The answer to a store failure: 503 with `Retry-After` when the store is unavailable
    /// (the client retries), 400 for input it cannot store, and 500 with a body that says
    /// nothing more for corrupted data or an internal fault (logged: retrying will not fix it).
    fn store_failed(&self, e: StoreError) -> Response<Bytes> {
        match e {
            StoreError::Unavailable(_cause) => {
                #[cfg(feature = "tracing")]
                tracing::error!(target: "baton::auth", cause = %baton_core::ErrorChain(_cause.get_ref()), "session store unavailable; answering 503");
                self.unavailable("the session store is unavailable")
            }
            StoreError::InvalidInput(d) => {
                self.error(StatusCode::BAD_REQUEST, "invalid_request", d)
            }
            _e => {
                outcome("baton_store_faults_total", "internal");
                #[cfg(feature = "tracing")]
                tracing::error!(target: "baton::auth", error = %baton_core::ErrorChain(&_e), "session store fault; answering 500");
                self.error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal error",
                )
            }
        }
    }

    /// Records `revocations` where every instance finds them; `Err` is the 503 to answer
    /// (the instances' lists may not have them yet).
    async fn record(&self, revocations: &[Revocation]) -> Result<(), Response<Bytes>> {
        match self.revocations.revoke(revocations).await {
            Ok(()) => Ok(()),
            Err(_e) => {
                outcome("baton_revocations_total", "unrecorded");
                #[cfg(feature = "tracing")]
                tracing::error!(target: "baton::auth", error = %baton_core::ErrorChain(&_e), "revocation not recorded; answering 503");
                Err(self.unavailable("the revocation could not be recorded; retry"))
            }
        }
    }

    /// Records revocations the store already made (reuse, eviction, a user gone): nothing to
    /// answer 503 for; a feed that cannot record them now retries in the background.
    async fn record_made(&self, revocations: &[Revocation]) {
        if self.revocations.revoked(revocations).await.is_err() {
            outcome("baton_revocations_total", "deferred");
        }
    }

    fn clear_refresh_cookie(&self, res: &mut Response<Bytes>) {
        res.headers_mut()
            .append(SET_COOKIE, self.refresh_cookie.clear());
        if let Some(access) = &self.access_cookie {
            res.headers_mut().append(SET_COOKIE, access.clear());
        }
    }

    /// 401 for a refresh that cannot succeed, clearing the cookie.
    fn refresh_refused(&self, description: &'static str) -> Response<Bytes> {
        let mut res = self.error(StatusCode::UNAUTHORIZED, "invalid_grant", description);
        self.clear_refresh_cookie(&mut res);
        res
    }

    /// Reads a JSON body: content type, size cap, syntax.
    /// `expected` says what the body must hold, for a body of the wrong shape.
    async fn json_body<T, B>(
        &self,
        req: Request<B>,
        expected: &'static str,
    ) -> Result<T, Response<Bytes>>
    where
        T: for<'de> Deserialize<'de>,
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(self.error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                "the body must be application/json",
            ));
        }
        let bytes = match Limited::new(req.into_body(), self.max_body).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return Err(self.error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request",
                    "the body is too large",
                ));
            }
            Err(_) => {
                return Err(self.error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the body could not be read",
                ));
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            let description = if e.is_data() {
                expected
            } else {
                "the body is not valid JSON"
            };
            self.error(StatusCode::BAD_REQUEST, "invalid_request", description)
        })
    }

    /// 500 (logged, once per process at error level) when per-network limits need the
    /// request's peer address and the server gave none: the server's misconfiguration, which
    /// would otherwise put every client in one bucket.
    pub(crate) fn check_peer<B>(&self, req: &Request<B>) -> Result<(), Response<Bytes>> {
        if !self.client_addr_required || crate::device::peer(req.extensions()).is_some() {
            return Ok(());
        }
        #[cfg(feature = "tracing")]
        {
            static LOGGED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::debug!(target: "baton::auth", "a request without a peer address: 500");
            } else {
                tracing::error!(
                    target: "baton::auth",
                    "the request carries no peer address, which the per-network rate limits \
                     need: serve with axum's into_make_service_with_connect_info::<SocketAddr>(), \
                     or insert baton::PeerAddr in each request; answering 500 (logged once)"
                );
            }
        }
        Err(self.error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error",
        ))
    }

    /// The device a request comes from: user agent and client address.
    fn device_of<B>(&self, req: &Request<B>) -> Device {
        Device::new(
            user_agent(req.headers()),
            client_ip(req.headers(), req.extensions(), &self.client_ip),
        )
    }

    /// `device` with the request's device identifier header, if any (400 when it is
    /// repeated or not a valid identifier).
    fn with_device_id<B>(
        &self,
        req: &Request<B>,
        device: Device,
    ) -> Result<Device, Response<Bytes>> {
        let mut ids = req.headers().get_all(&self.device_id_header).iter();
        let Some(id) = ids.next() else {
            return Ok(device);
        };
        let id = id
            .to_str()
            .ok()
            .filter(|id| ids.next().is_none() && baton_store::check_device_id(id).is_ok());
        match id {
            Some(id) => Ok(device.with_id(id)),
            None => Err(self.error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the device id header must appear once, with 1 to 128 characters of A-Z a-z 0-9 - . _ ~ :",
            )),
        }
    }

    /// Signs an access token for `session`, with when and how its user authenticated: the
    /// token and its lifetime in seconds.
    /// Bound to the session's DPoP key, if it has one (`cnf.jkt`).
    pub(crate) fn issue_access(
        &self,
        session: &Session,
        claims: A::Claims,
    ) -> Option<(String, u64)> {
        let mut access = self
            .issuer
            .claims(&session.user_id, claims)
            .ok()?
            .with_authentication(
                session.auth_time / 1000,
                session.amr.iter().cloned(),
                session.acr.clone(),
            );
        access.sid = Some(session.id.to_string());
        if let Some(jkt) = &session.dpop_jkt {
            access = access.with_dpop_jkt(jkt.as_str());
        }
        match self.issuer.sign(&access) {
            Ok(token) => Some((
                token,
                access.exp.saturating_sub(access.iat.unwrap_or(access.exp)),
            )),
            Err(_e) => {
                #[cfg(feature = "tracing")]
                tracing::error!(target: "baton::auth", error = %_e, "signing failed");
                None
            }
        }
    }

    /// The `Set-Cookie` values for a new refresh token (and, in cookie mode, access token).
    pub(crate) fn token_cookies(&self, refresh: &str, access: &str) -> Option<Vec<HeaderValue>> {
        let mut cookies = vec![self.refresh_cookie.set(refresh).ok()?];
        if let Some(spec) = &self.access_cookie {
            cookies.push(spec.set(access).ok()?);
        }
        Some(cookies)
    }

    /// The 200 token response: access token in the body, refresh (and in cookie mode access)
    /// cookie set.
    fn token_response(
        &self,
        session: &Session,
        claims: A::Claims,
        refresh: &str,
    ) -> Response<Bytes> {
        let issued = self.issue_access(session, claims);
        let cookies = issued
            .as_ref()
            .and_then(|(token, _)| self.token_cookies(refresh, token));
        let (Some((token, expires_in)), Some(cookies)) = (issued, cookies) else {
            // The session exists (and, on refresh, rotated): hand its refresh token back with
            // the 503, so the retry presents the live one.
            return RotateFailure::Unavailable(refresh.to_owned()).into_response(self);
        };
        let mut res = json_response(
            StatusCode::OK,
            &serde_json::json!({ "access_token": token, "token_type": token_type(session), "expires_in": expires_in }),
        );
        res.headers_mut()
            .insert(PRAGMA, HeaderValue::from_static("no-cache"));
        // The nonce to use next (when the server hands them out): the client's following
        // proofs need no refusal to learn it.
        if let Some(nonce) = self
            .dpop
            .as_ref()
            .and_then(baton_bearer::Dpop::current_nonce)
        {
            res.headers_mut().insert("dpop-nonce", nonce);
        }
        for cookie in cookies {
            res.headers_mut().append(SET_COOKIE, cookie);
        }
        res
    }

    /// The request's DPoP proof for a token request (login, refresh), checked but not yet
    /// recorded: `None` without one. A bad proof is 400 `invalid_dpop_proof` (RFC 9449
    /// section 5), and so is no proof where DPoP is required. Recorded by
    /// [`recorded_jkt`](Self::recorded_jkt) or [`record_proof`](Self::record_proof).
    fn token_request_proof<B>(
        &self,
        req: &Request<B>,
    ) -> Result<Option<baton_token::VerifiedProof>, Response<Bytes>> {
        let Some(dpop) = &self.dpop else {
            return Ok(None);
        };
        match dpop.verify(req, None) {
            Ok(Some(proof)) => Ok(Some(proof)),
            Ok(None) if dpop.is_required() => Err(self.error(
                StatusCode::BAD_REQUEST,
                "invalid_dpop_proof",
                "a DPoP proof is required",
            )),
            Ok(None) => Ok(None),
            Err(e) => Err(self.dpop_refused(e)),
        }
    }

    /// Records `proof` (when there is one) and gives the key it proves: a replayed proof is
    /// 400, a replay cache that cannot answer 503.
    async fn recorded_jkt(
        &self,
        proof: Option<baton_token::VerifiedProof>,
    ) -> Result<Option<String>, Response<Bytes>> {
        match proof {
            Some(proof) => self.record_proof(&proof).await.map(|()| Some(proof.jkt)),
            None => Ok(None),
        }
    }

    /// A token endpoint's answer to a refused proof: 400 for the client's (RFC 9449 section
    /// 5), 503 when the replay cache cannot tell.
    fn dpop_refused(&self, e: baton_bearer::DpopCheckError) -> Response<Bytes> {
        match e {
            baton_bearer::DpopCheckError::Proof(e) => {
                let mut res = self.error(StatusCode::BAD_REQUEST, e.code(), e.description());
                if matches!(e, baton_token::DpopError::UseNonce)
                    && let Some(nonce) = self
                        .dpop
                        .as_ref()
                        .and_then(baton_bearer::Dpop::current_nonce)
                {
                    res.headers_mut().insert("dpop-nonce", nonce);
                }
                res
            }
            _ => self.unavailable("DPoP proofs cannot be checked now; retry"),
        }
    }

    /// Records a proof checked by
    /// [`token_request_proof`](Self::token_request_proof).
    async fn record_proof(
        &self,
        proof: &baton_token::VerifiedProof,
    ) -> Result<(), Response<Bytes>> {
        let Some(dpop) = &self.dpop else {
            return Ok(());
        };
        dpop.record(proof).await.map_err(|e| self.dpop_refused(e))
    }

    fn jwks(&self) -> Response<Bytes> {
        public_json(Bytes::from(self.issuer.keys().load().jwks_json()))
    }

    pub(crate) async fn handle<B>(&self, req: Request<B>) -> Response<Bytes>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let path = req.uri().path().to_owned();
        if path == DISCOVERY_PATH
            && let Some(document) = &self.discovery
        {
            return if req.method() == Method::GET || req.method() == Method::HEAD {
                public_json(document.clone())
            } else {
                self.error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use GET",
                )
            };
        }
        if path == "/.well-known/jwks.json" {
            return if req.method() == Method::GET || req.method() == Method::HEAD {
                self.jwks()
            } else {
                self.error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use GET",
                )
            };
        }
        let Some(rest) = path.strip_prefix(self.base.as_str()) else {
            return self.error(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
        };
        if let Err(rejection) = self.origin.check(&req) {
            #[cfg(feature = "tracing")]
            tracing::info!(target: "baton::auth", ?rejection, "cross-site request refused");
            return self.origin.refuse(rejection);
        }
        if let Err(res) = self.check_peer(&req) {
            return res;
        }
        let method = req.method().clone();
        match (rest, method) {
            ("/login", Method::POST) => self.login(req).await,
            ("/refresh", Method::POST) => self.refresh(req).await,
            ("/logout", Method::POST) => self.logout(req).await,
            ("/logout-all", Method::POST) => self.logout_all(req).await,
            ("/logout-others", Method::POST) => self.logout_others(req).await,
            ("/reauthenticate", Method::POST) => self.reauthenticate(req).await,
            ("/sessions", Method::GET) => self.sessions(req).await,
            #[cfg(feature = "oidc")]
            (r, Method::GET) if r.starts_with("/oidc/") => {
                let r = r["/oidc/".len()..].to_owned();
                self.oidc(req, &r).await
            }
            #[cfg(feature = "oidc")]
            (r, Method::POST) if r.starts_with("/oidc/") => {
                let r = r["/oidc/".len()..].to_owned();
                self.oidc_link(req, &r).await
            }
            (r, Method::DELETE) if r.starts_with("/sessions/") => {
                let id = r["/sessions/".len()..].to_owned();
                self.delete_session(req, &id).await
            }
            (
                "/login" | "/refresh" | "/logout" | "/logout-all" | "/logout-others"
                | "/reauthenticate",
                _,
            ) => self.error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use POST",
            ),
            ("/sessions", _) => self.error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use GET",
            ),
            (r, _) if r.starts_with("/sessions/") => self.error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use DELETE",
            ),
            _ => self.error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
        }
    }
}

/// Where the discovery document is served.
pub(crate) const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// The discovery document of an issuer that is an origin (`https://login.example`, a
/// trailing `/` allowed): its `issuer`, exactly as tokens carry it, and its `jwks_uri`, so a
/// resource server finds the keys from the issuer alone. `None` for an issuer that is not an
/// `http(s)` origin: a name, a URL with a path (whose document would live under that path),
/// a query or fragment, or user information.
pub(crate) fn discovery_document(issuer: &str) -> Option<Bytes> {
    if issuer.contains(['#', '?', '@']) {
        return None;
    }
    let uri: http::Uri = issuer.parse().ok()?;
    let scheme = uri.scheme_str()?;
    if !(scheme == "https" || scheme == "http")
        || uri.authority().is_none()
        || !matches!(uri.path(), "" | "/")
    {
        return None;
    }
    let document = serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/')),
    });
    Some(Bytes::from(document.to_string()))
}

impl<S, A, B> Service<Request<B>> for AuthEndpoints<S, A>
where
    S: RefreshStore,
    A: Authenticator,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(inner.handle(req).await.map(Full::new)) })
    }
}

#[cfg(test)]
mod discovery_tests {
    use super::discovery_document;

    #[test]
    fn only_an_origin_gets_a_document_naming_it_exactly() {
        let doc = |iss| {
            discovery_document(iss)
                .map(|b| serde_json::from_slice::<serde_json::Value>(&b).unwrap())
        };
        let d = doc("https://login.example:8443").unwrap();
        assert_eq!(d["issuer"], "https://login.example:8443");
        assert_eq!(
            d["jwks_uri"],
            "https://login.example:8443/.well-known/jwks.json"
        );
        let d = doc("https://login.example/").unwrap();
        assert_eq!(d["issuer"], "https://login.example/");
        assert_eq!(d["jwks_uri"], "https://login.example/.well-known/jwks.json");
        for not_origin in [
            "login-service",
            "https://login.example/tenant",
            "https://user:pw@login.example",
            "https://login.example#x",
            "https://login.example?x=1",
            "ftp://login.example",
            "",
        ] {
            assert!(doc(not_origin).is_none(), "{not_origin}");
        }
    }
}
