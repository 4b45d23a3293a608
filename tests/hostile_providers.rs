//! A provider that misbehaves, or an app that sends what a provider cannot take, never
//! hurts a variation or an app: the app's mistakes are 400s that count as its own and never
//! fall back; a provider that fails before its first event is a 502 (and a fallback); a
//! provider's credentials, cookies and redirects never reach the app.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;

/// One provider of each kind at `bad` (each the candidate of a flag with a fallback on
/// `control`, at `good`), and pass-through models `oai/m`, `ant/m`, `az/m`.
fn hostile_config(bad: &str, good: &str) -> String {
    let mut flags = String::new();
    for flag in ["fb-oai", "fb-ant", "fb-az"] {
        flags.push_str(&format!(
            r#"
  {flag}:
    fallback_variation: control
    variations:
      - {{name: control, ai_config: {flag}, version: 1}}
      - {{name: candidate, ai_config: {flag}, version: 2}}
    fallthrough: {{variation: candidate}}
    endpoints: [chat_completions]"#
        ));
    }
    let mut configs = String::new();
    for (flag, provider) in [("fb-oai", "oai"), ("fb-ant", "ant"), ("fb-az", "az")] {
        configs.push_str(&format!(
            r#"
  {flag}:
    versions:
      - {{version: 1, provider: good, model: gpt-x}}
      - {{version: 2, provider: {provider}, model: m}}"#
        ));
    }
    format!(
        r#"
listen: {{data: "127.0.0.1:0", admin: "127.0.0.1:0"}}
clients:
  app: {{key: {KEY}}}
providers:
  good:
    kind: openai
    base_url: {good}/v1
    api_key: {PROVIDER_KEY}
  oai:
    kind: openai
    base_url: {bad}/v1
    api_key: {PROVIDER_KEY}
    timeouts: {{connect: 1s, first_byte: 2s, idle: 2s}}
  ant:
    kind: anthropic
    base_url: {bad}/v1
    api_key: {PROVIDER_KEY}
    max_tokens: 64
    timeouts: {{connect: 1s, first_byte: 2s, idle: 2s}}
  az:
    kind: azure_openai
    base_url: {bad}
    api_version: 2024-10-21
    api_key: {PROVIDER_KEY}
    timeouts: {{connect: 1s, first_byte: 2s, idle: 2s}}
ai_configs:{configs}
flags:{flags}
"#
    )
}

/// A well-behaved OpenAI-compatible upstream (streams or JSON).
async fn good_upstream() -> Upstream {
    Upstream::start(Reply::PerRequest(Arc::new(|r: &Recorded| {
        if r.json()["stream"].as_bool() == Some(true) {
            Reply::Sse(openai_stream(r, &["ok"]))
        } else {
            json_reply(CHAT_RESPONSE)
        }
    })))
    .await
}

async fn setup(bad: Reply) -> (Upstream, Upstream, Running) {
    let bad = Upstream::start(bad).await;
    let good = good_upstream().await;
    let gw = gateway(&hostile_config(&format!("http://{}", bad.addr), &format!("http://{}", good.addr))).await;
    (bad, good, gw)
}

fn requests(samples: &Samples, flag: &str, variation: &str, outcome: &str) -> f64 {
    sum(samples, "sluice_requests_total", &[("flag", flag), ("variation", variation), ("outcome", outcome)])
}

#[tokio::test]
async fn a_body_the_anthropic_translation_cannot_read_is_the_apps_400_never_a_fallback() {
    let (bad, _good, gw) = setup(json_reply(CHAT_RESPONSE)).await;
    let deep = format!(
        r#"{{"model":"fb-ant","messages":[{{"role":"user","content":"hi"}}],"x":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    for _ in 0..3 {
        let a = send(gw.data_addr, post("/v1/chat/completions", Some(KEY), &deep)).await;
        assert_eq!(a.status, 400, "{}", a.text());
        assert_eq!(a.error_code(), "unsupported_value", "{}", a.text());
        assert!(a.text().contains("recursion limit"), "{}", a.text());
        assert_eq!(a.header("x-sluice-fallback-from"), "", "never a fallback");
        assert_eq!(a.header("x-sluice-variation"), "", "no variation answered");
    }
    // A lone surrogate is the same: the app's JSON, not the provider's failure.
    let surrogate = r#"{"model":"ant/m","messages":[{"role":"user","content":"\ud800"}]}"#;
    let a = send(gw.data_addr, post("/v1/chat/completions", Some(KEY), surrogate)).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (400, "unsupported_value"), "{}", a.text());
    assert_eq!(bad.calls.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing was sent");
    let m = parse(&scrape(&gw).await);
    assert_eq!(requests(&m, "fb-ant", "candidate", "client_error"), 3.0, "counted as the app's");
    assert_eq!(requests(&m, "fb-ant", "candidate", "upstream_error"), 0.0, "never the candidate's");
    assert_eq!(requests(&m, "fb-ant", "control", "ok"), 0.0, "no fallback");
    gw.shutdown().await;
}

