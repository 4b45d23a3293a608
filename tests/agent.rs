//! Agent-mode AI configs: instructions and tools next to the model. On the proxy path the
//! instructions become the system message and the agent's tools are added after the app's
//! own, the app's bytes kept exactly; a clash of names is refused at load (`sluice check`,
//! with the place) and at request time (a 400, nothing sent). Apps that call the provider
//! themselves get the agent's config from the evaluate endpoint and OFREP; judges score an
//! agent's answers like any other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// An agent `trip` (instructions, two tools) served by the flag `trip` on the `up` provider,
/// with a judge scoring every answer.
const AGENT: &str = r#"
admin:
  tokens:
    - {name: ops, token: admin-write-token-0123456789, role: write}
judges:
  quality: {provider: judge, model: judge-1, rubric: "Is the answer helpful?"}
ai_configs:
  trip:
    versions:
      - version: 1
        provider: up
        model: gpt-x
        mode: agent
        parameters: {temperature: 0.1, tool_choice: auto}
        instructions: "You plan trips for {{ldctx.name}}. Prefer trains."
        tools:
          - name: get_weather
            description: The forecast for a city
            parameters: {type: object, properties: {city: {type: string}}, required: [city]}
          - name: book_train
            parameters: {type: object, properties: {from: {type: string}, to: {type: string}}}
flags:
  trip:
    variations:
      - {name: agent, ai_config: trip, version: 1}
    fallthrough: {variation: agent}
    judges:
      quality: {sample_rate: 1.0}
"#;

fn agent_config(base_url: &str) -> String {
    must_replace(
        &config(base_url, AGENT),
        "\naliases:\n",
        "\n  judge:\n    kind: mock\n    mock: {judge: true}\naliases:\n",
    )
}

fn agent_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "The forecast for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "book_train",
            "parameters": {"type": "object", "properties": {"from": {"type": "string"}, "to": {"type": "string"}}}}},
    ])
}

