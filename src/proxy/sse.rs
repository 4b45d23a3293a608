//! Reading an OpenAI-style SSE stream as it passes: the first chunk that carries content
//! (time to first token), the usage chunk, an in-band error event — and, when sluice asked
//! the provider for usage the app did not ask for, undoing what that changed, so that the
//! app receives exactly the bytes it would have received without sluice.
//!
//! Asking for usage (`stream_options.include_usage`) makes OpenAI add `"usage":null` to
//! every chunk and send one more chunk with `"choices":[]` and the usage before `[DONE]`.
//! With `strip_usage`, the tap removes the `usage` member from each chunk and drops that
//! last chunk. A frame made of whole events that need no change is passed on as it is,
//! without a copy. An event split across frames is held until it ends (the app only ever
//! receives whole events), scanned once and copied once; one longer than
//! [`MAX_EVENT`] ends the stream ([`Seen::too_large`]) and what was held is released.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use super::request::JsonBody;
use crate::metrics::Usage;
use crate::wire::sse_event::{data_of, Splitter, MAX_EVENT};

/// What the tap saw in one frame.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The first chunk with content (text, a refusal or a tool call) was in this frame.
    pub first_token: bool,
    /// A usage object was in this frame.
    pub usage: Option<Usage>,
    /// An error event was in this frame.
    pub error: bool,
    /// An event grew past [`MAX_EVENT`] without ending: the stream must end here (the
    /// bytes returned are the whole events before it).
    pub too_large: bool,
}

/// The per-stream state.
#[derive(Debug)]
pub struct Tap {
    strip_usage: bool,
    /// The bytes of an event that has not ended yet.
    partial: BytesMut,
    /// Where events end (it has scanned `partial` already).
    splitter: Splitter,
    content_seen: bool,
    /// A Responses API stream (typed events) rather than chat or completion chunks.
    responses: bool,
    /// The last event was dropped: an LF completing its line ending goes with it.
    dropped_last: bool,
    /// An event was too large: nothing more is read.
    too_large: bool,
}

impl Tap {
    pub fn new(strip_usage: bool) -> Self {
        Tap {
            strip_usage,
            partial: BytesMut::new(),
            splitter: Splitter::default(),
            content_seen: false,
            responses: false,
            dropped_last: false,
            too_large: false,
        }
    }

    /// A tap for a Responses API stream: the first token is the first output delta, usage
    /// comes with the terminal `response.completed` / `response.incomplete` /
    /// `response.failed` event (`response.failed` and `error` count as errors).
    /// Nothing is ever changed.
    pub fn responses() -> Self {
        Tap { responses: true, ..Tap::new(false) }
    }

    /// Read `frame`; returns the bytes to forward (possibly empty) and what was seen.
    pub fn feed(&mut self, frame: Bytes) -> (Bytes, Seen) {
        let mut seen = Seen::default();
        if self.too_large {
            return (Bytes::new(), seen);
        }
        // The end of the event held from earlier frames, when it ends in this one.
        let mut completed: Option<Bytes> = None;
        let mut at = 0;
        if !self.partial.is_empty() {
            let Some(n) = self.splitter.end_in(&frame) else {
                if self.partial.len() + frame.len() > MAX_EVENT {
                    return (Bytes::new(), self.overflow(seen));
                }
                self.partial.extend_from_slice(&frame);
                return (Bytes::new(), seen);
            };
            self.partial.extend_from_slice(&frame[..n]);
            let event = self.partial.split().freeze();
            completed = Some(match self.inspect_one(&event, &mut seen) {
                Edit::Keep => event,
                Edit::Drop => Bytes::new(),
                Edit::Replace(bytes) => Bytes::from(bytes),
            });
            at = n;
        }
        let (end, changed) = self.scan(&frame, at, &mut seen);
        if end < frame.len() {
            // A partial event at the end: held until it ends.
            if frame.len() - end > MAX_EVENT {
                seen = self.overflow(seen);
            } else {
                self.partial.extend_from_slice(&frame[end..]);
            }
        }
        let rest = match changed {
            None => frame.slice(at..end),
            Some(out) => out.freeze(),
        };
        let out = match completed {
            None => rest,
            Some(first) if rest.is_empty() => first,
            Some(first) => {
                let mut both = BytesMut::with_capacity(first.len() + rest.len());
                both.extend_from_slice(&first);
                both.extend_from_slice(&rest);
                both.freeze()
            }
        };
        (out, seen)
    }

