//! Judge mode: the chat routes answer as an LLM judge and record what they receive.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{events, json, messages, post, settings, MockKind, MockSettings};
use crate::GARBAGE_ANSWER;

fn judge(kind: MockKind) -> MockSettings {
    MockSettings { judge: true, ..settings(kind) }
}

const SYSTEM: &str = "You grade answers. A good answer is polite. Reply with JSON.";

fn user_message(response: &str) -> String {
    format!("MESSAGE HISTORY:\nuser: hi\n\nRESPONSE TO EVALUATE:\n{response}")
}

/// A judge request as sluice sends it.
fn judge_request(response: &str) -> Value {
    json!({"model": "judge-1", "temperature": 0, "max_tokens": 512,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user_message(response)}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "judgement", "strict": true, "schema": {"type": "object", "properties": {"reasoning": {"type": "string"}, "score": {"type": "number"}}, "required": ["reasoning", "score"], "additionalProperties": false}}}})
}

/// The same request through sluice's Anthropic translation: the format is a forced tool.
fn anthropic_judge_request(response: &str) -> Value {
    json!({"model": "judge-1", "temperature": 0, "max_tokens": 512, "system": SYSTEM,
        "messages": [{"role": "user", "content": user_message(response)}],
        "tools": [{"name": "judgement", "input_schema": {"type": "object", "properties": {"reasoning": {"type": "string"}, "score": {"type": "number"}}, "required": ["reasoning", "score"], "additionalProperties": false}}],
        "tool_choice": {"type": "tool", "name": "judgement"}})
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Prompt words of [`judge_request`]: the system prompt and the user message.
fn prompt_words(response: &str) -> usize {
    words(SYSTEM) + words(&user_message(response))
}

/// The OpenAI answer's content and the judgement it holds.
async fn openai_judgement(response: &str) -> (Value, String, Value) {
    let (status, v) =
        json(post("/v1/chat/completions", &judge_request(response)).send(&judge(MockKind::OpenAi)).await).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    let judgement: Value = serde_json::from_str(&content).unwrap_or_else(|err| panic!("{err}: {content}"));
    (v, content, judgement)
}

#[tokio::test]
async fn score_marker_is_the_score() {
    let response = "Hello, a good answer [[score:7]]";
    let (v, content, judgement) = openai_judgement(response).await;
    assert_eq!(judgement["score"], json!(7));
    assert!(content.contains(r#""score":7}"#), "{content}");
    assert_eq!(judgement.as_object().unwrap().len(), 2, "{judgement}");
    let reasoning = judgement["reasoning"].as_str().unwrap();
    assert!(reasoning.contains("score marker"), "{reasoning}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["model"], "judge-1");
    assert_eq!(v["usage"]["completion_tokens"], words(&content));
    assert_eq!(v["usage"]["prompt_tokens"], prompt_words(response));
}

#[tokio::test]
async fn good_scores_one_and_anything_else_zero() {
    let (_, content, judgement) = openai_judgement("Hello, a GoOd answer").await;
    assert_eq!(judgement["score"], json!(1.0));
    assert!(content.ends_with(r#""score":1.0}"#), "{content}");
    assert!(judgement["reasoning"].as_str().unwrap().contains("contains 'good'"), "{judgement}");

    let (_, content, judgement) = openai_judgement("Hello, a fine answer").await;
    assert_eq!(judgement["score"], json!(0.0));
    assert!(content.ends_with(r#""score":0.0}"#), "{content}");
    assert!(judgement["reasoning"].as_str().unwrap().contains("does not contain"), "{judgement}");

    // Only the text after the last marker is judged: `good` in the rubric, the history or
    // an earlier marker's text does not count.
    let body = json!({"model": "j", "messages": [
        {"role": "system", "content": "good"},
        {"role": "user", "content": "MESSAGE HISTORY:\nuser: good\n\nRESPONSE TO EVALUATE:\ngood [[score:9]]\nRESPONSE TO EVALUATE:\n meh "}]});
    let (_, v) = json(post("/v1/chat/completions", &body).send(&judge(MockKind::OpenAi)).await).await;
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(content).unwrap()["score"], json!(0.0), "{content}");

    // Without the marker, the whole last user message is judged.
    let body = json!({"model": "j", "messages": [{"role": "user", "content": "bad"}, {"role": "assistant", "content": "x"}, {"role": "user", "content": "goods"}]});
    let (_, v) = json(post("/v1/chat/completions", &body).send(&judge(MockKind::OpenAi)).await).await;
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(content).unwrap()["score"], json!(1.0), "{content}");
}

#[tokio::test]
async fn out_of_range_scores_pass_through() {
    for (marker, score) in [("[[score:-1]]", json!(-1)), ("[[score:11]]", json!(11)), ("[[score:2.5e1]]", json!(25.0))]
    {
        let (_, content, judgement) = openai_judgement(&format!("good {marker}")).await;
        assert_eq!(judgement["score"], score, "{content}");
    }
    let (_, content, _) = openai_judgement("[[score:-1]]").await;
    assert!(content.contains(r#""score":-1}"#), "written as given: {content}");
}

#[tokio::test]
async fn garbage_is_not_json() {
    let response = post("/v1/chat/completions", &judge_request("good [[judge:garbage]]"));
    let (status, v) = json(response.send(&judge(MockKind::OpenAi)).await).await;
    assert_eq!(status, StatusCode::OK);
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content, GARBAGE_ANSWER);
    assert!(serde_json::from_str::<Value>(content).is_err());
    assert_eq!(v["usage"]["completion_tokens"], words(GARBAGE_ANSWER));

    // Anthropic: text even when a tool is forced.
    let req = messages(&anthropic_judge_request("[[judge:garbage]]"));
    let (status, v) = json(req.send(&judge(MockKind::Anthropic)).await).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["content"], json!([{"type": "text", "text": GARBAGE_ANSWER}]));
    assert_eq!(v["stop_reason"], "end_turn");
}

#[tokio::test]
async fn error_marker_is_the_kinds_500() {
    let response = post("/v1/chat/completions", &judge_request("good [[judge:error]]"));
    let (status, v) = json(response.send(&judge(MockKind::OpenAi)).await).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(v["error"]["type"], "server_error", "{v}");

    let req = messages(&anthropic_judge_request("[[judge:error]]"));
    let (status, v) = json(req.send(&judge(MockKind::Anthropic)).await).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error", "{v}");

    let req = super::azure("/openai/v1/chat/completions", &judge_request("[[judge:error]]"));
    assert_eq!(req.send(&judge(MockKind::Azure)).await.status(), StatusCode::INTERNAL_SERVER_ERROR);

    // Without judge mode the marker is just text.
    let response = post("/v1/chat/completions", &judge_request("good [[judge:error]]"));
    assert_eq!(response.to(MockKind::OpenAi).await.status(), StatusCode::OK);
}

/// Poll `future` once.
async fn poll_once<F: Future>(mut future: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}

#[tokio::test(start_paused = true)]
async fn delay_marker_holds_the_head() {
    let settings = judge(MockKind::OpenAi);
    let req = post("/v1/chat/completions", &judge_request("good [[judge:delay_ms:250]]"));
    let pending = req.send(&settings);
    tokio::pin!(pending);
    assert!(poll_once(pending.as_mut()).await.is_pending());
    assert_eq!(settings.judge_log.requests().len(), 1, "recorded before the delay");
    tokio::time::advance(Duration::from_millis(249)).await;
    assert!(poll_once(pending.as_mut()).await.is_pending(), "not before 250 ms");
    tokio::time::advance(Duration::from_millis(1)).await;
    let Poll::Ready(response) = poll_once(pending.as_mut()).await else { panic!("not ready after 250 ms") };
    let (status, v) = json(response).await;
    assert_eq!(status, StatusCode::OK);
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(content).unwrap()["score"], json!(1.0));

    // Without the marker the answer is ready at once.
    let req = post("/v1/chat/completions", &judge_request("good"));
    let ready = req.send(&settings);
    tokio::pin!(ready);
    assert!(poll_once(ready.as_mut()).await.is_ready());
}

#[tokio::test]
async fn stream_sends_the_judgement_as_one_chunk() {
    let mut body = judge_request("good");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let chunks = events(post("/v1/chat/completions", &body).send(&judge(MockKind::OpenAi)).await).await;
    let deltas: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c.data["choices"][0]["delta"]["content"].as_str())
        .filter(|d| !d.is_empty())
        .collect();
    assert_eq!(deltas.len(), 1, "{deltas:?}");
    let judgement: Value = serde_json::from_str(deltas[0]).unwrap();
    assert_eq!(judgement["score"], json!(1.0));
    let n = chunks.len();
    assert_eq!(chunks[n - 2].data["usage"]["completion_tokens"], words(deltas[0]));
}

#[tokio::test]
async fn anthropic_judgement_is_the_forced_tools_input() {
    let response = "Hello, a good answer [[score:4.5]]";
    let req = messages(&anthropic_judge_request(response));
    let (status, v) = json(req.send(&judge(MockKind::Anthropic)).await).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let content = v["content"].as_array().unwrap();
    assert_eq!(content.len(), 1, "{v}");
    assert_eq!(content[0]["type"], "tool_use");
    assert_eq!(content[0]["name"], "judgement");
    let input = &content[0]["input"];
    assert_eq!(input["score"], json!(4.5));
    assert!(input["reasoning"].as_str().unwrap().contains("score marker"), "{input}");
    assert_eq!(v["stop_reason"], "tool_use");
    let json_text = serde_json::to_string(input).unwrap();
    assert_eq!(v["usage"]["output_tokens"], words(&json_text));
    assert_eq!(v["usage"]["input_tokens"], prompt_words(response));

    // Streamed: the input's JSON deltas join into the judgement.
    let mut body = anthropic_judge_request("fine");
    body["stream"] = json!(true);
    let stream = events(messages(&body).send(&judge(MockKind::Anthropic)).await).await;
    let start = stream.iter().find(|e| e.name.as_deref() == Some("content_block_start")).unwrap();
    assert_eq!(start.data["content_block"]["name"], "judgement");
    let partial: String = stream
        .iter()
        .filter(|e| e.name.as_deref() == Some("content_block_delta"))
        .map(|e| e.data["delta"]["partial_json"].as_str().unwrap())
        .collect();
    let judgement: Value = serde_json::from_str(&partial).unwrap();
    assert_eq!(judgement["score"], json!(0.0));
    let delta = stream.iter().find(|e| e.name.as_deref() == Some("message_delta")).unwrap();
    assert_eq!(delta.data["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta.data["usage"]["output_tokens"], words(&partial));
}

#[tokio::test]
async fn other_routes_and_knobs_still_apply() {
    let settings = MockSettings { answer: Some("plain text".to_owned()), ..judge(MockKind::OpenAi) };
    // Judge mode wins over `answer` on the chat routes ...
    let (_, v) = json(post("/v1/chat/completions", &judge_request("good")).send(&settings).await).await;
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(serde_json::from_str::<Value>(content).is_ok(), "{content}");
    // ... the Responses API is no judge, and records nothing.
    let (_, v) = json(post("/v1/responses", &json!({"model": "m", "input": "good"})).send(&settings).await).await;
    assert_eq!(v["output"][0]["content"][0]["text"], "plain text");
    assert_eq!(settings.judge_log.requests().len(), 1);
    // Injected errors still apply.
    let failing = MockSettings { error_rate: 1.0, error_status: 503, ..judge(MockKind::OpenAi) };
    let response = post("/v1/chat/completions", &judge_request("good")).send(&failing).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failing.judge_log.requests().len(), 1, "received, then failed");
}

/// One HTTP/1.1 exchange: status and body.
async fn http(addr: std::net::SocketAddr, head: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{head}\r\nhost: mock\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

#[tokio::test]
async fn the_log_records_what_the_judge_received() {
    for kind in [MockKind::OpenAi, MockKind::Anthropic] {
        let settings = Arc::new(judge(kind));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::serve(listener, Arc::clone(&settings), async {
            let _ = stopped.await;
        }));

        let (body, head) = match kind {
            MockKind::Anthropic => (
                anthropic_judge_request("good"),
                "POST /v1/messages HTTP/1.1\r\nx-api-key: k\r\nanthropic-version: 2023-06-01",
            ),
            _ => (judge_request("good"), "POST /v1/chat/completions HTTP/1.1"),
        };
        let sent = serde_json::to_string(&body).unwrap();
        let (status, _) = http(addr, head, &sent).await;
        assert_eq!(status, 200, "{kind:?}");
        let (status, _) = http(addr, head, "{\"model\":").await;
        assert_eq!(status, 400, "{kind:?}");

        let recorded = settings.judge_log.requests();
        assert_eq!(recorded, [body.clone(), Value::String("{\"model\":".to_owned())], "{kind:?}");
        let (status, served) = http(addr, "GET /mock/judge/requests HTTP/1.1", "").await;
        assert_eq!(status, 200);
        assert_eq!(serde_json::from_str::<Value>(&served).unwrap(), Value::Array(recorded), "{kind:?}");

        settings.judge_log.clear();
        let (_, served) = http(addr, "GET /mock/judge/requests HTTP/1.1", "").await;
        assert_eq!(served, "[]");
        let (status, _) = http(addr, "POST /mock/judge/requests HTTP/1.1", "").await;
        assert_eq!(status, 405);

        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }

    // Not in judge mode: nothing recorded, the route still answers.
    let plain = MockSettings::default();
    post("/v1/chat/completions", &judge_request("good")).send(&plain).await;
    assert!(plain.judge_log.requests().is_empty());
}

#[test]
fn clones_share_the_log() {
    let settings = judge(MockKind::OpenAi);
    let clone = settings.clone();
    clone.judge_log.record(b"{\"a\":1}");
    assert_eq!(settings.judge_log.requests(), [json!({"a": 1})]);
}
