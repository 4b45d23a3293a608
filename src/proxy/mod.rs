//! The data plane: one request through the pipeline of DESIGN §1.
//!
//! [`handle`] is the outer handler: it stamps the request id, loads the snapshot once,
//! runs the inner handler and turns any [`GatewayError`] into the OpenAI-shaped error
//! response — the only place that happens. The inner handler ([`forward`]) runs the
//! steps in order:
//!
//! | step | what | where |
//! |---|---|---|
//! | 1 | authenticate the gateway key | [`authenticate`] |
//! | 2 | read the body within the size and time limits | [`read_body`] |
//! | 3 | parse the top-level fields (`model`, `stream`) | [`request::JsonBody`] |
//! | 4 | resolve `model` to a route (targeting slots in here) | `Snapshot::route` |
//! | 5 | rewrite the body (`model` → the provider's name) | `JsonBody::rewrite` |
//! | 6 | send upstream, wait for the head within the first-byte timeout | `Provider::send` |
//! | 7 | for a stream, peek the first event before committing the status | [`peek_first`] |
//! | 8 | forward the body frame by frame | [`stream::Forward`] |

pub mod error;
pub mod request;
pub mod stream;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

pub use error::{GatewayError, Outcome};

use crate::auth::Client;
use crate::body::{self, Body};
use crate::providers::{Endpoint, Provider, UpstreamError, UpstreamRequest};
use crate::snapshot::Snapshot;
use request::JsonBody;
use stream::Forward;

/// The header carrying the request id, accepted from the client or generated.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request headers never forwarded upstream: hop-by-hop headers (RFC 9110 §7.6.1), the
/// client's own credentials, sluice's own headers, and `accept-encoding` (the response
/// must stay readable by sluice; providers' answers are small).
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
    "accept-encoding",
];

/// Response headers never passed back: hop-by-hop only.
const DROPPED_RESPONSE_HEADERS: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// Serve one data-plane request. Never fails: errors become OpenAI-shaped responses.
pub async fn handle(snapshot: Arc<Snapshot>, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let request_id = request_id(req.headers());
    let method = req.method().clone();
    let path_for_log = snapshot.access_log.then(|| req.uri().path().to_string());
    let mut client_name = None;

    let result = route(&snapshot, req, &request_id, &mut client_name).await;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            if e.outcome() != Outcome::ClientError {
                tracing::warn!(request_id = ?request_id, error = %e, "request failed");
            }
            e.into_response()
        }
    };
    if let Some(path) = path_for_log {
        tracing::info!(
            request_id = ?request_id,
            %method,
            path,
            status = resp.status().as_u16(),
            client = client_name.as_deref().unwrap_or("-"),
            head_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
            "request"
        );
    }
    resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
    resp
}

/// The client's `x-request-id` when it is sane (1–128 visible ASCII), else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("0"))
}

async fn route(
    snapshot: &Snapshot,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    client_name: &mut Option<String>,
) -> Result<Response<Body>, GatewayError> {
    let endpoint = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => return Ok(text(StatusCode::OK, "ok")),
        (&Method::POST, "/v1/chat/completions") => Endpoint::ChatCompletions,
        (&Method::POST, "/v1/completions") => Endpoint::Completions,
        (&Method::POST, "/v1/embeddings") => Endpoint::Embeddings,
        (&Method::GET, "/v1/models") => {
            authenticate(snapshot, req.headers())?;
            return Ok(json(StatusCode::OK, snapshot.models_json.clone()));
        }
        (m, p @ ("/v1/chat/completions" | "/v1/completions" | "/v1/embeddings" | "/v1/models")) => {
            return Err(GatewayError::MethodNotAllowed { method: m.to_string(), path: p.to_string() })
        }
        (m, p) => return Err(GatewayError::UnknownUrl { method: m.to_string(), path: truncate(p) }),
    };
    let client = authenticate(snapshot, req.headers())?;
    if snapshot.access_log {
        *client_name = Some(client.name.clone());
    }
    forward(snapshot, endpoint, req, request_id).await
}

