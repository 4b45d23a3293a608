//! `guardrails:`: named in-process checks of answers.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Problem;

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

/// One guardrail.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailConfig {
    #[serde(default)]
    pub mode: GuardrailMode,
}

/// Checks of `guardrails:`.
pub(super) fn validate(guardrails: &BTreeMap<String, GuardrailConfig>, problems: &mut Vec<Problem>) {
    let _ = (guardrails, problems);
}
