//! A [`Plan`] rendered as an Anthropic message: the whole JSON answer, and the streamed
//! events (`event:` and `data:` lines, like the real API) as an [`Events`] source.

use super::errors;
use super::plan::{Block, Plan, ToolCall};
use super::render;
use super::stream::{Class, Events};

/// The Anthropic `usage` object; `output` is the output token count to report.
fn push_usage(out: &mut String, plan: &Plan, output: u64) {
    let cached = plan.cached_tokens.unwrap_or(0);
    out.push_str(r#"{"input_tokens":"#);
    render::push_num(out, plan.prompt_tokens.saturating_sub(cached));
    out.push_str(r#","output_tokens":"#);
    render::push_num(out, output);
    out.push_str(r#","cache_read_input_tokens":"#);
    render::push_num(out, cached);
    out.push_str(r#","cache_creation_input_tokens":0}"#);
}

fn push_tool_id(out: &mut String, call: &ToolCall) {
    out.push_str(r#""toolu_mock_"#);
    render::push_num(out, call.number as u64);
    out.push('"');
}

/// The complete (non-streamed) message.
pub(crate) fn whole(model: &str, plan: &Plan) -> String {
    let mut out = String::with_capacity(320 + model.len() + plan.completion_tokens() as usize * 8);
    out.push_str(r#"{"id":""#);
    render::push_id(&mut out, "msg_mock_");
    out.push_str(r#"","type":"message","role":"assistant","model":"#);
    render::push_json_str(&mut out, model);
    out.push_str(r#","content":["#);
    for (i, block) in plan.blocks.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match block {
            Block::Text(text) => {
                out.push_str(r#"{"type":"text","text":""#);
                text.push_text(&mut out);
                out.push_str(r#""}"#);
            }
            Block::Tool(call) => {
                out.push_str(r#"{"type":"tool_use","id":"#);
                push_tool_id(&mut out, call);
                out.push_str(r#","name":"#);
                render::push_json_str(&mut out, &call.name);
                out.push_str(r#","input":"#);
                out.push_str(call.arguments.as_str());
                out.push('}');
            }
        }
    }
    out.push_str(r#"],"stop_reason":""#);
    out.push_str(plan.finish.anthropic());
    out.push_str(r#"","stop_sequence":null,"usage":"#);
    push_usage(&mut out, plan, plan.completion_tokens());
    out.push('}');
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Start,
    Ping,
    /// The ping between two blocks, before block `0`.
    Between(usize),
    BlockStart(usize),
    Delta {
        block: usize,
        piece: usize,
    },
    BlockStop(usize),
    MessageDelta,
    MessageStop,
    End,
}

/// The streamed events of one message.
pub(crate) struct MessageEvents {
    /// The `message_start` event, rendered up front (it carries the id and model).
    start: String,
    plan: Plan,
    step: Step,
}

impl MessageEvents {
    pub(crate) fn new(model: &str, plan: Plan) -> Self {
        let mut start = String::with_capacity(320 + model.len());
        start.push_str("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"");
        render::push_id(&mut start, "msg_mock_");
        start.push_str(r#"","type":"message","role":"assistant","model":"#);
        render::push_json_str(&mut start, model);
        start.push_str(r#","content":[],"stop_reason":null,"stop_sequence":null,"usage":"#);
        push_usage(&mut start, &plan, 1);
        start.push_str("}}\n\n");
        Self { start, plan, step: Step::Start }
    }

    fn pieces(&self, block: usize) -> usize {
        match self.plan.blocks.get(block) {
            Some(Block::Text(text)) => text.pieces(),
            Some(Block::Tool(call)) => call.arguments.count(),
            None => 0,
        }
    }

    /// The step after the deltas of `block` (or after its start, when it has none).
    fn delta_or_stop(&self, block: usize, piece: usize) -> Step {
        if piece < self.pieces(block) {
            Step::Delta { block, piece }
        } else {
            Step::BlockStop(block)
        }
    }

    /// The step after block `block` is closed.
    fn after_block(&self, block: usize) -> Step {
        if block + 1 < self.plan.blocks.len() {
            Step::Between(block + 1)
        } else {
            Step::MessageDelta
        }
    }

    fn push_delta(&self, out: &mut String, block: usize, piece: usize) {
        out.push_str("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":");
        render::push_num(out, block as u64);
        match self.plan.blocks.get(block) {
            Some(Block::Text(text)) => {
                out.push_str(r#","delta":{"type":"text_delta","text":""#);
                text.push_piece(out, piece);
                out.push_str("\"}}\n\n");
            }
            Some(Block::Tool(call)) => {
                out.push_str(r#","delta":{"type":"input_json_delta","partial_json":"#);
                render::push_json_str(out, call.arguments.piece(piece));
                out.push_str("}}\n\n");
            }
            None => out.push_str("}\n\n"),
        }
    }

    fn push_block_start(&self, out: &mut String, block: usize) {
        out.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":");
        render::push_num(out, block as u64);
        match self.plan.blocks.get(block) {
            Some(Block::Tool(call)) => {
                out.push_str(r#","content_block":{"type":"tool_use","id":"#);
                push_tool_id(out, call);
                out.push_str(r#","name":"#);
                render::push_json_str(out, &call.name);
                out.push_str(r#","input":{}}}"#);
            }
            Some(Block::Text(_)) | None => out.push_str(r#","content_block":{"type":"text","text":""}}"#),
        }
        out.push_str("\n\n");
    }
}

const PING: &str = "event: ping\ndata: {\"type\":\"ping\"}\n\n";

impl Events for MessageEvents {
    fn peek(&self) -> Option<Class> {
        match self.step {
            Step::Start | Step::Ping | Step::Between(_) | Step::BlockStart(_) | Step::BlockStop(_) => {
                Some(Class::Frame)
            }
            Step::Delta { .. } => Some(Class::Content),
            Step::MessageDelta | Step::MessageStop => Some(Class::Tail),
            Step::End => None,
        }
    }

    fn push_next(&mut self, out: &mut String) {
        self.step = match self.step {
            Step::Start => {
                out.push_str(&self.start);
                Step::Ping
            }
            Step::Ping => {
                out.push_str(PING);
                if self.plan.blocks.is_empty() {
                    Step::MessageDelta
                } else {
                    Step::BlockStart(0)
                }
            }
            Step::Between(block) => {
                out.push_str(PING);
                Step::BlockStart(block)
            }
            Step::BlockStart(block) => {
                self.push_block_start(out, block);
                self.delta_or_stop(block, 0)
            }
            Step::Delta { block, piece } => {
                self.push_delta(out, block, piece);
                self.delta_or_stop(block, piece + 1)
            }
            Step::BlockStop(block) => {
                out.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":");
                render::push_num(out, block as u64);
                out.push_str("}\n\n");
                self.after_block(block)
            }
            Step::MessageDelta => {
                out.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"");
                out.push_str(self.plan.finish.anthropic());
                out.push_str(r#"","stop_sequence":null},"usage":{"output_tokens":"#);
                render::push_num(out, self.plan.completion_tokens());
                out.push_str("}}\n\n");
                Step::MessageStop
            }
            Step::MessageStop => {
                out.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
                Step::End
            }
            Step::End => Step::End,
        };
    }

    fn push_error(&self, out: &mut String) {
        out.push_str("event: error\ndata: ");
        out.push_str(errors::ANTHROPIC_OVERLOADED_JSON);
        out.push_str("\n\n");
    }
}
