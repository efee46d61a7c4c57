#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod client;
mod flight;

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, Request, Response, StatusCode, Uri, request};
use http_body::Body;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

pub use body::RetryBody;
pub use client::{HttpRefresher, LoginError, parse_retry_after};

use flight::Flights;

/// What a refresh gave.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refreshed<C> {
    /// New credentials: the request is sent again with them.
    Fresh(C),
    /// Refused for good (the session is over): the original 401 goes back.
    Refused,
    /// The server could not refresh now (it said 503): not a sign-out. The original response
    /// goes back through [`Refresher::unavailable`]; the credentials are kept.
    Unavailable {
        /// When to try again.
        retry_after: Duration,
        /// What must reach the client anyway (a server's new refresh cookie, when the rotation
        /// happened but no access token could be issued): applied with
        /// [`Refresher::finish`] to the response.
        partial: Option<C>,
    },
}

impl<C> Refreshed<C> {
    /// The credentials, when fresh.
    pub fn fresh(self) -> Option<C> {
        match self {
            Refreshed::Fresh(c) => Some(c),
            _ => None,
        }
    }
}

/// Obtains fresh credentials and applies them to requests (and, on a server, to responses).
pub trait Refresher: Clone + Send + Sync + 'static {
    /// What a refresh yields (an access token, new cookies, ...).
    type Credentials: Clone + Send + Sync + 'static;

    /// The single-flight key of this request's credentials: requests with the same key share
    /// one refresh. `None` when the request has nothing to refresh with (it is not retried).
    fn flight_key(&self, parts: &request::Parts) -> Option<String>;

    /// Obtains new credentials (see [`Refreshed`]).
    fn refresh(
        &self,
        parts: &request::Parts,
    ) -> impl Future<Output = Refreshed<Self::Credentials>> + Send;

    /// Sets the current credentials on a request before its first attempt.
    fn prepare(&self, _parts: &mut request::Parts) {}

    /// `true` when the request's current credentials expire within `margin`.
    fn expires_within(&self, _parts: &request::Parts, _margin: Duration) -> bool {
        false
    }

    /// Looks at every response to a request to `uri` (a DPoP client keeps the server's
    /// nonce here): `true` asks for the request to be sent once more,
    /// [`prepare`](Self::prepare)d again and without a refresh (a DPoP server asking for a
    /// fresh nonce, say). Only a first attempt whose body could be kept is sent again. The
    /// default is `false`.
    fn resend(&self, _uri: &Uri, _status: StatusCode, _headers: &HeaderMap) -> bool {
        false
    }

    /// Applies new credentials to a request about to be sent (again).
    fn apply(&self, credentials: &Self::Credentials, parts: &mut request::Parts);

    /// Applies new credentials to the final response (a server sets cookies here).
    fn finish(&self, _credentials: &Self::Credentials, _headers: &mut HeaderMap) {}

    /// Adjusts the original response when the refresh was
    /// [`Unavailable`](Refreshed::Unavailable). The default leaves it as it is (a client
    /// returns the original 401 to its caller, keeping its credentials for the next call); a
    /// server turns it into 503 with `Retry-After`, so the browser does not take it for a
    /// sign-out.
    fn unavailable<B>(&self, _retry_after: Duration, _response: &mut Response<B>) {}
}

/// The default predicate: 401 with a `Bearer` (or `DPoP`) challenge carrying
/// `error="invalid_token"`.
pub fn is_invalid_token(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::UNAUTHORIZED
        && headers.get_all(WWW_AUTHENTICATE).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                (v.get(..7)
                    .is_some_and(|s| s.eq_ignore_ascii_case("bearer "))
                    || v.get(..5).is_some_and(|s| s.eq_ignore_ascii_case("dpop ")))
                    && v.contains("error=\"invalid_token\"")
            })
        })
}

#[derive(Clone)]
struct Config {
    max_replay: u64,
    predicate: fn(StatusCode, &HeaderMap) -> bool,
    proactive: Option<Duration>,
}

/// Refreshes once on a 401 and retries (see the [crate docs](crate)).
#[must_use]
pub struct RefreshOn401Layer<R: Refresher> {
    refresher: R,
    config: Arc<Config>,
    flights: Arc<Flights<R::Credentials>>,
}

impl<R: Refresher> Clone for RefreshOn401Layer<R> {
    fn clone(&self) -> Self {
        RefreshOn401Layer {
            refresher: self.refresher.clone(),
            config: self.config.clone(),
            flights: self.flights.clone(),
        }
    }
}

impl<R: Refresher + fmt::Debug> fmt::Debug for RefreshOn401Layer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshOn401Layer")
            .field("refresher", &self.refresher)
            .field("max_replay", &self.config.max_replay)
            .field("proactive", &self.config.proactive)
            .finish_non_exhaustive()
    }
}

