//! Anthropic Messages response → OpenAI `chat.completion`: text blocks joined, `tool_use`
//! blocks → `tool_calls`, stop reasons mapped, usage with cache tokens counted in
//! `prompt_tokens` and reported as `prompt_tokens_details.cached_tokens`; the input of the
//! tool that carries a JSON `response_format` becomes the message text.

use serde_json::{json, Value};

use super::Reply;

/// Anthropic's `stop_reason` in OpenAI's vocabulary.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything new.
        _ => "stop",
    }
}

/// OpenAI's `usage` from Anthropic's: input, cache writes and cache reads are all prompt
/// tokens; cache reads are also `cached_tokens`.
pub fn usage(u: &Value) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    let prompt = n("input_tokens") + n("cache_creation_input_tokens") + cached;
    let completion = n("output_tokens");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// Whether `message` is a Messages API answer (`"type":"message"`, or a `content` array
/// from a server that omits the type).
pub fn is_message(message: &Value) -> bool {
    message.get("type").and_then(Value::as_str) == Some("message")
        || message.get("content").is_some_and(Value::is_array)
}

/// The whole response. `created` is the Unix time to stamp it with.
///
/// With a JSON `response_format` ([`Reply::json_tool`]), the input of that tool is the
/// message text (compact JSON) and the finish reason `stop`, not `tool_calls`; other text
/// blocks are left out so the text stays JSON.
pub fn translate(message: &Value, reply: &Reply, created: u64) -> Value {
    let blocks = message.get("content").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let is_json = |b: &Value| b["type"] == "tool_use" && reply.json_tool.as_deref().is_some_and(|n| b["name"] == n);
    let json_block = blocks.iter().find(|b| is_json(b));
    let text: String = match json_block {
        Some(b) => b.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
        None => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
    };
    let tool_calls: Vec<Value> = blocks
        .iter()
        .filter(|b| b["type"] == "tool_use" && !is_json(b))
        .map(|b| {
            json!({
                "id": b["id"],
                "type": "function",
                "function": {"name": b["name"], "arguments": b.get("input").map_or("{}".into(), Value::to_string)},
            })
        })
        .collect();
    let content = if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(text) };
    let mut msg = json!({"role": "assistant", "content": content, "refusal": Value::Null});
    if !tool_calls.is_empty() {
        msg["tool_calls"] = Value::Array(tool_calls);
    }
    let stop_reason = message.get("stop_reason").and_then(Value::as_str);
    let finish = match (json_block, stop_reason) {
        (Some(_), Some("tool_use")) => "stop",
        _ => finish_reason(stop_reason),
    };
    json!({
        "id": message.get("id").cloned().unwrap_or_else(|| json!("msg")),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{
            "index": 0,
            "message": msg,
            "logprobs": Value::Null,
            "finish_reason": finish,
        }],
        "usage": usage(message.get("usage").unwrap_or(&Value::Null)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_tool_use_text_and_cache_tokens() {
        let message = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [
                {"type": "text", "text": "Let me check. "},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "text", "text": "One moment."}
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 20}
        });
        let out = translate(&message, &Reply::default(), 7);
        let choice = &out["choices"][0];
        assert_eq!(choice["message"]["content"], "Let me check. One moment.");
        assert_eq!(
            choice["message"]["tool_calls"][0]["function"],
            json!({"name": "weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 115, "completion_tokens": 20, "total_tokens": 135,
            "prompt_tokens_details": {"cached_tokens": 100}})
        );
        assert_eq!((&out["object"], &out["created"]), (&json!("chat.completion"), &json!(7)));
    }

    #[test]
    fn stop_reasons() {
        for (anthropic, openai) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ] {
            assert_eq!(finish_reason(Some(anthropic)), openai);
        }
        let only_tools =
            json!({"content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "stop_reason": "tool_use"});
        assert_eq!(translate(&only_tools, &Reply::default(), 0)["choices"][0]["message"]["content"], Value::Null);
    }

    #[test]
    fn the_json_tool_is_the_message_text() {
        let message = json!({
            "id": "msg_2", "model": "claude-x", "stop_reason": "tool_use",
            "content": [{"type": "tool_use", "id": "toolu_9", "name": "answer", "input": {"answer": "héllo", "n": 1}}],
            "usage": {"input_tokens": 3, "output_tokens": 4}
        });
        let reply = Reply { include_usage: false, json_tool: Some("answer".into()) };
        let choice = &translate(&message, &reply, 0)["choices"][0];
        assert_eq!(choice["message"]["content"], r#"{"answer":"héllo","n":1}"#);
        assert!(choice["message"].get("tool_calls").is_none());
        assert_eq!(choice["finish_reason"], "stop");
        // Without the reply's json_tool it is an ordinary tool call.
        let plain = &translate(&message, &Reply::default(), 0)["choices"][0];
        assert_eq!(plain["finish_reason"], "tool_calls");
        assert_eq!(plain["message"]["content"], Value::Null);
    }
}
