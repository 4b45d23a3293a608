//! `guardrails:`: named in-process checks of answers.
//!
//! A guardrail is exactly one check and a `mode`; the check is the one key it sets:
//!
//! ```yaml
//! guardrails:
//!   no_secrets: {secrets: true}
//!   no_pii: {pii: [email, phone, card]}
//!   on_topic: {must_match: '(?i)refund|order'}
//!   no_competitor: {must_not_match: '(?i)acme', mode: block}
//!   short: {max_words: 200}              # min_words / max_words / min_chars / max_chars: one check
//!   not_empty: {not_empty: true}
//!   not_cut: {not_truncated: true}
//!   valid_json: {json: valid}            # valid | schema | auto
//!   no_refusal: {refusal: true}          # or `refusal: '<regex>'`
//! ```
//!
//! The keys are flat (not an externally tagged enum) so that `deny_unknown_fields` names a
//! misspelt key, and so that the four length bounds combine into one check; [`validate`]
//! refuses a guardrail with no check or with several.

use std::collections::BTreeMap;
use std::fmt;

use regex::{Regex, RegexBuilder};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::judges::{valid_name, MAX_QUALITY};
use super::Problem;

/// Longest regex a guardrail may give.
pub const MAX_PATTERN: usize = 4096;
/// Compiled-program and lazy-DFA cache limits of guardrail regexes.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// What a failed check does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardrailMode {
    /// Count only (the default, and the only mode for streams).
    #[default]
    Observe,
    /// Non-streamed answers that fail are replaced by an error naming the guardrail.
    Block,
}

/// One guardrail: `mode` and exactly one check (the length bounds together are one).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailConfig {
    #[serde(default)]
    pub mode: GuardrailMode,
    /// `secrets: true`: API-key shapes of well-known vendors, PEM private keys, bearer tokens.
    #[serde(default)]
    pub secrets: Option<bool>,
    /// Personal data of these kinds.
    #[serde(default)]
    pub pii: Option<Vec<PiiKind>>,
    /// The answer must match this regex somewhere.
    #[serde(default)]
    pub must_match: Option<String>,
    /// The answer must not match this regex anywhere.
    #[serde(default)]
    pub must_not_match: Option<String>,
    /// Length bounds, in words (runs of non-whitespace) and chars (Unicode scalar values).
    #[serde(default)]
    pub min_words: Option<usize>,
    #[serde(default)]
    pub max_words: Option<usize>,
    #[serde(default)]
    pub min_chars: Option<usize>,
    #[serde(default)]
    pub max_chars: Option<usize>,
    /// `not_empty: true`: an empty or whitespace-only answer fails.
    #[serde(default)]
    pub not_empty: Option<bool>,
    /// `not_truncated: true`: an answer that stopped at its token limit fails.
    #[serde(default)]
    pub not_truncated: Option<bool>,
    /// The answer must be JSON (and match the request's schema, per [`JsonCheck`]).
    #[serde(default)]
    pub json: Option<JsonCheck>,
    /// A refusal fails: the built-in pattern (`true`) or the app's own regex.
    #[serde(default)]
    pub refusal: Option<RefusalCheck>,
}

/// A kind of personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    Email,
    Phone,
    Card,
}

/// How `json:` checks an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonCheck {
    /// The answer parses as JSON.
    Valid,
    /// As `valid`, and matches the request's `response_format` JSON schema when it has one.
    Schema,
    /// As `schema`, only when the request asked for `json_object` or `json_schema`.
    Auto,
}

/// `refusal: true` (the built-in pattern) or `refusal: '<regex>'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalCheck {
    Builtin(bool),
    Pattern(String),
}

