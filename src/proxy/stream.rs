//! The response body wrapper: forwards upstream frames as they arrive and enforces the
//! idle timeout. When the upstream breaks or goes silent mid-way, an SSE stream ends
//! with an OpenAI-shaped error event (so the client sees why, instead of a hang or a
//! bare reset); any other body is aborted.
//!
//! Per-frame work is synchronous and allocation-free: the idle timer is only re-armed
//! when it fires, from the time of the last frame.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::error::{sse_error_event, GatewayError};
use crate::body::{Body, BoxError};
use crate::providers::{Provider, UpstreamError};

/// An upstream response body on its way to the client.
pub struct Forward {
    inner: Body,
    /// A frame already read from upstream (the peeked first event of a stream).
    first: Option<Frame<Bytes>>,
    provider: Arc<Provider>,
    /// Whether the body is an SSE stream (then failures become an error event).
    sse: bool,
    idle: Duration,
    last_frame: Instant,
    timer: Pin<Box<Sleep>>,
    done: bool,
}

impl Forward {
    pub fn new(inner: Body, first: Option<Frame<Bytes>>, provider: Arc<Provider>, sse: bool) -> Self {
        let idle = provider.timeouts.idle;
        let now = Instant::now();
        Forward {
            inner,
            first,
            provider,
            sse,
            idle,
            last_frame: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            done: false,
        }
    }

    /// End the body because of `error`: an error event for SSE, an abort otherwise.
    fn fail(&mut self, error: UpstreamError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        tracing::warn!(provider = %self.provider.name, error = %error, "upstream response broke off");
        if self.sse {
            let e = GatewayError::Upstream { provider: self.provider.name.clone(), error };
            Poll::Ready(Some(Ok(Frame::data(sse_error_event(&e)))))
        } else {
            Poll::Ready(Some(Err(Box::new(error))))
        }
    }

    /// Whether the idle timeout has expired; re-arms the timer when it fired early.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let deadline = self.last_frame + self.idle;
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

impl HttpBody for Forward {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(frame) = this.first.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.last_frame = Instant::now();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => this.fail(UpstreamError::StreamBroken),
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                ready!(this.poll_idle(cx));
                this.fail(UpstreamError::IdleTimeout)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.first.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.first {
            None => self.inner.size_hint(),
            Some(_) => SizeHint::default(),
        }
    }
}
