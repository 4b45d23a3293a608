//! Loading a configuration is bounded: deeply nested templates, YAML alias bombs and
//! oversized files are refused with a location by `check`, by a reload (the running
//! gateway keeps its configuration) and by the admin API (422) — never a crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::*;
use serde_json::json;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

const DEMO_TEMPLATE: &str = "{{#vars.topic}} Topic: {{vars.topic}}.{{/vars.topic}}";

/// The example config with its candidate's template nested `depth` sections deep.
fn nested(text: &str, depth: usize) -> String {
    let deep = format!("{}{}", "{{#a}}".repeat(depth), "{{/a}}".repeat(depth));
    must_replace(text, DEMO_TEMPLATE, &deep)
}

/// The "billion laughs": ten anchors, each ten aliases of the one before (10⁹ strings).
fn bomb() -> String {
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 10].join(", ")));
    }
    text
}

fn check(path: &Path) -> (Option<i32>, String) {
    let out = sluice().args(["check", "--config"]).arg(path).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn check_refuses_deep_templates_alias_bombs_and_huge_files_with_a_location() {
    let dir = temp_dir("bounds-check");
    let demo = std::fs::read_to_string("config/sluice.yaml").unwrap();
    let line = demo.lines().position(|l| l.contains(DEMO_TEMPLATE)).unwrap() + 1;
    let cfg = dir.path().join("sluice.yaml");
    for depth in [5_000, 50_000] {
        std::fs::write(&cfg, nested(&demo, depth)).unwrap();
        let (code, stderr) = check(&cfg);
        assert_eq!(code, Some(1), "{depth}: {stderr}");
        let at = format!("{}:{line}:", cfg.display());
        assert!(stderr.starts_with(&at), "{depth}: {stderr}");
        assert!(stderr.contains("ai_configs.support-bot.versions[1].messages[0].content"), "{stderr}");
        assert!(stderr.contains("sections nest more than 32 deep"), "{stderr}");
    }

    std::fs::write(&cfg, bomb()).unwrap();
    let (code, stderr) = check(&cfg);
    assert_eq!(code, Some(1), "{stderr}");
    // a3 holds 11,111 nodes: its aliases on line 5 pass the budget.
    assert!(stderr.starts_with(&format!("{}:5:", cfg.display())), "{stderr}");
    assert!(stderr.contains("aliases expand to more than 100000 nodes"), "{stderr}");

    let mut huge = demo.clone();
    huge.push('#');
    huge.push_str(&" ".repeat((16 << 20) - huge.len()));
    huge.push('\n');
    std::fs::write(&cfg, &huge).unwrap();
    let (code, stderr) = check(&cfg);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("larger than the limit of 16 MiB"), "{stderr}");
}

