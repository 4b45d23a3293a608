//! Requests routed by flag: targeting picks a variation, its AI config version rewrites
//! the call, and the upstream receives exactly that. Upstreams record what they got.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Two recording upstreams (`a` and `b`), a flag `bot` with control (a@1) and
/// candidate (b@2), rules by email, targets, a segment, and a 5% fallthrough.
fn targeting_config(a: &str, b: &str, extra_flag: &str) -> String {
    let base = config(a, "");
    let text = format!(
        r#"{base}
  b:
    kind: openai
    base_url: {b}
    api_key: sk-b
    timeouts: {{connect: 1s, first_byte: 1s, idle: 500ms}}
ai_configs:
  bot:
    versions:
      - version: 1
        provider: up
        model: model-a
        parameters: {{temperature: 0.2, max_tokens: 100}}
        messages:
          - {{role: system, content: "Hello {{{{ldctx.name}}}} <{{{{ldctx.email}}}}> from {{{{client.name}}}}/{{{{client.team}}}}; topic={{{{vars.topic}}}}; missing=[{{{{vars.nope}}}}]"}}
      - version: 2
        provider: b
        model: model-b
        parameters: {{temperature: 0.9}}
        messages:
          - {{role: system, content: "Be brief, {{{{ldctx.user.name}}}}."}}
        messages_mode: replace
      - version: 3
        provider: b
        model: model-b
        enabled: false
flags:
  bot:
    variations:
      - {{name: control, ai_config: bot, version: 1}}
      - {{name: candidate, ai_config: bot, version: 2}}
    targets:
      - {{variation: candidate, values: [target-me]}}
    rules:
      - id: internal
        clauses: [{{attribute: email, op: endsWith, values: ["@yourcompany.com"]}}]
        variation: candidate
      - id: beta
        clauses: [{{segment: beta}}]
        variation: candidate
      - id: orgs
        clauses: [{{context_kind: org, attribute: key, op: startsWith, values: ["org-"]}}]
        rollout:
          context_kind: org
          variations:
            - {{variation: control, percent: 50}}
            - {{variation: candidate, percent: 50}}
    fallthrough:
      rollout:
        variations:
          - {{variation: control, percent: 95}}
          - {{variation: candidate, percent: 5}}
{extra_flag}
segments:
  beta:
    included: [beta-user]
"#
    );
    must_replace(&text, "\naliases:\n  fast: up/gpt-x\n", "\n") + "aliases:\n  fast: up/gpt-x\n"
}

/// `text` (a [`targeting_config`]) with `bot` falling back on `control`.
fn falling_back(text: &str) -> String {
    must_replace(text, "  bot:\n    variations:", "  bot:\n    fallback_variation: control\n    variations:")
}

async fn two_upstreams() -> (Upstream, Upstream) {
    (Upstream::start(json_reply(CHAT_RESPONSE)).await, Upstream::start(json_reply(CHAT_RESPONSE)).await)
}

fn ctx(json: Value) -> String {
    json.to_string()
}

