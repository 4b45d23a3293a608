//! A vendor migration as an app sees it: one flag, `control` on an OpenAI-kind provider,
//! `candidate` on an Anthropic-kind provider and `azure` on an Azure-kind provider (each
//! backed by `sluice mock-provider` of that kind), driven by the official OpenAI Python SDK with the same script — plain, streamed,
//! a two-turn tool loop, JSON-schema output and the typed exceptions. Both variations must
//! give equal results, and the gateway's per-variation metrics must match the usage the
//! SDK saw.
//!
//! Needs `python3` with the `openai` package (`.ci/run` installs it). Without it the test
//! prints a loud SKIPPED line and passes — unless `SLUICE_REQUIRE_SDK=1`, as in CI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::*;
use serde_json::{json, Value};
use sluice_mock::{MockKind, MockSettings};

/// A `sluice mock-provider` of `kind` on an ephemeral port.
async fn mock(kind: MockKind) -> SocketAddr {
    mock_provider(MockSettings { kind, chunks: 6, ..MockSettings::default() }).await
}

fn migration_config(openai: SocketAddr, anthropic: SocketAddr, azure: SocketAddr) -> String {
    format!(
        r#"
listen: {{data: "127.0.0.1:0", admin: "127.0.0.1:0"}}
clients:
  app: {{key: {KEY}}}
providers:
  oa:
    kind: openai
    base_url: http://{openai}/v1
    api_key: sk-openai-side
  claude:
    kind: anthropic
    base_url: http://{anthropic}/v1
    api_key: sk-ant-side
    max_tokens: 1024
  az:
    kind: azure_openai
    base_url: http://{azure}
    api_version: 2024-10-21
    api_key: sk-azure-side
ai_configs:
  assistant:
    versions:
      - {{version: 1, provider: oa, model: gpt-mock}}
      - {{version: 2, provider: claude, model: claude-mock}}
      - {{version: 3, provider: az, model: gpt-deployment}}
flags:
  assistant:
    variations:
      - {{name: control, ai_config: assistant, version: 1}}
      - {{name: candidate, ai_config: assistant, version: 2}}
      - {{name: azure, ai_config: assistant, version: 3}}
    targets:
      - {{variation: candidate, values: [u-candidate]}}
      - {{variation: azure, values: [u-azure]}}
    fallthrough: {{variation: control}}
    endpoints: [chat_completions]
"#
    )
}

