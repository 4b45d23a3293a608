//! Scripted answers (`x-mock-script` / `script`): provider failures and unusual answers on
//! demand, each in the kind's own shape.

use http::header::{HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use super::errors;
use super::render;
use super::MockKind;
use crate::body::Body;

/// One scripted behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Script {
    /// 429 with `retry-after: 7`.
    RateLimited,
    /// Anthropic 529 `overloaded_error`; OpenAI and Azure 503.
    Overloaded,
    /// 400.
    BadRequest,
    /// A stream that sends two content chunks, then an error event, and ends.
    MidStreamError,
    /// A stream that sends some content and ends without its terminal event; a whole
    /// answer cut in the middle of its JSON.
    Truncate,
    /// Azure: the prompt filter's 400; Anthropic: `stop_reason: refusal`; OpenAI:
    /// `finish_reason: content_filter`.
    ContentFilter,
    /// An answer of text, a tool call, then more text.
    TextToolText,
    /// The answer ends early: `length` / `max_tokens`, a Responses API `response.incomplete`.
    Incomplete,
}

/// Every script by name, in the order they are listed to users.
pub(crate) const SCRIPTS: [(&str, Script); 8] = [
    ("rate_limited", Script::RateLimited),
    ("overloaded", Script::Overloaded),
    ("bad_request", Script::BadRequest),
    ("mid_stream_error", Script::MidStreamError),
    ("truncate", Script::Truncate),
    ("content_filter", Script::ContentFilter),
    ("text_tool_text", Script::TextToolText),
    ("incomplete", Script::Incomplete),
];

/// Content chunks a `mid_stream_error` or `truncate` stream sends before it stops.
pub(crate) const CUT_AFTER: usize = 2;

/// Parse a script name (the knob parser).
pub(crate) fn parse(raw: &str) -> Result<Script, String> {
    SCRIPTS.iter().find(|(name, _)| *name == raw).map(|(_, script)| *script).ok_or_else(|| {
        let names: Vec<&str> = SCRIPTS.iter().map(|(name, _)| *name).collect();
        format!("unknown script {raw:?}, expected one of {}", names.join(", "))
    })
}

impl Script {
    /// The error this script answers with instead of reading the request, if any.
    pub(crate) fn early_answer(self, kind: MockKind) -> Option<Response<Body>> {
        match self {
            Script::RateLimited => Some(rate_limited(kind)),
            Script::Overloaded => Some(match kind {
                MockKind::Anthropic => errors::fixed(anthropic_overloaded(), errors::ANTHROPIC_OVERLOADED_JSON),
                MockKind::OpenAi | MockKind::Azure => render::error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The engine is currently overloaded, please try again later.",
                    "server_error",
                    None,
                    None,
                ),
            }),
            Script::BadRequest => {
                Some(errors::bad_request(kind, "mock provider rejected the request (script bad_request)", None))
            }
            Script::ContentFilter if kind == MockKind::Azure => {
                Some(errors::fixed(StatusCode::BAD_REQUEST, errors::AZURE_CONTENT_FILTER_JSON))
            }
            _ => None,
        }
    }

    /// The answer to a whole (non-streamed) request whose script only makes sense in a
    /// stream: `mid_stream_error` fails the request with a 500.
    pub(crate) fn whole_answer(self, kind: MockKind) -> Option<Response<Body>> {
        if self != Script::MidStreamError {
            return None;
        }
        Some(errors::server_error(kind))
    }
}

/// Anthropic's "overloaded" status.
fn anthropic_overloaded() -> StatusCode {
    StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

fn rate_limited(kind: MockKind) -> Response<Body> {
    let status = StatusCode::TOO_MANY_REQUESTS;
    let mut response = match kind {
        MockKind::OpenAi => render::error_response(
            status,
            "Rate limit reached for requests. Please try again in 7s.",
            "requests",
            None,
            Some("rate_limit_exceeded"),
        ),
        MockKind::Anthropic => errors::anthropic(
            status,
            "rate_limit_error",
            "This request would exceed the rate limit for your organization. Please retry after 7 seconds.",
        ),
        MockKind::Azure => errors::azure(
            status,
            "429",
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API have exceeded call rate limit of your current pricing tier. Please retry after 7 seconds.",
        ),
    };
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("7"));
    response
}

/// A whole JSON answer cut in the middle (the `truncate` script on a non-streamed request).
pub(crate) fn cut_in_half(mut json: String) -> String {
    let mut half = json.len() / 2;
    while !json.is_char_boundary(half) {
        half -= 1;
    }
    json.truncate(half);
    json
}
