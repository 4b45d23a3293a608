//! A provider that misbehaves, or an app that sends what a provider cannot take, never
//! hurts a variation or an app: the app's mistakes are 400s that count as its own and never
//! fall back; a provider that fails before its first event is a 502 (and a fallback); a
//! provider's credentials, cookies and redirects never reach the app.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;

/// One provider of each kind at `bad` (each the candidate of a flag with a fallback on
/// `control`, at `good`), and pass-through models `oai/m`, `ant/m`, `az/m`.
fn hostile_config(bad: &str, good: &str) -> String {
    let mut flags = String::new();
    for flag in ["fb-oai", "fb-ant", "fb-az"] {
        flags.push_str(&format!(
            r#"
  {flag}:
    fallback_variation: control
    variations:
      - {{name: control, ai_config: {flag}, version: 1}}
      - {{name: candidate, ai_config: {flag}, version: 2}}
    fallthrough: {{variation: candidate}}
    endpoints: [chat_completions]"#
        ));
    }
    let mut configs = String::new();
    for (flag, provider) in [("fb-oai", "oai"), ("fb-ant", "ant"), ("fb-az", "az")] {
        configs.push_str(&format!(
            r#"
  {flag}:
    versions:
      - {{version: 1, provider: good, model: gpt-x}}
      - {{version: 2, provider: {provider}, model: m}}"#
        ));
    }
    format!(
        r#"
listen: {{data: "127.0.0.1:0", admin: "127.0.0.1:0"}}
clients:
  app: {{key: {KEY}}}
providers:
  good:
    kind: openai
    base_url: {good}/v1
    api_key: {PROVIDER_KEY}
  oai:
    kind: openai
    base_url: {bad}/v1
    api_key: {PROVIDER_KEY}
    timeouts: {{connect: 1s, first_byte: 2s, idle: 2s}}
  ant:
    kind: anthropic
    base_url: {bad}/v1
    api_key: {PROVIDER_KEY}
    max_tokens: 64
    timeouts: {{connect: 1s, first_byte: 2s, idle: 2s}}
  az:
    kind: azure_openai
    base_url: {bad}
    api_version: 2024-10-21
    api_key: {PROVIDER_KEY}
    timeouts: {{connect: 1s, first_byte: 2s, idle: 2s}}
ai_configs:{configs}
flags:{flags}
"#
    )
}

/// A well-behaved OpenAI-compatible upstream (streams or JSON).
async fn good_upstream() -> Upstream {
    Upstream::start(Reply::PerRequest(Arc::new(|r: &Recorded| {
        if r.json()["stream"].as_bool() == Some(true) {
            Reply::Sse(openai_stream(r, &["ok"]))
        } else {
            json_reply(CHAT_RESPONSE)
        }
    })))
    .await
}

async fn setup(bad: Reply) -> (Upstream, Upstream, Running) {
    let bad = Upstream::start(bad).await;
    let good = good_upstream().await;
    let gw = gateway(&hostile_config(&format!("http://{}", bad.addr), &format!("http://{}", good.addr))).await;
    (bad, good, gw)
}

fn requests(samples: &Samples, flag: &str, variation: &str, outcome: &str) -> f64 {
    sum(samples, "sluice_requests_total", &[("flag", flag), ("variation", variation), ("outcome", outcome)])
}

#[tokio::test]
async fn a_body_the_anthropic_translation_cannot_read_is_the_apps_400_never_a_fallback() {
    let (bad, _good, gw) = setup(json_reply(CHAT_RESPONSE)).await;
    let deep = format!(
        r#"{{"model":"fb-ant","messages":[{{"role":"user","content":"hi"}}],"x":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    for _ in 0..3 {
        let a = send(gw.data_addr, post("/v1/chat/completions", Some(KEY), &deep)).await;
        assert_eq!(a.status, 400, "{}", a.text());
        assert_eq!(a.error_code(), "unsupported_value", "{}", a.text());
        assert!(a.text().contains("recursion limit"), "{}", a.text());
        assert_eq!(a.header("x-sluice-fallback-from"), "", "never a fallback");
        assert_eq!(a.header("x-sluice-variation"), "", "no variation answered");
    }
    // A lone surrogate is the same: the app's JSON, not the provider's failure.
    let surrogate = r#"{"model":"ant/m","messages":[{"role":"user","content":"\ud800"}]}"#;
    let a = send(gw.data_addr, post("/v1/chat/completions", Some(KEY), surrogate)).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (400, "unsupported_value"), "{}", a.text());
    assert_eq!(bad.calls.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing was sent");
    let m = parse(&scrape(&gw).await);
    assert_eq!(requests(&m, "fb-ant", "candidate", "client_error"), 3.0, "counted as the app's");
    assert_eq!(requests(&m, "fb-ant", "candidate", "upstream_error"), 0.0, "never the candidate's");
    assert_eq!(requests(&m, "fb-ant", "control", "ok"), 0.0, "no fallback");
    gw.shutdown().await;
}
