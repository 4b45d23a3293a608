//! Optional evaluation tracing, for `sluice eval --explain`. The request path uses
//! [`NoTrace`], whose empty methods compile away.

use std::fmt;

use super::eval::Detail;

/// Receives each step of an evaluation.
pub trait Trace {
    /// A decision step, in words.
    fn step(&mut self, _what: fmt::Arguments<'_>) {}
    /// A flag's (or prerequisite's) final result.
    fn result(&mut self, _flag: &str, _detail: &Detail<'_>) {}
}

/// The no-op tracer of the request path.
pub struct NoTrace;

impl Trace for NoTrace {}

/// Collects the steps as lines of text.
#[derive(Debug, Default)]
pub struct Explain {
    pub lines: Vec<String>,
}

impl Trace for Explain {
    fn step(&mut self, what: fmt::Arguments<'_>) {
        self.lines.push(what.to_string());
    }

    fn result(&mut self, flag: &str, detail: &Detail<'_>) {
        let value = detail.value.map_or("(default)".to_string(), |v| v.to_string());
        self.lines.push(format!(
            "`{flag}` → variation {} = {value} ({})",
            detail.variation_index.map_or("-".to_string(), |i| i.to_string()),
            detail.reason.to_json()
        ));
    }
}
