//! Logout, logout everywhere, and the session list a user manages: `POST {base}/logout`,
//! `/logout-all`, `GET {base}/sessions`, `DELETE {base}/sessions/{id}`.

use std::sync::Arc;

use baton_store::RefreshStore;
use bytes::Bytes;
use http::{Request, Response};

use super::*;
use crate::{Authenticator, Inner};

impl<S: RefreshStore, A: Authenticator> Inner<S, A> {
    /// Reports sessions of `user` that ended for `reason`.
    fn audit_revoked<B>(
        &self,
        req: &Request<B>,
        user: &str,
        sessions: &[SessionId],
        reason: crate::RevokeReason,
    ) {
        let ip = client_ip(req.headers(), req.extensions(), &self.client_ip);
        let agent = user_agent(req.headers());
        for id in sessions {
            let event = crate::AuditEvent::SessionRevoked {
                user: user.to_owned(),
                session: *id,
                reason,
            };
            self.audit(event, ip, agent);
        }
    }

    pub(super) async fn logout<B>(&self, req: Request<B>) -> Response<Bytes> {
        let token = match self.refresh_cookie.read(req.headers()) {
            Ok(t) => t.map(str::to_owned),
            Err(e) => return self.error(e.status(), "invalid_request", e.to_string()),
        };
        if let Some(verified) = token.as_deref().and_then(|t| self.store.keys().verify(t)) {
            let id = verified.session_id;
            let sid = id.to_string();
            // Checked now (the future below holds nothing of the request), recorded only for
            // a session bound to the key it proves.
            let proof = self.dpop.as_ref().map(|dpop| dpop.verify(&req, None));
            let session = match self.store.get(id).await {
                Ok(session) => session,
                Err(e) => return self.store_failed(e),
            };
            // A session bound to a DPoP key is ended only by a request proving the key: a
            // stolen cookie alone (or with a proof from another key) just loses its cookie. A
            // proof that does not hold (a clock far off, an old nonce), or that cannot be
            // recorded now, is answered as such (400 or 503), so the client tries again rather
            // than believe the session ended.
            let proven = match (&session, proof) {
                (Some(session), proof) if session.dpop_jkt.is_some() => match proof {
                    Some(Ok(Some(proof))) if Some(&proof.jkt) == session.dpop_jkt.as_ref() => {
                        if let Err(res) = self.record_proof(&proof).await {
                            return res;
                        }
                        true
                    }
                    Some(Err(e)) => return self.dpop_refused(e),
                    _ => false,
                },
                _ => true,
            };
            match session {
                Some(_) if !proven => {
                    #[cfg(feature = "tracing")]
                    tracing::info!(target: "baton::auth", session = %id, "logout of a DPoP-bound session without its key: cookie cleared, session kept");
                }
                // Recorded first, revoked second: a 503 leaves the session live, and a retry
                // finishes the job.
                Some(session) => {
                    if let Err(res) = self.record(&[Revocation::session(sid)]).await {
                        return res;
                    }
                    if let Err(e) = self.store.revoke(&session.user_id, id).await {
                        return self.store_failed(e);
                    }
                    self.audit_revoked(&req, &session.user_id, &[id], crate::RevokeReason::Logout);
                    #[cfg(feature = "tracing")]
                    tracing::info!(target: "baton::auth", session = %id, "logout");
                }
                // Already gone: record it unless this instance already refuses it (a retry
                // after a 503, or an instance that missed the first logout).
                None => {
                    let revocation = Revocation::session(sid);
                    if !self.revocations.is_recorded(&revocation)
                        && let Err(res) = self.record(&[revocation]).await
                    {
                        return res;
                    }
                }
            }
        }
        let mut res = empty(StatusCode::NO_CONTENT);
        self.clear_refresh_cookie(&mut res);
        res
    }

    pub(super) fn bearer<B>(
        &self,
        req: &Request<B>,
    ) -> impl Future<Output = Result<Arc<Claims<A::Claims>>, Response<Bytes>>> + Send + use<'_, B, S, A>
    {
        Self::bearer_with(&self.bearer, req, &*self.errors)
    }

    /// The bearer check of a sensitive action: with the recent-login requirement, if any.
    pub(super) fn bearer_sensitive<B>(
        &self,
        req: &Request<B>,
    ) -> impl Future<Output = Result<Arc<Claims<A::Claims>>, Response<Bytes>>> + Send + use<'_, B, S, A>
    {
        Self::bearer_with(&self.bearer_sensitive, req, &*self.errors)
    }

