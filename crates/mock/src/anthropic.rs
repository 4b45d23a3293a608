//! `POST /v1/messages` (the `anthropic` kind): validate like the Messages API, reduce the
//! request to a [`Conversation`], and answer with the plan as a message or as events.

use std::borrow::Cow;

use http::{Response, StatusCode};
use http_body_util::BodyExt;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use super::anthropic_events::{self, MessageEvents};
use super::chat::{parse_object, Text};
use super::errors;
use super::plan::{self, Conversation, Output, Tool, ToolChoice};
use super::render;
use super::script::{self, Script};
use super::stream::SseBody;
use super::{Call, MockKind};
use crate::body::Body;

/// The Messages request fields the mock reads or refuses; everything else is skipped.
#[derive(Deserialize)]
struct MessagesRequest<'a> {
    #[serde(borrow)]
    model: Option<Text<'a>>,
    max_tokens: Option<serde_json::Number>,
    #[serde(borrow)]
    messages: Option<Vec<Message<'a>>>,
    #[serde(borrow)]
    system: Option<Blocks<'a>>,
    stream: Option<bool>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    #[serde(borrow)]
    tools: Option<Vec<ToolField<'a>>>,
    #[serde(borrow)]
    tool_choice: Option<ChoiceField<'a>>,
    // OpenAI-only fields, refused like any unknown field.
    n: Option<IgnoredAny>,
    stream_options: Option<IgnoredAny>,
    response_format: Option<IgnoredAny>,
    max_completion_tokens: Option<IgnoredAny>,
}

/// Content: a string or a list of blocks.
#[derive(Deserialize)]
#[serde(untagged)]
enum Blocks<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    List(#[serde(borrow)] Vec<ContentBlock<'a>>),
}

/// A content block, with the fields of every block type the mock looks at.
#[derive(Deserialize)]
struct ContentBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    text: Option<Text<'a>>,
    /// `tool_use`: the call's id.
    #[serde(borrow)]
    id: Option<Text<'a>>,
    /// `tool_result`: the id of the call it answers.
    #[serde(borrow)]
    tool_use_id: Option<Text<'a>>,
    /// `tool_result`: the result.
    #[serde(borrow)]
    content: Option<Blocks<'a>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Option<Text<'a>>,
    #[serde(borrow)]
    content: Option<Blocks<'a>>,
}

#[derive(Deserialize)]
struct ToolField<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    name: Option<Text<'a>>,
    input_schema: Option<Value>,
}

#[derive(Deserialize)]
struct ChoiceField<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    name: Option<Text<'a>>,
    disable_parallel_tool_use: Option<bool>,
}

fn str_of<'s>(text: &'s Option<Text<'_>>) -> Option<&'s str> {
    text.as_ref().map(|t| t.0.as_ref())
}

impl ContentBlock<'_> {
    fn kind(&self) -> &str {
        str_of(&self.kind).unwrap_or("")
    }
}

impl Blocks<'_> {
    fn blocks(&self) -> &[ContentBlock<'_>] {
        match self {
            Blocks::Text(_) => &[],
            Blocks::List(list) => list,
        }
    }

    /// Words of the text, text blocks and tool results.
    fn words(&self) -> u64 {
        match self {
            Blocks::Text(text) => plan::words(text),
            Blocks::List(list) => list
                .iter()
                .map(|block| match block.kind() {
                    "text" => str_of(&block.text).map_or(0, plan::words),
                    "tool_result" => block.content.as_ref().map_or(0, Blocks::words),
                    _ => 0,
                })
                .sum(),
        }
    }

    /// The text of a tool result: the string, or its text blocks joined.
    fn text(&self) -> String {
        match self {
            Blocks::Text(text) => text.as_ref().to_owned(),
            Blocks::List(list) => list.iter().filter(|b| b.kind() == "text").filter_map(|b| str_of(&b.text)).collect(),
        }
    }

    /// Whether a text block (or the string) is empty.
    fn has_empty_text(&self) -> bool {
        match self {
            Blocks::Text(text) => text.is_empty(),
            Blocks::List(list) => list.iter().any(|b| b.kind() == "text" && str_of(&b.text).unwrap_or("").is_empty()),
        }
    }

    fn tool_use_ids(&self) -> impl Iterator<Item = &str> {
        self.blocks().iter().filter(|b| b.kind() == "tool_use").map(|b| str_of(&b.id).unwrap_or(""))
    }

    fn tool_results(&self) -> impl Iterator<Item = &ContentBlock<'_>> {
        self.blocks().iter().filter(|b| b.kind() == "tool_result")
    }
}

