//! Anthropic's streamed events → OpenAI `chat.completion.chunk` events: a per-stream state
//! machine fed with bytes split anywhere (only the current partial event is buffered).
//!
//! `message_start` → the first chunk (with `role`); text deltas → `content`; each `tool_use`
//! block → a tool call whose index counts tool blocks only (not Anthropic's block index),
//! streamed arguments without Anthropic's `{}` placeholder, `"{}"` for a tool with no
//! arguments; `message_delta` → the finish reason and the output tokens (cumulative: set,
//! not added); `message_stop` → the last chunk, the usage chunk when usage was asked for,
//! then `[DONE]`. With a JSON `response_format` the JSON tool's streamed input is the
//! `content` (`"{}"` if it had none), never a tool call, and `tool_use` finishes as `stop`.
//! An `error` event, or a stream that ends before `message_stop`, becomes an
//! OpenAI-shaped SSE error event and the end of the stream.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::response::{finish_reason, usage};
use super::Reply;
use crate::providers::UpstreamError;
use crate::wire::sse_event::{data_of, Events};

/// What an Anthropic `tool_use` block is on the OpenAI side.
#[derive(Debug, Clone, Copy)]
enum ToolBlock {
    /// A tool call with this index; whether arguments were streamed.
    Call(usize, bool),
    /// The tool that carries a JSON `response_format`: its input is the message text.
    Json(bool),
}

/// The state of one stream.
#[derive(Debug)]
pub struct Translator {
    include_usage: bool,
    json_tool: Option<String>,
    created: u64,
    events: Events,
    id: Value,
    model: Value,
    /// Anthropic block index → what the tool block is.
    tools: HashMap<u64, ToolBlock>,
    next_tool: usize,
    /// A block of the JSON tool was seen: `tool_use` means `stop`.
    json_seen: bool,
    usage: Value,
    stop_reason: Option<String>,
    finished: bool,
    /// Something was sent: a failure from now on is reported in-band.
    started: bool,
    /// The stream failed before anything was sent, or with an event too large: the
    /// proxy reports it (a 502 before the first byte, or its own error event).
    broken: Option<UpstreamError>,
    /// The end of every chunk after its choice: `"created":…,"id":…,"model":…,"object":…}`
    /// and the blank line (set at `message_start`).
    tail: Vec<u8>,
}

impl Translator {
    /// `reply`: what the app asked for (a usage chunk, JSON output); `created`: the Unix
    /// time for the chunks.
    pub fn new(reply: &Reply, created: u64) -> Self {
        Translator {
            include_usage: reply.include_usage,
            json_tool: reply.json_tool.clone(),
            created,
            events: Events::default(),
            id: json!("msg"),
            model: Value::Null,
            tools: HashMap::new(),
            next_tool: 0,
            json_seen: false,
            usage: json!({}),
            stop_reason: None,
            finished: false,
            started: false,
            broken: None,
            tail: Vec::new(),
        }
        .with_tail()
    }

    /// The chunk tail for the current id and model (keys in the order `json!` writes them).
    fn with_tail(mut self) -> Self {
        self.set_tail();
        self
    }

    fn set_tail(&mut self) {
        let tail =
            json!({"created": self.created, "id": self.id, "model": self.model, "object": "chat.completion.chunk"});
        self.tail = format!(",{}\n\n", &tail.to_string()[1..]).into_bytes();
    }

    /// Whether the stream ended (normally or with an error event).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Why the stream failed, when the proxy must report it itself: it broke before its
    /// first event was translated (then nothing was sent), or an event grew past
    /// [`crate::wire::sse_event::MAX_EVENT`].
    pub fn broken(&self) -> Option<UpstreamError> {
        self.broken
    }

