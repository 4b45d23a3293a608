//! Guarded releases end to end: a treatment whose provider fails is rolled back through the
//! write path (audit entry, webhook, metrics), equal arms are left alone, and a ramp moves
//! through its steps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WRITE: &str = "admin-write-token-0123456789";

fn guarded_config(treatment_error_rate: f64, webhook: &str, guard_extra: &str, fallthrough: &str) -> String {
    config("http://127.0.0.1:9/v1", "").replace("\naliases:\n  fast: up/gpt-x\n", "\n")
        + &format!(
            r#"  good:
    kind: mock
  flaky:
    kind: mock
    mock: {{error_rate: {treatment_error_rate}, error_status: 500}}
aliases:
  fast: up/gpt-x
admin:
  tokens:
    - {{name: ops, token: {WRITE}, role: write}}
ai_configs:
  bot:
    versions:
      - {{version: 1, provider: good, model: m1}}
      - {{version: 2, provider: flaky, model: m2}}
flags:
  bot:
    variations:
      - {{name: control, ai_config: bot, version: 1}}
      - {{name: treatment, ai_config: bot, version: 2}}
    fallthrough: {fallthrough}
    guard:
      control: control
      treatment: treatment
      metrics:
        - {{metric: error_rate}}
        - {{metric: latency, margin: "50%"}}
      min_samples: 40
      min_events: 3
      check_interval: 50ms
      circuit_breaker: {{error_rate: 0.9, min_requests: 20}}
      webhook: {webhook}
{guard_extra}"#
        )
}

const TEN_PERCENT: &str =
    "{rollout: {variations: [{variation: control, percent: 90}, {variation: treatment, percent: 10}]}}";

/// `sluice ctl` against `gw`: success and stdout (or stderr).
async fn ctl(gw: &Running, args: &[&str]) -> (bool, String) {
    let url = format!("http://{}", gw.admin_addr);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("ctl")
            .args(&args)
            .env("SLUICE_ADMIN_URL", url)
            .env("SLUICE_ADMIN_TOKEN", WRITE)
            .output()
            .unwrap();
        let text = if out.status.success() { out.stdout } else { out.stderr };
        (out.status.success(), String::from_utf8_lossy(&text).into_owned())
    })
    .await
    .unwrap()
}

async fn admin_get(gw: &Running, path: &str) -> Value {
    send(gw.admin_addr, get(path, Some(WRITE))).await.json()
}

