//! LaunchDarkly's own server-side evaluation cases (from its SDK test harness), run
//! through sluice's LaunchDarkly-JSON loader, compiler and evaluator.
//!
//! The data is read from `$SLUICE_CONFORMANCE_DIR` (the `launchdarkly` folder of the
//! shared conformance data); nothing from it is copied into the project. Without the
//! variable the test prints that it was skipped and why — or fails, when
//! `SLUICE_REQUIRE_CONFORMANCE=1` (as in CI).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sluice::flags::{json_eq, Context, FlagData, FlagSet, Reason};

/// Every evaluation in the data set, after parameter expansion.
const EXPECTED_EVALUATIONS: usize = 728;

fn cases_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("SLUICE_CONFORMANCE_DIR")?);
    Some(dir.join("data/data-files/server-side-eval"))
}

#[test]
fn launchdarkly_server_side_evaluations() {
    // Fails when SLUICE_REQUIRE_CONFORMANCE=1 and the data is not there; skips visibly otherwise.
    if !common::have(&common::CONFORMANCE_DATA, "launchdarkly_server_side_evaluations") {
        return;
    }
    let dir = cases_dir().expect("SLUICE_CONFORMANCE_DIR is set");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 27, "expected the 27 data files in {}", dir.display());

    let mut total = 0;
    let mut failures = Vec::new();
    for file in &files {
        for suite in suites(file) {
            total += run_suite(file, &suite, &mut failures);
        }
    }
    for f in failures.iter().take(40) {
        eprintln!("FAIL {f}");
    }
    assert!(failures.is_empty(), "{} of {total} evaluations failed", failures.len());
    assert_eq!(total, EXPECTED_EVALUATIONS, "every evaluation ran");
    eprintln!("{total} LaunchDarkly evaluations passed");
}

/// A file's suites: one per parameter combination, placeholders substituted.
fn suites(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap();
    let (doc, _) = sluice::config::yaml::load(&text, &|_| None).unwrap_or_else(|e| panic!("{}: {e:?}", file.display()));
    let mut doc = doc.as_object().cloned().unwrap();
    let params = doc.remove("parameters");
    let constants = doc.get("constants").and_then(Value::as_object).cloned().unwrap_or_default();
    let combos: Vec<Map<String, Value>> = match params {
        None => vec![Map::new()],
        Some(Value::Array(items)) if items.iter().all(Value::is_array) => {
            // A list of lists: the cartesian product, each combination merged.
            let mut combos = vec![Map::new()];
            for list in items {
                let list = list.as_array().unwrap();
                combos = combos
                    .iter()
                    .flat_map(|c| {
                        list.iter().map(move |p| {
                            let mut m = c.clone();
                            m.extend(p.as_object().unwrap().clone());
                            m
                        })
                    })
                    .collect();
            }
            combos
        }
        Some(Value::Array(items)) => items.into_iter().map(|p| p.as_object().cloned().unwrap()).collect(),
        Some(other) => panic!("{}: bad parameters {other}", file.display()),
    };
    let body = Value::Object(doc).to_string();
    combos
        .into_iter()
        .map(|params| {
            let mut t = substitute(&body, &constants);
            t = substitute(&t, &params);
            t = substitute(&t, &constants);
            serde_json::from_str(&t).unwrap_or_else(|e| panic!("{}: substituted JSON is invalid: {e}", file.display()))
        })
        .collect()
}

/// Replace `"<NAME>"` by the value's JSON, then a bare `<NAME>` by its text.
fn substitute(text: &str, values: &Map<String, Value>) -> String {
    let mut t = text.to_string();
    for (name, value) in values {
        t = t.replace(&format!("\"<{name}>\""), &value.to_string());
        let bare = match value {
            Value::String(s) => {
                let quoted = Value::String(s.clone()).to_string();
                quoted[1..quoted.len() - 1].to_string()
            }
            other => other.to_string(),
        };
        t = t.replace(&format!("<{name}>"), &bare);
    }
    t
}

/// Run one suite; returns how many evaluations it had.
fn run_suite(file: &Path, suite: &Value, failures: &mut Vec<String>) -> usize {
    let name = suite["name"].as_str().unwrap_or("?").to_string();
    let data = FlagData::from_ld_json(suite.get("sdkData").cloned().unwrap_or(Value::Null))
        .unwrap_or_else(|e| panic!("{}: {name}: sdkData: {e}", file.display()));
    let set = FlagSet::compile(&data);
    let evaluations = suite["evaluations"].as_array().cloned().unwrap_or_default();
    for (i, ev) in evaluations.iter().enumerate() {
        let label = format!(
            "{} / {name} / {}",
            file.file_name().unwrap().to_string_lossy(),
            ev["name"].as_str().map_or_else(|| format!("#{i}"), str::to_string)
        );
        let got = evaluate(&set, ev);
        let expect = &ev["expect"];
        let want_index = expect.get("variationIndex").and_then(Value::as_u64);
        let ok = json_eq(&got.0, expect.get("value").unwrap_or(&Value::Null))
            && got.1 == want_index
            && json_eq(&got.2, &expect["reason"]);
        if !ok {
            failures.push(format!("{label}: got value {} index {:?} reason {}; want {}", got.0, got.1, got.2, expect));
        }
    }
    evaluations.len()
}

/// Evaluate as an SDK's typed variation call would: `(value, variationIndex, reason)`.
fn evaluate(set: &FlagSet, ev: &Value) -> (Value, Option<u64>, Value) {
    let default = ev.get("default").cloned().unwrap_or(Value::Bool(false));
    let error = |kind: &str| {
        let reason = serde_json::json!({"kind": "ERROR", "errorKind": kind});
        (default.clone(), None, reason)
    };
    let Ok(context) = Context::from_json(&ev["context"]) else {
        return error("USER_NOT_SPECIFIED");
    };
    let detail = set.evaluate(ev["flagKey"].as_str().unwrap(), &context);
    if let Reason::Error(kind) = detail.reason {
        return error(kind.as_str());
    }
    let Some(value) = detail.value else {
        return (default, None, detail.reason.to_json());
    };
    let type_ok = match ev.get("valueType").and_then(Value::as_str) {
        None | Some("any") => true,
        Some("bool") => value.is_boolean(),
        Some("int" | "double") => value.is_number(),
        Some("string") => value.is_string(),
        Some(other) => panic!("unknown valueType {other}"),
    };
    if !type_ok {
        return error("WRONG_TYPE");
    }
    (value.clone(), detail.variation_index.map(|i| i as u64), detail.reason.to_json())
}
