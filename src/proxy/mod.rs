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

pub mod context;
pub mod error;
pub mod request;
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
use crate::body::{self, Body};
use crate::providers::Endpoint;
use crate::snapshot::Snapshot;
use request::JsonBody;

/// The header carrying the request id, accepted from the client or generated.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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
    forward(snapshot, endpoint, req, request_id, client).await
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
    client: &Client,
) -> Result<Response<Body>, GatewayError> {
    let (parts, incoming) = req.into_parts();
    let bytes = read_body(snapshot, &parts.headers, incoming).await?;
    let body = JsonBody::parse(&bytes)?;
    let model = body.model()?;
    let stream = body.stream()?;
    let call = upstream::Call { endpoint, query: parts.uri.query(), stream, request_id };
    if let Some(route) = snapshot.flag_route(&model) {
        return targeted::forward(snapshot, route, &model, parts.headers, &body, client, &call).await;
    }
    // Pass-through: `provider/model` or an alias, no targeting.
    let route = snapshot.route(&model).ok_or_else(|| GatewayError::ModelNotFound(truncate(&model)))?;
    let upstream_model = serde_json::to_string(route.model).map_err(|_| GatewayError::Internal)?;
    let rewritten = Bytes::from(body.rewrite(&[("model", &upstream_model)]));
    let headers = upstream::forwarded_headers(parts.headers);
    upstream::send(route.provider, &call, headers, rewritten).await.or_else(upstream::Failure::into_result)
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
