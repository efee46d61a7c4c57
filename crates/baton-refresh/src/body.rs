//! The request body the inner service sees: buffered (replayable) or the original stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// A request body that was buffered (and can be sent again) or is the original stream.
    #[derive(Debug)]
    pub struct RetryBody<B: Body> {
        #[pin]
        kind: Kind<B, B::Error>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B, E> {
        Buffered { data: Option<Bytes> },
        Stream { #[pin] body: B },
        Failed { error: Option<E> },
    }
}

impl<B: Body> RetryBody<B> {
    pub(crate) fn buffered(data: Bytes) -> Self {
        let data = if data.is_empty() { None } else { Some(data) };
        RetryBody {
            kind: Kind::Buffered { data },
        }
    }

    pub(crate) fn stream(body: B) -> Self {
        RetryBody {
            kind: Kind::Stream { body },
        }
    }

    /// Reading the original body failed while buffering: the inner service sees the same
    /// error, as it would have without this layer.
    pub(crate) fn failed(error: B::Error) -> Self {
        RetryBody {
            kind: Kind::Failed { error: Some(error) },
        }
    }
}

impl<B> Body for RetryBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Buffered { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Stream { body } => body.poll_frame(cx),
            KindProj::Failed { error } => Poll::Ready(error.take().map(Err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Buffered { data } => data.is_none(),
            Kind::Stream { body } => body.is_end_stream(),
            Kind::Failed { error } => error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Buffered { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Stream { body } => body.size_hint(),
            Kind::Failed { .. } => SizeHint::default(),
        }
    }
}
