//! AI configs for apps that call the provider themselves: `POST /v1/ai-configs/{flag}/evaluate`
//! and `POST /v1/track`. An app loop fetches its config, calls the provider (a mock
//! provider on its own port: the treatment's fails), and tracks what it measured; the guard
//! rolls the treatment back exactly as for proxied traffic, and `/metrics` holds exactly
//! the tracked tokens and durations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const WRITE: &str = "admin-write-token-0123456789";

fn tracked_config(hook: &str) -> String {
    config("http://127.0.0.1:9/v1", "")
        + &format!(
            r#"admin:
  tokens:
    - {{name: ops, token: {WRITE}, role: write}}
metrics:
  thumbs_up: {{type: boolean, direction: higher}}
pricing:
  mock:
    m1: {{input: 1.0, output: 2.0}}
ai_configs:
  bot:
    versions:
      - version: 1
        provider: mock
        model: m1
        parameters: {{temperature: 0.2}}
        messages:
          - {{role: system, content: "Help {{{{ldctx.name}}}} with {{{{vars.topic}}}}."}}
      - {{version: 2, provider: mock, model: m2}}
flags:
  bot:
    variations:
      - {{name: control, ai_config: bot, version: 1}}
      - {{name: treatment, ai_config: bot, version: 2}}
    fallthrough:
      rollout:
        variations:
          - {{variation: control, percent: 50}}
          - {{variation: treatment, percent: 50}}
    guard:
      control: control
      treatment: treatment
      metrics:
        - {{metric: error_rate}}
      min_samples: 40
      min_events: 3
      check_interval: 50ms
      srm_check: false
      webhook: {hook}
"#
        )
}

async fn post(gw: &Running, path: &str, body: &Value) -> Answer {
    send(gw.data_addr, common::post(path, Some(KEY), &body.to_string())).await
}

