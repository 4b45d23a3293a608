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
//!   `tool`), `parallel_tool_calls: false` → `disable_parallel_tool_use`;
//! - `user` → `metadata.user_id` as a SHA-256 hash (never the address itself);
//! - `n` > 1 → 400.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

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

/// Translate an OpenAI chat completions body into an Anthropic Messages body.
pub fn translate(body: &Value, defaults: Defaults) -> Result<Value, Invalid> {
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
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), Value::Bool(true));
    }
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        out.insert("tools".into(), Value::Array(tools.iter().map(tool).collect::<Result<_, _>>()?));
    }
    let parallel = req.get("parallel_tool_calls").and_then(Value::as_bool);
    if let Some(choice) = tool_choice(req.get("tool_choice"), parallel)? {
        out.insert("tool_choice".into(), choice);
    }
    if let Some(user) = req.get("user").and_then(Value::as_str).filter(|u| !u.is_empty()) {
        let hash = Sha256::digest(user.as_bytes());
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        out.insert("metadata".into(), json!({ "user_id": hex }));
    }
    Ok(Value::Object(out))
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
                if !t.is_empty() {
                    blocks.push(json!({"type": "text", "text": t}));
                }
                for call in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let args = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("");
                    let input: Value = if args.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(args).map_err(|_| {
                            invalid("messages", format!("messages[{i}]: tool call arguments are not JSON"))
                        })?
                    };
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
                let result = json!({
                    "type": "tool_result",
                    "tool_use_id": m.get("tool_call_id").cloned().unwrap_or(Value::Null),
                    "content": text_of(m.get("content")),
                });
                push(&mut out, "user", vec![result]);
            }
            other => return Err(invalid("messages", format!("messages[{i}]: unknown role `{other}`"))),
        }
    }
    Ok((system, out))
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
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = p.get("text").and_then(Value::as_str).unwrap_or("");
                        if !t.is_empty() {
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
    let mut out = match choice {
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
mod tests {
    use super::*;

    const DEFAULTS: Defaults = Defaults { max_tokens: Some(1024) };

    #[test]
    fn system_messages_anywhere_become_the_system_prompt() {
        let body = json!({"model": "claude", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "assistant", "content": "salut"},
            {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "encore"}]},
        ]});
        let out = translate(&body, DEFAULTS).unwrap();
        assert_eq!(out["system"], "Be brief.\n\nAnswer in French.");
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "salut"}]},
                {"role": "user", "content": [{"type": "text", "text": "encore"}]},
            ])
        );
        assert_eq!(out["max_tokens"], 1024);
    }

    #[test]
    fn max_tokens_comes_from_the_request_or_the_provider_or_is_refused() {
        let body =
            json!({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 50, "max_tokens": 99});
        assert_eq!(translate(&body, DEFAULTS).unwrap()["max_tokens"], 50);
        let none = json!({"messages": [{"role": "user", "content": "x"}]});
        let err = translate(&none, Defaults { max_tokens: None }).unwrap_err();
        assert_eq!(err.param, "max_tokens");
    }

    #[test]
    fn sampling_stop_n_and_user() {
        let body = json!({"messages": [{"role": "user", "content": "x"}], "temperature": 1.5, "top_p": 0.9,
            "stop": ["\n\n", " ", "END"], "user": "ada@example.com"});
        let out = translate(&body, DEFAULTS).unwrap();
        assert_eq!(out["temperature"], 1.0);
        assert!(out.get("top_p").is_none(), "top_p is dropped when temperature is set");
        assert_eq!(out["stop_sequences"], json!(["END"]));
        let id = out["metadata"]["user_id"].as_str().unwrap();
        assert_eq!(id.len(), 64);
        assert!(!id.contains('@'), "never the address itself");
        let n = json!({"messages": [{"role": "user", "content": "x"}], "n": 2});
        assert_eq!(translate(&n, DEFAULTS).unwrap_err().param, "n");
    }

    #[test]
    fn tool_calls_and_results() {
        let body = json!({"messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
        ], "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
           "tool_choice": "required", "parallel_tool_calls": false});
        let out = translate(&body, DEFAULTS).unwrap();
        assert_eq!(
            out["messages"][1],
            json!({"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "now", "input": {}}]})
        );
        assert_eq!(
            out["messages"][2],
            json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "noon"}]})
        );
        assert_eq!(out["tools"][0], json!({"name": "weather", "input_schema": {"type": "object"}}));
        assert_eq!(out["tool_choice"], json!({"type": "any", "disable_parallel_tool_use": true}));
        let bad = json!({"messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]});
        assert_eq!(translate(&bad, DEFAULTS).unwrap_err().param, "messages");
        let named = json!({"messages": [], "tool_choice": {"type": "function", "function": {"name": "weather"}}});
        assert_eq!(translate(&named, DEFAULTS).unwrap()["tool_choice"], json!({"type": "tool", "name": "weather"}));
    }

    #[test]
    fn images() {
        let body = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]});
        let out = translate(&body, DEFAULTS).unwrap();
        assert_eq!(
            out["messages"][0]["content"][1]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="})
        );
        assert_eq!(
            out["messages"][0]["content"][2]["source"],
            json!({"type": "url", "url": "https://example.com/cat.jpg"})
        );
        let http = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]});
        assert!(translate(&http, DEFAULTS).is_err());
    }
}
