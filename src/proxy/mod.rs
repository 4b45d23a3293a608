//! The data plane: one request through the phases of ARCHITECTURE.md ("Request phases",
//! 1–11; this module runs 1–4 and 10, the targeted path 5–7, `upstream` 8, `stream` 9,
//! `record` 11).
//!
//! [`handle`] is the outer handler: it stamps the request id, loads the snapshot once,
//! runs the inner handler and turns any [`GatewayError`] into the OpenAI-shaped error
//! response — the only place that happens. The inner handler routes the path,
//! authenticates the gateway key (`authenticate`), reads the body within its limits
//! (`read_body`), parses the top-level members ([`request::JsonBody`]) and resolves
//! `model`: a routing flag goes down the targeted path (`targeted`), anything else is
//! passed through with only `model` rewritten; both send through `upstream` and forward
//! the answer with [`stream::Forward`].

pub mod context;
pub mod error;
pub mod feedback;
pub mod ofrep;
mod peek;
pub mod record;
pub mod track;
pub use crate::wire::json_body as request;
pub mod sse;
pub mod stream;
mod targeted;
mod upstream;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

pub use error::{GatewayError, Outcome};

use crate::auth::Client;
use crate::providers::Endpoint;
use crate::snapshot::Snapshot;
use crate::wire::body::{self, Body};
use record::{AccessLog, Recorder};
use request::JsonBody;

/// The header carrying the request id, accepted from the client or generated.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// sluice's own time and the provider's, on every response (W3C Server Timing).
pub static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// Serve one data-plane request. Never fails: errors become OpenAI-shaped responses.
pub async fn handle(snapshot: Arc<Snapshot>, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let (request_id, generated_id) = request_id(req.headers());
    let log = snapshot.access_log.then(|| {
        Box::new(AccessLog {
            request_id: request_id.clone(),
            generated_id,
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            client: None,
            content: None,
        })
    });
    let mut record = Recorder::new(Arc::clone(&snapshot.unrouted), start, log);

    // Boxed: the routing future is large (targeting, rewriting, the upstream call) and only
    // lives until the response head; unboxed, it would sit in the connection's task (an
    // HTTP/2 stream's) for as long as the response streams.
    let result = Box::pin(route(&snapshot, req, &request_id, &mut record)).await;
    let (mut resp, outcome) = match result {
        Ok(resp) => {
            let outcome = Recorder::outcome_of(resp.status());
            (resp, outcome)
        }
        Err(e) => {
            let outcome = e.outcome();
            if outcome != Outcome::ClientError {
                tracing::warn!(request_id = request_id.to_str().unwrap_or("-"), error = %e, "request failed");
            }
            (e.into_response(), outcome)
        }
    };
    resp.headers_mut().insert(SERVER_TIMING.clone(), record.server_timing());
    // Unless a provider's body carries the record on, the request ends here.
    record.finish(outcome, resp.status());
    // A request id sluice made up gives way to the response token, when there is one.
    let request_id = match resp.headers().get(&targeted::X_SLUICE_TOKEN) {
        Some(token) if generated_id => token.clone(),
        _ => request_id,
    };
    resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
    resp
}

/// The client's `x-request-id` when it is sane (1–128 visible ASCII), else a new one
/// (and `true`).
fn request_id(headers: &HeaderMap) -> (HeaderValue, bool) {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return (v.clone(), false);
        }
    }
    // 32 hex digits, written in place: the header value is the one allocation.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    let n = fastrand::u128(..);
    for (i, c) in id.iter_mut().enumerate() {
        *c = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    (HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0")), true)
}

async fn route(
    snapshot: &Snapshot,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    record: &mut Recorder,
) -> Result<Response<Body>, GatewayError> {
    let endpoint = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => {
            record.skip();
            return Ok(body::text(StatusCode::OK, "ok"));
        }
        _ if snapshot.held => return Err(GatewayError::NotReady),
        (_, p) if ofrep::is_ofrep(p) => {
            record.skip();
            return Ok(ofrep::handle(snapshot, req).await);
        }
        (&Method::POST, "/v1/chat/completions") => Endpoint::ChatCompletions,
        (&Method::POST, "/v1/completions") => Endpoint::Completions,
        (&Method::POST, "/v1/embeddings") => Endpoint::Embeddings,
        (&Method::POST, "/v1/responses") => Endpoint::Responses,
        (&Method::POST, "/v1/feedback") => {
            record.skip();
            return Ok(feedback::post(snapshot, req).await);
        }
        (&Method::POST, "/v1/track") => {
            record.skip();
            return track::track(snapshot, req).await;
        }
        (&Method::POST, p) if track::evaluate_path(p).is_some() => {
            record.skip();
            let flag = track::evaluate_path(p).unwrap_or_default().into_owned();
            return track::evaluate(snapshot, &flag, req).await;
        }
        (&Method::OPTIONS, "/v1/feedback") => {
            record.skip();
            return feedback::preflight(snapshot, req.headers());
        }
        (&Method::GET, "/v1/models") => {
            let client = authenticate(snapshot, req.headers())?;
            if !client.may_proxy() {
                return Err(GatewayError::KeyNotAllowed(client.name.clone()));
            }
            return Ok(body::json(StatusCode::OK, snapshot.models_json.clone()));
        }
        (
            m,
            p @ ("/v1/chat/completions"
            | "/v1/completions"
            | "/v1/embeddings"
            | "/v1/responses"
            | "/v1/models"
            | "/v1/feedback"
            | "/v1/track"),
        ) => return Err(GatewayError::MethodNotAllowed { method: m.to_string(), path: p.to_string() }),
        (m, p) => return Err(GatewayError::UnknownUrl { method: m.to_string(), path: truncate(p) }),
    };
    let client = authenticate(snapshot, req.headers())?;
    if !client.may_proxy() {
        return Err(GatewayError::KeyNotAllowed(client.name.clone()));
    }
    if let Some(log) = record.log_mut() {
        log.client = Some(Arc::from(client.name.as_str()));
    }
    forward(snapshot, endpoint, req, request_id, client, record).await
}