fn ask(tools: Option<&str>) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let tools = tools.map(|t| format!(r#","tools":{t}"#)).unwrap_or_default();
    let body =
        format!(r#"{{"model":"trip","user":"u-1","messages":[{{"role":"user","content":"Lyon to Turin?"}}]{tools}}}"#);
    let mut req = post("/v1/chat/completions", Some(KEY), &body);
    req.headers_mut().insert("x-sluice-context", r#"{"kind":"user","key":"u-1","name":"Ada"}"#.parse().unwrap());
    req
}

/// The bytes of the top-level member `name` of a JSON object, as sent.
fn member<'a>(body: &'a [u8], name: &str) -> &'a str {
    let members: std::collections::HashMap<&str, &serde_json::value::RawValue> = serde_json::from_slice(body).unwrap();
    members[name].get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_tools_are_added_to_the_apps_and_its_instructions_lead() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = gateway(&agent_config(&up.base_url())).await;
    let mut conn = Conn::open(gw.data_addr).await;

    // The app's tools, with its own spacing and key order: kept byte for byte, the agent's after.
    let app_tools =
        r#"[ {"function": {"parameters": {"type":"object"},  "name": "lookup_order"}, "type": "function"} ]"#;
    let a = conn.send(ask(Some(app_tools))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let sent = up.last();
    let tools = member(&sent.body, "tools");
    let kept = app_tools.trim_end().strip_suffix(']').unwrap().trim_end();
    assert!(tools.starts_with(&format!("{kept},")), "{tools}");
    let parsed: Vec<Value> = serde_json::from_str(tools).unwrap();
    assert_eq!(parsed.len(), 3);
    assert_eq!(json!(parsed[1..]), agent_tools());
    let body = sent.json();
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "You plan trips for Ada. Prefer trains."},
            {"role": "user", "content": "Lyon to Turin?"},
        ])
    );
    assert_eq!(body["model"], "gpt-x");
    assert_eq!(body["temperature"], 0.1);
    assert_eq!(body["tool_choice"], "auto");

    // No tools of its own, an empty list or null: the agent's alone.
    for tools in [None, Some("[]"), Some(" [ ] "), Some("null")] {
        let a = conn.send(ask(tools)).await;
        assert_eq!(a.status, 200, "{tools:?}: {}", a.text());
        let sent: Value = serde_json::from_str(member(&up.last().body, "tools")).unwrap();
        assert_eq!(sent, agent_tools(), "{tools:?}");
    }

    // A tool of the agent's name, in either form, or tools that are not a list: a 400 naming
    // the problem, and nothing reaches the provider.
    let calls = up.calls.load(std::sync::atomic::Ordering::SeqCst);
    let clash = r#"[{"type":"function","function":{"name":"book_train","parameters":{"type":"object"}}}]"#;
    let a = conn.send(ask(Some(clash))).await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("book_train"), "{}", a.text());
    assert_eq!(a.json()["error"]["param"], "tools", "{}", a.text());
    // The same name in any of a tool's name fields, or in another case, clashes too.
    for clash in [
        r#"[{"name":"get_weather"}]"#,
        r#"[{"type":"function","name":"get_weather","function":{"name":"x"}}]"#,
        r#"[{"type":"custom","custom":{"name":"get_weather"}}]"#,
        r#"[{"type":"function","function":{"name":"Get_Weather"}}]"#,
    ] {
        let a = conn.send(ask(Some(clash))).await;
        assert_eq!(a.status, 400, "{clash}: {}", a.text());
        assert_eq!(a.json()["error"]["code"], "unsupported_value", "{clash}: {}", a.text());
    }
    // Names of a form no provider takes (a look-alike of another script, a space, not a
    // string) are refused before anything is merged.
    for bad in [
        r#"[{"type":"function","function":{"name":"get_w\u0435ather"}}]"#,
        r#"[{"type":"function","function":{"name":"get weather"}}]"#,
        r#"[{"type":"function","function":{"name":7},"name":"get_weather"}]"#,
        r#"{"name":"x"}"#,
        r#""tools""#,
        "[1",
    ] {
        let a = conn.send(ask(Some(bad))).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.text());
    }
    assert_eq!(up.calls.load(std::sync::atomic::Ordering::SeqCst), calls, "a refused request reached the provider");

    // The judge scored the agent's answers like any other (the mock judge: 0 for "hi").
    let answered = 5.0;
    eventually(Duration::from_secs(30), async || {
        let scored = sum(
            &parse(&scrape(&gw).await),
            "sluice_judge_evaluations_total",
            &[("flag", "trip"), ("variation", "agent"), ("judge", "quality"), ("outcome", "scored")],
        );
        (scored == answered).then_some(()).ok_or(format!("{scored} of {answered} scored"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_that_run_the_agent_themselves_get_its_instructions_and_tools() {
    let gw = gateway(&agent_config("http://127.0.0.1:9/v1")).await;
    let body = json!({"context": {"kind": "user", "key": "u-1", "name": "Ada"}});
    let a = send(gw.data_addr, post("/v1/ai-configs/trip/evaluate", Some(KEY), &body.to_string())).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["_ldMeta"]["mode"], "agent");
    assert_eq!(v["instructions"], "You plan trips for Ada. Prefer trains.");
    assert!(v.get("messages").is_none(), "{v}");
    assert_eq!(v["model"], json!({"name": "gpt-x", "parameters": {"temperature": 0.1, "tool_choice": "auto"}}));
    let tools: Vec<Value> = serde_json::from_value(v["tools"].clone()).unwrap();
    assert_eq!(tools.iter().map(|t| t["name"].as_str().unwrap()).collect::<Vec<_>>(), ["get_weather", "book_train"]);
    assert_eq!(tools[0]["parameters"]["required"], json!(["city"]));
    assert!(v["tracking"]["token"].as_str().is_some_and(|t| !t.is_empty()), "{v}");

    // OFREP: the same agent, its instructions unrendered (the app's framework renders them).
    let a = send(
        gw.data_addr,
        post("/ofrep/v1/evaluate/flags/trip", Some(KEY), &json!({"context": {"targetingKey": "u-1"}}).to_string()),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let value = &a.json()["value"];
    assert_eq!(value["_ldMeta"]["mode"], "agent");
    assert_eq!(value["instructions"], "You plan trips for {{ldctx.name}}. Prefer trains.");
    assert_eq!(value["tools"], v["tools"]);
    assert!(!a.text().contains("127.0.0.1:9") && !a.text().contains(PROVIDER_KEY), "{}", a.text());
}

fn sluice() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
}

fn check(yaml: &str) -> (Option<i32>, String, std::path::PathBuf, tempfile::TempDir) {
    let dir = temp_dir("agent-check");
    let path = dir.path().join("sluice.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = sluice().args(["check", "--config"]).arg(&path).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned(), path, dir)
}

/// The 1-based line of the `n`th (0-based) line containing `needle`.
fn line_of(yaml: &str, needle: &str, n: usize) -> usize {
    yaml.lines().enumerate().filter(|(_, l)| l.contains(needle)).nth(n).unwrap().0 + 1
}

#[test]
fn sluice_check_refuses_a_clash_of_tool_names_with_its_place() {
    let good = agent_config("http://127.0.0.1:9/v1");
    let (code, stderr, _, _dir) = check(&good);
    assert_eq!(code, Some(0), "{stderr}");

    let clash = must_replace(&good, "- name: book_train", "- name: get_weather");
    let (code, stderr, path, _dir) = check(&clash);
    assert_eq!(code, Some(1), "{stderr}");
    let line = line_of(&clash, "name: get_weather", 1);
    let at = format!("{}:{line}:", path.display());
    assert!(stderr.starts_with(&at), "expected {at}…, got {stderr}");
    let col: String = stderr[at.len()..].chars().take_while(char::is_ascii_digit).collect();
    assert!(col.parse::<usize>().is_ok_and(|c| c > 0), "{stderr}");
    assert!(stderr.contains("ai_configs.trip.versions[0].tools[1].name"), "{stderr}");
    assert!(stderr.contains("`get_weather` is already the name of tools[0]"), "{stderr}");

    // The other mistakes an agent can carry, each named.
    let cases = [
        (must_replace(&good, "- name: book_train", "- name: \"book train\""), "tools[1].name", "1 to 64 of"),
        (
            must_replace(&good, "type: object, properties: {from", "type: string, properties: {from"),
            "tools[1].parameters",
            "type: object",
        ),
        (
            must_replace(&good, "        instructions: \"You plan trips for {{ldctx.name}}. Prefer trains.\"\n", ""),
            "instructions",
            "needs its instructions",
        ),
        (
            must_replace(&good, "tool_choice: auto}", "tool_choice: auto, tools: []}"),
            "parameters.tools",
            "go under `tools`",
        ),
        (must_replace(&good, "        mode: agent\n", ""), "instructions", "for `mode: agent`"),
        (must_replace(&good, "{{ldctx.name}}. Prefer trains.\"", "{{#ldctx.name}}\""), "instructions", ""),
        (
            must_replace(&good, "- name: book_train", "- name: Get_Weather"),
            "tools[1].name",
            "already the name of tools[0]",
        ),
        (
            must_replace(&good, "properties: {from: {type: string}, to: {type: string}}", "properties: 5"),
            "tools[1].parameters",
            "`properties` an object",
        ),
        (
            must_replace(&good, "description: The forecast for a city", &format!("description: {}", "x".repeat(3_000))),
            "tools",
            "limits.max_request_body: 2048 bytes",
        ),
        (
            must_replace(
                &good,
                "        tools:\n",
                &format!(
                    "        tools:\n{}",
                    (0..128).map(|i| format!("          - {{name: t{i}}}\n")).collect::<String>()
                ),
            ),
            "tools",
            "130 tools: at most 128",
        ),
    ];
    for (yaml, field, message) in cases {
        let (code, stderr, path, _dir) = check(&yaml);
        assert_eq!(code, Some(1), "{field}: {stderr}");
        assert!(stderr.starts_with(&format!("{}:", path.display())), "{stderr}");
        assert!(stderr.contains(&format!("ai_configs.trip.versions[0].{field}")), "{field}: {stderr}");
        assert!(stderr.contains(message), "{field}: {stderr}");
    }
}

async fn admin(gw: &Running, method: &str, path: &str, body: Value) -> Answer {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .header("authorization", "Bearer admin-write-token-0123456789")
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    send(gw.admin_addr, req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_version_added_at_runtime_is_checked_like_the_files() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = gateway(&agent_config(&up.base_url())).await;
    let tool = |name: &str| json!({"name": name, "parameters": {"type": "object"}});
    let v2 = |tools: Value| {
        json!({"reason": "a third tool", "version": {"version": 2, "provider": "up", "model": "gpt-x", "mode": "agent",
            "instructions": "Plan trips.", "tools": tools}})
    };
    let twice = admin(&gw, "POST", "/admin/v1/ai-configs/trip/versions", v2(json!([tool("a"), tool("a")]))).await;
    assert_eq!(twice.status, 422, "{}", twice.text());
    assert!(twice.text().contains("tools[1].name"), "{}", twice.text());
    let added = admin(&gw, "POST", "/admin/v1/ai-configs/trip/versions", v2(json!([tool("a"), tool("b")]))).await;
    assert_eq!(added.status, 200, "{}", added.text());
    let point = json!({"reason": "try v2", "ai_config": "trip", "version": 2});
    assert_eq!(admin(&gw, "PUT", "/admin/v1/flags/trip/variations/agent", point).await.status, 200);

    let a = send(gw.data_addr, ask(None)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let body = up.last().json();
    let names: Vec<&str> =
        body["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(body["messages"][0], json!({"role": "system", "content": "Plan trips."}));
}
