//! Sending a rewritten request to a provider and preparing its response for the client
//! (phase 8 in ARCHITECTURE.md): forwarded headers, the first-byte wait, peeking a stream's
//! first event, and the classification of failures that happen before the first byte
//! reaches the client — the only ones a fallback may retry.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Response;
use http_body::Frame;
use http_body_util::BodyExt;

use super::error::{GatewayError, Outcome};
use super::peek::first_event;
use super::record::Recorder;
use super::sse::Tap;
use super::stream::{Forward, Reading};
use super::X_REQUEST_ID;
use crate::providers::{Endpoint, Provider, SendError, UpstreamError, UpstreamRequest};
use crate::wire::body::Body;

/// Request headers never forwarded upstream: hop-by-hop headers (RFC 9110 §7.6.1), the
/// client's own credentials (whatever the header a provider kind reads them from),
/// sluice's own headers, and `accept-encoding` (the response must stay readable by
/// sluice; providers' answers are small).
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
    "x-api-key",
    "api-key",
    "accept-encoding",
];

/// Provider response headers passed back to the app: what describes the body, and the
/// rate-limit and request-id headers apps and SDKs act on. Every other header a provider
/// sends (cookies, an echo of the key it received, its routing and account details,
/// hop-by-hop headers) stays with sluice.
const ALLOWED_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "cache-control",
    "retry-after",
    "retry-after-ms",
    "request-id",
    "apim-request-id",
    "openai-processing-ms",
    "openai-version",
];
/// Header families passed back too (`x-ratelimit-remaining-tokens`, …).
const ALLOWED_RESPONSE_PREFIXES: &[&str] = &["x-ratelimit-", "anthropic-ratelimit-"];

/// What is the same for every attempt of one request.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub endpoint: Endpoint,
    /// The client's query string, passed through.
    pub query: Option<&'a str>,
    /// Whether the app asked for a stream.
    pub stream: bool,
    pub request_id: &'a HeaderValue,
    /// sluice asked the provider for usage the app did not ask for: remove it from the stream.
    pub strip_usage: bool,
    /// A guardrail may block this (non-streamed) answer: read it whole and check it before
    /// anything is sent.
    pub hold: bool,
}

/// A failure before anything was sent to the client.
pub enum Failure {
    /// The provider could not be reached, timed out, or broke before its first event.
    Error(GatewayError),
    /// The provider answered with a 5xx status (the response, unread).
    Status(Response<Body>),
}

impl Failure {
    /// The response to send when there is nothing left to try: an error, or the
    /// provider's own 5xx passed through.
    pub fn into_result(self) -> Result<Response<Body>, GatewayError> {
        match self {
            Failure::Error(e) => Err(e),
            Failure::Status(resp) => Ok(resp),
        }
    }

    /// The outcome this failure counts as.
    pub fn outcome(&self) -> Outcome {
        match self {
            Failure::Error(e) => e.outcome(),
            Failure::Status(_) => Outcome::UpstreamError,
        }
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            Failure::Error(e) => e.to_string(),
            Failure::Status(resp) => format!("status {}", resp.status()),
        }
    }
}

/// Send `body` to `provider` and prepare the response. `Err` only for failures before
/// the first byte: after that, the response streams and breaks are reported in-band.
/// The time spent waiting for the provider is added to `record`, which moves into the
/// response body when there is one.
pub async fn send(
    provider: &Arc<Provider>,
    model: &str,
    call: &Call<'_>,
    mut headers: HeaderMap,
    body: Bytes,
    record: &mut Recorder,
) -> Result<Response<Body>, Failure> {
    headers.insert(X_REQUEST_ID.clone(), call.request_id.clone());
    let upstream = UpstreamRequest { endpoint: call.endpoint, model, query: call.query, headers, body };
    let waiting = Instant::now();
    let resp = provider.send(upstream).await;
    record.waited(waiting);
    let resp = resp.map_err(|error| {
        Failure::Error(match error {
            SendError::Upstream(error) => upstream_error(provider, error),
            SendError::Refused { param, message } => GatewayError::Refused { param, message },
            SendError::Untranslatable(reason) => GatewayError::Untranslatable(reason),
        })
    })?;
    if resp.status().is_server_error() {
        return Err(Failure::Status(allowed_headers_only(resp)));
    }
    respond(resp, Arc::clone(provider), call, record).await.map_err(Failure::Error)
}

/// The client's headers minus those that must not travel upstream, removed in place.
pub fn forwarded_headers(mut headers: HeaderMap) -> HeaderMap {
    for name in connection_listed(&headers) {
        headers.remove(name);
    }
    for name in DROPPED_REQUEST_HEADERS {
        headers.remove(*name);
    }
    if headers.keys().any(|k| k.as_str().starts_with("x-sluice-")) {
        let ours: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().starts_with("x-sluice-")).cloned().collect();
        for name in ours {
            headers.remove(name);
        }
    }
    headers
}

/// The headers a `Connection` header names (they are hop-by-hop too).
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    if !headers.contains_key(header::CONNECTION) {
        return Vec::new();
    }
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Whether a provider's response header may reach the app.
fn allowed(name: &HeaderName) -> bool {
    let name = name.as_str();
    ALLOWED_RESPONSE_HEADERS.contains(&name) || ALLOWED_RESPONSE_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The response with only the provider headers the app may see.
fn allowed_headers_only(mut resp: Response<Body>) -> Response<Body> {
    let headers = resp.headers_mut();
    if headers.keys().any(|k| !allowed(k)) {
        let dropped: Vec<HeaderName> = headers.keys().filter(|k| !allowed(k)).cloned().collect();
        for name in dropped {
            headers.remove(name);
        }
    }
    resp
}

/// Pass the upstream response back, streaming its body.
async fn respond(
    resp: Response<Body>,
    provider: Arc<Provider>,
    call: &Call<'_>,
    record: &mut Recorder,
) -> Result<Response<Body>, GatewayError> {
    let (parts, mut inner) = allowed_headers_only(resp).into_parts();
    let content_type = parts.headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes).unwrap_or_default();
    let sse = content_type.starts_with(b"text/event-stream");
    let first = if call.stream && sse && parts.status.is_success() {
        let waiting = Instant::now();
        let first = first_event(&mut inner, provider.timeouts.first_byte).await;
        record.waited(waiting);
        Some(Frame::data(first.map_err(|e| upstream_error(&provider, e))?))
    } else {
        None
    };
    let json = content_type.starts_with(b"application/json");
    if call.hold && !sse && json && parts.status.is_success() {
        let waiting = Instant::now();
        let whole = crate::providers::read_body(inner, provider.timeouts.idle).await;
        record.waited(waiting);
        let whole = whole.map_err(|e| upstream_error(&provider, e))?;
        if let Some(guardrail) = record.quality_mut().and_then(|q| q.check_whole(&whole)) {
            return Err(GatewayError::GuardrailBlocked(guardrail.to_string()));
        }
        inner = crate::wire::body::full(whole);
    }
    let reading = if sse && call.endpoint == Endpoint::Responses {
        Reading::Sse(Tap::responses())
    } else if sse {
        Reading::Sse(Tap::new(call.strip_usage))
    } else if json && parts.status.is_success() {
        Reading::Json { frames: Vec::new(), len: 0 }
    } else {
        Reading::Opaque
    };
    let body = Forward::new(inner, first, provider, reading, record.hand_off(parts.status), parts.status);
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}

fn upstream_error(provider: &Provider, error: UpstreamError) -> GatewayError {
    GatewayError::Upstream { provider: provider.name.clone(), error }
}
