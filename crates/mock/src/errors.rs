//! Error answers in each kind's shape: OpenAI `{"error":{"message","type","param","code"}}`,
//! Anthropic `{"type":"error","error":{"type","message"}}`, and Azure's own
//! `{"error":{"code","message"}}` for the errors Azure answers itself (auth, routing,
//! throttling, content filtering); Azure's other errors are OpenAI-shaped.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW};
use http::{Method, Response, StatusCode};

use super::render::{self, push_json_str};
use super::MockKind;
use crate::body::Body;

/// Azure's answer when the content filter blocks the prompt.
pub(crate) const AZURE_CONTENT_FILTER_JSON: &str = r#"{"error":{"code":"content_filter","message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","param":"prompt","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"}}}}}"#;

/// Anthropic's answer when it is overloaded (status 529).
pub(crate) const ANTHROPIC_OVERLOADED_JSON: &str =
    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;

const AZURE_ACCESS_DENIED: &str = "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.";

/// An Anthropic-shaped error.
pub(crate) fn anthropic(status: StatusCode, error_type: &str, message: &str) -> Response<Body> {
    let mut out = String::with_capacity(64 + message.len());
    out.push_str(r#"{"type":"error","error":{"type":"#);
    push_json_str(&mut out, error_type);
    out.push_str(r#","message":"#);
    push_json_str(&mut out, message);
    out.push_str("}}");
    render::json_response(status, out)
}

/// An Azure-shaped error: `{"error":{"code","message"}}`.
pub(crate) fn azure(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let mut out = String::with_capacity(48 + message.len());
    out.push_str(r#"{"error":{"code":"#);
    push_json_str(&mut out, code);
    out.push_str(r#","message":"#);
    push_json_str(&mut out, message);
    out.push_str("}}");
    render::json_response(status, out)
}

/// Anthropic's error type for a status.
pub(crate) fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// A 400 for a request the mock rejects; `param` names the field for the OpenAI shape.
pub(crate) fn bad_request(kind: MockKind, message: &str, param: Option<&str>) -> Response<Body> {
    match kind {
        MockKind::OpenAi | MockKind::Azure => render::invalid_request(message, param),
        MockKind::Anthropic => anthropic(StatusCode::BAD_REQUEST, "invalid_request_error", message),
    }
}

/// The answer to an unknown path.
pub(crate) fn not_found(kind: MockKind, method: &Method, path: &str) -> Response<Body> {
    match kind {
        MockKind::OpenAi => render::error_response(
            StatusCode::NOT_FOUND,
            &format!("Unknown route: {method} {path}"),
            "invalid_request_error",
            None,
            Some("not_found"),
        ),
        MockKind::Anthropic => anthropic(StatusCode::NOT_FOUND, "not_found_error", &format!("Not found: {path}")),
        MockKind::Azure => azure(StatusCode::NOT_FOUND, "404", "Resource not found"),
    }
}

/// A 405 for a known path with the wrong method.
pub(crate) fn method_not_allowed(kind: MockKind, method: &Method, path: &str, allow: &'static str) -> Response<Body> {
    let mut response = match kind {
        MockKind::OpenAi | MockKind::Azure => return render::method_not_allowed(method, path, allow),
        MockKind::Anthropic => anthropic(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            &format!("Method {method} is not allowed on {path}; use {allow}"),
        ),
    };
    response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// The injected error (`error_rate`), answered with `status` (500 unless a 4xx or 5xx).
pub(crate) fn injected(kind: MockKind, status: u16) -> Response<Body> {
    match kind {
        MockKind::OpenAi | MockKind::Azure => render::injected_error(status),
        MockKind::Anthropic => {
            let status = StatusCode::from_u16(status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            anthropic(status, anthropic_type(status), "mock provider injected error")
        }
    }
}

/// The kind's 500 for a failure of the server itself.
pub(crate) fn server_error(kind: MockKind) -> Response<Body> {
    let message = "The server had an error while processing your request.";
    match kind {
        MockKind::Anthropic => anthropic(StatusCode::INTERNAL_SERVER_ERROR, "api_error", message),
        MockKind::OpenAi | MockKind::Azure => {
            render::error_response(StatusCode::INTERNAL_SERVER_ERROR, message, "server_error", None, None)
        }
    }
}

/// The refusal of a missing or misplaced credential, checked like the real API before
/// anything else.
pub(crate) fn auth_refusal(kind: MockKind, headers: &http::HeaderMap) -> Option<Response<Body>> {
    let present = |name: &str| headers.get(name).is_some_and(|v| !v.is_empty());
    match kind {
        MockKind::OpenAi => None,
        MockKind::Anthropic => {
            if !present("x-api-key") {
                return Some(anthropic(
                    StatusCode::UNAUTHORIZED,
                    "authentication_error",
                    "x-api-key header is required",
                ));
            }
            if headers.contains_key(http::header::AUTHORIZATION) {
                return Some(anthropic(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "unexpected authorization header: the API key goes in x-api-key",
                ));
            }
            if !present("anthropic-version") {
                return Some(anthropic(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "anthropic-version: header is required",
                ));
            }
            None
        }
        MockKind::Azure => {
            if !present("api-key") {
                return Some(azure(StatusCode::UNAUTHORIZED, "401", AZURE_ACCESS_DENIED));
            }
            if headers.contains_key(http::header::AUTHORIZATION) {
                return Some(render::invalid_request(
                    "unexpected authorization header: the API key goes in api-key",
                    Some("authorization"),
                ));
            }
            None
        }
    }
}

/// A complete JSON error body fixed at compile time.
pub(crate) fn fixed(status: StatusCode, json: &'static str) -> Response<Body> {
    render::json_response(status, Bytes::from_static(json.as_bytes()))
}
