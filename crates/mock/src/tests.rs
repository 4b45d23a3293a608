#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use super::*;

struct Call {
    method: Method,
    path: &'static str,
    query: Option<&'static str>,
    headers: HeaderMap,
    body: Bytes,
}

fn post(path: &'static str, body: &str) -> Call {
    Call {
        method: Method::POST,
        path,
        query: None,
        headers: HeaderMap::new(),
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

fn get(path: &'static str) -> Call {
    Call { method: Method::GET, path, query: None, headers: HeaderMap::new(), body: Bytes::new() }
}

impl Call {
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.insert(name, HeaderValue::from_str(value).unwrap());
        self
    }

    fn query(mut self, query: &'static str) -> Self {
        self.query = Some(query);
        self
    }

    async fn send(&self, settings: &MockSettings) -> Response<crate::body::Body> {
        let req = MockRequest {
            method: &self.method,
            path: self.path,
            query: self.query,
            headers: &self.headers,
            body: self.body.clone(),
        };
        respond(settings, req).await
    }

    async fn run(&self) -> Response<crate::body::Body> {
        self.send(&MockSettings::default()).await
    }
}

async fn body_bytes(response: Response<crate::body::Body>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

async fn json(response: Response<crate::body::Body>) -> Value {
    assert_eq!(response.headers()["content-type"], "application/json");
    serde_json::from_slice(&body_bytes(response).await).unwrap()
}

/// Split an SSE body into its `data:` payloads.
fn events(text: &str) -> Vec<String> {
    assert!(text.ends_with("\n\n"), "unterminated stream: {text:?}");
    text.split_terminator("\n\n").map(|event| event.strip_prefix("data: ").unwrap().to_owned()).collect()
}

fn assert_error(value: &Value, kind: &str, param: Option<&str>) {
    let error = &value["error"];
    assert!(error["message"].is_string(), "{value}");
    assert_eq!(error["type"], kind, "{value}");
    match param {
        Some(param) => assert_eq!(error["param"], param, "{value}"),
        None => assert!(error["param"].is_null(), "{value}"),
    }
}

#[tokio::test]
async fn chat_completion_shape_and_usage() {
    let body = r#"{"model":"gpt-x","messages":[{"role":"user","content":"hello there"}]}"#;
    let response = post("/v1/chat/completions", body).header("x-mock-chunks", "3").run().await;
    assert_eq!(response.status(), StatusCode::OK);
    let v = json(response).await;
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-mock-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "gpt-x");
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "mock0 mock1 mock2");
    assert_eq!(choice["finish_reason"], "stop");
    let prompt = 2; // the words of the messages
    assert_eq!(v["usage"]["prompt_tokens"], prompt);
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], prompt + 3);
}

