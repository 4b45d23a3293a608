//! Upstream providers: where a rewritten request goes and how.
//!
//! A [`Provider`] is built once per snapshot from its config: the base URL split into
//! parts, the authorization header precomputed (and marked sensitive), and one pooled
//! hyper-util client with hyper-rustls (webpki roots, HTTP/1.1 and HTTP/2 by ALPN) per
//! data-plane worker thread, so that an upstream connection is only ever used by the thread
//! that opened it.
//! Kinds: `openai` (any OpenAI-compatible server, with quirk switches), `azure_openai`
//! (Azure's URL forms and `api-key`; answers normalised), `anthropic` (the Messages API,
//! translated both ways) and `mock` (the built-in fake, called in-process). Whatever the
//! kind, what [`Provider::send`] returns is in OpenAI's shape: the proxy never sees a
//! provider's own vocabulary. Providers know nothing about targeting.

pub mod anthropic;
pub mod azure;
mod error;
pub mod openai;
mod rewrite;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use crate::wire::{AzureUrl, Endpoint};
pub use error::{SendError, UpstreamError};

use crate::body::Body;
use crate::config::{ProviderConfig, ProviderKind, Quirks, Timeouts, UpstreamTimeouts};
use crate::worker::PerWorker;
use sluice_mock::{self as mock, MockSettings};

/// The pooled upstream HTTP client.
type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How long an idle upstream connection stays in the pool. Providers close idle
/// connections after about a minute or more; reusing one saves a TLS handshake.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether a provider of `kind` serves `endpoint`.
pub fn serves(kind: ProviderKind, endpoint: Endpoint) -> bool {
    match kind {
        ProviderKind::Openai | ProviderKind::AzureOpenai | ProviderKind::Mock => true,
        ProviderKind::Anthropic => endpoint == Endpoint::ChatCompletions,
    }
}

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
    kind: Kind,
}

enum Kind {
    Http(Box<HttpUpstream>),
    Mock(Arc<MockSettings>),
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Http(h) => write!(f, "Http({}://{}{})", h.scheme, h.authority, h.base_path),
            Kind::Mock(_) => f.write_str("Mock"),
        }
    }
}

/// How an HTTP provider's requests and answers differ from OpenAI's.
enum Dialect {
    OpenAi(Quirks),
    Azure { url: AzureUrl, normalise: bool },
    Anthropic { max_tokens: Option<u64> },
}

/// An HTTP provider: where to send, what to add.
struct HttpUpstream {
    scheme: Scheme,
    authority: Authority,
    /// Base path without a trailing slash, e.g. `/v1`.
    base_path: String,
    dialect: Dialect,
    /// Headers sluice adds: the provider's credentials (marked sensitive) and extras.
    added_headers: Vec<(HeaderName, HeaderValue)>,
    clients: PerWorker<HttpClient>,
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
        let kind = match cfg.kind {
            ProviderKind::Mock => Kind::Mock(Arc::new(mock_settings(cfg))),
            _ => Kind::Http(Box::new(HttpUpstream::build(cfg, &timeouts, workers)?)),
        };
        Ok(Provider { name: name.to_string(), timeouts, models: cfg.models.clone(), kind_name: cfg.kind, kind })
    }

    /// Send `req` and wait for the response head, within the first-byte timeout. A
    /// streamed body is returned unread (rewritten on the way when the kind needs it); an
    /// error or a non-streamed answer that needs translating is read whole first.
    pub async fn send(&self, req: UpstreamRequest<'_>) -> Result<Response<Body>, SendError> {
        if !serves(self.kind_name, req.endpoint) {
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
        match &self.kind {
            Kind::Http(http) => {
                let (request, reply) = http.request(req)?;
                let fut = http.clients.get().request(request);
                let resp = match tokio::time::timeout(self.timeouts.first_byte, fut).await {
                    Err(_) => return Err(UpstreamError::FirstByteTimeout.into()),
                    Ok(Err(e)) => return Err(UpstreamError::from_client(&e).into()),
                    Ok(Ok(resp)) => resp.map(boxed),
                };
                http.answer(resp, reply, &self.timeouts).await.map_err(SendError::from)
            }
            Kind::Mock(settings) => {
                let path = format!("/v1{}", req.endpoint.path());
                let mock_req = mock::MockRequest {
                    method: &Method::POST,
                    path: &path,
                    query: req.query,
                    headers: &req.headers,
                    body: req.body,
                };
                let fut = mock::respond(settings, mock_req);
                tokio::time::timeout(self.timeouts.first_byte, fut)
                    .await
                    .map_err(|_| UpstreamError::FirstByteTimeout.into())
            }
        }
    }
}

/// What translating the answer back needs to know about the request.
enum Reply {
    /// Passed through as it is.
    Plain,
    /// A stream whose tool calls may lack `index`.
    FillToolIndex,
    Azure {
        normalise: bool,
    },
    Anthropic(anthropic::Reply),
}

