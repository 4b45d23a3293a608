//! OpenAI-shaped generation requests (`/v1/chat/completions`, Azure's chat paths and the
//! legacy `/v1/completions`): parse the few request fields the mock needs into a
//! [`Conversation`], decide the [`Plan`] and write it whole or as a stream.

use std::borrow::Cow;

use http::{Response, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::Value;

use super::openai::{self, ChunkOptions, Chunks, Shape};
use super::plan::{self, Block, Conversation, Output, Plan, TextBody, Tool, ToolChoice};
use super::render::{self, BadRequest};
use super::script::{self, Script};
use super::stream::SseBody;
use super::{Call, MockKind};
use crate::body::Body;

/// A JSON string, borrowed from the body unless it had escapes.
#[derive(Deserialize)]
pub(crate) struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// Message content: a string or a list of parts (only text parts carry words).
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Content<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Parts(#[serde(borrow)] Vec<Part<'a>>),
}

/// A content part; parts without `text` (images, audio) are skipped.
#[derive(Deserialize)]
pub(crate) struct Part<'a> {
    #[serde(borrow)]
    text: Option<Text<'a>>,
}

impl Content<'_> {
    /// Words over the text (each part counted on its own).
    pub(crate) fn words(&self) -> u64 {
        match self {
            Content::Text(text) => plan::words(text),
            Content::Parts(parts) => parts.iter().filter_map(|p| p.text.as_ref()).map(|t| plan::words(&t.0)).sum(),
        }
    }

    /// The text, parts joined without a separator.
    pub(crate) fn text(&self) -> String {
        match self {
            Content::Text(text) => text.as_ref().to_owned(),
            Content::Parts(parts) => parts.iter().filter_map(|p| p.text.as_ref()).map(|t| t.0.as_ref()).collect(),
        }
    }
}

/// The chat request fields the mock reads; everything else is skipped.
#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    model: Option<Text<'a>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    #[serde(borrow)]
    messages: Option<Vec<Message<'a>>>,
    #[serde(borrow)]
    tools: Option<Vec<ToolField<'a>>>,
    #[serde(borrow)]
    tool_choice: Option<ChoiceField<'a>>,
    parallel_tool_calls: Option<bool>,
    #[serde(borrow)]
    response_format: Option<ResponseFormat<'a>>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Option<Text<'a>>,
    #[serde(borrow)]
    content: Option<Content<'a>>,
}

impl Message<'_> {
    fn is_tool_result(&self) -> bool {
        self.role.as_ref().is_some_and(|role| role.0 == "tool")
    }
}

#[derive(Deserialize)]
struct ToolField<'a> {
    #[serde(borrow)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow)]
    name: Option<Text<'a>>,
    parameters: Option<Value>,
}

/// `tool_choice`: `"none"` / `"auto"` / `"required"`, or a named function.
#[derive(Deserialize)]
#[serde(untagged)]
enum ChoiceField<'a> {
    Mode(#[serde(borrow)] Cow<'a, str>),
    Object {
        #[serde(borrow)]
        function: Option<Named<'a>>,
    },
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    name: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct ResponseFormat<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Text<'a>>,
    json_schema: Option<JsonSchema>,
}

#[derive(Deserialize)]
struct JsonSchema {
    schema: Option<Value>,
}

impl<'a> ChatRequest<'a> {
    /// The conversation, for deciding the answer.
    fn conversation(&mut self) -> Conversation<'a> {
        let messages = self.messages.take().unwrap_or_default();
        let prompt_words = messages.iter().filter_map(|m| m.content.as_ref()).map(Content::words).sum();
        let trailing = messages.iter().rev().take_while(|m| m.is_tool_result()).count();
        let results = (trailing > 0).then(|| {
            let start = messages.len() - trailing;
            messages.iter().skip(start).map(|m| m.content.as_ref().map(Content::text).unwrap_or_default()).collect()
        });
        let tools = self
            .tools
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|tool| tool.function)
            .filter_map(|f| Some(Tool { name: f.name?.0, schema: f.parameters }))
            .collect();
        let parallel = self.parallel_tool_calls != Some(false);
        let choice = match self.tool_choice.take() {
            Some(ChoiceField::Mode(mode)) if mode == "none" => ToolChoice::None,
            Some(ChoiceField::Object { function: Some(Named { name: Some(name) }) }) => ToolChoice::Named(name.0),
            _ => ToolChoice::Auto { parallel },
        };
        let output = match self.response_format.take() {
            Some(format) => match format.kind.as_ref().map(|k| k.0.as_ref()) {
                Some("json_schema") => Output::JsonSchema(format.json_schema.and_then(|j| j.schema)),
                Some("json_object") => Output::JsonObject,
                _ => Output::Text,
            },
            None => Output::Text,
        };
        let max_tokens = self.max_completion_tokens.or(self.max_tokens);
        Conversation { prompt_words, tools, choice, results, output, max_tokens }
    }
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

