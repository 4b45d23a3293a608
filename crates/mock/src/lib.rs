//! sluice's fake provider: a fast server that speaks OpenAI, Anthropic or Azure OpenAI, run
//! as `sluice mock-provider` or in-process as the gateway's provider kind `mock`.
//!
//! The mock answers the routes of the provider kind it imitates ([`MockKind`], `--kind`)
//! with well-formed, deterministic responses, so demos, integration tests and load tests
//! need no real model and no API key. It is used two ways: as a standalone HTTP server
//! ([`run`] / [`serve`]) and in-process as the gateway's provider kind `mock`, which calls
//! [`respond`] directly with the default (OpenAI) kind.
//!
//! | kind        | routes                                                                                   | credentials                            |
//! |-------------|------------------------------------------------------------------------------------------|----------------------------------------|
//! | `openai`    | `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/models`, `/v1/responses` | none checked                           |
//! | `anthropic` | `/v1/messages`                                                                           | `x-api-key` (401), `anthropic-version` |
//! | `azure`     | `/openai/deployments/{deployment}/chat/completions?api-version=...`, `/openai/v1/chat/completions`, `/openai/v1/responses` | `api-key` (401)          |
//!
//! The Anthropic and Azure kinds refuse an `authorization` header (400), so a test sees a
//! client key that leaked upstream. Errors come in the kind's own shape. An Azure
//! deployment path without `api-version` is a 404, and its answers name the deployment as
//! the model. Every kind answers `GET /healthz` with `ok` and `GET /mock/judge/requests`
//! with the [judge log](#judge-mode); neither checks credentials or takes knobs other
//! than the latency.
//!
//! # One answer, three renderings
//!
//! A chat request is reduced to a kind-neutral conversation and its answer is decided once
//! (see `plan`): tool results are echoed (`Results: ...`), offered tools are called with
//! arguments generated from their JSON schemas, structured output gets JSON generated from
//! its schema, and anything else gets `mock0 mock1 ...`. The same conversation as an OpenAI
//! request and as its Anthropic translation gets the same text, tool calls, finish and
//! token counts. Prompt tokens are the words of the messages' text (not tool definitions
//! or call arguments); completion tokens are the answer's words, or 10 per tool call or
//! structured answer. The legacy `/v1/completions` route always gets `mock0 mock1 ...` (or
//! the `answer` text) and counts prompt tokens as body bytes / 4.
//!
//! It is built to never be the bottleneck of a benchmark: responses are written with
//! plain string building (no `serde_json::Value` trees; only tool schemas are read as
//! values), requests are parsed with borrowed structs that only pick the fields the mock
//! needs, and streamed answers are a small hand-written body state machine (no task or
//! channel per stream).
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
//! | `x-mock-chunks`         | `chunks`         | words in the generated answer = its streamed content chunks = its completion tokens (at most 100000) |
//! | `x-mock-chunk-delay-ms` | `chunk_delay_ms` | delay between consecutive streamed content chunks (Anthropic: between all events) |
//! | `x-mock-break-after`    | `break_after`    | streamed answers fail the body after N content chunks       |
//! | `x-mock-cached-tokens`  | `cached_tokens`  | prompt tokens reported as read from cache (request only; at most the prompt tokens) |
//! | `x-mock-answer`         | `answer`         | the text answered instead of `mock0 mock1 ...`, below       |
//! | `x-mock-script`         | `script`         | a scripted answer, below (request only)                     |
//!
//! On the API routes an unparseable knob value (or an unknown script) gets a 400 naming the
//! knob, and errors are injected there only (`/healthz` and unknown routes just get the
//! latency). `break_after` only affects streamed answers; when it is not below the
//! answer's content chunks, every content chunk is sent and the body fails instead of
//! finishing. Content chunks are text pieces and pieces of tool-call arguments.
//!
//! The `answer` text ([`MockSettings::answer`], `--answer`, config `mock: {answer: ...}`)
//! replaces the generated answer on every route that generates one (chat in every kind's
//! shape, the Responses API, legacy completions); tool calls, tool results and structured
//! output are unchanged. Both the header and the query value are percent-decoded (`%XX`
//! escapes of UTF-8 bytes, so `%0A` is a newline and `%25` a `%`; a `%` without two hex
//! digits is a 400); in the query `+` is also a space; the header is trimmed first (write
//! `%20` for edge spaces). At most 64 KiB ([`MAX_ANSWER`]) after decoding. Its completion
//! tokens are its words, and it streams in pieces that each end after a whitespace run
//! (leading whitespace joins the first), so the deltas concatenate to exactly the text;
//! `chunks` is ignored. A request token limit (`max_tokens`, `max_completion_tokens`,
//! `max_output_tokens`) below its word count cuts it after that many words (up to the end
//! of the last word kept) with finish `length`; legacy completions read no limit.
//!
//! Cached tokens are OpenAI's `usage.prompt_tokens_details.cached_tokens` (included in
//! `prompt_tokens`), Anthropic's `cache_read_input_tokens` (`input_tokens` is the rest),
//! and the Responses API's `input_tokens_details.cached_tokens`.
//!
//! # Scripts
//!
//! | script             | answer                                                                                   |
//! |--------------------|------------------------------------------------------------------------------------------|
//! | `rate_limited`     | 429 with `retry-after: 7` and the kind's error body                                      |
//! | `overloaded`       | Anthropic 529 `overloaded_error`; OpenAI and Azure 503 with an OpenAI error body         |
//! | `bad_request`      | 400 with the kind's error body                                                           |
//! | `mid_stream_error` | a stream sends 2 content chunks, then the kind's error event, and ends; a whole answer is a 500 |
//! | `truncate`         | a stream sends up to 2 content chunks and ends without its final events (`[DONE]`, `message_stop`, `response.completed`); a whole answer's JSON is cut in half |
//! | `content_filter`   | Azure: 400 `content_filter`; Anthropic: `stop_reason: refusal`; OpenAI: `finish_reason: content_filter`; Responses API: `incomplete` |
//! | `text_tool_text`   | chat answers of text, a call of the first tool offered (else `mock_tool`), then text    |
//! | `incomplete`       | finish `length` / `max_tokens`; Responses API: a terminal `response.incomplete`         |
//!
//! The three error scripts apply on every API route; the others shape generated answers.
//!
//! # Judge mode
//!
//! With `--judge` ([`MockSettings::judge`], config `mock: {judge: true}`), chat completions
//! (OpenAI and Azure) and Anthropic messages answer as an LLM judge; the other routes are
//! unchanged. The judged text is the text after the last [`RESPONSE_MARKER`]
//! (`RESPONSE TO EVALUATE:`) in the last `user` message (its text parts joined), trimmed;
//! without the marker, that whole message, trimmed. Its score, in order:
//!
//! 1. the first `[[score:X]]` whose X (trimmed) is a JSON number → X exactly as written
//!    (`7`, `-1`, `2.5e1`: out-of-range scores pass through; other markers are ignored);
//! 2. else `1.0` if the judged text contains `good` (ASCII case-insensitive, anywhere:
//!    `goodbye` and `not good` count), else `0.0`.
//!
//! The answer is the judgement `{"reasoning":"mock judge: ...","score":X}` (the reasoning
//! names the rule used): the content, or, when `tool_choice` names a tool (sluice's
//! Anthropic translation of a `response_format` forces one), that tool's call with the
//! judgement as its arguments / input (finish `tool_calls` / `tool_use`). A streamed
//! request gets the content as one text chunk (tool input in pieces, as usual). Prompt
//! tokens are the messages' words as usual; completion tokens are the words of the
//! judgement. The `answer`, `chunks` and token limit knobs do not apply; the other knobs
//! and scripts do (latency, injected errors, `truncate`, ...). Markers in the judged text,
//! matched exactly:
//!
//! | marker                 | answer                                                        |
//! |------------------------|---------------------------------------------------------------|
//! | `[[judge:error]]`      | the kind's 500 (OpenAI `server_error`, Anthropic `api_error`)  |
//! | `[[judge:garbage]]`    | a normal text answer that is not JSON, [`GARBAGE_ANSWER`] (never a tool call) |
//! | `[[judge:delay_ms:N]]` | wait N ms (at most 60000, [`MAX_JUDGE_DELAY`]) before the response head, after the latency |
//!
//! Every request to those routes that passes the credential check is recorded before
//! anything else is decided ([`MockSettings::judge_log`], a [`JudgeLog`] shared by clones of
//! the settings): [`JudgeLog::requests`] gives the bodies parsed as JSON (one that is not
//! JSON as a JSON string of its text), oldest first, the last 1000
//! ([`JUDGE_LOG_CAPACITY`]); [`JudgeLog::clear`] empties it. `GET /mock/judge/requests`
//! serves the same JSON array on every kind.
//!
//! # Quirks
//!
//! Process-wide flags imitating OpenAI-compatible servers, on the OpenAI-shaped kinds:
//! `--reject-stream-options` ([`MockSettings::reject_stream_options`]) answers any request
//! carrying `stream_options` with OpenAI's 400 for an unknown argument;
//! `--omit-tool-call-index` ([`MockSettings::omit_tool_call_index`]) leaves `index` out of
//! streamed tool-call deltas.