fn mock_settings(cfg: &ProviderConfig) -> MockSettings {
    let mut s = MockSettings::default();
    if let Some(m) = &cfg.mock {
        if let Some(v) = m.latency {
            s.latency = v.0;
        }
        if let Some(v) = m.error_rate {
            s.error_rate = v;
        }
        if let Some(v) = m.error_status {
            s.error_status = v;
        }
        if let Some(v) = m.chunks {
            s.chunks = v;
        }
        if let Some(v) = m.chunk_delay {
            s.chunk_delay = v.0;
        }
    }
    s
}

impl HttpUpstream {
    fn build(cfg: &ProviderConfig, timeouts: &Timeouts, workers: usize) -> Result<Self, String> {
        let (scheme, authority, base_path, dialect) = match cfg.kind {
            ProviderKind::AzureOpenai => {
                let url = cfg.base_url.as_deref().ok_or("an `azure_openai` provider needs `base_url`")?;
                let url = AzureUrl::parse(url, cfg.api_version.as_deref())?;
                let (scheme, authority) = (url.scheme.clone(), url.authority.clone());
                (scheme, authority, String::new(), Dialect::Azure { url, normalise: cfg.normalise.unwrap_or(true) })
            }
            kind => {
                let url = match kind {
                    ProviderKind::Anthropic => cfg.base_url.as_deref().unwrap_or(ANTHROPIC_BASE_URL),
                    _ => cfg.base_url.as_deref().ok_or("an HTTP provider needs `base_url`")?,
                };
                let uri: Uri = url.parse().map_err(|e| format!("invalid base_url: {e}"))?;
                let parts = uri.into_parts();
                let scheme = parts.scheme.ok_or("base_url needs a scheme")?;
                let authority = parts.authority.ok_or("base_url needs a host")?;
                let base_path =
                    parts.path_and_query.map(|p| p.path().trim_end_matches('/').to_string()).unwrap_or_default();
                let dialect = match kind {
                    ProviderKind::Anthropic => Dialect::Anthropic { max_tokens: cfg.max_tokens },
                    _ => Dialect::OpenAi(cfg.quirks.clone()),
                };
                (scheme, authority, base_path, dialect)
            }
        };

        let mut added_headers = Vec::new();
        if let Some(key) = cfg.api_key.as_ref().filter(|k| !k.is_empty()) {
            let (name, value) = match cfg.kind {
                ProviderKind::AzureOpenai => (HeaderName::from_static("api-key"), key.expose().to_string()),
                ProviderKind::Anthropic => (HeaderName::from_static("x-api-key"), key.expose().to_string()),
                _ => (AUTHORIZATION, format!("Bearer {}", key.expose())),
            };
            let mut v = HeaderValue::from_str(&value).map_err(|_| "api_key is not a valid header value")?;
            v.set_sensitive(true);
            added_headers.push((name, v));
        }
        if cfg.kind == ProviderKind::Anthropic {
            let version = cfg.anthropic_version.as_deref().unwrap_or(ANTHROPIC_VERSION);
            let v = HeaderValue::from_str(version).map_err(|_| "anthropic_version is not a valid header value")?;
            added_headers.push((HeaderName::from_static("anthropic-version"), v));
        }
        for (name, value) in &cfg.headers {
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name `{name}`"))?;
            let mut v =
                HeaderValue::from_str(value.expose()).map_err(|_| format!("invalid value for header `{name}`"))?;
            v.set_sensitive(true);
            added_headers.push((n, v));
        }

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeouts.connect));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let clients = PerWorker::new(workers, |_| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .build(https.clone())
        });
        Ok(HttpUpstream { scheme, authority, base_path, dialect, added_headers, clients })
    }

    /// The HTTP request for `req` in this provider's dialect, and what reading the answer needs.
    fn request(&self, req: UpstreamRequest<'_>) -> Result<(Request<Full<Bytes>>, Reply), SendError> {
        let (pq, body, reply) = match &self.dialect {
            Dialect::OpenAi(quirks) => {
                let pq = join_path(&self.base_path, req.endpoint.path(), req.query);
                let body = apply_quirks(quirks, req.body);
                let reply = if quirks.fill_tool_call_index { Reply::FillToolIndex } else { Reply::Plain };
                (pq, body, reply)
            }
            Dialect::Azure { url, normalise } => {
                let pq = url.path_and_query(req.endpoint, req.model, req.query).ok_or_else(|| SendError::Refused {
                    param: "model",
                    message: format!("`{}` is not a valid Azure deployment name", req.model),
                })?;
                (pq, req.body, Reply::Azure { normalise: *normalise })
            }
            Dialect::Anthropic { max_tokens } => {
                // The body is the app's (sluice's edits are valid JSON): what this parser
                // cannot read is the app's problem, never the provider's.
                let openai: serde_json::Value =
                    serde_json::from_slice(&req.body).map_err(|e| SendError::Untranslatable(e.to_string()))?;
                let defaults = anthropic::request::Defaults { max_tokens: *max_tokens };
                let translated = anthropic::request::translate(&openai, defaults)
                    .map_err(|e| SendError::Refused { param: e.param, message: e.message })?;
                let body = serde_json::to_vec(&translated.body).map_err(|_| UpstreamError::InvalidRequest)?;
                let pq = join_path(&self.base_path, "/messages", req.query);
                (pq, Bytes::from(body), Reply::Anthropic(translated.reply))
            }
        };
        let path_and_query = PathAndQuery::try_from(pq).map_err(|_| UpstreamError::InvalidRequest)?;
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| UpstreamError::InvalidRequest)?;
        let mut headers = req.headers;
        for (name, value) in &self.added_headers {
            headers.insert(name.clone(), value.clone());
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        if matches!(self.dialect, Dialect::Anthropic { .. }) {
            // The body is sluice's own translation, whatever the app said it sent.
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

    /// The provider's answer in OpenAI's shape.
    async fn answer(
        &self,
        resp: Response<Body>,
        reply: Reply,
        timeouts: &Timeouts,
    ) -> Result<Response<Body>, UpstreamError> {
        let sse = resp.headers().get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let ok = resp.status().is_success();
        let status = resp.status().as_u16();
        if resp.status().is_redirection() || matches!(status, 401 | 403 | 404) {
            // The gateway's key, model, deployment or URL is wrong: never the app's (and a
            // provider's 401 may quote the key it received). A redirect is not followed,
            // nor passed on. The body is not read.
            let (parts, _) = resp.into_parts();
            return Ok(json_response(parts, 502, &misconfigured(status)));
        }
        match reply {
            Reply::Plain => Ok(resp),
            Reply::FillToolIndex if ok && sse => Ok(rewrite(resp, Box::new(openai::ToolIndexFiller::new()))),
            Reply::FillToolIndex => Ok(resp),
            Reply::Azure { normalise } => {
                if !ok {
                    if status != 400 {
                        return Ok(resp);
                    }
                    let (parts, body) = read_whole(resp, timeouts).await?;
                    return Ok(match azure::translate_error(parts.status.as_u16(), &body) {
                        Some((status, json)) => json_response(parts, status, &json),
                        None => Response::from_parts(parts, crate::body::full(body)),
                    });
                }
                if !normalise {
                    return Ok(resp);
                }
                if sse {
                    return Ok(rewrite(resp, Box::new(azure::StreamNormaliser::new())));
                }
                let (mut parts, body) = read_whole(resp, timeouts).await?;
                let body = azure::normalise_json(&body).map_or(body, Bytes::from);
                parts.headers.remove(CONTENT_LENGTH);
                Ok(Response::from_parts(parts, crate::body::full(body)))
            }
            Reply::Anthropic(reply) => {
                let created = unix_now();
                if ok && sse {
                    let mut resp = rewrite(resp, Box::new(anthropic::stream::Translator::new(&reply, created)));
                    keep_headers(resp.headers_mut(), &[CONTENT_TYPE, CACHE_CONTROL]);
                    return Ok(resp);
                }
                let (parts, body) = read_whole(resp, timeouts).await?;
                let status = parts.status.as_u16();
                if !ok {
                    let (to, json) = anthropic::errors::translate(status, &body);
                    return Ok(json_response(parts, to, &json));
                }
                let message: serde_json::Value = serde_json::from_slice(&body).map_err(|_| UpstreamError::Protocol)?;
                // JSON that is not a Messages answer (another API's, an error page's) would
                // translate to an empty one: it is the provider's failure.
                if !anthropic::response::is_message(&message) {
                    return Err(UpstreamError::Protocol);
                }
                let json = anthropic::response::translate(&message, &reply, created);
                Ok(json_response(parts, status, &json))
            }
        }
    }
}

/// Where Anthropic's API is when a provider names no `base_url`.
const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com/v1";
/// The `anthropic-version` sent when a provider names none.
const ANTHROPIC_VERSION: &str = "2023-06-01";

fn join_path(base: &str, path: &str, query: Option<&str>) -> String {
    let mut pq = String::with_capacity(base.len() + path.len() + 1 + query.map_or(0, str::len));
    pq.push_str(base);
    pq.push_str(path);
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    pq
}

/// The body without what this server refuses. Only parsed when there is something to drop.
fn apply_quirks(quirks: &Quirks, body: Bytes) -> Bytes {
    if quirks.stream_options && quirks.drop_params.is_empty() {
        return body;
    }
    let dropped = quirks.drop_params.iter().map(String::as_str);
    let dropped: Vec<&str> =
        if quirks.stream_options { dropped.collect() } else { dropped.chain(["stream_options"]).collect() };
    let mut body = body;
    for key in dropped {
        let Ok(parsed) = crate::wire::JsonBody::parse(&body) else { return body };
        if let Some(without) = parsed.without(key) {
            body = Bytes::from(without);
        }
    }
    body
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
    let (parts, mut body) = resp.into_parts();
    let mut buf = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout(timeouts.idle, body.frame()).await {
            Err(_) => return Err(UpstreamError::IdleTimeout),
            Ok(None) => return Ok((parts, buf.freeze())),
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
    Response::from_parts(parts, crate::body::full(json.to_string()))
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

/// The upstream body as sluice's body type (a plain function: a closure here trips the
/// `Send` check of the request future).
fn boxed(body: hyper::body::Incoming) -> Body {
    body.map_err(|e| -> crate::body::BoxError { Box::new(e) }).boxed_unsync()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
