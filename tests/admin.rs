//! The admin API and the state behind it: roles, every change through one write path,
//! `If-Match`, validation, the audit log, persistence across restarts, the directory lock,
//! and the precedence of runtime changes over a file reload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{json, Value};

const WRITE: &str = "admin-write-token-0123456789";
const READ: &str = "admin-read-token-0123456789";

fn admin_config(base_url: &str, state_dir: Option<&std::path::Path>) -> String {
    let state = state_dir.map(|d| format!("state: {{dir: {}}}\n", d.display())).unwrap_or_default();
    must_replace(&config(base_url, ""), "\naliases:\n  fast: up/gpt-x\n", "\n")
        + &format!(
            r#"aliases:
  fast: up/gpt-x
admin:
  tokens:
    - {{name: ops, token: {WRITE}, role: write}}
    - {{name: viewer, token: {READ}, role: read}}
{state}ai_configs:
  bot:
    versions:
      - {{version: 1, provider: up, model: model-a}}
      - {{version: 2, provider: up, model: model-b}}
flags:
  bot:
    variations:
      - {{name: control, ai_config: bot, version: 1}}
      - {{name: treatment, ai_config: bot, version: 2}}
    rules:
      - id: staff
        clauses: [{{attribute: key, op: startsWith, values: ["staff-"]}}]
        variation: treatment
    fallthrough: {{variation: treatment}}
  other:
    variations:
      - {{name: a, ai_config: bot, version: 1}}
      - {{name: b, ai_config: bot, version: 2}}
    fallthrough: {{variation: a}}
"#
        )
}

async fn call(
    gw: &Running,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    if_match: Option<u64>,
) -> Answer {
    let mut b = http::Request::builder().method(method).uri(path).header("host", "admin");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if let Some(r) = if_match {
        b = b.header("if-match", format!("\"{r}\""));
    }
    let body = body.map(|v| v.to_string()).unwrap_or_default();
    send(gw.admin_addr, b.body(http_body_util::Full::new(bytes::Bytes::from(body))).unwrap()).await
}

