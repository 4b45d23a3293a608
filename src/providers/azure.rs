//! Azure OpenAI answers in OpenAI's shape, as pure functions tested without I/O.
//!
//! Azure adds content-filter annotations to OpenAI's answers; apps and SDKs written for
//! OpenAI do not expect them. On a stream:
//! - the leading annotation chunk (`"choices":[]` with `prompt_filter_results`, or
//!   `prompt_annotations` in older API versions, empty id and model) is dropped;
//! - filter-only chunks (every choice has an empty or no `delta`, no `finish_reason`, and
//!   only `content_filter_results` / `content_filter_offsets` besides) are dropped;
//! - `content_filter_results`, `content_filter_offsets` and `prompt_filter_results` are
//!   removed from every other chunk; `finish_reason: "content_filter"` stays (with an empty
//!   `delta` when Azure sent it in a filter chunk without one, and the stream's id, model
//!   and time instead of Azure's empty ones), as do the usage chunk and `[DONE]`;
//! - an event without the bytes `filter` is passed on as it came, without parsing (once
//!   the stream's id is known); the common content chunk (one choice, a non-empty delta)
//!   has its filter results cut out of its bytes, also without parsing.
//!
//! A whole JSON answer loses `prompt_filter_results` and each choice's filter results, and
//! Azure's 400 for a filtered prompt becomes OpenAI's `content_filter` error.

use bytes::Bytes;
use http::header::{HeaderName, CONTENT_LENGTH};
use http::Response;
use memchr::memmem;
use serde_json::{json, Map, Value};

use super::dialect::{secret_header, Answer, Dialect, Head, Kind, Prepared, Reply, Target};
use super::{json_response, SendError, UpstreamError, UpstreamRequest};
use crate::config::ProviderConfig;
use crate::wire::sse_event::{data_of, Events};
use crate::wire::AzureUrl;

/// The `azure_openai` kind: Azure's URL forms and `api-key`, its answers normalised.
#[derive(Debug)]
struct Azure {
    url: AzureUrl,
    /// Remove Azure's filter annotations (`normalise`, on unless turned off).
    normalise: bool,
}

pub(super) fn build(cfg: &ProviderConfig) -> Result<Kind, String> {
    let url = cfg.base_url.as_deref().ok_or("an `azure_openai` provider needs `base_url`")?;
    let url = AzureUrl::parse(url, cfg.api_version.as_deref())?;
    let mut headers = Vec::new();
    if let Some(key) = cfg.api_key.as_ref().filter(|k| !k.is_empty()) {
        headers.push(secret_header(HeaderName::from_static("api-key"), key.expose(), "api_key")?);
    }
    let target = Target::Http { scheme: url.scheme.clone(), authority: url.authority.clone(), headers };
    Ok(Kind { dialect: Box::new(Azure { url, normalise: cfg.normalise.unwrap_or(true) }), target })
}

impl Dialect for Azure {
    fn prepare(&self, req: UpstreamRequest<'_>) -> Result<Prepared, SendError> {
        let path_and_query =
            self.url.path_and_query(req.endpoint, req.model, req.query).ok_or_else(|| SendError::Refused {
                param: "model",
                message: format!("`{}` is not a valid Azure deployment name", req.model),
            })?;
        Ok(Prepared {
            path_and_query,
            headers: req.headers,
            body: req.body,
            translated: false,
            reply: if self.normalise { Box::new(AzureReply::<true>) } else { Box::new(AzureReply::<false>) },
        })
    }
}

/// `NORMALISE`: remove Azure's filter annotations. (A unit type either way, so boxing it
/// allocates nothing.)
struct AzureReply<const NORMALISE: bool>;

impl<const NORMALISE: bool> Reply for AzureReply<NORMALISE> {
    fn answer(self: Box<Self>, head: Head) -> Answer {
        if !head.ok() {
            if head.status != 400 {
                return Answer::Pass;
            }
            return Answer::Whole(Box::new(|parts, body| {
                Ok(match translate_error(parts.status.as_u16(), &body) {
                    Some((status, json)) => json_response(parts, status, &json),
                    None => Response::from_parts(parts, crate::wire::body::full(body)),
                })
            }));
        }
        if !NORMALISE {
            return Answer::Pass;
        }
        if head.sse {
            return Answer::Stream { rewriter: Box::new(StreamNormaliser::new()), own_headers: false };
        }
        Answer::Whole(Box::new(|mut parts, body| {
            let body = normalise_json(&body).map_or(body, Bytes::from);
            parts.headers.remove(CONTENT_LENGTH);
            Ok(Response::from_parts(parts, crate::wire::body::full(body)))
        }))
    }
}

