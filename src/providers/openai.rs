//! OpenAI-compatible servers that differ from OpenAI in small ways, made OpenAI's shape
//! again, as pure functions tested without I/O.
//!
//! Some servers stream `delta.tool_calls[]` entries without their `index`, which OpenAI's
//! SDKs need to put a call's pieces together. [`ToolIndexFiller`] fills it per choice: an
//! entry with an `id` not seen before gets the next index (0, 1, …), an entry with an `id`
//! seen before gets that call's index again, and an entry without an `id` continues the
//! last call. Entries that have an index keep it (and count as seen). An event without the
//! bytes `tool_calls` is passed on as it came, without parsing.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use memchr::memmem;
use serde_json::{Map, Value};

use super::dialect::{
    join_path, secret_header, split_base_url, Answer, Dialect, Head, Kind, Plain, Prepared, Reply, Target,
};
use super::{SendError, UpstreamError, UpstreamRequest};
use crate::config::{ProviderConfig, Quirks};
use crate::wire::sse_event::{data_of, Events};

/// The `openai` kind: OpenAI, or any server that speaks its API, with its quirks.
#[derive(Debug)]
struct OpenAi {
    /// The base URL's path without a trailing slash, e.g. `/v1`.
    base_path: String,
    quirks: Quirks,
}

pub(super) fn build(cfg: &ProviderConfig) -> Result<Kind, String> {
    let url = cfg.base_url.as_deref().ok_or("an HTTP provider needs `base_url`")?;
    let (scheme, authority, base_path) = split_base_url(url)?;
    let mut headers = Vec::new();
    if let Some(key) = cfg.api_key.as_ref().filter(|k| !k.is_empty()) {
        headers.push(secret_header(AUTHORIZATION, &format!("Bearer {}", key.expose()), "api_key")?);
    }
    let dialect = OpenAi { base_path, quirks: cfg.quirks.clone() };
    Ok(Kind { dialect: Box::new(dialect), target: Target::Http { scheme, authority, headers } })
}

impl Dialect for OpenAi {
    fn prepare(&self, req: UpstreamRequest<'_>) -> Result<Prepared, SendError> {
        let reply: Box<dyn Reply> =
            if self.quirks.fill_tool_call_index { Box::new(FillToolIndex) } else { Box::new(Plain) };
        Ok(Prepared {
            path_and_query: join_path(&self.base_path, req.endpoint.path(), req.query),
            headers: req.headers,
            body: apply_quirks(&self.quirks, req.body),
            translated: false,
            reply,
        })
    }
}

/// A server whose streamed tool calls may lack `index`.
struct FillToolIndex;

impl Reply for FillToolIndex {
    fn answer(self: Box<Self>, head: Head) -> Answer {
        if head.ok() && head.sse {
            Answer::Stream { rewriter: Box::new(ToolIndexFiller::new()), own_headers: false }
        } else {
            Answer::Pass
        }
    }
}

/// The body without what this server refuses. Only parsed when there is something to drop.
fn apply_quirks(quirks: &Quirks, body: Bytes) -> Bytes {
    if quirks.stream_options && quirks.drop_params.is_empty() {
        return body;
    }
    let dropped = quirks.drop_params.iter().map(String::as_str);
    let dropped: Vec<&str> =
        if quirks.stream_options { dropped.collect() } else { dropped.chain(["stream_options"]).collect() };
    let mut body = body;
    for key in dropped {
        let Ok(parsed) = crate::wire::JsonBody::parse(&body) else { return body };
        if let Some(without) = parsed.without(key) {
            body = Bytes::from(without);
        }
    }
    body
}

impl super::rewrite::StreamRewrite for ToolIndexFiller {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        ToolIndexFiller::feed(self, bytes)
    }
    fn finish(&mut self) -> Vec<u8> {
        ToolIndexFiller::finish(self)
    }
    fn broken(&self) -> Option<UpstreamError> {
        ToolIndexFiller::too_large(self).then_some(UpstreamError::Protocol)
    }
}

/// The per-stream state.
#[derive(Debug, Default)]
pub struct ToolIndexFiller {
    events: Events,
    /// Choice index → the tool calls of that choice so far.
    choices: HashMap<u64, Calls>,
}

/// The tool calls of one choice.
#[derive(Debug, Default)]
struct Calls {
    /// Call id → its index.
    ids: HashMap<String, u64>,
    next: u64,
    /// The index of the call the last entry belonged to.
    last: Option<u64>,
}

impl Calls {
    /// The index for an entry that has none.
    fn index_for(&mut self, id: Option<&str>) -> u64 {
        let known = match id {
            Some(id) => self.ids.get(id).copied(),
            None => self.last,
        };
        let k = known.unwrap_or(self.next);
        self.seen(k, id);
        k
    }

    /// An entry of call `k`.
    fn seen(&mut self, k: u64, id: Option<&str>) {
        if let Some(id) = id {
            self.ids.entry(id.to_string()).or_insert(k);
        }
        self.next = self.next.max(k.saturating_add(1));
        self.last = Some(k);
    }
}

impl ToolIndexFiller {
    pub fn new() -> Self {
        ToolIndexFiller::default()
    }

    /// Feed upstream bytes (split anywhere); returns the bytes to send on.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        self.events.push(bytes);
        while let Some(event) = self.events.next_event() {
            fill_event(&mut self.choices, event, &mut out);
        }
        out
    }

    /// The upstream ended: the bytes of an event that never ended, as they came.
    pub fn finish(&mut self) -> Vec<u8> {
        self.events.take_rest()
    }

    /// Whether an event grew past [`crate::wire::sse_event::MAX_EVENT`]: the stream is cut.
    pub fn too_large(&self) -> bool {
        self.events.too_large()
    }
}

fn fill_event(choices: &mut HashMap<u64, Calls>, event: &[u8], out: &mut Vec<u8>) {
    if memmem::find(event, b"tool_calls").is_none() {
        out.extend_from_slice(event);
        return;
    }
    let parsed = data_of(event).and_then(|(data, _)| serde_json::from_slice::<Value>(&data).ok());
    let Some(Value::Object(mut chunk)) = parsed else {
        out.extend_from_slice(event);
        return;
    };
    let is_chunk = chunk.get("object").is_none_or(|o| o == "chat.completion.chunk");
    if !is_chunk || !fill_chunk(choices, &mut chunk) {
        out.extend_from_slice(event);
        return;
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(Value::Object(chunk).to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// Fill the missing indexes of one chunk; whether any was missing.
fn fill_chunk(state: &mut HashMap<u64, Calls>, chunk: &mut Map<String, Value>) -> bool {
    let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else { return false };
    let mut changed = false;
    for (position, choice) in choices.iter_mut().enumerate() {
        let index = choice.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
        let Some(calls) = choice.pointer_mut("/delta/tool_calls").and_then(Value::as_array_mut) else { continue };
        let so_far = state.entry(index).or_default();
        for call in calls.iter_mut().filter_map(Value::as_object_mut) {
            let id = call.get("id").and_then(Value::as_str).filter(|id| !id.is_empty());
            match call.get("index").and_then(Value::as_u64) {
                Some(k) => so_far.seen(k, id),
                None => {
                    let k = so_far.index_for(id);
                    call.insert("index".into(), Value::from(k));
                    changed = true;
                }
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests;