impl<R: Refresher> RefreshOn401Layer<R> {
    /// The default largest body buffered for a retry: 64 KiB.
    pub const DEFAULT_MAX_REPLAY: u64 = 64 * 1024;

    /// Refreshes with `refresher`: replay limit 64 KiB, the [`is_invalid_token`] predicate,
    /// no proactive refresh.
    pub fn new(refresher: R) -> Self {
        RefreshOn401Layer {
            refresher,
            config: Arc::new(Config {
                max_replay: Self::DEFAULT_MAX_REPLAY,
                predicate: is_invalid_token,
                proactive: None,
            }),
            flights: Arc::new(Flights::default()),
        }
    }

    fn reconfigured(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// The largest request body buffered so it can be sent again.
    pub fn with_max_replay_body(self, bytes: u64) -> Self {
        self.reconfigured(|c| c.max_replay = bytes)
    }

    /// Which responses trigger a refresh.
    pub fn with_predicate(self, predicate: fn(StatusCode, &HeaderMap) -> bool) -> Self {
        self.reconfigured(|c| c.predicate = predicate)
    }

    /// Refreshes before sending when the credentials expire within `margin`.
    pub fn with_proactive_refresh(self, margin: Duration) -> Self {
        self.reconfigured(|c| c.proactive = Some(margin))
    }

    /// The refresher.
    pub fn refresher(&self) -> &R {
        &self.refresher
    }
}

impl<S, R: Refresher> Layer<S> for RefreshOn401Layer<R> {
    type Service = RefreshOn401<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RefreshOn401 {
            inner,
            refresher: self.refresher.clone(),
            config: self.config.clone(),
            flights: self.flights.clone(),
        }
    }
}

/// The middleware built by [`RefreshOn401Layer`].
pub struct RefreshOn401<S, R: Refresher> {
    inner: S,
    refresher: R,
    config: Arc<Config>,
    flights: Arc<Flights<R::Credentials>>,
}

impl<S: Clone, R: Refresher> Clone for RefreshOn401<S, R> {
    fn clone(&self) -> Self {
        RefreshOn401 {
            inner: self.inner.clone(),
            refresher: self.refresher.clone(),
            config: self.config.clone(),
            flights: self.flights.clone(),
        }
    }
}

impl<S: fmt::Debug, R: Refresher + fmt::Debug> fmt::Debug for RefreshOn401<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshOn401")
            .field("inner", &self.inner)
            .field("refresher", &self.refresher)
            .finish_non_exhaustive()
    }
}

impl<S, R: Refresher> RefreshOn401<S, R> {
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

/// The boxed future of [`RefreshOn401`] (it awaits the refresh and the retry).
pub type ResponseFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Method, URI, version, headers and extensions of a request, to build it again.
fn snapshot(parts: &request::Parts) -> request::Parts {
    let (mut copy, ()) = Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy.extensions = parts.extensions.clone();
    copy
}

impl<S, R, B, ResBody> Service<Request<B>> for RefreshOn401<S, R>
where
    S: Service<Request<RetryBody<B>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    R: Refresher,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Send,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<Response<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The ready service serves the first attempt; a clone serves the retry.
        let clone = self.inner.clone();
        let inner = mem::replace(&mut self.inner, clone);
        let retry_service = self.inner.clone();
        let refresher = self.refresher.clone();
        let config = self.config.clone();
        let flights = self.flights.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            // Read the epoch before the credentials: a refresh finishing in between then
            // counts as "since", and its result is reused instead of refreshing again.
            let flight = refresher.flight_key(&parts).map(|key| flights.get(&key));
            let seen = flight.as_ref().map(|f| f.epoch());
            refresher.prepare(&mut parts);

            let mut proactive = None;
            if let (Some(margin), Some(flight), Some(seen)) = (config.proactive, &flight, seen)
                && refresher.expires_within(&parts, margin)
            {
                proactive = flight
                    .refresh(seen, || refresher.refresh(&parts))
                    .await
                    .fresh();
                if let Some(credentials) = &proactive {
                    refresher.apply(credentials, &mut parts);
                }
            }

            let replayable = body
                .size_hint()
                .upper()
                .is_some_and(|n| n <= config.max_replay);
            let (first_body, replay) = if replayable {
                match body.collect().await {
                    Ok(collected) => {
                        let bytes = collected.to_bytes();
                        (RetryBody::buffered(bytes.clone()), Some(bytes))
                    }
                    Err(e) => (RetryBody::failed(e), None),
                }
            } else {
                (RetryBody::stream(body), None)
            };
            let retry_parts = replay.as_ref().map(|_| snapshot(&parts));
            let uri = parts.uri.clone();
            let mut response = inner
                .oneshot(Request::from_parts(parts, first_body))
                .await?;
            let resend = refresher.resend(&uri, response.status(), response.headers());
            if let (true, Some(retry_parts), Some(replay)) = (resend, &retry_parts, &replay) {
                let mut again = snapshot(retry_parts);
                refresher.prepare(&mut again);
                if let Some(credentials) = &proactive {
                    refresher.apply(credentials, &mut again);
                }
                response = retry_service
                    .clone()
                    .oneshot(Request::from_parts(
                        again,
                        RetryBody::buffered(replay.clone()),
                    ))
                    .await?;
                refresher.resend(&uri, response.status(), response.headers());
            }

