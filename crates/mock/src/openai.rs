//! A [`Plan`] rendered as an OpenAI chat completion (or Azure's variant, or a legacy text
//! completion): the whole JSON answer, and the streamed chunks as an [`Events`] source.

use super::azure;
use super::plan::{Block, Plan, TextBody, ToolCall};
use super::render;
use super::stream::{Class, Events};

/// Which OpenAI-shaped answer to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `chat.completion` objects with `message` / `delta`.
    Chat,
    /// Chat completions with Azure's content filter results.
    Azure,
    /// Legacy `text_completion` objects with `text`.
    Completion,
}

impl Shape {
    fn id_prefix(self) -> &'static str {
        match self {
            Shape::Chat | Shape::Azure => "chatcmpl-mock-",
            Shape::Completion => "cmpl-mock-",
        }
    }
}

/// Stream options that change the chunks.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ChunkOptions {
    /// Send a final usage chunk; other chunks then carry `"usage":null`.
    pub include_usage: bool,
    /// Leave `index` out of tool-call deltas (`--omit-tool-call-index`).
    pub omit_tool_call_index: bool,
}

/// The OpenAI `usage` object; like OpenAI's, it always has `prompt_tokens_details`.
pub(crate) fn push_usage(out: &mut String, plan: &Plan) {
    let completion = plan.completion_tokens();
    render::push_usage(out, plan.prompt_tokens, completion);
    out.pop();
    out.push_str(r#","prompt_tokens_details":{"cached_tokens":"#);
    render::push_num(out, plan.cached_tokens.unwrap_or(0));
    out.push_str("}}");
}

/// Append the concatenated text of the plan's text blocks, escaped.
fn push_all_text(out: &mut String, plan: &Plan) {
    for block in &plan.blocks {
        if let Block::Text(text) = block {
            text.push_text(out);
        }
    }
}

fn push_tool_call(out: &mut String, call: &ToolCall) {
    out.push_str(r#"{"id":"call_mock_"#);
    render::push_num(out, call.number as u64);
    out.push_str(r#"","type":"function","function":{"name":"#);
    render::push_json_str(out, &call.name);
    out.push_str(r#","arguments":"#);
    render::push_json_str(out, call.arguments.as_str());
    out.push_str("}}");
}

/// The complete (non-streamed) answer.
pub(crate) fn whole(shape: Shape, model: &str, plan: &Plan) -> String {
    let mut out = String::with_capacity(384 + model.len() + plan.completion_tokens() as usize * 8);
    out.push_str(r#"{"id":""#);
    render::push_id(&mut out, shape.id_prefix());
    out.push_str(match shape {
        Shape::Chat | Shape::Azure => r#"","object":"chat.completion","created":"#,
        Shape::Completion => r#"","object":"text_completion","created":"#,
    });
    render::push_num(&mut out, render::now_secs());
    out.push_str(r#","model":"#);
    render::push_json_str(&mut out, model);
    if shape == Shape::Completion {
        out.push_str(r#","choices":[{"text":""#);
        push_all_text(&mut out, plan);
        out.push_str(r#"","index":0,"logprobs":null,"finish_reason":""#);
    } else {
        out.push_str(r#","choices":[{"index":0,"message":{"role":"assistant","content":"#);
        if plan.has_text() {
            out.push('"');
            push_all_text(&mut out, plan);
            out.push('"');
        } else {
            out.push_str("null");
        }
        if plan.has_tools() {
            out.push_str(r#","tool_calls":["#);
            let calls = plan.blocks.iter().filter_map(|block| match block {
                Block::Tool(call) => Some(call),
                Block::Text(_) => None,
            });
            for (i, call) in calls.enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_tool_call(&mut out, call);
            }
            out.push(']');
        }
        out.push_str(r#"},"logprobs":null,"finish_reason":""#);
    }
    out.push_str(plan.finish.openai());
    out.push('"');
    if shape == Shape::Azure {
        out.push_str(r#","content_filter_results":"#);
        out.push_str(azure::FILTER_RESULTS);
    }
    out.push_str(r#"}],"usage":"#);
    push_usage(&mut out, plan);
    if shape == Shape::Azure {
        out.push_str(r#","prompt_filter_results":"#);
        out.push_str(azure::PROMPT_FILTER_RESULTS);
    }
    out.push('}');
    out
}

/// The start of every chunk, up to and including `"choices":[`.
pub(crate) fn chunk_head(shape: Shape, model: &str) -> Box<str> {
    let mut head = String::with_capacity(128 + model.len());
    head.push_str(r#"data: {"id":""#);
    render::push_id(&mut head, shape.id_prefix());
    head.push_str(match shape {
        Shape::Chat | Shape::Azure => r#"","object":"chat.completion.chunk","created":"#,
        Shape::Completion => r#"","object":"text_completion","created":"#,
    });
    render::push_num(&mut head, render::now_secs());
    head.push_str(r#","model":"#);
    render::push_json_str(&mut head, model);
    head.push_str(r#","choices":["#);
    head.into_boxed_str()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Azure: the prompt filter results.
    Prompt,
    /// Chat: the `role: assistant` chunk.
    Role,
    /// Piece `piece` of block `block`; for a tool call piece 0 is the call's first delta.
    Block {
        block: usize,
        piece: usize,
    },
    Finish,
    /// Azure: the filter results of the whole answer.
    Filter,
    Usage,
    Done,
    End,
}

/// The streamed chunks of one answer.
pub(crate) struct Chunks {
    shape: Shape,
    head: Box<str>,
    plan: Plan,
    options: ChunkOptions,
    step: Step,
}

impl Chunks {
    pub(crate) fn new(shape: Shape, head: Box<str>, plan: Plan, options: ChunkOptions) -> Self {
        let step = match shape {
            Shape::Azure => Step::Prompt,
            Shape::Chat => Step::Role,
            Shape::Completion => Step::Block { block: 0, piece: 0 },
        };
        let mut chunks = Self { shape, head, plan, options, step };
        chunks.skip_empty();
        chunks
    }

    fn pieces(&self, block: usize) -> Option<usize> {
        self.plan.blocks.get(block).map(|block| match block {
            Block::Text(text) => text.pieces(),
            Block::Tool(call) => 1 + call.arguments.count(),
        })
    }

    /// Move past finished blocks (to the finish after the last one).
    fn skip_empty(&mut self) {
        while let Step::Block { block, piece } = self.step {
            match self.pieces(block) {
                None => self.step = Step::Finish,
                Some(pieces) if piece >= pieces => self.step = Step::Block { block: block + 1, piece: 0 },
                Some(_) => break,
            }
        }
    }

    fn after_finish(&self) -> Step {
        if self.options.include_usage {
            Step::Usage
        } else {
            Step::Done
        }
    }

    /// Append one chunk: head, `choice` (may be empty), then the tail.
    fn push_chunk(&self, out: &mut String, choice: impl FnOnce(&mut String)) {
        out.push_str(&self.head);
        choice(out);
        out.push_str(if self.options.include_usage { "],\"usage\":null}\n\n" } else { "]}\n\n" });
    }

    /// Close a chat choice: `logprobs`, `finish_reason` and Azure's filter results.
    fn close_choice(&self, out: &mut String, finish: Option<&str>, filter: &str) {
        out.push_str(r#","logprobs":null,"finish_reason":"#);
        match finish {
            Some(reason) => render::push_json_str(out, reason),
            None => out.push_str("null"),
        }
        if self.shape == Shape::Azure {
            out.push_str(r#","content_filter_results":"#);
            out.push_str(filter);
        }
        out.push('}');
    }

    fn push_text(&self, out: &mut String, text: &TextBody, piece: usize) {
        self.push_chunk(out, |out| {
            if self.shape == Shape::Completion {
                out.push_str(r#"{"text":""#);
                text.push_piece(out, piece);
                out.push_str(r#"","index":0,"logprobs":null,"finish_reason":null}"#);
            } else {
                out.push_str(r#"{"index":0,"delta":{"content":""#);
                text.push_piece(out, piece);
                out.push_str(r#""}"#);
                self.close_choice(out, None, azure::FILTER_RESULTS);
            }
        });
    }

    fn push_tool(&self, out: &mut String, call: &ToolCall, piece: usize) {
        self.push_chunk(out, |out| {
            out.push_str(r#"{"index":0,"delta":{"tool_calls":[{"#);
            if !self.options.omit_tool_call_index {
                out.push_str(r#""index":"#);
                render::push_num(out, call.number as u64 - 1);
                out.push(',');
            }
            if piece == 0 {
                out.push_str(r#""id":"call_mock_"#);
                render::push_num(out, call.number as u64);
                out.push_str(r#"","type":"function","function":{"name":"#);
                render::push_json_str(out, &call.name);
                out.push_str(r#","arguments":""}}]}"#);
            } else {
                out.push_str(r#""function":{"arguments":"#);
                render::push_json_str(out, call.arguments.piece(piece - 1));
                out.push_str("}}]}");
            }
            self.close_choice(out, None, "{}");
        });
    }

    fn push_finish(&self, out: &mut String) {
        let reason = self.plan.finish.openai();
        self.push_chunk(out, |out| {
            if self.shape == Shape::Completion {
                out.push_str(r#"{"text":"","index":0,"logprobs":null,"finish_reason":"#);
                render::push_json_str(out, reason);
                out.push('}');
            } else {
                out.push_str(r#"{"index":0,"delta":{}"#);
                self.close_choice(out, Some(reason), "{}");
            }
        });
    }

    /// Azure: the filter results for the whole answer, after the finish.
    fn push_filter(&self, out: &mut String) {
        let length: usize = self
            .plan
            .blocks
            .iter()
            .map(|block| match block {
                Block::Text(text) => text.len(),
                Block::Tool(_) => 0,
            })
            .sum();
        self.push_chunk(out, |out| {
            out.push_str(r#"{"index":0,"finish_reason":null,"delta":{},"content_filter_results":"#);
            out.push_str(azure::FILTER_RESULTS);
            out.push_str(r#","content_filter_offsets":{"check_offset":0,"start_offset":0,"end_offset":"#);
            render::push_num(out, length as u64);
            out.push_str("}}");
        });
    }
}

impl Events for Chunks {
    fn peek(&self) -> Option<Class> {
        match self.step {
            Step::Prompt | Step::Role => Some(Class::Frame),
            Step::Block { .. } => Some(Class::Content),
            Step::Finish | Step::Filter | Step::Usage | Step::Done => Some(Class::Tail),
            Step::End => None,
        }
    }

    fn push_next(&mut self, out: &mut String) {
        self.step = match self.step {
            Step::Prompt => {
                out.push_str(azure::STREAM_PROMPT_EVENT);
                Step::Role
            }
            Step::Role => {
                let content = if self.plan.has_text() { r#""""# } else { "null" };
                self.push_chunk(out, |out| {
                    out.push_str(r#"{"index":0,"delta":{"role":"assistant","content":"#);
                    out.push_str(content);
                    out.push('}');
                    self.close_choice(out, None, "{}");
                });
                Step::Block { block: 0, piece: 0 }
            }
            Step::Block { block, piece } => {
                match self.plan.blocks.get(block) {
                    Some(Block::Text(text)) => self.push_text(out, text, piece),
                    Some(Block::Tool(call)) => self.push_tool(out, call, piece),
                    None => {}
                }
                Step::Block { block, piece: piece + 1 }
            }
            Step::Finish => {
                self.push_finish(out);
                if self.shape == Shape::Azure {
                    Step::Filter
                } else {
                    self.after_finish()
                }
            }
            Step::Filter => {
                self.push_filter(out);
                self.after_finish()
            }
            Step::Usage => {
                out.push_str(&self.head);
                out.push_str(r#"],"usage":"#);
                push_usage(out, &self.plan);
                out.push_str("}\n\n");
                Step::Done
            }
            Step::Done => {
                out.push_str("data: [DONE]\n\n");
                Step::End
            }
            Step::End => Step::End,
        };
        self.skip_empty();
    }

    fn push_error(&self, out: &mut String) {
        out.push_str(concat!(
            r#"data: {"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#,
            "\n\n"
        ));
    }
}
