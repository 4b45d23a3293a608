//! Anthropic's error answers (before the first byte) in OpenAI's shape and statuses. A
//! provider 401 / 403 / 404 is the gateway's misconfiguration, never the app's bad key: 502.

use serde_json::{json, Value};

/// The status the app gets, and OpenAI's `(type, code)`.
pub fn map_status(status: u16) -> (u16, &'static str, &'static str) {
    match status {
        400 | 413 => (400, "invalid_request_error", "invalid_request"),
        429 => (429, "rate_limit_error", "rate_limit_exceeded"),
        529 => (503, "server_error", "upstream_overloaded"),
        401 | 403 | 404 => (502, "upstream_error", "upstream_misconfigured"),
        s if s >= 500 => (502, "upstream_error", "upstream_error"),
        _ => (502, "upstream_error", "upstream_error"),
    }
}

/// The OpenAI error body for an Anthropic error `body` (`{"type":"error","error":{...}}`)
/// answered with `status`.
pub fn translate(status: u16, body: &[u8]) -> (u16, Value) {
    let (to, kind, code) = map_status(status);
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // The provider's own message only where it is about the app's request.
    let message = match to {
        400 | 429 | 503 => parsed
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("the provider refused the request")
            .to_string(),
        _ => format!("the provider answered {status}"),
    };
    (to, json!({"error": {"message": message, "type": kind, "param": Value::Null, "code": code}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_messages() {
        for (from, to) in [(400, 400), (429, 429), (529, 503), (500, 502), (401, 502), (403, 502), (404, 502)] {
            assert_eq!(map_status(from).0, to, "{from}");
        }
        let (status, body) = translate(
            400,
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: required"}}"#,
        );
        assert_eq!((status, body["error"]["message"].as_str().unwrap()), (400, "max_tokens: required"));
        let (status, body) = translate(
            401,
            br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        );
        assert_eq!(status, 502);
        assert!(!body.to_string().contains("x-api-key"), "the app never hears about the provider's key: {body}");
    }
}
