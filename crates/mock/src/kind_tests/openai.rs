//! The `openai` kind: tool calls whole and streamed, structured output, quirks, scripts.

use http::StatusCode;
use serde_json::{json, Value};

use super::{chat_body, events, json, post, sse_text, MockKind, MockSettings};

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}, "limit": {"type": "integer"}}, "required": ["q", "limit"]}}},
        {"type": "function", "function": {"name": "now"}}
    ])
}

fn ask(extra: Value) -> Value {
    chat_body(json!([{"role": "user", "content": "find cats"}]), extra)
}

#[tokio::test]
async fn whole_tool_calls() {
    let (status, v) =
        json(post("/v1/chat/completions", &ask(json!({"tools": tools()}))).to(MockKind::OpenAi).await).await;
    assert_eq!(status, StatusCode::OK);
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([
            {"id": "call_mock_1", "type": "function", "function": {"name": "search", "arguments": r#"{"limit":1,"q":"mock"}"#}},
            {"id": "call_mock_2", "type": "function", "function": {"name": "now", "arguments": "{}"}}
        ])
    );
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 20, "total_tokens": 22, "prompt_tokens_details": {"cached_tokens": 0}})
    );
}

/// The tool-call deltas of a streamed answer.
fn tool_deltas(chunks: &[super::Event]) -> Vec<Value> {
    chunks
        .iter()
        .flat_map(|c| c.data["choices"][0]["delta"]["tool_calls"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn streamed_tool_calls() {
    let body = ask(json!({"tools": tools(), "stream": true, "stream_options": {"include_usage": true}}));
    let chunks = events(post("/v1/chat/completions", &body).to(MockKind::OpenAi).await).await;
    assert!(chunks.last().unwrap().data.is_null(), "ends with [DONE]");
    let role = &chunks[0].data["choices"][0]["delta"];
    assert_eq!(role["role"], "assistant");
    assert!(role["content"].is_null());

    let deltas = tool_deltas(&chunks);
    let firsts: Vec<&Value> = deltas.iter().filter(|d| d.get("id").is_some()).collect();
    assert_eq!(
        firsts,
        [
            &json!({"index": 0, "id": "call_mock_1", "type": "function", "function": {"name": "search", "arguments": ""}}),
            &json!({"index": 1, "id": "call_mock_2", "type": "function", "function": {"name": "now", "arguments": ""}})
        ]
    );
    let mut arguments = [String::new(), String::new()];
    for delta in &deltas {
        let index = delta["index"].as_u64().unwrap() as usize;
        if delta.get("id").is_none() {
            assert_eq!(delta.as_object().unwrap().len(), 2, "index and function only: {delta}");
        }
        arguments[index].push_str(delta["function"]["arguments"].as_str().unwrap());
    }
    assert_eq!(arguments, [r#"{"limit":1,"q":"mock"}"#, "{}"]);
    assert!(deltas.iter().filter(|d| d["index"] == 0 && d.get("id").is_none()).count() >= 2, "arguments in pieces");

    let n = chunks.len();
    assert_eq!(chunks[n - 3].data["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[n - 2].data["usage"]["completion_tokens"], 20);
}

#[tokio::test]
async fn quirks() {
    let omit = MockSettings { omit_tool_call_index: true, ..MockSettings::default() };
    let body = ask(json!({"tools": tools(), "stream": true}));
    let chunks = super::parse_events(&sse_text(post("/v1/chat/completions", &body).send(&omit).await).await);
    let deltas = tool_deltas(&chunks);
    assert!(!deltas.is_empty());
    assert!(deltas.iter().all(|d| d.get("index").is_none()), "{deltas:?}");

    let reject = MockSettings { reject_stream_options: true, ..MockSettings::default() };
    let with_options = ask(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let (status, v) = json(post("/v1/chat/completions", &with_options).send(&reject).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        v,
        json!({"error": {"message": "Unrecognized request argument supplied: stream_options", "type": "invalid_request_error", "param": "stream_options", "code": null}})
    );
    let without = ask(json!({"stream": true}));
    assert_eq!(post("/v1/chat/completions", &without).send(&reject).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn structured_and_limited_answers() {
    let format = json!({"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}});
    let (_, v) = json(
        post("/v1/chat/completions", &ask(json!({"response_format": format, "tools": tools()})))
            .to(MockKind::OpenAi)
            .await,
    )
    .await;
    assert_eq!(v["choices"][0]["message"]["content"], r#"{"ok":true}"#);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    let (_, v) =
        json(post("/v1/chat/completions", &ask(json!({"max_completion_tokens": 2}))).to(MockKind::OpenAi).await).await;
    assert_eq!(v["choices"][0]["message"]["content"], "mock0 mock1");
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    let req = post("/v1/chat/completions", &ask(json!({}))).header("x-mock-cached-tokens", "9");
    let (_, v) = json(req.to(MockKind::OpenAi).await).await;
    assert_eq!(v["usage"]["prompt_tokens_details"], json!({"cached_tokens": 2}), "at most the prompt");
}

#[tokio::test]
async fn error_scripts() {
    let chat = ask(json!({}));
    let response =
        post("/v1/chat/completions", &chat).header("x-mock-script", "rate_limited").to(MockKind::OpenAi).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(json(response).await.1["error"]["code"], "rate_limit_exceeded");

    let (status, v) =
        json(post("/v1/chat/completions", &chat).query("script=overloaded").to(MockKind::OpenAi).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["error"]["type"], "server_error");

    let (status, v) = json(
        post("/v1/embeddings", &json!({"model": "e", "input": "x"}))
            .query("script=bad_request")
            .to(MockKind::OpenAi)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["type"], "invalid_request_error");

    // The header wins over the query; an unknown name is a 400 naming the knob.
    let req = post("/v1/chat/completions", &chat).query("script=overloaded").header("x-mock-script", "content_filter");
    let (status, v) = json(req.to(MockKind::OpenAi).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    let (status, v) =
        json(post("/v1/chat/completions", &chat).query("script=explode").to(MockKind::OpenAi).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["param"], "script");
    assert!(v["error"]["message"].as_str().unwrap().contains("explode"), "{v}");

    let (status, _) = json(
        post("/v1/chat/completions", &chat).header("x-mock-script", "mid_stream_error").to(MockKind::OpenAi).await,
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);

    let response = post("/v1/chat/completions", &chat).header("x-mock-script", "truncate").to(MockKind::OpenAi).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    assert!(serde_json::from_slice::<Value>(&body).is_err(), "a cut answer is not JSON");
}

#[tokio::test]
async fn stream_scripts() {
    let stream = ask(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let text = sse_text(
        post("/v1/chat/completions", &stream).header("x-mock-script", "mid_stream_error").to(MockKind::OpenAi).await,
    )
    .await;
    let chunks = super::parse_events(&text);
    let contents = chunks
        .iter()
        .filter(|c| c.data["choices"][0]["delta"]["content"].as_str().is_some_and(|s| !s.is_empty()))
        .count();
    assert_eq!(contents, 2);
    let last = &chunks.last().unwrap().data;
    assert_eq!(last["error"]["type"], "server_error", "{text}");
    assert!(!text.contains("[DONE]") && !text.contains("finish_reason\":\"stop"));

    let text =
        sse_text(post("/v1/chat/completions", &stream).header("x-mock-script", "truncate").to(MockKind::OpenAi).await)
            .await;
    let chunks = super::parse_events(&text);
    assert_eq!(chunks.len(), 3, "role and two content chunks: {text}");
    assert!(!text.contains("[DONE]") && !text.contains("\"error\""));

    let text = sse_text(
        post("/v1/completions", &json!({"model": "m", "prompt": "x", "stream": true}))
            .header("x-mock-script", "truncate")
            .to(MockKind::OpenAi)
            .await,
    )
    .await;
    assert_eq!(super::parse_events(&text).len(), 2);
}

#[tokio::test]
async fn text_tool_text_on_openai() {
    let req = post("/v1/chat/completions", &ask(json!({"tools": tools()}))).header("x-mock-script", "text_tool_text");
    let (_, v) = json(req.to(MockKind::OpenAi).await).await;
    let message = &v["choices"][0]["message"];
    assert_eq!(message["content"], "Let me look that up. One moment.");
    assert_eq!(message["tool_calls"].as_array().unwrap().len(), 1);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
}
