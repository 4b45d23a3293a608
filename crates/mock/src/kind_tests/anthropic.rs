//! The `anthropic` kind: validation like the Messages API, the message and its events.

use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::{events, json, messages, settings, MockKind, MockSettings};

fn hello() -> Value {
    json!({"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hello there"}]})
}

fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

fn tool_use(id: &str) -> Value {
    json!({"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "t", "input": {}}]})
}

fn tool_result(id: &str) -> Value {
    json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "done"}]})
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

#[tokio::test]
async fn headers_are_checked_first() {
    let (status, v) = json(messages(&hello()).without("x-api-key").to(MockKind::Anthropic).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["type"], "authentication_error");

    let (status, v) = json(messages(&hello()).without("anthropic-version").to(MockKind::Anthropic).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("anthropic-version"), "{v}");

    let leaked = messages(&hello()).header("authorization", "Bearer sk-client");
    let (status, v) = json(leaked.to(MockKind::Anthropic).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("unexpected authorization header"), "{v}");
}

#[tokio::test]
async fn invalid_requests_are_400() {
    let cases: Vec<(Value, &str)> = vec![
        (with(hello(), "max_tokens", Value::Null), "max_tokens: Field required"),
        (with(hello(), "max_tokens", json!(0)), "max_tokens"),
        (with(hello(), "max_tokens", json!(1.5)), "max_tokens"),
        (with(hello(), "model", Value::Null), "model"),
        (with(hello(), "messages", json!([])), "messages"),
        (with(hello(), "messages", Value::Null), "messages: Field required"),
        (
            with(hello(), "messages", json!([{"role": "system", "content": "be nice"}, user("hi")])),
            r#"Unexpected role "system""#,
        ),
        (with(hello(), "messages", json!([{"role": "tool", "content": "x"}])), r#"Unexpected role "tool""#),
        (with(hello(), "messages", json!([user("")])), "text content blocks must be non-empty"),
        (
            with(hello(), "messages", json!([{"role": "user", "content": [{"type": "text", "text": ""}]}])),
            "text content blocks must be non-empty",
        ),
        (
            with(hello(), "system", json!([{"type": "text", "text": ""}])),
            "system: text content blocks must be non-empty",
        ),
        (with(hello(), "temperature", json!(1.5)), "temperature"),
        (with(hello(), "temperature", json!(-0.1)), "temperature"),
        (with(with(hello(), "temperature", json!(0.5)), "top_p", json!(0.9)), "top_p"),
        (with(hello(), "n", json!(1)), "n: Extra inputs are not permitted"),
        (with(hello(), "stream_options", json!({"include_usage": true})), "stream_options"),
        (with(hello(), "response_format", json!({"type": "json_object"})), "response_format"),
        (with(hello(), "max_completion_tokens", json!(10)), "max_completion_tokens"),
        (
            with(hello(), "tools", json!([{"type": "function", "function": {"name": "f", "parameters": {}}}])),
            "tools.0.type",
        ),
        (with(hello(), "tools", json!([{"name": "f"}])), "tools.0.input_schema"),
        (
            with(hello(), "messages", json!([user("hi"), tool_use("toolu_1")])),
            "`tool_use` ids were found without `tool_result`",
        ),
        (with(hello(), "messages", json!([user("hi"), tool_use("toolu_1"), user("no result")])), "toolu_1"),
        (
            with(hello(), "messages", json!([user("hi"), tool_use("toolu_1"), tool_result("toolu_2")])),
            "`tool_use` ids were found without `tool_result`",
        ),
        (with(hello(), "messages", json!([tool_result("toolu_9")])), "unexpected `tool_use_id`"),
        (
            with(
                hello(),
                "messages",
                json!([user("hi"), tool_use("toolu_1"), tool_result("toolu_1"), tool_result("toolu_1")]),
            ),
            "unexpected `tool_use_id`",
        ),
        (with(hello(), "tool_choice", json!({"type": "tool"})), "tool_choice.name"),
    ];
    for (body, needle) in cases {
        let (status, v) = json(messages(&body).to(MockKind::Anthropic).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{needle:?} not in {message:?} for {body}");
    }
}

#[tokio::test]
async fn tool_round_trip_and_system_blocks_are_valid() {
    let body = with(
        with(hello(), "messages", json!([user("hi"), tool_use("toolu_1"), tool_result("toolu_1")])),
        "system",
        json!([{"type": "text", "text": "be brief"}]),
    );
    let (status, v) = json(messages(&body).to(MockKind::Anthropic).await).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["content"], json!([{"type": "text", "text": "Results: done"}]));
    assert_eq!(v["usage"]["input_tokens"], 4, "hi + done + be brief");
    assert_eq!(v["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn message_shape() {
    let response = messages(&hello()).header("x-mock-chunks", "3").header("x-mock-cached-tokens", "1");
    let (status, v) = json(response.to(MockKind::Anthropic).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(v["id"].as_str().unwrap().starts_with("msg_mock_"), "{v}");
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-x");
    assert_eq!(v["content"], json!([{"type": "text", "text": "mock0 mock1 mock2"}]));
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["stop_sequence"].is_null() && v.get("stop_sequence").is_some());
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 1, "output_tokens": 3, "cache_read_input_tokens": 1, "cache_creation_input_tokens": 0})
    );
}

