//! The response body wrapper: forwards upstream frames as they arrive, enforces the idle
//! timeout, reads what the metrics need on the way (time to first token, usage, how the
//! body ended) and finishes the request's record exactly once. When the upstream breaks or
//! goes silent mid-way, an SSE stream ends with an OpenAI-shaped error event (so the client
//! sees why, instead of a hang or a bare reset); any other body is aborted. A stream still
//! open when the worker's shutdown grace period ends gets an error event too
//! (`shutting_down`), counted as cancelled: the variation is not to blame.
//!
//! Per-frame work is synchronous: the SSE tap reads each event once; the idle timer is
//! only re-armed when it fires, from the time of the last frame.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::error::{sse_error_event, GatewayError, Outcome};
use super::record::Recorder;
use super::request::JsonBody;
use super::sse::{parse_usage, Tap};
use crate::metrics::Usage;
use crate::providers::{Provider, UpstreamError};
use crate::wire::body::{Body, BoxError};

/// The largest JSON response kept to read its `usage` at the end; a larger one is passed
/// on without its tokens counted.
const MAX_USAGE_BODY: usize = 1 << 20;

/// How the body is read on its way.
#[derive(Debug)]
pub enum Reading {
    /// An SSE stream: events read by the tap.
    Sse(Tap),
    /// A JSON response: kept (as shared buffers, not copies) to read `usage` at the end.
    Json { frames: Vec<Bytes>, len: usize },
    /// Anything else: passed on unread.
    Opaque,
}

/// An upstream response body on its way to the client.
pub struct Forward {
    inner: Body,
    /// A frame already read from upstream (the peeked first event of a stream).
    first: Option<Frame<Bytes>>,
    provider: Arc<Provider>,
    reading: Reading,
    record: Recorder,
    status: StatusCode,
    idle: Duration,
    last_frame: Instant,
    timer: Pin<Box<Sleep>>,
    /// SSE only: the worker's signal that its shutdown grace period is over.
    cut: Option<Cut>,
    done: bool,
}

/// The cut signal: the token is checked on every frame (an atomic load), the future is
/// polled only when the upstream has nothing to give, to be woken by it.
struct Cut {
    token: CancellationToken,
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Cut {
    fn now() -> Option<Cut> {
        crate::worker::cut().map(|token| Cut { wait: Box::pin(token.clone().cancelled_owned()), token })
    }
}

impl Forward {
    pub fn new(
        inner: Body,
        first: Option<Frame<Bytes>>,
        provider: Arc<Provider>,
        reading: Reading,
        record: Recorder,
        status: StatusCode,
    ) -> Self {
        let idle = provider.timeouts.idle;
        let now = Instant::now();
        let cut = if matches!(reading, Reading::Sse(_)) { Cut::now() } else { None };
        Forward {
            inner,
            first,
            provider,
            reading,
            record,
            status,
            idle,
            last_frame: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            cut,
            done: false,
        }
    }

    /// End the body because of `error`: an error event for SSE, an abort otherwise.
    fn fail(&mut self, error: UpstreamError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let event = self.break_off(error);
        if matches!(self.reading, Reading::Sse(_)) {
            Poll::Ready(Some(Ok(Frame::data(event))))
        } else {
            Poll::Ready(Some(Err(Box::new(error))))
        }
    }

    /// Record the body as broken by `error`; the SSE error event that ends it.
    fn break_off(&mut self, error: UpstreamError) -> Bytes {
        self.done = true;
        let outcome = if error.is_timeout() { Outcome::Timeout } else { Outcome::UpstreamError };
        self.record.finish(outcome, self.status);
        tracing::warn!(provider = %self.provider.name, error = %error, "upstream response broke off");
        sse_error_event(&GatewayError::Upstream { provider: self.provider.name.clone(), error })
    }

    /// The shutdown grace period is over: the SSE error event that ends the stream (an
    /// event half received is dropped: glued to the error event it would garble both).
    fn cut_off(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        self.record.finish(Outcome::Cancelled, self.status);
        Poll::Ready(Some(Ok(Frame::data(sse_error_event(&GatewayError::ShuttingDown)))))
    }