impl<'de> Deserialize<'de> for RefusalCheck {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RefusalCheck;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`true` or a regex")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RefusalCheck, E> {
                Ok(RefusalCheck::Builtin(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RefusalCheck, E> {
                Ok(RefusalCheck::Pattern(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl GuardrailConfig {
    /// The checks this guardrail sets, by key (`length` for any of the four bounds), in
    /// declaration order; a valid guardrail has exactly one.
    pub fn checks(&self) -> Vec<&'static str> {
        let length = self.min_words.is_some()
            || self.max_words.is_some()
            || self.min_chars.is_some()
            || self.max_chars.is_some();
        [
            ("secrets", self.secrets.is_some()),
            ("pii", self.pii.is_some()),
            ("must_match", self.must_match.is_some()),
            ("must_not_match", self.must_not_match.is_some()),
            ("length", length),
            ("not_empty", self.not_empty.is_some()),
            ("not_truncated", self.not_truncated.is_some()),
            ("json", self.json.is_some()),
            ("refusal", self.refusal.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// Compile a guardrail regex with bounded size; the error is one line, fit for a [`Problem`].
pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > MAX_PATTERN {
        return Err(format!("a regex is at most {MAX_PATTERN} bytes"));
    }
    if pattern.is_empty() {
        return Err("an empty regex matches every answer".to_string());
    }
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regex: {}", first_line(&e.to_string())))
}

/// The first line of a regex error, with its `error: …` line when the first is only a
/// heading (`regex parse error:`), so the message stays on one line and still says why.
fn first_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim);
    let first = lines.next().unwrap_or_default().to_string();
    match lines.find_map(|l| l.strip_prefix("error:")) {
        Some(why) if first.ends_with(':') => format!("{first} {}", why.trim()),
        _ => first,
    }
}

/// Checks of `guardrails:`.
pub(super) fn validate(guardrails: &BTreeMap<String, GuardrailConfig>, problems: &mut Vec<Problem>) {
    if guardrails.len() > MAX_QUALITY {
        problems.push(Problem::new("guardrails", format!("at most {MAX_QUALITY} guardrails")));
    }
    for (name, g) in guardrails {
        let path = format!("guardrails.{name}");
        if !valid_name(name) {
            problems.push(Problem::new(&path, "a guardrail name is 1–64 of `a-z`, `0-9` and `_`"));
        }
        validate_one(&path, g, problems);
    }
}

/// Checks of one guardrail at `path`.
fn validate_one(path: &str, g: &GuardrailConfig, problems: &mut Vec<Problem>) {
    let checks = g.checks();
    match checks.as_slice() {
        [] => problems.push(Problem::new(
            path,
            "a guardrail needs one check: `secrets`, `pii`, `must_match`, `must_not_match`, \
             `min_words`/`max_words`/`min_chars`/`max_chars`, `not_empty`, `not_truncated`, `json` or `refusal`",
        )),
        [_] => {}
        several => problems.push(Problem::new(
            path,
            format!(
                "a guardrail is one check, this one has {} (make one guardrail of each)",
                several.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
    let at = |field: &str| format!("{path}.{field}");
    let only_true = [("secrets", g.secrets), ("not_empty", g.not_empty), ("not_truncated", g.not_truncated)];
    for (field, value) in only_true {
        if value == Some(false) {
            problems.push(Problem::new(at(field), "only `true` (remove the guardrail to turn it off)"));
        }
    }
    if g.refusal == Some(RefusalCheck::Builtin(false)) {
        problems.push(Problem::new(at("refusal"), "`true` or a regex (remove the guardrail to turn it off)"));
    }
    if let Some(kinds) = &g.pii {
        if kinds.is_empty() {
            problems.push(Problem::new(at("pii"), "one or more of `email`, `phone`, `card`"));
        }
        if (1..kinds.len()).any(|i| kinds[..i].contains(&kinds[i])) {
            problems.push(Problem::new(at("pii"), "a kind is listed twice"));
        }
    }
    let regexes = [
        ("must_match", g.must_match.as_deref()),
        ("must_not_match", g.must_not_match.as_deref()),
        (
            "refusal",
            match &g.refusal {
                Some(RefusalCheck::Pattern(p)) => Some(p.as_str()),
                _ => None,
            },
        ),
    ];
    for (field, pattern) in regexes {
        if let Some(Err(e)) = pattern.map(compile_regex) {
            problems.push(Problem::new(at(field), e));
        }
    }
    for (what, min, max) in [("words", g.min_words, g.max_words), ("chars", g.min_chars, g.max_chars)] {
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo > hi {
                problems.push(Problem::new(at(&format!("min_{what}")), format!("larger than `max_{what}` ({hi})")));
            }
        }
        if max == Some(0) {
            problems.push(Problem::new(at(&format!("max_{what}")), "at least 1 (0 refuses every answer)"));
        }
    }
}
