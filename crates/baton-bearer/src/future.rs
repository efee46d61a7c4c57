//! The response future of [`BearerVerify`](crate::BearerVerify).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use baton_core::ReplayFuture;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::ResponseBody;
use crate::dpop::replay_outcome;

/// Builds the rejection of a request whose DPoP proof the replay cache refused.
pub(crate) type RejectReplay =
    Box<dyn FnOnce(crate::DpopCheckError) -> Response<Bytes> + Send + Sync>;

/// A verified request waiting for a shared replay cache's answer before it goes in.
pub(crate) struct Waiting<S, ReqBody> {
    pub(crate) inner: S,
    pub(crate) req: Request<ReqBody>,
    pub(crate) nonce: Option<HeaderValue>,
    pub(crate) reject: RejectReplay,
}

pin_project! {
    /// The inner service's future, a rejection ready at once, or (with a shared DPoP replay
    /// cache) the cache's answer and then the inner service's future. Nothing is boxed on
    /// the way in but a shared cache's answer.
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        kind: Kind<S, ReqBody>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Inner { #[pin] future: S::Future, nonce: Option<HeaderValue> },
        Replay { check: ReplayFuture, waiting: Option<Waiting<S, ReqBody>> },
        Rejected { response: Option<Response<Bytes>> },
    }
}

impl<S, ReqBody> fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Replay { .. } => "replay check",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn inner(future: S::Future, nonce: Option<HeaderValue>) -> Self {
        ResponseFuture {
            kind: Kind::Inner { future, nonce },
        }
    }

    pub(crate) fn replay(check: ReplayFuture, waiting: Waiting<S, ReqBody>) -> Self {
        ResponseFuture {
            kind: Kind::Replay {
                check,
                waiting: Some(waiting),
            },
        }
    }

    pub(crate) fn rejected(response: Response<Bytes>) -> Self {
        ResponseFuture {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<S, ReqBody, B> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
{
    type Output = Result<Response<ResponseBody<B>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().kind.project() {
                KindProj::Inner { future, nonce } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some(nonce) = nonce.take() {
                        response.headers_mut().insert("dpop-nonce", nonce);
                    }
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                KindProj::Rejected { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::rejection)));
                }
                KindProj::Replay { check, waiting } => {
                    let answer = ready!(check.as_mut().poll(cx));
                    let mut waiting = waiting
                        .take()
                        .expect("ResponseFuture polled after completion");
                    match replay_outcome(answer) {
                        Ok(()) => Kind::Inner {
                            future: waiting.inner.call(waiting.req),
                            nonce: waiting.nonce,
                        },
                        Err(e) => Kind::Rejected {
                            response: Some((waiting.reject)(e)),
                        },
                    }
                }
            };
            self.as_mut().project().kind.set(next);
        }
    }
}
