//! Reading an OpenAI-style SSE stream as it passes: the first chunk that carries content
//! (time to first token), the usage chunk, an in-band error event — and, when sluice asked
//! the provider for usage the app did not ask for, undoing what that changed, so that the
//! app receives exactly the bytes it would have received without sluice.
//!
//! Asking for usage (`stream_options.include_usage`) makes OpenAI add `"usage":null` to
//! every chunk and send one more chunk with `"choices":[]` and the usage before `[DONE]`.
//! With `strip_usage`, the tap removes the `usage` member from each chunk and drops that
//! last chunk. Only the current partial event is buffered; a frame made of whole events
//! that need no change is passed on as it is, without a copy.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use super::request::JsonBody;
use crate::metrics::Usage;
use crate::sse_event::{data_of, event_len};

/// What the tap saw in one frame.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The first chunk with content (text, a refusal or a tool call) was in this frame.
    pub first_token: bool,
    /// A usage object was in this frame.
    pub usage: Option<Usage>,
    /// An error event was in this frame.
    pub error: bool,
}

/// The per-stream state.
#[derive(Debug)]
pub struct Tap {
    strip_usage: bool,
    /// The bytes of an event that has not ended yet.
    partial: BytesMut,
    content_seen: bool,
    /// A Responses API stream (typed events) rather than chat or completion chunks.
    responses: bool,
}

impl Tap {
    pub fn new(strip_usage: bool) -> Self {
        Tap { strip_usage, partial: BytesMut::new(), content_seen: false, responses: false }
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
        if self.partial.is_empty() {
            // The common case: the frame starts at an event boundary.
            let (end, changed) = self.scan(&frame, &mut seen);
            if end == frame.len() {
                return match changed {
                    None => (frame, seen),
                    Some(out) => (out.freeze(), seen),
                };
            }
            // A partial event at the end: keep it until it is complete.
            self.partial.extend_from_slice(&frame[end..]);
            let out = match changed {
                None if self.strip_usage => frame.slice(..end),
                None => frame,
                Some(out) => out.freeze(),
            };
            return (out, seen);
        }
        self.partial.extend_from_slice(&frame);
        let buffered = self.partial.split().freeze();
        let (end, changed) = self.scan(&buffered, &mut seen);
        self.partial.extend_from_slice(&buffered[end..]);
        if !self.strip_usage {
            // Nothing is ever changed: forward the frame as it came.
            return (frame, seen);
        }
        let out = changed.map_or_else(|| buffered.slice(..end), BytesMut::freeze);
        (out, seen)
    }

    /// Whether an event has started and not ended (in `strip_usage` mode it is held back).
    pub fn has_partial(&self) -> bool {
        self.strip_usage && !self.partial.is_empty()
    }

    /// Whatever is left when the stream ends (an event without its blank line).
    pub fn finish(&mut self) -> Option<Bytes> {
        (self.strip_usage && !self.partial.is_empty()).then(|| self.partial.split().freeze())
    }

    /// Inspect the whole events at the start of `buf`. Returns where they end and, when an
    /// event had to change, the complete replacement of `buf[..end]`.
    fn scan(&mut self, buf: &Bytes, seen: &mut Seen) -> (usize, Option<BytesMut>) {
        let mut at = 0;
        let mut out: Option<BytesMut> = None;
        while let Some(len) = event_len(&buf[at..]) {
            let event = &buf[at..at + len];
            let edit = self.inspect(event, seen);
            match (edit, &mut out) {
                (Edit::Keep, None) => {}
                (Edit::Keep, Some(o)) => o.extend_from_slice(event),
                (edit, o) => {
                    let o = o.get_or_insert_with(|| BytesMut::from(&buf[..at]));
                    if let Edit::Replace(bytes) = edit {
                        o.extend_from_slice(&bytes);
                    }
                }
            }
            at += len;
        }
        (at, out)
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
    }
    let u: RawUsage = serde_json::from_str::<Option<RawUsage>>(raw).ok()??;
    Some(Usage { input: u.prompt_tokens, output: u.completion_tokens })
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
mod tests {
    use super::*;