async fn variation(gw: &Running, user: &str) -> String {
    let a = send(gw.data_addr, chat("bot", &[], &format!(r#","user":"{user}""#))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.header("x-sluice-variation").to_string()
}

#[tokio::test]
async fn roles_and_errors() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = gateway(&admin_config(&up.base_url(), None)).await;
    assert_eq!(call(&gw, "GET", "/admin/v1/flags", None, None, None).await.status, 401);
    assert_eq!(call(&gw, "GET", "/admin/v1/flags", Some("wrong-token-xxxxxxxx"), None, None).await.status, 401);
    let list = call(&gw, "GET", "/admin/v1/flags", Some(READ), None, None).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["flags"].as_array().unwrap().len(), 2);
    let kill = json!({"reason": "incident 42"});
    let denied = call(&gw, "POST", "/admin/v1/flags/bot/kill", Some(READ), Some(kill.clone()), None).await;
    assert_eq!((denied.status.as_u16(), denied.error_code()), (403, "forbidden".to_string()));
    let unknown = call(&gw, "POST", "/admin/v1/flags/nope/kill", Some(WRITE), Some(kill), None).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(call(&gw, "GET", "/admin/v1/flags/nope", Some(READ), None, None).await.status, 404);
    let no_reason = call(&gw, "POST", "/admin/v1/flags/bot/kill", Some(WRITE), Some(json!({})), None).await;
    assert_eq!(no_reason.status, 422);
    let not_json = send(
        gw.admin_addr,
        http::Request::post("/admin/v1/flags/bot/kill")
            .header("host", "admin")
            .header("authorization", format!("Bearer {WRITE}"))
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{reason")))
            .unwrap(),
    )
    .await;
    assert_eq!((not_json.status.as_u16(), not_json.error_code()), (400, "invalid_json".to_string()));
    let huge = json!({"reason": "x".repeat(300 * 1024)});
    assert_eq!(call(&gw, "POST", "/admin/v1/flags/bot/kill", Some(WRITE), Some(huge), None).await.status, 413);
    let bad_if_match = send(
        gw.admin_addr,
        http::Request::post("/admin/v1/flags/bot/kill")
            .header("host", "admin")
            .header("authorization", format!("Bearer {WRITE}"))
            .header("if-match", "yesterday")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(br#"{"reason":"x"}"#)))
            .unwrap(),
    )
    .await;
    assert_eq!(bad_if_match.status, 422, "{}", bad_if_match.text());
    // A rollout to a variation the flag does not have, and one whose weights are wrong.
    let bad = json!({"reason": "r", "weights": [{"variation": "nope", "percent": 100}]});
    let r = call(&gw, "PUT", "/admin/v1/flags/bot/rollout", Some(WRITE), Some(bad), None).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["error"]["problems"][0]["path"], "flags.bot");
    let sum = json!({"reason": "r", "weights": [{"variation": "control", "percent": 60}, {"variation": "treatment", "percent": 60}]});
    let r = call(&gw, "PUT", "/admin/v1/flags/bot/rollout", Some(WRITE), Some(sum), None).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.json()["error"]["problems"][0]["path"].as_str().unwrap().starts_with("flags.bot.fallthrough"),
        "{}",
        r.text()
    );
    // Nothing of that changed anything.
    assert_eq!(gw.state.revision(), 1);
    // Provider keys never appear in admin responses.
    for path in ["/admin/v1/flags", "/admin/v1/flags/bot", "/admin/v1/ai-configs", "/admin/v1/audit"] {
        let a = call(&gw, "GET", path, Some(READ), None, None).await;
        assert_eq!(a.status, 200, "{path}");
        assert!(!a.text().contains(PROVIDER_KEY) && !a.text().contains("SECRET"), "{path}: {}", a.text());
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn changes_take_effect_on_the_next_request_and_are_audited() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = gateway(&admin_config(&up.base_url(), None)).await;
    assert_eq!(variation(&gw, "u-1").await, "treatment");

    let killed =
        call(&gw, "POST", "/admin/v1/flags/bot/kill", Some(WRITE), Some(json!({"reason": "bad answers"})), Some(1))
            .await;
    assert_eq!(killed.status, 200, "{}", killed.text());
    assert_eq!(killed.json()["revision"], 2);
    assert_eq!(variation(&gw, "u-1").await, "control", "off: the off variation, at once");

    let restored =
        call(&gw, "POST", "/admin/v1/flags/bot/restore", Some(WRITE), Some(json!({"reason": "fixed"})), None).await;
    assert_eq!(restored.json()["revision"], 3);
    let rollout = json!({"reason": "ramp", "weights": [{"variation": "control", "percent": 100}, {"variation": "treatment", "percent": 0}]});
    assert_eq!(call(&gw, "PUT", "/admin/v1/flags/bot/rollout", Some(WRITE), Some(rollout), None).await.status, 200);
    assert_eq!(variation(&gw, "u-1").await, "control");
    assert_eq!(variation(&gw, "staff-1").await, "treatment", "the rule still applies");
    let rule = json!({"reason": "staff back to control", "variation": "control"});
    assert_eq!(call(&gw, "PUT", "/admin/v1/flags/bot/rules/staff", Some(WRITE), Some(rule), None).await.status, 200);
    assert_eq!(variation(&gw, "staff-1").await, "control");
    let ft = json!({"reason": "all treatment", "variation": "treatment"});
    assert_eq!(call(&gw, "PUT", "/admin/v1/flags/bot/fallthrough", Some(WRITE), Some(ft), None).await.status, 200);
    assert_eq!(variation(&gw, "u-1").await, "treatment");

    // A new AI config version, and a variation pointed at it.
    let v3 = json!({"reason": "new prompt", "version": {"version": 3, "provider": "up", "model": "model-c"}});
    assert_eq!(
        call(&gw, "POST", "/admin/v1/ai-configs/bot/versions", Some(WRITE), Some(v3.clone()), None).await.status,
        200
    );
    let again = call(&gw, "POST", "/admin/v1/ai-configs/bot/versions", Some(WRITE), Some(v3), None).await;
    assert_eq!(again.status, 409, "versions never change once published");
    let point = json!({"reason": "try v3", "ai_config": "bot", "version": 3});
    assert_eq!(
        call(&gw, "PUT", "/admin/v1/flags/bot/variations/treatment", Some(WRITE), Some(point), None).await.status,
        200
    );
    send(gw.data_addr, chat("bot", &[], r#","user":"u-1""#)).await;
    assert_eq!(up.last().json()["model"], "model-c");

    // Roll the flag back to revision 1: as the file had it.
    let rb = call(
        &gw,
        "POST",
        "/admin/v1/flags/bot/rollback",
        Some(WRITE),
        Some(json!({"reason": "undo", "revision": 1})),
        None,
    )
    .await;
    assert_eq!(rb.status, 200, "{}", rb.text());
    send(gw.data_addr, chat("bot", &[], r#","user":"u-1""#)).await;
    assert_eq!(up.last().json()["model"], "model-b");
    assert_eq!(variation(&gw, "staff-1").await, "treatment");

    let audit = call(&gw, "GET", "/admin/v1/audit?flag=bot", Some(READ), None, None).await.json();
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 8, "seed, kill, restore, rollout, rule, fallthrough, point, rollback: {audit}");
    assert_eq!(entries[0]["reason"], "undo");
    assert_eq!(entries[0]["actor"], "ops");
    let kill = entries.iter().find(|e| e["reason"] == "bad answers").unwrap();
    assert_eq!(kill["changes"][0]["before"]["on"], Value::Null);
    assert_eq!(kill["changes"][0]["after"]["on"], false);
    let other = call(&gw, "GET", "/admin/v1/audit?flag=other", Some(READ), None, None).await.json();
    assert_eq!(other["entries"].as_array().unwrap().len(), 1, "only the seed touched `other`");
    let future = call(&gw, "GET", "/admin/v1/audit?since=2999-01-01T00:00:00Z", Some(READ), None, None).await.json();
    assert!(future["entries"].as_array().unwrap().is_empty());
    let flag = call(&gw, "GET", "/admin/v1/flags/bot", Some(READ), None, None).await.json();
    assert_eq!(flag["flag"]["revision"], 9);
    assert!(gw.gateway.metrics.render().contains("sluice_config_revision 9"));
    gw.shutdown().await;
}

#[tokio::test]
async fn if_match_lets_exactly_one_of_two_conflicting_changes_win() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = Arc::new(gateway(&admin_config(&up.base_url(), None)).await);
    let stale = call(&gw, "POST", "/admin/v1/flags/bot/kill", Some(WRITE), Some(json!({"reason": "x"})), Some(7)).await;
    assert_eq!((stale.status.as_u16(), stale.error_code()), (412, "stale_revision".to_string()));
    let (a, b) = tokio::join!(
        call(&gw, "POST", "/admin/v1/flags/bot/kill", Some(WRITE), Some(json!({"reason": "a"})), Some(1)),
        call(
            &gw,
            "PUT",
            "/admin/v1/flags/other/fallthrough",
            Some(WRITE),
            Some(json!({"reason": "b", "variation": "b"})),
            Some(1)
        ),
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 412], "exactly one wins: {} / {}", a.text(), b.text());
    assert_eq!(gw.state.revision(), 2);
    Arc::try_unwrap(gw).ok().unwrap().shutdown().await;
}

#[tokio::test]
async fn changes_survive_a_restart_and_the_directory_is_locked() {
    let tmp = temp_dir("admin-restart");
    let dir = tmp.path().join("state");
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let yaml = admin_config(&up.base_url(), Some(&dir));
    let gw = gateway(&yaml).await;
    let killed =
        call(&gw, "POST", "/admin/v1/flags/bot/kill", Some(WRITE), Some(json!({"reason": "keep me"})), None).await;
    assert_eq!(killed.status, 200);
    // A second sluice on the same directory refuses to start.
    let loaded = sluice::config::parse(&yaml, "test.yaml", &|_| None).unwrap();
    let err = sluice::server::start(sluice::server::prepare(loaded).unwrap()).await.err().expect("locked");
    assert!(err.to_string().contains("in use by another sluice"), "{err}");
    gw.shutdown().await;

    let gw = gateway(&yaml).await;
    assert_eq!(gw.state.revision(), 2, "the last acknowledged revision");
    assert_eq!(variation(&gw, "u-1").await, "control", "still killed");

    // A reload of a file that changes another flag keeps the runtime kill.
    let changed = must_replace(&yaml, "    fallthrough: {variation: a}\n", "    fallthrough: {variation: b}\n");
    assert_ne!(changed, yaml);
    let value = sluice::config::parse(&changed, "test.yaml", &|_| None).unwrap().value;
    let docs = sluice::state::Docs::from_config_value(&value);
    let request = sluice::state::Request { actor: "file".into(), reason: "reload".into(), if_match: None, fence: None };
    let applied = gw.state.apply(sluice::state::Change::File { base: value, docs }, &request).unwrap();
    assert_eq!((applied.revision, applied.changes), (3, 1), "only `other` changed in the file");
    assert_eq!(variation(&gw, "u-1").await, "control", "the kill made at runtime stays");
    gw.shutdown().await;

    // Restarting on a file whose `bot` changed: the file's change wins for `bot`.
    let edited = must_replace(
        &changed,
        "    fallthrough: {variation: treatment}\n",
        "    fallthrough: {variation: control}\n    on: true\n",
    );
    let gw = gateway(&edited).await;
    assert_eq!(gw.state.revision(), 4);
    assert_eq!(variation(&gw, "u-1").await, "control");
    assert_eq!(variation(&gw, "staff-1").await, "treatment", "on again: the file changed `bot`");
    gw.shutdown().await;
}

/// A `sluice serve` process on the ports it bound, with its own state directory.
struct Process {
    child: std::process::Child,
    admin: std::net::SocketAddr,
}

impl Process {
    /// Serve `cfg` (which listens on port 0), logging beside it.
    fn start(cfg: &std::path::Path, args: &[&str]) -> Process {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(["serve", "--config"]).arg(cfg).args(args).env_remove("RUST_LOG");
        let (child, _, admin) = spawn_serving(cmd, &cfg.with_extension("log"));
        Process { child, admin }
    }

    async fn get(&self, path: &str) -> Value {
        send(self.admin, get(path, Some(READ))).await.json()
    }

    async fn metrics(&self) -> String {
        send(self.admin, get("/metrics", None)).await.text()
    }

    /// Wait until `GET /admin/v1/status` satisfies `done`.
    async fn wait_status(&self, done: impl Fn(&Value) -> bool) -> Value {
        eventually(std::time::Duration::from_secs(30), async || {
            let status = self.get("/admin/v1/status").await;
            if done(&status) {
                Ok(status)
            } else {
                Err(format!("status never got there: {status}"))
            }
        })
        .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replace a file the way editors and config management do: write aside, then rename.
fn replace_file(path: &std::path::Path, text: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp-edit");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A fresh temporary directory with a config file for a `sluice serve` process listening
/// on port 0, its state inside: (dir, config path, config text).
fn process_setup(name: &str) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = temp_dir(name);
    let yaml = admin_config("http://127.0.0.1:9/v1", Some(&dir.path().join("state")));
    let cfg = dir.path().join("sluice.yaml");
    std::fs::write(&cfg, &yaml).unwrap();
    (dir, cfg, yaml)
}

#[tokio::test]
async fn the_file_reloads_on_change_and_on_sighup_and_a_bad_file_changes_nothing() {
    let (_dir, cfg, yaml) = process_setup("reload");
    let p = Process::start(&cfg, &["--watch"]);
    assert_eq!(p.get("/admin/v1/status").await["revision"], 1);

    // A valid change to the file: a new revision by `file`.
    replace_file(&cfg, must_replace(&yaml, "    fallthrough: {variation: a}\n", "    fallthrough: {variation: b}\n"));
    let status = p.wait_status(|s| s["revision"] == 2 && s["reload"]["time"].is_string()).await;
    assert_eq!(status["reload"]["ok"], true, "{status}");
    let audit = p.get("/admin/v1/audit?flag=other").await;
    assert_eq!(audit["entries"][0]["actor"], "file");

    // An invalid file: refused, the running revision stays, the error is visible.
    replace_file(&cfg, must_replace(&yaml, "    fallthrough: {variation: a}\n", "    fallthrough: {variation: zzz}\n"));
    let status = p.wait_status(|s| s["reload"]["ok"] == false).await;
    assert_eq!(status["revision"], 2);
    assert!(status["reload"]["error"].as_str().unwrap().contains("zzz"), "{status}");
    let metrics = p.metrics().await;
    // One write may reach the watcher as more than one change: at least one refusal.
    let errors = metrics.lines().find_map(|l| l.strip_prefix("sluice_config_reload_errors_total ")).unwrap();
    assert!(errors.parse::<u64>().unwrap() >= 1, "{metrics}");
    assert!(metrics.contains("sluice_config_last_reload_successful 0"));
    assert_eq!(p.get("/admin/v1/flags/other").await["flag"]["fallthrough"]["variation"], "b");
    drop(p);

    // Without --watch, SIGHUP reloads.
    replace_file(&cfg, &yaml);
    let p = Process::start(&cfg, &[]);
    let before = p.get("/admin/v1/status").await["revision"].as_u64().unwrap();
    replace_file(&cfg, must_replace(&yaml, "    fallthrough: {variation: a}\n", "    fallthrough: {variation: b}\n"));
    let pid = p.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    p.wait_status(|s| s["revision"].as_u64() == Some(before + 1)).await;
    drop(p);
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_endpoints_that_exist() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = gateway(&admin_config(&up.base_url(), None)).await;
    let doc = call(&gw, "GET", "/admin/v1/openapi.json", None, None, None).await;
    assert_eq!(doc.status, 200, "served without a token");
    let doc = doc.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut operations = 0;
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            operations += 1;
            assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{method} {path}");
            let concrete = path.replace("{key}", "bot").replace("{rule}", "staff").replace("{variation}", "control");
            let body = (method != "get").then(|| json!({"reason": "openapi check"}));
            let a = call(&gw, &method.to_uppercase(), &concrete, Some(WRITE), body, None).await;
            assert!(
                a.status != 405 && !(a.status == 404 && a.error_code() == "unknown_endpoint"),
                "{method} {path} is documented but not served: {} {}",
                a.status,
                a.text()
            );
            // Each documented write needs the write role; the one read with a body
            // (evaluate) takes a read token.
            if method != "get" {
                let writes = op["operationId"] != "Evaluate";
                assert_eq!(op["responses"]["403"].is_object(), writes, "{method} {path}");
                let body = json!({"reason": "x", "context": "u-1"});
                let b = call(&gw, &method.to_uppercase(), &concrete, Some(READ), Some(body), None).await;
                assert_eq!(b.status, if writes { 403 } else { 200 }, "{method} {path}: {}", b.text());
            }
        }
    }
    assert_eq!(operations, sluice::admin::ROUTES.len());
    // And what is not documented is not served.
    let a = call(&gw, "GET", "/admin/v1/nothing-here", Some(READ), None, None).await;
    assert_eq!((a.status.as_u16(), a.error_code()), (404, "unknown_endpoint".to_string()));
    let a = call(&gw, "DELETE", "/admin/v1/flags/bot", Some(WRITE), None, None).await;
    assert_eq!(a.status, 405);
    gw.shutdown().await;
}

#[tokio::test]
async fn every_acknowledged_change_survives_sigkill() {
    let (_dir, cfg, _) = process_setup("crash");
    let mut acknowledged: Vec<(u64, u64)> = Vec::new(); // (revision, percent)
    let mut n = 0u64;
    for round in 0..5u64 {
        let mut p = Process::start(&cfg, &[]);
        let addr = p.admin;
        let start = p.get("/admin/v1/status").await["revision"].as_u64().unwrap();
        if let Some((last, _)) = acknowledged.last() {
            assert!(start >= *last, "round {round}: the store lost acknowledged revision {last} (has {start})");
        }
        // Change as fast as possible while the process is killed at some point.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let writer = tokio::spawn(async move {
            loop {
                n += 1;
                let percent = n % 101;
                let body = json!({"reason": format!("change {n}"), "weights": [
                    {"variation": "control", "percent": percent}, {"variation": "treatment", "percent": 100 - percent}]});
                let req = http::Request::put("/admin/v1/flags/bot/rollout")
                    .header("host", "admin")
                    .header("authorization", format!("Bearer {WRITE}"))
                    .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
                    .unwrap();
                let Ok(stream) = tokio::net::TcpStream::connect(addr).await else { return n };
                let Ok((mut sender, conn)) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
                else {
                    return n;
                };
                tokio::spawn(conn);
                let Ok(resp) = sender.send_request(req).await else { return n };
                if resp.status() == 200 {
                    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.map(|c| c.to_bytes());
                    let Ok(bytes) = bytes else { return n };
                    let v: Value = serde_json::from_slice(&bytes).unwrap();
                    tx.send((v["revision"].as_u64().unwrap(), percent)).unwrap();
                }
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(150 + 70 * round)).await;
        let _ = p.child.kill(); // SIGKILL, mid-change
        let _ = p.child.wait();
        n = writer.await.unwrap();
        while let Ok(ack) = rx.try_recv() {
            acknowledged.push(ack);
        }
    }
    assert!(acknowledged.len() > 10, "changes were made: {}", acknowledged.len());
    eprintln!("{} changes acknowledged across 5 SIGKILLs", acknowledged.len());
    // Restart once more: the store loads, and every acknowledged change is in it.
    let p = Process::start(&cfg, &[]);
    let revision = p.get("/admin/v1/status").await["revision"].as_u64().unwrap();
    let (last, _) = *acknowledged.last().unwrap();
    assert!(revision >= last, "revision {revision} < last acknowledged {last}");
    // The whole log, a page at a time.
    let mut entries: Vec<Value> = Vec::new();
    let mut page = p.get("/admin/v1/audit?flag=bot&limit=1000").await;
    loop {
        entries.extend(page["entries"].as_array().unwrap().iter().cloned());
        let Some(next) = page["next"].as_u64() else { break };
        page = p.get(&format!("/admin/v1/audit?flag=bot&limit=1000&before={next}")).await;
    }
    let by_revision: std::collections::HashMap<u64, &Value> =
        entries.iter().map(|e| (e["revision"].as_u64().unwrap(), e)).collect();
    assert_eq!(by_revision.len(), entries.len(), "no revision appears twice");
    for (rev, percent) in &acknowledged {
        let entry = by_revision.get(rev).unwrap_or_else(|| panic!("acknowledged revision {rev} is missing"));
        let after = &entry["changes"][0]["after"]["fallthrough"]["rollout"]["variations"][0]["percent"];
        assert_eq!(after.as_f64(), Some(*percent as f64), "revision {rev}");
    }
    let current = p.get("/admin/v1/flags/bot").await;
    let weights = &current["flag"]["fallthrough"]["rollout"]["variations"];
    assert!(weights.is_array(), "{current}");
    drop(p);
}

/// Run `sluice ctl` against `gw` (blocking, on the blocking pool).
async fn ctl(gw: &Running, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let url = format!("http://{}", gw.admin_addr);
    let token = token.map(str::to_string);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("ctl").args(&args).env("SLUICE_ADMIN_URL", url).env_remove("SLUICE_ADMIN_TOKEN");
        if let Some(t) = token {
            cmd.env("SLUICE_ADMIN_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn sluice_ctl_drives_every_operation() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = gateway(&admin_config(&up.base_url(), None)).await;
    let (ok, out, _) = ctl(&gw, Some(READ), &["flags"]).await;
    assert!(ok && out.contains("FLAG") && out.contains("bot") && out.contains("treatment"), "{out}");
    let (ok, _, err) = ctl(&gw, None, &["flags"]).await;
    assert!(!ok && err.contains("401") && err.contains("SLUICE_ADMIN_TOKEN"), "{err}");
    let (ok, _, err) = ctl(&gw, Some(READ), &["kill", "bot", "--reason", "x"]).await;
    assert!(!ok && err.contains("403"), "{err}");

    let (ok, out, err) = ctl(&gw, Some(WRITE), &["kill", "bot", "--reason", "incident", "--if-match", "1"]).await;
    assert!(ok && out.contains("revision 2"), "{out}{err}");
    assert_eq!(variation(&gw, "u-1").await, "control");
    let (ok, _, err) = ctl(&gw, Some(WRITE), &["kill", "bot", "--reason", "again"]).await;
    assert!(!ok && err.contains("409") && err.contains("changes nothing"), "{err}");
    let (ok, _, err) = ctl(&gw, Some(WRITE), &["restore", "bot", "-r", "x", "--if-match", "1"]).await;
    assert!(!ok && err.contains("412") && err.contains("conflict"), "{err}");
    assert!(ctl(&gw, Some(WRITE), &["restore", "bot", "-r", "fixed"]).await.0);
    let (ok, _, err) = ctl(&gw, Some(WRITE), &["rollout", "bot", "control=150", "treatment=0", "-r", "x"]).await;
    assert!(!ok && err.contains("422") && err.contains("flags.bot.fallthrough"), "{err}");
    assert!(ctl(&gw, Some(WRITE), &["rollout", "bot", "control=100", "treatment=0", "-r", "ramp down"]).await.0);
    assert_eq!(variation(&gw, "u-1").await, "control");
    assert!(ctl(&gw, Some(WRITE), &["promote", "bot", "treatment", "-r", "all in"]).await.0);
    assert_eq!(variation(&gw, "u-1").await, "treatment");
    assert!(ctl(&gw, Some(WRITE), &["promote", "bot", "control", "--rule", "staff", "-r", "staff"]).await.0);
    assert_eq!(variation(&gw, "staff-1").await, "control");

    let tmp = temp_dir("ctl-version");
    let version = tmp.path().join("v3.json");
    std::fs::write(&version, r#"{"version": 3, "provider": "up", "model": "model-c"}"#).unwrap();
    let (ok, out, err) =
        ctl(&gw, Some(WRITE), &["versions", "add", "bot", version.to_str().unwrap(), "-r", "v3"]).await;
    assert!(ok, "{out}{err}");
    let (_, out, _) = ctl(&gw, Some(READ), &["versions"]).await;
    assert!(out.contains("model-c"), "{out}");
    assert!(ctl(&gw, Some(WRITE), &["point", "bot", "treatment", "bot@3", "-r", "try v3"]).await.0);
    send(gw.data_addr, chat("bot", &[], r#","user":"u-1""#)).await;
    assert_eq!(up.last().json()["model"], "model-c");
    let (ok, out, err) = ctl(&gw, Some(WRITE), &["rollback", "bot", "--to", "1", "-r", "undo"]).await;
    assert!(ok, "{out}{err}");
    let (_, out, _) = ctl(&gw, Some(READ), &["audit", "--flag", "bot"]).await;
    assert!(out.contains("undo") && out.contains("ops") && out.contains("incident"), "{out}");
    let (_, out, _) = ctl(&gw, Some(READ), &["audit", "--limit", "1"]).await;
    let next = gw.state.revision();
    assert!(out.contains(&format!("(more: --before {next})")), "{out}");
    let (_, older, _) = ctl(&gw, Some(READ), &["audit", "--limit", "1", "--before", &next.to_string()]).await;
    assert!(older.contains(&format!("\n{}  ", next - 1)), "{older}");
    let (_, out, _) = ctl(&gw, Some(READ), &["flag", "get", "bot"]).await;
    assert!(out.contains("state       on"), "{out}");
    let (ok, out, _) = ctl(&gw, Some(READ), &["--json", "status"]).await;
    assert!(ok);
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["revision"], gw.state.revision());
    gw.shutdown().await;
}

#[tokio::test]
async fn a_change_keeps_the_providers_and_their_warm_connections() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let yaml =
        must_replace(&admin_config(&up.base_url(), None), "shutdown_grace: 5s", "shutdown_grace: 5s, workers: 1");
    let gw = gateway(&yaml).await;
    let mut conn = Conn::open(gw.data_addr).await;
    assert_eq!(conn.send(chat("bot", &[], r#","user":"u-1""#)).await.status, 200);
    let rollout = json!({"reason": "ramp", "weights": [{"variation": "control", "percent": 50}, {"variation": "treatment", "percent": 50}]});
    assert_eq!(call(&gw, "PUT", "/admin/v1/flags/bot/rollout", Some(WRITE), Some(rollout), None).await.status, 200);
    assert_eq!(conn.send(chat("bot", &[], r#","user":"u-2""#)).await.status, 200);
    assert_eq!(up.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(
        up.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the pooled connection outlived the change"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_rollback_to_a_future_revision_is_not_found_and_a_reason_is_bounded() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = gateway(&admin_config(&up.base_url(), None)).await;
    let future = json!({"reason": "undo", "revision": 99999});
    let a = call(&gw, "POST", "/admin/v1/flags/bot/rollback", Some(WRITE), Some(future), None).await;
    assert_eq!((a.status.as_u16(), a.error_code()), (404, "not_found".to_string()), "{}", a.text());
    assert!(a.text().contains("no revision 99999"), "{}", a.text());
    let long = json!({"reason": "x".repeat(sluice::admin::MAX_REASON + 1)});
    let a = call(&gw, "POST", "/admin/v1/flags/bot/kill", Some(WRITE), Some(long), None).await;
    assert_eq!(a.status, 422, "{}", a.text());
    assert!(a.text().contains("at most 1000 characters"), "{}", a.text());
    let longest = json!({"reason": "é".repeat(sluice::admin::MAX_REASON)});
    let a = call(&gw, "POST", "/admin/v1/flags/bot/kill", Some(WRITE), Some(longest), None).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(gw.state.revision(), 2, "only the bounded reason made a revision");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_audit_log_is_read_a_page_at_a_time() {
    let tmp = temp_dir("audit-pages");
    let dir = tmp.path().join("state");
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = gateway(&admin_config(&up.base_url(), Some(&dir))).await;
    for n in 0..60 {
        let request =
            sluice::state::Request { actor: "t".into(), reason: format!("change {n}"), if_match: None, fence: None };
        gw.state.apply(sluice::state::Change::SetOn { flag: "bot".into(), on: n % 2 == 1 }, &request).unwrap();
    }
    let page = call(&gw, "GET", "/admin/v1/audit?limit=50", Some(READ), None, None).await.json();
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 50);
    assert_eq!((entries[0]["revision"].as_u64(), page["next"].as_u64()), (Some(61), Some(12)));
    let rest = call(&gw, "GET", "/admin/v1/audit?limit=50&before=12", Some(READ), None, None).await.json();
    let revisions: Vec<u64> =
        rest["entries"].as_array().unwrap().iter().map(|e| e["revision"].as_u64().unwrap()).collect();
    assert_eq!(revisions, (1..12).rev().collect::<Vec<_>>());
    assert!(rest["next"].is_null());
    let too_many = call(&gw, "GET", "/admin/v1/audit?limit=5000", Some(READ), None, None).await;
    assert_eq!(too_many.status, 422, "{}", too_many.text());
    gw.shutdown().await;
}

/// `{"a": {"a": … {}}}`, `depth` objects deep.
fn nested(depth: usize) -> Value {
    (1..depth).fold(json!({}), |inner, _| json!({ "a": inner }))
}

#[tokio::test]
async fn a_document_nested_past_the_config_files_limit_is_refused_and_one_at_it_survives_a_restart() {
    let tmp = temp_dir("depth");
    let dir = tmp.path().join("state");
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let yaml = admin_config(&up.base_url(), Some(&dir));
    let gw = gateway(&yaml).await;
    let version = |number: u32, parameters: Value| json!({"reason": "deep", "version": {"version": number, "provider": "up", "model": "m", "parameters": parameters}});
    // The body parses (127 levels), but stored it would nest past what state.json's reader takes.
    let deep =
        call(&gw, "POST", "/admin/v1/ai-configs/bot/versions", Some(WRITE), Some(version(3, nested(124))), None).await;
    assert_eq!(deep.status, 422, "{}", deep.text());
    assert_eq!(deep.json()["error"]["problems"][0]["path"], "ai_configs.bot");
    assert!(deep.text().contains("nests more than 64 deep"), "{}", deep.text());
    assert_eq!(gw.state.revision(), 1, "nothing stored");
    // At the limit: ai_configs → bot → versions → the version → parameters, 64 in all.
    let max = sluice::state::MAX_DOC_NESTING - 3;
    let ok =
        call(&gw, "POST", "/admin/v1/ai-configs/bot/versions", Some(WRITE), Some(version(3, nested(max))), None).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let over =
        call(&gw, "POST", "/admin/v1/ai-configs/bot/versions", Some(WRITE), Some(version(4, nested(max + 1))), None)
            .await;
    assert_eq!(over.status, 422, "{}", over.text());
    gw.shutdown().await;

    let gw = gateway(&yaml).await;
    assert_eq!(gw.state.revision(), 2, "the acknowledged version is read back");
    let versions = &gw.state.current().docs.ai_configs["bot"]["versions"];
    assert_eq!(versions[2]["parameters"], nested(max));
    gw.shutdown().await;
    let cfg = tmp.path().join("sluice.yaml");
    std::fs::write(&cfg, &yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["state", "recover", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "and recover replays it: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn an_audit_log_that_cannot_be_read_is_not_reported_as_a_change_that_failed() {
    let tmp = temp_dir("audit-read");
    let dir = tmp.path().join("state");
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = gateway(&admin_config(&up.base_url(), Some(&dir))).await;
    std::fs::remove_file(dir.join("audit.jsonl")).unwrap();
    let page = call(&gw, "GET", "/admin/v1/audit", Some(READ), None, None).await;
    assert_eq!((page.status.as_u16(), page.error_code()), (500, "audit_read_failed".to_string()), "{}", page.text());
    assert!(page.text().contains("the audit log could not be read"), "{}", page.text());
    gw.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_reads_the_bearer_scheme_in_any_case_as_the_data_plane_does() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = gateway(&admin_config(&up.base_url(), None)).await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let mut req = get("/admin/v1/status", None);
        req.headers_mut().insert("authorization", format!("{scheme} {READ}").parse().unwrap());
        assert_eq!(send(gw.admin_addr, req).await.status, 200, "{scheme}");
        assert_eq!(
            send(gw.data_addr, chat("fast", &[("authorization", &format!("{scheme} {KEY}"))], "")).await.status,
            200,
            "{scheme}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn restoring_a_flag_that_is_on_changes_nothing_even_when_the_file_never_said_on() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = gateway(&admin_config(&up.base_url(), None)).await;
    // The file's `bot` has no `on` key: it is on, so a restore is a no-op, refused.
    let a = call(&gw, "POST", "/admin/v1/flags/bot/restore", Some(WRITE), Some(json!({"reason": "x"})), None).await;
    assert_eq!((a.status.as_u16(), a.error_code()), (409, "conflict".to_string()), "{}", a.text());
    assert_eq!(gw.state.revision(), 1, "nothing was written");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_dry_run_checks_a_change_and_shows_its_diff_but_stores_nothing() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = gateway(&admin_config(&up.base_url(), None)).await;
    let kill = json!({"reason": "would kill"});
    let dry =
        call(&gw, "POST", "/admin/v1/flags/bot/kill?dry_run=true", Some(WRITE), Some(kill.clone()), Some(1)).await;
    assert_eq!(dry.status, 200, "{}", dry.text());
    let preview = dry.json();
    assert_eq!(preview["revision"], 1);
    let change = &preview["changes"][0];
    assert_eq!((change["kind"].as_str(), change["key"].as_str()), (Some("flag"), Some("bot")));
    assert_eq!(change["before"].get("on"), None, "the file never said `on`");
    assert_eq!(change["after"]["on"], false);
    // Nothing happened: the same revision, the same traffic, no audit entry.
    assert_eq!(variation(&gw, "u-1").await, "treatment");
    let flags = call(&gw, "GET", "/admin/v1/flags", Some(READ), None, None).await.json();
    assert_eq!(flags["revision"], 1);
    let audit = call(&gw, "GET", "/admin/v1/audit", Some(READ), None, None).await.json();
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1, "only the file's load");

    // The checks are those of a real change: a stale If-Match, an invalid change, a read token.
    let stale =
        call(&gw, "POST", "/admin/v1/flags/bot/kill?dry_run=true", Some(WRITE), Some(kill.clone()), Some(7)).await;
    assert_eq!(stale.status, 412, "{}", stale.text());
    let bad = json!({"reason": "r", "weights": [{"variation": "control", "percent": 70}]});
    let invalid = call(&gw, "PUT", "/admin/v1/flags/bot/rollout?dry_run=true", Some(WRITE), Some(bad), None).await;
    assert_eq!(invalid.status, 422, "{}", invalid.text());
    let template = json!({"reason": "r", "version": {"version": 3, "provider": "up", "model": "m",
        "messages": [{"role": "system", "content": "{{#open}} never closed"}]}});
    let refused =
        call(&gw, "POST", "/admin/v1/ai-configs/bot/versions?dry_run=1", Some(WRITE), Some(template), None).await;
    assert_eq!(refused.status, 422, "a template that does not compile: {}", refused.text());
    let read = call(&gw, "POST", "/admin/v1/flags/bot/kill?dry_run=true", Some(READ), Some(kill.clone()), None).await;
    assert_eq!(read.status, 403);
    let unknown =
        call(&gw, "POST", "/admin/v1/flags/bot/kill?dryrun=true", Some(WRITE), Some(kill.clone()), None).await;
    assert_eq!(unknown.status, 422, "an unknown parameter is refused, not ignored: {}", unknown.text());
    let no_reason =
        call(&gw, "POST", "/admin/v1/flags/bot/kill?dry_run=true", Some(WRITE), Some(json!({})), None).await;
    assert_eq!(no_reason.status, 422);

    // Then for real: the flag list says who, when and why.
    let applied = call(&gw, "POST", "/admin/v1/flags/bot/kill", Some(WRITE), Some(kill), Some(1)).await;
    assert_eq!(applied.status, 200);
    let flags = call(&gw, "GET", "/admin/v1/flags", Some(READ), None, None).await.json();
    let bot = flags["flags"].as_array().unwrap().iter().find(|f| f["key"] == "bot").unwrap().clone();
    assert_eq!(bot["last_change"]["revision"], 2);
    assert_eq!(bot["last_change"]["actor"], "ops");
    assert_eq!(bot["last_change"]["reason"], "would kill");
    let other = flags["flags"].as_array().unwrap().iter().find(|f| f["key"] == "other").unwrap().clone();
    assert_eq!(other["last_change"]["actor"], "file", "as the file loaded it");
}

#[tokio::test]
async fn whoami_and_the_timeseries_of_a_flag() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = gateway(&admin_config(&up.base_url(), None)).await;
    let me = call(&gw, "GET", "/admin/v1/whoami", Some(READ), None, None).await;
    assert_eq!(me.json(), json!({"name": "viewer", "role": "read"}));
    assert_eq!(call(&gw, "GET", "/admin/v1/whoami", None, None, None).await.status, 401);

    for i in 0..7 {
        variation(&gw, &format!("u-{i}")).await;
    }
    variation(&gw, "staff-1").await;
    // Not sampled yet: the step holding now counts it.
    let ts = call(&gw, "GET", "/admin/v1/flags/bot/timeseries?window=5m&step=30s", Some(READ), None, None).await;
    assert_eq!(ts.status, 200, "{}", ts.text());
    let ts = ts.json();
    assert_eq!((ts["window"].as_u64(), ts["step"].as_u64()), (Some(300), Some(30)));
    let variations = ts["variations"].as_array().unwrap();
    assert_eq!(
        variations.iter().map(|v| v["variation"].as_str().unwrap()).collect::<Vec<_>>(),
        ["control", "treatment"]
    );
    let treatment = &variations[1];
    assert_eq!(treatment["points"].as_array().unwrap().len(), 10);
    assert_eq!(treatment["total"]["requests"], 8);
    // In the current step (or the one before, when a step boundary fell between them).
    let recent =
        treatment["points"][8]["requests"].as_u64().unwrap() + treatment["points"][9]["requests"].as_u64().unwrap();
    assert_eq!(recent, 8);
    assert_eq!(treatment["total"]["error_rate"], 0.0);
    assert!(treatment["total"]["latency_p50_ms"].as_f64().is_some());
    assert_eq!(variations[0]["total"]["requests"], 0);
    assert_eq!(variations[0]["total"]["error_rate"], Value::Null, "no rate without requests");

    let day = call(&gw, "GET", "/admin/v1/flags/bot/timeseries?window=24h", Some(READ), None, None).await.json();
    assert_eq!((day["step"].as_u64(), day["variations"][0]["points"].as_array().unwrap().len()), (Some(300), 288));
    for (query, status) in [
        ("window=25h", 422),
        ("window=0", 422),
        ("window=soon", 422),
        ("window=1h&step=1", 200),
        ("window=24h&step=10", 200),
        ("colour=red", 422),
    ] {
        let a = call(&gw, "GET", &format!("/admin/v1/flags/bot/timeseries?{query}"), Some(READ), None, None).await;
        assert_eq!(a.status, status, "{query}: {}", a.text());
    }
    let missing = call(&gw, "GET", "/admin/v1/flags/nope/timeseries", Some(READ), None, None).await;
    assert_eq!(missing.status, 404);
}
