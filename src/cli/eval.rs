//! `sluice eval`: evaluate flags from a data file, once with an explanation or in bulk.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::config::{self, Targeting};
use crate::flags::trace::Explain;
use crate::flags::{Context, Detail};

/// Evaluate a flag for a context and explain why.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    sluice eval --data config/sluice.yaml --flag support-bot --context '{\"kind\":\"user\",\"key\":\"alice\"}' --explain\n  \
    sluice eval --data flags.json --batch < requests.jsonl > results.jsonl")]
pub struct EvalArgs {
    /// Flag data: sluice YAML (a config file's `flags` and `segments`) or LaunchDarkly
    /// JSON (`{"flags":{...},"segments":{...}}`; a `.json` file or text starting with `{`).
    #[arg(long)]
    pub data: PathBuf,
    /// The flag to evaluate.
    #[arg(long, required_unless_present = "batch")]
    pub flag: Option<String>,
    /// The context as LaunchDarkly context JSON, or a bare user key.
    #[arg(long, required_unless_present = "batch")]
    pub context: Option<String>,
    /// Print each step of the evaluation before the result.
    #[arg(long, conflicts_with = "batch")]
    pub explain: bool,
    /// Read JSON lines `{"flag": ..., "context": ...}` on stdin; write one JSON result per line.
    #[arg(long, conflicts_with_all = ["flag", "context"])]
    pub batch: bool,
}

pub fn run(args: EvalArgs) -> ExitCode {
    let (targeting, warnings) = match config::load_flag_data(&args.data) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if args.batch {
        return batch(&targeting);
    }
    let (Some(flag), Some(context)) = (args.flag, args.context) else {
        eprintln!("sluice eval: --flag and --context are required without --batch");
        return ExitCode::FAILURE;
    };
    let context = match parse_context(&Value::String(context)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice eval: invalid --context: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(index) = targeting.set.index(&flag) else {
        eprintln!("sluice eval: no flag `{flag}` in {}", args.data.display());
        return ExitCode::FAILURE;
    };
    let mut out = std::io::stdout().lock();
    let detail = if args.explain {
        let mut explain = Explain::default();
        let detail = targeting.set.evaluate_traced(index, &context, &mut explain);
        for line in &explain.lines {
            let _ = writeln!(out, "{line}");
        }
        detail
    } else {
        targeting.set.evaluate_index(index, &context)
    };
    let _ = writeln!(out, "{}", result(&targeting, &flag, &detail));
    ExitCode::SUCCESS
}

/// A context from JSON text (or an already-parsed object); a bare string is a user key.
fn parse_context(v: &Value) -> Result<Context, String> {
    match v {
        Value::String(s) if s.trim_start().starts_with('{') => {
            let parsed: Value = serde_json::from_str(s).map_err(|e| e.to_string())?;
            Context::from_json(&parsed).map_err(|e| e.to_string())
        }
        Value::String(s) if !s.is_empty() => Ok(Context::new("user", s)),
        other => Context::from_json(other).map_err(|e| e.to_string()),
    }
}

/// The JSON result of one evaluation.
fn result(targeting: &Targeting, flag: &str, d: &Detail<'_>) -> Value {
    let name = d.variation_index.and_then(|i| targeting.variation_name(flag, i));
    json!({
        "flag": flag,
        "value": d.value,
        "variationIndex": d.variation_index,
        "variation": name,
        "reason": d.reason.to_json(),
    })
}

/// One JSON line in, one JSON line out; a bad line gets `{"line": n, "error": ...}`.
fn batch(targeting: &Targeting) -> ExitCode {
    let stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    for (n, line) in stdin.lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("sluice eval: cannot read stdin: {e}");
                return ExitCode::FAILURE;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let answer = batch_line(targeting, &line).unwrap_or_else(|error| json!({"line": n + 1, "error": error}));
        if serde_json::to_writer(&mut out, &answer).is_err() || out.write_all(b"\n").is_err() {
            return ExitCode::FAILURE;
        }
    }
    match out.flush() {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn batch_line(targeting: &Targeting, line: &str) -> Result<Value, String> {
    let input: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let flag = input.get("flag").and_then(Value::as_str).ok_or("`flag` must be a string")?;
    let context = parse_context(input.get("context").ok_or("`context` is missing")?)?;
    let detail = targeting.set.evaluate(flag, &context);
    Ok(result(targeting, flag, &detail))
}