async fn evaluate(gw: &Running, user: &str) -> Value {
    let body = json!({"context": {"kind": "user", "key": user, "name": "Ada"}, "variables": {"topic": "billing"}});
    let a = post(gw, "/v1/ai-configs/bot/evaluate", &body).await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_calls_the_provider_itself_is_guarded_by_what_it_tracks() {
    let hook = Upstream::start(json_reply("{}")).await;
    let gw = gateway(&tracked_config(&format!("http://{}/hook", hook.addr))).await;
    // The providers the app calls itself.
    let good = mock_provider(sluice_mock::MockSettings { chunks: 5, ..Default::default() }).await;
    let bad = mock_provider(sluice_mock::MockSettings { error_rate: 1.0, ..Default::default() }).await;
    let http = Conn::open(good).await;
    let mut calls = (http, Conn::open(bad).await);

    // The config, rendered for the context; no provider URL or key in it.
    let v = evaluate(&gw, "ada").await;
    let control = if v["tracking"]["variation"] == "control" { v.clone() } else { evaluate(&gw, "user-1").await };
    assert_eq!(v["_ldMeta"]["mode"], "completion");
    let text = v.to_string();
    assert!(!text.contains("127.0.0.1:9") && !text.contains(PROVIDER_KEY), "{text}");
    if control["tracking"]["variation"] == "control" {
        assert_eq!(control["messages"][0]["content"], "Help Ada with billing.");
        assert_eq!(control["model"], json!({"name": "m1", "parameters": {"temperature": 0.2}}));
    }

    // The app loop: evaluate, call, track.
    let (mut sent, mut tracked_ms, mut tokens_in, mut tokens_out) = (0u64, Vec::new(), 0u64, 0u64);
    let started = Instant::now();
    loop {
        let user = format!("u-{sent}");
        let cfg = evaluate(&gw, &user).await;
        let treatment = cfg["tracking"]["variation"] == "treatment";
        let conn = if treatment { &mut calls.1 } else { &mut calls.0 };
        let t0 = Instant::now();
        let model = cfg["model"]["name"].as_str().unwrap().to_string();
        let answer = conn.send(chat(&model, &[], "")).await;
        let ms = t0.elapsed().as_secs_f64() * 1000.0 + 10.0;
        let mut report = json!({"token": cfg["tracking"]["token"], "duration_ms": ms});
        if answer.status == 200 {
            let usage = &answer.json()["usage"];
            let (i, o) = (usage["prompt_tokens"].as_u64().unwrap(), usage["completion_tokens"].as_u64().unwrap());
            report["input_tokens"] = json!(i);
            report["output_tokens"] = json!(o);
            report["ttft_ms"] = json!(ms / 2.0);
            tokens_in += i;
            tokens_out += o;
        } else {
            report["outcome"] = json!("error");
        }
        let a = post(&gw, "/v1/track", &report).await;
        assert_eq!(a.status, 202, "{}", a.text());
        tracked_ms.push(ms);
        sent += 1;
        let flag = send(gw.admin_addr, get("/admin/v1/flags/bot", Some(WRITE))).await.json();
        if flag["flag"]["definition"]["guard"]["state"] == "rolled_back" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120) && sent < 5000, "no rollback after {sent} calls");
    }
    eprintln!("rolled back after {sent} tracked calls");
    // After the rollback everyone gets control, on this path too.
    for i in 0..50 {
        assert_eq!(evaluate(&gw, &format!("after-{i}")).await["tracking"]["variation"], "control");
    }
    let audit = send(gw.admin_addr, get("/admin/v1/audit?flag=bot&limit=1", Some(WRITE))).await.json();
    assert_eq!(audit["entries"][0]["actor"], "guard");

    // What /metrics holds is what was tracked: requests, tokens, durations — and the path.
    let m = parse(&scrape(&gw).await);
    let bot = [("flag", "bot")];
    assert_eq!(sum(&m, "sluice_tracked_requests_total", &bot) as u64, sent);
    assert_eq!(sum(&m, "sluice_requests_total", &bot) as u64, sent, "no request was proxied");
    assert_eq!(sum(&m, "sluice_tokens_total", &[("flag", "bot"), ("kind", "input")]) as u64, tokens_in);
    assert_eq!(sum(&m, "sluice_tokens_total", &[("flag", "bot"), ("kind", "output")]) as u64, tokens_out);
    let seconds = sum(&m, "sluice_request_duration_seconds_sum", &bot);
    let expected: f64 = tracked_ms.iter().sum::<f64>() / 1000.0;
    assert!((seconds - expected).abs() < 1e-6 * sent as f64, "{seconds} vs {expected}");
    assert_eq!(sum(&m, "sluice_request_duration_seconds_count", &bot) as u64, sent);
    let errors = sum(&m, "sluice_tracked_requests_total", &[("flag", "bot"), ("outcome", "upstream_error")]);
    assert!(errors > 0.0);
    assert_eq!(sum(&m, "sluice_gateway_overhead_seconds_count", &bot), 0.0, "sluice did no work on these calls");
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_forged_expired_and_duplicate_reports_count_nothing() {
    let gw = gateway(&tracked_config("http://127.0.0.1:9/hook")).await;
    let cfg = evaluate(&gw, "u-1").await;
    let token = cfg["tracking"]["token"].as_str().unwrap().to_string();
    let before = scrape(&gw).await;
    let bad = [
        (json!({"token": token}), 400),
        (json!({"token": token, "duration_ms": -1}), 400),
        (json!({"token": token, "duration_ms": 5, "ttft_ms": 9}), 400),
        (json!({"token": token, "duration_ms": 5, "input_tokens": 3}), 400),
        (json!({"token": token, "duration_ms": 5, "outcome": "maybe"}), 400),
        (json!({"token": token, "duration_ms": 5, "metrics": {"nope": true}}), 400),
        (json!({"token": token, "duration_ms": 5, "metrics": {"thumbs_up": 3}}), 400),
        (json!({"token": token, "duration_ms": 5, "extra": 1}), 400),
        (json!({"token": "sr1.AAAA", "duration_ms": 5}), 401),
        (json!({"token": format!("{}x", &token[..token.len() - 1]), "duration_ms": 5}), 401),
    ];
    for (body, status) in bad {
        let a = post(&gw, "/v1/track", &body).await;
        assert_eq!(a.status, status, "{body}: {}", a.text());
    }
    let after = parse(&scrape(&gw).await);
    for name in ["sluice_requests_total", "sluice_tokens_total", "sluice_request_duration_seconds_count"] {
        assert_eq!(sum(&parse(&before), name, &[("flag", "bot")]), sum(&after, name, &[("flag", "bot")]), "{name}");
    }
    assert_eq!(sum(&after, "sluice_tracked_requests_total", &[]), 0.0, "nothing counted");
    // An old evaluation (past `feedback.max_age`, 7 days by default): 410, nothing counted.
    let snapshot = gw.gateway.snapshot();
    let late = now_ms() + 8 * 24 * 3600 * 1000;
    let report = json!({"token": token, "duration_ms": 5}).to_string();
    match sluice::proxy::track::accept(&snapshot, report.as_bytes(), late) {
        Err(e) => assert_eq!(e.status(), 410, "{e}"),
        Ok(a) => panic!("an expired token was accepted: {a}"),
    }
    // Once: the second report of the same call is refused.
    let ok = json!({"token": token, "duration_ms": 120.5, "input_tokens": 10, "output_tokens": 20, "metrics": {"thumbs_up": true}});
    let first = post(&gw, "/v1/track", &ok).await;
    assert_eq!(first.status, 202, "{}", first.text());
    assert_eq!(first.json()["metrics"], json!(["thumbs_up"]));
    let again = post(&gw, "/v1/track", &ok).await;
    assert_eq!(again.status, 409, "{}", again.text());
    let m = parse(&scrape(&gw).await);
    assert_eq!(sum(&m, "sluice_tracked_requests_total", &[("flag", "bot")]), 1.0);
    // Feedback for the same call and metric is the same report: refused too.
    let fb = json!({"token": token, "metric": "thumbs_up", "value": true});
    assert_eq!(post(&gw, "/v1/feedback", &fb).await.status, 409);
    // Without a key, or with an unknown flag.
    let anonymous = send(gw.data_addr, common::post("/v1/track", None, &ok.to_string())).await;
    assert_eq!(anonymous.status, 401);
    let unknown = post(&gw, "/v1/ai-configs/nope/evaluate", &json!({"context": "u"})).await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    let no_context = post(&gw, "/v1/ai-configs/bot/evaluate", &json!({"context": 3})).await;
    assert_eq!(no_context.status, 400);
    let misspelt = post(&gw, "/v1/ai-configs/bot/evaluate", &json!({"contxt": "u-1"})).await;
    assert_eq!(
        (misspelt.status.as_u16(), misspelt.error_code()),
        (400, "invalid_json".to_string()),
        "{}",
        misspelt.text()
    );
    gw.shutdown().await;
}

