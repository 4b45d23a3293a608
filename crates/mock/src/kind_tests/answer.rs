//! The `answer` knob: a fixed text instead of `mock0 mock1 ...`, on every generating route.

use http::StatusCode;
use serde_json::{json, Value};

use super::{chat_body, events, json, messages, post, settings, MockKind, MockSettings};

const TEXT: &str = "  Hello,  world\n again ";

fn ask(extra: Value) -> Value {
    chat_body(json!([{"role": "user", "content": "say something"}]), extra)
}

fn anthropic_ask(extra: Value) -> Value {
    let mut body =
        json!({"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "say something"}]});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

fn with_answer(text: &str) -> MockSettings {
    MockSettings { answer: Some(text.to_owned()), ..MockSettings::default() }
}

#[tokio::test]
async fn openai_whole_answer_is_the_text() {
    let (status, v) = json(post("/v1/chat/completions", &ask(json!({}))).send(&with_answer(TEXT)).await).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], TEXT);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["usage"]["prompt_tokens"], 2);

    // The header overrides the process-wide text, percent-decoded, and `chunks` is ignored.
    let req = post("/v1/chat/completions", &ask(json!({})))
        .header("x-mock-answer", "Caf%C3%A9 is  good%0Anews+100%25")
        .header("x-mock-chunks", "1");
    let (_, v) = json(req.send(&with_answer(TEXT)).await).await;
    assert_eq!(v["choices"][0]["message"]["content"], "Caf\u{e9} is  good\nnews+100%");
    assert_eq!(v["usage"]["completion_tokens"], 4);

    // The query too, where `+` is a space.
    let req = post("/v1/chat/completions", &ask(json!({}))).query("answer=a+b%2Bc");
    let (_, v) = json(req.to(MockKind::OpenAi).await).await;
    assert_eq!(v["choices"][0]["message"]["content"], "a b+c");
    assert_eq!(v["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn openai_stream_deltas_join_into_the_text() {
    let body = ask(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let chunks =
        events(post("/v1/chat/completions", &body).header("x-mock-chunks", "7").send(&with_answer(TEXT)).await).await;
    let deltas: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c.data["choices"][0]["delta"]["content"].as_str())
        .filter(|d| !d.is_empty())
        .collect();
    assert_eq!(deltas, ["  Hello,  ", "world\n ", "again "], "a piece per word, ending after its whitespace");
    assert_eq!(deltas.concat(), TEXT);
    let n = chunks.len();
    assert_eq!(chunks[n - 3].data["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[n - 2].data["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn max_tokens_cuts_the_text() {
    let (_, v) =
        json(post("/v1/chat/completions", &ask(json!({"max_tokens": 2}))).send(&with_answer(TEXT)).await).await;
    assert_eq!(v["choices"][0]["message"]["content"], "  Hello,  world");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 2);

    // Exactly as many words as allowed: whole, finish stop.
    let (_, v) =
        json(post("/v1/chat/completions", &ask(json!({"max_completion_tokens": 3}))).send(&with_answer(TEXT)).await)
            .await;
    assert_eq!(v["choices"][0]["message"]["content"], TEXT);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    let anthropic = MockSettings { answer: Some(TEXT.to_owned()), ..settings(MockKind::Anthropic) };
    let (_, v) = json(messages(&anthropic_ask(json!({"max_tokens": 1}))).send(&anthropic).await).await;
    assert_eq!(v["content"], json!([{"type": "text", "text": "  Hello,"}]));
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 1);
}

#[tokio::test]
async fn anthropic_whole_and_streamed() {
    let anthropic = MockSettings { answer: Some("unused".to_owned()), ..settings(MockKind::Anthropic) };
    let req = messages(&anthropic_ask(json!({}))).header("x-mock-answer", "Bonjour%2C%20le monde");
    let (status, v) = json(req.send(&anthropic).await).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["content"], json!([{"type": "text", "text": "Bonjour, le monde"}]));
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["output_tokens"], 3);

    let anthropic = MockSettings { answer: Some(TEXT.to_owned()), ..settings(MockKind::Anthropic) };
    let stream = events(messages(&anthropic_ask(json!({"stream": true}))).send(&anthropic).await).await;
    let deltas: Vec<&str> = stream
        .iter()
        .filter(|e| e.name.as_deref() == Some("content_block_delta"))
        .map(|e| e.data["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, ["  Hello,  ", "world\n ", "again "]);
    assert_eq!(deltas.concat(), TEXT);
    let delta = stream.iter().find(|e| e.name.as_deref() == Some("message_delta")).unwrap();
    assert_eq!(delta.data["usage"]["output_tokens"], 3);
    assert_eq!(delta.data["delta"]["stop_reason"], "end_turn");
}

#[tokio::test]
async fn responses_and_legacy_completions_answer_the_text() {
    let settings = with_answer(TEXT);
    let (_, v) = json(post("/v1/responses", &json!({"model": "m", "input": "hi"})).send(&settings).await).await;
    assert_eq!(v["output"][0]["content"][0]["text"], TEXT);
    assert_eq!(v["usage"]["output_tokens"], 3);

    let stream =
        events(post("/v1/responses", &json!({"model": "m", "input": "hi", "stream": true})).send(&settings).await)
            .await;
    let text: String = stream
        .iter()
        .filter(|e| e.name.as_deref() == Some("response.output_text.delta"))
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, TEXT);

    let (_, v) = json(post("/v1/completions", &json!({"model": "m", "prompt": "hi"})).send(&settings).await).await;
    assert_eq!(v["choices"][0]["text"], TEXT);
    assert_eq!(v["usage"]["completion_tokens"], 3);

    let body = json!({"model": "m", "prompt": "hi", "stream": true});
    let stream = events(post("/v1/completions", &body).header("x-mock-answer", "one two").send(&settings).await).await;
    let pieces: Vec<&str> =
        stream.iter().filter_map(|e| e.data["choices"][0]["text"].as_str()).filter(|t| !t.is_empty()).collect();
    assert_eq!(pieces, ["one ", "two"]);
}

#[tokio::test]
async fn tools_and_structured_output_are_unchanged() {
    let tools = json!([{"type": "function", "function": {"name": "now"}}]);
    let (_, v) = json(post("/v1/chat/completions", &ask(json!({"tools": tools}))).send(&with_answer(TEXT)).await).await;
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert!(v["choices"][0]["message"]["content"].is_null(), "{v}");

    let format = json!({"type": "json_object"});
    let (_, v) =
        json(post("/v1/chat/completions", &ask(json!({"response_format": format}))).send(&with_answer(TEXT)).await)
            .await;
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(serde_json::from_str::<Value>(content).is_ok(), "{content}");
}

#[tokio::test]
async fn bad_answer_values_are_400() {
    let req = post("/v1/chat/completions", &ask(json!({}))).header("x-mock-answer", "100% sure");
    let (status, v) = json(req.to(MockKind::OpenAi).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["param"], "x-mock-answer", "{v}");

    let req = post("/v1/chat/completions", &ask(json!({}))).query("answer=%FF");
    let (status, v) = json(req.to(MockKind::OpenAi).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["param"], "answer", "{v}");

    let big = "a".repeat(crate::MAX_ANSWER + 1);
    let req = post("/v1/chat/completions", &ask(json!({}))).header("x-mock-answer", &big);
    assert_eq!(req.to(MockKind::OpenAi).await.status(), StatusCode::BAD_REQUEST);
    let fits = "a".repeat(crate::MAX_ANSWER);
    let req = post("/v1/chat/completions", &ask(json!({}))).header("x-mock-answer", &fits);
    assert_eq!(req.to(MockKind::OpenAi).await.status(), StatusCode::OK);
}