/// Remove what legitimately differs between vendors (ids only; they are not in the output).
fn comparable(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("variation");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_anthropic_and_azure_variations_look_the_same_to_the_openai_sdk() {
    if !python_sdk_or_skip("openai_anthropic_and_azure_variations_look_the_same_to_the_openai_sdk") {
        return;
    }
    let (openai, anthropic, azure) =
        (mock(MockKind::OpenAi).await, mock(MockKind::Anthropic).await, mock(MockKind::Azure).await);
    let gw = gateway(&migration_config(openai, anthropic, azure)).await;
    let base = format!("http://{}/v1", gw.data_addr);
    let targets = json!({
        "control": {"model": "assistant", "user": "u-control"},
        "candidate": {"model": "assistant", "user": "u-candidate"},
        "azure": {"model": "assistant", "user": "u-azure"},
    })
    .to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").args(["tests/sdk/providers.py", &base, KEY, &targets]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "SDK script failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (control, candidate) = (&v["control"], &v["candidate"]);
    assert_eq!(control["variation"], "control");
    assert_eq!(candidate["variation"], "candidate");

    // What the app sees, on the candidate (and, by the comparison below, on control).
    let c = candidate;
    assert_eq!(c["plain"]["object"], "chat.completion");
    assert_eq!(c["plain"]["finish_reason"], "stop");
    assert!(c["plain"]["content"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(c["plain"]["usage"]["cached"], 4, "cache reads are reported as cached prompt tokens");
    assert_eq!(c["stream"]["objects"], json!(["chat.completion.chunk"]));
    assert_eq!(c["stream"]["roles"], 1, "only the first chunk carries the role");
    assert_eq!(c["stream"]["text"], c["plain"]["content"]);
    assert_eq!(c["stream"]["usage"]["completion"], c["plain"]["usage"]["completion"]);
    assert_eq!(c["stream_without_usage"]["usage"], Value::Null, "no usage chunk unless asked for");
    assert_eq!(c["tools_turn1"]["finish_reason"], "tool_calls");
    assert_eq!(
        c["tools_turn1"]["tool_calls"],
        json!([{"name": "get_weather", "arguments": {"city": "mock", "days": 1}}, {"name": "get_time", "arguments": {}}])
    );
    assert_eq!(c["tools_turn2"]["finish_reason"], "stop");
    assert_eq!(c["tools_turn2"]["content"], "Results: result 0 of get_weather; result 1 of get_time");
    assert_eq!(c["tools_stream"]["tool_calls"][1]["index"], 1);
    assert_eq!(c["tools_stream"]["tool_calls"][1]["arguments"], json!({}), "a tool with no arguments gets {{}}");
    assert_eq!(c["tools_one"].as_array().unwrap().len(), 1, "parallel_tool_calls: false");
    assert_eq!(c["json_schema"]["finish_reason"], "stop");
    assert_eq!(c["json_schema"]["content"], json!({"city": "mock", "celsius": 1.5, "sunny": true}));
    assert_eq!(c["json_schema"]["tool_calls"], json!([]));
    assert_eq!(c["json_schema_stream"]["text"], c["json_schema"]["content"].to_string());
    assert_eq!(c["bad_request"]["type"], "BadRequestError");
    assert_eq!(c["rate_limited"], json!({"type": "RateLimitError", "status": 429, "retry_after": "7"}));
    assert_eq!(c["overloaded"]["type"], "InternalServerError");
    assert_eq!(c["overloaded"]["status"], 503);
    assert_eq!(c["mid_stream_error"], json!({"type": "APIError", "message": true}));

    // The differential: the same script gives the same answers on every vendor.
    assert_eq!(comparable(control.clone()), comparable(candidate.clone()));
    assert_eq!(v["azure"]["variation"], "azure");
    assert_eq!(comparable(control.clone()), comparable(v["azure"].clone()), "Azure's annotations are normalised away");

    // Per-variation metrics and usage are exact on both.
    let samples = parse(&scrape(&gw).await);
    for name in ["control", "candidate", "azure"] {
        let of = |metric: &str, extra: &[(&str, &str)]| {
            let mut with = vec![("flag", "assistant"), ("variation", name)];
            with.extend_from_slice(extra);
            sum(&samples, metric, &with)
        };
        let seen = &v[name]["usage_total"];
        assert_eq!(of("sluice_tokens_total", &[("kind", "input")]), seen["prompt"].as_f64().unwrap(), "{name}");
        assert_eq!(of("sluice_tokens_total", &[("kind", "output")]), seen["completion"].as_f64().unwrap(), "{name}");
        assert_eq!(of("sluice_requests_total", &[("outcome", "ok")]), seen["calls"].as_f64().unwrap(), "{name}");
        assert_eq!(of("sluice_requests_total", &[("outcome", "upstream_error")]), 3.0, "{name}: 429, 503, mid-stream");
        assert_eq!(of("sluice_requests_total", &[("outcome", "client_error")]), 1.0, "{name}: the 400");
    }
    gw.shutdown().await;
}

/// `config/migration.yaml` with both vendors at `openai` and `anthropic`.
async fn migration_example(openai: SocketAddr, anthropic: SocketAddr, state: &std::path::Path) -> Running {
    let env = |name: &str| match name {
        "SLUICE_DATA_ADDR" | "SLUICE_ADMIN_ADDR" => Some("127.0.0.1:0".to_string()),
        "OPENAI_BASE_URL" => Some(format!("http://{openai}/v1")),
        "ANTHROPIC_BASE_URL" => Some(format!("http://{anthropic}/v1")),
        "SLUICE_STATE_DIR" => Some(state.display().to_string()),
        _ => None,
    };
    let yaml = std::fs::read_to_string("config/migration.yaml").unwrap();
    let loaded = sluice::config::parse(&yaml, "config/migration.yaml", &env).unwrap();
    sluice::server::start(sluice::server::prepare(loaded).unwrap()).await.unwrap()
}

/// `config/migration.yaml` as documented: both vendors behind one flag, and the
/// candidate's overload (Anthropic's 529) retried on control.
#[tokio::test]
async fn the_migration_example_config_works() {
    let openai = mock(MockKind::OpenAi).await;
    let ask = || {
        let body = r#"{"model":"assistant","user":"qa-tester","messages":[{"role":"user","content":"Hello"}]}"#;
        post("/v1/chat/completions", Some("sk-sluice-demo"), body)
    };
    let tmp = temp_dir("migration");
    let state = tmp.path().join("state");
    let gw = migration_example(openai, mock(MockKind::Anthropic).await, &state).await;
    let a = send(gw.data_addr, ask()).await;
    assert_eq!((a.status.as_u16(), a.header("x-sluice-variation")), (200, "candidate"), "{}", a.text());
    assert_eq!(a.json()["model"], "claude-sonnet-4-5");
    assert_eq!(a.json()["object"], "chat.completion");
    gw.shutdown().await;

    // An Anthropic that is always overloaded: the candidate's 529 is retried on control.
    let overloaded = mock_provider(MockSettings {
        kind: MockKind::Anthropic,
        error_rate: 1.0,
        error_status: 529,
        ..MockSettings::default()
    })
    .await;
    let gw = migration_example(openai, overloaded, &state).await;
    let a = send(gw.data_addr, ask()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!((a.header("x-sluice-variation"), a.header("x-sluice-fallback-from")), ("control", "candidate"));
    assert_eq!(a.json()["model"], "gpt-4o-mini");
    gw.shutdown().await;
}
