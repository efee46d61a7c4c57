//! [`BearerVerify`]: the middleware.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use baton_token::{Claims, ErrorKind, VerifyError};
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Request, Response};
use serde::de::DeserializeOwned;
use tower_service::Service;

use crate::dpop::replay_outcome;
use crate::extract::{Found, extract};
use crate::future::Waiting;
use crate::layer::Config;
use crate::rejection::grpc_response;
use crate::{
    BearerVerifyLayer, BuildRejection, DpopCheckError, JsonRejection, Rejection, RejectionKind,
    ResponseBody, ResponseFuture, TokenIdentity,
};
use baton_core::{ReplayCheck, ReplayFuture};
use baton_token::DpopError;
use http::HeaderValue;

/// The middleware built by [`BearerVerifyLayer`].
pub struct BearerVerify<S, C = baton_token::NoCustomClaims, R = JsonRejection> {
    inner: S,
    config: Arc<Config>,
    rejection: R,
    _claims: PhantomData<fn() -> C>,
}

impl<S: Clone, C, R: Clone> Clone for BearerVerify<S, C, R> {
    fn clone(&self) -> Self {
        BearerVerify {
            inner: self.inner.clone(),
            config: self.config.clone(),
            rejection: self.rejection.clone(),
            _claims: PhantomData,
        }
    }
}

impl<S: fmt::Debug, C, R: fmt::Debug> fmt::Debug for BearerVerify<S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerVerify")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("rejection", &self.rejection)
            .finish()
    }
}

impl<S, C, R: Clone> BearerVerify<S, C, R> {
    pub(crate) fn from_layer(inner: S, layer: &BearerVerifyLayer<C, R>) -> Self {
        BearerVerify {
            inner,
            config: layer.config.clone(),
            rejection: layer.rejection.clone(),
            _claims: PhantomData,
        }
    }

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

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// What the checks after the signature leave to do: a shared replay cache's answer still to
/// come, and the `DPoP-Nonce` to send back with the response.
#[derive(Default)]
struct Admitted {
    replay: Option<ReplayFuture>,
    nonce: Option<HeaderValue>,
}

/// A request that passed every check but, perhaps, a shared replay cache's answer.
struct Checked<C> {
    /// `None`: an anonymous request let through in optional mode.
    claims: Option<Arc<Claims<C>>>,
    admitted: Admitted,
}

/// The request's token, if it has one: `Ok(None)` for an anonymous request the layer lets
/// through (optional mode).
#[inline(always)]
fn token_of<'a, B>(
    config: &Config,
    req: &'a Request<B>,
) -> Result<Option<Found<'a>>, RejectionKind> {
    match extract(
        req.headers(),
        config.cookie.as_deref(),
        config.dpop.is_some(),
    ) {
        Ok(Some(found)) => Ok(Some(found)),
        Ok(None) if config.optional => Ok(None),
        Ok(None) => Err(RejectionKind::MissingToken),
        Err(description) => Err(RejectionKind::InvalidRequest(description)),
    }
}

/// The token's claims once its signature and times are checked (through the cache when the
/// verifier has one, which shares them).
#[inline(always)]
fn verify<C: DeserializeOwned + Send + Sync + 'static>(
    config: &Config,
    found: Found<'_>,
) -> Result<Arc<Claims<C>>, RejectionKind> {
    config.verifier.verify_cached(found.token).map_err(|e| {
        // A token that verifies is `token68`; one that does not may be the request's error.
        match found.syntax_error() {
            Some(description) => RejectionKind::InvalidRequest(description),
            None => RejectionKind::InvalidToken(e),
        }
    })
}

