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
    let out = translate(&body, DEFAULTS).unwrap().body;
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
    let body = json!({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 50, "max_tokens": 99});
    assert_eq!(translate(&body, DEFAULTS).unwrap().body["max_tokens"], 50);
    let none = json!({"messages": [{"role": "user", "content": "x"}]});
    let err = translate(&none, Defaults { max_tokens: None }).unwrap_err();
    assert_eq!(err.param, "max_tokens");
}

#[test]
fn sampling_stop_n_and_user() {
    let body = json!({"messages": [{"role": "user", "content": "x"}], "temperature": 1.5, "top_p": 0.9,
        "stop": ["\n\n", " ", "END"], "user": "ada@example.com"});
    let out = translate(&body, DEFAULTS).unwrap().body;
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
    let out = translate(&body, DEFAULTS).unwrap().body;
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
    let named = json!({"messages": [], "tools": body["tools"], "tool_choice": {"type": "function", "function": {"name": "weather"}}});
    assert_eq!(translate(&named, DEFAULTS).unwrap().body["tool_choice"], json!({"type": "tool", "name": "weather"}));
    let no_tools = json!({"messages": [], "tool_choice": "auto", "parallel_tool_calls": false});
    let out = translate(&no_tools, DEFAULTS).unwrap().body;
    assert!(out.get("tool_choice").is_none() && out.get("tools").is_none(), "{out}");
}

#[test]
fn images() {
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]});
    let out = translate(&body, DEFAULTS).unwrap().body;
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

#[test]
fn response_format_becomes_a_forced_tool() {
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]});
    let body = json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema",
        "json_schema": {"name": "answer", "description": "The answer.", "schema": schema, "strict": true}}});
    let out = translate(&body, DEFAULTS).unwrap();
    assert_eq!(out.body["tools"], json!([{"name": "answer", "description": "The answer.", "input_schema": schema}]));
    assert_eq!(out.body["tool_choice"], json!({"type": "tool", "name": "answer"}));
    assert_eq!(out.reply, Reply { include_usage: false, json_tool: Some("answer".into()) });

    let object = json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}});
    let out = translate(&object, DEFAULTS).unwrap();
    assert_eq!(out.body["tools"], json!([{"name": "json_response", "input_schema": {"type": "object"}}]));
    assert_eq!(out.body["tool_choice"], json!({"type": "tool", "name": "json_response"}));
    assert_eq!(out.reply.json_tool.as_deref(), Some(JSON_OBJECT_TOOL));

    let text = json!({"messages": [], "response_format": {"type": "text"}, "stream": true,
        "stream_options": {"include_usage": true}});
    let out = translate(&text, DEFAULTS).unwrap();
    assert!(out.body.get("tools").is_none() && out.body.get("tool_choice").is_none());
    assert_eq!(out.reply, Reply { include_usage: true, json_tool: None });
    assert_eq!(out.body["stream"], true);
    assert!(out.body.get("stream_options").is_none());

    let with_tools = json!({"messages": [], "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "f"}}]});
    assert_eq!(translate(&with_tools, DEFAULTS).unwrap_err().param, "response_format");
    let unnamed = json!({"messages": [], "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}});
    assert_eq!(translate(&unnamed, DEFAULTS).unwrap_err().param, "response_format");
}

#[test]
fn whitespace_only_text_is_dropped_and_tool_arguments_must_be_objects() {
    let body = json!({"messages": [
        {"role": "user", "content": [{"type": "text", "text": " \n"}, {"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": "  ", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"sent": "as an object"}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": " "},
    ]});
    let out = translate(&body, DEFAULTS).unwrap().body;
    assert_eq!(out["messages"][0]["content"], json!([{"type": "text", "text": "hi"}]));
    assert_eq!(
        out["messages"][1]["content"],
        json!([{"type": "tool_use", "id": "c1", "name": "f", "input": {"sent": "as an object"}}])
    );
    assert_eq!(out["messages"][2]["content"], json!([{"type": "tool_result", "tool_use_id": "c1"}]));
    for args in ["[1]", "null", "\"text\""] {
        let bad = json!({"messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": args}}]}]});
        let err = translate(&bad, DEFAULTS).unwrap_err();
        assert!(err.message.contains("must be a JSON object"), "{args}: {}", err.message);
    }
}
