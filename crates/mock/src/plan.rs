//! The kind-neutral answer to a chat request: decided once from the conversation, then
//! rendered as OpenAI, Anthropic or Azure JSON or SSE.
//!
//! Each API's parser reduces its request to a [`Conversation`]; [`decide`] turns that into
//! a [`Plan`]. The same conversation sent as an OpenAI request and as the equivalent
//! Anthropic request gives the same plan: same text, same tool names and arguments, same
//! finish and token counts. The rules, in order:
//!
//! 1. the last message holds tool results → `Results: ` and their texts joined with `; `;
//! 2. structured output asked for (OpenAI `response_format`) → the JSON generated from the
//!    schema as text (Anthropic receives it as a forced tool, so rule 3 gives the same JSON);
//! 3. tools offered and `tool_choice` not none → a named tool, else the first two tools
//!    (one when parallel calls are off), arguments generated from their schemas;
//! 4. otherwise the generated answer `mock0 mock1 ...` (`chunks` words, capped by the
//!    request's token limit, which then makes the finish `length`), or the `answer` knob's
//!    text when it is set (cut to its first `limit` words when it has more, finish
//!    `length`), streamed in pieces that each end after a whitespace run.

use std::borrow::Cow;

use serde_json::Value;

use super::schema;
use super::script::Script;

/// Completion tokens counted for one tool call or one structured (JSON) answer.
pub(crate) const TOOL_TOKENS: u64 = 10;

/// Words of `text`, the mock's token unit.
pub(crate) fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// What the request offers and asks for, in no particular API's terms.
pub(crate) struct Conversation<'a> {
    /// Words over all message text (system, user, assistant and tool results).
    pub prompt_words: u64,
    pub tools: Vec<Tool<'a>>,
    pub choice: ToolChoice<'a>,
    /// The texts of the tool results, when the last message holds tool results.
    pub results: Option<Vec<String>>,
    pub output: Output,
    /// The request's completion token limit, if any.
    pub max_tokens: Option<u64>,
}

/// One tool offered by the request.
pub(crate) struct Tool<'a> {
    pub name: Cow<'a, str>,
    /// The JSON schema of its arguments.
    pub schema: Option<Value>,
}

/// Which tools the answer may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToolChoice<'a> {
    /// Any tools; `parallel: false` allows one call only.
    Auto {
        parallel: bool,
    },
    None,
    Named(Cow<'a, str>),
}

/// The answer's format (OpenAI `response_format`).
pub(crate) enum Output {
    Text,
    JsonObject,
    /// A JSON schema; `None` when the request gave no schema.
    JsonSchema(Option<Value>),
}

/// A text split into the pieces it is streamed in; the pieces join into the text exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pieces {
    text: String,
    /// Start offsets of the pieces after the first.
    cuts: Vec<usize>,
}

impl Pieces {
    /// One piece per word, each starting with the whitespace before it.
    pub(crate) fn words(text: String) -> Self {
        let mut cuts = Vec::new();
        let mut in_word = false;
        let mut seen_word = false;
        for (i, c) in text.char_indices() {
            let space = c.is_whitespace();
            if !space && !in_word && seen_word {
                let start = text.get(..i).map_or(i, |before| before.trim_end().len());
                cuts.push(start);
            }
            seen_word |= !space;
            in_word = !space;
        }
        Self { text, cuts }
    }

    /// One piece per word, each ending with the whitespace after it (leading whitespace
    /// belongs to the first piece): a cut after every whitespace run that a word follows.
    pub(crate) fn after_whitespace(text: String) -> Self {
        let mut cuts = Vec::new();
        let mut after_space = false;
        let mut seen_word = false;
        for (i, c) in text.char_indices() {
            let space = c.is_whitespace();
            if !space && after_space && seen_word {
                cuts.push(i);
            }
            seen_word |= !space;
            after_space = space;
        }
        Self { text, cuts }
    }

    /// The text as one piece.
    pub(crate) fn whole(text: String) -> Self {
        Self { text, cuts: Vec::new() }
    }

    /// About three pieces of similar length (for JSON, streamed like tool arguments).
    pub(crate) fn thirds(text: String) -> Self {
        let len = text.len();
        let mut cuts: Vec<usize> = Vec::with_capacity(2);
        for mut cut in [len / 3, 2 * len / 3] {
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            if cut > 0 && cut < len && cuts.last() != Some(&cut) {
                cuts.push(cut);
            }
        }
        Self { text, cuts }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Number of pieces (0 for an empty text).
    pub(crate) fn count(&self) -> usize {
        if self.text.is_empty() {
            0
        } else {
            self.cuts.len() + 1
        }
    }

    /// Piece `index` (empty past the end).
    pub(crate) fn piece(&self, index: usize) -> &str {
        let start = if index == 0 { 0 } else { self.cuts.get(index - 1).copied().unwrap_or(self.text.len()) };
        let end = self.cuts.get(index).copied().unwrap_or(self.text.len());
        self.text.get(start..end).unwrap_or_default()
    }
}

/// The text of a text block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TextBody {
    /// The generated answer `mock0 mock1 ...` of this many words, rendered on the fly.
    Words(usize),
    /// Literal text, streamed word by word.
    Literal(Pieces),
    /// A JSON document (structured output), streamed in about three pieces.
    Json(Pieces),
}