    /// Feed upstream bytes; returns the OpenAI SSE bytes to send.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.events.push(bytes);
        while let Some(event) = self.events.next_event() {
            let Some((data, _)) = data_of(event) else { continue };
            // Most events are text deltas: read them without building a JSON tree.
            if self.json_tool.is_none() {
                if let Some(text) = text_delta(&data) {
                    if !text.is_empty() {
                        write_chunk(&mut out, &self.tail, None, |o| {
                            o.extend_from_slice(b"{\"content\":");
                            let _ = serde_json::to_writer(&mut *o, &*text);
                            o.push(b'}');
                        });
                    }
                    continue;
                }
            }
            let parsed = serde_json::from_slice::<Value>(&data);
            match parsed {
                Ok(v) => self.event(&v, &mut out),
                Err(_) => self.error("the provider sent an event that is not JSON", &mut out),
            }
            if self.finished {
                self.events.take_rest();
                break;
            }
        }
        if self.events.too_large() {
            self.broken = Some(UpstreamError::Protocol);
            self.finished = true;
        }
        self.started |= !out.is_empty();
        out
    }

    /// The upstream ended; what to send last.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.finished {
            self.error("the provider's stream ended before its end", &mut out);
        }
        out
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut Vec<u8>) {
        write_chunk(out, &self.tail, finish, |o| {
            let _ = serde_json::to_writer(o, &delta);
        });
    }

    fn error(&mut self, message: &str, out: &mut Vec<u8>) {
        self.finished = true;
        if !self.started && out.is_empty() {
            // Not a first event: the proxy answers 502 (or tries the fallback).
            self.broken = Some(UpstreamError::StreamBroken);
            return;
        }
        let e = json!({"error": {"message": message, "type": "upstream_error", "param": Value::Null, "code": "upstream_stream_broken"}});
        sse(&e, out);
    }

    fn event(&mut self, v: &Value, out: &mut Vec<u8>) {
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                let m = &v["message"];
                self.id = m.get("id").cloned().unwrap_or(json!("msg"));
                self.model = m.get("model").cloned().unwrap_or(Value::Null);
                self.set_tail();
                if let Some(u) = m.get("usage").and_then(Value::as_object) {
                    for (k, val) in u {
                        self.usage[k] = val.clone();
                    }
                }
                self.chunk(json!({"role": "assistant", "content": ""}), None, out);
            }
            "content_block_start" => self.block_start(v, out),
            "content_block_delta" => self.block_delta(v, out),
            "content_block_stop" => {
                let index = v["index"].as_u64().unwrap_or(0);
                match self.tools.get(&index).copied() {
                    Some(ToolBlock::Call(k, false)) => {
                        self.chunk(json!({"tool_calls": [{"index": k, "function": {"arguments": "{}"}}]}), None, out);
                        self.tools.insert(index, ToolBlock::Call(k, true));
                    }
                    Some(ToolBlock::Json(false)) => {
                        self.chunk(json!({"content": "{}"}), None, out);
                        self.tools.insert(index, ToolBlock::Json(true));
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(r.to_string());
                }
                if let Some(u) = v.get("usage").and_then(Value::as_object) {
                    // Cumulative counts: set, not added.
                    for (k, val) in u {
                        self.usage[k] = val.clone();
                    }
                }
            }
            "message_stop" => {
                let finish = match self.stop_reason.as_deref() {
                    Some("tool_use") if self.json_seen => "stop",
                    reason => finish_reason(reason),
                };
                self.chunk(json!({}), Some(finish), out);
                if self.include_usage {
                    let last = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [], "usage": usage(&self.usage)});
                    sse(&last, out);
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.finished = true;
            }
            "error" => {
                let message =
                    v.pointer("/error/message").and_then(Value::as_str).unwrap_or("the provider failed mid-stream");
                let kind = v.pointer("/error/type").and_then(Value::as_str).unwrap_or("error");
                self.error(&format!("{kind}: {message}"), out);
            }
            // ping, and events this translator does not know.
            _ => {}
        }
    }

    fn block_start(&mut self, v: &Value, out: &mut Vec<u8>) {
        let block = &v["content_block"];
        if block["type"] != "tool_use" {
            return;
        }
        let index = v["index"].as_u64().unwrap_or(0);
        if self.json_tool.as_deref().is_some_and(|n| block["name"] == n) {
            self.json_seen = true;
            self.tools.insert(index, ToolBlock::Json(false));
            return;
        }
        let k = self.next_tool;
        self.next_tool += 1;
        self.tools.insert(index, ToolBlock::Call(k, false));
        let call = json!({"index": k, "id": block["id"], "type": "function",
            "function": {"name": block["name"], "arguments": ""}});
        self.chunk(json!({ "tool_calls": [call] }), None, out);
    }

    fn block_delta(&mut self, v: &Value, out: &mut Vec<u8>) {
        let d = &v["delta"];
        match d["type"].as_str() {
            // With JSON output, only the JSON tool's input is the text.
            Some("text_delta") if self.json_tool.is_none() => {
                let text = d["text"].as_str().unwrap_or("");
                if !text.is_empty() {
                    self.chunk(json!({ "content": text }), None, out);
                }
            }
            Some("input_json_delta") => {
                let part = d["partial_json"].as_str().unwrap_or("");
                let index = v["index"].as_u64().unwrap_or(0);
                if part.is_empty() {
                    return;
                }
                match self.tools.get(&index).copied() {
                    Some(ToolBlock::Call(k, _)) => {
                        self.tools.insert(index, ToolBlock::Call(k, true));
                        self.chunk(json!({"tool_calls": [{"index": k, "function": {"arguments": part}}]}), None, out);
                    }
                    Some(ToolBlock::Json(_)) => {
                        self.tools.insert(index, ToolBlock::Json(true));
                        self.chunk(json!({ "content": part }), None, out);
                    }
                    None => {}
                }
            }
            _ => {}
        }
    }
}

/// One `chat.completion.chunk` event, byte for byte what serializing it whole as a
/// `serde_json::Value` gives (keys sorted): the choice with `delta` written by `delta`,
/// then the stream's `tail`.
fn write_chunk(out: &mut Vec<u8>, tail: &[u8], finish: Option<&str>, delta: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"data: {\"choices\":[{\"delta\":");
    delta(out);
    out.extend_from_slice(b",\"finish_reason\":");
    let _ = serde_json::to_writer(&mut *out, &finish);
    out.extend_from_slice(b",\"index\":0,\"logprobs\":null}]");
    out.extend_from_slice(tail);
}

/// The text of a `content_block_delta` event with a `text_delta`; `None` for any other event.
fn text_delta(data: &[u8]) -> Option<Cow<'_, str>> {
    #[derive(Deserialize)]
    struct Event<'a> {
        #[serde(borrow, rename = "type")]
        kind: Cow<'a, str>,
        #[serde(borrow, default)]
        delta: Option<Delta<'a>>,
    }
    #[derive(Deserialize)]
    struct Delta<'a> {
        #[serde(borrow, rename = "type", default)]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        text: Option<Cow<'a, str>>,
    }
    let event: Event<'_> = serde_json::from_slice(data).ok()?;
    let delta = event.delta?;
    (event.kind == "content_block_delta" && delta.kind.as_deref() == Some("text_delta")).then_some(delta.text?)
}

fn sse(v: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests;
