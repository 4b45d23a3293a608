//! OpenAI chat completions request → Anthropic Messages request: a pure function of the
//! (already rewritten) OpenAI body and the provider's defaults.
//!
//! - `system` and `developer` messages, wherever they are, become the top-level `system`
//!   (joined in order);
//! - user content parts: text, and images (a `data:` URI → a base64 source, an `https` URL →
//!   a URL source); empty text blocks are dropped;
//! - assistant `tool_calls` → `tool_use` blocks (`""` arguments → `{}`, arguments that are
//!   not JSON → 400); consecutive `tool` messages → one user message of `tool_result` blocks;
//! - `max_completion_tokens` / `max_tokens` / the provider's default → the required
//!   `max_tokens`;
//! - `temperature` clamped to Anthropic's 0–1; `top_p` dropped when both are set; `stop` →
//!   `stop_sequences` without whitespace-only entries;
//! - `tools` and `tool_choice` (`auto`, `required` → `any`, `none`, a named function →
//!   `tool`), `parallel_tool_calls: false` → `disable_parallel_tool_use`; a `tool_choice`
//!   without tools is dropped (Anthropic refuses it);
//! - `response_format` `json_schema` / `json_object` → one tool with that schema, forced,
//!   whose input the response side turns back into the message text (not with `tools`:
//!   400); `text` → nothing;
//! - `user` → `metadata.user_id` as a SHA-256 hash (never the address itself);
//! - `n` > 1 → 400;
//! - `stream` is passed on; `stream_options.include_usage` goes to the [`Reply`].

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

pub use super::Reply;

/// The name of the tool that carries a `json_object` response.
pub const JSON_OBJECT_TOOL: &str = "json_response";

/// Why a request cannot be translated (the app gets a 400 with this message and `param`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub param: &'static str,
    pub message: String,
}

fn invalid(param: &'static str, message: impl Into<String>) -> Invalid {
    Invalid { param, message: message.into() }
}

/// The provider's settings the translation needs.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// `max_tokens` when the request has none; `None`: such a request is refused.
    pub max_tokens: Option<u64>,
}

/// A translated request: the Anthropic body, and what translating the answer needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    pub body: Value,
    pub reply: Reply,
}

/// Translate an OpenAI chat completions body into an Anthropic Messages body.
pub fn translate(body: &Value, defaults: Defaults) -> Result<Translated, Invalid> {
    let req = body.as_object().ok_or_else(|| invalid("messages", "the body must be a JSON object"))?;
    if req.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(invalid("n", "this model's provider returns one choice: `n` must be 1"));
    }
    let mut out = Map::new();
    if let Some(model) = req.get("model") {
        out.insert("model".into(), model.clone());
    }
    let (system, messages) = messages(req.get("messages"))?;
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(messages));
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| req.get(*k).and_then(Value::as_u64))
        .or(defaults.max_tokens)
        .ok_or_else(|| {
            invalid("max_tokens", "this model's provider needs `max_tokens` (or `max_completion_tokens`)")
        })?;
    out.insert("max_tokens".into(), json!(max_tokens));
    sampling(req, &mut out);
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), Value::Bool(true));
    }
    let json_tool = tools(req, &mut out)?;
    if let Some(user) = req.get("user").and_then(Value::as_str).filter(|u| !u.is_empty()) {
        let hash = Sha256::digest(user.as_bytes());
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        out.insert("metadata".into(), json!({ "user_id": hex }));
    }
    let include_usage = req.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool);
    let reply = Reply { include_usage: include_usage == Some(true), json_tool };
    Ok(Translated { body: Value::Object(out), reply })
}

