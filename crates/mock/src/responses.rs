//! `POST /v1/responses` (Azure: `/openai/v1/responses`): the Responses API, text answers
//! only. The answer is the chat plan of a conversation without tools, written as a
//! response object or as its typed events (`response.created` ... `response.completed`).

use std::borrow::Cow;

use http::{Response, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;

use super::chat::{parse_object, require_model, Content, Text};
use super::plan::{self, Block, Conversation, Finish, Output, Plan, TextBody, ToolChoice};
use super::render::{self, BadRequest};
use super::script::{self, Script};
use super::stream::{Class, Events, SseBody};
use super::Call;
use crate::body::Body;

/// The id of every response; the mock keeps no responses to look up.
const RESPONSE_ID: &str = "resp_mock_1";
/// The id of every response's message item.
const ITEM_ID: &str = "msg_mock_1";

#[derive(Deserialize)]
struct ResponsesRequest<'a> {
    #[serde(borrow)]
    model: Option<Text<'a>>,
    #[serde(borrow)]
    input: Option<Input<'a>>,
    #[serde(borrow)]
    instructions: Option<Text<'a>>,
    stream: Option<bool>,
    max_output_tokens: Option<u64>,
}

/// `input`: a string or a list of items (messages, tool outputs).
#[derive(Deserialize)]
#[serde(untagged)]
enum Input<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Items(#[serde(borrow)] Vec<Item<'a>>),
}

#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow)]
    content: Option<Content<'a>>,
    /// A tool output item's text.
    #[serde(borrow)]
    output: Option<Text<'a>>,
}

impl Input<'_> {
    fn words(&self) -> u64 {
        match self {
            Input::Text(text) => plan::words(text),
            Input::Items(items) => items
                .iter()
                .map(|item| {
                    item.content.as_ref().map_or(0, Content::words)
                        + item.output.as_ref().map_or(0, |o| plan::words(&o.0))
                })
                .sum(),
        }
    }
}

/// Answer a Responses API request.
pub(crate) fn respond(call: &Call<'_>, body: &[u8]) -> Response<Body> {
    generate(call, body).unwrap_or_else(BadRequest::into_response)
}

fn generate(call: &Call<'_>, body: &[u8]) -> Result<Response<Body>, BadRequest> {
    let request: ResponsesRequest<'_> = parse_object(body)?;
    let model = require_model(request.model)?;
    let prompt_words = request.input.as_ref().map_or(0, Input::words)
        + request.instructions.as_ref().map_or(0, |text| plan::words(&text.0));
    let conversation = Conversation {
        prompt_words,
        tools: Vec::new(),
        choice: ToolChoice::Auto { parallel: true },
        results: None,
        output: Output::Text,
        max_tokens: request.max_output_tokens,
    };
    let mut settings = call.plan_settings();
    if settings.script == Some(Script::TextToolText) {
        settings.script = None; // text answers only
    }
    let plan = plan::decide(&conversation, settings);
    let script = call.knobs.script;
    let created_at = render::now_secs();
    if request.stream != Some(true) {
        if let Some(response) = script.and_then(|s| s.whole_answer(call.settings.kind)) {
            return Ok(response);
        }
        let mut json = String::with_capacity(512 + model.len());
        push_response(&mut json, &model, created_at, &plan, true);
        let json = if script == Some(Script::Truncate) { script::cut_in_half(json) } else { json };
        return Ok(render::json_response(StatusCode::OK, json));
    }
    let events = ResponseEvents { model: model.into_owned(), created_at, plan, step: Step::Created, sequence: 0 };
    Ok(render::sse_response(SseBody::new(events, call.knobs.timing(false)).boxed_unsync()))
}

/// The plan's text (the Responses API answers one text block).
fn text_of(plan: &Plan) -> &TextBody {
    const EMPTY: &TextBody = &TextBody::Words(0);
    match plan.blocks.first() {
        Some(Block::Text(text)) => text,
        _ => EMPTY,
    }
}

/// The response's status and, when incomplete, why.
fn status(plan: &Plan) -> (&'static str, Option<&'static str>) {
    match plan.finish {
        Finish::Stop | Finish::ToolCalls => ("completed", None),
        Finish::Length => ("incomplete", Some("max_output_tokens")),
        Finish::ContentFilter => ("incomplete", Some("content_filter")),
    }
}

