//! Small JSON and response builders: string escaping, OpenAI-shaped errors, ids, the
//! deterministic answer text and usage objects. No `serde_json::Value` anywhere.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Response, StatusCode};

use crate::body::{self, Body};

/// The `GET /v1/models` answer, fixed at compile time.
pub(crate) const MODELS_JSON: &[u8] = br#"{"object":"list","data":[{"id":"mock-1","object":"model","created":0,"owned_by":"sluice-mock"},{"id":"mock-2","object":"model","created":0,"owned_by":"sluice-mock"},{"id":"mock-embed-1","object":"model","created":0,"owned_by":"sluice-mock"}]}"#;

const INJECTED_ERROR_JSON: &[u8] =
    br#"{"error":{"message":"mock provider injected error","type":"server_error","param":null,"code":"mock_error"}}"#;

/// Append `s` as a JSON string literal (with quotes).
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    push_escaped(out, s);
    out.push('"');
}

/// Append `s` escaped for the inside of a JSON string literal (without quotes).
pub(crate) fn push_escaped(out: &mut String, s: &str) {
    let mut start = 0;
    for (i, byte) in s.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, hence on a char boundary.
        out.push_str(s.get(start..i).unwrap_or_default());
        if escaped.is_empty() {
            let _ = write!(out, "\\u{:04x}", byte);
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
}

/// Current Unix time in seconds.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Append a number.
pub(crate) fn push_num(out: &mut String, n: u64) {
    let _ = write!(out, "{n}");
}

/// Append a fresh response id: `prefix` followed by 16 random hex digits.
pub(crate) fn push_id(out: &mut String, prefix: &str) {
    out.push_str(prefix);
    let _ = write!(out, "{:016x}", fastrand::u64(..));
}

/// Append word `index` of the answer as a stream piece: `mock0`, ` mock1`, ` mock2`, ...
pub(crate) fn push_word(out: &mut String, index: usize) {
    if index > 0 {
        out.push(' ');
    }
    let _ = write!(out, "mock{index}");
}

/// Append the whole `words`-word answer: `mock0 mock1 ...`.
pub(crate) fn push_words(out: &mut String, words: usize) {
    for index in 0..words {
        push_word(out, index);
    }
}

/// Append a `usage` object.
pub(crate) fn push_usage(out: &mut String, prompt: u64, completion: u64) {
    let _ = write!(
        out,
        r#"{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}"#,
        prompt + completion
    );
}

/// Rough prompt token estimate: body bytes / 4, at least 1.
pub(crate) fn prompt_tokens(body: &[u8]) -> u64 {
    (body.len() as u64 / 4).max(1)
}

fn with_type(status: StatusCode, body: Body, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A complete `application/json` response.
pub(crate) fn json_response(status: StatusCode, json: impl Into<Bytes>) -> Response<Body> {
    with_type(status, body::full(json), "application/json")
}

/// A complete `text/plain` response.
pub(crate) fn text_response(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    with_type(status, body::full(text), "text/plain; charset=utf-8")
}

/// A `text/event-stream` response around a streaming body.
pub(crate) fn sse_response(body: Body) -> Response<Body> {
    let mut response = with_type(StatusCode::OK, body, "text/event-stream");
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// An OpenAI-shaped error: `{"error":{"message","type","param","code"}}`.
pub(crate) fn error_response(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response<Body> {
    let mut out = String::with_capacity(96 + message.len());
    out.push_str(r#"{"error":{"message":"#);
    push_json_str(&mut out, message);
    out.push_str(r#","type":"#);
    push_json_str(&mut out, kind);
    for (key, value) in [(r#","param":"#, param), (r#","code":"#, code)] {
        out.push_str(key);
        match value {
            Some(value) => push_json_str(&mut out, value),
            None => out.push_str("null"),
        }
    }
    out.push_str("}}");
    json_response(status, out)
}

/// A 400 `invalid_request_error`, optionally naming the offending parameter.
pub(crate) fn invalid_request(message: &str, param: Option<&str>) -> Response<Body> {
    error_response(StatusCode::BAD_REQUEST, message, "invalid_request_error", param, None)
}

/// A request the mock rejects with a 400 `invalid_request_error`.
#[derive(Debug)]
pub(crate) struct BadRequest {
    pub message: std::borrow::Cow<'static, str>,
    pub param: Option<&'static str>,
}

impl BadRequest {
    pub(crate) fn new(message: impl Into<std::borrow::Cow<'static, str>>, param: Option<&'static str>) -> Self {
        Self { message: message.into(), param }
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        invalid_request(&self.message, self.param)
    }
}

/// A 405 for a known path with the wrong method.
pub(crate) fn method_not_allowed(method: &Method, path: &str, allow: &'static str) -> Response<Body> {
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("Method {method} is not allowed on {path}; use {allow}"),
        "invalid_request_error",
        None,
        Some("method_not_allowed"),
    );
    response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// The injected error, answered with `status` (500 if it is not a 4xx or 5xx status).
pub(crate) fn injected_error(status: u16) -> Response<Body> {
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, Bytes::from_static(INJECTED_ERROR_JSON))
}
