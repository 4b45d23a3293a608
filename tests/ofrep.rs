//! OpenFeature Remote Evaluation (OFREP) against a `sluice serve` child on the example
//! config plus typed flags and OFREP keys (`tests/ofrep/flags.yaml`): the protocol's
//! statuses and shapes, the bulk ETag, the LaunchDarkly → OpenFeature reason mapping row
//! by row, and agreement with `sluice eval` and the proxy path over random contexts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;

use common::*;
use serde_json::{json, Value};

pub const OFREP_KEY: &str = "sk-ofrep-only-0123456789";
pub const LIMITED_KEY: &str = "sk-ofrep-limited-0123456789";
pub const WEB_KEY: &str = "pk-web-0123456789";
pub const WEB_ORIGIN: &str = "http://app.example.test";

/// The example config with `tests/ofrep/flags.yaml`'s flags and clients added.
pub fn ofrep_config(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = example_config_in(dir);
    let extra = std::fs::read_to_string("tests/ofrep/flags.yaml").unwrap();
    let (clients, flags) = extra.split_once("# ---- flags\n").unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = must_replace(&text, "\nclients:", &format!("\nclients:\n{}", clients.trim_end_matches('\n')));
    let text = must_replace(&text, "\nsegments:", &format!("\n{}\nsegments:", flags.trim_end_matches('\n')));
    std::fs::write(&cfg, text).unwrap();
    cfg
}

