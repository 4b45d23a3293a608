//! Anthropic's streamed events → OpenAI `chat.completion.chunk` events: a per-stream state
//! machine fed with bytes split anywhere (only the current partial event is buffered).
//!
//! `message_start` → the first chunk (with `role`); text deltas → `content`; each `tool_use`
//! block → a tool call whose index counts tool blocks only (not Anthropic's block index),
//! streamed arguments without Anthropic's `{}` placeholder, `"{}"` for a tool with no
//! arguments; `message_delta` → the finish reason and the output tokens (cumulative: set,
//! not added); `message_stop` → the last chunk, the usage chunk when usage was asked for,
//! then `[DONE]`. An `error` event, or a stream that ends before `message_stop`, becomes an
//! OpenAI-shaped SSE error event and the end of the stream.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::response::{finish_reason, usage};
use crate::sse_event::{data_of, event_len};

/// The state of one stream.
#[derive(Debug)]
pub struct Translator {
    include_usage: bool,
    created: u64,
    partial: Vec<u8>,
    id: Value,
    model: Value,
    /// Anthropic block index → OpenAI tool-call index, and whether arguments were streamed.
    tools: HashMap<u64, (usize, bool)>,
    next_tool: usize,
    usage: Value,
    stop_reason: Option<String>,
    finished: bool,
}

impl Translator {
    /// `include_usage`: end with a usage chunk; `created`: the Unix time for the chunks.
    pub fn new(include_usage: bool, created: u64) -> Self {
        Translator {
            include_usage,
            created,
            partial: Vec::new(),
            id: json!("msg"),
            model: Value::Null,
            tools: HashMap::new(),
            next_tool: 0,
            usage: json!({}),
            stop_reason: None,
            finished: false,
        }
    }

    /// Whether the stream ended (normally or with an error event).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Feed upstream bytes; returns the OpenAI SSE bytes to send.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.partial.extend_from_slice(bytes);
        while let Some(end) = event_len(&self.partial) {
            let event: Vec<u8> = self.partial.drain(..end).collect();
            if let Some((data, _)) = data_of(&event) {
                match serde_json::from_slice::<Value>(&data) {
                    Ok(v) => self.event(&v, &mut out),
                    Err(_) => self.error("the provider sent an event that is not JSON", &mut out),
                }
            }
            if self.finished {
                self.partial.clear();
                break;
            }
        }
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
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": Value::Null, "finish_reason": finish}],
        });
        sse(&chunk, out);
    }

    fn error(&mut self, message: &str, out: &mut Vec<u8>) {
        let e = json!({"error": {"message": message, "type": "upstream_error", "param": Value::Null, "code": "upstream_stream_broken"}});
        sse(&e, out);
        self.finished = true;
    }

    fn event(&mut self, v: &Value, out: &mut Vec<u8>) {
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                let m = &v["message"];
                self.id = m.get("id").cloned().unwrap_or(json!("msg"));
                self.model = m.get("model").cloned().unwrap_or(Value::Null);
                if let Some(u) = m.get("usage").and_then(Value::as_object) {
                    for (k, val) in u {
                        self.usage[k] = val.clone();
                    }
                }
                self.chunk(json!({"role": "assistant", "content": ""}), None, out);
            }
            "content_block_start" => {
                let block = &v["content_block"];
                if block["type"] == "tool_use" {
                    let index = v["index"].as_u64().unwrap_or(0);
                    let k = self.next_tool;
                    self.next_tool += 1;
                    self.tools.insert(index, (k, false));
                    let call = json!({"index": k, "id": block["id"], "type": "function",
                        "function": {"name": block["name"], "arguments": ""}});
                    self.chunk(json!({ "tool_calls": [call] }), None, out);
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => {
                        let text = d["text"].as_str().unwrap_or("");
                        if !text.is_empty() {
                            self.chunk(json!({ "content": text }), None, out);
                        }
                    }
                    Some("input_json_delta") => {
                        let part = d["partial_json"].as_str().unwrap_or("");
                        let index = v["index"].as_u64().unwrap_or(0);
                        if let Some((k, streamed)) = self.tools.get_mut(&index) {
                            if !part.is_empty() {
                                *streamed = true;
                                let k = *k;
                                self.chunk(
                                    json!({"tool_calls": [{"index": k, "function": {"arguments": part}}]}),
                                    None,
                                    out,
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = v["index"].as_u64().unwrap_or(0);
                if let Some((k, false)) = self.tools.get(&index).copied() {
                    self.chunk(json!({"tool_calls": [{"index": k, "function": {"arguments": "{}"}}]}), None, out);
                    self.tools.insert(index, (k, true));
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
                self.chunk(json!({}), Some(finish_reason(self.stop_reason.as_deref())), out);
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
}

fn sse(v: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests;
