//! Judges and guardrails end to end: real traffic through a routing flag whose arms answer
//! differently, a fake judge that scores by a documented rule, and the consequences — a
//! guard that rolls the worse arm back on its judge score, experiment results that
//! recommend control, guardrails that block or count, a judge that fails in every way
//! moving only its own counters, and what exactly the judge is shown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const WRITE: &str = "admin-write-token-0123456789";

/// `config()` with extra providers (indented under `providers:`) and the rest.
fn with_providers(providers: &str, rest: &str) -> String {
    must_replace(
        &config("http://127.0.0.1:9/v1", rest),
        "\naliases:\n  fast: up/gpt-x\n",
        &format!("\n{providers}aliases:\n  fast: up/gpt-x\n"),
    )
}

/// Two arms on two mocks answering `control_answer` and `candidate_answer`, judged by an
/// in-process fake judge at `rate`; `flag` is more of the flag (indented under it).
fn judged_bot(control_answer: &str, candidate_answer: &str, judge: &str, rate: f64, flag: &str) -> String {
    with_providers(
        &format!(
            "  good:\n    kind: mock\n    mock: {{answer: \"{control_answer}\"}}\n  poor:\n    kind: mock\n    mock: {{answer: \"{candidate_answer}\"}}\n  judge:\n    kind: mock\n    mock: {{judge: true}}\n"
        ),
        &format!(
            r#"
admin:
  tokens:
    - {{name: ops, token: {WRITE}, role: write}}
judges:
  quality: {{provider: judge, model: judge-1, rubric: "Is the answer helpful and correct?", {judge}}}
guardrails:
  no_email: {{pii: [email]}}
ai_configs:
  bot:
    versions:
      - {{version: 1, provider: good, model: m1, messages: [{{role: system, content: "SECRET-SYSTEM-PROMPT of the variation"}}]}}
      - {{version: 2, provider: poor, model: m2, messages: [{{role: system, content: "SECRET-SYSTEM-PROMPT of the variation"}}]}}
flags:
  bot:
    variations:
      - {{name: control, ai_config: bot, version: 1}}
      - {{name: candidate, ai_config: bot, version: 2}}
{HALF_AND_HALF}    judges:
      quality: {{sample_rate: {rate}}}
    guardrails:
      no_email: {{}}
{flag}"#
        ),
    )
}

fn ask(user: &str, id: &str, stream: bool) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let extra = format!(r#","user":"{user}","stream":{stream}"#);
    chat("bot", &[("x-request-id", id)], &extra)
}

/// A metric's sum over the series matching `with`.
async fn metric(gw: &sluice::server::Running, name: &str, with: &[(&str, &str)]) -> f64 {
    sum(&parse(&scrape(gw).await), name, with)
}

/// Wait until every sampled answer has been judged or skipped.
async fn judged(gw: &sluice::server::Running, expected: f64) {
    eventually(Duration::from_secs(30), async || {
        let samples = parse(&scrape(gw).await);
        let done =
            sum(&samples, "sluice_judge_evaluations_total", &[]) + sum(&samples, "sluice_judge_skipped_total", &[]);
        (done >= expected).then_some(()).ok_or(format!("{done} of {expected} judged"))
    })
    .await;
}

/// Wait for the guard task to roll the candidate back.
async fn rolled_back(gw: &sluice::server::Running) {
    eventually(Duration::from_secs(30), async || {
        let state = gw.state.current().docs.flags["bot"]["guard"]["state"].clone();
        (state == "rolled_back").then_some(()).ok_or(format!("{state}: {:?}", serde_json::to_value(gw.guards.status())))
    })
    .await;
}

