//! Per-request knob resolution: process-wide settings overridden by `x-mock-*` headers
//! or query parameters (the header wins), plus the value parsers shared with the CLI.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName};

use super::plan;
use super::script::{self, Script};
use super::stream::{Cut, Timing};
use super::MockSettings;

/// Largest accepted `chunks` value (bounds the size of a non-streamed answer).
pub(crate) const MAX_CHUNKS: usize = 100_000;

/// Largest accepted `answer` text, in bytes (after percent-decoding).
pub const MAX_ANSWER: usize = 64 * 1024;

/// One knob: its header and its query parameter.
struct Knob {
    header: HeaderName,
    header_str: &'static str,
    param: &'static str,
}

const fn knob(header: &'static str, param: &'static str) -> Knob {
    Knob { header: HeaderName::from_static(header), header_str: header, param }
}

static LATENCY: Knob = knob("x-mock-latency-ms", "latency_ms");
static ERROR_RATE: Knob = knob("x-mock-error-rate", "error_rate");
static ERROR_STATUS: Knob = knob("x-mock-error-status", "error_status");
static CHUNKS: Knob = knob("x-mock-chunks", "chunks");
static CHUNK_DELAY: Knob = knob("x-mock-chunk-delay-ms", "chunk_delay_ms");
static BREAK_AFTER: Knob = knob("x-mock-break-after", "break_after");
static SCRIPT: Knob = knob("x-mock-script", "script");
static CACHED_TOKENS: Knob = knob("x-mock-cached-tokens", "cached_tokens");
static ANSWER: Knob = knob("x-mock-answer", "answer");

/// The effective knobs of one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Knobs {
    pub latency: Duration,
    pub error_rate: f64,
    pub error_status: u16,
    pub chunks: usize,
    pub chunk_delay: Duration,
    /// Streamed answers fail the body after this many content chunks.
    pub break_after: Option<usize>,
    /// A scripted answer (failure or unusual shape).
    pub script: Option<Script>,
    /// Prompt tokens reported as read from cache.
    pub cached_tokens: Option<u64>,
    /// The request's `answer` override (the process-wide one is in [`MockSettings`]).
    pub answer: Option<String>,
}

/// A knob value that could not be parsed; `name` is the header or query parameter used.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for {name}: {detail}")]
pub(crate) struct KnobError {
    pub name: &'static str,
    pub detail: String,
}

impl Knobs {
    /// Resolve the knobs of one request.
    pub(crate) fn resolve(
        settings: &MockSettings,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Self, KnobError> {
        let lookup = Lookup { headers, query };
        Ok(Self {
            latency: lookup.get(&LATENCY, parse_millis)?.unwrap_or(settings.latency),
            error_rate: lookup.get(&ERROR_RATE, parse_rate)?.unwrap_or(settings.error_rate),
            error_status: lookup.get(&ERROR_STATUS, parse_status)?.unwrap_or(settings.error_status),
            chunks: lookup.get(&CHUNKS, parse_chunks)?.unwrap_or(settings.chunks.min(MAX_CHUNKS)),
            chunk_delay: lookup.get(&CHUNK_DELAY, parse_millis)?.unwrap_or(settings.chunk_delay),
            break_after: lookup.get(&BREAK_AFTER, parse_count)?,
            script: lookup.get(&SCRIPT, script::parse)?,
            cached_tokens: lookup.get(&CACHED_TOKENS, parse_tokens)?,
            answer: lookup.text(&ANSWER)?,
        })
    }

    /// Draw whether this request gets an injected error.
    pub(crate) fn inject_error(&self) -> bool {
        self.error_rate > 0.0 && fastrand::f64() < self.error_rate
    }

    /// The knobs that shape a chat answer's plan; `answer`: the process-wide answer text,
    /// unless the request overrides it.
    pub(crate) fn plan_settings<'a>(&'a self, answer: Option<&'a str>) -> plan::Settings<'a> {
        plan::Settings {
            chunks: self.chunks,
            cached_tokens: self.cached_tokens,
            script: self.script,
            answer: self.answer.as_deref().or(answer),
        }
    }

    /// The pacing and cuts of a stream; `every_event`: delay every event, not only content.
    pub(crate) fn timing(&self, every_event: bool) -> Timing {
        let cut = match self.script {
            Some(Script::MidStreamError) => Some(Cut::Error),
            Some(Script::Truncate) => Some(Cut::End),
            _ => None,
        };
        Timing { chunk_delay: self.chunk_delay, every_event, break_after: self.break_after, cut }
    }
}

struct Lookup<'a> {
    headers: &'a HeaderMap,
    query: Option<&'a str>,
}