/// `tracked_config` with a fake judge scoring every tracked answer, a guardrail, and the
/// guard on the judge's score.
fn judged_config(hook: &str) -> String {
    let yaml = must_replace(
        &tracked_config(hook),
        "        - {metric: error_rate}\n",
        "        - {metric: \"judge:quality\", margin: \"-5%\"}\n",
    );
    let yaml = must_replace(&yaml, "      min_events: 3\n", "");
    let yaml = must_replace(
        &yaml,
        "    guard:\n",
        "    judges:\n      quality: {sample_rate: 1.0}\n    guardrails:\n      no_email: {}\n    guard:\n",
    );
    let yaml = must_replace(
        &yaml,
        "\nmetrics:\n",
        "\njudges:\n  quality: {provider: judge, model: judge-1, rubric: \"Is the answer helpful?\", queue: 4096}\nguardrails:\n  no_email: {pii: [email]}\nmetrics:\n",
    );
    let yaml = must_replace(
        &yaml,
        "\nproviders:\n",
        "\n  flags-only: {key: sk-ofrep-only-0123456789, kind: ofrep}\n  limited: {key: sk-limited-0123456789, ofrep_rate_limit: {per_second: 0.01, burst: 2}}\nproviders:\n",
    );
    must_replace(&yaml, "\naliases:\n", "\n  judge:\n    kind: mock\n    mock: {judge: true}\naliases:\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_answers_are_judged_and_a_worse_treatment_is_rolled_back() {
    let gw = gateway(&judged_config("http://127.0.0.1:9/hook")).await;
    let question = json!([{"role": "user", "content": "Where is my refund?"}]);

    // Bad answers or messages: a 400, nothing judged or counted.
    let cfg = evaluate(&gw, "u-bad").await;
    for (extra, param) in [
        (json!({"answer": 3}), "answer"),
        (json!({"answer": ["a"]}), "answer"),
        (json!({"answer": {"text": "good"}}), "answer"),
        (json!({"answer": {"choices": []}}), "answer"),
        (json!({"answer": {"choices": [{"text": "good"}]}}), "answer"),
        (json!({"answer": "fine", "messages": {"role": "user"}}), "messages"),
        (json!({"messages": 5}), "messages"),
        (json!({"messages": [1, 2]}), "messages"),
    ] {
        let mut report = json!({"token": cfg["tracking"]["token"], "duration_ms": 10});
        report.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let a = post(&gw, "/v1/track", &report).await;
        assert_eq!(a.status, 400, "{report}: {}", a.text());
        assert_eq!(a.json()["error"]["param"], param, "{}", a.text());
    }
    // A key for OFREP only may neither fetch a config with its token nor report.
    let ofrep_only = |path: &str, body: &Value| {
        send(gw.data_addr, common::post(path, Some("sk-ofrep-only-0123456789"), &body.to_string()))
    };
    let denied = ofrep_only("/v1/ai-configs/bot/evaluate", &json!({"context": "u-1"})).await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    let report = json!({"token": cfg["tracking"]["token"], "duration_ms": 10});
    assert_eq!(ofrep_only("/v1/track", &report).await.status, 403);
    // A key's rate limit bounds its evaluations here as over OFREP: each mints a token.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let body = json!({"context": "u-1"}).to_string();
        let a =
            send(gw.data_addr, common::post("/v1/ai-configs/bot/evaluate", Some("sk-limited-0123456789"), &body)).await;
        if a.status == 429 {
            assert_eq!(a.error_code(), "rate_limited", "{}", a.text());
            assert!(a.header("retry-after").parse::<u64>().unwrap() >= 1);
        }
        statuses.push(a.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    let m = parse(&scrape(&gw).await);
    assert_eq!(sum(&m, "sluice_tracked_requests_total", &[]), 0.0);
    assert_eq!(sum(&m, "sluice_guardrail_checks_total", &[]), 0.0);

    // The app loop: control's answers are good, the treatment's score 0.4 and one in ten
    // carries an e-mail address. Control reports the answer's text, the treatment the
    // chat completion as the provider sent it.
    let (mut sent, mut emails) = (0u64, 0u64);
    let started = Instant::now();
    let rolled_back = loop {
        for _ in 0..20 {
            let cfg = evaluate(&gw, &format!("u-{sent}")).await;
            let mut report = json!({"token": cfg["tracking"]["token"], "duration_ms": 100, "messages": question});
            if cfg["tracking"]["variation"] == "control" {
                report["answer"] = json!("A good answer: the refund left on Monday.");
            } else {
                let mut text = "An answer [[score:0.4]] that helps a little.".to_string();
                if sent % 10 == 0 {
                    text.push_str(" Write to refunds@example.com.");
                    emails += 1;
                }
                report["answer"] = json!({"id": "c-1", "object": "chat.completion", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]});
            }
            let a = post(&gw, "/v1/track", &report).await;
            assert_eq!(a.status, 202, "{}", a.text());
            sent += 1;
        }
        let state = gw.state.current().docs.flags["bot"]["guard"]["state"].clone();
        if state == "rolled_back" {
            break true;
        }
        if started.elapsed() > Duration::from_secs(120) || sent >= 4000 {
            break false;
        }
    };
    assert!(rolled_back, "no rollback after {sent} tracked answers: {:?}", serde_json::to_value(gw.guards.status()));
    let status = serde_json::to_value(gw.guards.status()).unwrap();
    assert_eq!(status[0]["last_trip"]["metric"], "judge:quality", "{status}");

    // Every tracked answer was judged (the queue drains), and the guardrail saw each.
    let scored = [("flag", "bot"), ("judge", "quality"), ("outcome", "scored")];
    eventually(Duration::from_secs(30), async || {
        let done = sum(&parse(&scrape(&gw).await), "sluice_judge_evaluations_total", &scored);
        (done as u64 == sent).then_some(()).ok_or(format!("{done} of {sent} judged"))
    })
    .await;
    let m = parse(&scrape(&gw).await);
    let checks = |result: &str| sum(&m, "sluice_guardrail_checks_total", &[("flag", "bot"), ("result", result)]) as u64;
    assert_eq!(checks("fail"), emails);
    assert_eq!(checks("pass") + checks("fail"), sent);
    assert_eq!(sum(&m, "sluice_tracked_requests_total", &[("flag", "bot")]) as u64, sent);
    gw.shutdown().await;
}
