//! `judges:`: LLM-as-judge evaluators, and how flags attach judges and guardrails.
//!
//! A judge is a provider and model, a rubric and its limits. A routing flag names the
//! judges that score a sample of its answers (`flags.<key>.judges`, one rate for every
//! variation) and the guardrails that check them (`flags.<key>.guardrails`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::signals::Better;
use super::values::HumanDuration;
use super::Problem;

/// Largest rubric, inline or in a file.
pub const MAX_RUBRIC: usize = 64 << 10;
/// Most judges and guardrails a config may define (each one is a metric of every variation).
pub const MAX_QUALITY: usize = 32;

/// One judge.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeConfig {
    /// A provider under `providers:` (any kind); judge calls never go through flags.
    pub provider: String,
    /// The model the provider knows.
    pub model: String,
    /// What the judge is asked to assess (inline; `rubric_file` is read into it when the
    /// config loads, relative to the config file).
    #[serde(default)]
    pub rubric: Option<String>,
    #[serde(default)]
    pub rubric_file: Option<String>,
    /// Which way the score (0..1) is better: `higher` (default) or `lower` (an inverted
    /// score such as toxicity).
    #[serde(default = "higher")]
    pub direction: Better,
    /// The judge sees at most this many characters of the conversation and as many of
    /// the answer (the earliest messages are cut first; a longer answer is not judged).
    #[serde(default = "default_max_input_chars")]
    pub max_input_chars: usize,
    /// Per call, each attempt.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Attempts after the first when a call fails (error, timeout); an invalid answer is
    /// not retried.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Calls in flight at once.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Answers waiting for a call; when full, an answer is dropped (counted), never waited for.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Judge tokens (prompt and completion) per minute; past it, answers are skipped
    /// (`budget`) until the minute is over.
    #[serde(default = "default_tokens_per_minute")]
    pub tokens_per_minute: u64,
}

fn higher() -> Better {
    Better::Higher
}
fn default_max_input_chars() -> usize {
    16_000
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(20))
}
fn default_retries() -> u32 {
    1
}
fn default_max_concurrency() -> usize {
    4
}
fn default_queue() -> usize {
    256
}
fn default_tokens_per_minute() -> u64 {
    200_000
}

/// A judge attached to a flag.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeUse {
    /// The share of requests judged, the same for every variation, decided by a hash of
    /// the request id before the answer exists.
    pub sample_rate: f64,
}

/// A guardrail attached to a flag.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailUse {
    /// The share of answers checked (default: every one), by a hash of the request id.
    #[serde(default = "one")]
    pub sample_rate: f64,
}

fn one() -> f64 {
    1.0
}

/// Checks of `judges:`.
pub(super) fn validate(
    judges: &BTreeMap<String, JudgeConfig>,
    providers: &dyn Fn(&str) -> bool,
    problems: &mut Vec<Problem>,
) {
    if judges.len() > MAX_QUALITY {
        problems.push(Problem::new("judges", format!("at most {MAX_QUALITY} judges")));
    }
    for (name, j) in judges {
        let path = format!("judges.{name}");
        if !valid_name(name) {
            problems.push(Problem::new(&path, "a judge name is 1–64 of `a-z`, `0-9` and `_`"));
        }
        if !providers(&j.provider) {
            problems.push(Problem::new(format!("{path}.provider"), format!("no provider `{}`", j.provider)));
        }
        if j.model.is_empty() {
            problems.push(Problem::new(format!("{path}.model"), "a model is required"));
        }
        match (&j.rubric, &j.rubric_file) {
            (None, None) => problems.push(Problem::new(&path, "a judge needs a `rubric` or a `rubric_file`")),
            (Some(_), Some(_)) => {
                problems.push(Problem::new(format!("{path}.rubric_file"), "give `rubric` or `rubric_file`, not both"))
            }
            (Some(r), None) if r.trim().is_empty() || r.len() > MAX_RUBRIC => problems.push(Problem::new(
                format!("{path}.rubric"),
                format!("a rubric is 1 to {} KiB of text", MAX_RUBRIC >> 10),
            )),
            _ => {}
        }
        let bounded = |p: &str, v: u64, lo: u64, hi: u64, problems: &mut Vec<Problem>| {
            if v < lo || v > hi {
                problems.push(Problem::new(format!("{path}.{p}"), format!("between {lo} and {hi}")));
            }
        };
        bounded("max_input_chars", j.max_input_chars as u64, 100, 1 << 20, problems);
        bounded("retries", u64::from(j.retries), 0, 5, problems);
        bounded("max_concurrency", j.max_concurrency as u64, 1, 256, problems);
        bounded("queue", j.queue as u64, 1, 65_536, problems);
        bounded("tokens_per_minute", j.tokens_per_minute, 1, 1 << 40, problems);
        let t = j.timeout.0;
        if t.is_zero() || t > Duration::from_secs(600) {
            problems.push(Problem::new(format!("{path}.timeout"), "between 1ms and 10m"));
        }
    }
}