    const WITH_USAGE: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
        "data: [DONE]\n\n",
    );
    const WITHOUT_USAGE: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    );

    /// Feed `stream` split into pieces of `size` bytes; the forwarded bytes and the
    /// piece index of the first token and usage.
    fn run(stream: &str, size: usize, strip: bool) -> (String, Option<usize>, Option<(usize, Usage)>) {
        let mut tap = Tap::new(strip);
        let mut out = Vec::new();
        let (mut first, mut usage) = (None, None);
        for (i, piece) in stream.as_bytes().chunks(size).enumerate() {
            let (bytes, seen) = tap.feed(Bytes::copy_from_slice(piece));
            out.extend_from_slice(&bytes);
            if seen.first_token {
                assert!(first.is_none(), "the first token is seen once");
                first = Some(i);
            }
            if let Some(u) = seen.usage {
                usage = Some((i, u));
            }
        }
        if let Some(rest) = tap.finish() {
            out.extend_from_slice(&rest);
        }
        (String::from_utf8(out).unwrap(), first, usage)
    }

    #[test]
    fn stripping_gives_the_stream_without_usage_whatever_the_split() {
        for size in [1, 2, 3, 7, 50, 97, 1000] {
            let (out, first, usage) = run(WITH_USAGE, size, true);
            assert_eq!(out, WITHOUT_USAGE, "split into {size}-byte pieces");
            assert!(first.is_some());
            assert_eq!(usage.unwrap().1, Usage { input: 9, output: 2 });
        }
    }

    #[test]
    fn passing_through_changes_nothing_and_still_reads_usage() {
        for size in [1, 5, 64, 1000] {
            let (out, first, usage) = run(WITH_USAGE, size, false);
            assert_eq!(out, WITH_USAGE);
            assert!(first.is_some());
            assert_eq!(usage.unwrap().1, Usage { input: 9, output: 2 });
        }
        let (out, _, usage) = run(WITHOUT_USAGE, 10, false);
        assert_eq!(out, WITHOUT_USAGE);
        assert!(usage.is_none());
    }

    #[test]
    fn the_first_token_is_the_first_chunk_with_content() {
        // Whole stream in one frame: the role-only chunk does not count, "Hi" does.
        let (_, first, _) = run(WITH_USAGE, 10_000, true);
        assert_eq!(first, Some(0));
        let role_only = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
        let mut tap = Tap::new(false);
        assert!(!tap.feed(Bytes::from_static(role_only.as_bytes())).1.first_token);
        let tool = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0}]}}]}\n\n";
        assert!(tap.feed(Bytes::from_static(tool.as_bytes())).1.first_token);
        let text = "data: {\"choices\":[{\"text\":\"x\"}]}\n\n";
        assert!(!tap.feed(Bytes::from_static(text.as_bytes())).1.first_token, "only the first");
        let mut legacy = Tap::new(false);
        assert!(legacy.feed(Bytes::from_static(text.as_bytes())).1.first_token);
    }

    #[test]
    fn crlf_events_comments_and_errors() {
        let s = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\r\n\r\n: ping\n\ndata: [DONE]\r\n\r\n";
        let (out, _, usage) = run(s, 4, true);
        assert_eq!(out, ": ping\n\ndata: [DONE]\r\n\r\n");
        assert_eq!(usage.unwrap().1, Usage { input: 1, output: 2 });
        let mut tap = Tap::new(false);
        let err = "data: {\"error\":{\"message\":\"boom\"}}\n\n";
        assert!(tap.feed(Bytes::from_static(err.as_bytes())).1.error);
    }

    #[test]
    fn whole_unchanged_frames_are_not_copied() {
        let frame = Bytes::from_static(WITHOUT_USAGE.as_bytes());
        let (out, _) = Tap::new(true).feed(frame.clone());
        assert_eq!(out.as_ptr(), frame.as_ptr());
    }
}

#[cfg(test)]
mod responses_tests {
    use super::*;

    fn run(events: &[&str]) -> Seen {
        let mut tap = Tap::responses();
        let mut all = Seen::default();
        for e in events {
            let (out, seen) = tap.feed(Bytes::from(format!("event: x\ndata: {e}\n\n")));
            assert_eq!(out.len(), e.len() + 17, "a Responses stream passes unchanged");
            all.first_token |= seen.first_token;
            all.error |= seen.error;
            all.usage = seen.usage.or(all.usage);
        }
        all
    }

    #[test]
    fn first_output_delta_terminal_usage_and_errors() {
        let usage = r#""usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}"#;
        let seen = run(&[
            r#"{"type":"response.created","response":{"model":"m","usage":null}}"#,
            r#"{"type":"response.output_text.delta","delta":"Hi"}"#,
            &format!(r#"{{"type":"response.completed","response":{{"status":"completed",{usage}}}}}"#),
        ]);
        assert_eq!((seen.first_token, seen.error, seen.usage), (true, false, Some(Usage { input: 5, output: 2 })));
        let incomplete = format!(r#"{{"type":"response.incomplete","response":{{"status":"incomplete",{usage}}}}}"#);
        assert!(!run(&[&incomplete]).error, "a length limit is not an error");
        let failed = format!(r#"{{"type":"response.failed","response":{{"status":"failed",{usage}}}}}"#);
        assert!(run(&[&failed]).error);
        assert!(run(&[r#"{"type":"error","message":"boom"}"#]).error);
    }
}