/// `temperature` (clamped), `top_p` (only without a temperature) and `stop`.
fn sampling(req: &Map<String, Value>, out: &mut Map<String, Value>) {
    let temperature = req.get("temperature").and_then(Value::as_f64);
    if let Some(t) = temperature {
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = req.get("top_p").and_then(Value::as_f64) {
        if temperature.is_none() {
            out.insert("top_p".into(), json!(p));
        }
    }
    if let Some(stop) = stop_sequences(req.get("stop")) {
        out.insert("stop_sequences".into(), stop);
    }
}

/// `tools`, `tool_choice` and `response_format`; returns the name of the tool that carries
/// a JSON response, if there is one.
fn tools(req: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<Option<String>, Invalid> {
    let tools: Vec<Value> = match req.get("tools").and_then(Value::as_array) {
        Some(list) => list.iter().map(tool).collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    if let Some((name, json_tool)) = response_format(req.get("response_format"))? {
        if !tools.is_empty() {
            return Err(invalid(
                "response_format",
                "this model's provider does not support a JSON `response_format` together with `tools`",
            ));
        }
        out.insert("tools".into(), json!([json_tool]));
        out.insert("tool_choice".into(), json!({"type": "tool", "name": name}));
        return Ok(Some(name));
    }
    let parallel = req.get("parallel_tool_calls").and_then(Value::as_bool);
    let choice = tool_choice(req.get("tool_choice"), parallel)?;
    if tools.is_empty() {
        return Ok(None);
    }
    out.insert("tools".into(), Value::Array(tools));
    if let Some(choice) = choice {
        out.insert("tool_choice".into(), choice);
    }
    Ok(None)
}

/// A JSON `response_format` as the name and definition of the tool that carries it;
/// `None` for text.
fn response_format(format: Option<&Value>) -> Result<Option<(String, Value)>, Invalid> {
    let Some(format) = format.filter(|f| !f.is_null()) else { return Ok(None) };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some((
            JSON_OBJECT_TOOL.to_string(),
            json!({"name": JSON_OBJECT_TOOL, "input_schema": {"type": "object"}}),
        ))),
        Some("json_schema") => {
            let spec = format.get("json_schema");
            let name = spec
                .and_then(|s| s.get("name"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| invalid("response_format", "`response_format.json_schema` needs a `name`"))?;
            let schema = spec.and_then(|s| s.get("schema")).cloned().unwrap_or_else(|| json!({"type": "object"}));
            let mut tool = json!({"name": name, "input_schema": schema});
            if let Some(d) = spec.and_then(|s| s.get("description")) {
                tool["description"] = d.clone();
            }
            Ok(Some((name.to_string(), tool)))
        }
        other => Err(invalid("response_format", format!("unknown `response_format` type {other:?}"))),
    }
}

/// The text of a message's `content` (a string, or text parts).
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
        }
        _ => String::new(),
    }
}

/// System texts, and the conversation as Anthropic messages.
fn messages(messages: Option<&Value>) -> Result<(Vec<String>, Vec<Value>), Invalid> {
    let list = messages.and_then(Value::as_array).ok_or_else(|| invalid("messages", "`messages` must be an array"))?;
    let mut system = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        match role {
            "system" | "developer" => {
                let t = text_of(m.get("content"));
                if !t.trim().is_empty() {
                    system.push(t);
                }
            }
            "user" => push(&mut out, "user", user_blocks(m.get("content"), i)?),
            "assistant" => {
                let mut blocks = Vec::new();
                let t = text_of(m.get("content"));
                if !t.trim().is_empty() {
                    blocks.push(json!({"type": "text", "text": t}));
                }
                for call in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let input = tool_input(call.pointer("/function/arguments"), i)?;
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.get("id").cloned().unwrap_or(Value::Null),
                        "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
                        "input": input,
                    }));
                }
                push(&mut out, "assistant", blocks);
            }
            "tool" => {
                let mut result = json!({
                    "type": "tool_result",
                    "tool_use_id": m.get("tool_call_id").cloned().unwrap_or(Value::Null),
                });
                let content = text_of(m.get("content"));
                if !content.trim().is_empty() {
                    result["content"] = Value::String(content);
                }
                push(&mut out, "user", vec![result]);
            }
            other => return Err(invalid("messages", format!("messages[{i}]: unknown role `{other}`"))),
        }
    }
    Ok((system, out))
}

