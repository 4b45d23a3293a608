//! Every way a data-plane request can fail, and the one place that turns a failure into
//! an OpenAI-shaped error response (`{"error":{"message","type","param","code"}}`).

use http::{Response, StatusCode};

use crate::providers::UpstreamError;
use crate::wire::body::{self, Body};

pub use crate::metrics::Outcome;

impl From<crate::wire::BodyError> for GatewayError {
    fn from(e: crate::wire::BodyError) -> Self {
        use crate::wire::BodyError;
        match e {
            BodyError::NotAnObject => GatewayError::NotAnObject,
            BodyError::Malformed(m) => GatewayError::MalformedJson(m),
            BodyError::MissingModel => GatewayError::MissingModel,
            BodyError::InvalidField { field, expected } => GatewayError::InvalidField { field, expected },
        }
    }
}

/// A failed data-plane request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("missing gateway key: send `Authorization: Bearer <key>`")]
    MissingKey,
    #[error("invalid gateway key")]
    InvalidKey,
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("timed out reading the request body")]
    BodyTimeout,
    /// The body's framing is broken (bad chunked encoding, a connection cut mid-body).
    #[error("could not read the request body: its framing is broken or it was cut short")]
    BodyRead,
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("you must provide a model parameter")]
    MissingModel,
    #[error("`{field}` must be {expected}")]
    InvalidField { field: &'static str, expected: &'static str },
    #[error("the model `{0}` does not exist or you do not have access to it")]
    ModelNotFound(String),
    #[error("unknown request URL: {method} {path}")]
    UnknownUrl { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("{0}")]
    InvalidContext(String),
    #[error("{0}")]
    InvalidVariables(String),
    #[error("the flag `{0}` needs a context key: send `x-sluice-context` or the `user` field")]
    ContextKeyRequired(String),
    #[error("`messages` must be an array of message objects")]
    InvalidMessages,
    /// The request's values (`x-sluice-variables`, the context) would make a version's
    /// template render past its budget; nothing was sent upstream.
    #[error("the template at messages[{message}] of AI config `{ai_config}` version {version} cannot be rendered for this request: {error}")]
    TemplateTooLarge { ai_config: String, version: u32, message: usize, error: crate::aiconfig::template::RenderError },
    #[error("the flag `{flag}` could not be evaluated: {kind}")]
    FlagError { flag: String, kind: &'static str },
    #[error("the AI config version `{0}` is disabled")]
    AiConfigDisabled(String),
    #[error("provider `{provider}`: {error}")]
    Upstream { provider: String, error: UpstreamError },
    /// The request cannot be sent to the chosen provider as it is (e.g. `n: 2` for a
    /// provider that returns one choice).
    #[error("{message}")]
    Refused { param: &'static str, message: String },
    /// The body cannot be translated for the chosen provider (JSON nested deeper than the
    /// translation takes, a lone surrogate…): the app's problem, never the provider's.
    #[error("the request cannot be translated for this model's provider: {0}")]
    Untranslatable(String),
    /// The gateway's shutdown grace period ended while the response was still streaming.
    #[error(
        "the gateway is shutting down and its grace period is over: the response was cut short; retry the request"
    )]
    ShuttingDown,
    #[error("{message}")]
    InvalidFeedback { param: &'static str, message: String },
    #[error("unknown metric `{0}`: feedback names a metric defined under `metrics:`")]
    UnknownMetric(String),
    #[error("{0}")]
    InvalidToken(String),
    #[error("this response already has feedback for `{0}`")]
    DuplicateFeedback(String),
    #[error("{0}")]
    TokenExpired(String),
    #[error("too much recent feedback to check for duplicates; retry later")]
    FeedbackFull,
    #[error("the fleet store cannot be reached to check that no other instance counted this signal: nothing was counted; send it again shortly")]
    FleetUnavailable,
    #[error("the origin `{0}` may not send feedback from a browser (see `feedback.browser_origins`)")]
    OriginNotAllowed(String),
    #[error("a preflight request needs an `Origin` header")]
    NoOrigin,
    /// The key is of a kind that may only evaluate flags over OFREP.
    #[error("the gateway key of client `{0}` may only evaluate flags (OFREP, /ofrep/v1/...)")]
    KeyNotAllowed(String),
    /// The key's `ofrep_rate_limit` is spent for now.
    #[error("this key's evaluations are rate-limited (`ofrep_rate_limit`): retry in {0} s")]
    RateLimited(u64),
    /// A guardrail in `block` mode failed the provider's answer; the answer was not sent.
    #[error("the answer failed the guardrail `{0}` and was withheld")]
    GuardrailBlocked(String),
    /// A fleet instance that has not read the fleet's flags yet (its config file's are not
    /// the fleet's: serving them could undo a kill switch).
    #[error("this gateway has not loaded its configuration from the fleet store yet: try another instance, or again shortly")]
    NotReady,
    #[error("internal gateway error")]
    Internal,
}