impl Lookup<'_> {
    /// The knob's value from the header, else the query, parsed with `parse`.
    fn get<T>(&self, knob: &'static Knob, parse: fn(&str) -> Result<T, String>) -> Result<Option<T>, KnobError> {
        let (name, raw) = if let Some(value) = self.headers.get(&knob.header) {
            let name = knob.header_str;
            match value.to_str() {
                Ok(raw) => (name, raw),
                Err(_) => return Err(KnobError { name, detail: "not valid text".to_owned() }),
            }
        } else if let Some(raw) = self.query.and_then(|q| query_param(q, knob.param)) {
            (knob.param, raw)
        } else {
            return Ok(None);
        };
        parse(raw.trim()).map(Some).map_err(|detail| KnobError { name, detail })
    }

    /// A text knob: the header (UTF-8, trimmed) or the query parameter, percent-decoded
    /// (in the query `+` is also a space), at most [`MAX_ANSWER`] bytes.
    fn text(&self, knob: &'static Knob) -> Result<Option<String>, KnobError> {
        let (name, decoded) = if let Some(value) = self.headers.get(&knob.header) {
            let name = knob.header_str;
            let raw = std::str::from_utf8(value.as_bytes())
                .map_err(|_| KnobError { name, detail: "not valid UTF-8".to_owned() })?;
            (name, percent_decode(raw.trim(), false))
        } else if let Some(raw) = self.query.and_then(|q| query_param(q, knob.param)) {
            (knob.param, percent_decode(raw, true))
        } else {
            return Ok(None);
        };
        match decoded {
            Ok(text) if text.len() <= MAX_ANSWER => Ok(Some(text)),
            Ok(text) => Err(KnobError { name, detail: format!("{} bytes, at most {MAX_ANSWER} allowed", text.len()) }),
            Err(detail) => Err(KnobError { name, detail }),
        }
    }
}

/// Percent-decode `raw` (`%XX` escapes of UTF-8 bytes; `plus_is_space`: `+` is a space, as
/// in a form-encoded query).
pub(crate) fn percent_decode(raw: &str, plus_is_space: bool) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(decoded) if hex.is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())) => {
                        out.push(decoded);
                        i += 3;
                        continue;
                    }
                    _ => return Err(format!("'%' at byte {i} is not followed by two hex digits (write %25 for '%')")),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            _ => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "percent-decodes to bytes that are not UTF-8".to_owned())
}

/// The first value of `key` in a raw query string (no percent-decoding: knobs are numbers
/// and plain names).
pub(crate) fn query_param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| match pair.split_once('=') {
        Some((k, v)) if k == key => Some(v),
        None if pair == key => Some(""),
        _ => None,
    })
}

/// Milliseconds as a [`Duration`].
pub(crate) fn parse_millis(raw: &str) -> Result<Duration, String> {
    raw.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("expected a whole number of milliseconds, got {raw:?}"))
}

/// A probability in `0.0..=1.0`.
pub(crate) fn parse_rate(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("expected a number between 0 and 1, got {raw:?}")),
    }
}

/// An HTTP error status in `400..=599`.
pub(crate) fn parse_status(raw: &str) -> Result<u16, String> {
    match raw.parse::<u16>() {
        Ok(status) if (400..=599).contains(&status) => Ok(status),
        _ => Err(format!("expected an HTTP status between 400 and 599, got {raw:?}")),
    }
}

/// A chunk count in `0..=MAX_CHUNKS`.
pub(crate) fn parse_chunks(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(chunks) if chunks <= MAX_CHUNKS => Ok(chunks),
        _ => Err(format!("expected a whole number between 0 and {MAX_CHUNKS}, got {raw:?}")),
    }
}

/// A process-wide answer text (`--answer`): at most [`MAX_ANSWER`] bytes, taken as is.
pub(crate) fn parse_answer(raw: &str) -> Result<String, String> {
    if raw.len() > MAX_ANSWER {
        return Err(format!("{} bytes, at most {MAX_ANSWER} allowed", raw.len()));
    }
    Ok(raw.to_owned())
}

/// A non-negative count.
fn parse_count(raw: &str) -> Result<usize, String> {
    raw.parse::<usize>().map_err(|_| format!("expected a whole number, got {raw:?}"))
}

/// A token count.
fn parse_tokens(raw: &str) -> Result<u64, String> {
    raw.parse::<u64>().map_err(|_| format!("expected a whole number of tokens, got {raw:?}"))
}
