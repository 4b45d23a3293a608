//! The official OpenAI Python SDK against the example config: plain and streamed chat,
//! completions, embeddings, models and errors.
//!
//! Needs `python3` with the `openai` package (`.ci/run` installs it). Without it the
//! test prints a loud SKIPPED line and passes — unless `SLUICE_REQUIRE_SDK=1`, as in CI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{gateway, must_replace, python_sdk_or_skip, temp_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_works_through_sluice() {
    if !python_sdk_or_skip("the_openai_python_sdk_works_through_sluice") {
        return;
    }
    let state = temp_dir("sdk");
    let yaml = std::fs::read_to_string("config/sluice.yaml").unwrap();
    let yaml = must_replace(&yaml, "127.0.0.1:8080", "127.0.0.1:0");
    let yaml = must_replace(&yaml, "127.0.0.1:8081", "127.0.0.1:0");
    let yaml = must_replace(&yaml, "chunk_delay: 15ms", "chunk_delay: 1ms");
    let yaml = must_replace(&yaml, ".sluice-state", &state.path().join("state").display().to_string());
    let gw = gateway(&yaml).await;
    let base = format!("http://{}/v1", gw.data_addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").args(["tests/sdk/smoke.py", &base, "sk-sluice-demo"]).output().unwrap()
    })
    .await
    .unwrap();
    gw.shutdown().await;
    assert!(out.status.success(), "SDK script failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("OpenAI SDK saw: {v}");

    assert!(v["chat"]["content"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(v["chat"]["finish_reason"], "stop");
    assert!(v["chat"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(v["stream"]["chunks"], 12, "the example mock answers in 12 chunks");
    assert_eq!(v["stream"]["finish_reason"], "stop");
    assert!(v["stream"]["total_tokens"].as_u64().unwrap() > 0);
    assert!(v["completion"]["text"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(v["embeddings"]["count"], 2);
    assert_eq!(
        v["models"],
        serde_json::json!(["demo", "fast", "mock-b/mock-2", "mock/mock-1", "openai/gpt-4o-mini", "support-bot"])
    );
    assert_eq!(
        v["targeted"]["internal"],
        serde_json::json!({"variation": "candidate", "ai_config": "support-bot@2", "model": "mock-2"})
    );
    assert_eq!(
        v["targeted"]["everyone"],
        serde_json::json!({"variation": "control", "ai_config": "support-bot@1", "model": "mock-1"})
    );
    assert_eq!(v["not_found"], serde_json::json!({"status": 404, "code": "model_not_found"}));
    assert_eq!(v["bad_key"], serde_json::json!({"status": 401, "code": "invalid_api_key"}));
}