/// `sluice serve` on a copy of the example config, with free ports and its log in a file.
struct Served {
    child: Child,
    admin: u16,
    data: u16,
    cfg: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Served {
    fn start(name: &str, watch: bool) -> Served {
        let dir = temp_dir(&format!("bounds-{name}"));
        let cfg = example_config_in(dir.path());
        let log = dir.path().join("log");
        let mut cmd = sluice();
        cmd.args(["serve", "--config"]).arg(&cfg).env_remove("RUST_LOG");
        if watch {
            cmd.arg("--watch");
        }
        let (child, data, admin) = spawn_serving(cmd, &log);
        let (data, admin) = (data.port(), admin.port());
        let served = Served { child, admin, data, cfg, log, _dir: dir };
        served.wait_for("the gateway to listen", || served.metric("sluice_config_revision").is_some());
        if watch {
            served.wait_for("the watch to start", || served.log().contains("watching the config file"));
        }
        served
    }

    fn get(&self, port: u16, path: &str) -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    /// A sample of `/metrics` without labels.
    fn metric(&self, name: &str) -> Option<f64> {
        let text = self.get(self.admin, "/metrics")?;
        let line = text.lines().find(|l| l.split_once(' ').is_some_and(|(n, _)| n == name))?;
        line.rsplit_once(' ')?.1.parse().ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Poll a condition (the gateway works on its own time: no fixed sleep decides).
    fn wait_for(&self, what: &str, cond: impl Fn() -> bool) {
        eventually_blocking(Duration::from_secs(30), || {
            cond().then_some(()).ok_or_else(|| format!("timed out waiting for {what}; log:\n{}", self.log()))
        })
    }

    fn hup(&self) {
        assert!(Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap().success());
    }

    fn alive_and_answering(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "sluice exited; log:\n{}", self.log());
        let healthz = self.get(self.data, "/healthz").unwrap_or_default();
        assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    }

    fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

#[test]
fn a_reload_of_a_deep_template_or_an_alias_bomb_keeps_the_gateway_running() {
    let mut s = Served::start("hup", false);
    let revision = s.metric("sluice_config_revision");
    let good = std::fs::read_to_string(&s.cfg).unwrap();
    for (i, bad) in [nested(&good, 50_000), bomb()].into_iter().enumerate() {
        std::fs::write(&s.cfg, bad).unwrap();
        s.hup();
        let errors = (i + 1) as f64;
        s.wait_for("the reload to be refused", || s.metric("sluice_config_reload_errors_total") == Some(errors));
        s.alive_and_answering();
        assert_eq!(s.metric("sluice_config_revision"), revision);
        assert_eq!(s.metric("sluice_config_last_reload_successful"), Some(0.0));
    }
    let log = s.log();
    assert!(log.contains("sections nest more than 32 deep"), "{log}");
    assert!(log.contains("aliases expand to more than 100000 nodes"), "{log}");
}

#[test]
fn watch_reloads_once_per_change_and_not_on_access() {
    let s = Served::start("watch", true);
    const RELOAD: &str = "reloading the config file";
    const REFUSED: &str = "the config file was not reloaded";
    let r0 = s.metric("sluice_config_revision").unwrap();
    let text = std::fs::read_to_string(&s.cfg).unwrap();
    let edit = |n: usize| must_replace(&text, "the support assistant", &format!("the support assistant, edit {n}"));
    // Open, read and touch the file (access and metadata events, no new content), then
    // leave it alone for a while. The count asserted below does not depend on how long:
    // the window only gives a reload that should not happen (each reload's own read of
    // the file used to trigger the next) the time to show up.
    let touch_and_observe = || {
        for _ in 0..5 {
            let _ = std::fs::read(&s.cfg).unwrap();
            let f = std::fs::OpenOptions::new().append(true).open(&s.cfg).unwrap();
            f.set_modified(std::time::SystemTime::now()).unwrap();
        }
        std::thread::sleep(Duration::from_secs(1));
    };

    std::fs::write(&s.cfg, edit(1)).unwrap();
    s.wait_for("the first reload", || s.metric("sluice_config_revision") == Some(r0 + 1.0));
    touch_and_observe();
    std::fs::write(&s.cfg, edit(2)).unwrap();
    s.wait_for("the second reload", || s.metric("sluice_config_revision") == Some(r0 + 2.0));
    // Reloads are logged before they apply: these two are all there were.
    assert_eq!(s.count(RELOAD), 2, "{}", s.log());

    // A broken file: one error per change, not one per debounce period.
    std::fs::write(&s.cfg, must_replace(&text, "listen:", "listen: [")).unwrap();
    s.wait_for("the first refusal", || s.metric("sluice_config_reload_errors_total") == Some(1.0));
    touch_and_observe();
    std::fs::write(&s.cfg, must_replace(&text, "listen:", "listen: {")).unwrap();
    s.wait_for("the second refusal", || s.metric("sluice_config_reload_errors_total") == Some(2.0));
    assert_eq!(s.count(REFUSED), 2, "{}", s.log());
    assert_eq!(s.count(RELOAD), 4, "{}", s.log());
}

const WRITE: &str = "admin-write-token-0123456789";

fn admin_config(base_url: &str) -> String {
    config(base_url, "")
        + &format!(
            r#"admin:
  tokens: [{{name: ops, token: {WRITE}, role: write}}]
ai_configs:
  bot:
    versions: [{{version: 1, provider: up, model: m}}]
flags:
  bot:
    variations:
      - {{name: control, ai_config: bot, version: 1}}
      - {{name: candidate, ai_config: bot, version: 1}}
    fallthrough: {{variation: control}}
"#
        )
}

async fn admin(gw: &Running, method: &str, path: &str, body: Option<serde_json::Value>) -> Answer {
    let b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .header("authorization", format!("Bearer {WRITE}"));
    let body = body.map(|v| v.to_string()).unwrap_or_default();
    send(gw.admin_addr, b.body(http_body_util::Full::new(bytes::Bytes::from(body))).unwrap()).await
}

#[tokio::test]
async fn the_admin_api_refuses_deep_templates_and_duplicate_rollout_variations() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = gateway(&admin_config(&up.base_url())).await;
    // Before any reload, the reload status is not a failure.
    let status = admin(&gw, "GET", "/admin/v1/status", None).await.json();
    assert_eq!(status["reload"]["ok"], true, "{status}");
    assert_eq!(status["reload"]["time"], serde_json::Value::Null, "{status}");
    let revision = status["revision"].clone();

    // Opening tags only, as in a 30 KB body; 40,000 still fit the admin API's 256 KiB.
    for depth in [5_000, 40_000] {
        let content = "{{#a}}".repeat(depth);
        let version =
            json!({"version": 2, "provider": "up", "model": "m", "messages": [{"role": "system", "content": content}]});
        let a =
            admin(&gw, "POST", "/admin/v1/ai-configs/bot/versions", Some(json!({"reason": "x", "version": version})))
                .await;
        assert_eq!(a.status, 422, "{depth}: {}", a.text());
        assert!(a.text().contains("sections nest more than 32 deep"), "{}", a.text());
    }
    let weights = json!([{"variation": "control", "percent": 50}, {"variation": "control", "percent": 50}]);
    let a = admin(&gw, "PUT", "/admin/v1/flags/bot/rollout", Some(json!({"reason": "x", "weights": weights}))).await;
    assert_eq!(a.status, 422, "{}", a.text());
    assert!(a.text().contains("`control` is already in this rollout"), "{}", a.text());
    // The gateway still answers, on the same revision.
    assert_eq!(send(gw.data_addr, chat("bot", &[], "")).await.status, 200);
    assert_eq!(admin(&gw, "GET", "/admin/v1/status", None).await.json()["revision"], revision);
    gw.shutdown().await;
}
