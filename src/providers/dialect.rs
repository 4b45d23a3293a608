//! The one interface every provider kind implements: how its API differs from OpenAI's.
//!
//! A kind is a [`Dialect`] (built once per provider from its config by the kind's `build`,
//! registered in `super::kind`) plus where its requests go ([`Target`]: an HTTP base URL
//! with the kind's credential headers, or the fake provider in-process). Per request the
//! dialect prepares the path and body ([`Prepared`]) and returns a [`Reply`], which decides
//! from the answer's head how it comes back into OpenAI's shape ([`Answer`]). Dialects do
//! no I/O: sending, timeouts and reading bodies are `super`'s, the same for every kind.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::response::Parts;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Response, Uri};

use super::rewrite::StreamRewrite;
use super::{SendError, UpstreamError, UpstreamRequest};
use crate::wire::body::Body;
use crate::wire::Endpoint;

/// How one provider kind speaks.
pub trait Dialect: Send + Sync + std::fmt::Debug {
    /// Whether this kind serves `endpoint`; a request for one it does not is refused
    /// before anything is sent (and the snapshot never routes one there).
    fn serves(&self, endpoint: Endpoint) -> bool {
        let _ = endpoint;
        true
    }

    /// The request for `req` in this dialect, and what reading its answer needs.
    fn prepare(&self, req: UpstreamRequest<'_>) -> Result<Prepared, SendError>;
}

/// A request in a provider's dialect.
pub struct Prepared {
    /// Path and query on the provider's host (its base path included).
    pub path_and_query: String,
    /// The headers to forward (sluice adds the provider's own when it sends).
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body is sluice's own translation: it is sent as `application/json` whatever
    /// the app said it sent.
    pub translated: bool,
    pub reply: Box<dyn Reply>,
}

/// What a request's answer needs to come back in OpenAI's shape; one per request.
pub trait Reply: Send {
    /// What to do with an answer whose head is `head`. (A redirect, 401, 403 or 404 never
    /// gets here: whatever the kind, it is the gateway's configuration that is wrong.)
    fn answer(self: Box<Self>, head: Head) -> Answer;
}

/// The head of a provider's answer, as a [`Reply`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    pub status: u16,
    /// `content-type: text/event-stream`.
    pub sse: bool,
}

impl Head {
    /// A 2xx answer.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A whole answer turned into OpenAI's shape.
pub type Translate = Box<dyn FnOnce(Parts, Bytes) -> Result<Response<Body>, UpstreamError> + Send>;

/// How an answer comes back.
pub enum Answer {
    /// As it came.
    Pass,
    /// Its stream rewritten event by event as it passes. `own_headers`: only its
    /// `content-type` and `cache-control` are kept (the rest speak the provider's API).
    Stream { rewriter: Box<dyn StreamRewrite>, own_headers: bool },
    /// Read whole (each frame within the idle timeout, at most 16 MiB), then translated.
    Whole(Translate),
}

/// A [`Reply`] that passes every answer as it came.
pub struct Plain;

impl Reply for Plain {
    fn answer(self: Box<Self>, _: Head) -> Answer {
        Answer::Pass
    }
}

/// Where a kind's requests go.
pub enum Target {
    /// An HTTP server: scheme and host, and the headers the kind adds to every request
    /// (its credentials, marked sensitive; the provider's `headers` come on top).
    Http { scheme: Scheme, authority: Authority, headers: Vec<(HeaderName, HeaderValue)> },
    /// The fake provider, called in-process.
    InProcess(sluice_mock::MockSettings),
}

/// A kind and where it sends.
pub struct Kind {
    pub dialect: Box<dyn Dialect>,
    pub target: Target,
}

/// A `base_url` split into scheme, host and base path (without a trailing slash).
pub fn split_base_url(url: &str) -> Result<(Scheme, Authority, String), String> {
    let uri: Uri = url.parse().map_err(|e| format!("invalid base_url: {e}"))?;
    let parts = uri.into_parts();
    let scheme = parts.scheme.ok_or("base_url needs a scheme")?;
    let authority = parts.authority.ok_or("base_url needs a host")?;
    let base_path = parts.path_and_query.map(|p| p.path().trim_end_matches('/').to_string()).unwrap_or_default();
    Ok((scheme, authority, base_path))
}

/// A credential header: its value marked sensitive, so it never reaches a log.
pub fn secret_header(name: HeaderName, value: &str, what: &str) -> Result<(HeaderName, HeaderValue), String> {
    let mut v = HeaderValue::from_str(value).map_err(|_| format!("{what} is not a valid header value"))?;
    v.set_sensitive(true);
    Ok((name, v))
}

/// `base` + `path`, and `?query` when there is one.
pub fn join_path(base: &str, path: &str, query: Option<&str>) -> String {
    let mut pq = String::with_capacity(base.len() + path.len() + 1 + query.map_or(0, str::len));
    pq.push_str(base);
    pq.push_str(path);
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    pq
}
