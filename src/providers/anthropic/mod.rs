//! Translation between OpenAI chat completions and Anthropic Messages, as pure functions
//! tested without I/O: the request, the response, the streaming state machine and errors.
//!
//! The request side also returns a [`Reply`]: what the response and stream sides need to
//! know about the app's request.

pub mod errors;
pub mod request;
pub mod response;
pub mod stream;

use http::header::HeaderName;
use http::HeaderValue;

use super::dialect::{join_path, secret_header, split_base_url, Answer, Dialect, Head, Kind, Prepared, Target};
use super::{json_response, SendError, UpstreamError, UpstreamRequest};
use crate::config::ProviderConfig;
use crate::wire::Endpoint;

/// Where Anthropic's API is when a provider names no `base_url`.
const BASE_URL: &str = "https://api.anthropic.com/v1";
/// The `anthropic-version` sent when a provider names none.
const VERSION: &str = "2023-06-01";

/// The `anthropic` kind: the Messages API, translated both ways.
#[derive(Debug)]
struct Anthropic {
    /// The base URL's path without a trailing slash, e.g. `/v1`.
    base_path: String,
    /// `max_tokens` for a request that names none (Anthropic requires it).
    max_tokens: Option<u64>,
}

pub(super) fn build(cfg: &ProviderConfig) -> Result<Kind, String> {
    let (scheme, authority, base_path) = split_base_url(cfg.base_url.as_deref().unwrap_or(BASE_URL))?;
    let mut headers = Vec::new();
    if let Some(key) = cfg.api_key.as_ref().filter(|k| !k.is_empty()) {
        headers.push(secret_header(HeaderName::from_static("x-api-key"), key.expose(), "api_key")?);
    }
    let version = cfg.anthropic_version.as_deref().unwrap_or(VERSION);
    let version = HeaderValue::from_str(version).map_err(|_| "anthropic_version is not a valid header value")?;
    headers.push((HeaderName::from_static("anthropic-version"), version));
    let dialect = Anthropic { base_path, max_tokens: cfg.max_tokens };
    Ok(Kind { dialect: Box::new(dialect), target: Target::Http { scheme, authority, headers } })
}

impl Dialect for Anthropic {
    fn serves(&self, endpoint: Endpoint) -> bool {
        endpoint == Endpoint::ChatCompletions
    }

    fn prepare(&self, req: UpstreamRequest<'_>) -> Result<Prepared, SendError> {
        // The body is the app's (sluice's edits are valid JSON): what this parser cannot
        // read is the app's problem, never the provider's.
        let openai: serde_json::Value =
            serde_json::from_slice(&req.body).map_err(|e| SendError::Untranslatable(e.to_string()))?;
        let defaults = request::Defaults { max_tokens: self.max_tokens };
        let translated = request::translate(&openai, defaults)
            .map_err(|e| SendError::Refused { param: e.param, message: e.message })?;
        let body = serde_json::to_vec(&translated.body).map_err(|_| UpstreamError::InvalidRequest)?;
        Ok(Prepared {
            path_and_query: join_path(&self.base_path, "/messages", req.query),
            headers: req.headers,
            body: body.into(),
            translated: true,
            reply: Box::new(translated.reply),
        })
    }
}

impl super::dialect::Reply for Reply {
    fn answer(self: Box<Self>, head: Head) -> Answer {
        let created = unix_now();
        if head.ok() && head.sse {
            let rewriter = Box::new(stream::Translator::new(&self, created));
            return Answer::Stream { rewriter, own_headers: true };
        }
        let ok = head.ok();
        Answer::Whole(Box::new(move |parts, body| {
            let status = parts.status.as_u16();
            if !ok {
                let (to, json) = errors::translate(status, &body);
                return Ok(json_response(parts, to, &json));
            }
            let message: serde_json::Value = serde_json::from_slice(&body).map_err(|_| UpstreamError::Protocol)?;
            // JSON that is not a Messages answer (another API's, an error page's) would
            // translate to an empty one: it is the provider's failure.
            if !response::is_message(&message) {
                return Err(UpstreamError::Protocol);
            }
            Ok(json_response(parts, status, &response::translate(&message, &self, created)))
        }))
    }
}

impl super::rewrite::StreamRewrite for stream::Translator {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        stream::Translator::feed(self, bytes)
    }
    fn finish(&mut self) -> Vec<u8> {
        stream::Translator::finish(self)
    }
    fn finished(&self) -> bool {
        stream::Translator::finished(self)
    }
    fn broken(&self) -> Option<UpstreamError> {
        stream::Translator::broken(self)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What the translation of the answer needs to know about the app's request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    /// The app asked for a final usage chunk (`stream_options.include_usage` of the OpenAI body).
    pub include_usage: bool,
    /// The name of the forced tool that carries `response_format` JSON output, if any.
    pub json_tool: Option<String>,
}

#[cfg(test)]
mod mock_plan_tests;
