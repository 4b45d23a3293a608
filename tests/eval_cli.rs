//! `sluice eval`: single evaluations with explanations, batch mode, both data formats.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{must_replace, temp_dir};
use serde_json::Value;

fn eval(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("eval")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn explains_a_single_evaluation_of_sluice_yaml() {
    let ctx = r#"{"kind":"user","key":"carol","email":"c@example.com"}"#;
    let (code, out, err) =
        eval(&["--data", "tests/data/flags.yaml", "--flag", "support-bot", "--context", ctx, "--explain"], "");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().any(|l| l.contains("clause 1 (in segment `beta`) does not match")), "{out}");
    assert!(lines.iter().any(|l| l.contains("rule 0 (`staff`) does not match")), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("bucket value 0.41339830")), "{out}");
    let result: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(result["variation"], "control");
    assert_eq!(result["variationIndex"], 0);
    assert_eq!(result["reason"]["kind"], "FALLTHROUGH");

    // A bare key is a user context; bob is in the `beta` segment but lacks the email.
    let (_, out, _) = eval(&["--data", "tests/data/flags.yaml", "--flag", "support-bot", "--context", "alice"], "");
    let result: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(result["reason"]["kind"], "TARGET_MATCH");
    assert_eq!(result["value"]["prompt"], "v2");
}

#[test]
fn batch_answers_every_line_in_order() {
    let input = [
        r#"{"flag":"support-bot","context":{"kind":"user","key":"bob","email":"b@example.com"}}"#,
        r#"{"flag":"nope","context":"x"}"#,
        "not json",
        r#"{"flag":"support-bot","context":{"kind":"user"}}"#,
        r#"{"flag":"support-bot","context":"alice"}"#,
    ]
    .join("\n");
    let (code, out, err) = eval(&["--data", "tests/data/flags.yaml", "--batch"], &input);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["reason"], serde_json::json!({"kind":"RULE_MATCH","ruleIndex":0,"ruleId":"staff"}));
    assert_eq!(lines[1]["reason"], serde_json::json!({"kind":"ERROR","errorKind":"FLAG_NOT_FOUND"}));
    assert_eq!(lines[2]["line"], 3);
    assert!(lines[2]["error"].as_str().unwrap().starts_with("invalid JSON"));
    assert!(lines[3]["error"].as_str().unwrap().contains("key"), "{}", lines[3]);
    assert_eq!(lines[4]["variation"], "concise");
}

#[test]
fn launchdarkly_json_is_accepted_with_warnings() {
    let ctx = r#"{"kind":"multi","user":{"key":"u1"},"org":{"key":"o1","tier":"gold"}}"#;
    let (code, out, err) = eval(&["--data", "tests/data/ld-flags.json", "--flag", "new-model", "--context", ctx], "");
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: tests/data/ld-flags.json:12:92: flags.new-model.rules[1].clauses[0].values[0]: invalid regular expression `(`"),
        "{err}"
    );
    let result: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(result["value"], "claude-haiku");
    assert_eq!(result["reason"]["ruleId"], "orgs");
    assert_eq!(result["variation"], Value::Null, "LaunchDarkly data has no variation names");
}

#[test]
fn bad_data_and_arguments_fail_clearly() {
    let dir = temp_dir("eval");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        must_replace(&std::fs::read_to_string("tests/data/flags.yaml").unwrap(), "percent: 5}", "percent: 15}"),
    )
    .unwrap();
    let (code, _, err) = eval(&["--data", bad.to_str().unwrap(), "--flag", "support-bot", "--context", "a"], "");
    assert_eq!(code, 1);
    assert!(err.starts_with(&format!("{}:17:", bad.display())), "{err}");
    assert!(err.contains("percentages add up to 110%"), "{err}");

    let (code, _, err) = eval(&["--data", "tests/data/flags.yaml", "--flag", "nope", "--context", "a"], "");
    assert_eq!(code, 1);
    assert!(err.contains("no flag `nope`"), "{err}");
    let (code, _, err) =
        eval(&["--data", "tests/data/flags.yaml", "--flag", "support-bot", "--context", "{\"kind\":5}"], "");
    assert_eq!(code, 1);
    assert!(err.contains("invalid --context"), "{err}");
}
