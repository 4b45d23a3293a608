//! Guardrails compiled: pass/fail checks of one answer.
//!
//! A check runs on every sampled answer on the request path, so it is a scan of the text
//! with regexes compiled once (the app's in [`Guardrail::compile`], the built-in ones on
//! first use) and no allocation — except the JSON checks, which parse the answer.
//!
//! A truncated answer (`truncated`: only a prefix was captured) is judged on what was
//! seen where a prefix can decide: a secret, personal data, a `must_not_match` match or a
//! refusal in the prefix fails, and so does a prefix already over a `max_*` bound. What a
//! prefix cannot decide passes: `must_match`, `min_*`, `not_empty` and `json`.

mod patterns;
mod schema;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use regex::Regex;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::guardrails::{compile_regex, GuardrailConfig, GuardrailMode, JsonCheck, PiiKind, RefusalCheck};

pub use schema::{MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH};

/// The answer a guardrail checks.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The answer's text: the message content (or Responses API output text).
    pub text: &'a str,
    /// Its tool calls, each on its own line as `name(arguments)` (empty when none): the
    /// content checks (secrets, personal data, patterns, refusals) read them too; length,
    /// emptiness and JSON checks read the content only.
    pub tools: &'a str,
    /// `finish_reason` of the first choice (Responses API: `length` for `incomplete`).
    pub finish_reason: Option<&'a str>,
    /// The request's `response_format` (raw JSON), when the app sent one.
    pub response_format: Option<&'a str>,
    /// The capture stopped at its limit: `text` is a prefix of the answer.
    pub truncated: bool,
}

/// One compiled guardrail.
#[derive(Debug)]
pub struct Guardrail {
    pub mode: GuardrailMode,
    check: Check,
}

/// The one check of a guardrail.
#[derive(Debug)]
enum Check {
    Secrets,
    Pii {
        email: bool,
        phone: bool,
        card: bool,
    },
    MustMatch(Regex),
    MustNotMatch(Regex),
    Length(Bounds),
    NotEmpty,
    NotTruncated,
    Json(JsonCheck),
    /// `None`: the built-in pattern.
    Refusal(Option<Regex>),
}

/// Length bounds (inclusive).
#[derive(Debug, Clone, Copy)]
struct Bounds {
    min_words: Option<usize>,
    max_words: Option<usize>,
    min_chars: Option<usize>,
    max_chars: Option<usize>,
}

impl Guardrail {
    /// Compile a (validated) guardrail; an error for a config [`validate`] would refuse.
    ///
    /// [`validate`]: crate::config::guardrails
    pub fn compile(config: &GuardrailConfig) -> Result<Guardrail, String> {
        let checks = config.checks();
        let [kind] = checks.as_slice() else {
            return Err(format!("a guardrail is exactly one check, not {}", checks.len()));
        };
        if !patterns::builtins_ok() {
            return Err("the built-in patterns do not compile".to_string());
        }
        let check = match *kind {
            "secrets" => Check::Secrets,
            "pii" => {
                let kinds = config.pii.as_deref().unwrap_or_default();
                Check::Pii {
                    email: kinds.contains(&PiiKind::Email),
                    phone: kinds.contains(&PiiKind::Phone),
                    card: kinds.contains(&PiiKind::Card),
                }
            }
            "must_match" => Check::MustMatch(compile_regex(config.must_match.as_deref().unwrap_or_default())?),
            "must_not_match" => {
                Check::MustNotMatch(compile_regex(config.must_not_match.as_deref().unwrap_or_default())?)
            }
            "length" => Check::Length(Bounds {
                min_words: config.min_words,
                max_words: config.max_words,
                min_chars: config.min_chars,
                max_chars: config.max_chars,
            }),
            "not_empty" => Check::NotEmpty,
            "not_truncated" => Check::NotTruncated,
            "json" => Check::Json(config.json.unwrap_or(JsonCheck::Valid)),
            "refusal" => Check::Refusal(match &config.refusal {
                Some(RefusalCheck::Pattern(p)) => Some(compile_regex(p)?),
                _ => None,
            }),
            other => return Err(format!("unknown check `{other}`")),
        };
        Ok(Guardrail { mode: config.mode, check })
    }

