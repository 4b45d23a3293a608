//! Judge mode (`--judge`, [`MockSettings::judge`]): the chat routes answer as an LLM judge
//! with a deterministic score, and every request they receive is kept in a [`JudgeLog`].
//!
//! The judged text is the text after the last `RESPONSE TO EVALUATE:` in the last user
//! message (trimmed), or that whole message (trimmed) without the marker. Its score: the
//! first `[[score:X]]` marker whose X is a JSON number gives X as written; else `1.0` if
//! it contains `good` (ASCII case-insensitive), else `0.0`. `[[judge:error]]`,
//! `[[judge:garbage]]` and `[[judge:delay_ms:N]]` in the judged text shape the answer.
//!
//! [`MockSettings::judge`]: crate::MockSettings::judge

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;

use super::plan::{self, Block, Conversation, Finish, Pieces, Plan, TextBody, ToolCall, ToolChoice};

/// The marker before the judged text in a judge request's last user message.
pub const RESPONSE_MARKER: &str = "RESPONSE TO EVALUATE:";

/// Requests a [`JudgeLog`] keeps (the newest).
pub const JUDGE_LOG_CAPACITY: usize = 1000;

/// Longest delay `[[judge:delay_ms:N]]` asks for; larger values are capped to it.
pub const MAX_JUDGE_DELAY: Duration = Duration::from_millis(60_000);

/// The content of a `[[judge:garbage]]` answer: not JSON.
pub const GARBAGE_ANSWER: &str = "I would rate this quite highly.";

const ERROR_MARKER: &str = "[[judge:error]]";
const GARBAGE_MARKER: &str = "[[judge:garbage]]";
const DELAY_MARKER: &str = "[[judge:delay_ms:";
const SCORE_MARKER: &str = "[[score:";

/// The request bodies the judge received, newest last, at most [`JUDGE_LOG_CAPACITY`].
/// Shared by clones of [`MockSettings`](crate::MockSettings) (it sits behind an `Arc`).
#[derive(Default)]
pub struct JudgeLog {
    requests: Mutex<VecDeque<Value>>,
}

impl JudgeLog {
    /// The recorded request bodies parsed as JSON, oldest first (a body that is not JSON
    /// is recorded as a JSON string of its text).
    pub fn requests(&self) -> Vec<Value> {
        self.lock().iter().cloned().collect()
    }

    /// Forget every recorded request.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Record one request body; returns it parsed.
    pub(crate) fn record(&self, body: &[u8]) -> Value {
        let value =
            serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        let mut requests = self.lock();
        while requests.len() >= JUDGE_LOG_CAPACITY {
            requests.pop_front();
        }
        requests.push_back(value.clone());
        value
    }

    /// The recorded bodies as a JSON array.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let requests = self.lock();
        serde_json::to_vec(&*requests).unwrap_or_else(|_| b"[]".to_vec())
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Value>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for JudgeLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JudgeLog").field("requests", &self.lock().len()).finish()
    }
}

/// How the score was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Score {
    /// `[[score:X]]`: X exactly as written.
    Marker(String),
    /// The judged text contains `good`: `1.0`.
    Good,
    /// It does not: `0.0`.
    Bad,
}

/// The judge's decision about one request, read from its judged text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    score: Score,
    /// `[[judge:error]]`: answer with the kind's 500.
    pub error: bool,
    /// `[[judge:garbage]]`: answer with text that is not JSON.
    pub garbage: bool,
    /// `[[judge:delay_ms:N]]`: wait before the response head.
    pub delay: Option<Duration>,
}

impl Verdict {
    /// Record a chat request in `log` and judge it.
    pub(crate) fn receive(log: &JudgeLog, body: &[u8]) -> Self {
        Self::of_text(&judged_text(&log.record(body)))
    }

    /// Judge `text`, the judged text.
    fn of_text(text: &str) -> Self {
        let score = match score_marker(text) {
            Some(score) => Score::Marker(score.to_owned()),
            None if text.to_ascii_lowercase().contains("good") => Score::Good,
            None => Score::Bad,
        };
        Self {
            score,
            error: text.contains(ERROR_MARKER),
            garbage: text.contains(GARBAGE_MARKER),
            delay: delay_marker(text),
        }
    }

