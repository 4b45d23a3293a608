//! `POST /admin/v1/flags/{key}/evaluate` and `sluice ctl eval`: a flag evaluated against
//! the running gateway — runtime changes included, unlike `sluice eval` on the file — with
//! the picked AI config version's prompt rendered for the context.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};

const WRITE: &str = "admin-write-token-0123456789";
const READ: &str = "admin-read-token-0123456789";

fn evaluate_config() -> String {
    config("http://127.0.0.1:9/v1", "")
        + &format!(
            r#"admin:
  tokens:
    - {{name: ops, token: {WRITE}, role: write}}
    - {{name: viewer, token: {READ}, role: read}}
ai_configs:
  bot:
    versions:
      - version: 1
        provider: mock
        model: mock-1
        parameters: {{temperature: 0.2}}
        messages: [{{role: system, content: "Hello {{{{ldctx.name}}}} from {{{{client.team}}}}.{{{{#vars.topic}}}} Topic: {{{{vars.topic}}}}.{{{{/vars.topic}}}}"}}]
      - version: 2
        provider: mock
        model: mock-2
        messages: [{{role: system, content: "Be brief."}}]
        messages_mode: replace
flags:
  bot:
    variations:
      - {{name: control, ai_config: bot, version: 1}}
      - {{name: treatment, ai_config: bot, version: 2}}
    rules:
      - id: staff
        clauses: [{{attribute: key, op: startsWith, values: ["staff-"]}}]
        variation: treatment
    fallthrough: {{variation: control}}
  plain:
    variations: [{{name: yes, value: true}}, {{name: no, value: false}}]
    fallthrough: {{variation: no}}
"#
        )
}

async fn evaluate(gw: &Running, token: &str, flag: &str, body: Value) -> Answer {
    let mut req = post(&format!("/admin/v1/flags/{flag}/evaluate"), None, &body.to_string());
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    send(gw.admin_addr, req).await
}

#[tokio::test]
async fn a_flag_is_evaluated_against_the_running_state_with_its_prompt_rendered() {
    let gw = gateway(&evaluate_config()).await;
    // A read token may evaluate; the prompt is rendered for the context, variables and client.
    let body = json!({"context": {"kind": "user", "key": "u-1", "name": "Ada"}, "variables": {"topic": "billing"},
        "client": "app", "explain": true});
    let a = evaluate(&gw, READ, "bot", body.clone()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!((v["variation"].as_str(), v["reason"]["kind"].as_str()), (Some("control"), Some("FALLTHROUGH")), "{v}");
    let config = &v["ai_config"];
    assert_eq!((config["key"].as_str(), config["version"].as_u64()), (Some("bot"), Some(1)), "{v}");
    assert_eq!((config["provider"].as_str(), config["model"].as_str()), (Some("mock"), Some("mock-1")));
    assert_eq!(config["parameters"], json!({"temperature": 0.2}));
    assert_eq!(config["messages"], json!([{"role": "system", "content": "Hello Ada from t. Topic: billing."}]));
    assert!(
        v["explain"].as_array().is_some_and(|l| l.iter().any(|s| s.as_str().unwrap().contains("fallthrough"))),
        "{v}"
    );

    // A runtime change is what the next evaluation sees (the file still says control).
    let mut change = post("/admin/v1/flags/bot/fallthrough", None, r#"{"variation":"treatment","reason":"try"}"#);
    *change.method_mut() = http::Method::PUT;
    change.headers_mut().insert("authorization", format!("Bearer {WRITE}").parse().unwrap());
    assert_eq!(send(gw.admin_addr, change).await.status, 200);
    let v = evaluate(&gw, READ, "bot", body).await.json();
    assert_eq!(v["variation"], "treatment", "{v}");
    assert_eq!(v["revision"], 2);
    assert_eq!(v["ai_config"]["messages_mode"], "replace");
    assert_eq!(v["ai_config"]["messages"], json!([{"role": "system", "content": "Be brief."}]));

    // A bare user key is a user context; a rule matches it.
    let v = evaluate(&gw, READ, "bot", json!({"context": "staff-7"})).await.json();
    assert_eq!((v["variation"].as_str(), v["reason"]["ruleId"].as_str()), (Some("treatment"), Some("staff")), "{v}");
    // A plain flag has a value and no AI config.
    let v = evaluate(&gw, READ, "plain", json!({"context": "u"})).await.json();
    assert_eq!((v["value"].clone(), v["ai_config"].clone()), (json!(false), Value::Null), "{v}");

    // Bad input gets a clear error.
    let a = evaluate(&gw, READ, "nope", json!({"context": "u"})).await;
    assert_eq!(a.status, 404, "{}", a.text());
    for (body, field) in [
        (json!({}), "context"),
        (json!({"context": {"kind": "user"}}), "context"),
        (json!({"context": "u", "variables": [1]}), "variables"),
        (json!({"context": "u", "client": "nobody"}), "client"),
    ] {
        let a = evaluate(&gw, READ, "bot", body.clone()).await;
        assert_eq!(a.status, 422, "{body}: {}", a.text());
        assert_eq!(a.json()["error"]["problems"][0]["path"], field, "{body}: {}", a.text());
    }
    let a = evaluate(&gw, "wrong-token", "bot", json!({"context": "u"})).await;
    assert_eq!(a.status, 401);
    gw.shutdown().await;
}

#[tokio::test]
async fn sluice_ctl_eval_shows_the_variation_and_the_rendered_prompt() {
    let gw = gateway(&evaluate_config()).await;
    let url = format!("http://{}", gw.admin_addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["ctl", "eval", "bot", "--context", r#"{"kind":"user","key":"u-1","name":"Ada"}"#])
            .args(["--variables", r#"{"topic":"refunds"}"#, "--client", "app"])
            .env("SLUICE_ADMIN_URL", url)
            .env("SLUICE_ADMIN_TOKEN", READ)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("variation   control (FALLTHROUGH)"), "{text}");
    assert!(text.contains("ai config   bot@1"), "{text}");
    assert!(text.contains("[system] Hello Ada from t. Topic: refunds."), "{text}");
    gw.shutdown().await;
}