            let used = proactive;
            if (config.predicate)(response.status(), response.headers())
                && let (Some(mut retry_parts), Some(replay), Some(flight), Some(seen)) =
                    (retry_parts, replay, flight, seen)
            {
                #[cfg(feature = "tracing")]
                tracing::debug!(target: "baton::refresh", "401 invalid_token: refreshing");
                let credentials = match flight
                    .refresh(seen, || refresher.refresh(&retry_parts))
                    .await
                {
                    Refreshed::Fresh(credentials) => credentials,
                    Refreshed::Unavailable {
                        retry_after,
                        partial,
                    } => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(target: "baton::refresh", ?retry_after, "refresh unavailable: credentials kept");
                        if let Some(partial) = &partial {
                            refresher.finish(partial, response.headers_mut());
                        }
                        refresher.unavailable(retry_after, &mut response);
                        return Ok(response);
                    }
                    Refreshed::Refused => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(target: "baton::refresh", "refresh refused: original 401 returned");
                        return Ok(response);
                    }
                };
                refresher.apply(&credentials, &mut retry_parts);
                response = retry_service
                    .oneshot(Request::from_parts(
                        retry_parts,
                        RetryBody::buffered(replay),
                    ))
                    .await?;
                // Its nonce is kept for the next request; this one is answered as it is.
                refresher.resend(&uri, response.status(), response.headers());
                refresher.finish(&credentials, response.headers_mut());
                return Ok(response);
            }
            if let Some(credentials) = &used {
                refresher.finish(credentials, response.headers_mut());
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn challenge(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn only_an_invalid_token_challenge_triggers_a_refresh() {
        let invalid = challenge(
            r#"Bearer realm="baton", error="invalid_token", error_description="token expired""#,
        );
        assert!(is_invalid_token(StatusCode::UNAUTHORIZED, &invalid));
        assert!(is_invalid_token(
            StatusCode::UNAUTHORIZED,
            &challenge(r#"bearer error="invalid_token""#)
        ));
        assert!(!is_invalid_token(StatusCode::FORBIDDEN, &invalid));
        assert!(is_invalid_token(
            StatusCode::UNAUTHORIZED,
            &challenge(r#"DPoP algs="ES256 EdDSA", error="invalid_token""#)
        ));
        assert!(!is_invalid_token(
            StatusCode::UNAUTHORIZED,
            &challenge(r#"DPoP algs="ES256 EdDSA", error="invalid_dpop_proof""#)
        ));
        assert!(!is_invalid_token(
            StatusCode::UNAUTHORIZED,
            &challenge(r#"Bearer error="insufficient_user_authentication", max_age=300"#)
        ));
        assert!(!is_invalid_token(
            StatusCode::UNAUTHORIZED,
            &challenge(r#"Bearer realm="baton""#)
        ));
        assert!(!is_invalid_token(
            StatusCode::UNAUTHORIZED,
            &challenge(r#"Basic realm="x", error="invalid_token""#)
        ));
        assert!(!is_invalid_token(
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new()
        ));
    }

    #[tokio::test]
    async fn a_flight_runs_once_for_callers_that_saw_the_same_epoch() {
        let flights = Flights::<u32>::default();
        let flight = flights.get("k");
        let seen = flight.epoch();
        let runs = std::sync::atomic::AtomicU32::new(0);
        let first = flight
            .refresh(seen, || async {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Refreshed::Fresh(7)
            })
            .await;
        let second = flights
            .get("k")
            .refresh(seen, || async { Refreshed::Fresh(8) })
            .await;
        assert_eq!((first, second), (Refreshed::Fresh(7), Refreshed::Fresh(7)));
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        let third = flights
            .get("k")
            .refresh(flight.epoch(), || async { Refreshed::Refused })
            .await;
        assert_eq!(
            third,
            Refreshed::Refused,
            "a later failure is reported as such"
        );
        let unavailable = Refreshed::Unavailable {
            retry_after: Duration::from_secs(1),
            partial: None,
        };
        let fourth = flights
            .get("k")
            .refresh(flight.epoch(), || async { unavailable.clone() })
            .await;
        assert_eq!(fourth, unavailable, "shared with the callers that waited");
        assert_eq!(flights.get("other").epoch(), 0);
    }
}