/// Send requests with distinct users until `done` says so (checked every 50 requests). The
/// guard task decides on its own clock, so this waits on the condition, however fast the
/// requests go; the deadline is only a safety net for a guard that never decides.
async fn traffic(gw: &Running, prefix: &str, done: impl AsyncFn() -> bool) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut conn = Conn::open(gw.data_addr).await;
    let mut sent = 0;
    loop {
        conn.send(chat("bot", &[], &format!(r#","user":"{prefix}-{sent}""#))).await;
        sent += 1;
        if sent % 50 == 0 && (done().await || std::time::Instant::now() > deadline) {
            return sent;
        }
    }
}

/// The guard's latest check of `bot`, once one has seen at least `samples` requests in each arm.
async fn checked_with(gw: &Running, samples: u64) -> bool {
    let guards = admin_get(gw, "/admin/v1/guards").await;
    guards["guards"][0]["metrics"].as_array().is_some_and(|ms| {
        ms.iter().all(|m| {
            m["control_samples"].as_u64().unwrap_or(0) >= samples
                && m["treatment_samples"].as_u64().unwrap_or(0) >= samples
        })
    })
}

#[tokio::test]
async fn a_failing_treatment_is_rolled_back_and_everyone_says_why() {
    let hook = Upstream::start(json_reply("{}")).await;
    let gw = gateway(&guarded_config(0.2, &format!("http://{}/hook", hook.addr), "", TEN_PERCENT)).await;
    let sent = traffic(&gw, "u", async || {
        admin_get(&gw, "/admin/v1/flags/bot").await["flag"]["definition"]["guard"]["state"] == "rolled_back"
    })
    .await;
    let flag = admin_get(&gw, "/admin/v1/flags/bot").await;
    assert_eq!(flag["flag"]["definition"]["guard"]["state"], "rolled_back", "after {sent} requests: {flag}");
    eprintln!("rolled back after {sent} requests");

    // Later traffic all reaches control.
    let mut conn = Conn::open(gw.data_addr).await;
    for i in 0..200 {
        let a = conn.send(chat("bot", &[], &format!(r#","user":"after-{i}""#))).await;
        assert_eq!(a.header("x-sluice-variation"), "control");
    }
    // The audit entry says why.
    let audit = admin_get(&gw, "/admin/v1/audit?flag=bot").await;
    let entry = &audit["entries"][0];
    assert_eq!(entry["actor"], "guard");
    let reason = entry["reason"].as_str().unwrap();
    assert!(reason.contains("error_rate") && reason.contains("Λ") && reason.contains("interval"), "{reason}");
    // The webhook was told, off the data plane.
    for _ in 0..100 {
        if hook.calls.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let call = hook.last().json();
    assert_eq!((&call["event"], &call["flag"], &call["metric"]), (&json!("trip"), &json!("bot"), &json!("error_rate")));
    assert!(call["lambda"].as_f64().unwrap() >= 20.0 && call["treatment_samples"].as_u64().unwrap() >= 40, "{call}");
    // Metrics, and the status endpoint.
    let metrics = send(gw.admin_addr, get("/metrics", None)).await.text();
    assert!(metrics.contains(r#"sluice_guard_trips_total{flag="bot",metric="error_rate"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"sluice_guard_state{flag="bot",metric="error_rate"} 3"#), "{metrics}");
    let guards = admin_get(&gw, "/admin/v1/guards").await;
    assert_eq!(guards["guards"][0]["state"], "rolled_back");
    assert_eq!(guards["guards"][0]["metrics"][0]["metric"], "error_rate", "{guards}");

    let (ok, table) = ctl(&gw, &["guards"]).await;
    assert!(ok && table.contains("rolled_back") && table.contains("error_rate"), "{table}");

    // Sticky until a person re-arms it.
    let (ok, out) = ctl(&gw, &["guard", "rearm", "bot", "--reason", "fixed the provider"]).await;
    assert!(ok, "{out}");
    let audit = admin_get(&gw, "/admin/v1/audit?flag=bot&limit=3").await;
    assert_eq!(
        admin_get(&gw, "/admin/v1/flags/bot").await["flag"]["definition"]["guard"]["state"],
        "armed",
        "{out} {audit}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn equal_arms_are_left_alone() {
    let hook = Upstream::start(json_reply("{}")).await;
    let gw = gateway(&guarded_config(0.0, &format!("http://{}/hook", hook.addr), "", TEN_PERCENT)).await;
    // Until a check has seen the floor of samples in both arms: only then can it decide.
    traffic(&gw, "u", async || checked_with(&gw, 40).await).await;
    let guards = admin_get(&gw, "/admin/v1/guards").await;
    assert_eq!(guards["guards"][0]["state"], "armed", "{guards}");
    let decisions: Vec<&str> =
        guards["guards"][0]["metrics"].as_array().unwrap().iter().map(|m| m["decision"].as_str().unwrap()).collect();
    // No errors at all: the error rate has too few events to decide; latency passes.
    assert_eq!(decisions, ["insufficient", "pass"], "{guards}");
    assert_eq!(hook.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_ramp_with_short_steps_advances_to_100_percent() {
    let hook = Upstream::start(json_reply("{}")).await;
    let ramp = "      ramp:\n        - {percent: 10, min_duration: 50ms, min_samples: 5}\n        - {percent: 50, min_duration: 50ms, min_samples: 5}\n        - {percent: 100, min_duration: 50ms, min_samples: 5}\n";
    let gw = gateway(&guarded_config(0.0, &format!("http://{}/hook", hook.addr), ramp, "{variation: control}")).await;
    let sent = traffic(&gw, "u", async || {
        admin_get(&gw, "/admin/v1/flags/bot").await["flag"]["definition"]["guard"]["step"] == 2
    })
    .await;
    let flag = admin_get(&gw, "/admin/v1/flags/bot").await;
    assert_eq!(flag["flag"]["definition"]["guard"]["step"], 2, "after {sent} requests: {flag}");
    let weights = &flag["flag"]["fallthrough"]["rollout"]["variations"];
    assert_eq!(weights[0], json!({"variation": "treatment", "percent": 100.0}), "{flag}");
    let audit = admin_get(&gw, "/admin/v1/audit?flag=bot").await;
    let steps = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"].as_str().unwrap().contains("ramp step"))
        .count();
    assert_eq!(steps, 3, "each step is an audited revision: {audit}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_restart_mid_ramp_resumes_the_step() {
    let dir = std::env::temp_dir().join(format!("sluice-ramp-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let hook = Upstream::start(json_reply("{}")).await;
    let ramp = "      ramp:\n        - {percent: 10, min_duration: 50ms, min_samples: 5}\n        - {percent: 50, min_duration: 1h, min_samples: 5}\n        - {percent: 100, min_duration: 1h, min_samples: 5}\n";
    let yaml = guarded_config(0.0, &format!("http://{}/hook", hook.addr), ramp, "{variation: control}")
        .replace("admin:\n", &format!("state: {{dir: {}}}\nadmin:\n", dir.display()));
    let gw = gateway(&yaml).await;
    traffic(&gw, "u", async || admin_get(&gw, "/admin/v1/flags/bot").await["flag"]["definition"]["guard"]["step"] == 1)
        .await;
    let before = admin_get(&gw, "/admin/v1/flags/bot").await["flag"].clone();
    assert_eq!(before["definition"]["guard"]["step"], 1, "{before}");
    gw.shutdown().await;

    let gw = gateway(&yaml).await;
    // Until the guard has checked the step with its floor of samples after the restart.
    traffic(&gw, "v", async || checked_with(&gw, 5).await).await;
    let after = admin_get(&gw, "/admin/v1/flags/bot").await["flag"].clone();
    assert_eq!(after["definition"]["guard"]["step"], 1, "the step survives the restart: {after}");
    assert_eq!(
        after["definition"]["guard"]["step_started"], before["definition"]["guard"]["step_started"],
        "and its start time"
    );
    assert_eq!(after["fallthrough"]["rollout"]["variations"][0]["percent"], 50.0);
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_circuit_breaker_acts_below_the_floor() {
    let hook = Upstream::start(json_reply("{}")).await;
    let yaml = guarded_config(1.0, &format!("http://{}/hook", hook.addr), "", TEN_PERCENT)
        .replace("min_samples: 40", "min_samples: 100000");
    let gw = gateway(&yaml).await;
    let sent = traffic(&gw, "u", async || {
        admin_get(&gw, "/admin/v1/flags/bot").await["flag"]["definition"]["guard"]["state"] == "rolled_back"
    })
    .await;
    let state = admin_get(&gw, "/admin/v1/flags/bot").await["flag"]["definition"]["guard"]["state"].clone();
    assert_eq!(state, "rolled_back", "after {sent} requests");
    assert!(sent < 100_000, "the breaker tripped below the floor of 100,000 samples: {sent}");
    let audit = admin_get(&gw, "/admin/v1/audit?flag=bot").await;
    assert!(audit["entries"][0]["reason"].as_str().unwrap().contains("circuit_breaker"), "{audit}");
    gw.shutdown().await;
}
