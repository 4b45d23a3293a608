//! Guardrails compiled: pass/fail checks of one answer.

use crate::config::guardrails::{GuardrailConfig, GuardrailMode};

/// The answer a guardrail checks.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The answer's text: the message content (or Responses API output text), tool-call
    /// arguments appended after it, each on its own line.
    pub text: &'a str,
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
}

impl Guardrail {
    pub fn compile(config: &GuardrailConfig) -> Result<Guardrail, String> {
        Ok(Guardrail { mode: config.mode })
    }

    /// Whether `answer` violates this guardrail.
    pub fn violated(&self, answer: &Answer<'_>) -> bool {
        let _ = answer;
        false
    }
}
