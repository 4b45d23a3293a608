//! Upstream providers: where a rewritten request goes and how.
//!
//! A [`Provider`] is built once per snapshot from its config: the base URL split into
//! parts, the authorization header precomputed (and marked sensitive), and one pooled
//! hyper-util client with hyper-rustls (webpki roots, HTTP/1.1 and HTTP/2 by ALPN) per
//! data-plane worker thread, so that an upstream connection is only ever used by the thread
//! that opened it.
//! Kinds: `openai` (any OpenAI-compatible server) and `mock` (the built-in fake, called
//! in-process). Providers know nothing about targeting.

pub mod anthropic;
pub mod azure;
mod error;
pub mod openai;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use error::UpstreamError;

use crate::body::Body;
use crate::config::{ProviderConfig, ProviderKind, Timeouts, UpstreamTimeouts};
use crate::mock::{self, MockSettings};
use crate::worker::PerWorker;

/// The pooled upstream HTTP client.
type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How long an idle upstream connection stays in the pool. Providers close idle
/// connections after about a minute or more; reusing one saves a TLS handshake.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// An OpenAI API endpoint sluice forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Endpoint {
    /// The path after the provider's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
        }
    }
}

/// A request ready to go upstream: the body is already rewritten.
pub struct UpstreamRequest<'a> {
    pub endpoint: Endpoint,
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

/// An HTTP provider: where to send, what to add.
struct HttpUpstream {
    scheme: Scheme,
    authority: Authority,
    /// Base path without a trailing slash, e.g. `/v1`.
    base_path: String,
    /// Headers sluice adds: the provider's credentials (marked sensitive) and extras.
    added_headers: Vec<(HeaderName, HeaderValue)>,
    clients: PerWorker<HttpClient>,
}

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
            ProviderKind::Openai => Kind::Http(Box::new(HttpUpstream::build(cfg, &timeouts, workers)?)),
        };
        Ok(Provider { name: name.to_string(), timeouts, models: cfg.models.clone(), kind })
    }

    /// Send `req` for `model`'s provider and wait for the response head, within the
    /// first-byte timeout. The body is returned unread.
    pub async fn send(&self, req: UpstreamRequest<'_>) -> Result<Response<Body>, UpstreamError> {
        match &self.kind {
            Kind::Http(http) => {
                let request = http.request(req)?;
                let fut = http.clients.get().request(request);
                match tokio::time::timeout(self.timeouts.first_byte, fut).await {
                    Err(_) => Err(UpstreamError::FirstByteTimeout),
                    Ok(Err(e)) => Err(UpstreamError::from_client(&e)),
                    Ok(Ok(resp)) => Ok(resp.map(|b| b.map_err(Into::into).boxed_unsync())),
                }
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
                tokio::time::timeout(self.timeouts.first_byte, fut).await.map_err(|_| UpstreamError::FirstByteTimeout)
            }
        }
    }
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
        let url = cfg.base_url.as_deref().ok_or("an HTTP provider needs `base_url`")?;
        let uri: Uri = url.parse().map_err(|e| format!("invalid base_url: {e}"))?;
        let parts = uri.into_parts();
        let scheme = parts.scheme.ok_or("base_url needs a scheme")?;
        let authority = parts.authority.ok_or("base_url needs a host")?;
        let base_path = parts.path_and_query.map(|p| p.path().trim_end_matches('/').to_string()).unwrap_or_default();

        let mut added_headers = Vec::new();
        if let Some(key) = cfg.api_key.as_ref().filter(|k| !k.is_empty()) {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                .map_err(|_| "api_key is not a valid header value")?;
            v.set_sensitive(true);
            added_headers.push((AUTHORIZATION, v));
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
        Ok(HttpUpstream { scheme, authority, base_path, added_headers, clients })
    }

    fn request(&self, req: UpstreamRequest<'_>) -> Result<Request<Full<Bytes>>, UpstreamError> {
        let path = req.endpoint.path();
        let mut pq = String::with_capacity(self.base_path.len() + path.len() + 1 + req.query.map_or(0, str::len));
        pq.push_str(&self.base_path);
        pq.push_str(path);
        if let Some(q) = req.query {
            pq.push('?');
            pq.push_str(q);
        }
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
        headers.insert(CONTENT_LENGTH, HeaderValue::from(req.body.len()));
        headers.entry(CONTENT_TYPE).or_insert(HeaderValue::from_static("application/json"));
        let mut request = Request::new(Full::new(req.body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }
}