    /// The judgement: `{"reasoning":"...","score":X}`.
    pub(crate) fn judgement(&self) -> String {
        let (reasoning, score) = match &self.score {
            Score::Marker(score) => {
                (format!("mock judge: score marker [[score:{score}]] in the response"), score.as_str())
            }
            Score::Good => ("mock judge: the response contains 'good'".to_owned(), "1.0"),
            Score::Bad => ("mock judge: the response does not contain 'good'".to_owned(), "0.0"),
        };
        let mut out = String::with_capacity(32 + reasoning.len() + score.len());
        out.push_str(r#"{"reasoning":"#);
        super::render::push_json_str(&mut out, &reasoning);
        out.push_str(r#","score":"#);
        out.push_str(score);
        out.push('}');
        out
    }

    /// The answer to `conversation`: the judgement as the input of the tool that
    /// `tool_choice` names, else as the text (one streamed chunk); garbage is always text.
    /// Completion tokens are the words of that content; `settings` adds the cached tokens
    /// and the finish scripts (`content_filter`, `incomplete`).
    pub(crate) fn plan(&self, conversation: &Conversation<'_>, settings: plan::Settings<'_>) -> Plan {
        let (block, finish) = match (&conversation.choice, self.garbage) {
            (_, true) => (Block::Text(TextBody::Literal(Pieces::whole(GARBAGE_ANSWER.to_owned()))), Finish::Stop),
            (ToolChoice::Named(name), false) => {
                let json = self.judgement();
                let tokens = plan::words(&json);
                let call =
                    ToolCall { number: 1, name: name.as_ref().to_owned(), arguments: Pieces::thirds(json), tokens };
                (Block::Tool(call), Finish::ToolCalls)
            }
            (_, false) => (Block::Text(TextBody::Literal(Pieces::whole(self.judgement()))), Finish::Stop),
        };
        plan::finish_plan(vec![block], finish, conversation, settings)
    }
}

/// The judged text of a chat request (OpenAI or Anthropic shape).
fn judged_text(request: &Value) -> String {
    let last_user = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|messages| messages.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user")));
    let text = last_user.map(|m| content_text(m.get("content"))).unwrap_or_default();
    let judged = match text.rfind(RESPONSE_MARKER) {
        Some(at) => text.get(at + RESPONSE_MARKER.len()..).unwrap_or_default(),
        None => text.as_str(),
    };
    judged.trim().to_owned()
}

/// A message's text: the string, or its text parts joined.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|part| matches!(part.get("type").and_then(Value::as_str), None | Some("text")))
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// The values of every `<prefix>...]]` marker in `text`, trimmed.
fn markers<'t>(text: &'t str, prefix: &'static str) -> impl Iterator<Item = &'t str> {
    text.match_indices(prefix).filter_map(move |(at, _)| {
        let rest = text.get(at + prefix.len()..)?;
        rest.find("]]").and_then(|end| rest.get(..end)).map(str::trim)
    })
}

/// The first `[[score:X]]` whose X is a JSON number.
fn score_marker(text: &str) -> Option<&str> {
    markers(text, SCORE_MARKER).find(|value| is_json_number(value))
}

/// The first valid `[[judge:delay_ms:N]]`, capped at [`MAX_JUDGE_DELAY`].
fn delay_marker(text: &str) -> Option<Duration> {
    markers(text, DELAY_MARKER)
        .find_map(|value| value.parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms).min(MAX_JUDGE_DELAY))
}

/// Whether `s` is a number in JSON's grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(s: &str) -> bool {
    fn digits(s: &[u8]) -> usize {
        s.iter().take_while(|b| b.is_ascii_digit()).count()
    }
    let mut rest = s.as_bytes();
    if let [b'-', tail @ ..] = rest {
        rest = tail;
    }
    match rest {
        [b'0', tail @ ..] => rest = tail,
        [b'1'..=b'9', ..] => rest = rest.get(digits(rest)..).unwrap_or_default(),
        _ => return false,
    }
    if let [b'.', tail @ ..] = rest {
        let n = digits(tail);
        if n == 0 {
            return false;
        }
        rest = tail.get(n..).unwrap_or_default();
    }
    if let [b'e' | b'E', tail @ ..] = rest {
        let tail = match tail {
            [b'+' | b'-', signed @ ..] => signed,
            _ => tail,
        };
        let n = digits(tail);
        if n == 0 {
            return false;
        }
        rest = tail.get(n..).unwrap_or_default();
    }
    rest.is_empty()
}

#[cfg(test)]
mod unit {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn json_numbers() {
        for ok in ["0", "7", "-1", "0.5", "1.0", "-0", "1e3", "2.5E-2", "10", "1e+9"] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in ["", "-", "01", ".5", "1.", "1e", "+1", "abc", "1 2", "NaN", "0x1"] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }

    #[test]
    fn judged_text_is_after_the_last_marker() {
        let request = serde_json::json!({"messages": [
            {"role": "system", "content": "rubric: good"},
            {"role": "user", "content": "RESPONSE TO EVALUATE: first\nRESPONSE TO EVALUATE:\n  the last one  "},
            {"role": "assistant", "content": "ignored"},
        ]});
        assert_eq!(judged_text(&request), "the last one");
        let parts = serde_json::json!({"messages": [{"role": "user", "content": [{"type": "text", "text": " a "}, {"type": "image_url", "text": "x"}, {"type": "text", "text": "b"}]}]});
        assert_eq!(judged_text(&parts), "a b");
        assert_eq!(judged_text(&serde_json::json!({"messages": []})), "");
    }

    #[test]
    fn markers_decide_the_verdict() {
        let v = Verdict::of_text("bad [[score:abc]] then [[score: -1.5e2 ]] and [[score:3]] good");
        assert_eq!(v.score, Score::Marker("-1.5e2".to_owned()));
        assert_eq!(Verdict::of_text("GoOd").score, Score::Good);
        assert_eq!(Verdict::of_text("fine").score, Score::Bad);
        let v = Verdict::of_text("[[judge:delay_ms:x]] [[judge:delay_ms:90000]] [[judge:error]]");
        assert_eq!(v.delay, Some(MAX_JUDGE_DELAY));
        assert!(v.error && !v.garbage);
        assert_eq!(Verdict::of_text("[[judge:delay_ms:250]]").delay, Some(Duration::from_millis(250)));
        assert_eq!(Verdict::of_text("[[judge:delay_ms:250").delay, None);
        let json: Value = serde_json::from_str(&Verdict::of_text("[[score:7]]").judgement()).unwrap();
        assert_eq!(json["score"], 7);
        assert!(json["reasoning"].as_str().unwrap().contains("score marker"), "{json}");
    }

    #[test]
    fn the_log_keeps_the_newest() {
        let log = JudgeLog::default();
        for i in 0..JUDGE_LOG_CAPACITY + 5 {
            log.record(format!("{{\"n\":{i}}}").as_bytes());
        }
        log.record(b"not json");
        let requests = log.requests();
        assert_eq!(requests.len(), JUDGE_LOG_CAPACITY);
        assert_eq!(requests[0]["n"], 6);
        assert_eq!(requests[JUDGE_LOG_CAPACITY - 1], Value::String("not json".to_owned()));
        log.clear();
        assert!(log.requests().is_empty());
    }
}
