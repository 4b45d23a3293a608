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

use crate::body::{Body, BoxError};

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
}

impl StreamRewrite for super::anthropic::stream::Translator {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        super::anthropic::stream::Translator::feed(self, bytes)
    }
    fn finish(&mut self) -> Vec<u8> {
        super::anthropic::stream::Translator::finish(self)
    }
    fn finished(&self) -> bool {
        super::anthropic::stream::Translator::finished(self)
    }
}

impl StreamRewrite for super::azure::StreamNormaliser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        super::azure::StreamNormaliser::feed(self, bytes)
    }
    fn finish(&mut self) -> Vec<u8> {
        super::azure::StreamNormaliser::finish(self)
    }
}

impl StreamRewrite for super::openai::ToolIndexFiller {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        super::openai::ToolIndexFiller::feed(self, bytes)
    }
    fn finish(&mut self) -> Vec<u8> {
        super::openai::ToolIndexFiller::finish(self)
    }
}

/// An upstream body passed through a [`StreamRewrite`].
pub struct Rewritten {
    inner: Body,
    rewrite: Box<dyn StreamRewrite>,
    done: bool,
}

impl Rewritten {
    pub fn new(inner: Body, rewrite: Box<dyn StreamRewrite>) -> Self {
        Rewritten { inner, rewrite, done: false }
    }
}

impl HttpBody for Rewritten {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
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
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
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
                Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(Bytes::from(rest)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