impl super::rewrite::StreamRewrite for StreamNormaliser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        StreamNormaliser::feed(self, bytes)
    }
    fn finish(&mut self) -> Vec<u8> {
        StreamNormaliser::finish(self)
    }
    fn broken(&self) -> Option<UpstreamError> {
        StreamNormaliser::too_large(self).then_some(UpstreamError::Protocol)
    }
}

/// Every annotation this module removes has this in its name.
const FILTER: &[u8] = b"filter";

/// The prompt's filter results (`prompt_annotations` in older API versions).
const PROMPT_KEYS: [&str; 2] = ["prompt_filter_results", "prompt_annotations"];

/// The keys a choice of a filter-only chunk may have.
const FILTER_ONLY_KEYS: [&str; 6] =
    ["index", "delta", "finish_reason", "logprobs", "content_filter_results", "content_filter_offsets"];

/// The members that say which completion a chunk belongs to.
const IDENTITY_KEYS: [&str; 5] = ["id", "object", "created", "model", "system_fingerprint"];

/// The per-stream state.
#[derive(Debug, Default)]
pub struct StreamNormaliser {
    events: Events,
    /// The identity members of the first chunk with an id. Azure sends its filter chunks
    /// with an empty id and model; one that is kept (a `content_filter` finish) gets these.
    identity: Option<Map<String, Value>>,
}

impl StreamNormaliser {
    pub fn new() -> Self {
        StreamNormaliser::default()
    }