#[tokio::test]
async fn chat_default_chunks_and_escaped_model() {
    let v = json(post("/v1/chat/completions", r#"{"model":"a\"b\\c\u00e9","stream":false}"#).run().await).await;
    assert_eq!(v["model"], "a\"b\\cé");
    assert_eq!(v["usage"]["completion_tokens"], 20);
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content.split(' ').count(), 20);
}

#[tokio::test]
async fn text_completion_shape() {
    let v = json(post("/v1/completions", r#"{"model":"m","prompt":"x"}"#).query("chunks=2").run().await).await;
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-mock-"));
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "mock0 mock1");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 2);
    assert_eq!(v["usage"]["prompt_tokens"], 6);
}

async fn stream_events(call: Call) -> Vec<String> {
    let response = call.run().await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let body = body_bytes(response).await;
    events(std::str::from_utf8(&body).unwrap())
}

#[tokio::test]
async fn chat_stream_without_usage() {
    let events =
        stream_events(post("/v1/chat/completions", r#"{"model":"m","stream":true}"#).header("x-mock-chunks", "4"))
            .await;
    // role + 4 content + finish + [DONE]
    assert_eq!(events.len(), 7, "{events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..6].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-mock-"));
    for chunk in &chunks {
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "m");
        assert!(chunk["created"].is_u64());
        assert!(chunk.get("usage").is_none(), "{chunk}");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
    let text: String = chunks[1..5]
        .iter()
        .map(|c| {
            assert!(c["choices"][0]["finish_reason"].is_null());
            c["choices"][0]["delta"]["content"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "mock0 mock1 mock2 mock3");
    assert_eq!(chunks[5]["choices"][0]["delta"], serde_json::json!({}));
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn chat_stream_with_usage() {
    let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi there you"}]}]}"#;
    let events = stream_events(post("/v1/chat/completions", body).query("chunks=5")).await;
    // role + 5 content + finish + usage + [DONE]
    assert_eq!(events.len(), 9, "{events:?}");
    assert_eq!(events[8], "[DONE]");
    let chunks: Vec<Value> = events[..8].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    for chunk in &chunks[..7] {
        assert!(chunk["usage"].is_null() && chunk.get("usage").is_some(), "{chunk}");
        assert_eq!(chunk["choices"].as_array().unwrap().len(), 1);
    }
    let usage = &chunks[7];
    assert_eq!(usage["object"], "chat.completion.chunk");
    assert_eq!(usage["choices"], serde_json::json!([]));
    let prompt = 5; // the words of the messages
    assert_eq!(usage["usage"]["prompt_tokens"], prompt);
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    assert_eq!(usage["usage"]["total_tokens"], prompt + 5);
}

#[tokio::test]
async fn completion_stream() {
    let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
    let events = stream_events(post("/v1/completions", body).header("x-mock-chunks", "3")).await;
    // 3 content + finish + usage + [DONE]
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!(events[5], "[DONE]");
    let chunks: Vec<Value> = events[..5].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = chunks[..3].iter().map(|c| c["choices"][0]["text"].as_str().unwrap().to_owned()).collect();
    assert_eq!(text, "mock0 mock1 mock2");
    assert_eq!(chunks[0]["object"], "text_completion");
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["usage"]["completion_tokens"], 3);
}

// Paused time: the delays pass on tokio's clock at once, and exactly.
#[tokio::test(start_paused = true)]
async fn chunk_delay_spreads_frames() {
    let settings = MockSettings { chunks: 5, chunk_delay: Duration::from_millis(20), ..MockSettings::default() };
    let call = post("/v1/chat/completions", r#"{"model":"m","stream":true}"#);
    let start = Instant::now();
    let mut body = call.send(&settings).await.into_body();
    let mut frames = 0;
    let mut text = Vec::new();
    while let Some(frame) = body.frame().await {
        text.extend_from_slice(&frame.unwrap().into_data().unwrap());
        frames += 1;
    }
    assert!(start.elapsed() >= Duration::from_millis(80), "{:?}", start.elapsed());
    assert!(frames >= 5, "{frames} frames");
    assert_eq!(events(std::str::from_utf8(&text).unwrap()).len(), 8);
}

#[tokio::test(start_paused = true)]
async fn latency_delays_the_head() {
    let start = Instant::now();
    let response = get("/v1/models").query("latency_ms=30").run().await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[tokio::test]
async fn injected_errors() {
    let settings = MockSettings { error_rate: 1.0, ..MockSettings::default() };
    let call = post("/v1/chat/completions", r#"{"model":"m"}"#);
    let response = call.send(&settings).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let v = json(response).await;
    assert_error(&v, "server_error", None);
    assert_eq!(v["error"]["code"], "mock_error");
    assert_eq!(v["error"]["message"], "mock provider injected error");

    let response = call.header("x-mock-error-rate", "1").header("x-mock-error-status", "429").run().await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);

    // The header wins over the query; rate 0 never injects.
    let response = post("/v1/embeddings", r#"{"model":"m","input":"x"}"#)
        .query("error_rate=1")
        .header("x-mock-error-rate", "0")
        .send(&settings)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_knobs_are_400() {
    for (call, knob) in [
        (get("/v1/models").header("x-mock-chunks", "many"), "x-mock-chunks"),
        (get("/v1/models").query("error_rate=2"), "error_rate"),
        (get("/v1/models").query("a=b&error_status=200"), "error_status"),
        (get("/v1/models").header("x-mock-latency-ms", "-1"), "x-mock-latency-ms"),
        (get("/v1/models").query("chunk_delay_ms=1.5"), "chunk_delay_ms"),
        (get("/v1/models").header("x-mock-break-after", "x"), "x-mock-break-after"),
    ] {
        let response = call.run().await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let v = json(response).await;
        assert_error(&v, "invalid_request_error", Some(knob));
        assert!(v["error"]["message"].as_str().unwrap().contains(knob), "{v}");
    }
}

#[tokio::test]
async fn malformed_json_and_missing_model_are_400() {
    for (path, body, param) in [
        ("/v1/chat/completions", "{not json", None),
        ("/v1/chat/completions", "", None),
        ("/v1/chat/completions", r#"["m"]"#, None),
        ("/v1/chat/completions", r#"{"model":5}"#, None),
        ("/v1/chat/completions", r#"{"messages":[]}"#, Some("model")),
        ("/v1/completions", r#"{"model":"","prompt":"x"}"#, Some("model")),
        ("/v1/embeddings", r#"{"input":"x"}"#, Some("model")),
        ("/v1/embeddings", r#"{"model":"m"}"#, Some("input")),
        ("/v1/embeddings", r#"{"model":"m","input":[]}"#, Some("input")),
        ("/v1/embeddings", r#"{"model":"m","input":"x","dimensions":0}"#, Some("dimensions")),
        ("/v1/embeddings", r#"{"model":"m","input":[1,"x"]}"#, None),
    ] {
        let response = post(path, body).run().await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let v = json(response).await;
        assert_error(&v, "invalid_request_error", param);
        assert!(v["error"]["code"].is_null());
    }
}

// Paused time: the 1 ms chunk delay passes on tokio's clock at once.
#[tokio::test(start_paused = true)]
async fn break_after_fails_the_stream() {
    for kind in ["/v1/chat/completions", "/v1/completions"] {
        for delay in ["0", "1"] {
            let call = post(kind, r#"{"model":"m","stream":true}"#)
                .header("x-mock-break-after", "3")
                .header("x-mock-chunk-delay-ms", delay);
            let mut body = call.run().await.into_body();
            let mut text = Vec::new();
            let error = loop {
                match body.frame().await {
                    Some(Ok(frame)) => text.extend_from_slice(&frame.into_data().unwrap()),
                    Some(Err(err)) => break err,
                    None => panic!("stream ended without an error"),
                }
            };
            assert!(error.to_string().contains("after 3"), "{error}");
            let text = String::from_utf8(text).unwrap();
            let contents = events(&text)
                .iter()
                .map(|e| serde_json::from_str::<Value>(e).unwrap())
                .filter(|c| {
                    let choice = &c["choices"][0];
                    choice["text"].is_string() || choice["delta"]["content"].as_str().is_some_and(|s| !s.is_empty())
                })
                .count();
            assert_eq!(contents, 3, "{text}");
            assert!(!text.contains("[DONE]"));
        }
    }
    // break_after beyond the answer: all content, then the error instead of the end.
    let call = post("/v1/chat/completions", r#"{"model":"m","stream":true}"#).query("chunks=2&break_after=10");
    assert!(call.run().await.into_body().collect().await.is_err());
}

#[tokio::test]
async fn embeddings_are_deterministic() {
    let body = r#"{"model":"emb","input":["hello","world","hello"],"dimensions":16}"#;
    let v = json(post("/v1/embeddings", body).run().await).await;
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "emb");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
        assert_eq!(item["embedding"].as_array().unwrap().len(), 16);
    }
    assert_eq!(data[0]["embedding"], data[2]["embedding"]);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], 3);

    let again = json(post("/v1/embeddings", r#"{"model":"emb","input":"hello","dimensions":16}"#).run().await).await;
    assert_eq!(again["data"][0]["embedding"], data[0]["embedding"]);

    let default = json(post("/v1/embeddings", r#"{"model":"emb","input":"hello"}"#).run().await).await;
    let vector: Vec<f64> =
        default["data"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(vector.len(), 8);
    let norm: f64 = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");
}

#[tokio::test]
async fn embeddings_token_inputs_and_base64() {
    let v = json(post("/v1/embeddings", r#"{"model":"m","input":[1,2,3]}"#).run().await).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["usage"]["prompt_tokens"], 3);

    let v = json(post("/v1/embeddings", r#"{"model":"m","input":[[1,2],[3]]}"#).run().await).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["usage"]["prompt_tokens"], 3);

    let floats = json(post("/v1/embeddings", r#"{"model":"m","input":"abc"}"#).run().await).await;
    let b64 =
        json(post("/v1/embeddings", r#"{"model":"m","input":"abc","encoding_format":"base64"}"#).run().await).await;
    let encoded = b64["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(encoded.len(), 44); // 8 floats = 32 bytes
    let decoded = decode_base64(encoded);
    let values: Vec<f32> = decoded.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let expected: Vec<f32> =
        floats["data"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert_eq!(values, expected);
}

fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

#[tokio::test]
async fn models_health_and_unknown_routes() {
    let v = json(get("/v1/models").run().await).await;
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert!(data.len() >= 2);
    assert_eq!(data[0]["id"], "mock-1");
    assert_eq!(data[0]["object"], "model");
    assert_eq!(data[0]["owned_by"], "sluice-mock");

    let response = get("/healthz").run().await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_bytes(response).await, "ok");

    let response = get("/v1/nope").run().await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let v = json(response).await;
    assert_error(&v, "invalid_request_error", None);
    assert_eq!(v["error"]["code"], "not_found");

    let response = get("/v1/chat/completions").run().await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
    assert_eq!(json(response).await["error"]["code"], "method_not_allowed");

    let response = post("/v1/models", "").run().await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn respond_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let settings = MockSettings::default();
    let call = get("/healthz");
    let req =
        MockRequest { method: &call.method, path: call.path, query: None, headers: &call.headers, body: Bytes::new() };
    assert_send(&respond(&settings, req));
}

#[test]
fn args_parse_into_settings() {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MockArgs,
    }

    let defaults = Cli::try_parse_from(["mock"]).unwrap().args;
    assert_eq!(defaults.listen.to_string(), "127.0.0.1:8089");
    let settings = defaults.settings();
    assert_eq!(settings.chunks, 20);
    assert_eq!(settings.error_status, 500);
    assert_eq!(settings.latency, Duration::ZERO);

    let args = Cli::try_parse_from([
        "mock",
        "--listen",
        "0.0.0.0:9000",
        "--latency-ms",
        "5",
        "--error-rate",
        "0.5",
        "--error-status",
        "503",
        "--chunks",
        "7",
        "--chunk-delay-ms",
        "3",
    ])
    .unwrap()
    .args;
    let settings = args.settings();
    assert_eq!(settings.latency, Duration::from_millis(5));
    assert_eq!(settings.error_rate, 0.5);
    assert_eq!(settings.error_status, 503);
    assert_eq!(settings.chunks, 7);
    assert_eq!(settings.chunk_delay, Duration::from_millis(3));

    assert!(Cli::try_parse_from(["mock", "--error-rate", "1.5"]).is_err());
    assert!(Cli::try_parse_from(["mock", "--error-status", "200"]).is_err());
}

#[tokio::test]
async fn serve_answers_http1_and_shuts_down() {
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, std::sync::Arc::new(MockSettings::default()), async {
        let _ = stopped.await;
    }));

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let client = tokio::spawn(connection);
    let request = http::Request::post("/v1/chat/completions?chunks=2")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from_static(br#"{"model":"m","messages":[]}"#)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "mock0 mock1");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve did not return after shutdown")
        .unwrap()
        .unwrap();
    client.abort();
}