/// Append the response object; `done`: the finished response (status, output and usage),
/// else the one in progress.
fn push_response(out: &mut String, model: &str, created_at: u64, plan: &Plan, done: bool) {
    out.push_str(r#"{"id":""#);
    out.push_str(RESPONSE_ID);
    out.push_str(r#"","object":"response","created_at":"#);
    render::push_num(out, created_at);
    let (status, reason) = if done { status(plan) } else { ("in_progress", None) };
    out.push_str(r#","status":""#);
    out.push_str(status);
    out.push_str(r#"","incomplete_details":"#);
    match reason {
        Some(reason) => {
            out.push_str(r#"{"reason":""#);
            out.push_str(reason);
            out.push_str(r#""}"#);
        }
        None => out.push_str("null"),
    }
    out.push_str(r#","model":"#);
    render::push_json_str(out, model);
    if !done {
        out.push_str(r#","output":[],"usage":null}"#);
        return;
    }
    out.push_str(r#","output":["#);
    push_item(out, plan, true);
    out.push_str(r#"],"usage":"#);
    let (input, output) = (plan.prompt_tokens, plan.completion_tokens());
    out.push_str(r#"{"input_tokens":"#);
    render::push_num(out, input);
    out.push_str(r#","input_tokens_details":{"cached_tokens":"#);
    render::push_num(out, plan.cached_tokens.unwrap_or(0));
    out.push_str(r#"},"output_tokens":"#);
    render::push_num(out, output);
    out.push_str(r#","output_tokens_details":{"reasoning_tokens":0},"total_tokens":"#);
    render::push_num(out, input + output);
    out.push_str("}}");
}

/// Append the message item; `done`: with its text, else empty and in progress.
fn push_item(out: &mut String, plan: &Plan, done: bool) {
    out.push_str(r#"{"type":"message","id":""#);
    out.push_str(ITEM_ID);
    out.push_str(r#"","status":""#);
    out.push_str(match (done, status(plan).0) {
        (false, _) => "in_progress",
        (true, status) => status,
    });
    out.push_str(r#"","role":"assistant","content":["#);
    if done {
        push_part(out, plan);
    }
    out.push_str("]}");
}

/// Append the `output_text` part with the whole text.
fn push_part(out: &mut String, plan: &Plan) {
    out.push_str(r#"{"type":"output_text","text":""#);
    text_of(plan).push_text(out);
    out.push_str(r#"","annotations":[]}"#);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Created,
    InProgress,
    ItemAdded,
    PartAdded,
    Delta(usize),
    TextDone,
    PartDone,
    ItemDone,
    /// `response.completed` or `response.incomplete`.
    Finished,
    End,
}

/// The streamed events of one response.
struct ResponseEvents {
    model: String,
    created_at: u64,
    plan: Plan,
    step: Step,
    /// The next event's `sequence_number`.
    sequence: u64,
}

impl ResponseEvents {
    /// Append `event: name` and the start of its data, up to the sequence number.
    fn open(&mut self, out: &mut String, name: &str) {
        out.push_str("event: ");
        out.push_str(name);
        out.push_str("\ndata: {\"type\":\"");
        out.push_str(name);
        out.push_str(r#"","sequence_number":"#);
        render::push_num(out, self.sequence);
        self.sequence += 1;
    }

    /// The fields locating the text: item, output and content indexes.
    fn push_location(out: &mut String) {
        out.push_str(r#","item_id":""#);
        out.push_str(ITEM_ID);
        out.push_str(r#"","output_index":0,"content_index":0"#);
    }

    fn after_deltas(&self, next: usize) -> Step {
        if next < text_of(&self.plan).pieces() {
            Step::Delta(next)
        } else {
            Step::TextDone
        }
    }
}

impl Events for ResponseEvents {
    fn peek(&self) -> Option<Class> {
        match self.step {
            Step::Created | Step::InProgress | Step::ItemAdded | Step::PartAdded => Some(Class::Frame),
            Step::Delta(_) => Some(Class::Content),
            Step::TextDone | Step::PartDone | Step::ItemDone | Step::Finished => Some(Class::Tail),
            Step::End => None,
        }
    }

    fn push_next(&mut self, out: &mut String) {
        self.step = match self.step {
            Step::Created | Step::InProgress => {
                let created = self.step == Step::Created;
                self.open(out, if created { "response.created" } else { "response.in_progress" });
                out.push_str(r#","response":"#);
                push_response(out, &self.model, self.created_at, &self.plan, false);
                if created {
                    Step::InProgress
                } else {
                    Step::ItemAdded
                }
            }
            Step::ItemAdded => {
                self.open(out, "response.output_item.added");
                out.push_str(r#","output_index":0,"item":"#);
                push_item(out, &self.plan, false);
                Step::PartAdded
            }
            Step::PartAdded => {
                self.open(out, "response.content_part.added");
                Self::push_location(out);
                out.push_str(r#","part":{"type":"output_text","text":"","annotations":[]}"#);
                self.after_deltas(0)
            }
            Step::Delta(piece) => {
                self.open(out, "response.output_text.delta");
                Self::push_location(out);
                out.push_str(r#","delta":""#);
                text_of(&self.plan).push_piece(out, piece);
                out.push('"');
                self.after_deltas(piece + 1)
            }
            Step::TextDone => {
                self.open(out, "response.output_text.done");
                Self::push_location(out);
                out.push_str(r#","text":""#);
                text_of(&self.plan).push_text(out);
                out.push('"');
                Step::PartDone
            }
            Step::PartDone => {
                self.open(out, "response.content_part.done");
                Self::push_location(out);
                out.push_str(r#","part":"#);
                push_part(out, &self.plan);
                Step::ItemDone
            }
            Step::ItemDone => {
                self.open(out, "response.output_item.done");
                out.push_str(r#","output_index":0,"item":"#);
                push_item(out, &self.plan, true);
                Step::Finished
            }
            Step::Finished => {
                let name = match status(&self.plan).0 {
                    "completed" => "response.completed",
                    _ => "response.incomplete",
                };
                self.open(out, name);
                out.push_str(r#","response":"#);
                push_response(out, &self.model, self.created_at, &self.plan, true);
                Step::End
            }
            Step::End => return,
        };
        out.push_str("}\n\n");
    }

    fn push_error(&self, out: &mut String) {
        out.push_str("event: error\ndata: {\"type\":\"error\",\"sequence_number\":");
        render::push_num(out, self.sequence);
        out.push_str(concat!(
            r#","code":"server_error","message":"The server had an error while processing your request.","param":null}"#,
            "\n\n"
        ));
    }
}
