//! Tests of the provider kinds, driving [`respond`] in-process: one module per kind, the
//! Responses API, and the plan shared by the OpenAI and Anthropic kinds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod answer;
mod anthropic;
mod azure;
mod judge;
mod openai;
mod responses;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use super::{respond, MockKind, MockRequest, MockSettings};
use crate::body::Body;

/// One request to send to a mock.
pub(super) struct Req {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

pub(super) fn post(path: &str, body: &Value) -> Req {
    Req {
        method: Method::POST,
        path: path.to_owned(),
        query: None,
        headers: HeaderMap::new(),
        body: Bytes::from(serde_json::to_vec(body).unwrap()),
    }
}

/// A Messages request with the headers the Anthropic kind requires.
pub(super) fn messages(body: &Value) -> Req {
    post("/v1/messages", body).header("x-api-key", "sk-ant-test").header("anthropic-version", "2023-06-01")
}

/// An Azure request with its `api-key`.
pub(super) fn azure(path: &str, body: &Value) -> Req {
    post(path, body).header("api-key", "azure-key")
}

pub(super) fn settings(kind: MockKind) -> MockSettings {
    MockSettings { kind, ..MockSettings::default() }
}

impl Req {
    pub(super) fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        self.headers.insert(name, HeaderValue::from_str(value).unwrap());
        self
    }

    pub(super) fn without(mut self, name: &str) -> Self {
        self.headers.remove(name);
        self
    }

    pub(super) fn query(mut self, query: &str) -> Self {
        self.query = Some(query.to_owned());
        self
    }

    pub(super) fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    pub(super) async fn send(&self, settings: &MockSettings) -> Response<Body> {
        let req = MockRequest {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            body: self.body.clone(),
        };
        respond(settings, req).await
    }

    pub(super) async fn to(&self, kind: MockKind) -> Response<Body> {
        self.send(&settings(kind)).await
    }
}

/// Status and JSON body of a complete answer.
pub(super) async fn json(response: Response<Body>) -> (StatusCode, Value) {
    let status = response.status();
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_else(|err| panic!("{err}: {body:?}")))
}

/// The whole text of a streamed answer that ends without a body error.
pub(super) async fn sse_text(response: Response<Body>) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// One server-sent event: its `event:` name, if any, and its data (`Null` for `[DONE]`).
#[derive(Debug)]
pub(super) struct Event {
    pub name: Option<String>,
    pub data: Value,
    pub raw: String,
}

pub(super) fn parse_events(text: &str) -> Vec<Event> {
    assert!(text.is_empty() || text.ends_with("\n\n"), "unterminated stream: {text:?}");
    text.split_terminator("\n\n")
        .map(|block| {
            let mut name = None;
            let mut raw = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = Some(value.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    raw = value.to_owned();
                } else {
                    panic!("unexpected line {line:?} in {block:?}");
                }
            }
            let data = if raw == "[DONE]" { Value::Null } else { serde_json::from_str(&raw).unwrap() };
            Event { name, data, raw }
        })
        .collect()
}

pub(super) async fn events(response: Response<Body>) -> Vec<Event> {
    parse_events(&sse_text(response).await)
}

/// A chat request body with `messages` and more fields.
pub(super) fn chat_body(messages: Value, extra: Value) -> Value {
    let mut body = serde_json::json!({"model": "gpt-x", "messages": messages});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

#[tokio::test]
async fn unknown_paths_per_kind() {
    let body = serde_json::json!({"model": "m"});
    let (status, v) = json(messages(&body).method(Method::POST).to(MockKind::OpenAi).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found");

    let (status, v) = json(post("/v1/chat/completions", &body).to(MockKind::Anthropic).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "not_found_error");

    let (status, v) = json(azure("/v1/chat/completions", &body).to(MockKind::Azure).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v, serde_json::json!({"error": {"code": "404", "message": "Resource not found"}}));

    let response = messages(&body).method(Method::GET).to(MockKind::Anthropic).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
    assert_eq!(json(response).await.1["error"]["type"], "invalid_request_error");

    for kind in [MockKind::OpenAi, MockKind::Anthropic, MockKind::Azure] {
        let response = post("/healthz", &body).method(Method::GET).to(kind).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}

/// Every prefix of valid requests (malformed JSON, mostly) gets a 200 or a 400, per kind.
#[tokio::test]
async fn truncated_bodies_never_fail_the_mock() {
    let tools = serde_json::json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}}}]);
    let cases = [
        (
            MockKind::OpenAi,
            "/v1/chat/completions",
            chat_body(
                serde_json::json!([{"role": "user", "content": [{"type": "text", "text": "h\u{e9}llo \"x\""}]}, {"role": "tool", "content": "r"}]),
                serde_json::json!({"tools": tools, "stream": true}),
            ),
        ),
        (
            MockKind::OpenAi,
            "/v1/responses",
            serde_json::json!({"model": "m", "input": [{"role": "user", "content": "hi"}], "instructions": "x"}),
        ),
        (
            MockKind::Anthropic,
            "/v1/messages",
            serde_json::json!({"model": "c", "max_tokens": 5, "system": [{"type": "text", "text": "s"}], "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "r"}]}]}], "tools": [{"name": "f", "input_schema": {}}]}),
        ),
        (
            MockKind::Azure,
            "/openai/v1/chat/completions",
            chat_body(
                serde_json::json!([{"role": "user", "content": "hi"}]),
                serde_json::json!({"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}}}),
            ),
        ),
    ];
    for (kind, path, body) in cases {
        let full = serde_json::to_vec(&body).unwrap();
        for end in 0..=full.len() {
            let mut req = post(path, &Value::Null)
                .header("x-api-key", "k")
                .header("anthropic-version", "1")
                .header("api-key", "k");
            req.body = Bytes::copy_from_slice(&full[..end]);
            let response = req.to(kind).await;
            let status = response.status();
            assert!(status == StatusCode::OK || status == StatusCode::BAD_REQUEST, "{kind:?} {end}: {status}");
            assert!(response.into_body().collect().await.is_ok());
        }
    }
}
