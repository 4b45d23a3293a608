//! `/metrics` after a scripted mix of traffic: exact counts, outcomes, token sums and
//! times to first token per variation; the stream the app sees is byte for byte the one it
//! would see without sluice, whether or not sluice asked the provider for usage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;

/// One upstream for both providers; what it does depends on the request's `x-test`.
async fn upstream() -> Upstream {
    Upstream::start(Reply::PerRequest(Arc::new(|r: &Recorded| {
        let stream = r.json()["stream"].as_bool() == Some(true);
        let mode = r.headers.get("x-test").and_then(|v| v.to_str().ok()).unwrap_or("ok").to_string();
        match (mode.as_str(), stream) {
            ("500", _) => Reply::Json {
                status: 500,
                body: r#"{"error":{"message":"boom","type":"server_error"}}"#.into(),
                delay: Duration::ZERO,
            },
            ("slow", _) => Reply::Json { status: 200, body: CHAT_RESPONSE.into(), delay: Duration::from_secs(3) },
            ("break", true) => Reply::Sse(vec![chat_chunk("x"), Step::Wait(Duration::from_millis(50)), Step::Break]),
            ("hang", true) => Reply::Sse(vec![chat_chunk("x"), Step::Wait(Duration::from_secs(5)), chat_chunk("y")]),
            (_, true) => Reply::Sse(openai_stream(r, &["a", "b", "c"])),
            (_, false) => json_reply(CHAT_RESPONSE),
        }
    })))
    .await
}

fn metrics_config(base_url: &str) -> String {
    must_replace(&config(base_url, ""), "\naliases:\n  fast: up/gpt-x\n", "\n")
        + &format!(
            r#"  b:
    kind: openai
    base_url: {base_url}
    api_key: sk-b
    timeouts: {{connect: 1s, first_byte: 1s, idle: 2s}}
aliases:
  fast: up/gpt-x
ai_configs:
  bot:
    versions:
      - {{version: 1, provider: up, model: model-a}}
      - {{version: 2, provider: b, model: model-b}}
flags:
  bot:
    variations:
      - {{name: control, ai_config: bot, version: 1}}
      - {{name: treatment, ai_config: bot, version: 2}}
    rules:
      - clauses: [{{attribute: key, op: startsWith, values: ["t-"]}}]
        variation: treatment
    fallthrough: {{variation: control}}
"#
        )
}