impl TextBody {
    /// Number of streamed pieces.
    pub(crate) fn pieces(&self) -> usize {
        match self {
            TextBody::Words(n) => *n,
            TextBody::Literal(p) | TextBody::Json(p) => p.count(),
        }
    }

    /// Append piece `index`, escaped for a JSON string.
    pub(crate) fn push_piece(&self, out: &mut String, index: usize) {
        match self {
            TextBody::Words(_) => super::render::push_word(out, index),
            TextBody::Literal(p) | TextBody::Json(p) => super::render::push_escaped(out, p.piece(index)),
        }
    }

    /// Append the whole text, escaped for a JSON string.
    pub(crate) fn push_text(&self, out: &mut String) {
        match self {
            TextBody::Words(n) => super::render::push_words(out, *n),
            TextBody::Literal(p) | TextBody::Json(p) => super::render::push_escaped(out, p.as_str()),
        }
    }

    /// Length of the text in bytes.
    pub(crate) fn len(&self) -> usize {
        match self {
            // "mock{i}" plus a separating space: 5 + digits, less the first space.
            TextBody::Words(n) => (0..*n).map(|i| 5 + digits(i)).sum::<usize>().saturating_sub(1),
            TextBody::Literal(p) | TextBody::Json(p) => p.as_str().len(),
        }
    }

    fn tokens(&self) -> u64 {
        match self {
            TextBody::Words(n) => *n as u64,
            TextBody::Literal(p) => words(p.as_str()),
            TextBody::Json(_) => TOOL_TOKENS,
        }
    }
}

fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// One tool call of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ToolCall {
    /// Position among the answer's tool calls, from 1 (ids are `call_mock_<n>` / `toolu_mock_<n>`).
    pub number: usize,
    pub name: String,
    /// The arguments as compact JSON, in about three streamed pieces.
    pub arguments: Pieces,
    /// Completion tokens counted for the call ([`TOOL_TOKENS`], or the words of a judgement).
    pub tokens: u64,
}

/// One block of the answer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Block {
    Text(TextBody),
    Tool(ToolCall),
}

/// Why the answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl Finish {
    /// OpenAI's `finish_reason`.
    pub(crate) fn openai(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::ToolCalls => "tool_calls",
            Finish::ContentFilter => "content_filter",
        }
    }

    /// Anthropic's `stop_reason`.
    pub(crate) fn anthropic(self) -> &'static str {
        match self {
            Finish::Stop => "end_turn",
            Finish::Length => "max_tokens",
            Finish::ToolCalls => "tool_use",
            Finish::ContentFilter => "refusal",
        }
    }
}

/// The decided answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub blocks: Vec<Block>,
    pub finish: Finish,
    pub prompt_tokens: u64,
    /// Prompt tokens read from cache (`x-mock-cached-tokens`), at most `prompt_tokens`.
    pub cached_tokens: Option<u64>,
}

impl Plan {
    pub(crate) fn completion_tokens(&self) -> u64 {
        self.blocks
            .iter()
            .map(|block| match block {
                Block::Text(text) => text.tokens(),
                Block::Tool(call) => call.tokens,
            })
            .sum()
    }

    /// Whether the answer has any text block.
    pub(crate) fn has_text(&self) -> bool {
        self.blocks.iter().any(|block| matches!(block, Block::Text(_)))
    }

    /// Whether the answer calls any tool.
    pub(crate) fn has_tools(&self) -> bool {
        self.blocks.iter().any(|block| matches!(block, Block::Tool(_)))
    }
}

/// The request-independent inputs of a plan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings<'a> {
    /// Words of the generated answer.
    pub chunks: usize,
    pub cached_tokens: Option<u64>,
    pub script: Option<Script>,
    /// The `answer` knob: the text given instead of the generated answer.
    pub answer: Option<&'a str>,
}

