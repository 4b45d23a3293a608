//! The same conversation sent to the OpenAI mock as an OpenAI request and to the Anthropic
//! mock as its translation (the gateway's own request and response translation) gets the
//! same answer: text, tool names and arguments, finish and token counts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sluice_mock::{MockKind, MockRequest, MockSettings};

use super::{request, response};
use crate::wire::body::Body;

/// The mock of `kind` answering `body` posted to `path`, in-process.
async fn answer(kind: MockKind, path: &str, headers: &[(&str, &str)], body: &Value) -> Response<Body> {
    let mut map = HeaderMap::new();
    if kind == MockKind::Anthropic {
        map.insert("x-api-key", HeaderValue::from_static("sk-ant-test"));
        map.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    }
    for (name, value) in headers {
        map.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    let req = MockRequest {
        method: &Method::POST,
        path,
        query: None,
        headers: &map,
        body: Bytes::from(serde_json::to_vec(body).unwrap()),
    };
    sluice_mock::respond(&MockSettings { kind, ..MockSettings::default() }, req).await
}

async fn json_of(response: Response<Body>) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_else(|err| panic!("{err}: {body:?}")))
}

/// The data of each event of a streamed answer (`[DONE]` left out).
async fn events(response: Response<Body>) -> Vec<Value> {
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

/// A chat request body with `messages` and more fields.
fn chat_body(messages: Value, extra: Value) -> Value {
    let mut body = json!({"model": "gpt-x", "messages": messages});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

const DEFAULTS: request::Defaults = request::Defaults { max_tokens: Some(4096) };

/// The answer without the parts that differ by kind (ids, timestamps).
fn neutral(answer: &Value) -> Value {
    let choice = &answer["choices"][0];
    let message = &choice["message"];
    let tools: Vec<Value> = message["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|call| {
            let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
            json!([call["function"]["name"], arguments])
        })
        .collect();
    let usage = &answer["usage"];
    json!({
        "text": message["content"].as_str().unwrap_or(""),
        "tools": tools,
        "finish": choice["finish_reason"],
        "prompt": usage["prompt_tokens"],
        "completion": usage["completion_tokens"],
        "cached": usage["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0),
    })
}

async fn openai_answer(body: &Value, headers: &[(&str, &str)]) -> Value {
    let (status, v) = json_of(answer(MockKind::OpenAi, "/v1/chat/completions", headers, body).await).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

async fn anthropic_answer(body: &Value, headers: &[(&str, &str)]) -> Value {
    let (status, v) = json_of(answer(MockKind::Anthropic, "/v1/messages", headers, body).await).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// Both answers to `body` (an OpenAI request), neutral; asserts they are the same.
async fn same_plan(body: Value, headers: &[(&str, &str)]) -> Value {
    let openai = neutral(&openai_answer(&body, headers).await);
    let translated = request::translate(&body, DEFAULTS).unwrap();
    let answer = anthropic_answer(&translated.body, headers).await;
    let anthropic = neutral(&response::translate(&answer, &translated.reply, 0));
    assert_eq!(openai, anthropic, "request: {body}");
    openai
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"}},
            "required": ["city", "days"]
        }}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
        {"type": "function", "function": {"name": "never_called", "parameters": {"type": "object"}}}
    ])
}

#[tokio::test]
async fn plain_text() {
    let body = chat_body(
        json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the weather like today?"},
            {"role": "assistant", "content": "Sunny."},
            {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]}
        ]),
        json!({}),
    );
    let plan = same_plan(body, &[("x-mock-chunks", "4")]).await;
    assert_eq!(
        plan,
        json!({"text": "mock0 mock1 mock2 mock3", "tools": [], "finish": "stop", "prompt": 12, "completion": 4, "cached": 0})
    );
}

#[tokio::test]
async fn token_limit_ends_with_length() {
    let body = chat_body(json!([{"role": "user", "content": "hi"}]), json!({"max_tokens": 3}));
    let plan = same_plan(body, &[]).await;
    assert_eq!((plan["text"].as_str(), plan["finish"].as_str()), (Some("mock0 mock1 mock2"), Some("length")));
}

#[tokio::test]
async fn cached_tokens() {
    let body = chat_body(json!([{"role": "user", "content": "one two three four five"}]), json!({}));
    let plan = same_plan(body, &[("x-mock-cached-tokens", "3"), ("x-mock-chunks", "1")]).await;
    assert_eq!((plan["prompt"].as_u64(), plan["cached"].as_u64()), (Some(5), Some(3)));
}

