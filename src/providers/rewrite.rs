//! A provider's streamed body, rewritten on its way into OpenAI's shape: Anthropic's events
//! translated, Azure's filter annotations dropped, missing tool-call indexes filled. The
//! rewriters are per-stream state machines fed with bytes split anywhere; this body only
//! drives them, so the proxy's tap downstream sees a plain OpenAI stream. The body ends
//! as soon as the rewriter has sent the stream's last event (an upstream that keeps the
//! connection open after it is not waited for).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::UpstreamError;
use crate::wire::body::{Body, BoxError};

/// A per-stream rewriter of SSE bytes.
pub trait StreamRewrite: Send {
    /// Rewrite the next bytes; what is returned may be empty (an event still partial, or dropped).
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8>;
    /// The upstream body ended: whatever must still be sent (e.g. an error event for a
    /// stream cut short).
    fn finish(&mut self) -> Vec<u8>;
    /// Whether the stream is complete (its last event, or an error, was sent): nothing
    /// after it is read.
    fn finished(&self) -> bool {
        false
    }
    /// Whether the stream failed in a way the proxy reports itself, as an error of the body:
    /// before anything of it was sent (so it can still be a 502, and a fallback), or with an
    /// event longer than [`crate::wire::sse_event::MAX_EVENT`]. Nothing after it is read.
    fn broken(&self) -> Option<UpstreamError> {
        None
    }
}

/// An upstream body passed through a [`StreamRewrite`].
pub struct Rewritten {
    inner: Body,
    rewrite: Box<dyn StreamRewrite>,
    done: bool,
    /// The rewriter's failure, returned after the bytes it produced before it.
    broken: Option<UpstreamError>,
}

impl Rewritten {
    pub fn new(inner: Body, rewrite: Box<dyn StreamRewrite>) -> Self {
        Rewritten { inner, rewrite, done: false, broken: None }
    }

    /// `out` (what the rewriter just produced), unless it broke: then `out` when there is
    /// something, and the error next.
    fn produced(&mut self, out: Vec<u8>) -> Option<Result<Frame<Bytes>, BoxError>> {
        match self.rewrite.broken() {
            None => Some(Ok(Frame::data(Bytes::from(out)))),
            Some(e) => {
                self.done = true;
                if out.is_empty() {
                    return Some(Err(Box::new(e)));
                }
                self.broken = Some(e);
                Some(Ok(Frame::data(Bytes::from(out))))
            }
        }
    }
}

impl HttpBody for Rewritten {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(e) = this.broken.take() {
            return Poll::Ready(Some(Err(Box::new(e))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            // Even an empty result is passed on: upstream bytes that produce nothing (a
            // ping, an annotation) still show the provider is alive, which is what the
            // proxy's idle timeout measures.
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let out = this.rewrite.feed(&data);
                    this.done = this.rewrite.finished();
                    Poll::Ready(this.produced(out))
                }
                Err(other) => Poll::Ready(Some(Ok(other))),
            },
            // A break is the proxy's to report (it knows the provider and the record).
            Some(Err(e)) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            None => {
                this.done = true;
                let rest = this.rewrite.finish();
                if rest.is_empty() && this.rewrite.broken().is_none() {
                    return Poll::Ready(None);
                }
                Poll::Ready(this.produced(rest))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.broken.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