/// What a valid request asks for.
struct Checked<'a> {
    model: Cow<'a, str>,
    stream: bool,
    conversation: Conversation<'a>,
}

/// Answer a Messages request.
pub(crate) fn respond(call: &Call<'_>, body: &[u8]) -> Response<Body> {
    let checked = parse_object::<MessagesRequest<'_>>(body).map_err(|bad| bad.message.into_owned()).and_then(check);
    let checked = match checked {
        Ok(checked) => checked,
        Err(message) => return errors::anthropic(StatusCode::BAD_REQUEST, "invalid_request_error", &message),
    };
    let plan = match call.judge {
        Some(verdict) => verdict.plan(&checked.conversation, call.plan_settings()),
        None => plan::decide(&checked.conversation, call.plan_settings()),
    };
    let script = call.knobs.script;
    if !checked.stream {
        if let Some(response) = script.and_then(|s| s.whole_answer(MockKind::Anthropic)) {
            return response;
        }
        let json = anthropic_events::whole(&checked.model, &plan);
        let json = if script == Some(Script::Truncate) { script::cut_in_half(json) } else { json };
        return render::json_response(StatusCode::OK, json);
    }
    let events = MessageEvents::new(&checked.model, plan);
    render::sse_response(SseBody::new(events, call.knobs.timing(true)).boxed_unsync())
}

