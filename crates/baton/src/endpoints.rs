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
    Device, RefreshStore, RotateContext, RotateError, Rotation, RotationKind, SessionId, StoreError,
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

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `POST {base}/login`, `/refresh`, `/logout`, `/logout-all`, `GET {base}/sessions`,
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

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// What a device cookie's tag binds: the canonical username and the nonce.
const DEVICE_CONTEXT: &[u8] = b"baton device cookie v1";

fn device_data(username: &str, nonce: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(username.len() + 1 + nonce.len());
    data.extend_from_slice(username.as_bytes());
    data.push(0x1f);
    data.extend_from_slice(nonce);
    data
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

    /// The answer to a store failure: 503 with `Retry-After` when the store is unavailable
    /// (the client retries), 400 for input it cannot store, and 500 with a body that says
    /// nothing more for corrupted data or an internal fault (logged: retrying will not fix it).
    fn store_failed(&self, e: StoreError) -> Response<Bytes> {
        match e {
            StoreError::Unavailable(_cause) => {
                #[cfg(feature = "tracing")]
                tracing::error!(target: "baton::auth", cause = %_cause, "session store unavailable; answering 503");
                self.unavailable("the session store is unavailable")
            }
            StoreError::InvalidInput(d) => {
                self.error(StatusCode::BAD_REQUEST, "invalid_request", d)
            }
            _e => {
                outcome("baton_store_faults_total", "internal");
                #[cfg(feature = "tracing")]
                tracing::error!(target: "baton::auth", error = %_e, "session store fault; answering 500");
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
                tracing::error!(target: "baton::auth", error = %_e, "revocation not recorded; answering 503");
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
    async fn json_body<T, B>(&self, req: Request<B>) -> Result<T, Response<Bytes>>
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
                "the body must be a JSON object with string fields username and password"
            } else {
                "the body is not valid JSON"
            };
            self.error(StatusCode::BAD_REQUEST, "invalid_request", description)
        })
    }

    fn device_of<B>(&self, req: &Request<B>) -> Device {
        Device::new(
            user_agent(req.headers()),
            client_ip(req.headers(), req.extensions(), &self.client_ip),
        )
    }

    /// Signs an access token for `user_id` bound to session `sid`: the token and its
    /// lifetime in seconds.
    pub(crate) fn issue_access(
        &self,
        user_id: &str,
        sid: SessionId,
        claims: A::Claims,
    ) -> Option<(String, u64)> {
        let mut access = self.issuer.claims(user_id, claims).ok()?;
        access.sid = Some(sid.to_string());
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
        user_id: &str,
        sid: SessionId,
        claims: A::Claims,
        refresh: &str,
    ) -> Response<Bytes> {
        let issued = self.issue_access(user_id, sid, claims);
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
            &serde_json::json!({ "access_token": token, "token_type": "Bearer", "expires_in": expires_in }),
        );
        res.headers_mut()
            .insert(PRAGMA, HeaderValue::from_static("no-cache"));
        for cookie in cookies {
            res.headers_mut().append(SET_COOKIE, cookie);
        }
        res
    }

    /// 429 with `Retry-After` when `key` is over `rule` in `bucket`; `count` counts this
    /// request, otherwise the bucket is only read (limits that count failures read before
    /// the password and count after a wrong one).
    async fn limit(
        &self,
        bucket: &'static str,
        key: &str,
        rule: Option<crate::Rule>,
        count: bool,
    ) -> Result<(), Response<Bytes>> {
        let Some(rule) = rule else { return Ok(()) };
        let answer = if count {
            self.limiter.check(bucket, key, rule).await
        } else {
            self.limiter.peek(bucket, key, rule).await
        };
        answer.map_err(|wait| self.too_many(bucket, wait))
    }

    fn too_many(&self, bucket: &'static str, wait: std::time::Duration) -> Response<Bytes> {
        outcome("baton_rate_limited_total", bucket);
        #[cfg(feature = "tracing")]
        tracing::info!(target: "baton::auth", bucket, "rate limited");
        Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "too many requests; retry later",
        )
        .with_retry_after(wait)
        .render(&*self.errors)
    }

    /// A device cookie for `username` (canonical): a random nonce and its tag under the
    /// refresh keys.
    fn device_cookie_for(&self, username: &str) -> Option<HeaderValue> {
        use aws_lc_rs::rand::SecureRandom;
        use base64::Engine as _;
        let mut nonce = [0u8; 12];
        aws_lc_rs::rand::SystemRandom::new().fill(&mut nonce).ok()?;
        let tag = self
            .store
            .keys()
            .tag(DEVICE_CONTEXT, &device_data(username, &nonce));
        let mut raw = Vec::with_capacity(nonce.len() + tag.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&tag);
        let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        self.device_cookie.set(&value).ok()
    }

    /// `true` when the request carries a device cookie minted for `username` (canonical).
    fn known_device(&self, cookie: Option<&str>, username: &str) -> bool {
        use base64::Engine as _;
        let Some(raw) = cookie.filter(|c| c.len() <= 64).and_then(|c| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .ok()
        }) else {
            return false;
        };
        if raw.len() != 12 + 17 {
            return false;
        }
        let (nonce, tag) = raw.split_at(12);
        self.store
            .keys()
            .check_tag(DEVICE_CONTEXT, &device_data(username, nonce), tag)
    }

    /// The limit key of a client address: its network (an IPv4 address, an IPv6 /64).
    fn ip_key(ip: Option<std::net::IpAddr>) -> String {
        ip.map_or_else(|| "unknown".to_owned(), crate::device::network_key)
    }

    async fn login<B>(&self, req: Request<B>) -> Response<Bytes>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let device = self.device_of(&req);
        if let Err(res) = self
            .limit(
                "login-ip",
                &Self::ip_key(device.ip),
                self.limits.login_per_ip,
                true,
            )
            .await
        {
            return res;
        }
        let device_cookie = self
            .device_cookie
            .read(req.headers())
            .ok()
            .flatten()
            .map(str::to_owned);
        let credentials: Credentials = match self.json_body(req).await {
            Ok(c) => c,
            Err(res) => return res,
        };
        // One canonical form per name: a change of case or width spends the same budget.
        let username = crate::canonical_username(&credentials.username)
            .unwrap_or_else(|| credentials.username.clone());
        // Failures count, per name and network, and per name for browsers it does not know
        // (see `RateLimits`): checked before the password, counted after a wrong one.
        let per_network = format!("{username}\u{1f}{}", Self::ip_key(device.ip));
        let known = self.known_device(device_cookie.as_deref(), &username);
        if let Err(res) = self
            .limit(
                "login-fail-net",
                &per_network,
                self.limits.login_per_username,
                false,
            )
            .await
        {
            return res;
        }
        if !known
            && let Err(res) = self
                .limit(
                    "login-fail-user",
                    &username,
                    self.limits.login_failures_per_username,
                    false,
                )
                .await
        {
            return res;
        }
        let principal = match self
            .auth
            .authenticate(&credentials.username, &credentials.password)
            .await
        {
            Ok(Some(p)) => p,
            Ok(None) => {
                if let Some(rule) = self.limits.login_per_username {
                    let _ = self
                        .limiter
                        .check("login-fail-net", &per_network, rule)
                        .await;
                }
                if let (false, Some(rule)) = (known, self.limits.login_failures_per_username) {
                    let _ = self.limiter.check("login-fail-user", &username, rule).await;
                }
                outcome("baton_login_total", "refused");
                #[cfg(feature = "tracing")]
                tracing::info!(target: "baton::auth", "login refused");
                return self.error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_credentials",
                    "invalid username or password",
                );
            }
            Err(_) => return self.unavailable("the user directory is unavailable"),
        };
        let created = match self.store.create(&principal.user_id, device).await {
            Ok(c) => c,
            Err(e) => return self.store_failed(e),
        };
        if !created.evicted.is_empty() {
            let evicted: Vec<Revocation> = created
                .evicted
                .iter()
                .map(|id| Revocation::session(id.to_string()))
                .collect();
            self.record_made(&evicted).await;
        }
        outcome("baton_login_total", "ok");
        #[cfg(feature = "tracing")]
        tracing::info!(target: "baton::auth", session = %created.session.id, "login");
        let mut res = self.token_response(
            &principal.user_id,
            created.session.id,
            principal.claims,
            created.token.expose(),
        );
        if res.status() == StatusCode::OK
            && let Some(cookie) = self.device_cookie_for(&username)
        {
            res.headers_mut().append(SET_COOKIE, cookie);
        }
        res
    }

    async fn refresh<B>(&self, req: Request<B>) -> Response<Bytes> {
        let ip = client_ip(req.headers(), req.extensions(), &self.client_ip);
        if let Err(res) = self
            .limit(
                "refresh-ip",
                &Self::ip_key(ip),
                self.limits.refresh_per_ip,
                true,
            )
            .await
        {
            return res;
        }
        let token = match self.refresh_cookie.read(req.headers()) {
            Ok(Some(t)) => t.to_owned(),
            Ok(None) => return self.refresh_refused("no refresh token"),
            Err(e) => return self.error(e.status(), "invalid_request", e.to_string()),
        };
        let context = RotateContext::new(user_agent(req.headers()), ip);
        match self.rotate(&token, context).await {
            Ok((rotation, claims)) => self.token_response(
                &rotation.session.user_id,
                rotation.session.id,
                claims,
                rotation.token.expose(),
            ),
            Err(failure) => failure.into_response(self),
        }
    }

    /// Rotates and fetches the claims for the new access token; logs and counts the outcome.
    pub(crate) async fn rotate(
        &self,
        token: &str,
        context: RotateContext,
    ) -> Result<(Rotation, A::Claims), RotateFailure> {
        let rotation = match self.store.rotate(token, context).await {
            Ok(r) => r,
            Err(RotateError::Store(e)) => {
                outcome("baton_refresh_total", "unavailable");
                return Err(RotateFailure::Store(e));
            }
            Err(RotateError::Reused(session)) => {
                outcome("baton_refresh_total", "reuse_detected");
                #[cfg(feature = "tracing")]
                tracing::warn!(target: "baton::auth", session = %session.id, user = %session.user_id, "refresh token reuse detected; session revoked");
                self.record_made(&[Revocation::session(session.id.to_string())])
                    .await;
                return Err(RotateFailure::Refused("refresh token reuse detected"));
            }
            Err(RotateError::Revoked(revoked)) => {
                outcome("baton_refresh_total", "revoked");
                if let Some(session) = revoked {
                    #[cfg(feature = "tracing")]
                    tracing::warn!(target: "baton::auth", session = %session.id, "session revoked: user agent changed");
                    self.record_made(&[Revocation::session(session.id.to_string())])
                        .await;
                }
                return Err(RotateFailure::Refused("session revoked"));
            }
            Err(RotateError::Expired) => {
                outcome("baton_refresh_total", "expired");
                return Err(RotateFailure::Refused("session expired"));
            }
            Err(_) => {
                outcome("baton_refresh_total", "invalid");
                return Err(RotateFailure::Refused("invalid refresh token"));
            }
        };
        let claims = match self.auth.claims(&rotation.session.user_id).await {
            Ok(Some(claims)) => claims,
            Ok(None) => {
                let _ = self
                    .store
                    .revoke(&rotation.session.user_id, rotation.session.id)
                    .await;
                self.record_made(&[Revocation::session(rotation.session.id.to_string())])
                    .await;
                return Err(RotateFailure::Refused("the user no longer exists"));
            }
            Err(_) => {
                outcome("baton_refresh_total", "directory_unavailable");
                #[cfg(feature = "tracing")]
                tracing::error!(target: "baton::auth", session = %rotation.session.id, "refresh rotated but the user directory is unavailable; the successor goes back with the 503");
                // The rotation happened: hand back its successor, or the client would come
                // back with a spent token.
                return Err(RotateFailure::Unavailable(rotation.token.into_string()));
            }
        };
        let what = if rotation.kind == RotationKind::Graced {
            "graced"
        } else {
            "rotated"
        };
        outcome("baton_refresh_total", what);
        #[cfg(feature = "tracing")]
        tracing::debug!(target: "baton::auth", session = %rotation.session.id, outcome = what, "refresh");
        Ok((rotation, claims))
    }

    async fn logout<B>(&self, req: Request<B>) -> Response<Bytes> {
        let token = match self.refresh_cookie.read(req.headers()) {
            Ok(t) => t.map(str::to_owned),
            Err(e) => return self.error(e.status(), "invalid_request", e.to_string()),
        };
        if let Some(verified) = token.as_deref().and_then(|t| self.store.keys().verify(t)) {
            let id = verified.session_id;
            let sid = id.to_string();
            // Recorded first, revoked second: a 503 leaves the session live, and a retry
            // finishes the job.
            match self.store.get(id).await {
                Ok(Some(session)) => {
                    if let Err(res) = self.record(&[Revocation::session(sid)]).await {
                        return res;
                    }
                    if let Err(e) = self.store.revoke(&session.user_id, id).await {
                        return self.store_failed(e);
                    }
                    #[cfg(feature = "tracing")]
                    tracing::info!(target: "baton::auth", session = %id, "logout");
                }
                // Already gone: record it unless this instance already refuses it (a retry
                // after a 503, or an instance that missed the first logout).
                Ok(None) => {
                    let revocation = Revocation::session(sid);
                    if !self.revocations.is_recorded(&revocation)
                        && let Err(res) = self.record(&[revocation]).await
                    {
                        return res;
                    }
                }
                Err(e) => return self.store_failed(e),
            }
        }
        let mut res = empty(StatusCode::NO_CONTENT);
        self.clear_refresh_cookie(&mut res);
        res
    }

    fn bearer<B>(&self, req: &Request<B>) -> Result<Claims<A::Claims>, Response<Bytes>> {
        match self.bearer.check::<B>(req) {
            Ok(Some(claims)) => Ok(claims),
            Ok(None) => Err(self.error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "bearer token required",
            )),
            Err(res) => Err(*res),
        }
    }

    async fn logout_all<B>(&self, req: Request<B>) -> Response<Bytes> {
        let claims = match self.bearer(&req) {
            Ok(c) => c,
            Err(res) => return res,
        };
        // The sessions first (a repeat after a lost reply revokes nothing twice), then, in one
        // record, the cut-off (every token issued before this second) and each revoked session
        // by id (which covers their tokens of this very second too). When the record fails the
        // answer is 503 and the bearer token still works, so the client can repeat the call:
        // its later cut-off covers every token of the sessions revoked now.
        let revoked = match self.store.revoke_all(&claims.sub).await {
            Ok(ids) => ids,
            Err(e) => return self.store_failed(e),
        };
        let mut revocations = vec![Revocation::user_before(
            claims.sub.clone(),
            self.clock.now(),
        )];
        revocations.extend(revoked.iter().map(|id| Revocation::session(id.to_string())));
        if let Err(res) = self.record(&revocations).await {
            return res;
        }
        #[cfg(feature = "tracing")]
        tracing::info!(target: "baton::auth", sessions = revoked.len(), "logout everywhere");
        let mut res = empty(StatusCode::NO_CONTENT);
        self.clear_refresh_cookie(&mut res);
        res
    }

    async fn sessions<B>(&self, req: Request<B>) -> Response<Bytes> {
        let claims = match self.bearer(&req) {
            Ok(c) => c,
            Err(res) => return res,
        };
        let sessions = match self.store.list(&claims.sub).await {
            Ok(s) => s,
            Err(e) => return self.store_failed(e),
        };
        let current = claims.sid.as_deref();
        let list: Vec<serde_json::Value> = sessions
            .iter()
            .map(|s| {
                let id = s.id.to_string();
                serde_json::json!({
                    "current": current == Some(id.as_str()),
                    "id": id,
                    "user_agent": s.device.user_agent,
                    "ip": s.device.ip.map(|ip| ip.to_string()),
                    "device_name": s.device.name,
                    "created_at": s.created_at,
                    "last_used_at": s.last_used_at,
                })
            })
            .collect();
        json_response(StatusCode::OK, &serde_json::json!({ "sessions": list }))
    }

    async fn delete_session<B>(&self, req: Request<B>, id: &str) -> Response<Bytes> {
        let claims = match self.bearer(&req) {
            Ok(c) => c,
            Err(res) => return res,
        };
        let not_found = || self.error(StatusCode::NOT_FOUND, "not_found", "no such session");
        let Ok(id) = id.parse::<SessionId>() else {
            return not_found();
        };
        if !id.belongs_to(&claims.sub) {
            return not_found();
        }
        match self.store.get(id).await {
            Ok(Some(session)) if session.user_id == claims.sub => {}
            Ok(_) => return not_found(),
            Err(e) => return self.store_failed(e),
        }
        if let Err(res) = self.record(&[Revocation::session(id.to_string())]).await {
            return res;
        }
        // `false` here means it went in the meantime (or in a first try whose reply was lost):
        // gone either way.
        if let Err(e) = self.store.revoke(&claims.sub, id).await {
            return self.store_failed(e);
        }
        #[cfg(feature = "tracing")]
        tracing::info!(target: "baton::auth", session = %id, "session revoked by its user");
        empty(StatusCode::NO_CONTENT)
    }

    fn jwks(&self) -> Response<Bytes> {
        let mut res = Response::new(Bytes::from(self.issuer.keys().load().jwks_json()));
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        res.headers_mut().insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        res
    }

    pub(crate) async fn handle<B>(&self, req: Request<B>) -> Response<Bytes>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let path = req.uri().path().to_owned();
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
        let method = req.method().clone();
        match (rest, method) {
            ("/login", Method::POST) => self.login(req).await,
            ("/refresh", Method::POST) => self.refresh(req).await,
            ("/logout", Method::POST) => self.logout(req).await,
            ("/logout-all", Method::POST) => self.logout_all(req).await,
            ("/sessions", Method::GET) => self.sessions(req).await,
            (r, Method::DELETE) if r.starts_with("/sessions/") => {
                let id = r["/sessions/".len()..].to_owned();
                self.delete_session(req, &id).await
            }
            ("/login" | "/refresh" | "/logout" | "/logout-all", _) => self.error(
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