    /// Give up on a stream whose pending event is too large, releasing what was held.
    fn overflow(&mut self, mut seen: Seen) -> Seen {
        self.too_large = true;
        self.partial = BytesMut::new();
        seen.too_large = true;
        seen
    }

    /// Whether an event has started and not ended (it is held back).
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Whatever is left when the stream ends (an event without its blank line).
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.partial.is_empty()).then(|| self.partial.split().freeze())
    }

    /// Inspect the whole events of `buf` from `from`. Returns where they end and, when an
    /// event had to change, the complete replacement of `buf[from..end]`.
    fn scan(&mut self, buf: &Bytes, from: usize, seen: &mut Seen) -> (usize, Option<BytesMut>) {
        let mut at = from;
        let mut out: Option<BytesMut> = None;
        while let Some(len) = self.splitter.end_in(&buf[at..]) {
            let event = &buf[at..at + len];
            let edit = self.inspect_one(event, seen);
            match (edit, &mut out) {
                (Edit::Keep, None) => {}
                (Edit::Keep, Some(o)) => o.extend_from_slice(event),
                (edit, o) => {
                    let o = o.get_or_insert_with(|| BytesMut::from(&buf[from..at]));
                    if let Edit::Replace(bytes) = edit {
                        o.extend_from_slice(&bytes);
                    }
                }
            }
            at += len;
        }
        (at, out)
    }

    /// What to do with one whole event.
    fn inspect_one(&mut self, event: &[u8], seen: &mut Seen) -> Edit {
        let edit = if self.dropped_last && event == b"\n" {
            // The LF completing the CRLF of an event that was dropped.
            Edit::Drop
        } else {
            self.inspect(event, seen)
        };
        self.dropped_last = matches!(edit, Edit::Drop);
        edit
    }

    fn inspect(&mut self, event: &[u8], seen: &mut Seen) -> Edit {
        let Some((data, single_line)) = data_of(event) else { return Edit::Keep };
        if data.as_ref() == b"[DONE]" {
            return Edit::Keep;
        }
        if self.responses {
            self.inspect_response_event(&data, seen);
            return Edit::Keep;
        }
        // Fast paths once the first token is known (most chunks): a chunk with neither
        // usage nor an error needs no parsing, and one that ends with `,"usage":null}` (how
        // OpenAI writes it) loses that member by a cut. In JSON, `"usage":null}` with nothing
        // after it can only be the last member of the outer object: a string cannot hold an
        // unescaped quote, and a nested object would need a second `}`.
        if self.content_seen {
            let has = |needle: &[u8]| memchr::memmem::find(&data, needle).is_some();
            if !has(b"\"usage\"") && !has(b"\"error\"") {
                return Edit::Keep;
            }
            const NULL_USAGE: &[u8] = b",\"usage\":null}";
            let null_usage = data.ends_with(NULL_USAGE) && !has(b"\"error\"");
            if null_usage && !self.strip_usage {
                return Edit::Keep;
            }
            if null_usage && single_line {
                if let Some(start) = find(event, &data) {
                    let cut = start + data.len() - NULL_USAGE.len();
                    let mut bytes = Vec::with_capacity(event.len());
                    bytes.extend_from_slice(&event[..cut]);
                    bytes.push(b'}');
                    bytes.extend_from_slice(&event[start + data.len()..]);
                    return Edit::Replace(bytes);
                }
            }
        }
        let Ok(chunk) = JsonBody::parse(&data) else { return Edit::Keep };
        if chunk.get("error").is_some() {
            seen.error = true;
            return Edit::Keep;
        }
        if !self.content_seen && chunk.get("choices").is_some_and(|c| has_content(c.get())) {
            self.content_seen = true;
            seen.first_token = true;
        }
        let Some(usage) = chunk.get("usage") else { return Edit::Keep };
        if let Some(u) = parse_usage(usage.get()) {
            seen.usage = Some(u);
        }
        if !self.strip_usage {
            return Edit::Keep;
        }
        let usage_only = chunk.get("choices").is_some_and(|c| c.get().trim() == "[]");
        if usage_only {
            return Edit::Drop;
        }
        if !single_line {
            return Edit::Keep;
        }
        // Rebuild `data: <chunk without usage>` with the event's own prefix and ending.
        let (Some(start), Some(stripped)) = (find(event, &data), chunk.without("usage")) else {
            return Edit::Keep;
        };
        let mut bytes = Vec::with_capacity(event.len());
        bytes.extend_from_slice(&event[..start]);
        bytes.extend_from_slice(&stripped);
        bytes.extend_from_slice(&event[start + data.len()..]);
        Edit::Replace(bytes)
    }
}