pub mod body;

mod anthropic;
mod anthropic_events;
mod azure;
mod chat;
mod embeddings;
mod errors;
mod judge;
mod knobs;
mod openai;
mod plan;
mod render;
mod responses;
mod routes;
mod schema;
mod script;
mod server;
mod stream;

#[cfg(test)]
mod kind_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};

use crate::body::Body;
use routes::{Api, Route};

pub use judge::{JudgeLog, GARBAGE_ANSWER, JUDGE_LOG_CAPACITY, MAX_JUDGE_DELAY, RESPONSE_MARKER};
pub use knobs::MAX_ANSWER;
pub use server::{run, serve, MockArgs, HELP};

/// Which provider API the mock imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MockKind {
    /// OpenAI: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/models`,
    /// `/v1/responses`.
    #[default]
    #[value(name = "openai")]
    OpenAi,
    /// Anthropic: `/v1/messages`, with `x-api-key` and `anthropic-version` required.
    Anthropic,
    /// Azure OpenAI: `/openai/deployments/{deployment}/chat/completions?api-version=...`,
    /// `/openai/v1/chat/completions`, `/openai/v1/responses`, with `api-key` required.
    Azure,
}

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
    /// The provider API imitated (default OpenAI).
    pub kind: MockKind,
    /// OpenAI-shaped kinds: refuse any request carrying `stream_options` with a 400, like
    /// OpenAI-compatible servers that do not know the field.
    pub reject_stream_options: bool,
    /// OpenAI-shaped kinds: leave `index` out of streamed tool-call deltas, like
    /// OpenAI-compatible servers that do.
    pub omit_tool_call_index: bool,
    /// The text answered instead of the generated `mock0 mock1 ...` (at most
    /// [`MAX_ANSWER`] bytes); `x-mock-answer` overrides it per request.
    pub answer: Option<String>,
    /// Judge mode: the chat routes answer as an LLM judge (see the crate doc).
    pub judge: bool,
    /// The requests the chat routes received in judge mode; shared by clones.
    pub judge_log: Arc<JudgeLog>,
}

