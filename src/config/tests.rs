use super::*;

const GOOD: &str = r#"
listen:
  data: 127.0.0.1:0
  admin: 127.0.0.1:0
limits:
  max_request_body: 1MiB
  header_read_timeout: 5s
upstream:
  connect: 2s
clients:
  app:
    key: ${APP_KEY}
    attributes: {team: support}
  hashed:
    key_sha256: ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
providers:
  openai:
    kind: openai
    base_url: https://api.openai.com/v1
    api_key: ${OPENAI_API_KEY:-}
    headers: {OpenAI-Organization: org-1}
    timeouts: {first_byte: 30s}
  mock:
    kind: mock
    mock: {latency: 5ms, chunks: 3}
aliases:
  fast: mock/mock-1
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "APP_KEY" => Some("sk-app-secret".into()),
        _ => None,
    }
}

fn errors(text: &str) -> String {
    parse(text, "sluice.yaml", &env).unwrap_err().to_string()
}

#[test]
fn good_config_loads_with_defaults_and_overrides() {
    let loaded = parse(GOOD, "sluice.yaml", &env).unwrap();
    let c = &loaded.config;
    assert_eq!(c.limits.max_request_body.0, 1 << 20);
    assert_eq!(c.clients["app"].key.as_ref().unwrap().expose(), "sk-app-secret");
    let t = c.providers["openai"].timeouts.resolve(&c.upstream);
    assert_eq!(t.connect, Duration::from_secs(2));
    assert_eq!(t.first_byte, Duration::from_secs(30));
    assert_eq!(t.idle, Duration::from_secs(120));
    assert_eq!(c.providers["mock"].kind, ProviderKind::Mock);
    assert!(c.providers["openai"].api_key.as_ref().unwrap().is_empty());
}

#[test]
fn unknown_field_is_located() {
    let text = GOOD.replace("    timeouts: {first_byte: 30s}", "    timeout: {first_byte: 30s}");
    let err = errors(&text);
    assert!(err.starts_with("sluice.yaml:22:5: providers.openai.timeout:"), "{err}");
    assert!(err.contains("unknown field `timeout`"), "{err}");
}

#[test]
fn type_errors_are_located() {
    let err = errors(&GOOD.replace("header_read_timeout: 5s", "header_read_timeout: soon"));
    assert!(err.starts_with("sluice.yaml:7:24: limits.header_read_timeout:"), "{err}");
    assert!(err.contains("invalid duration `soon`"), "{err}");
}

#[test]
fn semantic_errors_are_all_reported_with_locations() {
    let text = GOOD
        .replace("fast: mock/mock-1", "fast: nowhere/mock-1")
        .replace("base_url: https://api.openai.com/v1", "base_url: ftp://x");
    let err = errors(&text);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].starts_with("sluice.yaml:19:15: providers.openai.base_url:"), "{err}");
    assert!(lines[1].starts_with("sluice.yaml:27:9: aliases.fast: unknown provider `nowhere`"), "{err}");
}

#[test]
fn secrets_never_appear_in_errors() {
    // A secret of the wrong type, and a bad header value: neither value is printed.
    let text = GOOD.replace("api_key: ${OPENAI_API_KEY:-}", "api_key: 123456789");
    let err = errors(&text);
    assert!(err.contains("providers.openai.api_key"), "{err}");
    assert!(!err.contains("123456789"), "{err}");
    let text = GOOD.replace("org-1", "\"bad\\nvalue-sk-zzz\"");
    let err = errors(&text);
    assert!(err.contains("providers.openai.headers.OpenAI-Organization"), "{err}");
    assert!(!err.contains("sk-zzz"), "{err}");
}

