//! The answer of a sampled request, copied as it passes to the app.
//!
//! The response wrapper hands every frame it forwards to [`Capture::feed_events`] (an SSE
//! stream: the tap forwards whole events only, so each frame is read on its own) or, for a
//! JSON answer, the whole body to [`Capture::feed_whole`]. The capture reads the answer's
//! text (chat and completion deltas, Responses API output text, refusals), its tool calls
//! (name and arguments) and its finish reason — never holding a byte back: the frame has
//! already gone on. It keeps at most `limits.capture_per_request` bytes (past that it is
//! marked truncated), and every byte it holds — the request body its judges will read
//! included — is charged to one process-wide [`Budget`] (`limits.capture_budget`): when
//! the budget has no room, the request is not captured at all, or its capture stops
//! (truncated).

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use serde::Deserialize;

use crate::wire::sse_event::{data_of, Splitter};
use crate::wire::Endpoint;

/// How much a capture asks of the budget at a time (fewer atomic operations per chunk).
const STEP: usize = 4 << 10;
/// Most tool calls of one answer read.
const MAX_TOOLS: usize = 64;

/// Bytes every capture together may hold.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget { used: AtomicUsize::new(0), limit })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        self.used.fetch_update(Relaxed, Relaxed, |u| u.checked_add(n).filter(|&t| t <= self.limit)).is_ok()
    }
}

/// Bytes held from a [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Held {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Held {
    /// Take `bytes` from `budget`, or nothing when it has no room.
    pub fn take(budget: &Arc<Budget>, bytes: usize) -> Option<Held> {
        budget.take(bytes).then(|| Held { budget: Arc::clone(budget), bytes })
    }

    fn grow(&mut self, bytes: usize) -> bool {
        let ok = self.budget.take(bytes);
        if ok {
            self.bytes += bytes;
        }
        ok
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Relaxed);
    }
}

/// Which shape the answer comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Chat completions (and answers translated into them).
    Chat,
    /// Legacy completions: `choices[].text`.
    Completions,
    /// The Responses API.
    Responses,
}

impl Shape {
    pub fn of(endpoint: Endpoint) -> Option<Shape> {
        match endpoint {
            Endpoint::ChatCompletions => Some(Shape::Chat),
            Endpoint::Completions => Some(Shape::Completions),
            Endpoint::Responses => Some(Shape::Responses),
            Endpoint::Embeddings => None,
        }
    }
}

/// One tool call of the answer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ToolCall {
    name: String,
    arguments: String,
}

/// What was read of one answer so far.
#[derive(Debug)]
pub struct Capture {
    shape: Shape,
    text: String,
    tools: Vec<ToolCall>,
    finish_reason: Option<String>,
    truncated: bool,
    /// Bytes of text and tool calls kept at most.
    limit: usize,
    /// Bytes of text and tool calls kept (tool calls' names and arguments included).
    kept: usize,
    /// Of the budget: the request body (when judged) and what was kept, in steps.
    held: Held,
    /// Bytes of `held` not used yet.
    room: usize,
}

/// A finished capture.
#[derive(Debug)]
pub struct Captured {
    /// The message content (text and refusals).
    pub text: String,
    /// Each tool call on a line of its own, `name(arguments)`.
    pub tools: String,
    pub finish_reason: Option<String>,
    pub truncated: bool,
    /// What it holds of the budget (given back when the last judge is done with it).
    pub held: Held,
}

impl Captured {
    /// The whole answer as a judge reads it: the content, then the tool calls.
    pub fn answer(&self) -> String {
        match (self.text.is_empty(), self.tools.is_empty()) {
            (_, true) => self.text.clone(),
            (true, false) => self.tools.clone(),
            (false, false) => format!("{}\n{}", self.text, self.tools),
        }
    }
}

impl Capture {
    /// A capture of at most `limit` bytes of answer, holding `held` (its request's share).
    pub fn new(shape: Shape, limit: usize, held: Held) -> Capture {
        Capture {
            shape,
            text: String::new(),
            tools: Vec::new(),
            finish_reason: None,
            truncated: false,
            limit,
            kept: 0,
            held,
            room: 0,
        }
    }

    /// Whether the answer went past what is kept.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Nothing more is kept: the answer went past what could be read.
    pub fn mark_truncated(&mut self) {
        self.truncated = true;
    }

    /// Read the whole events of one forwarded SSE frame.
    pub fn feed_events(&mut self, frame: &[u8]) {
        let mut splitter = Splitter::default();
        let mut at = 0;
        while let Some(len) = splitter.end_in(&frame[at..]) {
            if let Some((data, _)) = data_of(&frame[at..at + len]) {
                if data.as_ref() != b"[DONE]" {
                    self.event(&data);
                }
            }
            at += len;
        }
    }