    /// The body ended normally.
    fn end(&mut self) {
        self.done = true;
        if let Reading::Json { frames, len } = &mut self.reading {
            let whole = joined(frames);
            if let Some(u) = whole.as_deref().and_then(json_usage) {
                self.record.usage(u);
            }
            if let Some(q) = self.record.quality_mut() {
                match whole.as_deref() {
                    Some(body) => q.feed_whole(body),
                    // Too large to keep: what it says cannot be checked.
                    None if *len > MAX_USAGE_BODY => q.truncated(),
                    None => {}
                }
            }
        }
        self.record.finish(Recorder::outcome_of(self.status), self.status);
    }

    /// Read a data frame on its way; `None` when nothing is to be sent yet.
    fn read(&mut self, data: Bytes) -> Option<Bytes> {
        match &mut self.reading {
            Reading::Opaque => Some(data),
            Reading::Json { frames, len } => {
                if *len + data.len() <= MAX_USAGE_BODY {
                    *len += data.len();
                    frames.push(data.clone());
                } else {
                    *len = usize::MAX / 2;
                    frames.clear();
                }
                Some(data)
            }
            Reading::Sse(tap) => {
                let (out, seen) = tap.feed(data);
                if seen.first_token {
                    self.record.first_token();
                }
                if let Some(u) = seen.usage {
                    self.record.usage(u);
                }
                if seen.error {
                    self.record.stream_error();
                }
                if let Some(q) = self.record.quality_mut() {
                    q.feed_events(&out);
                }
                if seen.too_large {
                    // An event that never ends: the whole events before it, then the end.
                    let end = self.break_off(UpstreamError::Protocol);
                    return Some([out, end].concat().into());
                }
                (!out.is_empty()).then_some(out)
            }
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

    /// Whether nothing is left to send after the current frame.
    fn at_end(&self) -> bool {
        let partial = matches!(&self.reading, Reading::Sse(tap) if tap.has_partial());
        self.first.is_none() && !partial && self.inner.is_end_stream()
    }
}

impl HttpBody for Forward {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if this.cut.as_ref().is_some_and(|c| c.token.is_cancelled()) {
                return this.cut_off();
            }
            let frame = match this.first.take() {
                Some(frame) => frame,
                None => match Pin::new(&mut this.inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        this.last_frame = Instant::now();
                        frame
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // A rewritten stream says why it broke; a transport error is a break.
                        let error = e.downcast_ref::<UpstreamError>().copied();
                        return this.fail(error.unwrap_or(UpstreamError::StreamBroken));
                    }
                    Poll::Ready(None) => {
                        let rest = match &mut this.reading {
                            Reading::Sse(tap) => tap.finish(),
                            _ => None,
                        };
                        this.end();
                        return Poll::Ready(rest.map(|b| Ok(Frame::data(b))));
                    }
                    Poll::Pending => {
                        if let Some(cut) = &mut this.cut {
                            if cut.wait.as_mut().poll(cx).is_ready() {
                                return this.cut_off();
                            }
                        }
                        ready!(this.poll_idle(cx));
                        return this.fail(UpstreamError::IdleTimeout);
                    }
                },
            };
            let out = match frame.into_data() {
                Ok(data) => this.read(data).map(Frame::data),
                Err(other) => Some(other),
            };
            // hyper may stop polling a body that says it has ended: finish the record now.
            if this.at_end() {
                this.end();
            }
            if let Some(frame) = out {
                return Poll::Ready(Some(Ok(frame)));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.at_end()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.first, &self.reading) {
            (None, Reading::Opaque | Reading::Json { .. }) => self.inner.size_hint(),
            _ => SizeHint::default(),
        }
    }
}

/// A JSON response kept in `frames`, as one buffer.
fn joined(frames: &[Bytes]) -> Option<Bytes> {
    match frames {
        [] => None,
        [one] => Some(one.clone()),
        many => Some(many.concat().into()),
    }
}

/// `usage` of a JSON response.
fn json_usage(bytes: &[u8]) -> Option<Usage> {
    let body = JsonBody::parse(bytes).ok()?;
    parse_usage(body.get("usage")?.get())
}