/// Step 1: the gateway key from `Authorization: Bearer <key>` (any case of `Bearer`).
fn authenticate<'s>(snapshot: &'s Snapshot, headers: &HeaderMap) -> Result<&'s Arc<Client>, GatewayError> {
    let value = headers.get(header::AUTHORIZATION).ok_or(GatewayError::MissingKey)?;
    let key = crate::auth::bearer(value.as_bytes()).ok_or(GatewayError::MissingKey)?;
    snapshot.clients.authenticate(key).ok_or(GatewayError::InvalidKey)
}

async fn forward(
    snapshot: &Snapshot,
    endpoint: Endpoint,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    client: &Client,
    record: &mut Recorder,
) -> Result<Response<Body>, GatewayError> {
    let (parts, incoming) = req.into_parts();
    let bytes = read_body(snapshot, &parts.headers, incoming).await?;
    let body = JsonBody::parse(&bytes)?;
    if snapshot.log_content {
        if let (Some(log), Some(messages)) = (record.log_mut(), body.get("messages").or_else(|| body.get("input"))) {
            log.content = Some(truncate_bytes(messages.get(), 4096));
        }
    }
    let model = body.model()?;
    let stream = body.stream()?;
    let usage_edit = if stream { usage_request(endpoint, &body) } else { None };
    let call = upstream::Call {
        endpoint,
        query: parts.uri.query(),
        stream,
        request_id,
        strip_usage: usage_edit.is_some(),
        hold: false,
    };
    if let Some(route) = snapshot.flag_route(&model) {
        if !route.endpoints.contains(&endpoint) {
            let message = format!("the flag `{}` is not served on /v1{}", truncate(&model), endpoint.path());
            return Err(GatewayError::Refused { param: "model", message });
        }
        let flag = targeted::Flag { route, key: &model, usage_edit: usage_edit.as_deref(), request: &bytes };
        return targeted::forward(snapshot, flag, parts.headers, &body, client, &call, record).await;
    }
    // Pass-through: `provider/model` or an alias, no targeting.
    let route = snapshot.route(&model).ok_or_else(|| GatewayError::ModelNotFound(truncate(&model)))?;
    record.route(route.metrics);
    let upstream_model = serde_json::to_string(route.model).map_err(|_| GatewayError::Internal)?;
    let mut edits = vec![("model", upstream_model.as_str())];
    if let Some(options) = &usage_edit {
        edits.push(("stream_options", options));
    }
    let rewritten = Bytes::from(body.rewrite(&edits));
    let headers = upstream::forwarded_headers(parts.headers);
    upstream::send(route.provider, route.model, &call, headers, rewritten, record)
        .await
        .or_else(upstream::Failure::into_result)
}

/// For a stream whose app did not ask for usage: the `stream_options` that asks the
/// provider for it (sluice needs the tokens; the tap removes them from what the app gets).
fn usage_request(endpoint: Endpoint, body: &JsonBody<'_>) -> Option<String> {
    // Embeddings are not streamed; a Responses stream always ends with its usage.
    if matches!(endpoint, Endpoint::Embeddings | Endpoint::Responses) {
        return None;
    }
    let mut options = match body.get("stream_options") {
        None => serde_json::Map::new(),
        Some(raw) => match serde_json::from_str::<Option<serde_json::Map<String, serde_json::Value>>>(raw.get()) {
            Ok(Some(map)) => map,
            Ok(None) => serde_json::Map::new(),
            // Not an object: the provider will say what is wrong with it.
            Err(_) => return None,
        },
    };
    if options.get("include_usage").and_then(serde_json::Value::as_bool) == Some(true) {
        return None;
    }
    options.insert("include_usage".to_string(), serde_json::Value::Bool(true));
    serde_json::to_string(&options).ok()
}

/// Step 2: the whole request body, refusing more than the limit or a slow sender.
async fn read_body(snapshot: &Snapshot, headers: &HeaderMap, incoming: Incoming) -> Result<Bytes, GatewayError> {
    read_body_within(snapshot.max_request_body, snapshot, headers, incoming).await
}

/// The whole request body, at most `limit` bytes, within `body_read_timeout`.
async fn read_body_within(
    limit: u64,
    snapshot: &Snapshot,
    headers: &HeaderMap,
    incoming: Incoming,
) -> Result<Bytes, GatewayError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let limited = Limited::new(incoming, usize::try_from(limit).unwrap_or(usize::MAX));
    match tokio::time::timeout(snapshot.body_read_timeout, limited.collect()).await {
        Err(_) => Err(GatewayError::BodyTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(GatewayError::BodyTooLarge { limit }),
        Ok(Err(_)) => Err(GatewayError::BodyRead),
    }
}

/// Logged request content, cut to at most `max` bytes (on a character boundary).
fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Request data echoed in an error is cut to a sane length.
fn truncate(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_request_id_is_32_lowercase_hex_digits_and_a_valid_one_is_kept() {
        let (a, generated) = request_id(&HeaderMap::new());
        let (b, _) = request_id(&HeaderMap::new());
        assert!(generated);
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)), "{a:?}");
        assert_ne!(a, b);
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("app-42"));
        assert_eq!(request_id(&headers), (HeaderValue::from_static("app-42"), false));
    }
}
