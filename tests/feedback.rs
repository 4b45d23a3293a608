//! Response tokens and `POST /v1/feedback`: every routed answer carries a signed token;
//! feedback on it lands on the arm that served it — across a restart and on a second
//! sluice with a copy of the state directory; every refusal (400, 401, 403, 409, 410)
//! counts nothing. Cost per request from `pricing:`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;
use sluice::token::Signer;

const FEEDBACK_KEY: &str = "feedback-key-0123456789abcdef-0123456789";

fn feedback_config(extra: &str) -> String {
    let metrics = r#"  task_seconds: {type: numeric, direction: lower, unit: s, min: 0, max: 86400}
  rating: {type: numeric, direction: higher}
pricing:
  mock:
    m1: {input: 2.0, output: 8.0}
feedback:
  browser_origins: ["https://app.example.com"]
"#;
    let flag =
        "    targets:\n      - {variation: candidate, values: [cand-user]}\n    fallthrough: {variation: control}\n";
    config("http://127.0.0.1:9/v1", &(two_arm_bot(metrics, flag) + extra))
}

fn feedback(key: Option<&str>, body: serde_json::Value) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    post("/v1/feedback", key, &body.to_string())
}

/// A chat through flag `bot` for context key `user`: (token, x-request-id).
async fn ask(addr: std::net::SocketAddr, user: &str, request_id: Option<&str>) -> (String, String) {
    let mut headers = vec![];
    if let Some(id) = request_id {
        headers.push(("x-request-id", id));
    }
    let a = send(addr, chat("bot", &headers, &format!(r#","user":"{user}""#))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    (a.header("x-sluice-token").to_string(), a.header("x-request-id").to_string())
}

async fn feedback_count(gw: &sluice::server::Running, variation: &str, value: &str) -> f64 {
    let m = parse(&scrape(gw).await);
    sum(
        &m,
        "sluice_feedback_total",
        &[("flag", "bot"), ("variation", variation), ("metric", "thumbs_up"), ("value", value)],
    )
}

#[tokio::test]
async fn feedback_lands_on_the_arm_that_served_the_answer() {
    let gw = gateway(&feedback_config("")).await;
    let (token, request_id) = ask(gw.data_addr, "cand-user", None).await;
    assert!(token.starts_with("sr1."), "{token}");
    // sluice made the request id up: it is the token, which the OpenAI SDKs expose as `_request_id`.
    assert_eq!(request_id, token);
    // An app's own request id is kept; the token comes in its own header.
    let (own_token, own_id) = ask(gw.data_addr, "someone", Some("app-req-1")).await;
    assert_eq!(own_id, "app-req-1");
    assert!(own_token.starts_with("sr1.") && own_token != token);

    let a =
        send(gw.data_addr, feedback(Some(KEY), json!({"token": token, "metric": "thumbs_up", "value": true}))).await;
    assert_eq!(a.status, 202, "{}", a.text());
    assert_eq!(a.json()["variation"], "candidate");
    // By request id, for the other arm, a numeric metric.
    let a = send(
        gw.data_addr,
        feedback(Some(KEY), json!({"request_id": own_token, "metric": "thumbs_up", "value": false, "comment": "meh"})),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.text());
    let a =
        send(gw.data_addr, feedback(Some(KEY), json!({"token": own_token, "metric": "task_seconds", "value": 12.5})))
            .await;
    assert_eq!(a.status, 202, "{}", a.text());

    assert_eq!(feedback_count(&gw, "candidate", "true").await, 1.0);
    assert_eq!(feedback_count(&gw, "control", "false").await, 1.0);
    let m = parse(&scrape(&gw).await);
    let at = [("flag", "bot"), ("variation", "control"), ("metric", "task_seconds")];
    assert_eq!(sum(&m, "sluice_feedback_value_sum", &at), 12.5);
    assert_eq!(sum(&m, "sluice_feedback_value_count", &at), 1.0);
    // The guards' store has them too.
    let stats = gw.gateway.metrics.guard_stats("bot", "candidate").snapshot();
    assert_eq!(stats.signals["thumbs_up"].moments.n, 1);
    assert_eq!(stats.signals["thumbs_up"].moments.sum, 1.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn every_refusal_says_why_and_counts_nothing() {
    let gw = gateway(&feedback_config("")).await;
    let (token, _) = ask(gw.data_addr, "cand-user", None).await;
    let mut altered = token.clone().into_bytes();
    let last = altered.len() - 3;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let cases: Vec<(Option<&str>, serde_json::Value, u16, &str)> = vec![
        (None, json!({"token": token, "metric": "thumbs_up", "value": true}), 401, "missing_api_key"),
        (Some("wrong-key"), json!({"token": token, "metric": "thumbs_up", "value": true}), 401, "invalid_api_key"),
        (Some(KEY), json!({"token": token, "metric": "happiness", "value": true}), 400, "unknown_metric"),
        (Some(KEY), json!({"token": token, "metric": "thumbs_up", "value": 1}), 400, "invalid_feedback"),
        (Some(KEY), json!({"token": token, "metric": "task_seconds", "value": true}), 400, "invalid_feedback"),
        (Some(KEY), json!({"token": token, "metric": "task_seconds", "value": -1}), 400, "invalid_feedback"),
        (Some(KEY), json!({"token": token, "metric": "thumbs_up", "value": true, "extra": 1}), 400, "invalid_feedback"),
        (Some(KEY), json!({"metric": "thumbs_up", "value": true}), 400, "invalid_feedback"),
        (
            Some(KEY),
            json!({"token": token, "metric": "thumbs_up", "value": true, "comment": "x".repeat(5000)}),
            400,
            "invalid_feedback",
        ),
        (Some(KEY), json!({"token": altered, "metric": "thumbs_up", "value": true}), 401, "invalid_token"),
        (Some(KEY), json!({"token": "0123456789abcdef", "metric": "thumbs_up", "value": true}), 401, "invalid_token"),
        // A metric without bounds still takes at most ±1e12: one value cannot swamp an arm.
        (Some(KEY), json!({"token": token, "metric": "rating", "value": 1e13}), 400, "invalid_feedback"),
        (Some(KEY), json!({"token": token, "metric": "rating", "value": -1e300}), 400, "invalid_feedback"),
        (Some(KEY), json!({"token": token, "metric": "rating", "value": 1e308}), 400, "invalid_feedback"),
    ];
    for (key, body, status, code) in cases {
        let a = send(gw.data_addr, feedback(key, body.clone())).await;
        assert_eq!((a.status.as_u16(), a.error_code().as_str()), (status, code), "{body}: {}", a.text());
    }
    let a =
        send(gw.data_addr, feedback(Some(KEY), json!({"token": token, "metric": "happiness", "value": true}))).await;
    assert!(a.json()["error"]["message"].as_str().unwrap().contains("`happiness`"), "{}", a.text());
    let a = send(gw.data_addr, post("/v1/feedback", Some(KEY), "not json")).await;
    assert_eq!(a.status, 400);
    assert_eq!(feedback_count(&gw, "candidate", "true").await, 0.0);
    assert_eq!(feedback_count(&gw, "candidate", "false").await, 0.0);

    // Accepted once; the same token and metric again is a duplicate.
    let ok = json!({"token": token, "metric": "thumbs_up", "value": true});
    assert_eq!(send(gw.data_addr, feedback(Some(KEY), ok.clone())).await.status, 202);
    let a =
        send(gw.data_addr, feedback(Some(KEY), json!({"token": token, "metric": "thumbs_up", "value": false}))).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (409, "duplicate_feedback"), "{}", a.text());
    assert_eq!(feedback_count(&gw, "candidate", "true").await, 1.0);
    assert_eq!(feedback_count(&gw, "candidate", "false").await, 0.0);
    // A negative value is a value: the sum (a gauge) goes down, and stays exact.
    let a = send(gw.data_addr, feedback(Some(KEY), json!({"token": token, "metric": "rating", "value": -3.5}))).await;
    assert_eq!(a.status, 202, "{}", a.text());
    let m = parse(&scrape(&gw).await);
    assert_eq!(sum(&m, "sluice_feedback_value_sum", &[("variation", "candidate"), ("metric", "rating")]), -3.5);
    // Every answer is counted by status, refusals included.
    let by = |status: &str| sum(&m, "sluice_feedback_requests_total", &[("status", status)]);
    assert_eq!((by("202"), by("409"), by("401"), by("400")), (2.0, 1.0, 4.0, 12.0));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_token_older_than_max_age_is_gone() {
    let extra = format!("  key: {FEEDBACK_KEY}\n  max_age: 1h\n");
    let yaml = must_replace(&feedback_config(""), "feedback:\n", &format!("feedback:\n{extra}"));
    let gw = gateway(&yaml).await;
    let now_ms = now_ms();
    let signer = Signer::new(FEEDBACK_KEY.as_bytes());
    let claims = |issued_ms: u64, variation: &str| bot_claims(variation, 2, 0, issued_ms, 3);
    let old = signer.sign(&claims(now_ms - 2 * 3600 * 1000, "candidate")).unwrap();
    let a = send(gw.data_addr, feedback(Some(KEY), json!({"token": old, "metric": "thumbs_up", "value": true}))).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (410, "token_expired"), "{}", a.text());
    // A variation the flag no longer has: gone as well.
    let stale = signer.sign(&claims(now_ms, "retired")).unwrap();
    let a =
        send(gw.data_addr, feedback(Some(KEY), json!({"token": stale, "metric": "thumbs_up", "value": true}))).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (410, "token_expired"), "{}", a.text());
    // A fresh one signed with the configured key is accepted: the key is the config's.
    let fresh = signer.sign(&claims(now_ms, "candidate")).unwrap();
    let a =
        send(gw.data_addr, feedback(Some(KEY), json!({"token": fresh, "metric": "thumbs_up", "value": true}))).await;
    assert_eq!(a.status, 202, "{}", a.text());
    assert_eq!(feedback_count(&gw, "candidate", "true").await, 1.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_browser_sends_feedback_with_the_token_alone_from_an_allowed_origin() {
    let gw = gateway(&feedback_config("")).await;
    let (token, _) = ask(gw.data_addr, "cand-user", None).await;
    let preflight = http::Request::options("/v1/feedback")
        .header("host", "localhost")
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let a = send(gw.data_addr, preflight).await;
    assert_eq!(a.status, 204);
    assert_eq!(a.header("access-control-allow-origin"), "https://app.example.com");
    assert_eq!(a.header("access-control-allow-methods"), "POST");
    let from = |origin: &str, body: serde_json::Value| {
        let mut req = feedback(None, body);
        req.headers_mut().insert("origin", origin.parse().unwrap());
        req
    };
    let a = send(
        gw.data_addr,
        from("https://app.example.com", json!({"token": token, "metric": "thumbs_up", "value": true})),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.text());
    assert_eq!(a.header("access-control-allow-origin"), "https://app.example.com");
    // Another origin: refused, with or without a token.
    let a = send(
        gw.data_addr,
        from("https://evil.example", json!({"token": token, "metric": "thumbs_up", "value": false})),
    )
    .await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (403, "origin_not_allowed"), "{}", a.text());
    assert_eq!(a.header("access-control-allow-origin"), "");
    // A browser's forged token is a 401 like any other, and keeps its CORS headers (so the page can read why).
    let a = send(
        gw.data_addr,
        from("https://app.example.com", json!({"token": "sr1.AAAA", "metric": "thumbs_up", "value": false})),
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.text());
    assert_eq!(a.header("access-control-allow-origin"), "https://app.example.com");
    assert_eq!(feedback_count(&gw, "candidate", "true").await, 1.0);
    assert_eq!(feedback_count(&gw, "candidate", "false").await, 0.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn tokens_survive_a_restart_and_work_on_a_copy_of_the_state() {
    let dir = temp_dir("feedback-state");
    let yaml = feedback_config(&format!("state: {{dir: {}}}", dir.path().display()));
    let gw = gateway(&yaml).await;
    let (first, _) = ask(gw.data_addr, "cand-user", None).await;
    let (second, _) = ask(gw.data_addr, "someone", None).await;
    gw.shutdown().await;
    let key = std::fs::read_to_string(dir.path().join("feedback.key")).unwrap();
    assert_eq!(key.trim().len(), 64, "{key}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("feedback.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key file is readable by others: {mode:o}");
    }

    // The same directory after a restart.
    let gw = gateway(&yaml).await;
    let a =
        send(gw.data_addr, feedback(Some(KEY), json!({"token": first, "metric": "thumbs_up", "value": true}))).await;
    assert_eq!(a.status, 202, "{}", a.text());
    assert_eq!(feedback_count(&gw, "candidate", "true").await, 1.0);
    gw.shutdown().await;

    // A second sluice on a copy of the state.
    let copy = temp_dir("feedback-state-copy");
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let f = f.unwrap();
        if f.file_name() != "lock" {
            std::fs::copy(f.path(), copy.path().join(f.file_name())).unwrap();
        }
    }
    let other = gateway(&feedback_config(&format!("state: {{dir: {}}}", copy.path().display()))).await;
    let a = send(other.data_addr, feedback(Some(KEY), json!({"token": second, "metric": "thumbs_up", "value": false})))
        .await;
    assert_eq!(a.status, 202, "{}", a.text());
    assert_eq!(a.json()["variation"], "control");
    assert_eq!(feedback_count(&other, "control", "false").await, 1.0);
    other.shutdown().await;
}

#[tokio::test]
async fn priced_requests_count_their_cost() {
    let gw = gateway(&feedback_config("")).await;
    for _ in 0..3 {
        ask(gw.data_addr, "someone", None).await;
    }
    ask(gw.data_addr, "cand-user", None).await;
    let m = parse(&scrape(&gw).await);
    let usage = |variation: &str, kind: &str| {
        sum(&m, "sluice_tokens_total", &[("flag", "bot"), ("variation", variation), ("kind", kind)])
    };
    let (input, output) = (usage("control", "input"), usage("control", "output"));
    assert!(input > 0.0 && output > 0.0);
    let cost = sum(&m, "sluice_cost_usd_total", &[("flag", "bot"), ("variation", "control"), ("model", "m1")]);
    let expected = (input * 2.0 + output * 8.0) / 1e6;
    assert!((cost - expected).abs() < 1e-12, "{cost} vs {expected}");
    // m2 has no price: tokens, and no cost.
    assert!(usage("candidate", "output") > 0.0);
    assert_eq!(sum(&m, "sluice_cost_usd_total", &[("variation", "candidate")]), 0.0);
    // The guards' store has the cost per request.
    let stats = gw.gateway.metrics.guard_stats("bot", "control").snapshot();
    assert_eq!(stats.cost.n, 3);
    assert!((stats.cost.sum - expected).abs() < 1e-12);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_request_that_names_no_context_is_counted_under_its_arm() {
    let gw = gateway(&feedback_config("")).await;
    let a = send(gw.data_addr, chat("bot", &[], "")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    ask(gw.data_addr, "someone", None).await;
    let stats = gw.gateway.metrics.guard_stats("bot", "control").snapshot();
    assert_eq!((stats.requests, stats.random_context), (2, 1));
    gw.shutdown().await;
}
