//! `POST /v1/chat/completions` and `POST /v1/completions`: parse the few request fields
//! the mock needs and write the answer, whole or as a stream.

use std::borrow::Cow;

use http::{Response, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;

use super::knobs::Knobs;
use super::render::{self, BadRequest};
use super::stream::{SseBody, StreamSpec};
use crate::body::Body;

/// Which generation API a request targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `chat.completion` objects with `message` / `delta`.
    Chat,
    /// Legacy `text_completion` objects with `text`.
    Completion,
}

impl Kind {
    fn id_prefix(self) -> &'static str {
        match self {
            Kind::Chat => "chatcmpl-mock-",
            Kind::Completion => "cmpl-mock-",
        }
    }
}

/// A JSON string, borrowed from the body unless it had escapes.
#[derive(Deserialize)]
pub(crate) struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// The request fields the mock reads; everything else is skipped.
#[derive(Deserialize)]
struct GenerateRequest<'a> {
    #[serde(borrow)]
    model: Option<Text<'a>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// Parse a JSON object body, answering malformed input with a 400.
pub(crate) fn parse_object<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, BadRequest> {
    // A derived struct would also accept a JSON array; OpenAI wants an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(BadRequest::new("The request body must be a JSON object.", None));
    }
    serde_json::from_slice(body)
        .map_err(|err| BadRequest::new(format!("We could not parse the JSON body of your request: {err}"), None))
}

/// The `model` field, required and non-empty.
pub(crate) fn require_model(model: Option<Text<'_>>) -> Result<Cow<'_, str>, BadRequest> {
    match model {
        Some(Text(model)) if !model.is_empty() => Ok(model),
        _ => Err(BadRequest::new("you must provide a model parameter", Some("model"))),
    }
}

/// Answer a chat or text completion request.
pub(crate) fn respond(kind: Kind, knobs: &Knobs, body: &[u8]) -> Response<Body> {
    generate(kind, knobs, body).unwrap_or_else(BadRequest::into_response)
}

fn generate(kind: Kind, knobs: &Knobs, body: &[u8]) -> Result<Response<Body>, BadRequest> {
    let request: GenerateRequest<'_> = parse_object(body)?;
    let model = require_model(request.model)?;
    let prompt_tokens = render::prompt_tokens(body);

    if request.stream != Some(true) {
        let json = whole(kind, &model, knobs.chunks, prompt_tokens);
        return Ok(render::json_response(StatusCode::OK, json));
    }

    let include_usage = request.stream_options.and_then(|options| options.include_usage).unwrap_or(false);
    let mut head = String::with_capacity(128 + model.len());
    head.push_str(r#"data: {"id":""#);
    render::push_id(&mut head, kind.id_prefix());
    head.push_str(match kind {
        Kind::Chat => r#"","object":"chat.completion.chunk","created":"#,
        Kind::Completion => r#"","object":"text_completion","created":"#,
    });
    render::push_num(&mut head, render::now_secs());
    head.push_str(r#","model":"#);
    render::push_json_str(&mut head, &model);
    head.push_str(r#","choices":["#);

    let body = SseBody::new(StreamSpec {
        kind,
        head: head.into_boxed_str(),
        chunks: knobs.chunks,
        chunk_delay: knobs.chunk_delay,
        break_after: knobs.break_after,
        include_usage,
        prompt_tokens,
    });
    Ok(render::sse_response(body.boxed_unsync()))
}

/// The complete (non-streamed) answer.
fn whole(kind: Kind, model: &str, words: usize, prompt_tokens: u64) -> String {
    let mut out = String::with_capacity(256 + model.len() + words * 8);
    out.push_str(r#"{"id":""#);
    render::push_id(&mut out, kind.id_prefix());
    out.push_str(match kind {
        Kind::Chat => r#"","object":"chat.completion","created":"#,
        Kind::Completion => r#"","object":"text_completion","created":"#,
    });
    render::push_num(&mut out, render::now_secs());
    out.push_str(r#","model":"#);
    render::push_json_str(&mut out, model);
    out.push_str(match kind {
        Kind::Chat => r#","choices":[{"index":0,"message":{"role":"assistant","content":""#,
        Kind::Completion => r#","choices":[{"text":""#,
    });
    render::push_words(&mut out, words);
    out.push_str(match kind {
        Kind::Chat => r#""},"logprobs":null,"finish_reason":"stop"}],"usage":"#,
        Kind::Completion => r#"","index":0,"logprobs":null,"finish_reason":"stop"}],"usage":"#,
    });
    render::push_usage(&mut out, prompt_tokens, words as u64);
    out.push('}');
    out
}
