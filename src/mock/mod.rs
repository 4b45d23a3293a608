//! `sluice mock-provider`: a fast, fake OpenAI-compatible provider.
//!
//! The mock answers the OpenAI routes sluice forwards (`/v1/chat/completions`,
//! `/v1/completions`, `/v1/embeddings`, `/v1/models`) with well-formed, deterministic
//! responses, so demos, integration tests and load tests need no real model and no API
//! key. It is used two ways: as a standalone HTTP server ([`run`] / [`serve`]) and
//! in-process as the gateway's provider kind `mock`, which calls [`respond`] directly.
//!
//! It is built to never be the bottleneck of a benchmark: responses are written with
//! plain string building (no `serde_json::Value` trees), requests are parsed with
//! borrowed structs that only pick the fields the mock needs, and streamed answers are
//! a small hand-written body state machine (no task or channel per stream).
//!
//! # Knobs
//!
//! Every knob has a process-wide value ([`MockSettings`], set from [`MockArgs`]) that a
//! request can override with a header or a query parameter (the header wins):
//!
//! | header                  | query            | meaning                                                     |
//! |-------------------------|------------------|-------------------------------------------------------------|
//! | `x-mock-latency-ms`     | `latency_ms`     | delay before the response head, on every route              |
//! | `x-mock-error-rate`     | `error_rate`     | probability (0..=1) of answering with an injected error     |
//! | `x-mock-error-status`   | `error_status`   | status of injected errors (400..=599, default 500)          |
//! | `x-mock-chunks`         | `chunks`         | words in an answer = streamed content chunks = completion tokens (at most 100000) |
//! | `x-mock-chunk-delay-ms` | `chunk_delay_ms` | delay between consecutive streamed content chunks           |
//! | `x-mock-break-after`    | `break_after`    | streamed answers fail the body after N content chunks       |
//!
//! On the `/v1/...` routes an unparseable knob value gets a 400 naming the knob, and
//! errors are injected there only (`/healthz` and unknown routes just get the latency).
//! `break_after` only affects streamed answers; when it is not below `chunks`, every
//! content chunk is sent and the body fails instead of finishing.

mod chat;
mod embeddings;
mod knobs;
mod render;
mod server;
mod stream;

#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};

use crate::body::Body;

pub use server::{run, serve, MockArgs};

/// Process-wide knobs; each can be overridden per request.
#[derive(Debug, Clone)]
pub struct MockSettings {
    /// Delay before the response head (time to first byte), on every route.
    pub latency: Duration,
    /// Probability (0.0..=1.0) of answering with an injected error.
    pub error_rate: f64,
    /// Status of injected errors (default 500).
    pub error_status: u16,
    /// Content chunks in a streamed answer (default 20); also the completion token
    /// count and the number of words in a non-streamed answer.
    pub chunks: usize,
    /// Delay between consecutive streamed content chunks (default 0).
    pub chunk_delay: Duration,
}

impl Default for MockSettings {
    fn default() -> Self {
        Self { latency: Duration::ZERO, error_rate: 0.0, error_status: 500, chunks: 20, chunk_delay: Duration::ZERO }
    }
}

/// One request as the mock sees it. `path` is the full request path, e.g. "/v1/chat/completions".
pub struct MockRequest<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Full request path, without the query.
    pub path: &'a str,
    /// Raw query string (without `?`), if any; may carry knob overrides.
    pub query: Option<&'a str>,
    /// Request headers; may carry knob overrides (`x-mock-*`).
    pub headers: &'a http::HeaderMap,
    /// Complete request body.
    pub body: Bytes,
}

/// The OpenAI routes, subject to knobs and error injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Completions,
    Embeddings,
    Models,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Api(Api),
    Health,
    /// Known path, wrong method; carries the value of the `allow` header.
    WrongMethod(&'static str),
    NotFound,
}

fn route(method: &Method, path: &str) -> Route {
    let (route, post) = match path {
        "/v1/chat/completions" => (Route::Api(Api::Chat), true),
        "/v1/completions" => (Route::Api(Api::Completions), true),
        "/v1/embeddings" => (Route::Api(Api::Embeddings), true),
        "/v1/models" => (Route::Api(Api::Models), false),
        "/healthz" => (Route::Health, false),
        _ => return Route::NotFound,
    };
    match (post, method) {
        (true, &Method::POST) | (false, &Method::GET | &Method::HEAD) => route,
        (true, _) => Route::WrongMethod("POST"),
        (false, _) => Route::WrongMethod("GET, HEAD"),
    }
}

/// Answer one request. Never fails: bad input gets an OpenAI-shaped 4xx.
pub async fn respond(settings: &MockSettings, req: MockRequest<'_>) -> Response<Body> {
    let knobs = knobs::Knobs::resolve(settings, req.headers, req.query);
    let latency = match &knobs {
        Ok(knobs) => knobs.latency,
        Err(_) => settings.latency,
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    match route(req.method, req.path) {
        Route::Api(api) => match knobs {
            Ok(knobs) => answer(api, &knobs, &req.body),
            Err(err) => render::invalid_request(&err.to_string(), Some(err.name)),
        },
        Route::Health => render::text_response(StatusCode::OK, Bytes::from_static(b"ok")),
        Route::WrongMethod(allow) => render::method_not_allowed(req.method, req.path, allow),
        Route::NotFound => render::error_response(
            StatusCode::NOT_FOUND,
            &format!("Unknown route: {} {}", req.method, req.path),
            "invalid_request_error",
            None,
            Some("not_found"),
        ),
    }
}

/// Answer an OpenAI route once the knobs are known (after the latency).
fn answer(api: Api, knobs: &knobs::Knobs, body: &[u8]) -> Response<Body> {
    if knobs.inject_error() {
        return render::injected_error(knobs.error_status);
    }
    match api {
        Api::Chat => chat::respond(chat::Kind::Chat, knobs, body),
        Api::Completions => chat::respond(chat::Kind::Completion, knobs, body),
        Api::Embeddings => embeddings::respond(body),
        Api::Models => render::json_response(StatusCode::OK, Bytes::from_static(render::MODELS_JSON)),
    }
}