    /// The check's name, as [`GuardrailConfig::checks`] spells it (`length` for the bounds).
    pub fn kind(&self) -> &'static str {
        match self.check {
            Check::Secrets => "secrets",
            Check::Pii { .. } => "pii",
            Check::MustMatch(_) => "must_match",
            Check::MustNotMatch(_) => "must_not_match",
            Check::Length(_) => "length",
            Check::NotEmpty => "not_empty",
            Check::NotTruncated => "not_truncated",
            Check::Json(_) => "json",
            Check::Refusal(_) => "refusal",
        }
    }

    /// Whether `answer` violates this guardrail.
    pub fn violated(&self, answer: &Answer<'_>) -> bool {
        let text = answer.text;
        // Content checks read the tool calls' arguments too (a key can leak through them).
        let any = |f: &dyn Fn(&str) -> bool| f(text) || (!answer.tools.is_empty() && f(answer.tools));
        match &self.check {
            Check::Secrets => any(&patterns::has_secret),
            Check::Pii { email, phone, card } => any(&|t| {
                (*email && patterns::has_email(t))
                    || (*phone && patterns::has_phone(t))
                    || (*card && patterns::has_card(t))
            }),
            Check::MustMatch(re) => !answer.truncated && !any(&|t| re.is_match(t)),
            Check::MustNotMatch(re) => any(&|t| re.is_match(t)),
            Check::Length(bounds) => bounds.violated(text, answer.truncated),
            Check::NotEmpty => !answer.truncated && text.trim().is_empty() && answer.tools.is_empty(),
            Check::NotTruncated => answer.finish_reason == Some("length"),
            Check::Json(mode) => !answer.truncated && json_violated(*mode, text, answer.response_format),
            Check::Refusal(None) => patterns::has_refusal(text),
            Check::Refusal(Some(re)) => re.is_match(text),
        }
    }
}

impl Bounds {
    /// Out of bounds; on a prefix only a `max_*` can be exceeded (the rest is unseen).
    fn violated(&self, text: &str, truncated: bool) -> bool {
        let over = |n: usize, max: Option<usize>| max.is_some_and(|m| n > m);
        let under = |n: usize, min: Option<usize>| !truncated && min.is_some_and(|m| n < m);
        if self.min_chars.is_some() || self.max_chars.is_some() {
            // Bytes bound chars from above: no count needed when the text is short enough.
            let chars = match self.max_chars {
                Some(m) if self.min_chars.is_none() && text.len() <= m => 0,
                _ => text.chars().count(),
            };
            if over(chars, self.max_chars) || under(chars, self.min_chars) {
                return true;
            }
        }
        if self.min_words.is_some() || self.max_words.is_some() {
            let words = words(text);
            if over(words, self.max_words) || under(words, self.min_words) {
                return true;
            }
        }
        false
    }
}

/// Runs of non-whitespace; ASCII text is counted bytewise (`split_whitespace` decodes
/// every char, several times slower).
fn words(text: &str) -> usize {
    if !text.is_ascii() {
        return text.split_whitespace().count();
    }
    let mut in_word = false;
    let mut n = 0;
    for b in text.bytes() {
        let space = b.is_ascii_whitespace() || b == 0x0b;
        n += usize::from(!space && !in_word);
        in_word = !space;
    }
    n
}

/// The parts of a `response_format` the JSON checks read: Chat Completions'
/// `{"type": "json_schema", "json_schema": {"schema": …}}`, or the Responses API's
/// `text.format`, `{"type": "json_schema", "schema": …}`.
#[derive(Deserialize)]
struct ResponseFormat<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    json_schema: Option<JsonSchemaFormat<'a>>,
    #[serde(default, borrow)]
    schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct JsonSchemaFormat<'a> {
    #[serde(default, borrow)]
    schema: Option<&'a RawValue>,
}

/// Whether a whole answer fails a JSON check. An unreadable `response_format`, or a
/// schema over the bounds of [`schema`], leaves only the validity check.
fn json_violated(mode: JsonCheck, text: &str, response_format: Option<&str>) -> bool {
    let invalid = |text: &str| serde_json::from_str::<IgnoredAny>(text).is_err();
    if mode == JsonCheck::Valid {
        return invalid(text);
    }
    let format = response_format.and_then(|rf| serde_json::from_str::<ResponseFormat<'_>>(rf).ok());
    let kind = format.as_ref().and_then(|f| f.kind.as_deref());
    if mode == JsonCheck::Auto && !matches!(kind, Some("json_object" | "json_schema")) {
        return false;
    }
    let schema = format
        .as_ref()
        .filter(|_| kind == Some("json_schema"))
        .and_then(|f| f.json_schema.as_ref().and_then(|j| j.schema).or(f.schema))
        .filter(|s| s.get().len() <= MAX_SCHEMA_BYTES)
        .and_then(|s| serde_json::from_str::<Value>(s.get()).ok());
    match schema {
        None => invalid(text),
        Some(schema) => match serde_json::from_str::<Value>(text) {
            Err(_) => true,
            Ok(instance) => schema::check(&schema, &instance) == Some(false),
        },
    }
}
