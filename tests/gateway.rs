//! Data-plane behaviour: routing, pass-through, authentication, and every bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const CHAT: &str = r#"{"model":"up/gpt-x","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"response_format":{"type":"json_object"},"x_unknown":{"kept":[1,2.50,"é"]},"temperature":0.2}"#;

#[tokio::test]
async fn chat_is_routed_and_passed_through_untouched() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = gateway(&config(&up.base_url(), "")).await;

    let mut req = post("/v1/chat/completions", Some(KEY), CHAT);
    req.headers_mut().insert("x-request-id", "req-123".parse().unwrap());
    req.headers_mut().insert("openai-beta", "assistants=v2".parse().unwrap());
    let a = send(gw.data_addr, req).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.body, CHAT_RESPONSE.as_bytes(), "the upstream body passes through byte for byte");
    assert_eq!(a.headers["x-request-id"], "req-123");

    let r = up.last();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path_and_query, "/v1/chat/completions");
    assert_eq!(r.headers["authorization"], format!("Bearer {PROVIDER_KEY}").as_str());
    assert_eq!(r.headers["openai-beta"], "assistants=v2", "other client headers are forwarded");
    assert_eq!(r.headers["x-request-id"], "req-123");
    // Only `model` changed; every other byte is the app's.
    let expected = must_replace(CHAT, r#""model":"up/gpt-x""#, r#""model":"gpt-x""#);
    assert_eq!(std::str::from_utf8(&r.body).unwrap(), expected);
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    // Each worker thread has its own upstream pool: with one worker, one connection.
    let yaml = must_replace(&config(&up.base_url(), ""), "shutdown_grace: 5s", "shutdown_grace: 5s, workers: 1");
    let gw = gateway(&yaml).await;
    for _ in 0..5 {
        let a = send(gw.data_addr, post("/v1/chat/completions", Some(KEY), CHAT)).await;
        assert_eq!(a.status, 200);
    }
    assert_eq!(up.calls.load(std::sync::atomic::Ordering::SeqCst), 5);
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1, "one pooled connection served all five");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_closes_its_connections_gets_a_new_one_each_time() {
    // `connection: close` on every answer: no connection may be reused, and none of the
    // requests may fail for it.
    let up = Upstream::start(Reply::Raw {
        status: 200,
        headers: vec![("content-type", "application/json".into()), ("connection", "close".into())],
        body: CHAT_RESPONSE.into(),
    })
    .await;
    let yaml = must_replace(&config(&up.base_url(), ""), "shutdown_grace: 5s", "shutdown_grace: 5s, workers: 1");
    let gw = gateway(&yaml).await;
    for _ in 0..5 {
        let a = send(gw.data_addr, post("/v1/chat/completions", Some(KEY), CHAT)).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.body, CHAT_RESPONSE.as_bytes());
    }
    assert_eq!(up.calls.load(std::sync::atomic::Ordering::SeqCst), 5);
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 5, "a closed connection is never reused");
    gw.shutdown().await;
}

/// `server-timing`'s metrics as (name, milliseconds).
fn server_timing(a: &Answer) -> Vec<(String, f64)> {
    a.header("server-timing")
        .split(", ")
        .map(|m| {
            let (name, dur) = m.split_once(";dur=").unwrap_or_else(|| panic!("a metric with a duration: {m:?}"));
            (name.to_string(), dur.parse().unwrap_or_else(|_| panic!("milliseconds: {dur:?}")))
        })
        .collect()
}