fn request(user: &str, test: &str, stream: bool, usage: bool) -> http::Request<http_body_util::Full<Bytes>> {
    let mut extra = format!(r#","user":"{user}","stream":{stream}"#);
    if usage {
        extra.push_str(r#","stream_options":{"include_usage":true}"#);
    }
    chat("bot", &[("x-test", test)], &extra)
}

#[tokio::test]
async fn metrics_count_every_request_exactly_once_per_variation() {
    let up = upstream().await;
    let gw = gateway(&metrics_config(&up.base_url())).await;

    // Control: 2 ok, a provider 500, a first-byte timeout, a stream without and one with usage.
    for user in ["c-1", "c-2"] {
        assert_eq!(send(gw.data_addr, request(user, "ok", false, false)).await.status, 200);
    }
    assert_eq!(send(gw.data_addr, request("c-3", "500", false, false)).await.status, 500);
    assert_eq!(send(gw.data_addr, request("c-4", "slow", false, false)).await.status, 504);
    let plain = send(gw.data_addr, request("c-5", "ok", true, false)).await;
    assert!(!plain.text().contains("usage"), "the app did not ask for usage: {}", plain.text());
    let with_usage = send(gw.data_addr, request("c-6", "ok", true, true)).await;
    assert!(with_usage.text().contains(r#""usage":{"prompt_tokens":7"#), "{}", with_usage.text());

    // Treatment: 2 streams ok, one that breaks, one the client leaves, one non-streaming ok.
    for user in ["t-1", "t-2"] {
        let a = send(gw.data_addr, request(user, "ok", true, false)).await;
        assert_eq!(a.header("x-sluice-variation"), "treatment");
    }
    let broken = send(gw.data_addr, request("t-3", "break", true, false)).await;
    assert!(broken.text().contains("error"), "{}", broken.text());
    let resp = send_raw(gw.data_addr, request("t-4", "hang", true, false)).await;
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.unwrap();
    assert!(first.is_some(), "the first chunk arrives");
    drop(body); // the client goes away mid-stream
    assert_eq!(send(gw.data_addr, request("t-5", "ok", false, false)).await.status, 200);
    // Not routed: a bad key.
    let mut bad = request("x", "ok", false, false);
    bad.headers_mut().insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(send(gw.data_addr, bad).await.status, 401);

    // The cancelled stream is recorded when the connection is gone: wait for it.
    let samples = eventually(Duration::from_secs(30), async || {
        let samples = parse(&scrape(&gw).await);
        let cancelled = sum(&samples, "sluice_requests_total", &[("variation", "treatment"), ("outcome", "cancelled")]);
        (cancelled > 0.0).then_some(samples)
    })
    .await;

    let control = [("flag", "bot"), ("variation", "control"), ("ai_config", "bot"), ("version", "1")];
    let treatment = [("flag", "bot"), ("variation", "treatment"), ("ai_config", "bot"), ("version", "2")];
    let count = |labels: &[(&str, &str)], outcome: &str| {
        let mut with = labels.to_vec();
        with.push(("outcome", outcome));
        sum(&samples, "sluice_requests_total", &with)
    };
    let expected = [
        (&control, "ok", 4.0),
        (&control, "upstream_error", 1.0),
        (&control, "timeout", 1.0),
        (&control, "cancelled", 0.0),
        (&control, "client_error", 0.0),
        (&treatment, "ok", 3.0),
        (&treatment, "upstream_error", 1.0),
        (&treatment, "cancelled", 1.0),
        (&treatment, "timeout", 0.0),
    ];
    for (labels, outcome, n) in expected {
        assert_eq!(count(labels, outcome), n, "{labels:?} {outcome}");
    }
    assert_eq!(sum(&samples, "sluice_requests_total", &[("flag", ""), ("outcome", "client_error")]), 1.0);
    // Provider and model labels come from the version.
    assert_eq!(sum(&samples, "sluice_requests_total", &[("provider", "b"), ("model", "model-b")]), 5.0);

    // Tokens: non-streaming 3 + 1 each; streams 7 + 3 (reported even when sluice asked).
    let tokens = |labels: &[(&str, &str)], kind: &str| {
        let mut with = labels.to_vec();
        with.push(("kind", kind));
        sum(&samples, "sluice_tokens_total", &with)
    };
    assert_eq!((tokens(&control, "input"), tokens(&control, "output")), (3.0 * 2.0 + 7.0 * 2.0, 1.0 * 2.0 + 3.0 * 2.0));
    assert_eq!((tokens(&treatment, "input"), tokens(&treatment, "output")), (7.0 * 2.0 + 3.0, 3.0 * 2.0 + 1.0));

    // Every request has a duration; streams that produced a token have a TTFT.
    assert_eq!(sum(&samples, "sluice_request_duration_seconds_count", &control), 6.0);
    assert_eq!(sum(&samples, "sluice_request_duration_seconds_count", &treatment), 5.0);
    assert_eq!(sum(&samples, "sluice_time_to_first_token_seconds_count", &control), 2.0);
    assert_eq!(sum(&samples, "sluice_time_to_first_token_seconds_count", &treatment), 4.0);
    assert_eq!(sum(&samples, "sluice_gateway_overhead_seconds_count", &control), 6.0);
    // The slow request waited for the provider, not for sluice.
    assert!(sum(&samples, "sluice_request_duration_seconds_sum", &control) >= 1.0);
    assert!(sum(&samples, "sluice_gateway_overhead_seconds_sum", &control) < 0.5);
    // Rollout weights and the revision.
    assert_eq!(sum(&samples, "sluice_rollout_weight", &[("flag", "bot"), ("variation", "control")]), 100.0);
    assert_eq!(sum(&samples, "sluice_rollout_weight", &[("flag", "bot"), ("variation", "treatment")]), 0.0);
    assert_eq!(sum(&samples, "sluice_config_revision", &[]), 1.0);

    // The guard statistics agree with the counters.
    let stats = gw.gateway.metrics.guard_stats("bot", "treatment").snapshot();
    assert_eq!((stats.requests, stats.errors, stats.cancelled, stats.latency.n), (5, 1, 1, 3));
    assert_eq!((stats.input_tokens, stats.output_tokens), (17, 7));
    gw.shutdown().await;
}

/// The same request straight to the upstream.
async fn direct(up: &Upstream, usage: bool) -> Bytes {
    let mut body = r#"{"model":"m","stream":true"#.to_string();
    if usage {
        body.push_str(r#","stream_options":{"include_usage":true}"#);
    }
    body.push('}');
    send(up.addr, post("/v1/chat/completions", None, &body)).await.body
}

#[tokio::test]
async fn the_app_sees_the_stream_it_would_see_without_sluice() {
    let up = upstream().await;
    let gw = gateway(&metrics_config(&up.base_url())).await;
    for route in ["bot", "up/gpt-x"] {
        let via = |usage: bool| {
            let extra =
                if usage { r#","stream":true,"stream_options":{"include_usage":true}"# } else { r#","stream":true"# };
            chat(route, &[], extra)
        };
        let without = send(gw.data_addr, via(false)).await;
        assert_eq!(up.last().json()["stream_options"]["include_usage"], true, "sluice asked for usage");
        assert_eq!(without.body, direct(&up, false).await, "{route}: byte for byte as without sluice");
        let with = send(gw.data_addr, via(true)).await;
        assert_eq!(with.body, direct(&up, true).await, "{route}: the usage the app asked for is kept");
    }
    // Other `stream_options` the app sent are kept.
    send(gw.data_addr, chat("fast", &[], r#","stream":true,"stream_options":{"x":1}"#)).await;
    assert_eq!(up.last().json()["stream_options"], serde_json::json!({"x": 1, "include_usage": true}));
    let samples = parse(&scrape(&gw).await);
    assert_eq!(
        sum(&samples, "sluice_tokens_total", &[("provider", "up"), ("model", "gpt-x"), ("kind", "output")]),
        9.0
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let up = upstream().await;
    let gw = gateway(&metrics_config(&up.base_url())).await;
    send(gw.data_addr, request("c-1", "ok", true, false)).await;
    let text = scrape(&gw).await;
    gw.shutdown().await;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            // Fails when SLUICE_REQUIRE_PROMTOOL=1; skips visibly otherwise.
            assert!(!have(&PROMTOOL, "metrics_pass_promtool"), "promtool is installed but cannot run: {e}");
            return;
        }
    };
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_access_log_has_the_route_and_outcome_and_never_the_content() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt().with_writer(capture.clone()).with_ansi(false).json().finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let up = upstream().await;
    let yaml = must_replace(&metrics_config(&up.base_url()), "aliases:\n", "log: {access_log: true}\naliases:\n");
    let gw = gateway(&yaml).await;
    send(gw.data_addr, request("t-1", "ok", true, false)).await;
    send(gw.data_addr, request("c-1", "500", false, false)).await;
    gw.shutdown().await;

    let lines: Vec<serde_json::Value> = capture
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "request")
        .map(|v| v["fields"].clone())
        .collect();
    assert_eq!(lines.len(), 2, "one line per request: {lines:?}");
    let stream = &lines[0];
    assert_eq!(
        (&stream["client"], &stream["flag"], &stream["variation"], &stream["version"], &stream["provider"]),
        (&"app".into(), &"bot".into(), &"treatment".into(), &"2".into(), &"b".into())
    );
    assert_eq!((&stream["status"], &stream["outcome"]), (&200.into(), &"ok".into()));
    assert_eq!((&stream["input_tokens"], &stream["output_tokens"]), (&7.into(), &3.into()));
    assert!(stream["ttft_ms"].as_f64().unwrap() > 0.0 && stream["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(stream["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!((&lines[1]["status"], &lines[1]["outcome"]), (&500.into(), &"upstream_error".into()));
    let all = capture.text();
    assert!(!all.contains("\"hi\""), "message content is not logged by default: {all}");
    assert!(!all.contains(KEY) && !all.contains(PROVIDER_KEY), "no keys in the log");

    // With content logging on, the messages are there.
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt().with_writer(capture.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let gw = gateway(&must_replace(&yaml, "{access_log: true}", "{access_log: true, content: true}")).await;
    send(gw.data_addr, request("c-2", "ok", false, false)).await;
    gw.shutdown().await;
    assert!(capture.text().contains(r#"\"content\":\"hi\""#), "{}", capture.text());
}
