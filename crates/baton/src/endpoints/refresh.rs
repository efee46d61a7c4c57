//! `POST {base}/refresh`: one rotation, a new access token, and what a failure answers.

use baton_store::RefreshStore;
use bytes::Bytes;
use http::{Request, Response};

use super::*;
use crate::{Authenticator, Inner};

impl<S: RefreshStore, A: Authenticator> Inner<S, A> {
    pub(super) async fn refresh<B>(&self, req: Request<B>) -> Response<Bytes> {
        let ip = client_ip(req.headers(), req.extensions(), &self.client_ip);
        if let Err(res) = self
            .limit(
                "refresh-ip",
                &Self::ip_key(ip),
                self.limits.refresh_per_ip,
                true,
                ip,
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
        // A forged or junk cookie goes no further (and spends no place in the replay cache).
        if self.store.keys().verify(&token).is_none() {
            return self.refresh_refused("invalid refresh token");
        }
        let proof = match self.token_request_proof(&req) {
            Ok(proof) => proof,
            Err(res) => return res,
        };
        let jkt = match self.recorded_jkt(proof).await {
            Ok(jkt) => jkt,
            Err(res) => return res,
        };
        let mut context = RotateContext::new(user_agent(req.headers()), ip);
        if let Some(jkt) = &jkt {
            context = context.with_dpop_jkt(jkt.clone());
        }
        match self.rotate(&token, context).await {
            // The token is bound as the session is (checked against the proof by the store).
            Ok((rotation, claims)) => {
                self.token_response(&rotation.session, claims, rotation.token.expose())
            }
            Err(failure) => failure.into_response(self),
        }
    }

    /// Rotates and fetches the claims for the new access token; logs and counts the outcome.
    pub(crate) async fn rotate(
        &self,
        token: &str,
        context: RotateContext,
    ) -> Result<(Rotation, A::Claims), RotateFailure> {
        let (ip, agent) = (context.ip, context.user_agent.clone());
        let revoked =
            |session: &baton_store::SessionRef, reason| crate::AuditEvent::SessionRevoked {
                user: session.user_id.clone(),
                session: session.id,
                reason,
            };
        let rotation = match self.store.rotate(token, context).await {
            Ok(r) => r,
            Err(RotateError::Store(e)) => {
                outcome("baton_refresh_total", "unavailable");
                return Err(RotateFailure::Store(e));
            }
            Err(RotateError::Reused(session)) => {
                outcome("baton_refresh_total", "reuse_detected");
                let event = revoked(&session, crate::RevokeReason::ReuseDetected);
                self.audit(event, ip, agent.as_deref());
                #[cfg(feature = "tracing")]
                tracing::warn!(target: "baton::auth", session = %session.id, user = %session.user_id, "refresh token reuse detected; session revoked");
                self.record_made(&[Revocation::session(session.id.to_string())])
                    .await;
                return Err(RotateFailure::Refused("refresh token reuse detected"));
            }
            Err(RotateError::Revoked) => {
                outcome("baton_refresh_total", "revoked");
                return Err(RotateFailure::Refused("session revoked"));
            }
            Err(RotateError::DeviceChanged { session, change }) => {
                outcome("baton_refresh_total", "revoked");
                let reason = match change {
                    baton_store::DeviceChange::Network => crate::RevokeReason::NetworkChanged,
                    _ => crate::RevokeReason::UserAgentChanged,
                };
                self.audit(revoked(&session, reason), ip, agent.as_deref());
                #[cfg(feature = "tracing")]
                tracing::warn!(target: "baton::auth", session = %session.id, %change, "session revoked");
                self.record_made(&[Revocation::session(session.id.to_string())])
                    .await;
                return Err(RotateFailure::Refused("session revoked"));
            }
            Err(RotateError::DpopKeyMismatch) => {
                outcome("baton_refresh_total", "dpop_key_mismatch");
                #[cfg(feature = "tracing")]
                tracing::warn!(target: "baton::auth", "refresh of a DPoP-bound session without its key refused");
                return Err(RotateFailure::Refused(
                    "the refresh token is bound to a DPoP key the request did not prove",
                ));
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
                let event = crate::AuditEvent::SessionRevoked {
                    user: rotation.session.user_id.clone(),
                    session: rotation.session.id,
                    reason: crate::RevokeReason::UserGone,
                };
                self.audit(event, ip, agent.as_deref());
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
        if rotation.network_changed {
            let event = crate::AuditEvent::NetworkChanged {
                user: rotation.session.user_id.clone(),
                session: rotation.session.id,
                flagged: self.store.policy().network_change() == baton_store::NetworkChange::Flag,
            };
            self.audit(event, ip, agent.as_deref());
        }
        let event = crate::AuditEvent::Refreshed {
            user: rotation.session.user_id.clone(),
            session: rotation.session.id,
            graced: rotation.kind == RotationKind::Graced,
        };
        self.audit(event, ip, agent.as_deref());
        #[cfg(feature = "tracing")]
        tracing::debug!(target: "baton::auth", session = %rotation.session.id, outcome = what, "refresh");
        Ok((rotation, claims))
    }
}