/// Every check after the signature, on claims borrowed (they move once, shared, into the
/// request's extensions): revocation, DPoP, scopes and roles, recent login, and the DPoP
/// proof's replay last (a request refused for another reason spends no place in the cache); a
/// shared cache's answer is left to await.
fn admit<C, B>(
    config: &Config,
    req: &Request<B>,
    found: Found<'_>,
    claims: &Claims<C>,
) -> Result<Admitted, RejectionKind> {
    let (token, with_dpop) = (found.token, found.dpop);
    if let Some(hook) = &config.revocation {
        let identity = TokenIdentity::from_parts(
            &claims.sub,
            claims.sid.as_deref(),
            claims.iat,
            claims.jti.as_deref(),
        );
        if hook.is_revoked(&identity) {
            return Err(RejectionKind::InvalidToken(VerifyError::new(
                ErrorKind::Revoked,
                "token revoked",
            )));
        }
        if !hook.is_known() {
            return Err(RejectionKind::RevocationsUnknown);
        }
    }
    let dpop = config.dpop.as_ref();
    let proof = match (dpop, with_dpop, claims.dpop_jkt()) {
        // The proof is checked, then matched with the token's key, and recorded last: a
        // proof from another key spends no place in the replay cache.
        (Some(dpop), true, Some(jkt)) => match dpop.verify(req, Some(token)) {
            Ok(Some(proof)) if proof.jkt == jkt => Some((dpop, proof)),
            Ok(Some(_)) => {
                return Err(RejectionKind::InvalidDpopProof(DpopError::Invalid(
                    "the DPoP proof is from another key than the token's",
                )));
            }
            Ok(None) => {
                return Err(RejectionKind::InvalidDpopProof(DpopError::Invalid(
                    "a DPoP proof is required",
                )));
            }
            Err(e) => return Err(dpop_rejection(e)),
        },
        (_, true, None) => {
            return Err(RejectionKind::WrongTokenScheme(
                "the token is not DPoP-bound; send it as Bearer",
            ));
        }
        (_, false, Some(_)) => {
            return Err(RejectionKind::WrongTokenScheme(
                "the token is DPoP-bound; send it with the DPoP scheme and a proof",
            ));
        }
        (Some(dpop), false, None) if dpop.is_required() => {
            return Err(RejectionKind::WrongTokenScheme(
                "this resource requires DPoP",
            ));
        }
        _ => None,
    };
    if !config.scopes.iter().all(|s| claims.has_scope(s))
        || !config.roles.iter().all(|r| claims.has_role(r))
    {
        return Err(RejectionKind::InsufficientScope);
    }
    recent_login(config, claims)?;
    let mut admitted = Admitted::default();
    if let Some((dpop, proof)) = proof {
        admitted.nonce = dpop.next_nonce(&proof);
        match dpop.first_use(&proof) {
            ReplayCheck::Ready(answer) => replay_outcome(answer).map_err(dpop_rejection)?,
            ReplayCheck::Pending(answer) => admitted.replay = Some(answer),
        }
    }
    Ok(admitted)
}

/// Every check of [`token_of`], [`verify`] and [`admit`]: the claims are verified once and
/// borrowed by the other checks.
#[inline(always)]
fn authenticate<C: DeserializeOwned + Send + Sync + 'static, B>(
    config: &Config,
    req: &Request<B>,
) -> Result<Checked<C>, RejectionKind> {
    let Some(found) = token_of(config, req)? else {
        return Ok(Checked {
            claims: None,
            admitted: Admitted::default(),
        });
    };
    let claims = verify(config, found)?;
    let admitted = admit(config, req, found, &claims)?;
    Ok(Checked {
        claims: Some(claims),
        admitted,
    })
}

/// A refused DPoP check as the layer answers it: 401 for the proof, 503 when the replay
/// cache cannot tell.
fn dpop_rejection(e: DpopCheckError) -> RejectionKind {
    match e {
        DpopCheckError::Proof(e) => RejectionKind::InvalidDpopProof(e),
        DpopCheckError::ReplayUnknown(_) => RejectionKind::DpopReplayUnknown,
    }
}

/// The layer's recent-login rule, if any, applied to verified claims.
fn recent_login<C>(config: &Config, claims: &Claims<C>) -> Result<(), RejectionKind> {
    match &config.recent_login {
        Some(recent) if !recent.is_met(claims, config.verifier.clock().now()) => {
            Err(RejectionKind::InsufficientUserAuthentication {
                max_age: recent.max_age(),
                acr_values: recent.challenge_acr(),
            })
        }
        _ => Ok(()),
    }
}

#[cfg(feature = "tracing")]
fn trace_rejection(rejection: &Rejection) {
    let kind = match rejection.kind() {
        RejectionKind::MissingToken => "missing",
        RejectionKind::InvalidRequest(_) => "invalid_request",
        RejectionKind::InvalidToken(e) => e.kind().as_str(),
        RejectionKind::InsufficientScope => "insufficient_scope",
        RejectionKind::InsufficientUserAuthentication { .. } => "insufficient_user_authentication",
        RejectionKind::InvalidDpopProof(_) => "invalid_dpop_proof",
        RejectionKind::WrongTokenScheme(_) => "wrong_token_scheme",
        RejectionKind::DpopReplayUnknown => "dpop_replay_unknown",
        RejectionKind::RevocationsUnknown => "revocations_unknown",
    };
    tracing::debug!(target: "baton::bearer", kind, grpc = rejection.is_grpc(), "request rejected");
}

/// What a rejection needs of its request, read before the request goes anywhere.
#[derive(Clone, Copy)]
pub(crate) struct RequestFacts {
    grpc: bool,
    /// The request sent its token with the `DPoP` scheme.
    dpop_scheme: bool,
}

impl RequestFacts {
    fn of<B>(req: &Request<B>) -> Self {
        RequestFacts {
            grpc: is_grpc(req),
            dpop_scheme: req
                .headers()
                .get(http::header::AUTHORIZATION)
                .is_some_and(|v| {
                    v.as_bytes()
                        .get(..5)
                        .is_some_and(|s| s.eq_ignore_ascii_case(b"dpop "))
                }),
        }
    }
}