struct Served {
    child: std::process::Child,
    data: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Served {
    let dir = temp_dir("ofrep");
    let cfg = ofrep_config(dir.path());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(["serve", "--config"]).arg(&cfg);
    let (child, data, admin) = spawn_serving(cmd, &dir.path().join("sluice.log"));
    Served { child, data, admin, _dir: dir }
}

async fn ofrep(s: &Served, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut b = http::Request::builder().method("POST").uri(path).header("host", "sluice");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(s.data, b.body(http_body_util::Full::new(bytes::Bytes::from(body.to_string()))).unwrap()).await
}

fn bearer(key: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {key}"))
}

async fn one(s: &Served, flag: &str, context: Value) -> Answer {
    let auth = bearer(OFREP_KEY);
    let body = json!({ "context": context }).to_string();
    ofrep(s, &format!("/ofrep/v1/evaluate/flags/{flag}"), &[(auth.0, &auth.1)], &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofrep_statuses_shapes_and_the_reason_mapping() {
    let s = serve();
    // Typed values in their JSON form, a variant and a standard reason each.
    let cases = [
        ("theme", json!({"targetingKey": "u1"}), json!("light"), "light", "STATIC", "FALLTHROUGH"),
        ("new-checkout", json!({"targetingKey": "u1"}), json!(false), "off", "DEFAULT", "FALLTHROUGH"),
        (
            "new-checkout",
            json!({"targetingKey": "u1", "beta": true}),
            json!(true),
            "on",
            "TARGETING_MATCH",
            "RULE_MATCH",
        ),
        ("new-checkout", json!({"targetingKey": "tester-1"}), json!(true), "on", "TARGETING_MATCH", "TARGET_MATCH"),
        ("ratio", json!({"targetingKey": "u1"}), json!(2.0), "high", "STATIC", "FALLTHROUGH"),
        (
            "limits",
            json!({"targetingKey": "u1"}),
            json!({"max": 3, "tiers": ["a"]}),
            "default",
            "STATIC",
            "FALLTHROUGH",
        ),
        ("retired", json!({"targetingKey": "u1"}), json!("old"), "old", "DISABLED", "OFF"),
        ("gated", json!({"targetingKey": "u1"}), json!("closed"), "closed", "DEFAULT", "PREREQUISITE_FAILED"),
    ];
    for (flag, context, value, variant, reason, ld) in cases {
        let a = one(&s, flag, context.clone()).await;
        assert_eq!(a.status, 200, "{flag} {context}: {}", a.text());
        assert_eq!(a.header("content-type"), "application/json");
        let v = a.json();
        assert_eq!(
            (&v["key"], &v["value"], &v["variant"], &v["reason"]),
            (&json!(flag), &value, &json!(variant), &json!(reason)),
            "{flag} {context}"
        );
        assert_eq!(v["metadata"]["ldReason"], ld);
        for (k, m) in v["metadata"].as_object().unwrap() {
            assert!(!m.is_object() && !m.is_array() && !m.is_null(), "metadata {k} is not a primitive: {m}");
        }
    }
    // Numbers keep their JSON form: an integer stays one, a float stays one.
    let ratio = one(&s, "ratio", json!({"targetingKey": "u1"})).await;
    assert!(ratio.text().contains("\"value\":2.0"), "{}", ratio.text());
    let items = one(&s, "max-items", json!({"targetingKey": "u1"})).await.json();
    assert_eq!(items["reason"], "SPLIT");
    assert!(items["value"].is_u64(), "{items}");
    let rule = one(&s, "new-checkout", json!({"targetingKey": "u1", "beta": true})).await.json();
    assert_eq!((&rule["metadata"]["ruleId"], &rule["metadata"]["ruleIndex"]), (&json!("beta-users"), &json!(0)));
    let gated = one(&s, "gated", json!({"targetingKey": "u1"})).await.json();
    assert_eq!(gated["metadata"]["prerequisiteKey"], "retired");

    // A routing flag: its AI config version in LaunchDarkly's shape, unrendered; no URL or key.
    let bot = one(&s, "support-bot", json!({"targetingKey": "qa-tester"})).await;
    let v = bot.json();
    assert_eq!((&v["variant"], &v["reason"]), (&json!("candidate"), &json!("TARGETING_MATCH")));
    assert_eq!(
        v["value"]["_ldMeta"],
        json!({"enabled": true, "version": 2, "mode": "completion", "variationKey": "candidate"})
    );
    assert_eq!(v["value"]["model"]["name"], "mock-2");
    assert_eq!(v["value"]["provider"], json!({"name": "mock-b"}));
    assert!(v["value"]["messages"][0]["content"].as_str().unwrap().contains("{{ldctx.name}}"), "unrendered: {v}");
    assert_eq!((&v["metadata"]["aiConfigKey"], &v["metadata"]["aiConfigVersion"]), (&json!("support-bot"), &json!(2)));
    for secret in ["api.openai.com", "base_url", "api_key", "OPENAI"] {
        assert!(!bot.text().contains(secret), "{secret} in {}", bot.text());
    }

    // Errors.
    let missing = one(&s, "nope", json!({"targetingKey": "u1"})).await;
    assert_eq!((missing.status.as_u16(), missing.json()["errorCode"].as_str()), (404, Some("FLAG_NOT_FOUND")));
    assert_eq!(missing.json()["key"], "nope");
    let hidden = one(&s, "hidden", json!({"targetingKey": "u1"})).await;
    assert_eq!(hidden.status, 404, "a flag outside the key's list does not exist for it");
    let no_key = one(&s, "theme", json!({"email": "x@y.z"})).await;
    assert_eq!((no_key.status.as_u16(), no_key.json()["errorCode"].as_str()), (400, Some("TARGETING_KEY_MISSING")));
    let auth = bearer(OFREP_KEY);
    let bad = ofrep(&s, "/ofrep/v1/evaluate/flags/theme", &[(auth.0, &auth.1)], "{not json").await;
    assert_eq!((bad.status.as_u16(), bad.json()["errorCode"].as_str()), (400, Some("PARSE_ERROR")));
    let unauthorized = ofrep(&s, "/ofrep/v1/evaluate/flags/theme", &[], r#"{"context":{"targetingKey":"u"}}"#).await;
    assert_eq!((unauthorized.status.as_u16(), unauthorized.body.len()), (401, 0));
    let wrong = ofrep(&s, "/ofrep/v1/evaluate/flags/theme", &[("authorization", "Bearer nope")], "{}").await;
    assert_eq!(wrong.status, 401);
    let api_key =
        ofrep(&s, "/ofrep/v1/evaluate/flags/theme", &[("x-api-key", OFREP_KEY)], r#"{"context":{"targetingKey":"u"}}"#)
            .await;
    assert_eq!(api_key.status, 200, "X-API-Key works too");
    let big = format!(r#"{{"context":{{"targetingKey":"u","pad":"{}"}}}}"#, "x".repeat(70_000));
    let too_large = ofrep(&s, "/ofrep/v1/evaluate/flags/theme", &[(auth.0, &auth.1)], &big).await;
    assert_eq!(too_large.status, 413);
    // An unknown key is echoed, but at most 200 characters of it.
    let long = format!("/ofrep/v1/evaluate/flags/{}", "k".repeat(5_000));
    let not_found = ofrep(&s, &long, &[(auth.0, &auth.1)], r#"{"context":{"targetingKey":"u"}}"#).await;
    assert_eq!(not_found.status, 404);
    assert_eq!(not_found.json()["errorCode"], "FLAG_NOT_FOUND");
    assert!(not_found.body.len() < 1_000, "{} bytes", not_found.body.len());
    let get = send(s.data, get("/ofrep/v1/evaluate/flags/theme", Some(OFREP_KEY))).await;
    assert_eq!((get.status.as_u16(), get.header("allow")), (405, "POST"));

    // An OFREP-only key may not call the OpenAI endpoints.
    let chat_denied = send(s.data, chat("support-bot", &[("authorization", &format!("Bearer {OFREP_KEY}"))], "")).await;
    assert_eq!(chat_denied.status, 403, "{}", chat_denied.text());

    // A rate-limited key: 429 with whole seconds in Retry-After, nothing evaluated.
    let limited = bearer(LIMITED_KEY);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let a = ofrep(
            &s,
            "/ofrep/v1/evaluate/flags/theme",
            &[(limited.0, &limited.1)],
            r#"{"context":{"targetingKey":"u"}}"#,
        )
        .await;
        if a.status == 429 {
            assert!(a.header("retry-after").parse::<u64>().unwrap() >= 1);
            assert!(a.body.is_empty());
        }
        statuses.push(a.status.as_u16());
    }
    assert_eq!(&statuses[..2], [200, 200], "the burst");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    // An admin change rebuilds the snapshot; the key's bucket stays as empty as it was.
    for op in ["kill", "restore"] {
        let change = http::Request::builder()
            .method("POST")
            .uri(format!("/admin/v1/flags/theme/{op}"))
            .header("host", "admin")
            .header("authorization", "Bearer sluice-admin-demo-token")
            .body(http_body_util::Full::new(bytes::Bytes::from(r#"{"reason":"a change"}"#)))
            .unwrap();
        assert_eq!(send(s.admin, change).await.status, 200, "{op}");
    }
    let after =
        ofrep(&s, "/ofrep/v1/evaluate/flags/theme", &[(limited.0, &limited.1)], r#"{"context":{"targetingKey":"u"}}"#)
            .await;
    assert_eq!(after.status, 429, "an admin change refilled the rate limit");

    // A browser key: only from its origins, with CORS; its preflight.
    let web = bearer(WEB_KEY);
    let body = r#"{"context":{"targetingKey":"u"}}"#;
    let from_page = ofrep(&s, "/ofrep/v1/evaluate/flags", &[(web.0, &web.1), ("origin", WEB_ORIGIN)], body).await;
    assert_eq!(from_page.status, 200);
    assert_eq!(from_page.header("access-control-allow-origin"), WEB_ORIGIN);
    let elsewhere =
        ofrep(&s, "/ofrep/v1/evaluate/flags", &[(web.0, &web.1), ("origin", "http://evil.test")], body).await;
    assert_eq!(elsewhere.status, 403);
    let no_origin = ofrep(&s, "/ofrep/v1/evaluate/flags", &[(web.0, &web.1)], body).await;
    assert_eq!(no_origin.status, 403);
    let pre = http::Request::builder()
        .method("OPTIONS")
        .uri("/ofrep/v1/evaluate/flags")
        .header("host", "sluice")
        .header("origin", WEB_ORIGIN)
        .header("access-control-request-method", "POST")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let pre = send(s.data, pre).await;
    assert_eq!((pre.status.as_u16(), pre.header("access-control-allow-origin")), (204, WEB_ORIGIN));
    let web_chat = send(s.data, chat("support-bot", &[("authorization", &format!("Bearer {WEB_KEY}"))], "")).await;
    assert_eq!(web_chat.status, 403, "a browser key never reaches a provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_etags_follow_the_context_and_the_state() {
    let s = serve();
    let auth = bearer(OFREP_KEY);
    let ctx = |beta: bool| json!({"context": {"targetingKey": "u1", "beta": beta}}).to_string();
    let first = ofrep(&s, "/ofrep/v1/evaluate/flags", &[(auth.0, &auth.1)], &ctx(false)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let etag = first.header("etag").to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let flags = first.json()["flags"].as_array().unwrap().clone();
    let keys: Vec<&str> = flags.iter().map(|f| f["key"].as_str().unwrap()).collect();
    assert!(keys.contains(&"theme") && keys.contains(&"support-bot"));
    assert!(!keys.contains(&"hidden"), "only the key's flags: {keys:?}");
    // The same context: 304, no body.
    let again =
        ofrep(&s, "/ofrep/v1/evaluate/flags", &[(auth.0, &auth.1), ("if-none-match", &etag)], &ctx(false)).await;
    assert_eq!((again.status.as_u16(), again.body.len(), again.header("etag")), (304, 0, etag.as_str()));
    // Another attribute (not the key): another answer, another ETag.
    let beta = ofrep(&s, "/ofrep/v1/evaluate/flags", &[(auth.0, &auth.1), ("if-none-match", &etag)], &ctx(true)).await;
    assert_eq!(beta.status, 200);
    assert_ne!(beta.header("etag"), etag);
    // An admin change: the same context gets the new value and a new ETag.
    let admin = http::Request::builder()
        .method("POST")
        .uri("/admin/v1/flags/theme/kill")
        .header("host", "admin")
        .header("authorization", "Bearer sluice-admin-demo-token")
        .body(http_body_util::Full::new(bytes::Bytes::from(r#"{"reason":"dark for everyone"}"#)))
        .unwrap();
    assert_eq!(send(s.admin, admin).await.status, 200);
    let changed =
        ofrep(&s, "/ofrep/v1/evaluate/flags", &[(auth.0, &auth.1), ("if-none-match", &etag)], &ctx(false)).await;
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag"), etag);
    let theme = changed.json()["flags"].as_array().unwrap().iter().find(|f| f["key"] == "theme").unwrap().clone();
    assert_eq!((&theme["value"], &theme["reason"]), (&json!("dark"), &json!("DISABLED")));
}

/// For the same flag and context, OFREP, `sluice eval` (the file) and the proxy path pick
/// the same variation — over 10,000 random contexts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofrep_the_proxy_and_sluice_eval_agree() {
    let s = serve();
    let mut rng = fastrand::Rng::with_seed(7);
    let n = 10_000;
    let contexts: Vec<Value> = (0..n)
        .map(|i| {
            let mut c = json!({"targetingKey": format!("user-{i}-{}", rng.u32(..))});
            if rng.u8(..10) == 0 {
                c["email"] = json!(format!("p{i}@yourcompany.com"));
            }
            if rng.u8(..10) == 0 {
                c["beta"] = json!(true);
            }
            c
        })
        .collect();
    // OFREP, one request each.
    let mut by_ofrep = HashMap::new();
    for c in &contexts {
        let v = one(&s, "support-bot", c.clone()).await.json();
        by_ofrep.insert(c["targetingKey"].as_str().unwrap().to_string(), v["variant"].as_str().unwrap().to_string());
    }
    // The proxy path on a sample (it calls the mock: 20–40 ms each).
    for c in contexts.iter().step_by(100) {
        let user = c["targetingKey"].as_str().unwrap();
        let mut ld = json!({"kind": "user", "key": user});
        for k in ["email", "beta"] {
            if let Some(v) = c.get(k) {
                ld[k] = v.clone();
            }
        }
        let header = ld.to_string();
        let a = send(
            s.data,
            chat("support-bot", &[("authorization", "Bearer sk-sluice-demo"), ("x-sluice-context", &header)], ""),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.header("x-sluice-variation"), by_ofrep[user], "{c}");
    }
    // `sluice eval` on the file, every context.
    let dir = temp_dir("ofrep-eval");
    let cfg = ofrep_config(dir.path());
    let lines: Vec<String> = contexts
        .iter()
        .map(|c| {
            let mut ld = json!({"kind": "user", "key": c["targetingKey"]});
            for k in ["email", "beta"] {
                if let Some(v) = c.get(k) {
                    ld[k] = v.clone();
                }
            }
            json!({"flag": "support-bot", "context": ld}).to_string()
        })
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["eval", "--batch", "--data"])
        .arg(&cfg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = lines.join("\n");
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    let mut agreed = 0;
    for (line, c) in String::from_utf8_lossy(&out.stdout).lines().zip(&contexts) {
        let v: Value = serde_json::from_str(line).unwrap();
        let key = c["targetingKey"].as_str().unwrap();
        assert_eq!(v["variation"].as_str(), Some(by_ofrep[key].as_str()), "{c}: {v}");
        agreed += 1;
    }
    assert_eq!(agreed, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openfeature_python_sdk_evaluates_sluices_flags() {
    if !have(&OPENFEATURE_PY, "ofrep::the_openfeature_python_sdk_evaluates_sluices_flags") {
        return;
    }
    let s = serve();
    let base = format!("http://{}", s.data);
    run_sdk_script(
        "python3",
        "Python",
        vec!["tests/ofrep/python_sdk.py".into(), base, OFREP_KEY.into(), LIMITED_KEY.into()],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openfeature_node_sdks_evaluate_sluices_flags() {
    if !have(&OPENFEATURE_NODE, "ofrep::the_openfeature_node_sdks_evaluate_sluices_flags") {
        return;
    }
    let s = serve();
    let (base, admin) = (format!("http://{}", s.data), format!("http://{}", s.admin));
    let args = vec![
        "tests/ofrep/node_sdk.mjs".into(),
        base,
        admin,
        OFREP_KEY.into(),
        LIMITED_KEY.into(),
        "sluice-admin-demo-token".into(),
    ];
    run_sdk_script("node", "Node", args).await;
}

/// Run an SDK's check script to its end: it must exit 0 and say all its checks passed.
async fn run_sdk_script(program: &'static str, sdk: &str, args: Vec<String>) {
    let out = tokio::task::spawn_blocking(move || Command::new(program).args(&args).output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "the OpenFeature {sdk} SDK script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("all OpenFeature {sdk} SDK checks passed")), "{stdout}");
}

/// Every kind of answer, checked against the protocol's own OpenAPI document
/// (`tests/ofrep/openapi.yaml`) by `tests/ofrep/validate.py`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_protocols_openapi_document() {
    if !have(&OPENFEATURE_PY, "ofrep::every_answer_matches_the_protocols_openapi_document") {
        return;
    }
    let s = serve();
    let auth = bearer(OFREP_KEY);
    let mut requests: Vec<(String, String)> = Vec::new();
    let flags = ["theme", "new-checkout", "max-items", "ratio", "limits", "retired", "gated", "support-bot", "nope"];
    for flag in flags {
        for context in [json!({"targetingKey": "u1"}), json!({"targetingKey": "qa-tester", "beta": true})] {
            requests.push((format!("/ofrep/v1/evaluate/flags/{flag}"), json!({ "context": context }).to_string()));
        }
        requests.push((format!("/ofrep/v1/evaluate/flags/{flag}"), r#"{"context": {"email": "x"}}"#.into()));
        requests.push((format!("/ofrep/v1/evaluate/flags/{flag}"), "{not json".into()));
    }
    for body in [r#"{"context": {"targetingKey": "u1"}}"#, r#"{"context": {}}"#, r#"{"context": 3}"#, "[]"] {
        requests.push(("/ofrep/v1/evaluate/flags".into(), body.into()));
    }
    let mut lines = Vec::new();
    for (path, body) in &requests {
        let a = ofrep(&s, path, &[(auth.0, &auth.1)], body).await;
        let body = if a.body.is_empty() { Value::Null } else { a.json() };
        lines.push(json!({"path": path, "status": a.status.as_u16(), "body": body}).to_string());
    }
    let unauthorized = ofrep(&s, "/ofrep/v1/evaluate/flags", &[], r#"{"context": {"targetingKey": "u1"}}"#).await;
    lines.push(
        json!({"path": "/ofrep/v1/evaluate/flags", "status": unauthorized.status.as_u16(), "body": null}).to_string(),
    );
    assert!(unauthorized.body.is_empty());
    let dir = temp_dir("ofrep-answers");
    let answers = dir.path().join("answers.jsonl");
    std::fs::write(&answers, lines.join("\n")).unwrap();
    let out = Command::new("python3")
        .args(["tests/ofrep/validate.py", "tests/ofrep/openapi.yaml"])
        .arg(&answers)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("{} answers match", lines.len())), "{stdout}");
}