    /// The session the access token names (400 when it names none).
    fn own_session(&self, claims: &Claims<A::Claims>) -> Result<SessionId, Response<Bytes>> {
        claims
            .sid
            .as_deref()
            .and_then(|sid| sid.parse::<SessionId>().ok())
            .ok_or_else(|| {
                self.error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the access token names no session",
                )
            })
    }

    /// The recent-login requirement on claims already checked (one proof check per request).
    fn recent_enough<B>(
        &self,
        req: &Request<B>,
        claims: &Claims<A::Claims>,
    ) -> Result<(), Response<Bytes>> {
        self.bearer_sensitive
            .check_recent_login(req, claims)
            .map_err(|res| *res)
    }

    /// `layer`'s check of `req`; the future holds nothing of the request.
    fn bearer_with<'a, B>(
        layer: &'a baton_bearer::BearerVerifyLayer<A::Claims, crate::RenderRejection>,
        req: &Request<B>,
        errors: &'a dyn crate::RenderError,
    ) -> impl Future<Output = Result<Arc<Claims<A::Claims>>, Response<Bytes>>> + Send + use<'a, B, S, A>
    {
        let check = layer.check::<B>(req);
        async move {
            match check.await {
                Ok(Some(claims)) => Ok(claims),
                Ok(None) => Err(Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "bearer token required",
                )
                .render(errors)),
                Err(res) => Err(*res),
            }
        }
    }

    pub(super) async fn logout_all<B>(&self, req: Request<B>) -> Response<Bytes> {
        let claims = match self.bearer(&req).await {
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
        self.audit_revoked(
            &req,
            &claims.sub,
            &revoked,
            crate::RevokeReason::LogoutEverywhere,
        );
        #[cfg(feature = "tracing")]
        tracing::info!(target: "baton::auth", sessions = revoked.len(), "logout everywhere");
        let mut res = empty(StatusCode::NO_CONTENT);
        self.clear_refresh_cookie(&mut res);
        res
    }

    /// Ends every session of the caller's user except the caller's own (the session its access
    /// token names): "sign out other devices". Their access tokens are refused wherever the
    /// revocations reach (every instance, with a feed). Recorded first, revoked second: a 503
    /// leaves the other sessions live, and a repeat finishes the job.
    pub(super) async fn logout_others<B>(&self, req: Request<B>) -> Response<Bytes> {
        let claims = match self.bearer_sensitive(&req).await {
            Ok(c) => c,
            Err(res) => return res,
        };
        let own = match self.own_session(&claims) {
            Ok(id) => id,
            Err(res) => return res,
        };
        let others: Vec<SessionId> = match self.store.list(&claims.sub).await {
            Ok(sessions) => sessions
                .into_iter()
                .map(|s| s.id)
                .filter(|id| *id != own)
                .collect(),
            Err(e) => return self.store_failed(e),
        };
        if !others.is_empty() {
            let revocations: Vec<Revocation> = others
                .iter()
                .map(|id| Revocation::session(id.to_string()))
                .collect();
            if let Err(res) = self.record(&revocations).await {
                return res;
            }
            for id in &others {
                if let Err(e) = self.store.revoke(&claims.sub, *id).await {
                    return self.store_failed(e);
                }
            }
        }
        self.audit_revoked(
            &req,
            &claims.sub,
            &others,
            crate::RevokeReason::OtherDevicesSignedOut,
        );
        #[cfg(feature = "tracing")]
        tracing::info!(target: "baton::auth", session = %own, others = others.len(), "other devices signed out");
        json_response(
            StatusCode::OK,
            &serde_json::json!({ "revoked": others.len() }),
        )
    }

    pub(super) async fn sessions<B>(&self, req: Request<B>) -> Response<Bytes> {
        let claims = match self.bearer(&req).await {
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
                    "device": s.device.user_agent.as_deref().map(crate::DeviceInfo::from_user_agent),
                    "ip": s.device.ip.map(|ip| ip.to_string()),
                    "device_name": s.device.name,
                    "network_changed_at": s.network_changed_at,
                    "authenticated_at": s.auth_time,
                    "created_at": s.created_at,
                    "last_used_at": s.last_used_at,
                })
            })
            .collect();
        json_response(StatusCode::OK, &serde_json::json!({ "sessions": list }))
    }

    pub(super) async fn delete_session<B>(&self, req: Request<B>, id: &str) -> Response<Bytes> {
        let claims = match self.bearer(&req).await {
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
        // Ending another device's session is sensitive; ending one's own is a logout.
        if claims.sid.as_deref() != Some(id.to_string().as_str())
            && let Err(res) = self.recent_enough(&req, &claims)
        {
            return res;
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
        self.audit_revoked(&req, &claims.sub, &[id], crate::RevokeReason::EndedByUser);
        #[cfg(feature = "tracing")]
        tracing::info!(target: "baton::auth", session = %id, "session revoked by its user");
        empty(StatusCode::NO_CONTENT)
    }
}

#[derive(Deserialize)]
struct Reauthentication {
    password: String,
}

impl<S: RefreshStore, A: Authenticator> Inner<S, A> {
    /// `POST {base}/reauthenticate` (bearer, `{"password"}`): the user proves who they are
    /// again before a sensitive action. The session's `auth_time` becomes now, in the same
    /// session (no rotation, the refresh token stays), and the answer is a new access token
    /// carrying it. Wrong passwords count per user and network against the failed-login rule
    /// (`RateLimits::login_per_username`).
    pub(super) async fn reauthenticate<B>(&self, req: Request<B>) -> Response<Bytes>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let claims = match self.bearer(&req).await {
            Ok(c) => c,
            Err(res) => return res,
        };
        let sid = match self.own_session(&claims) {
            Ok(id) => id,
            Err(res) => return res,
        };
        let ip = client_ip(req.headers(), req.extensions(), &self.client_ip);
        let agent = user_agent(req.headers()).map(str::to_owned);
        // Wrong passwords count per user and network, as failed logins do: a thief with a
        // stolen token spends the budget of its own network, not the user's everywhere.
        let rule = self.limits.login_per_username;
        let key = format!("{}\u{1f}{}", claims.sub, Self::ip_key(ip));
        if let Err(res) = self.limit("reauth-fail", &key, rule, false, ip).await {
            return res;
        }
        let body: Reauthentication = match self
            .json_body(
                req,
                "the body must be a JSON object with a string field password",
            )
            .await
        {
            Ok(b) => b,
            Err(res) => return res,
        };
        if body.password.is_empty() {
            return self.error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the password is required",
            );
        }
        match self.auth.check_password(&claims.sub, &body.password).await {
            Ok(true) => {}
            Ok(false) => {
                if let Some(rule) = rule {
                    let _ = self.limiter.check("reauth-fail", &key, rule).await;
                }
                outcome("baton_reauthenticate_total", "refused");
                let event = crate::AuditEvent::ReauthenticationFailed {
                    user: claims.sub.clone(),
                    session: sid,
                };
                self.audit(event, ip, agent.as_deref());
                // Not 401: the access token is fine, and a client must not refresh for this.
                return self.error(
                    StatusCode::FORBIDDEN,
                    "invalid_credentials",
                    "wrong password",
                );
            }
            Err(_) => return self.unavailable("the user directory is unavailable"),
        }
        let session = match self
            .store
            .reauthenticate(&claims.sub, sid, baton_store::Authentication::password())
            .await
        {
            Ok(Some(session)) => session,
            Ok(None) => {
                return self.error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "the session has ended",
                );
            }
            Err(e) => return self.store_failed(e),
        };
        let custom = match self.auth.claims(&claims.sub).await {
            Ok(Some(custom)) => custom,
            Ok(None) => {
                return self.error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "the user no longer exists",
                );
            }
            Err(_) => return self.unavailable("the user directory is unavailable"),
        };
        // Bound as the session is, like the token it replaces.
        let Some((token, expires_in)) = self.issue_access(&session, custom) else {
            return self.unavailable("no access token could be issued; retry");
        };
        outcome("baton_reauthenticate_total", "ok");
        let event = crate::AuditEvent::Reauthenticated {
            user: claims.sub.clone(),
            session: sid,
        };
        self.audit(event, ip, agent.as_deref());
        #[cfg(feature = "tracing")]
        tracing::info!(target: "baton::auth", session = %sid, "reauthenticated");
        let mut res = json_response(
            StatusCode::OK,
            &serde_json::json!({ "access_token": token, "token_type": super::token_type(&session), "expires_in": expires_in }),
        );
        if let Some(cookie) = self
            .access_cookie
            .as_ref()
            .and_then(|spec| spec.set(&token).ok())
        {
            res.headers_mut().append(SET_COOKIE, cookie);
        }
        res
    }
}