/// What an upstream that echoes the credentials it received answers, by `x-evil`.
fn echoing(r: &Recorded) -> Reply {
    let key = ["authorization", "x-api-key", "api-key"]
        .iter()
        .find_map(|h| r.headers.get(*h))
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let evil = r.headers.get("x-evil").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    match evil.as_str() {
        status @ ("401" | "403") => Reply::Raw {
            status: status.parse().unwrap(),
            headers: vec![("content-type", "application/json".into()), ("x-echo-key", key.clone())],
            body: format!(r#"{{"error":{{"message":"Incorrect API key provided: {key}.","code":"invalid_api_key"}}}}"#),
        },
        "307" => Reply::Raw {
            status: 307,
            headers: vec![("location", "http://127.0.0.1:9/steal".into()), ("x-echo-key", key)],
            body: String::new(),
        },
        _ => Reply::Raw {
            status: 200,
            headers: vec![
                ("content-type", "application/json".into()),
                ("set-cookie", format!("s={key}")),
                ("x-echo-key", key),
                ("x-ratelimit-remaining-requests", "99".into()),
            ],
            body: CHAT_RESPONSE.into(),
        },
    }
}

/// The whole response as text: status, every header, the body.
fn everything(a: &Answer) -> String {
    format!("{} {:?} {}", a.status, a.headers, a.text())
}

#[tokio::test]
async fn a_providers_credentials_cookies_and_redirects_never_reach_the_app() {
    let (_bad, _good, gw) = setup(Reply::PerRequest(Arc::new(echoing))).await;
    for model in ["oai/m", "ant/m", "az/m"] {
        for evil in ["401", "403", "307"] {
            let a = send(gw.data_addr, chat(model, &[("x-evil", evil)], "")).await;
            assert_eq!((a.status.as_u16(), a.error_code().as_str()), (502, "upstream_misconfigured"), "{model} {evil}");
            assert!(!everything(&a).contains(PROVIDER_KEY), "{model} {evil}: {}", everything(&a));
            assert!(a.headers.get("location").is_none() && a.headers.get("x-echo-key").is_none(), "{model} {evil}");
        }
    }
    for model in ["oai/m", "az/m"] {
        let a = send(gw.data_addr, chat(model, &[], "")).await;
        assert_eq!(a.status, 200, "{model}: {}", a.text());
        assert!(!everything(&a).contains(PROVIDER_KEY), "{model}: {}", everything(&a));
        assert!(a.headers.get("set-cookie").is_none(), "{model}");
        assert_eq!(a.header("x-ratelimit-remaining-requests"), "99", "{model}: rate limits are the app's to see");
        assert_eq!(a.header("content-type"), "application/json", "{model}");
    }
    // A fallback is tried, as for any provider failure before the first byte.
    let a = send(gw.data_addr, chat("fb-oai", &[("x-evil", "401")], "")).await;
    assert_eq!((a.status.as_u16(), a.header("x-sluice-fallback-from")), (200, "candidate"), "{}", a.text());
    gw.shutdown().await;
}

/// An upstream answering 200 `text/event-stream` with `body` (then the end).
fn sse_answer(body: &str) -> Reply {
    Reply::Raw { status: 200, headers: vec![("content-type", "text/event-stream".into())], body: body.into() }
}

#[tokio::test]
async fn a_stream_that_ends_before_its_first_event_is_a_502_or_a_fallback_on_every_kind() {
    // Nothing at all; bytes that hold no event; events without data; for Anthropic, an
    // OpenAI chunk (not one of its events).
    let bodies = [
        ("empty", ""),
        ("garbage", "\u{1}\u{2}garbage without an end"),
        ("no data", ": ping\n\nevent: x\r\rid: 3\n\n"),
        ("not anthropic", "data: {\"choices\":[]}\n\n"),
    ];
    for (what, body) in bodies {
        let (_bad, good, gw) = setup(sse_answer(body)).await;
        let kinds: &[&str] = if what == "not anthropic" { &["ant"] } else { &["oai", "ant", "az"] };
        for kind in kinds {
            let a = send(gw.data_addr, chat(&format!("{kind}/m"), &[], r#","stream":true"#)).await;
            assert_eq!(
                (a.status.as_u16(), a.error_code().as_str()),
                (502, "upstream_stream_broken"),
                "{what}, {kind}: {}",
                a.text()
            );
            let a = send(gw.data_addr, chat(&format!("fb-{kind}"), &[], r#","stream":true"#)).await;
            assert_eq!(a.status, 200, "{what}, fb-{kind}: {}", a.text());
            assert_eq!(a.header("x-sluice-fallback-from"), "candidate", "{what}, fb-{kind}");
            assert_eq!(a.header("x-sluice-variation"), "control", "{what}, fb-{kind}");
            assert!(a.text().contains("\"ok\"") && a.text().ends_with("data: [DONE]\n\n"), "{what}: {}", a.text());
        }
        assert!(good.calls.load(std::sync::atomic::Ordering::SeqCst) > 0);
        gw.shutdown().await;
    }
}

/// A stream with one event, then an event that never ends (`size` bytes of it).
fn never_ending(first: &str, size: usize) -> Reply {
    let mut steps = vec![Step::Send(first.to_string()), Step::Send("data: {\"x\":\"".into())];
    let piece = "A".repeat(64 * 1024);
    for _ in 0..size / piece.len() {
        steps.push(Step::Send(piece.clone()));
    }
    Reply::Sse(steps)
}

#[tokio::test]
async fn an_event_that_never_ends_is_cut_at_1_mib_with_an_error_event() {
    let chunk = r#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"first"}}]}

"#;
    let anthropic_start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg\",\"model\":\"m\",\"usage\":{\"input_tokens\":1}}}\n\n";
    for (kind, first, extra) in [
        ("oai", chunk, ""),
        ("oai", chunk, r#","stream_options":{"include_usage":true}"#),
        ("ant", anthropic_start, ""),
    ] {
        let (_bad, _good, gw) = setup(never_ending(first, 1536 * 1024)).await;
        let a = send(gw.data_addr, chat(&format!("{kind}/m"), &[], &format!(r#","stream":true{extra}"#))).await;
        assert_eq!(a.status, 200, "{kind}");
        let text = a.text();
        assert!(!text.contains("AAAA"), "{kind}: the partial event never reaches the app");
        assert!(text.len() < 4096, "{kind}: {} bytes", text.len());
        let last = text.trim_end().rsplit("\n\n").next().unwrap();
        let error: serde_json::Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(error["error"]["code"], "upstream_protocol_error", "{kind}: {text}");
        let m = parse(&scrape(&gw).await);
        let failed = sum(&m, "sluice_requests_total", &[("provider", kind), ("outcome", "upstream_error")]);
        assert_eq!(failed, 1.0, "{kind}: the provider's failure");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn cr_only_line_endings_end_events() {
    let up = Upstream::start(Reply::PerRequest(Arc::new(|r: &Recorded| {
        let steps = openai_stream(r, &["a", "b"]);
        Reply::Sse(
            steps
                .into_iter()
                .map(|s| if let Step::Send(t) = s { Step::Send(t.replace('\n', "\r")) } else { s })
                .collect(),
        )
    })))
    .await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    let a = send(gw.data_addr, chat("up/gpt-x", &[], r#","stream":true"#)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    // What the app would have had without sluice asking for usage: the same CR-only stream.
    let plain = Recorded { body: r#"{"stream":true}"#.into(), ..up.last() };
    let expected: String = openai_stream(&plain, &["a", "b"])
        .into_iter()
        .map(|s| if let Step::Send(t) = s { t.replace('\n', "\r") } else { String::new() })
        .collect();
    assert_eq!(a.text(), expected, "usage removed, byte for byte");
    let m = parse(&scrape(&gw).await);
    assert_eq!(sum(&m, "sluice_tokens_total", &[("provider", "up")]), 10.0, "usage read: {m:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_anthropic_200_that_is_not_a_messages_answer_is_a_502() {
    let (_bad, _good, gw) = setup(json_reply(CHAT_RESPONSE)).await;
    let a = send(gw.data_addr, chat("ant/m", &[], "")).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (502, "upstream_protocol_error"), "{}", a.text());
    let a = send(gw.data_addr, chat("fb-ant", &[], "")).await;
    assert_eq!((a.status.as_u16(), a.header("x-sluice-fallback-from")), (200, "candidate"), "{}", a.text());
    gw.shutdown().await;
}

#[tokio::test]
async fn error_codes_say_what_is_wrong() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    // The scheme is case-insensitive.
    for scheme in ["BEARER", "bearer", "BeArEr"] {
        let mut req = chat("fast", &[], "");
        req.headers_mut().insert("authorization", format!("{scheme} {KEY}").parse().unwrap());
        assert_eq!(send(gw.data_addr, req).await.status, 200, "{scheme}");
    }
    // A string that does not decode is bad JSON, not a wrong type.
    let a = send(gw.data_addr, post("/v1/chat/completions", Some(KEY), r#"{"model":"\ud800","messages":[]}"#)).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (400, "invalid_json"), "{}", a.text());
    assert!(a.text().contains("escape"), "{}", a.text());
    // A body whose framing is broken could not be read: not a JSON problem.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(gw.data_addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"unreadable_body\""), "{answer}");
    gw.shutdown().await;
}

#[test]
fn a_base_url_with_credentials_is_refused_without_showing_them() {
    for kind in ["openai", "anthropic", "azure_openai"] {
        let extra = if kind == "azure_openai" { "\n    api_version: 2024-10-21" } else { "" };
        let yaml = must_replace(
            &config("http://user:URL-SECRET-15@127.0.0.1:9/v1", ""),
            "kind: openai",
            &format!("kind: {kind}{extra}"),
        );
        let err = match sluice::config::parse(&yaml, "test.yaml", &|_| None) {
            Ok(loaded) => sluice::server::prepare(loaded).err().map(|e| e.to_string()).expect("refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("providers.up.base_url") && err.contains("credentials"), "{kind}: {err}");
        assert!(!err.contains("URL-SECRET-15"), "{kind}: {err}");
    }
}