impl Tap {
    fn inspect_response_event(&mut self, data: &[u8], seen: &mut Seen) {
        const TERMINAL: [&[u8]; 3] = [b"response.completed", b"response.incomplete", b"response.failed"];
        let has = |needle: &[u8]| memchr::memmem::find(data, needle).is_some();
        if self.content_seen && !TERMINAL.iter().any(|t| has(t)) && !has(b"\"error\"") {
            return;
        }
        #[derive(Deserialize)]
        struct Event<'a> {
            #[serde(borrow, rename = "type")]
            kind: std::borrow::Cow<'a, str>,
            #[serde(borrow, default)]
            response: Option<&'a serde_json::value::RawValue>,
        }
        let Ok(event) = serde_json::from_slice::<Event<'_>>(data) else { return };
        match &*event.kind {
            "response.output_text.delta" | "response.refusal.delta" | "response.function_call_arguments.delta"
                if !self.content_seen =>
            {
                self.content_seen = true;
                seen.first_token = true;
            }
            kind @ ("response.completed" | "response.incomplete" | "response.failed") => {
                // `incomplete` is a length limit (chat's `length`), not a failure.
                seen.error |= kind == "response.failed";
                let usage = event.response.and_then(|r| JsonBody::parse(r.get().as_bytes()).ok()?.get("usage"));
                if let Some(u) = usage.and_then(|u| parse_usage(u.get())) {
                    seen.usage = Some(u);
                }
            }
            "error" => seen.error = true,
            _ => {}
        }
    }
}

enum Edit {
    Keep,
    Drop,
    Replace(Vec<u8>),
}

/// An OpenAI `usage` object (`null` or anything else reads as none): chat and completions
/// (`prompt_tokens`, `completion_tokens`) or the Responses API (`input_tokens`, `output_tokens`).
pub fn parse_usage(raw: &str) -> Option<Usage> {
    #[derive(Deserialize)]
    struct RawUsage {
        #[serde(default, alias = "input_tokens")]
        prompt_tokens: u64,
        #[serde(default, alias = "output_tokens")]
        completion_tokens: u64,
        #[serde(default, alias = "input_tokens_details")]
        prompt_tokens_details: Option<Details>,
    }
    #[derive(Deserialize)]
    struct Details {
        #[serde(default)]
        cached_tokens: u64,
    }
    let u: RawUsage = serde_json::from_str::<Option<RawUsage>>(raw).ok()??;
    let cached = u.prompt_tokens_details.map_or(0, |d| d.cached_tokens);
    Some(Usage { input: u.prompt_tokens, output: u.completion_tokens, cached })
}

/// `choices` of a chunk: whether any choice carries content.
fn has_content(choices: &str) -> bool {
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(borrow, default)]
        delta: Option<Delta<'a>>,
        /// Legacy completions.
        #[serde(borrow, default)]
        text: Option<std::borrow::Cow<'a, str>>,
    }
    #[derive(Deserialize)]
    struct Delta<'a> {
        #[serde(borrow, default)]
        content: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        refusal: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        tool_calls: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        function_call: Option<serde::de::IgnoredAny>,
    }
    let Ok(choices) = serde_json::from_str::<Vec<Choice<'_>>>(choices) else { return false };
    let filled = |s: &Option<std::borrow::Cow<'_, str>>| s.as_ref().is_some_and(|s| !s.is_empty());
    choices.iter().any(|c| {
        filled(&c.text)
            || c.delta.as_ref().is_some_and(|d| {
                filled(&d.content) || filled(&d.refusal) || d.tool_calls.is_some() || d.function_call.is_some()
            })
    })
}

/// Where `part` (a slice of `whole`, or equal bytes) starts in `whole`.
fn find(whole: &[u8], part: &[u8]) -> Option<usize> {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    if p >= w && p + part.len() <= w + whole.len() {
        return Some(p - w);
    }
    memchr::memmem::find(whole, part)
}

#[cfg(test)]
mod tests;