#[tokio::test]
async fn stream_shape() {
    let body = with(hello(), "stream", json!(true));
    let events = events(messages(&body).header("x-mock-chunks", "3").to(MockKind::Anthropic).await).await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for event in &events {
        assert_eq!(event.data["type"], event.name.as_deref().unwrap(), "{}", event.raw);
    }
    let start = &events[0].data["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_mock_"));
    assert_eq!(start["model"], "claude-x");
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["usage"]["input_tokens"], 2);
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(events[2].data["content_block"], json!({"type": "text", "text": ""}));
    let text: String = events[3..6]
        .iter()
        .map(|e| {
            assert_eq!(e.data["index"], 0);
            assert_eq!(e.data["delta"]["type"], "text_delta");
            e.data["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "mock0 mock1 mock2");
    assert_eq!(events[6].data["index"], 0);
    assert_eq!(events[7].data["delta"], json!({"stop_reason": "end_turn", "stop_sequence": null}));
    assert_eq!(events[7].data["usage"], json!({"output_tokens": 3}));
}

#[tokio::test]
async fn text_tool_text() {
    let body = with(
        hello(),
        "tools",
        json!([{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}]),
    );
    let req = messages(&body).header("x-mock-script", "text_tool_text");
    let (_, v) = json(req.to(MockKind::Anthropic).await).await;
    let types: Vec<&str> = v["content"].as_array().unwrap().iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["text", "tool_use", "text"]);
    assert_eq!(
        v["content"][1],
        json!({"type": "tool_use", "id": "toolu_mock_1", "name": "lookup", "input": {"q": "mock"}})
    );
    assert_eq!(v["stop_reason"], "tool_use");

    let body = with(body, "stream", json!(true));
    let events = events(messages(&body).header("x-mock-script", "text_tool_text").to(MockKind::Anthropic).await).await;
    let starts: Vec<&Value> =
        events.iter().filter(|e| e.data["type"] == "content_block_start").map(|e| &e.data).collect();
    assert_eq!(starts.len(), 3);
    assert_eq!(starts[1]["index"], 1);
    assert_eq!(
        starts[1]["content_block"],
        json!({"type": "tool_use", "id": "toolu_mock_1", "name": "lookup", "input": {}})
    );
    let json_deltas: Vec<&Value> =
        events.iter().filter(|e| e.data["delta"]["type"] == "input_json_delta").map(|e| &e.data).collect();
    assert!(json_deltas.len() >= 2, "{json_deltas:?}");
    let input: String = json_deltas.iter().map(|d| d["delta"]["partial_json"].as_str().unwrap()).collect();
    assert_eq!(input, r#"{"q":"mock"}"#);
    // A ping between blocks: each block start after the first follows a ping.
    for (i, event) in events.iter().enumerate() {
        if event.data["type"] == "content_block_start" && event.data["index"] != 0 {
            assert_eq!(events[i - 1].data["type"], "ping");
        }
    }
    let delta = events.iter().find(|e| e.data["type"] == "message_delta").unwrap();
    assert_eq!(delta.data["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta.data["usage"]["output_tokens"], v["usage"]["output_tokens"]);
}

#[tokio::test]
async fn scripts() {
    let (status, v) =
        json(messages(&hello()).header("x-mock-script", "overloaded").to(MockKind::Anthropic).await).await;
    assert_eq!(status.as_u16(), 529);
    assert_eq!(v, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));

    let response = messages(&hello()).query("script=rate_limited").to(MockKind::Anthropic).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(json(response).await.1["error"]["type"], "rate_limit_error");

    let (status, v) =
        json(messages(&hello()).header("x-mock-script", "bad_request").to(MockKind::Anthropic).await).await;
    assert_eq!((status, v["error"]["type"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request_error")));

    let (_, v) = json(messages(&hello()).header("x-mock-script", "content_filter").to(MockKind::Anthropic).await).await;
    assert_eq!(v["stop_reason"], "refusal");

    let (status, v) = json(messages(&hello()).header("x-mock-script", "nope").to(MockKind::Anthropic).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["type"], "error");
    assert!(v["error"]["message"].as_str().unwrap().contains("x-mock-script"), "{v}");

    let stream = with(hello(), "stream", json!(true));
    let events =
        events(messages(&stream).header("x-mock-script", "mid_stream_error").to(MockKind::Anthropic).await).await;
    let deltas = events.iter().filter(|e| e.data["type"] == "content_block_delta").count();
    assert_eq!(deltas, 2);
    let last = events.last().unwrap();
    assert_eq!(last.name.as_deref(), Some("error"));
    assert_eq!(last.data, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));

    let events = events_of(messages(&stream).header("x-mock-script", "truncate")).await;
    assert!(events.iter().all(|e| e.data["type"] != "message_stop" && e.data["type"] != "message_delta"));
    assert_eq!(events.iter().filter(|e| e.data["type"] == "content_block_delta").count(), 2);
}

async fn events_of(req: super::Req) -> Vec<super::Event> {
    events(req.to(MockKind::Anthropic).await).await
}

// Paused time: the chunk delay passes on tokio's clock at once.
#[tokio::test(start_paused = true)]
async fn knobs_work_on_the_anthropic_kind() {
    let injected = MockSettings { error_rate: 1.0, error_status: 503, ..settings(MockKind::Anthropic) };
    let (status, v) = json(messages(&hello()).send(&injected).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");

    let stream = with(hello(), "stream", json!(true));
    let mut body = messages(&stream).header("x-mock-break-after", "2").to(MockKind::Anthropic).await.into_body();
    let mut text = Vec::new();
    let error = loop {
        match body.frame().await {
            Some(Ok(frame)) => text.extend_from_slice(&frame.into_data().unwrap()),
            Some(Err(err)) => break err,
            None => panic!("the stream did not break"),
        }
    };
    assert!(error.to_string().contains("after 2"), "{error}");
    let text = String::from_utf8(text).unwrap();
    assert_eq!(text.matches("event: content_block_delta").count(), 2, "{text}");

    // The chunk delay separates every event: one frame each.
    let delayed =
        MockSettings { chunks: 2, chunk_delay: std::time::Duration::from_millis(2), ..settings(MockKind::Anthropic) };
    let mut body = messages(&stream).send(&delayed).await.into_body();
    let mut frames = 0;
    let mut all = Vec::new();
    while let Some(frame) = body.frame().await {
        all.extend_from_slice(&frame.unwrap().into_data().unwrap());
        frames += 1;
    }
    let events = super::parse_events(std::str::from_utf8(&all).unwrap());
    assert_eq!(events.len(), 8);
    assert_eq!(frames, events.len());
}
