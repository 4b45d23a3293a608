//! The `azure` kind: paths, `api-key`, content filter results whole and streamed.

use http::StatusCode;
use serde_json::{json, Value};

use super::{azure, chat_body, events, json, post, MockKind};

const DEPLOYMENT: &str = "/openai/deployments/my-gpt/chat/completions";

fn hello(extra: Value) -> Value {
    chat_body(json!([{"role": "user", "content": "hello there"}]), extra)
}

#[tokio::test]
async fn paths_and_headers() {
    let body = hello(json!({}));
    let (status, v) = json(azure(DEPLOYMENT, &body).query("api-version=2024-10-21").to(MockKind::Azure).await).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["model"], "my-gpt", "the deployment, not the body's model");

    let (status, v) = json(azure(DEPLOYMENT, &body).to(MockKind::Azure).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v, json!({"error": {"code": "404", "message": "Resource not found"}}));

    let (status, v) = json(azure("/openai/v1/chat/completions", &body).to(MockKind::Azure).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["model"], "gpt-x");

    let (status, v) = json(post("/openai/v1/chat/completions", &body).to(MockKind::Azure).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["code"], "401");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("Access denied due to invalid subscription key"));

    let leaked = azure("/openai/v1/chat/completions", &body).header("authorization", "Bearer sk-client");
    let (status, v) = json(leaked.to(MockKind::Azure).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("authorization"));

    let (status, v) =
        json(azure("/openai/v1/chat/completions", &json!({"messages": []})).to(MockKind::Azure).await).await;
    assert_eq!((status, v["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("model")));
}

#[tokio::test]
async fn whole_answer_has_filter_results() {
    let req = azure(DEPLOYMENT, &hello(json!({}))).query("api-version=2024-10-21&chunks=2");
    let (_, v) = json(req.to(MockKind::Azure).await).await;
    assert_eq!(v["choices"][0]["message"]["content"], "mock0 mock1");
    assert_eq!(v["choices"][0]["content_filter_results"]["hate"], json!({"filtered": false, "severity": "safe"}));
    assert_eq!(v["prompt_filter_results"][0]["prompt_index"], 0);
    assert_eq!(v["prompt_filter_results"][0]["content_filter_results"]["jailbreak"]["detected"], false);
    assert_eq!(v["usage"]["prompt_tokens"], 2);
}

#[tokio::test]
async fn stream_has_filter_chunks() {
    let body = hello(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let req = azure(DEPLOYMENT, &body).query("api-version=2024-10-21").header("x-mock-chunks", "2");
    let chunks = events(req.to(MockKind::Azure).await).await;
    // prompt filter, role, 2 content, finish, answer filter, usage, [DONE]
    assert_eq!(chunks.len(), 8, "{chunks:?}");
    let first = &chunks[0].data;
    assert_eq!(first["choices"], json!([]));
    assert_eq!(
        (first["id"].as_str(), first["model"].as_str(), first["created"].as_u64()),
        (Some(""), Some(""), Some(0))
    );
    assert!(first["prompt_filter_results"][0]["content_filter_results"].is_object());
    assert_eq!(chunks[1].data["choices"][0]["delta"]["role"], "assistant");
    for content in &chunks[2..4] {
        let choice = &content.data["choices"][0];
        assert!(choice["delta"]["content"].as_str().is_some());
        assert_eq!(choice["content_filter_results"]["violence"]["filtered"], false);
        assert_eq!(content.data["model"], "my-gpt");
    }
    assert_eq!(chunks[4].data["choices"][0]["finish_reason"], "stop");
    let filter = &chunks[5].data["choices"][0];
    assert!(filter["finish_reason"].is_null());
    assert_eq!(filter["delta"], json!({}));
    assert!(filter["content_filter_results"]["sexual"].is_object());
    assert_eq!(filter["content_filter_offsets"]["end_offset"], "mock0 mock1".len());
    assert_eq!(chunks[6].data["choices"], json!([]));
    assert_eq!(chunks[6].data["usage"]["completion_tokens"], 2);
    assert!(chunks[7].data.is_null());
}

#[tokio::test]
async fn scripts() {
    let req = azure("/openai/v1/chat/completions", &hello(json!({}))).header("x-mock-script", "content_filter");
    let (status, v) = json(req.to(MockKind::Azure).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "content_filter");
    assert_eq!(v["error"]["innererror"]["code"], "ResponsibleAIPolicyViolation");
    assert_eq!(
        v["error"]["innererror"]["content_filter_result"]["hate"],
        json!({"filtered": true, "severity": "high"})
    );

    let req = azure("/openai/v1/chat/completions", &hello(json!({}))).header("x-mock-script", "rate_limited");
    let response = req.to(MockKind::Azure).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(json(response).await.1["error"]["code"], "429");

    let req = azure("/openai/v1/chat/completions", &hello(json!({}))).header("x-mock-script", "overloaded");
    let (status, v) = json(req.to(MockKind::Azure).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["error"]["type"], "server_error");

    let stream = hello(json!({"stream": true}));
    let req = azure("/openai/v1/chat/completions", &stream).header("x-mock-script", "mid_stream_error");
    let chunks = events(req.to(MockKind::Azure).await).await;
    assert!(chunks.last().unwrap().data["error"].is_object());
    let contents = chunks
        .iter()
        .filter(|c| c.data["choices"][0]["delta"]["content"].as_str().is_some_and(|s| !s.is_empty()))
        .count();
    assert_eq!(contents, 2);
}