/// Validate like the Messages API (the first problem found is the answer).
fn check(mut request: MessagesRequest<'_>) -> Result<Checked<'_>, String> {
    let model = match request.model.take() {
        Some(Text(model)) if !model.is_empty() => model,
        _ => return Err("model: Field required".to_owned()),
    };
    let max_tokens = check_params(&request)?;
    let tools = check_tools(request.tools.unwrap_or_default())?;
    let choice = tool_choice(request.tool_choice)?;
    let messages = request.messages.ok_or("messages: Field required")?;
    check_messages(&messages)?;
    if request.system.as_ref().is_some_and(Blocks::has_empty_text) {
        return Err("system: text content blocks must be non-empty".to_owned());
    }
    let message_words: u64 = messages.iter().filter_map(|m| m.content.as_ref()).map(Blocks::words).sum();
    let prompt_words = message_words + request.system.as_ref().map_or(0, Blocks::words);
    let results = messages.last().filter(|m| str_of(&m.role) == Some("user")).and_then(|m| {
        let results: Vec<String> = m
            .content
            .as_ref()?
            .tool_results()
            .map(|b| b.content.as_ref().map(Blocks::text).unwrap_or_default())
            .collect();
        (!results.is_empty()).then_some(results)
    });
    let conversation =
        Conversation { prompt_words, tools, choice, results, output: Output::Text, max_tokens: Some(max_tokens) };
    Ok(Checked { model, stream: request.stream == Some(true), conversation })
}

/// The sampling parameters and OpenAI-only fields; returns `max_tokens`.
fn check_params(request: &MessagesRequest<'_>) -> Result<u64, String> {
    let max_tokens = match &request.max_tokens {
        None => return Err("max_tokens: Field required".to_owned()),
        Some(n) => match (n.as_u64(), n.as_i64()) {
            (Some(n), _) if n >= 1 => n,
            (_, Some(_)) => return Err("max_tokens: Input should be greater than or equal to 1".to_owned()),
            _ => return Err("max_tokens: Input should be a valid integer".to_owned()),
        },
    };
    for (field, present) in [
        ("n", request.n.is_some()),
        ("stream_options", request.stream_options.is_some()),
        ("response_format", request.response_format.is_some()),
        ("max_completion_tokens", request.max_completion_tokens.is_some()),
    ] {
        if present {
            return Err(format!("{field}: Extra inputs are not permitted"));
        }
    }
    match request.temperature {
        Some(t) if t < 0.0 => Err("temperature: Input should be greater than or equal to 0".to_owned()),
        Some(t) if t > 1.0 => Err("temperature: Input should be less than or equal to 1".to_owned()),
        Some(_) if request.top_p.is_some() => {
            Err("`temperature` and `top_p` cannot both be specified for this model. Please use only one.".to_owned())
        }
        _ => Ok(max_tokens),
    }
}

fn tool_choice(choice: Option<ChoiceField<'_>>) -> Result<ToolChoice<'_>, String> {
    let Some(choice) = choice else {
        return Ok(ToolChoice::Auto { parallel: true });
    };
    match str_of(&choice.kind) {
        Some("none") => Ok(ToolChoice::None),
        Some("tool") => match choice.name {
            Some(Text(name)) => Ok(ToolChoice::Named(name)),
            None => Err("tool_choice.name: Field required".to_owned()),
        },
        Some("auto" | "any") => Ok(ToolChoice::Auto { parallel: choice.disable_parallel_tool_use != Some(true) }),
        _ => Err("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'".to_owned()),
    }
}

fn check_tools(tools: Vec<ToolField<'_>>) -> Result<Vec<Tool<'_>>, String> {
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.into_iter().enumerate() {
        let kind = str_of(&tool.kind);
        if kind == Some("function") {
            return Err(format!(
                "tools.{i}.type: Input tag 'function' found using 'type' does not match any of the expected tags"
            ));
        }
        let Some(Text(name)) = tool.name else {
            return Err(format!("tools.{i}.name: Field required"));
        };
        // Server tools (`web_search_...`) have a versioned type and no schema; never called.
        if kind.is_none() || kind == Some("custom") {
            if tool.input_schema.is_none() {
                return Err(format!("tools.{i}.input_schema: Field required"));
            }
            out.push(Tool { name, schema: tool.input_schema });
        }
    }
    Ok(out)
}

fn check_messages(messages: &[Message<'_>]) -> Result<(), String> {
    if messages.is_empty() {
        return Err("messages: at least one message is required".to_owned());
    }
    for (i, message) in messages.iter().enumerate() {
        let role = str_of(&message.role).unwrap_or("");
        match role {
            "user" | "assistant" => {}
            "system" => {
                return Err(r#"messages: Unexpected role "system". The Messages API accepts a top-level `system` parameter, not "system" as an input message role."#.to_owned())
            }
            other => return Err(format!(r#"messages: Unexpected role "{other}". Allowed roles are "user" or "assistant"."#)),
        }
        let Some(content) = &message.content else {
            return Err(format!("messages.{i}.content: Field required"));
        };
        if matches!(content, Blocks::List(list) if list.is_empty()) && i + 1 < messages.len() {
            return Err(format!(
                "messages.{i}: all messages must have non-empty content except for the optional final assistant message"
            ));
        }
        if content.has_empty_text() {
            return Err("messages: text content blocks must be non-empty".to_owned());
        }
        let previous: Vec<&str> = match i.checked_sub(1).and_then(|p| messages.get(p)) {
            Some(prev) if role == "user" => {
                prev.content.as_ref().map(|c| c.tool_use_ids().collect()).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        for (j, block) in content.blocks().iter().enumerate().filter(|(_, b)| b.kind() == "tool_result") {
            let id = str_of(&block.tool_use_id).unwrap_or("");
            if role != "user" || !previous.contains(&id) {
                return Err(format!("messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."));
            }
        }
        if role == "assistant" {
            let answered: Vec<&str> = messages
                .get(i + 1)
                .filter(|next| str_of(&next.role) == Some("user"))
                .and_then(|next| next.content.as_ref())
                .map(|c| c.tool_results().map(|b| str_of(&b.tool_use_id).unwrap_or("")).collect())
                .unwrap_or_default();
            let missing: Vec<&str> = content.tool_use_ids().filter(|id| !answered.contains(id)).collect();
            if !missing.is_empty() {
                return Err(format!("messages.{}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.", i + 1, missing.join(", ")));
            }
        }
    }
    Ok(())
}
