//! An experiment as an app runs it, with the official OpenAI Python SDK: 1,600 chats
//! through a flag split 50/50, the response token read from the SDK's `_request_id` (the
//! same as the raw `x-sluice-token`), thumbs-up feedback on it — users like the candidate
//! more, 75 % against 60 % — then the results name the candidate, `ship` moves everyone
//! to it (audited, `If-Match` honoured) and feedback on a token of the ended iteration is
//! gone (410). The script is tests/sdk/experiment.py; docs/experiments.md describes the
//! same steps.
//!
//! Needs `python3` with the `openai` package (`.ci/run` installs it). Without it the
//! test prints a loud SKIPPED line and passes — unless `SLUICE_REQUIRE_SDK=1`, as in CI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

const WRITE: &str = "admin-write-token-0123456789";
/// Chats the script sends (besides one plain call); 50/50, so about 800 per arm.
const CHATS: u64 = 1600;
const MIN_SAMPLES: u64 = 300;

fn experiment_config() -> String {
    let admin = format!("admin:\n  tokens:\n    - {{name: ops, token: {WRITE}, role: write}}\n");
    let experiment = format!(
        "    experiment:\n      control: control\n      primary: \"feedback:thumbs_up\"\n      min_samples: {MIN_SAMPLES}\n"
    );
    let yaml = config("http://127.0.0.1:9/v1", &two_arm_bot(&admin, &format!("{HALF_AND_HALF}{experiment}")));
    // The SDK keeps its connection alive between a chat and the next while the script
    // posts feedback on another: more than the harness's 300 ms of idle time, so a pause
    // of the script (a garbage collection) never finds it closed.
    must_replace(
        &yaml,
        "header_read_timeout: 300ms, body_read_timeout: 300ms",
        "header_read_timeout: 10s, body_read_timeout: 10s",
    )
}

async fn admin(gw: &Running, method: &str, path: &str, body: Option<Value>, if_match: Option<&str>) -> Answer {
    let mut b = http::Request::builder().method(method).uri(path).header("host", "admin");
    b = b.header("authorization", format!("Bearer {WRITE}"));
    if let Some(r) = if_match {
        b = b.header("if-match", r);
    }
    let body = body.map(|v| v.to_string()).unwrap_or_default();
    send(gw.admin_addr, b.body(http_body_util::Full::new(bytes::Bytes::from(body))).unwrap()).await
}

fn primary_arm<'a>(results: &'a Value, variation: &str) -> &'a Value {
    let m = results["metrics"].as_array().unwrap().iter().find(|m| m["role"] == "primary").unwrap();
    assert_eq!(m["metric"], "feedback:thumbs_up", "{m}");
    m["arms"].as_array().unwrap().iter().find(|a| a["variation"] == variation).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_runs_an_experiment_to_a_ship() {
    if !python_sdk_or_skip("the_openai_python_sdk_runs_an_experiment_to_a_ship") {
        return;
    }
    let gw = gateway(&experiment_config()).await;
    let base = format!("http://{}/v1", gw.data_addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").args(["tests/sdk/experiment.py", &base, KEY, &CHATS.to_string()]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "SDK script failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let sdk: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sdk["plain_request_id_prefix"], "sr1.", "{sdk}");
    assert_eq!(sdk["feedback_statuses"], json!({"202": CHATS}), "{sdk}");
    assert_eq!(sdk["duplicate_status"], 409, "{sdk}");
    let served = |arm: &str| sdk["served"][arm].as_u64().unwrap();
    assert_eq!(served("control") + served("candidate"), CHATS, "{sdk}");

    // The results: the candidate wins on the primary metric, and shipping it is advised.
    let r = admin(&gw, "GET", "/admin/v1/experiments/bot", None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let results = r.json();
    assert_eq!(results["iteration"], 1, "{results}");
    let arms_served: u64 = results["arms"].as_array().unwrap().iter().map(|a| a["served"].as_u64().unwrap()).sum();
    assert_eq!(arms_served, CHATS + 1, "the script's chats and its one plain call: {results}");
    assert!(results["srm_p_value"].as_f64().unwrap() > 0.001, "{results}");
    let (control, candidate) = (primary_arm(&results, "control"), primary_arm(&results, "candidate"));
    for (arm, figures) in [("control", control), ("candidate", candidate)] {
        assert_eq!(figures["n"], served(arm), "one thumbs-up per answer: {figures}");
        assert!(figures["n"].as_u64().unwrap() >= MIN_SAMPLES, "{figures}");
        assert_eq!(figures["mean"].as_f64().unwrap(), sdk["liked"][arm].as_f64().unwrap() / served(arm) as f64);
    }
    let chance = candidate["chance_to_beat_control"].as_f64().unwrap();
    assert!(chance > 0.95, "{candidate}");
    assert_eq!(results["recommendation"]["action"], "ship", "{results}");
    assert_eq!(results["recommendation"]["variation"], "candidate", "{results}");
    eprintln!(
        "openai {}: n control {} candidate {}; thumbs up {:.3} vs {:.3}; lift {:.3}; chance to beat control {chance:.6} (1 - it = {:.1e}); expected loss {:.1e}",
        sdk["sdk_version"],
        control["n"],
        candidate["n"],
        control["mean"].as_f64().unwrap(),
        candidate["mean"].as_f64().unwrap(),
        candidate["lift"].as_f64().unwrap(),
        1.0 - chance,
        candidate["expected_loss"].as_f64().unwrap(),
    );

    // Ship at the revision just read: one audited change.
    let flag = admin(&gw, "GET", "/admin/v1/flags/bot", None, None).await;
    let etag = flag.header("etag").to_string();
    assert_eq!(etag, format!("\"{}\"", flag.json()["revision"]), "{}", flag.text());
    let reason = "candidate wins on thumbs up (SDK experiment)";
    let ship = json!({"variation": "candidate", "reason": reason});
    let shipped = admin(&gw, "POST", "/admin/v1/experiments/bot/ship", Some(ship), Some(&etag)).await;
    assert_eq!(shipped.status, 200, "{}", shipped.text());

    let flag = admin(&gw, "GET", "/admin/v1/flags/bot", None, None).await.json();
    assert_eq!(flag["flag"]["fallthrough"], json!({"variation": "candidate"}), "{flag}");
    assert_eq!(flag["flag"]["definition"]["experiment"]["state"], "stopped", "{flag}");
    let audit = admin(&gw, "GET", "/admin/v1/audit?flag=bot&limit=1", None, None).await.json();
    assert_eq!(audit["entries"][0]["reason"], reason, "{audit}");
    assert_eq!(audit["entries"][0]["actor"], "ops", "{audit}");

    // Everyone who falls through gets the candidate now, a user control served before too.
    let user = sdk["first"]["control"]["user"].as_str().unwrap();
    let a = send(gw.data_addr, chat("bot", &[], &format!(r#","user":"{user}""#))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-sluice-variation"), "candidate");
    // The experiment's iteration has ended: feedback on its answers is gone.
    for arm in ["control", "candidate"] {
        let token = sdk["first"][arm]["token"].as_str().unwrap();
        let body = json!({"token": token, "metric": "thumbs_up", "value": true}).to_string();
        let late = send(gw.data_addr, post("/v1/feedback", Some(KEY), &body)).await;
        assert_eq!((late.status.as_u16(), late.error_code().as_str()), (410, "token_expired"), "{}", late.text());
    }
    gw.shutdown().await;
}