impl GatewayError {
    /// Everything this error is, in one match with no wildcard (a new error cannot be
    /// added without choosing each): HTTP status, the outcome it is counted under, and
    /// OpenAI's `(type, param, code)`. The only place statuses are chosen.
    fn parts(&self) -> Parts {
        use GatewayError::*;
        const INVALID: &str = "invalid_request_error";
        let client = |status, param, code| Parts { status, outcome: Outcome::ClientError, kind: INVALID, param, code };
        let server = |status, outcome, code| Parts { status, outcome, kind: "server_error", param: None, code };
        match self {
            MissingKey => client(StatusCode::UNAUTHORIZED, None, "missing_api_key"),
            InvalidKey => client(StatusCode::UNAUTHORIZED, None, "invalid_api_key"),
            BodyTooLarge { .. } => client(StatusCode::PAYLOAD_TOO_LARGE, None, "request_too_large"),
            BodyTimeout => client(StatusCode::REQUEST_TIMEOUT, None, "request_timeout"),
            BodyRead => client(StatusCode::BAD_REQUEST, None, "unreadable_body"),
            MalformedJson(_) | NotAnObject => client(StatusCode::BAD_REQUEST, None, "invalid_json"),
            MissingModel => client(StatusCode::BAD_REQUEST, Some("model"), "missing_model"),
            InvalidField { field, .. } => client(StatusCode::BAD_REQUEST, Some(field), "invalid_type"),
            ModelNotFound(_) => client(StatusCode::NOT_FOUND, Some("model"), "model_not_found"),
            UnknownUrl { .. } => client(StatusCode::NOT_FOUND, None, "unknown_url"),
            MethodNotAllowed { .. } => client(StatusCode::METHOD_NOT_ALLOWED, None, "method_not_allowed"),
            InvalidContext(_) => client(StatusCode::BAD_REQUEST, None, "invalid_context"),
            InvalidVariables(_) => client(StatusCode::BAD_REQUEST, None, "invalid_variables"),
            ContextKeyRequired(_) => client(StatusCode::BAD_REQUEST, Some("user"), "context_key_required"),
            InvalidMessages => client(StatusCode::BAD_REQUEST, Some("messages"), "invalid_type"),
            TemplateTooLarge { .. } => client(StatusCode::BAD_REQUEST, None, "template_too_large"),
            Refused { param, .. } => client(StatusCode::BAD_REQUEST, Some(param), "unsupported_value"),
            Untranslatable(_) => client(StatusCode::BAD_REQUEST, None, "unsupported_value"),
            FlagError { .. } => {
                server(StatusCode::INTERNAL_SERVER_ERROR, Outcome::GatewayError, "flag_evaluation_error")
            }
            AiConfigDisabled(_) => server(StatusCode::SERVICE_UNAVAILABLE, Outcome::GatewayError, "ai_config_disabled"),
            Upstream { error, .. } => {
                let (status, outcome) = if error.is_timeout() {
                    (StatusCode::GATEWAY_TIMEOUT, Outcome::Timeout)
                } else {
                    (StatusCode::BAD_GATEWAY, Outcome::UpstreamError)
                };
                Parts { status, outcome, kind: "upstream_error", param: None, code: upstream_code(*error) }
            }
            InvalidFeedback { param, .. } => client(StatusCode::BAD_REQUEST, Some(param), "invalid_feedback"),
            UnknownMetric(_) => client(StatusCode::BAD_REQUEST, Some("metric"), "unknown_metric"),
            InvalidToken(_) => client(StatusCode::UNAUTHORIZED, Some("token"), "invalid_token"),
            DuplicateFeedback(_) => client(StatusCode::CONFLICT, Some("metric"), "duplicate_feedback"),
            TokenExpired(_) => client(StatusCode::GONE, Some("token"), "token_expired"),
            FeedbackFull => client(StatusCode::SERVICE_UNAVAILABLE, None, "feedback_capacity"),
            FleetUnavailable => client(StatusCode::SERVICE_UNAVAILABLE, None, "store_unavailable"),
            OriginNotAllowed(_) => client(StatusCode::FORBIDDEN, None, "origin_not_allowed"),
            NoOrigin => client(StatusCode::BAD_REQUEST, None, "missing_origin"),
            KeyNotAllowed(_) => client(StatusCode::FORBIDDEN, None, "key_not_allowed"),
            RateLimited(_) => client(StatusCode::TOO_MANY_REQUESTS, None, "rate_limited"),
            ShuttingDown => server(StatusCode::SERVICE_UNAVAILABLE, Outcome::Cancelled, "shutting_down"),
            GuardrailBlocked(_) => Parts {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                outcome: Outcome::Blocked,
                kind: "guardrail_error",
                param: None,
                code: "guardrail_blocked",
            },
            NotReady => server(StatusCode::SERVICE_UNAVAILABLE, Outcome::GatewayError, "gateway_not_ready"),
            Internal => server(StatusCode::INTERNAL_SERVER_ERROR, Outcome::GatewayError, "internal_error"),
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        self.parts().status
    }

    /// The outcome label this error is counted under.
    pub fn outcome(&self) -> Outcome {
        self.parts().outcome
    }

    /// The OpenAI-shaped JSON body of this error.
    pub fn to_json(&self) -> String {
        let Parts { kind, param, code, .. } = self.parts();
        serde_json::json!({
            "error": { "message": self.to_string(), "type": kind, "param": param, "code": code }
        })
        .to_string()
    }

    /// The complete error response.
    pub fn into_response(self) -> Response<Body> {
        let mut resp = body::json(self.status(), self.to_json());
        let retry_after = match self {
            GatewayError::RateLimited(seconds) => Some(seconds),
            GatewayError::FleetUnavailable => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            resp.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        resp
    }
}

/// What [`GatewayError::parts`] says of an error.
struct Parts {
    status: StatusCode,
    outcome: Outcome,
    /// OpenAI's `type`.
    kind: &'static str,
    param: Option<&'static str>,
    code: &'static str,
}

fn upstream_code(e: UpstreamError) -> &'static str {
    match e {
        UpstreamError::Connect => "upstream_connect_failed",
        UpstreamError::ConnectTimeout => "upstream_connect_timeout",
        UpstreamError::FirstByteTimeout => "upstream_timeout",
        UpstreamError::Protocol => "upstream_protocol_error",
        UpstreamError::InvalidRequest => "upstream_invalid_request",
        UpstreamError::StreamBroken => "upstream_stream_broken",
        UpstreamError::IdleTimeout => "upstream_idle_timeout",
    }
}

/// The SSE event that ends a stream that broke after its head was sent.
pub fn sse_error_event(error: &GatewayError) -> bytes::Bytes {
    format!("data: {}\n\n", error.to_json()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_openai_shape_and_status() {
        let e = GatewayError::ModelNotFound("nope".into());
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["message"].as_str().unwrap().contains("`nope`"));
        let t = GatewayError::Upstream { provider: "p".into(), error: UpstreamError::FirstByteTimeout };
        assert_eq!((t.status(), t.outcome()), (StatusCode::GATEWAY_TIMEOUT, Outcome::Timeout));
        let c = GatewayError::Upstream { provider: "p".into(), error: UpstreamError::Connect };
        assert_eq!((c.status(), c.outcome()), (StatusCode::BAD_GATEWAY, Outcome::UpstreamError));
    }
}