/// Step 1: the gateway key from `Authorization: Bearer <key>`.
fn authenticate<'s>(snapshot: &'s Snapshot, headers: &HeaderMap) -> Result<&'s Arc<Client>, GatewayError> {
    let value = headers.get(header::AUTHORIZATION).ok_or(GatewayError::MissingKey)?;
    let bytes = value.as_bytes();
    let key =
        bytes.strip_prefix(b"Bearer ").or_else(|| bytes.strip_prefix(b"bearer ")).ok_or(GatewayError::MissingKey)?;
    snapshot.clients.authenticate(key.trim_ascii()).ok_or(GatewayError::InvalidKey)
}

async fn forward(
    snapshot: &Snapshot,
    endpoint: Endpoint,
    req: Request<Incoming>,
    request_id: &HeaderValue,
) -> Result<Response<Body>, GatewayError> {
    let (parts, incoming) = req.into_parts();
    let bytes = read_body(snapshot, &parts.headers, incoming).await?;
    let body = JsonBody::parse(&bytes)?;
    let model = body.model()?;
    let stream = body.stream()?;
    let route = snapshot.route(&model).ok_or_else(|| GatewayError::ModelNotFound(truncate(&model)))?;
    let upstream_model = serde_json::to_string(route.model).map_err(|_| GatewayError::Internal)?;
    let rewritten = Bytes::from(body.rewrite(&[("model", &upstream_model)]));

    let provider = Arc::clone(route.provider);
    let mut headers = forwarded_headers(parts.headers);
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    let upstream = UpstreamRequest { endpoint, query: parts.uri.query(), headers, body: rewritten };
    let resp = provider.send(upstream).await.map_err(|error| upstream_error(&provider, error))?;
    respond(resp, provider, stream).await
}

/// Step 2: the whole request body, refusing more than the limit or a slow sender.
async fn read_body(snapshot: &Snapshot, headers: &HeaderMap, incoming: Incoming) -> Result<Bytes, GatewayError> {
    let limit = snapshot.max_request_body;
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

/// The client's headers minus those that must not travel upstream.
fn forwarded_headers(mut headers: HeaderMap) -> HeaderMap {
    strip_connection_listed(&mut headers);
    for name in DROPPED_REQUEST_HEADERS {
        headers.remove(*name);
    }
    let sluice: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().starts_with("x-sluice-")).cloned().collect();
    for name in sluice {
        headers.remove(name);
    }
    headers
}

/// Remove the headers a `Connection` header names (they are hop-by-hop too).
fn strip_connection_listed(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
}

/// Steps 7–8: pass the upstream response back, streaming its body.
async fn respond(resp: Response<Body>, provider: Arc<Provider>, stream: bool) -> Result<Response<Body>, GatewayError> {
    let (mut parts, mut inner) = resp.into_parts();
    strip_connection_listed(&mut parts.headers);
    for name in DROPPED_RESPONSE_HEADERS {
        parts.headers.remove(*name);
    }
    let sse = parts.headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let first =
        if stream && sse && parts.status.is_success() { Some(peek_first(&mut inner, &provider).await?) } else { None };
    let body = Forward::new(inner, first.flatten(), provider, sse);
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}

/// Step 7: wait for a stream's first frame, so a provider that fails before its first
/// event still gets a proper error status instead of a 200 with a broken stream.
async fn peek_first(inner: &mut Body, provider: &Provider) -> Result<Option<Frame<Bytes>>, GatewayError> {
    let first = tokio::time::timeout(provider.timeouts.first_byte, inner.frame()).await;
    match first {
        Err(_) => Err(upstream_error(provider, UpstreamError::FirstByteTimeout)),
        Ok(Some(Err(_))) => Err(upstream_error(provider, UpstreamError::StreamBroken)),
        Ok(frame) => Ok(frame.and_then(Result::ok)),
    }
}

fn upstream_error(provider: &Provider, error: UpstreamError) -> GatewayError {
    GatewayError::Upstream { provider: provider.name.clone(), error }
}

fn text(status: StatusCode, s: &'static str) -> Response<Body> {
    let mut resp = Response::new(body::full(Bytes::from_static(s.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

fn json(status: StatusCode, bytes: Bytes) -> Response<Body> {
    let mut resp = Response::new(body::full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Request data echoed in an error is cut to a sane length.
fn truncate(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