#[tokio::test]
async fn rules_targets_and_segments_pick_the_variation() {
    let (a, b) = two_upstreams().await;
    let gw = gateway(&targeting_config(&a.base_url(), &b.base_url(), "")).await;

    let internal = ctx(json!({"kind":"user","key":"u1","name":"Ada","email":"ada@yourcompany.com"}));
    let r = send(gw.data_addr, chat("bot", &[("x-sluice-context", &internal)], "")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sluice-flag"), "bot");
    assert_eq!(r.header("x-sluice-variation"), "candidate");
    assert_eq!(r.header("x-sluice-ai-config"), "bot@2");
    assert_eq!(r.header("x-sluice-reason"), r#"{"kind":"RULE_MATCH","ruleId":"internal","ruleIndex":0}"#);
    assert_eq!(b.last().json()["model"], "model-b");
    assert_eq!(b.last().headers["authorization"], "Bearer sk-b", "the candidate's provider and its key");
    assert_eq!(a.calls.load(std::sync::atomic::Ordering::SeqCst), 0);

    // Individual target, by the body's `user` field.
    let r = send(gw.data_addr, chat("bot", &[], r#","user":"target-me""#)).await;
    assert_eq!(
        (r.header("x-sluice-variation"), r.header("x-sluice-reason")),
        ("candidate", r#"{"kind":"TARGET_MATCH"}"#)
    );
    assert_eq!(b.last().json()["user"], "target-me", "the app's `user` field is passed on");

    // Segment membership.
    let r = send(gw.data_addr, chat("bot", &[("x-sluice-context", r#"{"kind":"user","key":"beta-user"}"#)], "")).await;
    assert_eq!(r.header("x-sluice-reason"), r#"{"kind":"RULE_MATCH","ruleId":"beta","ruleIndex":1}"#);

    // Nobody special: the fallthrough rollout.
    let r = send(gw.data_addr, chat("bot", &[("x-sluice-context", r#"{"kind":"user","key":"someone"}"#)], "")).await;
    assert_eq!(r.header("x-sluice-reason"), r#"{"kind":"FALLTHROUGH"}"#);
    gw.shutdown().await;
}

#[tokio::test]
async fn templates_render_and_parameters_merge_into_the_apps_request() {
    let (a, b) = two_upstreams().await;
    let gw = gateway(&targeting_config(&a.base_url(), &b.base_url(), "")).await;
    let context = ctx(json!({"kind":"user","key":"plain-1","name":"Zoë & <Co>","email":"z@example.com"}));
    let extra = r#","temperature":0.7,"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"response_format":{"type":"json_object"},"stream_options":null,"x_custom":[1,2.50]"#;
    // plain-1 falls through to control (bucket checked below by the variation header).
    let r = send(
        gw.data_addr,
        chat("bot", &[("x-sluice-context", &context), ("x-sluice-variables", r#"{"topic":"billing"}"#)], extra),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sluice-variation"), "control");
    let sent = a.last().json();
    assert_eq!(sent["model"], "model-a");
    assert_eq!(sent["temperature"], 0.2, "the version's parameter wins");
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(sent["tools"], json!([{"type":"function","function":{"name":"f","parameters":{}}}]));
    assert_eq!(sent["response_format"], json!({"type":"json_object"}));
    assert_eq!(sent["x_custom"], json!([1, 2.50]));
    assert!(sent.as_object().unwrap().contains_key("stream_options"));
    assert_eq!(
        sent["messages"],
        json!([
            {"role":"system","content":"Hello Zoë & <Co> <z@example.com> from app/t; topic=billing; missing=[]"},
            {"role":"user","content":"hi"}
        ]),
        "rendered without HTML escaping, prepended to the app's messages"
    );
    assert!(!a.last().headers.contains_key("x-sluice-context"), "sluice's own headers stay in sluice");
    gw.shutdown().await;
}

#[tokio::test]
async fn replace_mode_swaps_the_apps_system_message() {
    let (a, b) = two_upstreams().await;
    let gw = gateway(&targeting_config(&a.base_url(), &b.base_url(), "")).await;
    let context = ctx(json!({"kind":"multi","user":{"key":"target-me","name":"Max"},"org":{"key":"acme"}}));
    let body = r#","messages":[{"role":"system","content":"app prompt"},{"role":"user","content":"q"}]"#;
    let req = post("/v1/chat/completions", Some(KEY), &format!(r#"{{"model":"bot"{body}}}"#));
    let mut req = req;
    req.headers_mut().insert("x-sluice-context", context.parse().unwrap());
    let r = send(gw.data_addr, req).await;
    assert_eq!(r.header("x-sluice-variation"), "candidate");
    assert_eq!(
        b.last().json()["messages"],
        json!([{"role":"system","content":"Be brief, Max."},{"role":"user","content":"q"}]),
        "multi-kind {{ldctx.user.name}}; the app's system message replaced"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn five_percent_rollout_over_20000_users_is_accurate_and_sticky() {
    let gw = gateway(&mock_rollout_config()).await;
    let addr = gw.data_addr;
    let users = 20_000;
    let workers = 8;
    let mut tasks = Vec::new();
    for w in 0..workers {
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut seen = HashMap::new();
            for u in (w..users).step_by(workers) {
                let r = conn.send(chat("roll", &[], &format!(r#","user":"user-{u}""#))).await;
                assert_eq!(r.status, 200, "{}", r.text());
                seen.insert(u, r.header("x-sluice-variation").to_string());
            }
            // Sticky: the same users again get the same variations.
            for u in (w..users).step_by(workers * 50) {
                let r = conn.send(chat("roll", &[], &format!(r#","user":"user-{u}""#))).await;
                assert_eq!(seen[&u], r.header("x-sluice-variation"), "user-{u} moved");
            }
            seen.values().filter(|v| *v == "candidate").count()
        }));
    }
    let mut candidates = 0;
    for t in tasks {
        candidates += t.await.unwrap();
    }
    let share = candidates as f64 / users as f64 * 100.0;
    assert!((share - 5.0).abs() <= 0.5, "candidate share {share:.2}% is not within 5 ± 0.5%");
    gw.shutdown().await;
}

/// A rollout flag on the in-process mock provider (no upstream network).
fn mock_rollout_config() -> String {
    must_replace(&must_replace(&config("http://127.0.0.1:9/v1", ""), "aliases:", ""), "  fast: up/gpt-x\n", "")
        + r#"
ai_configs:
  roll:
    versions:
      - {version: 1, provider: mock, model: m-1}
      - {version: 2, provider: mock, model: m-2}
flags:
  roll:
    variations:
      - {name: control, ai_config: roll, version: 1}
      - {name: candidate, ai_config: roll, version: 2}
    fallthrough:
      rollout:
        variations:
          - {variation: control, percent: 95}
          - {variation: candidate, percent: 5}
"#
}

#[tokio::test]
async fn multi_kind_contexts_bucket_by_org() {
    let (a, b) = two_upstreams().await;
    let gw = gateway(&targeting_config(&a.base_url(), &b.base_url(), "")).await;
    // Every user of one org gets the same variation; orgs split.
    let mut by_org = HashMap::new();
    for org in 0..40 {
        let mut variations = Vec::new();
        for user in 0..5 {
            let c =
                ctx(json!({"kind":"multi","user":{"key":format!("u{org}-{user}")},"org":{"key":format!("org-{org}")}}));
            let r = send(gw.data_addr, chat("bot", &[("x-sluice-context", &c)], "")).await;
            assert_eq!(r.header("x-sluice-reason"), r#"{"kind":"RULE_MATCH","ruleId":"orgs","ruleIndex":2}"#);
            variations.push(r.header("x-sluice-variation").to_string());
        }
        variations.dedup();
        assert_eq!(variations.len(), 1, "org-{org}'s users were split: {variations:?}");
        by_org.insert(org, variations.remove(0));
    }
    let candidates = by_org.values().filter(|v| *v == "candidate").count();
    assert!((8..=32).contains(&candidates), "a 50% org rollout gave {candidates}/40 orgs");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_kill_switch_and_disabled_versions() {
    let (a, b) = two_upstreams().await;
    let extra = r#"  killed:
    on: false
    variations:
      - {name: safe, ai_config: bot, version: 1}
      - {name: new, ai_config: bot, version: 2}
    off_variation: safe
    fallthrough: {variation: new}
  disabled:
    variations:
      - {name: safe, ai_config: bot, version: 1}
      - {name: off, ai_config: bot, version: 3}
    fallthrough: {variation: off}
  disabled-soft:
    variations:
      - {name: safe, ai_config: bot, version: 1}
      - {name: off, ai_config: bot, version: 3}
    off_variation: safe
    when_disabled: off_variation
    fallthrough: {variation: off}
"#;
    let gw = gateway(&targeting_config(&a.base_url(), &b.base_url(), extra)).await;
    let r = send(gw.data_addr, chat("killed", &[], r#","user":"x""#)).await;
    assert_eq!((r.header("x-sluice-variation"), r.header("x-sluice-reason")), ("safe", r#"{"kind":"OFF"}"#));
    assert_eq!(a.last().json()["model"], "model-a");
    let r = send(gw.data_addr, chat("disabled", &[], r#","user":"x""#)).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (503, "ai_config_disabled"));
    assert!(r.text().contains("bot@3"));
    let r = send(gw.data_addr, chat("disabled-soft", &[], r#","user":"x""#)).await;
    assert_eq!((r.status.as_u16(), r.header("x-sluice-variation")), (200, "safe"));
    gw.shutdown().await;
}

#[tokio::test]
async fn fallback_happens_before_the_first_byte_only() {
    // `b` (the candidate's provider) is down: refused connections.
    let a = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let (_held, dead) = refusing_addr();
    let dead = format!("http://{dead}/v1");
    let with_fallback = falling_back(&targeting_config(&a.base_url(), &dead, ""));
    let gw = gateway(&with_fallback).await;
    let r = send(gw.data_addr, chat("bot", &[], r#","user":"target-me""#)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sluice-variation"), "control");
    assert_eq!(r.header("x-sluice-fallback-from"), "candidate");
    assert_eq!(r.header("x-sluice-ai-config"), "bot@1");
    assert_eq!(a.last().json()["model"], "model-a", "the control variation's rewrite, not the candidate's");
    gw.shutdown().await;

    // A 5xx from the candidate falls back too.
    let failing = Upstream::start(Reply::Json { status: 503, body: "{}".into(), delay: Duration::ZERO }).await;
    let gw = gateway(&falling_back(&targeting_config(&a.base_url(), &failing.base_url(), ""))).await;
    let r = send(gw.data_addr, chat("bot", &[], r#","user":"target-me""#)).await;
    assert_eq!((r.status.as_u16(), r.header("x-sluice-fallback-from")), (200, "candidate"));
    gw.shutdown().await;

    // Without a fallback, the candidate's 503 is passed through.
    let gw = gateway(&targeting_config(&a.base_url(), &failing.base_url(), "")).await;
    let r = send(gw.data_addr, chat("bot", &[], r#","user":"target-me""#)).await;
    assert_eq!(r.status, 503);
    gw.shutdown().await;

    // Once the first byte has gone to the client, there is no retry.
    let breaking =
        Upstream::start(Reply::Sse(vec![chat_chunk("a"), Step::Wait(Duration::from_millis(20)), Step::Break])).await;
    let calls_before = a.calls.load(std::sync::atomic::Ordering::SeqCst);
    let gw = gateway(&falling_back(&targeting_config(&a.base_url(), &breaking.base_url(), ""))).await;
    let r = send(gw.data_addr, chat("bot", &[], r#","user":"target-me","stream":true"#)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-sluice-variation"), "candidate");
    assert!(r.text().contains("upstream_stream_broken"), "{}", r.text());
    assert_eq!(a.calls.load(std::sync::atomic::Ordering::SeqCst), calls_before, "no fallback after the first byte");
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_targeting_input_is_refused_clearly() {
    let (a, b) = two_upstreams().await;
    let extra = r#"  strict:
    require_context_key: true
    variations:
      - {name: only, ai_config: bot, version: 1}
    fallthrough: {variation: only}
"#;
    let gw = gateway(&targeting_config(&a.base_url(), &b.base_url(), extra)).await;
    // (model, headers, extra body, status, error code)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("bot", vec![("x-sluice-context", "{not json")], "", 400, "invalid_context"),
        ("bot", vec![("x-sluice-context", r#"{"kind":"user"}"#)], "", 400, "invalid_context"),
        ("bot", vec![("x-sluice-variables", "[1]")], "", 400, "invalid_variables"),
        ("bot", vec![], r#","user":5"#, 400, "invalid_type"),
        ("no-such-flag", vec![], "", 404, "model_not_found"),
        ("strict", vec![], "", 400, "context_key_required"),
    ];
    for (model, headers, extra, status, code) in cases {
        let r = send(gw.data_addr, chat(model, &headers, extra)).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (status, code),
            "{model} {headers:?} {extra}: {}",
            r.text()
        );
    }
    let r = send(gw.data_addr, chat("strict", &[], r#","user":"k""#)).await;
    assert_eq!(r.status, 200);
    // Messages that are not an array cannot take the version's prompt.
    let r =
        send(gw.data_addr, post("/v1/chat/completions", Some(KEY), r#"{"model":"bot","user":"u","messages":{"x":1}}"#))
            .await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (400, "invalid_type"));
    // Anonymous requests get a random key each time (the reason shows a rollout ran).
    let r = send(gw.data_addr, chat("bot", &[], "")).await;
    assert_eq!(r.header("x-sluice-reason"), r#"{"kind":"FALLTHROUGH"}"#);
    assert_eq!(
        a.calls.load(std::sync::atomic::Ordering::SeqCst) + b.calls.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    // /v1/models lists the routing flags first.
    let models = send(gw.data_addr, get("/v1/models", Some(KEY))).await.json();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["bot", "strict", "fast", "up/gpt-x"]);
    gw.shutdown().await;
}

#[test]
fn configs_referring_to_missing_things_are_refused_with_paths() {
    let base = targeting_config("http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1", "");
    let load = |text: &str| {
        let loaded = sluice::config::parse(text, "t.yaml", &|_| None)?;
        sluice::server::prepare(loaded).map(|_| ())
    };
    assert!(load(&base).is_ok());
    let err = load(&must_replace(
        &base,
        "{name: candidate, ai_config: bot, version: 2}",
        "{name: candidate, ai_config: bot, version: 9}",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("flags.bot.variations[1].version: AI config `bot` has no version 9 (it has: 1, 2, 3)"),
        "{err}"
    );
    let err = load(&must_replace(
        &base,
        "{name: candidate, ai_config: bot, version: 2}",
        "{name: candidate, ai_config: nope, version: 2}",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("flags.bot.variations[1].ai_config: no AI config `nope`"), "{err}");
    let err = load(&must_replace(
        &base,
        "        provider: b\n        model: model-b\n        parameters",
        "        provider: nobody\n        model: model-b\n        parameters",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("ai_configs.bot.versions[1].provider: unknown provider `nobody`"), "{err}");
    let err =
        load(&must_replace(&base, "Be brief, {{ldctx.user.name}}.", "Be brief, {{#ldctx}}")).unwrap_err().to_string();
    assert!(err.contains("ai_configs.bot.versions[1].messages[0].content: template error"), "{err}");
    let err =
        load(&must_replace(&base, "variation: candidate\n      - id: beta", "variation: candidat\n      - id: beta"))
            .unwrap_err()
            .to_string();
    assert!(err.contains("flags.bot.rules[0].variation: unknown variation `candidat`"), "{err}");
    // Every error carries the file, line and column.
    assert!(err.starts_with("t.yaml:"), "{err}");
}

#[tokio::test]
async fn launchdarkly_ai_config_json_imports_as_a_version() {
    let (a, b) = two_upstreams().await;
    let ld_version = r#"      - version: 4
        messages_mode: replace
        launchdarkly:
          _ldMeta: {variationKey: imported, version: 7, enabled: true}
          model: {name: ld-model, parameters: {temperature: 0.3, maxTokens: 64}, custom: {owner: ml}}
          provider: {name: up}
          messages:
            - {role: system, content: "Imported prompt for {{ldctx.key}}"}
flags:"#;
    let extra = r#"  imported:
    variations:
      - {name: only, ai_config: bot, version: 4}
    fallthrough: {variation: only}
"#;
    let text = must_replacen(&targeting_config(&a.base_url(), &b.base_url(), extra), "flags:", ld_version, 1);
    let gw = gateway(&text).await;
    let r = send(gw.data_addr, chat("imported", &[], r#","user":"k-1""#)).await;
    assert_eq!((r.status.as_u16(), r.header("x-sluice-ai-config")), (200, "bot@4"), "{}", r.text());
    let sent = a.last().json();
    assert_eq!(sent["model"], "ld-model");
    assert_eq!(sent["temperature"], 0.3);
    assert_eq!(sent["maxTokens"], 64, "LaunchDarkly parameters pass as they are");
    assert_eq!(
        sent["messages"],
        json!([{"role":"system","content":"Imported prompt for k-1"},{"role":"user","content":"hi"}])
    );
    gw.shutdown().await;

    // `_ldMeta.enabled: false` disables the version.
    let disabled = must_replace(&text, "enabled: true}", "enabled: false}");
    let gw = gateway(&disabled).await;
    let r = send(gw.data_addr, chat("imported", &[], r#","user":"k-1""#)).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (503, "ai_config_disabled"));
    gw.shutdown().await;
}