    /// Feed upstream bytes (split anywhere); returns the bytes to send on.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        self.events.push(bytes);
        while let Some(event) = self.events.next_event() {
            normalise_event(event, &mut self.identity, &mut out);
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

/// What to do with one chunk.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    Unchanged,
    Changed,
    Drop,
}

fn normalise_event(event: &[u8], identity: &mut Option<Map<String, Value>>, out: &mut Vec<u8>) {
    let filtered = memmem::find(event, FILTER).is_some();
    if !filtered && identity.is_some() {
        out.extend_from_slice(event);
        return;
    }
    if filtered && identity.is_some() && stripped_content_chunk(event, out) {
        return;
    }
    let parsed = data_of(event).and_then(|(data, _)| serde_json::from_slice::<Value>(&data).ok());
    let Some(Value::Object(mut chunk)) = parsed else {
        out.extend_from_slice(event);
        return;
    };
    if identity.is_none() {
        *identity = identity_of(&chunk);
    }
    if !filtered {
        out.extend_from_slice(event);
        return;
    }
    match normalise_chunk(&mut chunk) {
        Change::Unchanged => out.extend_from_slice(event),
        Change::Drop => {}
        Change::Changed => {
            if let Some(identity) = identity.as_ref().filter(|_| chunk.get("id").is_none_or(|id| id == "")) {
                chunk.extend(identity.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(Value::Object(chunk).to_string().as_bytes());
            out.extend_from_slice(b"\n\n");
        }
    }
}

/// The common chunk — one choice with a non-empty `delta` and its filter results — with
/// those results cut out of the bytes, without building a JSON tree (every other member
/// keeps its bytes and order). `false` for any other event: the caller parses it.
fn stripped_content_chunk(event: &[u8], out: &mut Vec<u8>) -> bool {
    let Some((data, true)) = data_of(event) else { return false };
    let count = |needle: &[u8]| memmem::find_iter(&data, needle).count();
    if count(b"\"delta\":{\"") != 1 || count(b"\"delta\"") != 1 || PROMPT_KEYS.iter().any(|k| count(k.as_bytes()) > 0) {
        return false;
    }
    let mut json = data.into_owned();
    for key in [&b"content_filter_results"[..], b"content_filter_offsets"] {
        while let Some(cut) = member_span(&json, key) {
            json.drain(cut);
        }
    }
    if memmem::find(&json, FILTER).is_some() {
        // `filter` somewhere else (say, in the text): a cut could have been wrong; parse.
        return false;
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&json);
    out.extend_from_slice(b"\n\n");
    true
}

/// Where the first member named `key` is in the compact JSON `json`, with the comma that
/// separates it from its neighbour: the bytes to remove. Strings (and what they hold) are
/// skipped, so a key inside a value never matches.
fn member_span(json: &[u8], key: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                let end = string_end(json, i)?;
                let name = &json[i + 1..end - 1];
                if name == key && json.get(end) == Some(&b':') {
                    let value_end = value_end(json, end + 1)?;
                    return Some(if json.get(value_end) == Some(&b',') {
                        i..value_end + 1
                    } else if i > 0 && json[i - 1] == b',' {
                        i - 1..value_end
                    } else {
                        i..value_end
                    });
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    None
}

/// The index just past the string that starts at `start` (a `"`).
fn string_end(json: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < json.len() {
        match json[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The index just past the JSON value that starts at `start`.
fn value_end(json: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i < json.len() {
        match json[i] {
            b'"' => {
                i = string_end(json, i)?;
                if depth == 0 {
                    return Some(i);
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => return Some(i),
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            b',' if depth == 0 => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn normalise_chunk(chunk: &mut Map<String, Value>) -> Change {
    let annotated = PROMPT_KEYS.iter().any(|k| chunk.contains_key(*k));
    let no_usage = chunk.get("usage").is_none_or(Value::is_null);
    if let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) {
        if choices.is_empty() && annotated && no_usage {
            return Change::Drop;
        }
        if !choices.is_empty() && choices.iter().all(filter_only) {
            return Change::Drop;
        }
    }
    let mut changed = strip_prompt(chunk);
    if let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) {
        let before = choices.len();
        choices.retain(|c| !filter_only(c));
        changed |= choices.len() != before;
        if strip_choices(choices) {
            changed = true;
            // A finish that came in a filter chunk has no delta; OpenAI's SDKs expect one.
            for c in choices.iter_mut().filter_map(Value::as_object_mut) {
                c.entry("delta").or_insert_with(|| json!({}));
            }
        }
    }
    if changed {
        Change::Changed
    } else {
        Change::Unchanged
    }
}

/// The identity members of a chunk that has an id.
fn identity_of(chunk: &Map<String, Value>) -> Option<Map<String, Value>> {
    chunk.get("id").and_then(Value::as_str).filter(|id| !id.is_empty())?;
    Some(IDENTITY_KEYS.iter().filter_map(|k| Some((k.to_string(), chunk.get(*k)?.clone()))).collect())
}

/// A choice that says nothing but content-filter results.
fn filter_only(choice: &Value) -> bool {
    let Some(c) = choice.as_object() else { return false };
    let delta_empty = c.get("delta").is_none_or(|d| d.as_object().is_some_and(Map::is_empty));
    let no_finish = c.get("finish_reason").is_none_or(Value::is_null);
    let no_logprobs = c.get("logprobs").is_none_or(Value::is_null);
    let annotated = c.contains_key("content_filter_results") || c.contains_key("content_filter_offsets");
    let only_known = c.keys().all(|k| FILTER_ONLY_KEYS.contains(&k.as_str()));
    delta_empty && no_finish && no_logprobs && annotated && only_known
}

/// Remove the prompt's filter results; whether there were any.
fn strip_prompt(answer: &mut Map<String, Value>) -> bool {
    let mut changed = false;
    for k in PROMPT_KEYS {
        changed |= answer.remove(k).is_some();
    }
    changed
}

/// Remove each choice's filter results; whether there were any.
fn strip_choices(choices: &mut [Value]) -> bool {
    let mut changed = false;
    for c in choices.iter_mut().filter_map(Value::as_object_mut) {
        changed |= c.remove("content_filter_results").is_some();
        changed |= c.remove("content_filter_offsets").is_some();
    }
    changed
}

/// A whole (not streamed) JSON answer without Azure's filter results; `None` when there is
/// nothing to change or the body is not a JSON object (send the original).
pub fn normalise_json(body: &[u8]) -> Option<Vec<u8>> {
    memmem::find(body, FILTER)?;
    let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(body) else { return None };
    let mut changed = strip_prompt(&mut answer);
    if let Some(choices) = answer.get_mut("choices").and_then(Value::as_array_mut) {
        changed |= strip_choices(choices);
    }
    if !changed {
        return None;
    }
    serde_json::to_vec(&Value::Object(answer)).ok()
}

/// Azure's 400 for a prompt its content filter refused, as OpenAI's error (status, body);
/// `None` for any other answer.
pub fn translate_error(status: u16, body: &[u8]) -> Option<(u16, Value)> {
    if status != 400 {
        return None;
    }
    let parsed: Value = serde_json::from_slice(body).ok()?;
    let error = parsed.get("error")?;
    if error.get("code").and_then(Value::as_str) != Some("content_filter") {
        return None;
    }
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the prompt was refused by the provider's content filter");
    let param = error.get("param").and_then(Value::as_str).unwrap_or("prompt");
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": "content_filter"}});
    Some((400, body))
}

#[cfg(test)]
mod tests;
