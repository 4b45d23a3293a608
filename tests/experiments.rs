//! Experiments end to end on the in-process mock: real traffic split 50/50, feedback on
//! the response tokens, results that name the better arm, `ship` through the write path
//! (audited, `If-Match` honoured), iterations that start when the allocation changes (a
//! token of an ended iteration is gone), and a sample-ratio mismatch that withholds any
//! recommendation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};
use sluice::metrics::{Finished, SignalKind};
use sluice::proxy::Outcome;
use std::time::Duration;

const WRITE: &str = "admin-write-token-0123456789";
const FEEDBACK_KEY: &str = "feedback-key-0123456789abcdef-0123456789";

fn experiment_config(min_samples: u64) -> String {
    let admin = format!(
        "admin:\n  tokens:\n    - {{name: ops, token: {WRITE}, role: write}}\nfeedback: {{key: {FEEDBACK_KEY}}}\npricing: {{mock: {{m1: {{input: 1, output: 1}}, m2: {{input: 2, output: 2}}}}}}\n"
    );
    let rules = "    rules:\n      - id: staff\n        clauses: [{attribute: key, op: startsWith, values: [\"staff-\"]}]\n        variation: control\n";
    let experiment = format!(
        "    experiment:\n      control: control\n      primary: \"feedback:thumbs_up\"\n      secondary: [latency, output_tokens, cost]\n      guardrails: [error_rate]\n      min_samples: {min_samples}\n"
    );
    config("http://127.0.0.1:9/v1", &two_arm_bot(&admin, &format!("{rules}{HALF_AND_HALF}{experiment}")))
}

async fn admin(
    gw: &sluice::server::Running,
    method: &str,
    path: &str,
    body: Option<Value>,
    if_match: Option<u64>,
) -> Answer {
    let mut b = http::Request::builder().method(method).uri(path).header("host", "admin");
    b = b.header("authorization", format!("Bearer {WRITE}"));
    if let Some(r) = if_match {
        b = b.header("if-match", format!("\"{r}\""));
    }
    let body = body.map(|v| v.to_string()).unwrap_or_default();
    send(gw.admin_addr, b.body(http_body_util::Full::new(bytes::Bytes::from(body))).unwrap()).await
}

