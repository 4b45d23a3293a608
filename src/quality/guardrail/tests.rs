//! Guardrail checks driven by `tests/fixtures/guardrails/*.json`, and config validation.

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use super::*;
use crate::config::guardrails::MAX_PATTERN;
use crate::config::Problem;

/// One fixture file: a guardrail config and answers with the expected verdict.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
    config: Value,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    text: String,
    #[serde(default)]
    finish_reason: Option<String>,
    /// The request's `response_format` as JSON (passed to the check as its raw text).
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    truncated: bool,
    violated: bool,
    why: String,
}

fn fixtures() -> Vec<(String, Fixture)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/guardrails");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let fixture =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, fixture)
        })
        .collect()
}

fn guardrail(config: Value) -> Guardrail {
    let config: GuardrailConfig = serde_json::from_value(config).unwrap();
    Guardrail::compile(&config).unwrap()
}

fn answer(text: &str) -> Answer<'_> {
    Answer { text, tools: "", finish_reason: None, response_format: None, truncated: false }
}

#[test]
fn fixtures_give_the_expected_verdicts() {
    let fixtures = fixtures();
    assert!(fixtures.len() >= 15, "fixtures missing: {}", fixtures.len());
    let mut wrong = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    let mut cases = 0;
    for (name, fixture) in &fixtures {
        let g = guardrail(fixture.config.clone());
        kinds.insert(g.kind());
        // Every check has positive and negative cases.
        assert!(fixture.cases.iter().any(|c| c.violated), "{name}: no violating case");
        assert!(fixture.cases.iter().any(|c| !c.violated), "{name}: no passing case");
        for c in &fixture.cases {
            cases += 1;
            let rf = c.response_format.as_ref().map(Value::to_string);
            let a = Answer {
                text: &c.text,
                tools: "",
                finish_reason: c.finish_reason.as_deref(),
                response_format: rf.as_deref(),
                truncated: c.truncated,
            };
            if g.violated(&a) != c.violated {
                wrong.push(format!("{name}: {:?} ({}): expected violated={}", c.text, c.why, c.violated));
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {cases} cases wrong:\n{}", wrong.len(), wrong.join("\n"));
    let all =
        ["secrets", "pii", "must_match", "must_not_match", "length", "not_empty", "not_truncated", "json", "refusal"];
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), {
        let mut all = all.to_vec();
        all.sort();
        all
    });
}

#[test]
fn mode_defaults_to_observe_and_block_is_kept() {
    assert_eq!(guardrail(json!({"secrets": true})).mode, GuardrailMode::Observe);
    assert_eq!(guardrail(json!({"secrets": true, "mode": "block"})).mode, GuardrailMode::Block);
}

#[test]
fn luhn() {
    assert!(patterns::card_number(b"4111111111111111"));
    assert!(patterns::card_number(b"4111 1111 1111 1111"));
    assert!(patterns::card_number(b"378282246310005"));
    assert!(!patterns::card_number(b"4111111111111112"));
    // Luhn-valid but too short / too long.
    assert!(!patterns::card_number(b"424242424242"));
    assert!(!patterns::card_number(b"41111111111111111111"));
}

#[test]
fn card_at_the_edges_of_the_text() {
    assert!(patterns::has_card("4111111111111111"));
    assert!(!patterns::has_card("4111111111111111 1"));
    assert!(patterns::has_card("x 4111-1111-1111-1111."));
    // A trailing separator is not part of the run.
    assert!(patterns::has_card("4111 1111 1111 1111 "));
}

#[test]
fn phone_at_the_edges_of_the_text() {
    assert!(patterns::has_phone("555-123-4567"));
    assert!(!patterns::has_phone("555-123-4567x"));
    assert!(!patterns::has_phone("a555-123-4567"));
    assert!(patterns::has_phone("(555)123-4567"));
    assert!(!patterns::has_phone("(555 123-4567"));
    assert!(!patterns::has_phone("+"));
    assert!(!patterns::has_phone("("));
}

#[test]
fn refusal_custom_and_builtin_differ() {
    let custom = guardrail(json!({"refusal": "(?i)nope"}));
    let builtin = guardrail(json!({"refusal": true}));
    let refusal = answer("I'm sorry, but I cannot help with that.");
    assert!(!custom.violated(&refusal));
    assert!(builtin.violated(&refusal));
}

#[test]
fn schema_bounds_make_the_check_pass() {
    let g = guardrail(json!({"json": "schema"}));
    // Nested deeper than MAX_SCHEMA_DEPTH: not checked, the answer passes (still must parse).
    let mut deep = json!({"type": "string"});
    for _ in 0..MAX_SCHEMA_DEPTH {
        deep = json!({"type": "object", "properties": {"a": deep}});
    }
    let rf = json!({"type": "json_schema", "json_schema": {"schema": deep}}).to_string();
    let a = Answer { text: "42", tools: "", finish_reason: None, response_format: Some(&rf), truncated: false };
    assert!(!g.violated(&a));
    let a = Answer { text: "nope", ..a };
    assert!(g.violated(&a));
    // A shallow schema rejects the same answer.
    let rf = json!({"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}).to_string();
    let a = Answer { text: "42", tools: "", finish_reason: None, response_format: Some(&rf), truncated: false };
    assert!(g.violated(&a));
    // Larger than MAX_SCHEMA_BYTES: not checked.
    let big = json!({"type": "object", "description": "x".repeat(MAX_SCHEMA_BYTES)});
    let rf = json!({"type": "json_schema", "json_schema": {"schema": big}}).to_string();
    let a = Answer { text: "42", tools: "", finish_reason: None, response_format: Some(&rf), truncated: false };
    assert!(!g.violated(&a));
}

#[test]
fn schema_ref_cycle_and_blow_up_are_bounded() {
    let cycle = json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"});
    assert_eq!(schema::check(&cycle, &json!(1)), None);
    // Three levels of 50-way `anyOf`s, every branch failing: 50^3 schema nodes unbounded.
    let level = |next: &str| json!({"anyOf": vec![json!({"$ref": next}); 50]});
    let blow_up = json!({
        "$defs": {"a": level("#/$defs/b"), "b": level("#/$defs/c"), "c": {"anyOf": vec![json!({"type": "string"}); 50]}},
        "$ref": "#/$defs/a"
    });
    assert_eq!(schema::check(&blow_up, &json!(1)), None);
    assert_eq!(schema::check(&blow_up, &json!("s")), Some(true));
    // Recursion through `$ref` that ends with the data works.
    let tree = json!({
        "$defs": {"node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}, "additionalProperties": false}},
        "$ref": "#/$defs/node"
    });
    assert_eq!(schema::check(&tree, &json!({"kids": [{"kids": []}, {}]})), Some(true));
    assert_eq!(schema::check(&tree, &json!({"kids": [{"kid": []}]})), Some(false));
}

#[test]
fn schema_keywords() {
    let check = |s: Value, i: Value| schema::check(&s, &i);
    assert_eq!(check(json!({"const": 1}), json!(1.0)), Some(true));
    assert_eq!(check(json!({"const": 1}), json!(2)), Some(false));
    assert_eq!(check(json!({"type": ["string", "null"]}), json!(null)), Some(true));
    assert_eq!(check(json!({"type": ["string", "null"]}), json!(3)), Some(false));
    assert_eq!(check(json!({"pattern": "^a+$"}), json!("aaa")), Some(true));
    assert_eq!(check(json!({"pattern": "^a+$"}), json!("ab")), Some(false));
    // A pattern the regex crate cannot compile (look-ahead) is not checked.
    assert_eq!(check(json!({"pattern": "^(?=a)"}), json!("b")), Some(true));
    assert_eq!(check(json!({"maxLength": 2}), json!("éé")), Some(true));
    assert_eq!(check(json!({"maxLength": 2}), json!("ééé")), Some(false));
    assert_eq!(check(json!({"exclusiveMaximum": 1}), json!(1)), Some(false));
    assert_eq!(check(json!({"multipleOf": 0.1}), json!(0.3)), Some(true));
    assert_eq!(check(json!({"multipleOf": 2}), json!(3)), Some(false));
    assert_eq!(check(json!({"oneOf": [{"type": "number"}, {"minimum": 0}]}), json!(1)), Some(false));
    assert_eq!(check(json!({"not": {"type": "string"}}), json!(1)), Some(true));
    assert_eq!(check(json!({"prefixItems": [{"type": "string"}], "items": false}), json!(["a"])), Some(true));
    assert_eq!(check(json!({"prefixItems": [{"type": "string"}], "items": false}), json!(["a", 1])), Some(false));
    assert_eq!(check(json!({"minProperties": 1}), json!({})), Some(false));
    assert_eq!(
        check(json!({"$ref": "#/definitions/x", "definitions": {"x": {"type": "null"}}}), json!(1)),
        Some(false)
    );
    assert_eq!(check(json!(false), json!(1)), Some(false));
    assert_eq!(check(json!({"patternProperties": {"^a": {}}, "additionalProperties": false}), json!({"a": 1})), None);
}

#[test]
fn unreadable_response_format_leaves_the_validity_check() {
    let g = guardrail(json!({"json": "schema"}));
    let a = Answer { text: "{}", tools: "", finish_reason: None, response_format: Some("{not json"), truncated: false };
    assert!(!g.violated(&a));
    let a = Answer { text: "{", ..a };
    assert!(g.violated(&a));
    // `auto` cannot tell what was asked: not checked.
    let g = guardrail(json!({"json": "auto"}));
    assert!(!g.violated(&a));
}

/// Problems of a config with these guardrails (and one provider), or none.
fn problems(guardrails: Value) -> Vec<Problem> {
    let config = json!({
        "clients": {"app": {"key": "app-key-0123456789abcdef"}},
        "providers": {"m": {"kind": "mock"}},
        "guardrails": guardrails,
    });
    match crate::config::check_value(config) {
        Ok(_) => Vec::new(),
        Err(problems) => problems,
    }
}

fn has(problems: &[Problem], path: &str, message: &str) -> bool {
    problems.iter().any(|p| p.path == path && p.message.contains(message))
}

#[test]
fn every_fixture_config_validates() {
    for (name, fixture) in fixtures() {
        let p = problems(json!({ "g": fixture.config }));
        assert!(p.is_empty(), "{name}: {p:?}");
    }
}

#[test]
fn bad_regex_names_the_field_and_the_error() {
    let p = problems(json!({"topic": {"must_match": "(refund"}}));
    assert!(has(&p, "guardrails.topic.must_match", "invalid regex: regex parse error: unclosed group"), "{p:?}");
    assert!(p.iter().all(|p| !p.message.contains('\n')), "{p:?}");
    let p = problems(json!({"r": {"refusal": "[z-a]"}}));
    assert!(has(&p, "guardrails.r.refusal", "invalid regex"), "{p:?}");
    let p = problems(json!({"c": {"must_not_match": "a".repeat(MAX_PATTERN + 1)}}));
    assert!(has(&p, "guardrails.c.must_not_match", "at most 4096 bytes"), "{p:?}");
    let p = problems(json!({"c": {"must_not_match": "(?:a{1000}){1000}"}}));
    assert!(has(&p, "guardrails.c.must_not_match", "size limit"), "{p:?}");
    let p = problems(json!({"c": {"must_match": ""}}));
    assert!(has(&p, "guardrails.c.must_match", "empty regex"), "{p:?}");
}

#[test]
fn one_check_per_guardrail() {
    let p = problems(json!({"two": {"secrets": true, "must_match": "x"}}));
    assert!(has(&p, "guardrails.two", "one check, this one has `secrets`, `must_match`"), "{p:?}");
    let p = problems(json!({"none": {"mode": "block"}}));
    assert!(has(&p, "guardrails.none", "needs one check"), "{p:?}");
    // The four bounds are one check.
    let p = problems(json!({"len": {"min_words": 1, "max_words": 9, "min_chars": 1, "max_chars": 90}}));
    assert!(p.is_empty(), "{p:?}");
    // Compile refuses what validation refuses, without panicking.
    let two: GuardrailConfig = serde_json::from_value(json!({"not_empty": true, "json": "valid"})).unwrap();
    assert!(Guardrail::compile(&two).is_err());
    assert!(Guardrail::compile(&GuardrailConfig::default()).is_err());
}

#[test]
fn bounds_and_values() {
    let p = problems(json!({"len": {"min_words": 10, "max_words": 5}}));
    assert!(has(&p, "guardrails.len.min_words", "larger than `max_words` (5)"), "{p:?}");
    let p = problems(json!({"len": {"min_chars": 10, "max_chars": 5}}));
    assert!(has(&p, "guardrails.len.min_chars", "larger than `max_chars` (5)"), "{p:?}");
    let p = problems(json!({"len": {"max_chars": 0}}));
    assert!(has(&p, "guardrails.len.max_chars", "at least 1"), "{p:?}");
    let p = problems(json!({"s": {"secrets": false}}));
    assert!(has(&p, "guardrails.s.secrets", "only `true`"), "{p:?}");
    let p = problems(json!({"r": {"refusal": false}}));
    assert!(has(&p, "guardrails.r.refusal", "`true` or a regex"), "{p:?}");
    let p = problems(json!({"p": {"pii": []}}));
    assert!(has(&p, "guardrails.p.pii", "one or more"), "{p:?}");
    let p = problems(json!({"p": {"pii": ["email", "email"]}}));
    assert!(has(&p, "guardrails.p.pii", "listed twice"), "{p:?}");
}

#[test]
fn names_and_count() {
    let p = problems(json!({"Bad-Name": {"secrets": true}}));
    assert!(has(&p, "guardrails.Bad-Name", "1–64 of `a-z`"), "{p:?}");
    let long = "a".repeat(65);
    let p = problems(json!({ long.clone(): {"secrets": true} }));
    assert!(has(&p, &format!("guardrails.{long}"), "1–64"), "{p:?}");
    let many: serde_json::Map<String, Value> = (0..33).map(|i| (format!("g{i}"), json!({"secrets": true}))).collect();
    let p = problems(Value::Object(many));
    assert!(has(&p, "guardrails", "at most 32 guardrails"), "{p:?}");
}

#[test]
fn serde_refuses_unknown_keys_and_values() {
    let p = problems(json!({"g": {"secret": true}}));
    assert!(p.iter().any(|p| p.path == "guardrails.g.secret" && p.message.contains("unknown field `secret`")), "{p:?}");
    let p = problems(json!({"g": {"json": "strict"}}));
    assert!(p.iter().any(|p| p.path == "guardrails.g.json" && p.message.contains("unknown variant")), "{p:?}");
    let p = problems(json!({"g": {"pii": ["ssn"]}}));
    assert!(p.iter().any(|p| p.path.starts_with("guardrails.g.pii") && p.message.contains("unknown variant")), "{p:?}");
    let p = problems(json!({"g": {"refusal": 3}}));
    assert!(p.iter().any(|p| p.path == "guardrails.g.refusal" && p.message.contains("`true` or a regex")), "{p:?}");
    let p = problems(json!({"g": {"secrets": true, "mode": "warn"}}));
    assert!(p.iter().any(|p| p.path == "guardrails.g.mode"), "{p:?}");
}

#[test]
fn yaml_config_loads() {
    let text = r#"
clients:
  app: {key: app-key-0123456789abcdef}
providers:
  m: {kind: mock}
guardrails:
  no_secrets: {secrets: true, mode: block}
  no_pii: {pii: [email, phone, card]}
  on_topic: {must_match: '(?i)refund|order'}
  short: {max_words: 200}
  valid_json: {json: auto}
  no_refusal: {refusal: true}
"#;
    let loaded = crate::config::parse(text, "sluice.yaml", &|_| None).unwrap();
    let g = &loaded.config.guardrails;
    assert_eq!(g.len(), 6);
    assert_eq!(g["no_secrets"].mode, GuardrailMode::Block);
    assert_eq!(g["no_pii"].pii.as_deref(), Some(&[PiiKind::Email, PiiKind::Phone, PiiKind::Card][..]));
    assert_eq!(Guardrail::compile(&g["short"]).unwrap().kind(), "length");
    // Errors are located in the file.
    let err = crate::config::parse(&text.replace("'(?i)refund|order'", "'(refund'"), "sluice.yaml", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sluice.yaml:9:") && err.contains("invalid regex"), "{err}");
}

/// A rough cost per check on a 1.5 KB answer (run with `--ignored --nocapture`, release).
#[test]
#[ignore]
fn cost() {
    let text = "Thanks for reaching out about your order. ".repeat(36);
    let checks = [
        json!({"secrets": true}),
        json!({"pii": ["email", "phone", "card"]}),
        json!({"must_match": "(?i)refund|order"}),
        json!({"max_words": 500, "max_chars": 4000}),
        json!({"refusal": true}),
        json!({"json": "valid"}),
    ];
    for c in checks {
        let g = guardrail(c.clone());
        let a = answer(&text);
        let n = 20_000;
        let t = std::time::Instant::now();
        let mut v = 0;
        for _ in 0..n {
            v += usize::from(g.violated(std::hint::black_box(&a)));
        }
        println!("{c}: {:?} per check ({v})", t.elapsed() / n);
    }
}

#[test]
fn word_count_fast_path_agrees_with_split_whitespace() {
    for text in ["", " ", "a", " a  b\tc\nd\r\x0be\x0cf ", "one two", "é b", "a\u{a0}b c", "日本 語"] {
        assert_eq!(words(text), text.split_whitespace().count(), "{text:?}");
    }
    // A no-break space separates words too (the Unicode path).
    assert_eq!(words("a\u{a0}b c"), 3);
}

#[test]
fn tool_calls_are_read_by_content_checks_but_not_by_json_or_length() {
    let compile = |yaml: serde_json::Value| Guardrail::compile(&serde_json::from_value(yaml).unwrap()).unwrap();
    let a = Answer {
        text: "{\"ok\":true}",
        tools: "send_mail({\"to\":\"leak@example.com\"})",
        finish_reason: None,
        response_format: None,
        truncated: false,
    };
    assert!(compile(serde_json::json!({"pii": ["email"]})).violated(&a), "an address in tool arguments");
    assert!(!compile(serde_json::json!({"json": "valid"})).violated(&a), "the content is the JSON");
    assert!(!compile(serde_json::json!({"max_words": 1})).violated(&a), "length counts the content");
    let only_tools = Answer { text: "", ..a };
    assert!(!compile(serde_json::json!({"not_empty": true})).violated(&only_tools), "a tool call is an answer");
}