#[test]
fn client_keys_are_checked() {
    let err = errors(&GOOD.replace("key_sha256: ba78", "key_sha256: zz78"));
    assert!(err.contains("clients.hashed.key_sha256: must be 64 hexadecimal digits"), "{err}");
    let dup =
        GOOD.replace("key_sha256: ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "key: ${APP_KEY}");
    assert!(errors(&dup).contains("has the same key as client `app`"));
    let none = GOOD.replace("    key: ${APP_KEY}\n", "");
    assert!(errors(&none).contains("clients.app: set exactly one of `key` or `key_sha256`"));
}

#[test]
fn missing_env_var_is_located() {
    let err = parse(GOOD, "f.yaml", &|_| None).unwrap_err().to_string();
    assert!(err.starts_with("f.yaml:12:10: environment variable `APP_KEY` is not set"), "{err}");
}

#[test]
fn openai_provider_needs_base_url() {
    let err = errors(&GOOD.replace("    base_url: https://api.openai.com/v1\n", ""));
    assert!(err.contains("providers.openai: an `openai` provider needs `base_url`"), "{err}");
}

const FLAGS: &str = r#"
flags:
  support-bot:
    description: which prompt the support bot uses
    variations:
      - {name: control, value: {prompt: v1}}
      - {name: concise, value: {prompt: v2}}
    targets:
      - {variation: concise, values: [alice]}
    rules:
      - id: staff
        clauses:
          - {attribute: email, op: endsWith, values: ["@example.com"]}
          - {segment: beta}
        variation: concise
    fallthrough:
      rollout:
        variations:
          - {variation: control, percent: 94.5}
          - {variation: concise, percent: 5.5}
segments:
  beta:
    included: [bob]
    rules:
      - clauses: [{attribute: plan, op: in, values: [gold]}]
        percent: 50
"#;

fn with_flags(flags: &str) -> String {
    format!("{GOOD}{flags}")
}

#[test]
fn flags_compile_and_evaluate_by_variation_name() {
    use crate::flags::{Context, Reason};
    let loaded = parse(&with_flags(FLAGS), "sluice.yaml", &env).unwrap();
    let t = &loaded.targeting;
    let alice = t.set.evaluate("support-bot", &Context::new("user", "alice"));
    assert_eq!(alice.reason, Reason::TargetMatch);
    assert_eq!(t.variation_name("support-bot", alice.variation_index.unwrap()), Some("concise"));
    let staff = Context::from_json(&serde_json::json!({"kind":"user","key":"bob","email":"b@example.com"})).unwrap();
    let d = t.set.evaluate("support-bot", &staff);
    assert_eq!(d.reason, Reason::RuleMatch { rule_index: 0, rule_id: "staff", in_experiment: false });
    let other = t.set.evaluate("support-bot", &Context::new("user", "zed"));
    assert!(matches!(other.reason, Reason::Fallthrough { .. }));
}

#[test]
fn flag_problems_are_located_in_the_yaml() {
    let bad = FLAGS
        .replace("variation: concise\n    fallthrough", "variation: verbose\n    fallthrough")
        .replace("percent: 5.5", "percent: 6.5")
        .replace(
            "values: [\"@example.com\"]",
            "values: [\"@example.com\"]}\n          - {attribute: email, op: matches, values: [\"(\"]",
        );
    let err = parse(&with_flags(&bad), "sluice.yaml", &env).unwrap_err().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[0].contains("flags.support-bot.rules[0].clauses[1].values[0]: invalid regular expression"), "{err}");
    assert!(lines[1].contains("flags.support-bot.rules[0].variation: unknown variation `verbose`"), "{err}");
    assert!(lines[2].contains("flags.support-bot.fallthrough.rollout.variations: percentages add up to 101%"), "{err}");
    // Each line points into the flags section.
    let first_flag_line = GOOD.lines().count() + 2;
    for l in &lines {
        let line: usize = l.split(':').nth(1).unwrap().parse().unwrap();
        assert!(line > first_flag_line, "{l}");
    }
}

#[test]
fn flag_keys_must_not_shadow_aliases() {
    let err = errors(&with_flags(&FLAGS.replace("support-bot:", "fast:")));
    assert!(err.contains("flags.fast: `fast` is also an alias"), "{err}");
}

