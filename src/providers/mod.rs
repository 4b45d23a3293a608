//! Upstream providers: where a rewritten request goes and how.
//!
//! A [`Provider`] is built once per snapshot from its config: the base URL split into
//! parts, the authorization header precomputed (and marked sensitive), and one connection
//! pool (`pool`: hyper's HTTP/1.1 and HTTP/2 connections dialled with hyper-rustls, webpki
//! roots, HTTP/2 by ALPN) per data-plane worker thread, so that an upstream connection is
//! only ever used by the thread that opened it.
//!
//! Each kind implements the one interface of `dialect` in its own module — `openai`
//! (any OpenAI-compatible server, with quirk switches), `azure` (Azure's URL forms and
//! `api-key`; answers normalised), `anthropic` (the Messages API, translated both ways) and
//! `mock` (the fake provider, called in-process) — and is registered in `kind`: adding a
//! kind is one module and one line there (and its name in `config::ProviderKind`). Whatever the
//! kind, what [`Provider::send`] returns is in OpenAI's shape: the proxy never sees a
//! provider's own vocabulary. Providers know nothing about targeting.

pub mod anthropic;
pub mod azure;
mod dialect;
mod error;
mod mock;
pub mod openai;
mod pool;
mod rewrite;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use crate::wire::{AzureUrl, Endpoint};
pub use error::{SendError, UpstreamError};

use crate::config::{ProviderConfig, ProviderKind, Timeouts, UpstreamTimeouts};
use crate::wire::body::Body;
use crate::worker::PerWorker;
use dialect::{Answer, Dialect, Head, Kind, Prepared, Reply, Target};
use pool::{Dial, Outgoing, Pool};
use sluice_mock::MockSettings;

/// Every provider kind, by its config name: the one place a new kind is registered (its
/// dialect lives in its own module).
fn kind(cfg: &ProviderConfig) -> Result<Kind, String> {
    match cfg.kind {
        ProviderKind::Openai => openai::build(cfg),
        ProviderKind::AzureOpenai => azure::build(cfg),
        ProviderKind::Anthropic => anthropic::build(cfg),
        ProviderKind::Mock => mock::build(cfg),
    }
}

/// A pooled HTTP and HTTPS client for sluice's own calls: the guard webhooks, `sluice ctl`.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A request ready to go upstream: the body is already rewritten.
pub struct UpstreamRequest<'a> {
    pub endpoint: Endpoint,
    /// The model as the provider knows it (Azure's deployment name).
    pub model: &'a str,
    /// The client's query string, passed through.
    pub query: Option<&'a str>,
    /// Headers to forward (already stripped of the client's credentials and hop-by-hop).
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One configured provider.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub timeouts: Timeouts,
    /// Model names advertised by `GET /v1/models` (as `provider/model`).
    pub models: Vec<String>,
    pub kind_name: ProviderKind,
    dialect: Box<dyn Dialect>,
    transport: Transport,
}

/// How a provider's requests travel.
enum Transport {
    Http(Box<HttpUpstream>),
    InProcess(Arc<MockSettings>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Http(h) => write!(f, "Http({}://{})", h.scheme, h.authority),
            Transport::InProcess(_) => f.write_str("InProcess"),
        }
    }
}

/// An HTTP provider: where to send, what to add.
struct HttpUpstream {
    scheme: Scheme,
    authority: Authority,
    /// Headers sluice adds: the provider's credentials (marked sensitive) and extras.
    added_headers: Vec<(HeaderName, HeaderValue)>,
    pools: PerWorker<Arc<Pool>>,
}

/// The largest provider answer read whole to translate or normalise it (error bodies and
/// non-streamed answers); a larger one is a protocol error.
const MAX_READ_BODY: usize = 16 << 20;