/// Checks of one flag's `judges:` and `guardrails:` against the defined ones.
pub(super) fn validate_uses(
    at: &str,
    judges: &BTreeMap<String, JudgeUse>,
    guardrails: &BTreeMap<String, GuardrailUse>,
    defined_judges: &dyn Fn(&str) -> bool,
    defined_guardrails: &dyn Fn(&str) -> bool,
    problems: &mut Vec<Problem>,
) {
    let rate_ok = |r: f64| r.is_finite() && (0.0..=1.0).contains(&r);
    for (name, u) in judges {
        let path = format!("{at}.judges.{name}");
        if !defined_judges(name) {
            problems.push(Problem::new(&path, format!("no judge `{name}` under `judges:`")));
        }
        if !rate_ok(u.sample_rate) {
            problems.push(Problem::new(format!("{path}.sample_rate"), "a share between 0 and 1"));
        }
    }
    for (name, u) in guardrails {
        let path = format!("{at}.guardrails.{name}");
        if !defined_guardrails(name) {
            problems.push(Problem::new(&path, format!("no guardrail `{name}` under `guardrails:`")));
        }
        if !rate_ok(u.sample_rate) {
            problems.push(Problem::new(format!("{path}.sample_rate"), "a share between 0 and 1"));
        }
    }
}

/// A judge or guardrail name: 1–64 of `a-z`, `0-9` and `_`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Read each judge's `rubric_file` (relative to `base`, the config file's directory) into
/// its `rubric`, in the config value itself, so that the text travels with the config.
pub fn inline_rubrics(value: &mut Value, base: Option<&Path>) -> Vec<Problem> {
    use std::io::Read;
    let mut problems = Vec::new();
    let Some(judges) = value.get_mut("judges").and_then(Value::as_object_mut) else { return problems };
    for (name, judge) in judges.iter_mut() {
        let Some(obj) = judge.as_object_mut() else { continue };
        let Some(file) = obj.get("rubric_file").and_then(Value::as_str).map(str::to_string) else { continue };
        let path = format!("judges.{name}.rubric_file");
        if obj.contains_key("rubric") {
            continue; // validation says "not both"
        }
        let full = match base {
            Some(b) => b.join(&file),
            None => Path::new(&file).to_path_buf(),
        };
        let read = std::fs::File::open(&full).and_then(|f| {
            let mut s = Vec::new();
            f.take(MAX_RUBRIC as u64 + 1).read_to_end(&mut s)?;
            Ok(s)
        });
        match read {
            Err(e) => problems.push(Problem::new(&path, format!("cannot read `{}`: {e}", full.display()))),
            Ok(bytes) if bytes.len() > MAX_RUBRIC => {
                problems.push(Problem::new(&path, format!("the rubric is larger than {} KiB", MAX_RUBRIC >> 10)))
            }
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) if !text.trim().is_empty() => {
                    obj.remove("rubric_file");
                    obj.insert("rubric".to_string(), Value::String(text));
                }
                Ok(_) => problems.push(Problem::new(&path, "the rubric file is empty")),
                Err(_) => problems.push(Problem::new(&path, "the rubric file is not UTF-8")),
            },
        }
    }
    problems
}