#[test]
fn prerequisite_and_segment_cycles_are_refused() {
    let cyclic = r#"
flags:
  a:
    variations: [{name: x}, {name: y}]
    prerequisites: [{flag: b, variation: x}]
    fallthrough: {variation: x}
  b:
    variations: [{name: x}]
    prerequisites: [{flag: a, variation: x}]
    fallthrough: {variation: x}
segments:
  s1:
    rules: [{clauses: [{segment: s2}]}]
  s2:
    rules: [{clauses: [{segment: s1}]}]
"#;
    let err = errors(&with_flags(cyclic));
    assert!(err.contains("flags.a.prerequisites: prerequisites form a cycle"), "{err}");
    assert!(err.contains("flags.b.prerequisites: prerequisites form a cycle"), "{err}");
    assert!(err.contains("segments.s1.rules: segments refer to each other in a cycle"), "{err}");
}

/// `n` flags, each with the next one as its prerequisite.
fn chain(n: usize) -> String {
    let mut text = String::from("flags:\n");
    for i in 0..n {
        let prerequisite = if i + 1 < n {
            format!("\n    prerequisites: [{{flag: f{}, variation: x}}]", i + 1)
        } else {
            String::new()
        };
        text.push_str(&format!(
            "  f{i}:\n    variations: [{{name: x}}]{prerequisite}\n    fallthrough: {{variation: x}}\n"
        ));
    }
    text
}

#[test]
fn prerequisite_chains_longer_than_evaluation_follows_are_refused() {
    // 32 flags in a chain evaluate; 33 do not, and the error names the flag.
    assert!(parse(&with_flags(&chain(32)), "sluice.yaml", &env).is_ok());
    let err = errors(&with_flags(&chain(33)));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("flags.f0.prerequisites: the prerequisite chain is 33 long; evaluation follows at most 32"),
        "{err}"
    );
    // A 10,000-deep chain is checked in one pass (it took seconds, each flag walked again).
    let err = errors(&with_flags(&chain(10_000)));
    assert_eq!(err.lines().count(), 10_000 - 32, "every flag that cannot be evaluated is named");
    assert!(err.contains("flags.f9967.prerequisites: the prerequisite chain is 33 long"), "{err}");
}

#[test]
fn a_prerequisite_written_with_key_is_an_unknown_field_not_a_secret() {
    let text = chain(2).replace("{flag: f1,", "{key: f1,");
    let err = errors(&with_flags(&text));
    assert!(err.contains("flags.f0.prerequisites[0].key: unknown field `key`, expected `flag`"), "{err}");
    assert!(!err.contains("secret"), "{err}");
    // Real secrets stay hidden, whatever their name.
    for (from, to) in [("key: ${APP_KEY}", "key: [sk-LEAK]"), ("org-1", "[sk-LEAK]")] {
        let err = errors(&GOOD.replace(from, to));
        assert!(err.contains("this field holds a secret") && !err.contains("sk-LEAK"), "{err}");
    }
}

#[test]
fn a_rollout_names_each_variation_once() {
    let flags = r#"
flags:
  f:
    variations: [{name: control}, {name: candidate}]
    fallthrough:
      rollout:
        variations: [{variation: control, percent: 50}, {variation: control, percent: 50}]
"#;
    let err = errors(&with_flags(flags));
    assert!(
        err.contains(
            "flags.f.fallthrough.rollout.variations[1].variation: `control` is already in this rollout (variations[0])"
        ),
        "{err}"
    );
}

#[test]
fn segments_nested_deeper_than_evaluation_follows_are_refused() {
    let nest = |n: usize| {
        let mut text = String::from("segments:\n");
        for i in 0..n {
            let rules = if i + 1 < n {
                format!("rules: [{{clauses: [{{segment: s{}}}]}}]", i + 1)
            } else {
                "included: [u]".into()
            };
            text.push_str(&format!("  s{i}: {{{rules}}}\n"));
        }
        text
    };
    assert!(parse(&with_flags(&nest(32)), "sluice.yaml", &env).is_ok());
    let err = errors(&with_flags(&nest(33)));
    assert!(err.contains("segments.s0.rules: the nested segment chain is 33 long"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