/// One chat for `user`: (variation, token).
async fn ask(conn: &mut Conn, user: &str) -> (String, String) {
    let a = conn.send(chat("bot", &[], &format!(r#","user":"{user}""#))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    (a.header("x-sluice-variation").to_string(), a.header("x-sluice-token").to_string())
}

async fn thumbs(conn: &mut Conn, token: &str, up: bool) -> Answer {
    let body = json!({"token": token, "metric": "thumbs_up", "value": up}).to_string();
    conn.send(post("/v1/feedback", Some(KEY), &body)).await
}

fn arm<'a>(results: &'a Value, metric: &str, variation: &str) -> &'a Value {
    let m = results["metrics"].as_array().unwrap().iter().find(|m| m["metric"] == metric).unwrap();
    m["arms"].as_array().unwrap().iter().find(|a| a["variation"] == variation).unwrap()
}

#[tokio::test]
async fn an_experiment_names_the_arm_users_like_more_and_ship_moves_all_traffic() {
    let gw = gateway(&experiment_config(300)).await;
    let mut conn = Conn::open(gw.data_addr).await;
    // Users like the candidate's answers more: 75 % against 60 % (deterministic by index).
    let mut tokens = Vec::new();
    for i in 0..1600u32 {
        let (variation, token) = ask(&mut conn, &format!("user-{i}")).await;
        let liked = match variation.as_str() {
            "candidate" => i % 20 < 15,
            _ => i % 20 < 12,
        };
        assert_eq!(thumbs(&mut conn, &token, liked).await.status, 202);
        tokens.push(token);
    }
    let r = admin(&gw, "GET", "/admin/v1/experiments/bot", None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let results = r.json();
    assert_eq!(results["iteration"], 1);
    let served: Vec<u64> = results["arms"].as_array().unwrap().iter().map(|a| a["served"].as_u64().unwrap()).collect();
    assert_eq!(served.iter().sum::<u64>(), 1600, "{results}");
    assert!(results["srm_p_value"].as_f64().unwrap() > 0.001, "{results}");
    let cand = arm(&results, "feedback:thumbs_up", "candidate");
    assert!(cand["chance_to_beat_control"].as_f64().unwrap() > 0.95, "{cand}");
    assert!(cand["lift"].as_f64().unwrap() > 0.1, "{cand}");
    assert!(arm(&results, "feedback:thumbs_up", "control")["lift"].is_null());
    assert_eq!(results["recommendation"]["action"], "ship", "{results}");
    assert_eq!(results["recommendation"]["variation"], "candidate");
    // A fixed price per request has no spread: the difference in cost is certain (twice the price).
    let cost = arm(&results, "cost", "candidate");
    assert!((cost["lift"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{cost}");
    assert_eq!(cost["chance_to_beat_control"].as_f64(), Some(0.0), "{cost}");
    // The other metrics are reported beside it.
    assert!(arm(&results, "latency", "candidate")["n"].as_u64().unwrap() > 0);
    assert!(arm(&results, "error_rate", "candidate")["mean"].as_f64().is_some());
    // Gauges, per arm and metric.
    let text = scrape(&gw).await;
    assert!(
        text.contains(
            r#"sluice_experiment_chance_to_beat_control{arm="candidate",flag="bot",metric="feedback:thumbs_up"}"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"sluice_experiment_srm_p_value{flag="bot"}"#));
    let list = admin(&gw, "GET", "/admin/v1/experiments", None, None).await.json();
    assert_eq!(list["experiments"][0]["flag"], "bot");

    // Ship, with If-Match: a stale revision is refused and changes nothing.
    let revision = gw.state.revision();
    let ship = json!({"variation": "candidate", "reason": "candidate wins on thumbs up"});
    let stale = admin(&gw, "POST", "/admin/v1/experiments/bot/ship", Some(ship.clone()), Some(revision - 1)).await;
    assert_eq!(stale.status, 412, "{}", stale.text());
    let shipped = admin(&gw, "POST", "/admin/v1/experiments/bot/ship", Some(ship), Some(revision)).await;
    assert_eq!(shipped.status, 200, "{}", shipped.text());
    assert_eq!(gw.state.revision(), revision + 1);
    let flag = &gw.state.current().docs.flags["bot"];
    assert_eq!(flag["fallthrough"], json!({"variation": "candidate"}));
    assert_eq!(flag["rules"][0]["variation"], "candidate", "every rule serves the winner");
    assert_eq!(flag["experiment"]["state"], "stopped");
    let audit = admin(&gw, "GET", "/admin/v1/audit?flag=bot&limit=1", None, None).await.json();
    assert_eq!(audit["entries"][0]["reason"], "candidate wins on thumbs up", "{audit}");
    assert_eq!(audit["entries"][0]["actor"], "ops");
    // Everyone gets the candidate now, staff included.
    for user in ["user-x", "staff-1"] {
        assert_eq!(ask(&mut conn, user).await.0, "candidate");
    }
    // The experiment has ended: feedback on its tokens is gone; shipping the same arm again changes nothing (409).
    let late = thumbs(&mut conn, &tokens[0], true).await;
    assert_eq!((late.status.as_u16(), late.error_code().as_str()), (410, "token_expired"), "{}", late.text());
    let again = admin(
        &gw,
        "POST",
        "/admin/v1/experiments/bot/ship",
        Some(json!({"variation": "candidate", "reason": "x"})),
        None,
    )
    .await;
    assert_eq!(again.status, 409, "{}", again.text());
    let results = admin(&gw, "GET", "/admin/v1/experiments/bot", None, None).await.json();
    assert_eq!(results["recommendation"]["action"], "stopped");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_new_allocation_starts_a_new_iteration_and_ends_the_old_tokens() {
    let gw = gateway(&experiment_config(300)).await;
    let mut conn = Conn::open(gw.data_addr).await;
    let (_, old) = ask(&mut conn, "user-1").await;
    let rollout = json!({"weights": [{"variation": "control", "percent": 20}, {"variation": "candidate", "percent": 80}], "reason": "more candidate"});
    assert_eq!(admin(&gw, "PUT", "/admin/v1/flags/bot/rollout", Some(rollout), None).await.status, 200);
    // The iteration is the revision that started it, kept beside the document (never in it).
    let current = gw.state.current();
    assert!(current.docs.flags["bot"]["experiment"].get("iteration").is_none());
    assert_eq!(current.iterations["bot"].revision, 2);
    let flag = current.flag_with_iteration("bot").unwrap();
    assert_eq!(flag["experiment"]["iteration"], 2);
    assert!(flag["experiment"]["iteration_started"].is_string());
    let late = thumbs(&mut conn, &old, true).await;
    assert_eq!(late.status, 410, "{}", late.text());
    assert!(late.text().contains("iteration 1"), "{}", late.text());
    // Results start again from zero: only this iteration's traffic counts.
    let (_, new) = ask(&mut conn, "user-2").await;
    assert_eq!(thumbs(&mut conn, &new, true).await.status, 202);
    let results = admin(&gw, "GET", "/admin/v1/experiments/bot", None, None).await.json();
    assert_eq!(results["iteration"], 2);
    let served: u64 = results["arms"].as_array().unwrap().iter().map(|a| a["served"].as_u64().unwrap()).sum();
    assert_eq!(served, 1, "{results}");
    assert_eq!(results["recommendation"]["action"], "keep_running");
    assert!(results["recommendation"]["samples_short"].as_u64().unwrap() >= 299);
    // An answer from before the experiment ran (its token's iteration is 0) does not count in it.
    let before = bot_claims("control", 1, 0, now_ms(), 5);
    let forged = sluice::token::Signer::new(FEEDBACK_KEY.as_bytes()).sign(&before).unwrap();
    let a = thumbs(&mut conn, &forged, true).await;
    assert_eq!(a.status, 410, "{}", a.text());
    assert!(a.text().contains("before the flag's experiment began"), "{}", a.text());
    // A change that leaves the allocation alone (the experiment's own settings) keeps the iteration.
    let stop = admin(&gw, "POST", "/admin/v1/experiments/bot/stop", Some(json!({"reason": "enough"})), None).await;
    assert_eq!(stop.status, 200, "{}", stop.text());
    assert_eq!(gw.state.current().iterations["bot"].revision, 2);
    let results = admin(&gw, "GET", "/admin/v1/experiments/bot", None, None).await.json();
    assert_eq!(
        (results["iteration"].as_u64(), results["recommendation"]["action"].as_str()),
        (Some(2), Some("stopped"))
    );
    // Its window ended at the stop: traffic after it does not count.
    ask(&mut conn, "user-3").await;
    let after = admin(&gw, "GET", "/admin/v1/experiments/bot", None, None).await.json();
    let served = |r: &Value| r["arms"].as_array().unwrap().iter().map(|a| a["served"].as_u64().unwrap()).sum::<u64>();
    assert_eq!(served(&after), served(&results), "{after}");
    // Stopped to review the results, then shipped.
    let ship = json!({"variation": "candidate", "reason": "reviewed"});
    let shipped = admin(&gw, "POST", "/admin/v1/experiments/bot/ship", Some(ship), None).await;
    assert_eq!(shipped.status, 200, "{}", shipped.text());
    assert_eq!(gw.state.current().docs.flags["bot"]["fallthrough"], json!({"variation": "candidate"}));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_sample_ratio_mismatch_withholds_the_recommendation() {
    let gw = gateway(&experiment_config(100)).await;
    let metrics = &gw.gateway.metrics;
    let finished = Finished {
        outcome: Outcome::Ok,
        duration: Duration::from_millis(100),
        ttft: None,
        overhead: Duration::ZERO,
        usage: None,
        cost: None,
    };
    // 45/55 against a 50/50 allocation (arm-dependent drops), with a clear winner otherwise.
    for (variation, served, liked) in [("control", 1800u32, 0.5), ("candidate", 2200, 0.8)] {
        let stats = metrics.guard_stats("bot", variation);
        let signal = stats.signal("thumbs_up", SignalKind::Boolean, true);
        for i in 0..served {
            stats.record(&finished);
            signal.record(f64::from(u8::from(f64::from(i % 100) < liked * 100.0)));
        }
    }
    let results = admin(&gw, "GET", "/admin/v1/experiments/bot", None, None).await.json();
    assert!(results["srm_p_value"].as_f64().unwrap() < 0.001, "{results}");
    assert_eq!(results["recommendation"]["action"], "withheld", "{results}");
    assert!(results["recommendation"]["reason"].as_str().unwrap().contains("sample ratio mismatch"));
    gw.shutdown().await;
}

#[tokio::test]
async fn an_experiment_must_name_defined_metrics_and_a_variation() {
    let bad = must_replace(&experiment_config(10), "primary: \"feedback:thumbs_up\"", "primary: \"feedback:nope\"");
    let e = sluice::config::parse(&bad, "test.yaml", &|_| None).expect_err("refused").to_string();
    assert!(e.contains("experiment.primary") && e.contains("feedback:nope"), "{e}");
    let bad = must_replace(&experiment_config(10), "      control: control\n", "      control: nobody\n");
    let e = sluice::config::parse(&bad, "test.yaml", &|_| None).expect_err("refused").to_string();
    assert!(e.contains("experiment.control") && e.contains("nobody"), "{e}");
}