/// Decide the answer to `conversation`.
pub(crate) fn decide(conversation: &Conversation<'_>, settings: Settings<'_>) -> Plan {
    let (blocks, finish) = if settings.script == Some(Script::TextToolText) {
        text_tool_text(conversation)
    } else if let Some(results) = &conversation.results {
        let text = format!("Results: {}", results.join("; "));
        (vec![Block::Text(TextBody::Literal(Pieces::words(text)))], Finish::Stop)
    } else if let Some(json) = structured(&conversation.output) {
        (vec![Block::Text(TextBody::Json(Pieces::thirds(json)))], Finish::Stop)
    } else if let Some(calls) = tool_calls(conversation) {
        (calls, Finish::ToolCalls)
    } else if let Some(answer) = settings.answer {
        let (text, finish) = answer_text(answer, conversation.max_tokens);
        (vec![Block::Text(text)], finish)
    } else {
        let limit = conversation.max_tokens.map_or(usize::MAX, |max| usize::try_from(max).unwrap_or(usize::MAX));
        let finish = if limit < settings.chunks { Finish::Length } else { Finish::Stop };
        (vec![Block::Text(TextBody::Words(settings.chunks.min(limit)))], finish)
    };
    finish_plan(blocks, finish, conversation, settings)
}

/// The plan of `blocks`: the finish scripts (`content_filter`, `incomplete`) override
/// `finish`; prompt tokens are the conversation's words, cached tokens at most those.
pub(crate) fn finish_plan(
    blocks: Vec<Block>,
    mut finish: Finish,
    conversation: &Conversation<'_>,
    settings: Settings<'_>,
) -> Plan {
    match settings.script {
        Some(Script::ContentFilter) => finish = Finish::ContentFilter,
        Some(Script::Incomplete) => finish = Finish::Length,
        _ => {}
    }
    let prompt_tokens = conversation.prompt_words;
    let cached_tokens = settings.cached_tokens.map(|cached| cached.min(prompt_tokens));
    Plan { blocks, finish, prompt_tokens, cached_tokens }
}

/// The `answer` knob's text as a text block: whole, or cut to its first `limit` words
/// (finish `length`) when it has more words than that.
pub(crate) fn answer_text(answer: &str, limit: Option<u64>) -> (TextBody, Finish) {
    let (text, finish) = match limit {
        Some(limit) if limit < words(answer) => (first_words(answer, limit), Finish::Length),
        _ => (answer, Finish::Stop),
    };
    (TextBody::Literal(Pieces::after_whitespace(text.to_owned())), finish)
}

/// `text` up to the end of its `n`th word (empty for 0).
fn first_words(text: &str, n: u64) -> &str {
    let mut seen = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if space && in_word {
            seen += 1;
            if seen == n {
                return text.get(..i).unwrap_or(text);
            }
        }
        in_word = !space;
    }
    if n == 0 {
        ""
    } else {
        text
    }
}

/// The JSON text of a structured answer, if one is asked for.
fn structured(output: &Output) -> Option<String> {
    match output {
        Output::Text => None,
        Output::JsonObject => Some(schema::generate_json(None)),
        Output::JsonSchema(schema) => Some(schema::generate_json(schema.as_ref())),
    }
}

/// The tool calls the conversation asks for, if any.
fn tool_calls(conversation: &Conversation<'_>) -> Option<Vec<Block>> {
    let tools = &conversation.tools;
    let chosen: Vec<(&str, Option<&Value>)> = match &conversation.choice {
        _ if tools.is_empty() => return None,
        ToolChoice::None => return None,
        ToolChoice::Named(name) => {
            let schema = tools.iter().find(|tool| tool.name == *name).and_then(|tool| tool.schema.as_ref());
            vec![(name, schema)]
        }
        ToolChoice::Auto { parallel } => tools
            .iter()
            .take(if *parallel { 2 } else { 1 })
            .map(|tool| (tool.name.as_ref(), tool.schema.as_ref()))
            .collect(),
    };
    Some(chosen.into_iter().enumerate().map(|(i, (name, schema))| call(i + 1, name, schema)).collect())
}

fn call(number: usize, name: &str, schema: Option<&Value>) -> Block {
    let arguments = Pieces::thirds(schema::generate_json(schema));
    Block::Tool(ToolCall { number, name: name.to_owned(), arguments, tokens: TOOL_TOKENS })
}

/// The `text_tool_text` script: some text, a call of the first tool offered (or
/// `mock_tool`), more text.
fn text_tool_text(conversation: &Conversation<'_>) -> (Vec<Block>, Finish) {
    let (name, schema) = match conversation.tools.first() {
        Some(tool) => (tool.name.as_ref(), tool.schema.as_ref()),
        None => ("mock_tool", None),
    };
    let blocks = vec![
        Block::Text(TextBody::Literal(Pieces::words("Let me look that up.".to_owned()))),
        call(1, name, schema),
        Block::Text(TextBody::Literal(Pieces::words(" One moment.".to_owned()))),
    ];
    (blocks, Finish::ToolCalls)
}