#[tokio::test]
async fn tool_calls() {
    let user = json!([{"role": "user", "content": "weather in Paris"}]);
    let expected = json!([["get_weather", {"city": "mock", "days": 1}], ["get_time", {}]]);

    let plan = same_plan(chat_body(user.clone(), json!({"tools": weather_tools()})), &[]).await;
    assert_eq!(plan["tools"], expected);
    assert_eq!(
        (plan["finish"].as_str(), plan["completion"].as_u64(), plan["text"].as_str()),
        (Some("tool_calls"), Some(20), Some(""))
    );
    assert_eq!(plan["prompt"], 3, "tool definitions are not prompt words");

    let required = chat_body(user.clone(), json!({"tools": weather_tools(), "tool_choice": "required"}));
    assert_eq!(same_plan(required, &[]).await["tools"], expected);

    let single = chat_body(user.clone(), json!({"tools": weather_tools(), "parallel_tool_calls": false}));
    assert_eq!(same_plan(single, &[]).await["tools"], json!([["get_weather", {"city": "mock", "days": 1}]]));

    let named = json!({"type": "function", "function": {"name": "get_time"}});
    let named = chat_body(user.clone(), json!({"tools": weather_tools(), "tool_choice": named}));
    assert_eq!(same_plan(named, &[]).await["tools"], json!([["get_time", {}]]));

    let none = chat_body(user, json!({"tools": weather_tools(), "tool_choice": "none"}));
    let plan = same_plan(none, &[("x-mock-chunks", "2")]).await;
    assert_eq!((plan["text"].as_str(), plan["finish"].as_str()), (Some("mock0 mock1"), Some("stop")));
}

#[tokio::test]
async fn tool_results() {
    let calls = json!([
        {"id": "call_mock_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"days\":1}"}},
        {"id": "call_mock_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    ]);
    let conversation = json!([
        {"role": "user", "content": "weather in Paris"},
        {"role": "assistant", "content": null, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_mock_1", "content": "18C and sunny"},
        {"role": "tool", "tool_call_id": "call_mock_2", "content": [{"type": "text", "text": "noon"}]}
    ]);
    let plan = same_plan(chat_body(conversation, json!({"tools": weather_tools()})), &[]).await;
    assert_eq!(
        plan,
        json!({"text": "Results: 18C and sunny; noon", "tools": [], "finish": "stop", "prompt": 7, "completion": 5, "cached": 0})
    );
}

#[tokio::test]
async fn structured_output() {
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}, "score": {"type": "number"}}, "required": ["score", "answer"]});
    let format = json!({"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": true}});
    let body = chat_body(json!([{"role": "user", "content": "judge this"}]), json!({"response_format": format}));
    let openai = neutral(&openai_answer(&body, &[]).await);
    assert_eq!(openai["text"], r#"{"answer":"mock","score":1.5}"#);
    assert_eq!((openai["finish"].as_str(), openai["completion"].as_u64()), (Some("stop"), Some(10)));

    // Anthropic gets structured output as a forced tool; its input is the same JSON.
    let forced = json!({
        "model": "claude", "max_tokens": 1024,
        "messages": [{"role": "user", "content": "judge this"}],
        "tools": [{"name": "verdict", "input_schema": schema}],
        "tool_choice": {"type": "tool", "name": "verdict"}
    });
    let message = anthropic_answer(&forced, &[]).await;
    assert_eq!(message["content"][0]["type"], "tool_use");
    assert_eq!(message["content"][0]["name"], "verdict");
    assert_eq!(serde_json::to_string(&message["content"][0]["input"]).unwrap(), openai["text"].as_str().unwrap());
    assert_eq!(message["usage"]["output_tokens"], openai["completion"]);
    assert_eq!(message["usage"]["input_tokens"], openai["prompt"]);

    let object =
        chat_body(json!([{"role": "user", "content": "x"}]), json!({"response_format": {"type": "json_object"}}));
    assert_eq!(neutral(&openai_answer(&object, &[]).await)["text"], "{}");
}

#[tokio::test]
async fn streamed_and_whole_answers_agree() {
    let body =
        chat_body(json!([{"role": "user", "content": "weather"}]), json!({"tools": weather_tools(), "stream": true}));
    let chunks = events(answer(MockKind::OpenAi, "/v1/chat/completions", &[], &body).await).await;
    let mut arguments = vec![String::new(); 2];
    for chunk in &chunks {
        for call in chunk["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap() as usize;
            arguments[index].push_str(call["function"]["arguments"].as_str().unwrap());
        }
    }
    assert_eq!(arguments, [r#"{"city":"mock","days":1}"#, "{}"]);

    let translated = request::translate(&body, DEFAULTS).unwrap().body;
    let events = events(answer(MockKind::Anthropic, "/v1/messages", &[], &translated).await).await;
    let mut inputs = vec![String::new(); 2];
    for event in &events {
        if event["delta"]["type"] == "input_json_delta" {
            let index = event["index"].as_u64().unwrap() as usize;
            inputs[index].push_str(event["delta"]["partial_json"].as_str().unwrap());
        }
    }
    assert_eq!(inputs, arguments);
}
