//! The streamed (SSE) answer: a hand-written `http_body::Body` state machine.
//!
//! Each stream holds only its shared event head (`data: {"id":...,"choices":[`), a few
//! counters and, when a chunk delay is set, one reusable timer. Events are rendered when
//! polled; without a delay, consecutive events are coalesced into one frame.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};

use super::chat::Kind;
use super::render;
use crate::body::BoxError;

/// Coalesced frames are flushed once they reach this size.
const FLUSH_AT: usize = 16 * 1024;

/// Everything needed to render one stream.
pub(crate) struct StreamSpec {
    pub kind: Kind,
    /// Start of every event, up to and including `"choices":[`.
    pub head: Box<str>,
    /// Content chunks (one word each).
    pub chunks: usize,
    /// Delay between consecutive content chunks.
    pub chunk_delay: Duration,
    /// Fail the body after this many content chunks (at most `chunks`).
    pub break_after: Option<usize>,
    /// Send a final usage chunk; non-final chunks then carry `"usage":null`.
    pub include_usage: bool,
    pub prompt_tokens: u64,
}

/// The error a stream yields when asked to break (`x-mock-break-after`).
#[derive(Debug, thiserror::Error)]
#[error("mock provider broke the stream after {0} content chunks (break_after)")]
pub(crate) struct StreamBroken(pub usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Chat only: the `role: assistant` chunk.
    Role,
    /// Content chunks; `next` counts the ones sent.
    Content,
    Finish,
    Usage,
    Done,
    Broken,
    End,
}

/// The streamed answer body.
pub(crate) struct SseBody {
    spec: StreamSpec,
    phase: Phase,
    next: usize,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether `sleep` is set for the delay before content chunk `next`.
    armed: bool,
}

impl SseBody {
    pub(crate) fn new(spec: StreamSpec) -> Self {
        let phase = match spec.kind {
            Kind::Chat => Phase::Role,
            Kind::Completion => Phase::Content,
        };
        Self { spec, phase, next: 0, sleep: None, armed: false }
    }

    /// Wait out the chunk delay before content chunk `next`.
    fn poll_delay(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.armed {
            let deadline = Instant::now() + self.spec.chunk_delay;
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

    /// Append one event: head, `choice` (may be empty), then the tail.
    fn push_event(&self, out: &mut String, choice: impl FnOnce(&mut String)) {
        out.push_str(&self.spec.head);
        choice(out);
        out.push_str(if self.spec.include_usage { "],\"usage\":null}\n\n" } else { "]}\n\n" });
    }

    fn push_content(&self, out: &mut String) {
        let index = self.next;
        self.push_event(out, |out| match self.spec.kind {
            Kind::Chat => {
                out.push_str(r#"{"index":0,"delta":{"content":""#);
                render::push_word(out, index);
                out.push_str(r#""},"logprobs":null,"finish_reason":null}"#);
            }
            Kind::Completion => {
                out.push_str(r#"{"text":""#);
                render::push_word(out, index);
                out.push_str(r#"","index":0,"logprobs":null,"finish_reason":null}"#);
            }
        });
    }

    fn push_finish(&self, out: &mut String) {
        self.push_event(out, |out| {
            out.push_str(match self.spec.kind {
                Kind::Chat => r#"{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}"#,
                Kind::Completion => r#"{"text":"","index":0,"logprobs":null,"finish_reason":"stop"}"#,
            });
        });
    }

    fn push_usage(&self, out: &mut String) {
        out.push_str(&self.spec.head);
        out.push_str(r#"],"usage":"#);
        render::push_usage(out, self.spec.prompt_tokens, self.spec.chunks as u64);
        out.push_str("}\n\n");
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut out = String::new();
        loop {
            match this.phase {
                Phase::Role => {
                    out.reserve(this.spec.head.len() + 128);
                    this.push_event(&mut out, |out| {
                        out.push_str(
                            r#"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}"#,
                        );
                    });
                    this.phase = Phase::Content;
                }
                Phase::Content => {
                    if this.next == this.spec.chunks || Some(this.next) == this.spec.break_after {
                        this.phase = match this.spec.break_after {
                            Some(_) => Phase::Broken,
                            None => Phase::Finish,
                        };
                        continue;
                    }
                    if this.next > 0 && !this.spec.chunk_delay.is_zero() {
                        if !out.is_empty() {
                            break; // flush what we have before waiting
                        }
                        if this.poll_delay(cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                    if out.is_empty() {
                        out.reserve(this.spec.head.len() + 128);
                    }
                    this.push_content(&mut out);
                    this.next += 1;
                }
                Phase::Finish => {
                    this.push_finish(&mut out);
                    this.phase = if this.spec.include_usage { Phase::Usage } else { Phase::Done };
                }
                Phase::Usage => {
                    this.push_usage(&mut out);
                    this.phase = Phase::Done;
                }
                Phase::Done => {
                    out.push_str("data: [DONE]\n\n");
                    this.phase = Phase::End;
                }
                Phase::Broken => {
                    if !out.is_empty() {
                        break; // deliver the chunks before failing
                    }
                    this.phase = Phase::End;
                    this.sleep = None;
                    return Poll::Ready(Some(Err(Box::new(StreamBroken(this.next)))));
                }
                Phase::End => {
                    this.sleep = None;
                    break;
                }
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
        self.phase == Phase::End
    }
}