impl Provider {
    /// Build a provider from its (already validated) config.
    /// `workers` is the number of data-plane worker threads (one connection pool each).
    pub fn build(
        name: &str,
        cfg: &ProviderConfig,
        defaults: &UpstreamTimeouts,
        workers: usize,
    ) -> Result<Self, String> {
        let timeouts = cfg.timeouts.resolve(defaults);
        let Kind { dialect, target } = kind(cfg)?;
        let transport = match target {
            Target::Http { scheme, authority, headers } => {
                Transport::Http(Box::new(HttpUpstream::build(scheme, authority, headers, cfg, &timeouts, workers)?))
            }
            Target::InProcess(settings) => Transport::InProcess(Arc::new(settings)),
        };
        Ok(Provider {
            name: name.to_string(),
            timeouts,
            models: cfg.models.clone(),
            kind_name: cfg.kind,
            dialect,
            transport,
        })
    }

    /// Whether this provider serves `endpoint` (every kind but `anthropic` serves them all).
    pub fn serves(&self, endpoint: Endpoint) -> bool {
        self.dialect.serves(endpoint)
    }

    /// Send `req` and wait for the response head, within the first-byte timeout. A
    /// streamed body is returned unread (rewritten on the way when the kind needs it); an
    /// error or a non-streamed answer that needs translating is read whole first.
    pub async fn send(&self, req: UpstreamRequest<'_>) -> Result<Response<Body>, SendError> {
        if !self.serves(req.endpoint) {
            return Err(SendError::Refused {
                param: "model",
                message: format!(
                    "the provider `{}` ({}) does not serve {}",
                    self.name,
                    self.kind_name.as_str(),
                    req.endpoint.path()
                ),
            });
        }
        let prepared = self.dialect.prepare(req)?;
        match &self.transport {
            Transport::Http(http) => {
                let (request, reply) = http.request(prepared)?;
                let fut = http.pools.get().send(request);
                let resp = match tokio::time::timeout(self.timeouts.first_byte, fut).await {
                    Err(_) => return Err(UpstreamError::FirstByteTimeout.into()),
                    Ok(Err(e)) => return Err(e.into()),
                    Ok(Ok(resp)) => resp,
                };
                answer(resp, reply, &self.timeouts).await.map_err(SendError::from)
            }
            Transport::InProcess(settings) => {
                // The fake provider's answers are OpenAI's shape already, its injected
                // errors included: passed on as they come.
                let pq = prepared.path_and_query.as_str();
                let (path, query) = pq.split_once('?').map_or((pq, None), |(p, q)| (p, Some(q)));
                let mock_req = sluice_mock::MockRequest {
                    method: &Method::POST,
                    path,
                    query,
                    headers: &prepared.headers,
                    body: prepared.body,
                };
                let fut = sluice_mock::respond(settings, mock_req);
                tokio::time::timeout(self.timeouts.first_byte, fut)
                    .await
                    .map_err(|_| UpstreamError::FirstByteTimeout.into())
            }
        }
    }
}

impl HttpUpstream {
    fn build(
        scheme: Scheme,
        authority: Authority,
        mut added_headers: Vec<(HeaderName, HeaderValue)>,
        cfg: &ProviderConfig,
        timeouts: &Timeouts,
        workers: usize,
    ) -> Result<Self, String> {
        for (name, value) in &cfg.headers {
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name `{name}`"))?;
            let mut v =
                HeaderValue::from_str(value.expose()).map_err(|_| format!("invalid value for header `{name}`"))?;
            v.set_sensitive(true);
            added_headers.push((n, v));
        }
        let https = https_connector(Some(timeouts.connect), true);
        let dial = Dial::new(scheme.clone(), authority.clone())?;
        let pools = PerWorker::new(workers, |_| Arc::new(Pool::new(https.clone(), dial.clone())));
        Ok(HttpUpstream { scheme, authority, added_headers, pools })
    }

    /// The HTTP request for a prepared one, and what reading its answer needs.
    fn request(&self, prepared: Prepared) -> Result<(Outgoing, Box<dyn Reply>), SendError> {
        let Prepared { path_and_query, mut headers, body, translated, reply } = prepared;
        let path_and_query = PathAndQuery::try_from(path_and_query).map_err(|_| UpstreamError::InvalidRequest)?;
        let uri = Uri::from(path_and_query);
        for (name, value) in &self.added_headers {
            headers.insert(name.clone(), value.clone());
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        if translated {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        } else {
            headers.entry(CONTENT_TYPE).or_insert(HeaderValue::from_static("application/json"));
        }
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok((request, reply))
    }
}

/// The one HTTPS connector sluice's clients use (upstreams, guard webhooks, `sluice ctl`):
/// webpki roots, `http` allowed too, TCP_NODELAY, HTTP/2 by ALPN when `http2`.
pub fn https_connector(connect_timeout: Option<Duration>, http2: bool) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(connect_timeout);
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1();
    if http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.wrap_connector(http)
    }
}