impl Default for MockSettings {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            error_rate: 0.0,
            error_status: 500,
            chunks: 20,
            chunk_delay: Duration::ZERO,
            kind: MockKind::OpenAi,
            reject_stream_options: false,
            omit_tool_call_index: false,
            answer: None,
            judge: false,
            judge_log: Arc::default(),
        }
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

/// What an API handler needs besides the body.
pub(crate) struct Call<'a> {
    pub settings: &'a MockSettings,
    pub knobs: &'a knobs::Knobs,
    /// Azure: the deployment named in the path, the answers' model.
    pub deployment: Option<&'a str>,
    /// Judge mode, on a chat route: the judge's decision.
    pub judge: Option<&'a judge::Verdict>,
}

impl Call<'_> {
    /// The knobs that shape a chat answer's plan.
    pub(crate) fn plan_settings(&self) -> plan::Settings<'_> {
        self.knobs.plan_settings(self.settings.answer.as_deref())
    }
}

/// Answer one request. Never fails: bad input gets a 4xx in the kind's error shape.
pub async fn respond(settings: &MockSettings, req: MockRequest<'_>) -> Response<Body> {
    let knobs = knobs::Knobs::resolve(settings, req.headers, req.query);
    let latency = match &knobs {
        Ok(knobs) => knobs.latency,
        Err(_) => settings.latency,
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let kind = settings.kind;
    match routes::route(kind, req.method, req.path, req.query) {
        Route::Api { api, deployment } => {
            if let Some(response) = errors::auth_refusal(kind, req.headers) {
                return response;
            }
            let verdict = (settings.judge && matches!(api, Api::Chat | Api::Messages))
                .then(|| judge::Verdict::receive(&settings.judge_log, &req.body));
            if let Some(delay) = verdict.as_ref().and_then(|verdict| verdict.delay) {
                tokio::time::sleep(delay).await;
            }
            match knobs {
                Ok(knobs) => {
                    answer(&Call { settings, knobs: &knobs, deployment, judge: verdict.as_ref() }, api, &req.body)
                }
                Err(err) => errors::bad_request(kind, &err.to_string(), Some(err.name)),
            }
        }
        Route::Health => render::text_response(StatusCode::OK, Bytes::from_static(b"ok")),
        Route::JudgeRequests => render::json_response(StatusCode::OK, settings.judge_log.to_json()),
        Route::WrongMethod(allow) => errors::method_not_allowed(kind, req.method, req.path, allow),
        Route::NotFound => errors::not_found(kind, req.method, req.path),
    }
}

/// Answer an API route once the knobs are known (after the latency).
fn answer(call: &Call<'_>, api: Api, body: &[u8]) -> Response<Body> {
    let kind = call.settings.kind;
    if call.knobs.inject_error() {
        return errors::injected(kind, call.knobs.error_status);
    }
    if let Some(response) = call.knobs.script.and_then(|script| script.early_answer(kind)) {
        return response;
    }
    if call.judge.is_some_and(|verdict| verdict.error) {
        return errors::server_error(kind);
    }
    match api {
        Api::Chat => chat::respond_chat(call, body),
        Api::Completions => chat::respond_completion(call, body),
        Api::Embeddings => embeddings::respond(body),
        Api::Models => render::json_response(StatusCode::OK, Bytes::from_static(render::MODELS_JSON)),
        Api::Responses => responses::respond(call, body),
        Api::Messages => anthropic::respond(call, body),
    }
}
