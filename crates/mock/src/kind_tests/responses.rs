//! The Responses API on the `openai` and `azure` kinds.

use http::StatusCode;
use serde_json::{json, Value};

use super::{azure, events, json, post, MockKind};

fn request(extra: Value) -> Value {
    let mut body = json!({
        "model": "gpt-r",
        "instructions": "be brief",
        "input": [
            {"role": "user", "content": "what is up"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "not much"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "really?"}]}
        ]
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

#[tokio::test]
async fn whole_response() {
    let req = post("/v1/responses", &request(json!({}))).header("x-mock-chunks", "3");
    let (status, v) = json(req.to(MockKind::OpenAi).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["id"], "resp_mock_1");
    assert_eq!(v["object"], "response");
    assert!(v["created_at"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "gpt-r");
    assert_eq!(
        v["output"],
        json!([{"type": "message", "id": "msg_mock_1", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "mock0 mock1 mock2", "annotations": []}]}])
    );
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 8, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 11})
    );

    let (_, v) =
        json(post("/v1/responses", &json!({"model": "m", "input": "one two"})).to(MockKind::OpenAi).await).await;
    assert_eq!(v["usage"]["input_tokens"], 2);

    let (status, v) = json(post("/v1/responses", &json!({"input": "x"})).to(MockKind::OpenAi).await).await;
    assert_eq!((status, v["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("model")));
}

#[tokio::test]
async fn streamed_events() {
    let req = post("/v1/responses", &request(json!({"stream": true}))).header("x-mock-chunks", "2");
    let events = events(req.to(MockKind::OpenAi).await).await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.data["type"], event.name.as_deref().unwrap());
        assert_eq!(event.data["sequence_number"], i, "{}", event.raw);
    }
    let created = &events[0].data["response"];
    assert_eq!((created["status"].as_str(), created["model"].as_str()), (Some("in_progress"), Some("gpt-r")));
    assert_eq!(created["output"], json!([]));
    let delta = &events[4].data;
    assert_eq!(
        (delta["item_id"].as_str(), delta["output_index"].as_u64(), delta["content_index"].as_u64()),
        (Some("msg_mock_1"), Some(0), Some(0))
    );
    let text: String = events[4..6].iter().map(|e| e.data["delta"].as_str().unwrap().to_owned()).collect();
    assert_eq!(text, "mock0 mock1");
    assert_eq!(events[6].data["text"], text);
    assert_eq!(events[7].data["part"]["text"], text);
    assert_eq!(events[8].data["item"]["status"], "completed");
    let done = &events[9].data["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], text);
    assert_eq!(done["usage"]["output_tokens"], 2);
    assert_eq!(done["usage"]["input_tokens"], 8);
}

#[tokio::test]
async fn scripts_and_azure_path() {
    let stream = request(json!({"stream": true}));
    let events_for = |script: &'static str| {
        let req = azure("/openai/v1/responses", &stream).header("x-mock-script", script);
        async move { events(req.to(MockKind::Azure).await).await }
    };

    let truncated = events_for("truncate").await;
    assert!(truncated.iter().all(|e| e.data["type"] != "response.completed"));
    assert_eq!(truncated.iter().filter(|e| e.data["type"] == "response.output_text.delta").count(), 2);

    let incomplete = events_for("incomplete").await;
    let last = incomplete.last().unwrap();
    assert_eq!(last.name.as_deref(), Some("response.incomplete"));
    assert_eq!(last.data["response"]["status"], "incomplete");
    assert_eq!(last.data["response"]["incomplete_details"]["reason"], "max_output_tokens");
    assert!(last.data["response"]["usage"]["output_tokens"].as_u64().unwrap() > 0);

    let failed = events_for("mid_stream_error").await;
    let last = failed.last().unwrap();
    assert_eq!(last.name.as_deref(), Some("error"));
    assert_eq!(last.data["code"], "server_error");

    let (status, v) = json(azure("/openai/v1/responses", &request(json!({}))).to(MockKind::Azure).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["model"], "gpt-r");
    assert_eq!(
        post("/openai/v1/responses", &request(json!({}))).to(MockKind::Azure).await.status(),
        StatusCode::UNAUTHORIZED
    );
}
