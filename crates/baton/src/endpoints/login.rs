//! `POST {base}/login`: rate limits, the password check, device cookies, the new session.

use baton_store::RefreshStore;
use bytes::Bytes;
use http::{Request, Response};

use super::*;
use crate::{Authenticator, Inner, LoginRequest};

/// What a device cookie's tag binds: the canonical username and the nonce.
const DEVICE_CONTEXT: &[u8] = b"baton device cookie v1";

fn device_data(username: &str, nonce: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(username.len() + 1 + nonce.len());
    data.extend_from_slice(username.as_bytes());
    data.push(0x1f);
    data.extend_from_slice(nonce);
    data
}

impl<S: RefreshStore, A: Authenticator> Inner<S, A> {
    /// 429 with `Retry-After` when `key` is over `rule` in `bucket`; `count` counts this
    /// request, otherwise the bucket is only read (limits that count failures read before
    /// the password and count after a wrong one).
    pub(super) async fn limit(
        &self,
        bucket: &'static str,
        key: &str,
        rule: Option<crate::Rule>,
        count: bool,
        ip: Option<std::net::IpAddr>,
    ) -> Result<(), Response<Bytes>> {
        let Some(rule) = rule else { return Ok(()) };
        let answer = if count {
            self.limiter.check(bucket, key, rule).await
        } else {
            self.limiter.peek(bucket, key, rule).await
        };
        answer.map_err(|wait| self.too_many(bucket, wait, ip))
    }

    pub(super) fn too_many(
        &self,
        bucket: &'static str,
        wait: std::time::Duration,
        ip: Option<std::net::IpAddr>,
    ) -> Response<Bytes> {
        outcome("baton_rate_limited_total", bucket);
        self.audit(crate::AuditEvent::RateLimited { bucket }, ip, None);
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
    pub(super) fn device_cookie_for(&self, username: &str) -> Option<HeaderValue> {
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
    pub(super) fn known_device(&self, cookie: Option<&str>, username: &str) -> bool {
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
    pub(super) fn ip_key(ip: Option<std::net::IpAddr>) -> String {
        ip.map_or_else(|| "unknown".to_owned(), crate::device::network_key)
    }

    pub(super) async fn login<B>(&self, req: Request<B>) -> Response<Bytes>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let device = self.device_of(&req);
        let (ip, agent) = (device.ip, device.user_agent.clone());
        if let Err(res) = self
            .limit(
                "login-ip",
                &Self::ip_key(device.ip),
                self.limits.login_per_ip,
                true,
                device.ip,
            )
            .await
        {
            return res;
        }
        let device = match self.with_device_id(&req, device) {
            Ok(device) => device,
            Err(res) => return res,
        };
        // Checked now (the request is read below), recorded once the password is right.
        let proof = match self.token_request_proof(&req) {
            Ok(proof) => proof,
            Err(res) => return res,
        };
        let device_cookie = self
            .device_cookie
            .read(req.headers())
            .ok()
            .flatten()
            .map(str::to_owned);
        let credentials: A::Credentials = match self
            .json_body(req, <A::Credentials as LoginRequest>::expected())
            .await
        {
            Ok(c) => c,
            Err(res) => return res,
        };
        // One canonical form per name: a change of case or width spends the same budget.
        let account = credentials.account();
        let username = crate::canonical_username(account).unwrap_or_else(|| account.to_owned());
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
                device.ip,
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
                    device.ip,
                )
                .await
        {
            return res;
        }
        let principal = match self.auth.authenticate(&credentials).await {
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
                let username = username.chars().take(64).collect();
                self.audit(
                    crate::AuditEvent::LoginFailed { username },
                    ip,
                    agent.as_deref(),
                );
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
        if let Some(proof) = &proof
            && let Err(res) = self.record_proof(proof).await
        {
            return res;
        }
        let jkt = proof.map(|p| p.jkt);
        if let Err(_e) = principal.authentication.check() {
            // The application's own values: its bug, not the client's.
            #[cfg(feature = "tracing")]
            tracing::error!(target: "baton::auth", error = %_e, "the authenticator's amr or acr cannot be stored; answering 500");
            return self.error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal error",
            );
        }
        let mut login = baton_store::Login::new(device, principal.authentication.clone());
        if let Some(jkt) = &jkt {
            login = login.with_dpop_jkt(jkt.clone());
        }
        let created = match self
            .open_session(&principal.user_id, login, ip, agent.as_deref())
            .await
        {
            Ok(created) => created,
            Err(res) => return res,
        };
        let mut res =
            self.token_response(&created.session, principal.claims, created.token.expose());
        if res.status() == StatusCode::OK
            && let Some(cookie) = self.device_cookie_for(&username)
        {
            res.headers_mut().append(SET_COOKIE, cookie);
        }
        res
    }

    /// Opens a session for `user_id` (a login that passed): the sessions it evicts or
    /// replaces are revoked everywhere and audited, and the login is counted and audited.
    pub(super) async fn open_session(
        &self,
        user_id: &str,
        login: baton_store::Login,
        ip: Option<std::net::IpAddr>,
        agent: Option<&str>,
    ) -> Result<baton_store::Created, Response<Bytes>> {
        let created = match self.store.create(user_id, login).await {
            Ok(c) => c,
            Err(e) => return Err(self.store_failed(e)),
        };
        let ended = created
            .evicted
            .iter()
            .map(|id| (id, crate::RevokeReason::Evicted))
            .chain(
                created
                    .replaced
                    .iter()
                    .map(|id| (id, crate::RevokeReason::Replaced)),
            );
        let revocations: Vec<Revocation> = ended
            .clone()
            .map(|(id, _)| Revocation::session(id.to_string()))
            .collect();
        if !revocations.is_empty() {
            self.record_made(&revocations).await;
            for (id, reason) in ended {
                let event = crate::AuditEvent::SessionRevoked {
                    user: user_id.to_owned(),
                    session: *id,
                    reason,
                };
                self.audit(event, ip, agent);
            }
        }
        outcome("baton_login_total", "ok");
        let event = crate::AuditEvent::LoginSucceeded {
            user: user_id.to_owned(),
            session: created.session.id,
        };
        self.audit(event, ip, agent);
        #[cfg(feature = "tracing")]
        tracing::info!(target: "baton::auth", session = %created.session.id, "login");
        Ok(created)
    }
}