/// A stream's bytes without what differs between any two answers of the mock (its ids
/// and timestamps) or between the two arms (the model name).
fn normalize(text: &str) -> String {
    let re = regex::Regex::new(r#""id":"chatcmpl-mock-[0-9a-f]+"|"created":\d+|"model":"m[12]""#).unwrap();
    re.replace_all(text, "").into_owned()
}

#[tokio::test]
async fn a_candidate_whose_answers_are_judged_worse_is_rolled_back_and_the_experiment_recommends_control() {
    let guard = "    guard:\n      control: control\n      treatment: candidate\n      metrics:\n        - {metric: \"judge:quality\", margin: \"-5%\"}\n      min_samples: 40\n      check_interval: 100ms\n";
    let yaml = judged_bot(
        "A good answer, with the steps that solve it.",
        "An answer [[score:0.4]] that helps a little.",
        "queue: 4096, max_concurrency: 8",
        0.2,
        guard,
    );
    let gw = gateway(&yaml).await;
    let mut conn = Conn::open(gw.data_addr).await;
    let mut expected = 0.0;
    for i in 0..1200u32 {
        let id = format!("req-{i}");
        let a = conn.send(ask(&format!("user-{i}"), &id, i % 2 == 0)).await;
        assert_eq!(a.status, 200, "{}", a.text());
        if sluice::quality::sampled("quality", 0.2, id.as_bytes()) {
            expected += 1.0;
        }
    }
    judged(&gw, expected).await;
    let scored = metric(&gw, "sluice_judge_evaluations_total", &[("outcome", "scored")]).await;
    assert_eq!(scored, expected, "every sampled answer was scored");
    // No judge call is a request of the variation it judged, nor any variation's error.
    let requests = metric(&gw, "sluice_requests_total", &[("flag", "bot")]).await;
    assert_eq!(requests, 1200.0);
    assert_eq!(metric(&gw, "sluice_requests_total", &[("flag", "bot"), ("outcome", "ok")]).await, 1200.0);
    // Guardrail counts: every answer checked, none had an e-mail address.
    assert_eq!(metric(&gw, "sluice_guardrail_checks_total", &[("result", "pass")]).await, 1200.0);

    rolled_back(&gw).await;
    let status = serde_json::to_value(gw.guards.status()).unwrap();
    assert_eq!(status[0]["last_trip"]["metric"], "judge:quality", "{status}");
    let query = sluice::state::AuditQuery { flag: Some("bot".into()), limit: 5, ..Default::default() };
    let audit = gw.state.audit(&query).unwrap().entries;
    let reason = &audit[0].reason;
    assert_eq!(&status[0]["last_trip"]["reason"], reason);
    // The reason names the metric and its estimate: control 1.0, candidate 0.4, a drop of 0.6.
    assert!(reason.contains("judge:quality of candidate regressed"), "{reason}");
    assert!(reason.contains("estimate 0.60000"), "{reason}");
    gw.shutdown().await;
}

#[tokio::test]
async fn experiment_results_on_a_judge_score_recommend_the_arm_judged_better() {
    let experiment = "    experiment:\n      control: control\n      primary: \"judge:quality\"\n      secondary: [output_tokens]\n      guardrails: [\"guardrail:no_email\"]\n      min_samples: 40\n";
    let yaml = judged_bot(
        "A good answer, with the steps that solve it.",
        "An answer [[score:0.4]] that helps a little.",
        "queue: 4096",
        0.2,
        experiment,
    );
    let gw = gateway(&yaml).await;
    let mut conn = Conn::open(gw.data_addr).await;
    let mut expected = 0.0;
    for i in 0..1000u32 {
        let id = format!("exp-{i}");
        assert_eq!(conn.send(ask(&format!("user-{i}"), &id, false)).await.status, 200);
        if sluice::quality::sampled("quality", 0.2, id.as_bytes()) {
            expected += 1.0;
        }
    }
    judged(&gw, expected).await;
    // The experiment reads the same scores (its iteration began before the rollback).
    let r = send(
        gw.admin_addr,
        http::Request::get("/admin/v1/experiments/bot")
            .header("host", "admin")
            .header("authorization", format!("Bearer {WRITE}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let results = r.json();
    let text = results.to_string();
    assert!(
        results["recommendation"]["action"] == "ship" && results["recommendation"]["variation"] == "control"
            || text.contains("\"control\""),
        "{results:#}"
    );
    let primary = results["metrics"].as_array().unwrap().iter().find(|m| m["metric"] == "judge:quality").unwrap();
    let arm = |v: &str| primary["arms"].as_array().unwrap().iter().find(|a| a["variation"] == v).unwrap().clone();
    assert!(arm("candidate")["chance_to_beat_control"].as_f64().unwrap() < 0.05, "{primary:#}");
    gw.shutdown().await;
}

#[tokio::test]
async fn judging_samples_the_same_share_of_every_arm() {
    let yaml = judged_bot("good", "good too", "queue: 65536, max_concurrency: 16", 0.1, "");
    let gw = gateway(&yaml).await;
    let mut conn = Conn::open(gw.data_addr).await;
    let mut expected = 0.0;
    for i in 0..20_000u32 {
        let id = format!("{:016x}", (u64::from(i)).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let a = conn.send(ask(&format!("u{i}"), &id, false)).await;
        assert_eq!(a.status, 200);
        if sluice::quality::sampled("quality", 0.1, id.as_bytes()) {
            expected += 1.0;
        }
    }
    judged(&gw, expected).await;
    let samples = parse(&scrape(&gw).await);
    let served = |v: &str| sum(&samples, "sluice_requests_total", &[("flag", "bot"), ("variation", v)]);
    let judged_in =
        |v: &str| sum(&samples, "sluice_judge_evaluations_total", &[("variation", v), ("outcome", "scored")]);
    let (sc, st) = (served("control"), served("candidate"));
    let (jc, jt) = (judged_in("control"), judged_in("candidate"));
    assert_eq!(sc + st, 20_000.0);
    for (n, k) in [(sc, jc), (st, jt)] {
        // Within 4.5 standard deviations of a binomial(n, 0.1).
        let sd = (n * 0.1 * 0.9).sqrt();
        assert!((k - n * 0.1).abs() < 4.5 * sd, "judged {k} of {n} served");
    }
    let p = sluice::stats::experiment::srm_p_value(&[jc as u64, jt as u64], &[sc, st]).unwrap();
    assert!(p > 0.001, "coverage SRM p = {p}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_judge_that_fails_in_every_way_moves_only_its_own_counters() {
    // Garbage, an out-of-range score, a 500 and a slow judge behind a queue of 4.
    for (answer, judge, outcome) in [
        ("fine [[judge:garbage]]", "retries: 0", "invalid"),
        ("fine [[score:7]]", "retries: 0", "invalid"),
        ("fine [[judge:error]]", "retries: 1, timeout: 5s", "error"),
        ("fine [[judge:delay_ms:2000]]", "retries: 0, timeout: 500ms, queue: 4, max_concurrency: 1", "timeout"),
    ] {
        let yaml = judged_bot(answer, answer, judge, 1.0, "");
        let gw = gateway(&yaml).await;
        let mut conn = Conn::open(gw.data_addr).await;
        for i in 0..40u32 {
            let a = conn.send(ask(&format!("u{i}"), &format!("id-{i}"), i % 2 == 1)).await;
            assert_eq!(a.status, 200, "{outcome}: {}", a.text());
        }
        judged(&gw, 40.0).await;
        let moved = metric(&gw, "sluice_judge_evaluations_total", &[("outcome", outcome)]).await;
        let dropped = metric(&gw, "sluice_judge_skipped_total", &[("reason", "queue_full")]).await;
        assert!(moved >= 1.0 && moved + dropped == 40.0, "{outcome}: {moved} + {dropped} dropped");
        if outcome == "timeout" {
            assert!(dropped >= 30.0, "a queue of 4 behind a slow judge drops: {dropped}");
        } else {
            assert_eq!(dropped, 0.0, "{outcome}");
        }
        assert_eq!(metric(&gw, "sluice_judge_evaluations_total", &[("outcome", "scored")]).await, 0.0);
        // The variation's own figures are untouched: 40 good requests, no error.
        assert_eq!(metric(&gw, "sluice_requests_total", &[("flag", "bot"), ("outcome", "ok")]).await, 40.0);
        assert_eq!(metric(&gw, "sluice_requests_total", &[("flag", "bot")]).await, 40.0);
        let stats = gw.gateway.metrics.guard_stats("bot", "control").snapshot();
        assert_eq!(stats.signals.get("judge:quality").map(|s| s.moments.n), Some(0), "{outcome}: no score recorded");
        gw.shutdown().await;
    }
}

/// A served fake judge (so its log can be read), and a gateway whose arms are on the
/// in-process mock and on an Anthropic-shaped fake.
async fn judge_sees(answer: &str, endpoint: &str, body: &str) -> Vec<Value> {
    let judge_settings = sluice_mock::MockSettings { judge: true, ..Default::default() };
    let log = std::sync::Arc::clone(&judge_settings.judge_log);
    let judge_addr = mock_provider(judge_settings).await;
    let yaml = must_replace(
        &judged_bot(answer, answer, "retries: 0", 1.0, ""),
        "  judge:\n    kind: mock\n    mock: {judge: true}\n",
        &format!("  judge:\n    kind: openai\n    base_url: http://{judge_addr}/v1\n    api_key: judge-key\n"),
    );
    let gw = gateway(&yaml).await;
    let a = send(gw.data_addr, post(endpoint, Some(KEY), body)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    judged(&gw, 1.0).await;
    assert_eq!(metric(&gw, "sluice_judge_evaluations_total", &[("outcome", "scored")]).await, 1.0);
    gw.shutdown().await;
    log.requests()
}

#[tokio::test]
async fn the_judge_sees_the_apps_messages_and_the_exact_answer_never_the_variation() {
    let answer = "The good answer: \\\"quoted\\\", ünïcode, and a newline.";
    let exact = "The good answer: \"quoted\", ünïcode, and a newline.";
    for (endpoint, body) in [
        (
            "/v1/chat/completions",
            r#"{"model":"bot","user":"u1","messages":[{"role":"user","content":"How do I reset my password?"}]}"#,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"bot","user":"u1","stream":true,"messages":[{"role":"user","content":"How do I reset my password?"}]}"#,
        ),
        ("/v1/responses", r#"{"model":"bot","user":"u1","input":"How do I reset my password?"}"#),
        ("/v1/responses", r#"{"model":"bot","user":"u1","stream":true,"input":"How do I reset my password?"}"#),
    ] {
        let seen = judge_sees(answer, endpoint, body).await;
        assert_eq!(seen.len(), 1, "{endpoint}: {seen:?}");
        let req = &seen[0];
        assert_eq!(req["model"], "judge-1");
        let user = req["messages"][1]["content"].as_str().unwrap();
        assert!(user.contains("How do I reset my password?"), "{endpoint}: {user}");
        let judged = user.rsplit("RESPONSE TO EVALUATE:\n").next().unwrap();
        assert_eq!(judged, exact, "{endpoint} {body}");
        let all = req.to_string();
        for hidden in ["SECRET-SYSTEM-PROMPT", "candidate", "control", "m1", "m2", "good\"", "poor"] {
            assert!(!all.contains(hidden), "{endpoint}: the judge saw `{hidden}`: {all}");
        }
        assert!(req["messages"][0]["content"].as_str().unwrap().contains("Is the answer helpful and correct?"));
        assert_eq!(req["response_format"]["type"], "json_schema");
    }
}

#[tokio::test]
async fn a_stream_is_byte_identical_with_capture_on_and_off() {
    let yaml = judged_bot("good words, several of them", "good words, several of them", "retries: 0", 1.0, "")
        + "  plain:\n    variations:\n      - {name: only, ai_config: bot, version: 1}\n    fallthrough: {variation: only}\n";
    let gw = gateway(&yaml).await;
    let body = |model: &str| {
        format!(r#"{{"model":"{model}","user":"u","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}"#)
    };
    let judged_stream = send(gw.data_addr, post("/v1/chat/completions", Some(KEY), &body("bot"))).await;
    let plain = send(gw.data_addr, post("/v1/chat/completions", Some(KEY), &body("plain"))).await;
    judged(&gw, 1.0).await;
    assert_eq!(metric(&gw, "sluice_judge_evaluations_total", &[("outcome", "scored")]).await, 1.0);
    assert_eq!(normalize(&judged_stream.text()), normalize(&plain.text()));
    assert!(judged_stream.text().contains("\"content\":\"several \""), "{}", judged_stream.text());
    gw.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_stream_is_not_judged_and_a_long_answer_is_truncated() {
    let long = "good ".repeat(2000);
    let yaml = must_replace(
        &judged_bot(&long, &long, "retries: 0", 1.0, ""),
        "limits: {",
        "limits: {capture_per_request: 1KiB, ",
    );
    let gw = gateway(&yaml).await;
    let a = send(gw.data_addr, ask("u", "long-1", false)).await;
    assert_eq!(a.status, 200);
    judged(&gw, 1.0).await;
    assert_eq!(metric(&gw, "sluice_judge_skipped_total", &[("reason", "truncated")]).await, 1.0);
    // A stream the client drops half-way (chunks arrive slowly).
    let req =
        chat("bot", &[("x-request-id", "cut-1"), ("x-mock-chunk-delay-ms", "50")], r#","user":"u","stream":true"#);
    let mut resp = send_raw(gw.data_addr, req).await;
    let first = http_body_util::BodyExt::frame(resp.body_mut()).await;
    assert!(first.is_some());
    drop(resp);
    judged(&gw, 2.0).await;
    assert_eq!(metric(&gw, "sluice_judge_skipped_total", &[("reason", "incomplete")]).await, 1.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_blocking_guardrail_withholds_a_whole_answer_and_only_counts_a_stream() {
    let yaml = must_replace(
        &judged_bot(
            "Write to support@example.com for help.",
            "Write to support@example.com for help.",
            "retries: 0",
            0.0,
            "",
        ),
        "  no_email: {pii: [email]}\n",
        "  no_email: {pii: [email], mode: block}\n",
    );
    let gw = gateway(&yaml).await;
    let a = send(gw.data_addr, ask("u", "b-1", false)).await;
    assert_eq!(a.status, 422, "{}", a.text());
    assert_eq!(a.error_code(), "guardrail_blocked");
    assert!(a.text().contains("no_email"), "{}", a.text());
    assert!(!a.text().contains("support@example.com"), "the answer is not returned");
    let s = send(gw.data_addr, ask("u", "b-2", true)).await;
    assert_eq!(s.status, 200, "streams are observe-only");
    assert!(s.text().contains("support@"), "{}", s.text());
    assert_eq!(metric(&gw, "sluice_guardrail_checks_total", &[("result", "blocked")]).await, 1.0);
    assert_eq!(metric(&gw, "sluice_guardrail_checks_total", &[("result", "fail")]).await, 1.0);
    assert_eq!(metric(&gw, "sluice_requests_total", &[("flag", "bot"), ("outcome", "blocked")]).await, 1.0);
    let moments = |arm: &str| {
        let stats = gw.gateway.metrics.guard_stats("bot", arm).snapshot();
        stats.signals.get("guardrail:no_email").unwrap().moments
    };
    let (c, t) = (moments("control"), moments("candidate"));
    assert_eq!((c.n + t.n, c.sum + t.sum), (2, 2.0), "both violations count in the rate");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_guardrail_violation_rate_guard_rolls_the_candidate_back() {
    let guard = "    guard:\n      control: control\n      treatment: candidate\n      metrics:\n        - {metric: \"guardrail:no_email\", margin: 0.005}\n      min_samples: 40\n      check_interval: 100ms\n";
    let yaml = judged_bot("All done.", "Mail me at leak@example.com.", "retries: 0", 0.0, guard);
    let gw = gateway(&yaml).await;
    let mut conn = Conn::open(gw.data_addr).await;
    for i in 0..400u32 {
        assert_eq!(conn.send(ask(&format!("u{i}"), &format!("g-{i}"), false)).await.status, 200);
    }
    rolled_back(&gw).await;
    let status = serde_json::to_value(gw.guards.status()).unwrap();
    assert_eq!(status[0]["last_trip"]["metric"], "guardrail:no_email", "{status}");
    gw.shutdown().await;
}

#[tokio::test]
async fn judges_and_guardrails_are_checked_when_the_config_loads() {
    let bad = [
        ("quality: {sample_rate: 0.2}", "quality: {sample_rate: 1.5}", "flags.bot.judges.quality.sample_rate"),
        ("quality: {sample_rate: 0.2}", "nope: {sample_rate: 0.2}", "no judge `nope`"),
        ("no_email: {}", "missing: {}", "no guardrail `missing`"),
        ("provider: judge,", "provider: nowhere,", "no provider `nowhere`"),
    ];
    let good = judged_bot("a", "b", "retries: 0", 0.2, "");
    assert!(sluice::config::parse(&good, "t.yaml", &|_| None).is_ok());
    for (from, to, says) in bad {
        let yaml = must_replace(&good, from, to);
        let err = sluice::config::parse(&yaml, "t.yaml", &|_| None).unwrap_err().to_string();
        assert!(err.contains(says), "{to}: {err}");
    }
    let guard = "    guard:\n      control: control\n      treatment: candidate\n      metrics:\n        - {metric: \"judge:other\"}\n";
    let err = sluice::config::parse(&judged_bot("a", "b", "retries: 0", 0.2, guard), "t.yaml", &|_| None).unwrap_err();
    assert!(err.to_string().contains("`judge:other` names no judge"), "{err}");
}

#[tokio::test]
async fn the_demo_config_shows_judge_scores_and_guardrail_counts_per_variation() {
    let state = temp_dir("judges-demo");
    let yaml = std::fs::read_to_string("config/sluice.yaml").unwrap();
    let yaml = must_replace(&yaml, "127.0.0.1:8080", "127.0.0.1:0");
    let yaml = must_replace(&yaml, "127.0.0.1:8081", "127.0.0.1:0");
    let yaml = must_replace(&yaml, "chunk_delay: 15ms", "chunk_delay: 0ms");
    let yaml = must_replace(&yaml, "chunk_delay: 10ms", "chunk_delay: 0ms");
    let yaml = must_replace(&yaml, ".sluice-state", &state.path().join("state").display().to_string());
    let gw = gateway(&yaml).await;
    let mut conn = Conn::open(gw.data_addr).await;
    let mut expected = 0.0;
    for i in 0..200u32 {
        // `qa-tester` is a target of the candidate; everyone else is mostly control.
        let user = if i % 2 == 0 { "qa-tester".to_string() } else { format!("customer-{i}") };
        let id = format!("demo-{i}");
        let body = format!(
            r#"{{"model":"support-bot","user":"{user}","stream":{},"messages":[{{"role":"user","content":"I cannot sign in"}}]}}"#,
            i % 4 == 0
        );
        let mut req = post("/v1/chat/completions", Some("sk-sluice-demo"), &body);
        req.headers_mut().insert("x-request-id", id.parse().unwrap());
        assert_eq!(conn.send(req).await.status, 200);
        if sluice::quality::sampled("helpfulness", 0.2, id.as_bytes()) {
            expected += 1.0;
        }
    }
    judged(&gw, expected).await;
    let samples = parse(&scrape(&gw).await);
    let mean = |v: &str| {
        let with = [("flag", "support-bot"), ("variation", v), ("judge", "helpfulness")];
        sum(&samples, "sluice_judge_score_sum", &with) / sum(&samples, "sluice_judge_score_count", &with)
    };
    assert!((mean("control") - 1.0).abs() < 1e-9, "control says good: {}", mean("control"));
    assert!((mean("candidate") - 0.6).abs() < 1e-9, "the candidate's marker: {}", mean("candidate"));
    for v in ["control", "candidate"] {
        let served = sum(&samples, "sluice_requests_total", &[("flag", "support-bot"), ("variation", v)]);
        let checked = sum(
            &samples,
            "sluice_guardrail_checks_total",
            &[("variation", v), ("guardrail", "no_pii"), ("result", "pass")],
        );
        assert!(served > 0.0 && checked == served, "{v}: {checked} of {served} checked");
    }
    gw.shutdown().await;
}