/// Builds the full rejection response (gRPC or the responder's), with the challenge and the
/// `Rejection` in its extensions.
fn reject<R: BuildRejection>(
    config: &Config,
    responder: &R,
    kind: RejectionKind,
    req: RequestFacts,
) -> Response<bytes::Bytes> {
    // A DPoP challenge for a refusal about DPoP, or a request that used it.
    let dpop = config.dpop.is_some()
        && (matches!(
            kind,
            RejectionKind::InvalidDpopProof(_)
                | RejectionKind::WrongTokenScheme(_)
                | RejectionKind::DpopReplayUnknown
        ) || req.dpop_scheme);
    let rejection = Rejection::new(
        kind,
        config.realm.clone(),
        config.scope_challenge.clone(),
        req.grpc,
    )
    .with_dpop(dpop);
    #[cfg(feature = "tracing")]
    trace_rejection(&rejection);
    let mut res = if rejection.is_grpc() {
        grpc_response(&rejection)
    } else {
        responder.build(&rejection)
    };
    if !res.headers().contains_key(WWW_AUTHENTICATE) {
        res.headers_mut()
            .insert(WWW_AUTHENTICATE, rejection.www_authenticate());
    }
    if rejection.is_unavailable() && !res.headers().contains_key(http::header::RETRY_AFTER) {
        res.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    if matches!(
        rejection.kind(),
        RejectionKind::InvalidDpopProof(DpopError::UseNonce)
    ) && let Some(nonce) = config.dpop.as_ref().and_then(crate::Dpop::current_nonce)
    {
        res.headers_mut().insert("dpop-nonce", nonce);
    }
    res.extensions_mut().insert(rejection);
    res
}

impl<C, R> BearerVerifyLayer<C, R>
where
    C: DeserializeOwned + Send + Sync + 'static,
    R: BuildRejection,
{
    /// Checks `req` as the middleware would, without a service: the verified claims (`None`
    /// for an anonymous request in optional mode), or the rejection response. For handlers
    /// that authenticate by hand (auth endpoints, say). A DPoP proof is recorded in the
    /// replay cache (awaited when the cache is shared).
    ///
    /// # Errors
    /// The rejection response (400, 401, 403 or 503, or the gRPC form).
    pub fn check<B>(
        &self,
        req: &Request<B>,
    ) -> impl Future<Output = Result<Option<Arc<Claims<C>>>, Box<Response<bytes::Bytes>>>>
    + Send
    + use<'_, B, C, R> {
        // Everything is read from the request now: the future holds none of it.
        let facts = RequestFacts::of(req);
        let checked = authenticate::<C, B>(&self.config, req);
        async move {
            let reject = |kind| Box::new(reject(&self.config, &self.rejection, kind, facts));
            let checked = checked.map_err(reject)?;
            if let Some(answer) = checked.admitted.replay {
                replay_outcome(answer.await)
                    .map_err(dpop_rejection)
                    .map_err(reject)?;
            }
            Ok(checked.claims)
        }
    }

    /// Applies only this layer's [`require_recent_login`](Self::require_recent_login) rule to
    /// `claims` another check verified already (so a DPoP proof is not checked, and spent,
    /// twice): `Ok` without a rule.
    ///
    /// # Errors
    /// The 401 `insufficient_user_authentication` response.
    pub fn check_recent_login<B, C2>(
        &self,
        req: &Request<B>,
        claims: &Claims<C2>,
    ) -> Result<(), Box<Response<bytes::Bytes>>> {
        recent_login(&self.config, claims).map_err(|kind| {
            Box::new(reject(
                &self.config,
                &self.rejection,
                kind,
                RequestFacts::of(req),
            ))
        })
    }
}

impl<S, C, R, ReqBody, ResBody> Service<Request<ReqBody>> for BearerVerify<S, C, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    C: DeserializeOwned + Send + Sync + 'static,
    R: BuildRejection,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let config = &*self.config;
        let admitted = match authenticate::<C, _>(config, &req) {
            Ok(Checked { claims, admitted }) => {
                if let Some(claims) = claims {
                    let extensions = req.extensions_mut();
                    extensions.insert(claims);
                    // Lets an extractor asking for another claims type tell the application's
                    // mix-up from an anonymous request. Debug builds only: a second entry can
                    // make the extension table grow (an allocation and a rehash per request
                    // behind axum's router, which has put two entries there already).
                    #[cfg(debug_assertions)]
                    extensions.insert(crate::BearerVerified);
                }
                admitted
            }
            Err(kind) => {
                let res = reject(config, &self.rejection, kind, RequestFacts::of(&req));
                return ResponseFuture::rejected(res);
            }
        };
        match admitted.replay {
            None => ResponseFuture::inner(self.inner.call(req), admitted.nonce),
            Some(answer) => {
                // The service made ready goes with the request; this one keeps a clone
                // (`poll_ready` is asked of it again before the next call).
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let config = self.config.clone();
                let rejection = self.rejection.clone();
                let facts = RequestFacts::of(&req);
                let waiting = Waiting {
                    inner,
                    req,
                    nonce: admitted.nonce,
                    reject: Box::new(move |e| {
                        reject(&config, &rejection, dpop_rejection(e), facts)
                    }),
                };
                ResponseFuture::replay(answer, waiting)
            }
        }
    }
}