/// The `--reject-stream-options` quirk.
fn check_stream_options(call: &Call<'_>, present: bool) -> Result<(), BadRequest> {
    if call.settings.reject_stream_options && present {
        return Err(BadRequest::new("Unrecognized request argument supplied: stream_options", Some("stream_options")));
    }
    Ok(())
}

/// Answer a chat completion request (OpenAI or Azure).
pub(crate) fn respond_chat(call: &Call<'_>, body: &[u8]) -> Response<Body> {
    chat(call, body).unwrap_or_else(BadRequest::into_response)
}

fn chat(call: &Call<'_>, body: &[u8]) -> Result<Response<Body>, BadRequest> {
    let mut request: ChatRequest<'_> = parse_object(body)?;
    let model = match call.deployment {
        Some(deployment) => Cow::Borrowed(deployment),
        None => require_model(request.model.take())?,
    };
    check_stream_options(call, request.stream_options.is_some())?;
    let conversation = request.conversation();
    let plan = match call.judge {
        Some(verdict) => verdict.plan(&conversation, call.plan_settings()),
        None => plan::decide(&conversation, call.plan_settings()),
    };
    let shape = if call.settings.kind == MockKind::Azure { Shape::Azure } else { Shape::Chat };
    let include_usage = request.stream_options.and_then(|options| options.include_usage).unwrap_or(false);
    Ok(answer(call, shape, &model, plan, request.stream == Some(true), include_usage))
}

/// Answer a legacy text completion request: the generated answer, or the `answer` knob's
/// text (this route reads no `max_tokens`).
pub(crate) fn respond_completion(call: &Call<'_>, body: &[u8]) -> Response<Body> {
    completion(call, body).unwrap_or_else(BadRequest::into_response)
}

/// The legacy completion fields the mock reads.
#[derive(Deserialize)]
struct CompletionRequest<'a> {
    #[serde(borrow)]
    model: Option<Text<'a>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
}

fn completion(call: &Call<'_>, body: &[u8]) -> Result<Response<Body>, BadRequest> {
    let request: CompletionRequest<'_> = parse_object(body)?;
    let model = require_model(request.model)?;
    check_stream_options(call, request.stream_options.is_some())?;
    let script = call.knobs.script;
    let prompt_tokens = render::prompt_tokens(body);
    let text = match call.plan_settings().answer {
        Some(answer) => plan::answer_text(answer, None).0,
        None => TextBody::Words(call.knobs.chunks),
    };
    let plan = Plan {
        blocks: vec![Block::Text(text)],
        finish: match script {
            Some(Script::ContentFilter) => plan::Finish::ContentFilter,
            Some(Script::Incomplete) => plan::Finish::Length,
            _ => plan::Finish::Stop,
        },
        prompt_tokens,
        cached_tokens: call.knobs.cached_tokens.map(|cached| cached.min(prompt_tokens)),
    };
    let include_usage = request.stream_options.and_then(|options| options.include_usage).unwrap_or(false);
    Ok(answer(call, Shape::Completion, &model, plan, request.stream == Some(true), include_usage))
}

/// Write `plan` whole or as a stream.
fn answer(call: &Call<'_>, shape: Shape, model: &str, plan: Plan, stream: bool, include_usage: bool) -> Response<Body> {
    let script = call.knobs.script;
    if !stream {
        if let Some(response) = script.and_then(|s| s.whole_answer(call.settings.kind)) {
            return response;
        }
        let json = openai::whole(shape, model, &plan);
        let json = if script == Some(Script::Truncate) { script::cut_in_half(json) } else { json };
        return render::json_response(StatusCode::OK, json);
    }
    let options = ChunkOptions { include_usage, omit_tool_call_index: call.settings.omit_tool_call_index };
    let chunks = Chunks::new(shape, openai::chunk_head(shape, model), plan, options);
    render::sse_response(SseBody::new(chunks, call.knobs.timing(false)).boxed_unsync())
}