/// A client with one pool, HTTP/1.1 only, for sluice's own calls (guard webhooks,
/// `sluice ctl`): built once, its connections reused.
pub fn https_client(connect_timeout: Duration) -> HttpsClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build(https_connector(Some(connect_timeout), false))
}

/// The provider's answer in OpenAI's shape.
async fn answer(
    resp: Response<Body>,
    reply: Box<dyn Reply>,
    timeouts: &Timeouts,
) -> Result<Response<Body>, UpstreamError> {
    let status = resp.status().as_u16();
    if resp.status().is_redirection() || matches!(status, 401 | 403 | 404) {
        // The gateway's key, model, deployment or URL is wrong: never the app's (and a
        // provider's 401 may quote the key it received). A redirect is not followed,
        // nor passed on. The body is not read.
        let (parts, _) = resp.into_parts();
        return Ok(json_response(parts, 502, &misconfigured(status)));
    }
    let sse = resp.headers().get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    match reply.answer(Head { status, sse }) {
        Answer::Pass => Ok(resp),
        Answer::Stream { rewriter, own_headers } => {
            let mut resp = rewrite(resp, rewriter);
            if own_headers {
                keep_headers(resp.headers_mut(), &[CONTENT_TYPE, CACHE_CONTROL]);
            }
            Ok(resp)
        }
        Answer::Whole(translate) => {
            let (parts, body) = read_whole(resp, timeouts).await?;
            translate(parts, body)
        }
    }
}

fn rewrite(resp: Response<Body>, rewriter: Box<dyn rewrite::StreamRewrite>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, rewrite::Rewritten::new(body, rewriter).boxed_unsync())
}

/// Read a whole answer (an error, or a non-streamed answer to translate), each frame
/// within the idle timeout.
async fn read_whole(
    resp: Response<Body>,
    timeouts: &Timeouts,
) -> Result<(http::response::Parts, Bytes), UpstreamError> {
    let (parts, body) = resp.into_parts();
    Ok((parts, read_body(body, timeouts.idle).await?))
}

/// A whole response body of at most 16 MiB (a larger one is a protocol error), each frame
/// within `idle`.
pub async fn read_body(mut body: Body, idle: Duration) -> Result<Bytes, UpstreamError> {
    let mut buf = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(UpstreamError::IdleTimeout),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(_))) => return Err(UpstreamError::StreamBroken),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > MAX_READ_BODY {
                        return Err(UpstreamError::Protocol);
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
}

/// A JSON answer replacing a provider's own: only `retry-after` of its headers is kept.
fn json_response(mut parts: http::response::Parts, status: u16, json: &serde_json::Value) -> Response<Body> {
    keep_headers(&mut parts.headers, &[RETRY_AFTER]);
    parts.status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    parts.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, crate::wire::body::full(json.to_string()))
}

/// The error for a provider's 401 / 403 / 404 or redirect, whatever its kind: the gateway's
/// configuration is wrong (its key, model, deployment or URL), which the app must never
/// take for its own bad key.
fn misconfigured(status: u16) -> serde_json::Value {
    serde_json::json!({"error": {
        "message": format!("the provider answered {status}: check this provider's key, model and URL in the gateway's config"),
        "type": "upstream_error", "param": null, "code": "upstream_misconfigured"}})
}

/// Remove every header but `keep` (a provider's own headers say nothing the app understands).
fn keep_headers(headers: &mut HeaderMap, keep: &[HeaderName]) {
    let drop: Vec<HeaderName> = headers.keys().filter(|k| !keep.contains(k)).cloned().collect();
    for name in drop {
        headers.remove(name);
    }
}