/// A tool call's `arguments` as Anthropic's `input` object: `""` → `{}`; a JSON object
/// (as a string, or sent as an object) as it is; anything else is the app's error.
fn tool_input(arguments: Option<&Value>, i: usize) -> Result<Value, Invalid> {
    let not_object = || invalid("messages", format!("messages[{i}]: tool call arguments must be a JSON object"));
    match arguments {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::Object(o)) => Ok(Value::Object(o.clone())),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(json!({})),
        Some(Value::String(s)) => match serde_json::from_str(s) {
            Ok(Value::Object(o)) => Ok(Value::Object(o)),
            Ok(_) => Err(not_object()),
            Err(_) => Err(invalid("messages", format!("messages[{i}]: tool call arguments are not JSON"))),
        },
        Some(_) => Err(not_object()),
    }
}

/// Append `blocks` as a message of `role`, joining it to the previous one of the same role
/// (Anthropic wants user and assistant turns to alternate; tool results go in one user turn).
fn push(out: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = out.last_mut().filter(|m| m["role"] == role) {
        if let Some(content) = last["content"].as_array_mut() {
            content.extend(blocks);
            return;
        }
    }
    out.push(json!({"role": role, "content": blocks}));
}

fn user_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, Invalid> {
    match content {
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = p.get("text").and_then(Value::as_str).unwrap_or("");
                        if !t.trim().is_empty() {
                            blocks.push(json!({"type": "text", "text": t}));
                        }
                    }
                    Some("image_url") => {
                        let url = p.pointer("/image_url/url").and_then(Value::as_str).unwrap_or("");
                        blocks.push(image(url, i)?);
                    }
                    other => {
                        return Err(invalid(
                            "messages",
                            format!(
                                "messages[{i}]: content parts of type {other:?} are not supported by this provider"
                            ),
                        ))
                    }
                }
            }
            Ok(blocks)
        }
        _ => Ok(Vec::new()),
    }
}

fn image(url: &str, i: usize) -> Result<Value, Invalid> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) =
            rest.split_once(',').ok_or_else(|| invalid("messages", format!("messages[{i}]: bad data URI")))?;
        let media_type = meta
            .strip_suffix(";base64")
            .ok_or_else(|| invalid("messages", format!("messages[{i}]: image data URIs must be base64")))?;
        return Ok(json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}));
    }
    if url.starts_with("https://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(invalid("messages", format!("messages[{i}]: an image must be a data: URI or an https:// URL")))
}

fn stop_sequences(stop: Option<&Value>) -> Option<Value> {
    let list: Vec<Value> = match stop? {
        Value::String(s) => vec![Value::String(s.clone())],
        Value::Array(a) => a.clone(),
        _ => return None,
    };
    let kept: Vec<Value> = list.into_iter().filter(|s| s.as_str().is_some_and(|s| !s.trim().is_empty())).collect();
    (!kept.is_empty()).then_some(Value::Array(kept))
}

fn tool(t: &Value) -> Result<Value, Invalid> {
    let f = t.get("function").ok_or_else(|| invalid("tools", "only function tools are supported"))?;
    let mut out = json!({
        "name": f.get("name").cloned().unwrap_or(Value::Null),
        "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    });
    if let Some(d) = f.get("description") {
        out["description"] = d.clone();
    }
    Ok(out)
}

fn tool_choice(choice: Option<&Value>, parallel: Option<bool>) -> Result<Option<Value>, Invalid> {
    let mut out = match choice.filter(|c| !c.is_null()) {
        None => {
            if parallel == Some(false) {
                json!({"type": "auto"})
            } else {
                return Ok(None);
            }
        }
        Some(Value::String(s)) => match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => json!({"type": "none"}),
            other => return Err(invalid("tool_choice", format!("unknown tool_choice `{other}`"))),
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => json!({"type": "tool", "name": name}),
            None => return Err(invalid("tool_choice", "a named tool_choice needs function.name")),
        },
    };
    if parallel == Some(false) && out["type"] != "none" {
        out["disable_parallel_tool_use"] = Value::Bool(true);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests;