#[tokio::test]
async fn server_timing_tells_sluice_time_from_the_providers() {
    let up =
        Upstream::start(Reply::Json { status: 200, body: CHAT_RESPONSE.into(), delay: Duration::from_millis(120) })
            .await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    let a = send(gw.data_addr, post("/v1/chat/completions", Some(KEY), CHAT)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let timing = server_timing(&a);
    assert_eq!(timing.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["sluice", "upstream"], "{timing:?}");
    assert!(timing[1].1 >= 120.0, "the provider's 120 ms are the upstream's, not sluice's: {timing:?}");
    assert!(timing[0].1 >= 0.0);
    // No provider called: sluice's time only.
    let refused = send(gw.data_addr, post("/v1/chat/completions", Some("sk-wrong"), CHAT)).await;
    assert_eq!(refused.status, 401);
    let timing = server_timing(&refused);
    assert_eq!(timing.len(), 1, "{timing:?}");
    assert_eq!(timing[0].0, "sluice");
    gw.shutdown().await;
}

#[tokio::test]
async fn aliases_completions_and_embeddings_route() {
    let up = Upstream::start(json_reply(r#"{"ok":true}"#)).await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    for (path, upstream_path) in [
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/completions?api-version=1", "/v1/completions?api-version=1"),
        ("/v1/embeddings", "/v1/embeddings"),
    ] {
        let a = send(gw.data_addr, post(path, Some(KEY), r#"{"model":"fast","input":"x"}"#)).await;
        assert_eq!(a.status, 200, "{path}: {}", a.text());
        let r = up.last();
        assert_eq!(r.path_and_query, upstream_path);
        assert_eq!(r.json()["model"], "gpt-x");
        assert_eq!(r.json()["input"], "x");
        // A generated request id is 32 hex digits.
        let id = a.headers["x-request-id"].to_str().unwrap();
        assert!(id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn models_lists_aliases_and_provider_models() {
    let up = Upstream::start(json_reply("{}")).await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    let a = send(gw.data_addr, get("/v1/models", Some(KEY))).await;
    assert_eq!(a.status, 200);
    let ids: Vec<String> =
        a.json()["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["fast", "up/gpt-x"]);
    assert_eq!(send(gw.data_addr, get("/v1/models", None)).await.status, 401);
    let h = send(gw.data_addr, get("/healthz", None)).await;
    assert_eq!((h.status.as_u16(), h.text().as_str()), (200, "ok"));
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_keys_are_refused_before_anything_else() {
    let up = Upstream::start(json_reply("{}")).await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    let a = send(gw.data_addr, post("/v1/chat/completions", None, CHAT)).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (401, "missing_api_key"));
    let a = send(gw.data_addr, post("/v1/chat/completions", Some("sk-wrong"), CHAT)).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (401, "invalid_api_key"));
    let mut req = post("/v1/chat/completions", None, CHAT);
    req.headers_mut().insert("authorization", "Basic abc".parse().unwrap());
    assert_eq!(send(gw.data_addr, req).await.status, 401);
    assert_eq!(up.calls.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing reached upstream");
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_openai_shaped_errors() {
    let up = Upstream::start(json_reply("{}")).await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    let cases: &[(&str, &str, u16, &str)] = &[
        ("/v1/chat/completions", "{\"model\":", 400, "invalid_json"),
        ("/v1/chat/completions", "[1,2]", 400, "invalid_json"),
        ("/v1/chat/completions", r#"{"messages":[]}"#, 400, "missing_model"),
        ("/v1/chat/completions", r#"{"model":7}"#, 400, "invalid_type"),
        ("/v1/chat/completions", r#"{"model":"up/x","stream":"yes"}"#, 400, "invalid_type"),
        ("/v1/chat/completions", r#"{"model":"no-such-model"}"#, 404, "model_not_found"),
        ("/v1/chat/completions", r#"{"model":"nobody/gpt"}"#, 404, "model_not_found"),
        ("/v1/chat/completions", r#"{"model":"up/"}"#, 404, "model_not_found"),
        ("/v1/assistants", "{}", 404, "unknown_url"),
    ];
    for (path, body, status, code) in cases {
        let a = send(gw.data_addr, post(path, Some(KEY), body)).await;
        assert_eq!(a.status.as_u16(), *status, "{body}: {}", a.text());
        let err = &a.json()["error"];
        assert_eq!(err["code"], *code, "{body}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(err.get("type").is_some() && err.get("param").is_some());
        assert!(a.headers.contains_key("x-request-id"));
    }
    let a = send(gw.data_addr, get("/v1/chat/completions", Some(KEY))).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (405, "method_not_allowed"));
    let big = format!(r#"{{"model":"up/gpt-x","pad":"{}"}}"#, "x".repeat(4096));
    let a = send(gw.data_addr, post("/v1/chat/completions", Some(KEY), &big)).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (413, "request_too_large"));
    assert_eq!(up.calls.load(std::sync::atomic::Ordering::SeqCst), 0, "no bad request reached upstream");
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_errors_pass_through_with_their_body() {
    let body =
        r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
    let up = Upstream::start(Reply::Json { status: 429, body: body.into(), delay: Duration::ZERO }).await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    let a = send(gw.data_addr, post("/v1/chat/completions", Some(KEY), CHAT)).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.body, body.as_bytes());
    gw.shutdown().await;
}

#[tokio::test]
async fn refused_upstream_is_a_502() {
    let (_held, dead) = refusing_addr();
    let gw = gateway(&config(&format!("http://{dead}/v1"), "")).await;
    let a = send(gw.data_addr, post("/v1/chat/completions", Some(KEY), CHAT)).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (502, "upstream_connect_failed"));
    assert!(a.json()["error"]["message"].as_str().unwrap().contains("provider `up`"));
    gw.shutdown().await;
}

#[tokio::test]
async fn slow_upstream_is_a_504() {
    let up = Upstream::start(Reply::Json { status: 200, body: "{}".into(), delay: Duration::from_secs(3) }).await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    let a = send(gw.data_addr, post("/v1/chat/completions", Some(KEY), CHAT)).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (504, "upstream_timeout"));
    gw.shutdown().await;
}

#[tokio::test]
async fn built_in_mock_provider_answers_in_process() {
    let gw = gateway(&config("http://127.0.0.1:9/v1", "")).await;
    let a = send(
        gw.data_addr,
        post(
            "/v1/chat/completions",
            Some(KEY),
            r#"{"model":"mock/mock-1","messages":[{"role":"user","content":"hi"}]}"#,
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "mock-1");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn slow_request_body_is_a_408() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start(json_reply("{}")).await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    // Every endpoint that reads a body: the OpenAI API, OFREP (no body, as its other
    // statuses), track.
    for (path, code) in [
        ("/v1/chat/completions", Some("request_timeout")),
        ("/ofrep/v1/evaluate/flags", None),
        ("/v1/track", Some("request_timeout")),
    ] {
        let mut s = tokio::net::TcpStream::connect(gw.data_addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-length: 100\r\n\r\n{{\"model\":"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut s, &mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 408"), "{path}: {text}");
        if let Some(code) = code {
            assert!(text.contains(code), "{path}: {text}");
        }
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn slow_request_head_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start(json_reply("{}")).await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    let mut s = tokio::net::TcpStream::connect(gw.data_addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    // The head never completes: the connection is closed after header_read_timeout.
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("connection left open")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn http2_cleartext_is_served() {
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    let stream = tokio::net::TcpStream::connect(gw.data_addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{}/v1/chat/completions", gw.data_addr))
        .header("authorization", format!("Bearer {KEY}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(CHAT)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    assert_eq!(body, CHAT_RESPONSE.as_bytes());
    let _ = json!({});
    gw.shutdown().await;
}
