//! The streamed (SSE) answer: a hand-written `http_body::Body` driving an [`Events`] source.
//!
//! A source (OpenAI chunks, Anthropic events, Responses API events) renders one event at a
//! time when polled and says what kind of event comes next; the body does everything that
//! is the same for every kind: the chunk delay (one reusable timer), coalescing consecutive
//! events into one frame when there is no delay, `break_after`, and the scripted cuts
//! (`mid_stream_error`, `truncate`). No task or channel per stream.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};

use super::script::CUT_AFTER;
use crate::body::BoxError;

/// Coalesced frames are flushed once they reach this size.
const FLUSH_AT: usize = 16 * 1024;

/// What the next event of a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Framing before or between content: a role chunk, `message_start`, a block start.
    Frame,
    /// A content event: a text piece or a piece of tool-call arguments.
    Content,
    /// The events after the content, starting with the finish.
    Tail,
}

/// One kind's events, rendered on demand.
pub(crate) trait Events {
    /// The class of the next event, or `None` once the stream is complete.
    fn peek(&self) -> Option<Class>;
    /// Append the next event (the one [`Events::peek`] described) and move past it.
    fn push_next(&mut self, out: &mut String);
    /// Append the event reporting a failure mid-stream (the `mid_stream_error` script).
    fn push_error(&self, out: &mut String);
}

/// A scripted early end of the stream, after [`CUT_AFTER`] content events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Send the kind's error event, then end.
    Error,
    /// End cleanly, without the terminal events.
    End,
}

/// How a stream is paced and where it stops.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Delay between consecutive events that are delayed (see `every_event`).
    pub chunk_delay: Duration,
    /// Delay every event after the first (Anthropic), not only content after the first.
    pub every_event: bool,
    /// Fail the body after this many content events, or instead of the finish.
    pub break_after: Option<usize>,
    pub cut: Option<Cut>,
}

/// The error a stream yields when asked to break (`x-mock-break-after`).
#[derive(Debug, thiserror::Error)]
#[error("mock provider broke the stream after {0} content chunks (break_after)")]
pub(crate) struct StreamBroken(pub usize);

/// The streamed answer body.
pub(crate) struct SseBody<E> {
    events: E,
    timing: Timing,
    /// Content events sent.
    content: usize,
    /// Whether any event was sent.
    started: bool,
    ended: bool,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether `sleep` is set for the delay before the next event.
    armed: bool,
}

impl<E: Events> SseBody<E> {
    pub(crate) fn new(events: E, timing: Timing) -> Self {
        Self { events, timing, content: 0, started: false, ended: false, sleep: None, armed: false }
    }

    /// Wait out the chunk delay before the next event.
    fn poll_delay(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.armed {
            let deadline = Instant::now() + self.timing.chunk_delay;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        if let Some(sleep) = &mut self.sleep {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.armed = false;
        Poll::Ready(())
    }

    fn end(&mut self) {
        self.ended = true;
        self.sleep = None;
    }

    fn delayed(&self, class: Class) -> bool {
        if self.timing.chunk_delay.is_zero() {
            return false;
        }
        match class {
            Class::Content => self.started && (self.timing.every_event || self.content > 0),
            Class::Frame | Class::Tail => self.started && self.timing.every_event,
        }
    }
}

impl<E: Events + Unpin> Body for SseBody<E> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut out = String::new();
        while !this.ended {
            let Some(class) = this.events.peek() else {
                this.end();
                break;
            };
            let sent = this.content;
            let at_content_limit = |limit: usize| match class {
                Class::Content => sent == limit,
                Class::Tail => true,
                Class::Frame => false,
            };
            if let Some(cut) = this.timing.cut {
                if at_content_limit(CUT_AFTER) {
                    if cut == Cut::Error {
                        this.events.push_error(&mut out);
                    }
                    this.end();
                    break;
                }
            }
            if let Some(limit) = this.timing.break_after {
                if at_content_limit(limit) {
                    if !out.is_empty() {
                        break; // deliver the events before failing
                    }
                    this.end();
                    return Poll::Ready(Some(Err(Box::new(StreamBroken(this.content)))));
                }
            }
            if this.delayed(class) {
                if !out.is_empty() {
                    break; // flush what we have before waiting
                }
                if this.poll_delay(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            this.events.push_next(&mut out);
            this.started = true;
            if class == Class::Content {
                this.content += 1;
            }
            if out.len() >= FLUSH_AT {
                break;
            }
        }
        if out.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}