    /// Read a whole JSON answer.
    pub fn feed_whole(&mut self, body: &[u8]) {
        match self.shape {
            Shape::Chat | Shape::Completions => {
                if let Ok(answer) = serde_json::from_slice::<ChatAnswer<'_>>(body) {
                    if let Some(choice) = answer.choices.into_iter().find(|c| c.index == 0) {
                        self.choice(choice);
                    }
                }
            }
            Shape::Responses => {
                if let Ok(r) = serde_json::from_slice::<Response<'_>>(body) {
                    self.response(r);
                }
            }
        }
    }

    /// What was read.
    pub fn finish(self) -> Captured {
        let mut tools = String::new();
        for t in self.tools.into_iter().filter(|t| !t.name.is_empty() || !t.arguments.is_empty()) {
            if !tools.is_empty() {
                tools.push('\n');
            }
            tools.push_str(&t.name);
            tools.push('(');
            tools.push_str(&t.arguments);
            tools.push(')');
        }
        Captured {
            text: self.text,
            tools,
            finish_reason: self.finish_reason,
            truncated: self.truncated,
            held: self.held,
        }
    }

    fn event(&mut self, data: &[u8]) {
        match self.shape {
            Shape::Chat | Shape::Completions => {
                if let Ok(chunk) = serde_json::from_slice::<ChatAnswer<'_>>(data) {
                    if let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) {
                        self.choice(choice);
                    }
                }
            }
            Shape::Responses => {
                if let Ok(e) = serde_json::from_slice::<ResponseEvent<'_>>(data) {
                    self.response_event(e);
                }
            }
        }
    }

    fn choice(&mut self, c: Choice<'_>) {
        if let Some(text) = &c.text {
            self.push_text(text);
        }
        for d in [c.delta, c.message].into_iter().flatten() {
            for part in [&d.content, &d.refusal].into_iter().flatten() {
                self.push_text(part);
            }
            for (n, t) in d.tool_calls.into_iter().flatten().enumerate() {
                let i = t.index.unwrap_or(n);
                if let Some(f) = t.function {
                    self.tool(i, f.name.as_deref(), f.arguments.as_deref());
                }
            }
        }
        if let Some(f) = c.finish_reason {
            self.finish_reason = Some(f.into_owned());
        }
    }

    fn response(&mut self, r: Response<'_>) {
        for (i, item) in r.output.into_iter().enumerate() {
            match &*item.kind {
                "message" => {
                    for part in item.content.into_iter().flatten() {
                        if let Some(t) = part.text.as_deref().or(part.refusal.as_deref()) {
                            self.push_text(t);
                        }
                    }
                }
                "function_call" => self.tool(i, item.name.as_deref(), item.arguments.as_deref()),
                _ => {}
            }
        }
        self.finish_reason = Some(responses_finish(r.status.as_deref()).to_string());
    }

    fn response_event(&mut self, e: ResponseEvent<'_>) {
        match &*e.kind {
            "response.output_text.delta" | "response.refusal.delta" => {
                if let Some(d) = &e.delta {
                    self.push_text(d);
                }
            }
            "response.output_item.added" => {
                if let Some(item) = e.item.filter(|i| i.kind == "function_call") {
                    self.tool(e.output_index.unwrap_or(0), item.name.as_deref(), None);
                }
            }
            "response.function_call_arguments.delta" => {
                self.tool(e.output_index.unwrap_or(0), None, e.delta.as_deref());
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                let status = e.response.and_then(|r| r.status);
                let status = status.as_deref().or_else(|| e.kind.strip_prefix("response."));
                self.finish_reason = Some(responses_finish(status).to_string());
            }
            _ => {}
        }
    }

    /// Tool call `i` (by its index): its name, a piece of its arguments.
    fn tool(&mut self, i: usize, name: Option<&str>, arguments: Option<&str>) {
        if i >= MAX_TOOLS || self.truncated {
            return;
        }
        if self.tools.len() <= i {
            self.tools.resize_with(i + 1, ToolCall::default);
        }
        for (part, is_name) in [(name, true), (arguments, false)] {
            let Some(part) = part.filter(|p| !p.is_empty()) else { continue };
            let Some(n) = self.admit(part) else { return };
            let call = &mut self.tools[i];
            let target = if is_name { &mut call.name } else { &mut call.arguments };
            target.push_str(&part[..n]);
        }
    }

    fn push_text(&mut self, part: &str) {
        if let Some(n) = self.admit(part) {
            self.text.push_str(&part[..n]);
        }
    }

    /// How much of `part` fits (a char boundary); marks the capture truncated when not all.
    fn admit(&mut self, part: &str) -> Option<usize> {
        if self.truncated {
            return None;
        }
        let mut n = part.len().min(self.limit - self.kept);
        while n > self.room {
            let step = STEP.max(n - self.room);
            if !self.held.grow(step) {
                n = self.room;
                break;
            }
            self.room += step;
        }
        if n < part.len() {
            self.truncated = true;
            while !part.is_char_boundary(n) {
                n -= 1;
            }
        }
        self.kept += n;
        self.room -= n;
        (n > 0).then_some(n)
    }
}

/// A Responses API status as a chat finish reason.
fn responses_finish(status: Option<&str>) -> &'static str {
    match status {
        Some("incomplete") => "length",
        Some("failed") => "error",
        _ => "stop",
    }
}

#[derive(Deserialize)]
struct ChatAnswer<'a> {
    #[serde(borrow, default)]
    choices: Vec<Choice<'a>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow, default)]
    delta: Option<Message<'a>>,
    #[serde(borrow, default)]
    message: Option<Message<'a>>,
    /// Legacy completions.
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolDelta<'a> {
    #[serde(default)]
    index: Option<usize>,
    #[serde(borrow, default)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Response<'a> {
    #[serde(borrow, default)]
    output: Vec<Item<'a>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow, rename = "type", default)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Option<Vec<Part<'a>>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ResponseEvent<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    delta: Option<Cow<'a, str>>,
    #[serde(default)]
    output_index: Option<usize>,
    #[serde(borrow, default)]
    item: Option<Item<'a>>,
    #[serde(borrow, default)]
    response: Option<Status<'a>>,
}

#[derive(Deserialize)]
struct Status<'a> {
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests;
