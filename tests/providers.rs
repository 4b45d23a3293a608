//! Provider kinds end to end against scripted upstreams: what each kind sends (URL,
//! credentials, translated body) and what the app gets back (always OpenAI's shape), with
//! the metrics and usage each variation records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// An Anthropic SSE event.
fn anth(kind: &str, data: Value) -> Step {
    Step::Send(format!("event: {kind}\ndata: {data}\n\n"))
}

const ANTHROPIC_MESSAGE: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"Let me check."},{"type":"tool_use","id":"toolu_1","name":"weather","input":{"city":"Paris"}},{"type":"text","text":" Done."}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":7,"cache_read_input_tokens":5,"cache_creation_input_tokens":1}}"#;

/// An Anthropic stream: text, then a tool call, with pings; usage 12 in (3 cached), 9 out.
fn anthropic_stream() -> Vec<Step> {
    vec![
        anth(
            "message_start",
            json!({"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"usage":{"input_tokens":9,"cache_read_input_tokens":3,"output_tokens":1}}}),
        ),
        anth("ping", json!({"type":"ping"})),
        anth(
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        anth(
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Héllo"}}),
        ),
        anth("content_block_stop", json!({"type":"content_block_stop","index":0})),
        anth(
            "content_block_start",
            json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_9","name":"weather","input":{}}}),
        ),
        anth(
            "content_block_delta",
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}),
        ),
        anth(
            "content_block_delta",
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}),
        ),
        anth("content_block_stop", json!({"type":"content_block_stop","index":1})),
        anth(
            "message_delta",
            json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}),
        ),
        anth("message_stop", json!({"type":"message_stop"})),
    ]
}

/// What the scripted Anthropic API answers, by the request's `x-test`.
fn anthropic_api(r: &Recorded) -> Reply {
    let stream = r.json()["stream"].as_bool() == Some(true);
    let test = r.headers.get("x-test").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let error = |status: u16, kind: &str, message: &str| Reply::Raw {
        status,
        headers: vec![("content-type", "application/json".into()), ("retry-after", "3".into())],
        body: json!({"type":"error","error":{"type":kind,"message":message}}).to_string(),
    };
    match test.as_str() {
        "529" => error(529, "overloaded_error", "Overloaded"),
        "429" => error(429, "rate_limit_error", "Number of request tokens has exceeded your rate limit"),
        "401" => error(401, "authentication_error", "invalid x-api-key"),
        "400" => error(400, "invalid_request_error", "messages.0: text content blocks must be non-empty"),
        "500" => error(500, "api_error", "Internal server error"),
        "error_event" => Reply::Sse(vec![
            anthropic_stream()[0].clone(),
            anthropic_stream()[2].clone(),
            anthropic_stream()[3].clone(),
            anth("error", json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})),
        ]),
        "eof" => Reply::Sse(anthropic_stream()[..4].to_vec()),
        _ if stream => Reply::Sse(anthropic_stream()),
        _ => Reply::Raw {
            status: 200,
            headers: vec![
                ("content-type", "application/json".into()),
                ("anthropic-ratelimit-requests-remaining", "9".into()),
            ],
            body: ANTHROPIC_MESSAGE.into(),
        },
    }
}

fn providers_config(anthropic: &str, other: &str) -> String {
    format!(
        r#"
listen: {{data: "127.0.0.1:0", admin: "127.0.0.1:0"}}
clients:
  app: {{key: {KEY}}}
providers:
  claude:
    kind: anthropic
    base_url: {anthropic}
    api_key: {PROVIDER_KEY}
    max_tokens: 256
    timeouts: {{connect: 1s, first_byte: 2s, idle: 2s}}
  az:
    kind: azure_openai
    base_url: {other}
    api_version: 2024-10-21
    api_key: {PROVIDER_KEY}
  quirky:
    kind: openai
    base_url: {other}/v1
    quirks: {{stream_options: false, drop_params: [seed], fill_tool_call_index: true}}
  up:
    kind: openai
    base_url: {other}/v1
    api_key: {PROVIDER_KEY}
ai_configs:
  assistant:
    versions:
      - {{version: 1, provider: up, model: gpt-x, parameters: {{max_tokens: 64}}}}
      - {{version: 2, provider: claude, model: claude-x}}
flags:
  assistant:
    variations:
      - {{name: control, ai_config: assistant, version: 1}}
      - {{name: candidate, ai_config: assistant, version: 2}}
    targets:
      - {{variation: candidate, values: [u-claude]}}
    fallthrough: {{variation: control}}
    endpoints: [chat_completions]
"#
    )
}

async fn anthropic_upstream() -> Upstream {
    Upstream::start(Reply::PerRequest(Arc::new(anthropic_api))).await
}

async fn setup() -> (Upstream, Upstream, Running) {
    let anthropic = anthropic_upstream().await;
    let other = Upstream::start(Reply::PerRequest(Arc::new(|r: &Recorded| {
        if r.json()["stream"].as_bool() == Some(true) {
            Reply::Sse(openai_stream(r, &["a", "b"]))
        } else {
            json_reply(CHAT_RESPONSE)
        }
    })))
    .await;
    let gw = gateway(&providers_config(&anthropic.base_url(), &format!("http://{}", other.addr))).await;
    (anthropic, other, gw)
}

fn tool_request(model: &str, extra: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let body = format!(
        r#"{{"model":"{model}","messages":[{{"role":"system","content":"Be brief."}},{{"role":"user","content":"Weather in Paris?"}}],"tools":[{{"type":"function","function":{{"name":"weather","parameters":{{"type":"object","properties":{{"city":{{"type":"string"}}}},"required":["city"]}}}}}}],"user":"someone@example.com"{extra}}}"#
    );
    post("/v1/chat/completions", Some(KEY), &body)
}

#[tokio::test]
async fn anthropic_requests_are_translated_and_answers_come_back_in_openai_shape() {
    let (anthropic, _other, gw) = setup().await;
    let mut req = tool_request("claude/claude-x", "");
    req.headers_mut().insert("x-api-key", "sk-the-apps-own".parse().unwrap());
    let a = send(gw.data_addr, req).await;
    assert_eq!(a.status, 200, "{}", a.text());

    let r = anthropic.last();
    assert_eq!(r.path_and_query, "/v1/messages");
    assert_eq!(r.headers["x-api-key"], PROVIDER_KEY, "the provider's key, never the app's");
    assert_eq!(r.headers["anthropic-version"], "2023-06-01");
    assert!(r.headers.get("authorization").is_none(), "the app's own key never travels upstream");
    let sent = r.json();
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["max_tokens"], 256, "the provider's default max_tokens");
    assert_eq!(sent["messages"], json!([{"role":"user","content":[{"type":"text","text":"Weather in Paris?"}]}]));
    assert_eq!(sent["tools"][0]["name"], "weather");
    assert_eq!(sent["tools"][0]["input_schema"]["required"], json!(["city"]));
    let user_id = sent["metadata"]["user_id"].as_str().unwrap();
    assert_eq!(user_id.len(), 64, "a SHA-256 hex digest");
    assert!(!r.body.windows(7).any(|w| w == b"example"), "the e-mail address never leaves");

    let body = a.json();
    assert_eq!(body["object"], "chat.completion");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Let me check. Done.");
    assert_eq!(choice["message"]["tool_calls"][0]["function"]["name"], "weather");
    let args: Value =
        serde_json::from_str(choice["message"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city":"Paris"}));
    assert_eq!(body["usage"]["prompt_tokens"], 16, "cache reads and writes are prompt tokens");
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 5);
    assert_eq!(body["usage"]["completion_tokens"], 7);
    assert!(a.headers.get("anthropic-ratelimit-requests-remaining").is_none(), "no provider vocabulary");
    gw.shutdown().await;
}

/// The `data:` JSON events of an SSE body (without `[DONE]`), and whether it ended with `[DONE]`.
fn events(text: &str) -> (Vec<Value>, bool) {
    let datas: Vec<&str> =
        text.split("\n\n").filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: "))).collect();
    let done = datas.last() == Some(&"[DONE]");
    (datas.iter().filter(|d| **d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect(), done)
}

#[tokio::test]
async fn a_flag_serves_openai_and_anthropic_variations_with_exact_metrics() {
    let (_anthropic, _other, gw) = setup().await;
    for (user, expect_role_model) in [("u-claude", "claude-x"), ("u-other", "m")] {
        for usage in [false, true] {
            let extra = format!(
                r#","user":"{user}","stream":true{}"#,
                if usage { r#","stream_options":{"include_usage":true}"# } else { "" }
            );
            let a = send(gw.data_addr, tool_request("assistant", &extra)).await;
            assert_eq!(a.status, 200, "{}", a.text());
            assert_eq!(a.header("content-type"), "text/event-stream");
            let (chunks, done) = events(&a.text());
            assert!(done, "ends with [DONE]: {}", a.text());
            assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
            assert_eq!(chunks[0]["model"], expect_role_model);
            assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
            let usage_chunks: Vec<&Value> = chunks.iter().filter(|c| !c["usage"].is_null()).collect();
            assert_eq!(usage_chunks.len(), usize::from(usage), "a usage chunk only when asked for: {}", a.text());
            if usage && user == "u-claude" {
                assert_eq!(usage_chunks[0]["usage"]["prompt_tokens"], 12);
                assert_eq!(usage_chunks[0]["usage"]["completion_tokens"], 9, "cumulative output, set not added");
                assert_eq!(usage_chunks[0]["choices"], json!([]));
            }
            if user == "u-claude" {
                let tool: Vec<&Value> =
                    chunks.iter().filter(|c| !c["choices"][0]["delta"]["tool_calls"].is_null()).collect();
                assert_eq!(tool[0]["choices"][0]["delta"]["tool_calls"][0]["index"], 0, "counted among tool blocks");
                assert_eq!(tool[0]["choices"][0]["delta"]["tool_calls"][0]["id"], "toolu_9");
                let args: String = tool
                    .iter()
                    .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
                    .collect();
                assert_eq!(args, r#"{"city":"Paris"}"#, "no {{}} placeholder prefix");
                let finish: Vec<&Value> =
                    chunks.iter().filter(|c| !c["choices"][0]["finish_reason"].is_null()).collect();
                assert_eq!(finish[0]["choices"][0]["finish_reason"], "tool_calls");
            }
        }
    }
    let samples = parse(&scrape(&gw).await);
    let variation = |v: &str, name: &str, extra: &[(&str, &str)]| {
        let mut with = vec![("flag", "assistant"), ("variation", v)];
        with.extend_from_slice(extra);
        sum(&samples, name, &with)
    };
    assert_eq!(variation("candidate", "sluice_requests_total", &[("outcome", "ok"), ("provider", "claude")]), 2.0);
    assert_eq!(variation("control", "sluice_requests_total", &[("outcome", "ok"), ("provider", "up")]), 2.0);
    // Usage is exact on both, whether or not the app asked for it.
    assert_eq!(variation("candidate", "sluice_tokens_total", &[("kind", "input")]), 24.0);
    assert_eq!(variation("candidate", "sluice_tokens_total", &[("kind", "output")]), 18.0);
    let (p, c) = STREAM_USAGE;
    assert_eq!(variation("control", "sluice_tokens_total", &[("kind", "input")]), 2.0 * p as f64);
    assert_eq!(variation("control", "sluice_tokens_total", &[("kind", "output")]), 2.0 * c as f64);
    for v in ["candidate", "control"] {
        assert_eq!(variation(v, "sluice_time_to_first_token_seconds_count", &[]), 2.0, "{v}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn anthropic_errors_become_openai_errors_with_the_right_status() {
    let (anthropic, _other, gw) = setup().await;
    for (test, status, code) in [
        ("529", 503, "upstream_overloaded"),
        ("429", 429, "rate_limit_exceeded"),
        ("401", 502, "upstream_misconfigured"),
        ("400", 400, "invalid_request"),
        ("500", 502, "upstream_error"),
    ] {
        for stream in [false, true] {
            let req = chat("claude/claude-x", &[("x-test", test)], &format!(r#","stream":{stream}"#));
            let a = send(gw.data_addr, req).await;
            assert_eq!(a.status, status, "{test}: {}", a.text());
            assert_eq!(a.error_code(), code, "{test}");
            assert_eq!(a.json()["error"]["param"], Value::Null);
            if matches!(test, "529" | "429") {
                assert_eq!(a.header("retry-after"), "3", "{test}: retry-after is kept");
            }
            assert!(!a.text().contains("x-api-key"), "the app never hears about the provider's key");
        }
    }
    // Refused before anything is sent: the app's request does not fit Anthropic.
    let calls = anthropic.calls.load(std::sync::atomic::Ordering::SeqCst);
    let a = send(gw.data_addr, chat("claude/claude-x", &[], r#","n":2"#)).await;
    assert_eq!((a.status.as_u16(), a.json()["error"]["param"].as_str()), (400, Some("n")), "{}", a.text());
    assert_eq!(anthropic.calls.load(std::sync::atomic::Ordering::SeqCst), calls, "nothing was sent");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_anthropic_stream_that_breaks_ends_with_an_error_event_and_counts_as_an_error() {
    let (_anthropic, _other, gw) = setup().await;
    for test in ["error_event", "eof"] {
        let req = chat("assistant", &[("x-test", test)], r#","user":"u-claude","stream":true"#);
        let a = send(gw.data_addr, req).await;
        assert_eq!(a.status, 200, "the head was already sent");
        let (chunks, done) = events(&a.text());
        assert!(!done, "{test}: no [DONE] after an error");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Héllo");
        assert!(chunks.last().unwrap()["error"]["message"].is_string(), "{test}: {}", a.text());
    }
    let samples = parse(&scrape(&gw).await);
    let errors = sum(
        &samples,
        "sluice_requests_total",
        &[("flag", "assistant"), ("variation", "candidate"), ("outcome", "upstream_error")],
    );
    assert_eq!(errors, 2.0, "both count as errors of the variation");
    gw.shutdown().await;
}

#[tokio::test]
async fn azure_gets_its_url_and_key_and_answers_are_normalised() {
    const ANNOTATION: &str = r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}"#;
    let filter = r#""content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}"#;
    let chunk = |delta: &str, finish: &str| {
        format!(
            r#"{{"id":"c1","object":"chat.completion.chunk","created":1,"model":"dep","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish},{filter}}}]}}"#
        )
    };
    let steps = vec![
        event(ANNOTATION),
        event(&chunk(r#"{"role":"assistant","content":""}"#, "null")),
        event(&chunk(r#"{"content":"Hi"}"#, "null")),
        event(&chunk(r#"{}"#, r#""stop""#)),
        event(&format!(
            r#"{{"id":"c1","object":"chat.completion.chunk","created":1,"model":"dep","choices":[{{"index":0,"finish_reason":null,"delta":{{}},{filter},"content_filter_offsets":{{"check_offset":0,"start_offset":0,"end_offset":2}}}}]}}"#
        )),
        Step::Send("data: [DONE]\n\n".into()),
    ];
    let azure = Upstream::start(Reply::PerRequest(Arc::new(move |r: &Recorded| {
        if r.headers.contains_key("x-break") {
            return Reply::Sse(vec![event(ANNOTATION), Step::Wait(Duration::from_millis(50)), Step::Break]);
        }
        if r.headers.contains_key("x-missing") {
            return Reply::Json {
                status: 404,
                body: r#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#.into(),
                delay: Duration::ZERO,
            };
        }
        if r.headers.contains_key("x-filter") {
            return Reply::Json {
                status: 400,
                body: r#"{"error":{"code":"content_filter","message":"The response was filtered","param":"prompt","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation"}}}"#.into(),
                delay: Duration::ZERO,
            };
        }
        Reply::Sse(steps.clone())
    })))
    .await;
    let gw = gateway(&providers_config("http://127.0.0.1:9/v1", &format!("http://{}", azure.addr))).await;
    let a = send(gw.data_addr, chat("az/gpt-4o-prod", &[], r#","stream":true"#)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = azure.last();
    assert_eq!(r.path_and_query, "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21");
    assert_eq!(r.headers["api-key"], PROVIDER_KEY);
    assert!(r.headers.get("authorization").is_none());
    let text = a.text();
    assert!(!text.contains("filter"), "annotations and filter-only chunks are dropped: {text}");
    let (chunks, done) = events(&text);
    assert!(done);
    assert_eq!(chunks.len(), 3, "role, content, finish: {text}");
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hi");

    let a = send(gw.data_addr, chat("az/gpt-4o-prod", &[("x-filter", "1")], "")).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (400, "content_filter"), "{}", a.text());
    assert_eq!(a.json()["error"]["param"], "prompt");
    // Azure's annotation is not the stream's first event: a break right after it is still
    // a failure before the first byte (a status, and a fallback when the flag has one).
    let a = send(gw.data_addr, chat("az/gpt-4o-prod", &[("x-break", "1")], r#","stream":true"#)).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (502, "upstream_stream_broken"), "{}", a.text());
    // A wrong deployment is the gateway's misconfiguration, never the app's 404.
    let a = send(gw.data_addr, chat("az/gone", &[("x-missing", "1")], "")).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (502, "upstream_misconfigured"), "{}", a.text());
    assert!(!a.text().contains("DeploymentNotFound"));
    gw.shutdown().await;
}

#[tokio::test]
async fn openai_quirks_drop_params_and_fill_tool_call_indexes() {
    let tool_chunk = |tc: &str| {
        event(&format!(
            r#"{{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{{"tool_calls":[{tc}]}},"finish_reason":null}}]}}"#
        ))
    };
    let steps = vec![
        tool_chunk(r#"{"id":"call_a","type":"function","function":{"name":"f","arguments":""}}"#),
        tool_chunk(r#"{"function":{"arguments":"{}"}}"#),
        tool_chunk(r#"{"id":"call_b","type":"function","function":{"name":"g","arguments":"{}"}}"#),
        Step::Send("data: [DONE]\n\n".into()),
    ];
    let up = Upstream::start(Reply::Sse(steps)).await;
    let gw = gateway(&providers_config("http://127.0.0.1:9/v1", &format!("http://{}", up.addr))).await;
    let req = chat(
        "quirky/m",
        &[("x-api-key", "sk-app-own"), ("api-key", "sk-app-own")],
        r#","stream":true,"seed":7,"stream_options":{"include_usage":true}"#,
    );
    let a = send(gw.data_addr, req).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let sent = up.last().json();
    assert!(sent.get("seed").is_none() && sent.get("stream_options").is_none(), "{sent}");
    assert_eq!(sent["model"], "m");
    let headers = up.last().headers;
    assert!(
        ["authorization", "x-api-key", "api-key"].iter().all(|h| headers.get(*h).is_none()),
        "no api_key: no credentials, and never the app's own: {headers:?}"
    );
    let (chunks, _) = events(&a.text());
    let indexes: Vec<u64> =
        chunks.iter().map(|c| c["choices"][0]["delta"]["tool_calls"][0]["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [0, 0, 1]);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_responses_api_is_routed_with_targeting_and_metrics() {
    let typed = |kind: &str, rest: &str| Step::Send(format!("event: {kind}\ndata: {{\"type\":\"{kind}\"{rest}}}\n\n"));
    let steps = vec![
        typed("response.created", r#","response":{"id":"resp_1","model":"gpt-x","status":"in_progress","output":[]}"#),
        typed("response.output_item.added", r#","output_index":0,"item":{"type":"message"}"#),
        typed("response.output_text.delta", r#","output_index":0,"content_index":0,"delta":"Hi""#),
        typed(
            "response.completed",
            r#","response":{"id":"resp_1","model":"gpt-x","status":"completed","usage":{"input_tokens":11,"output_tokens":4,"total_tokens":15}}"#,
        ),
    ];
    let up = Upstream::start(Reply::PerRequest(Arc::new(move |r: &Recorded| {
        if r.json()["stream"].as_bool() == Some(true) {
            Reply::Sse(steps.clone())
        } else {
            json_reply(r#"{"id":"resp_2","object":"response","status":"completed","model":"gpt-x","output":[],"usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}}"#)
        }
    })))
    .await;
    let yaml = must_replace(
        &providers_config("http://127.0.0.1:9/v1", &format!("http://{}", up.addr)),
        "    endpoints: [chat_completions]\n",
        "    endpoints: [chat_completions]\n  responder:\n    variations:\n      - {name: only, ai_config: assistant, version: 1}\n    fallthrough: {variation: only}\n",
    );
    let gw = gateway(&yaml).await;
    for stream in [true, false] {
        let body = format!(r#"{{"model":"responder","input":"hi","stream":{stream}}}"#);
        let a = send(gw.data_addr, post("/v1/responses", Some(KEY), &body)).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.header("x-sluice-variation"), "only");
        let r = up.last();
        assert_eq!(r.path_and_query, "/v1/responses");
        assert_eq!(r.json()["model"], "gpt-x", "the model is rewritten");
        assert_eq!(r.json()["max_output_tokens"], 64, "the version's max_tokens, as the Responses API names it");
        assert!(r.json().get("max_tokens").is_none());
        assert!(r.json().get("stream_options").is_none(), "the Responses API always reports usage");
    }
    // `assistant` has a variation on Anthropic, which has no Responses API.
    let a = send(gw.data_addr, post("/v1/responses", Some(KEY), r#"{"model":"assistant","input":"hi"}"#)).await;
    assert_eq!((a.status.as_u16(), a.json()["error"]["param"].as_str()), (400, Some("model")), "{}", a.text());
    let a = send(gw.data_addr, post("/v1/responses", Some(KEY), r#"{"model":"claude/claude-x","input":"hi"}"#)).await;
    assert_eq!(a.status, 400, "{}", a.text());

    let samples = parse(&scrape(&gw).await);
    let only = |name: &str, extra: &[(&str, &str)]| {
        let mut with = vec![("flag", "responder"), ("variation", "only")];
        with.extend_from_slice(extra);
        sum(&samples, name, &with)
    };
    assert_eq!(only("sluice_requests_total", &[("outcome", "ok")]), 2.0);
    assert_eq!(only("sluice_tokens_total", &[("kind", "input")]), 16.0);
    assert_eq!(only("sluice_tokens_total", &[("kind", "output")]), 6.0);
    assert_eq!(only("sluice_time_to_first_token_seconds_count", &[]), 1.0, "the stream's first output delta");
    gw.shutdown().await;
}

#[test]
fn check_refuses_what_cannot_work() {
    let check = |yaml: &str| match sluice::config::parse(yaml, "t.yaml", &|_| None) {
        Err(e) => e.to_string(),
        Ok(loaded) => match sluice::server::prepare(loaded) {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        },
    };
    let base = providers_config("http://127.0.0.1:9/v1", "http://127.0.0.1:9");
    assert_eq!(check(&base), "", "the base config is valid");

    let no_max = must_replace(&base, "    max_tokens: 256\n", "");
    assert!(check(&no_max).contains("needs `max_tokens`"), "{}", check(&no_max));

    let responses =
        must_replace(&base, "    endpoints: [chat_completions]\n", "    endpoints: [chat_completions, responses]\n");
    let err = check(&responses);
    assert!(err.contains("flags.assistant.endpoints[1]") && err.contains("does not serve /responses"), "{err}");
    // Variations on providers that serve different endpoints: the flag must say which it serves.
    let unsaid = must_replace(&base, "    endpoints: [chat_completions]\n", "");
    let err = check(&unsaid);
    assert!(err.contains("list the endpoints this flag serves, e.g. `endpoints: [chat_completions]`"), "{err}");

    let azure = must_replace(&base, "    api_version: 2024-10-21\n", "");
    assert!(check(&azure).contains("api-version"), "{}", check(&azure));

    let misplaced = must_replace(&base, "    max_tokens: 256\n", "    max_tokens: 256\n    api_version: x\n");
    assert!(check(&misplaced).contains("only an `azure_openai` provider takes `api_version`"), "{}", check(&misplaced));
}

#[tokio::test]
async fn quirk_switches_make_a_stricter_server_work() {
    use sluice_mock::{MockKind, MockSettings};
    let strict = mock_provider(MockSettings {
        kind: MockKind::OpenAi,
        reject_stream_options: true,
        omit_tool_call_index: true,
        ..MockSettings::default()
    })
    .await;
    let yaml = format!(
        r#"
listen: {{data: "127.0.0.1:0", admin: "127.0.0.1:0"}}
clients:
  app: {{key: {KEY}}}
providers:
  plain: {{kind: openai, base_url: "http://{strict}/v1"}}
  fixed:
    kind: openai
    base_url: http://{strict}/v1
    quirks: {{stream_options: false, fill_tool_call_index: true}}
"#
    );
    let gw = gateway(&yaml).await;
    let tools = r#","stream":true,"tools":[{"type":"function","function":{"name":"a","parameters":{"type":"object"}}},{"type":"function","function":{"name":"b","parameters":{"type":"object"}}}]"#;
    // Without the switch, the server refuses the `stream_options` sluice adds for usage.
    let a = send(gw.data_addr, chat("plain/m", &[], tools)).await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(a.json()["error"]["param"], "stream_options");

    let a = send(gw.data_addr, chat("fixed/m", &[], tools)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let (chunks, done) = events(&a.text());
    assert!(done);
    let mut names = std::collections::BTreeMap::new();
    for c in &chunks {
        for call in c["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().expect("every tool-call delta has an index");
            if let Some(name) = call["function"]["name"].as_str() {
                names.insert(index, name.to_string());
            }
        }
    }
    assert_eq!(names, std::collections::BTreeMap::from([(0, "a".to_string()), (1, "b".to_string())]));
    gw.shutdown().await;
}

#[tokio::test]
async fn azure_and_openai_mocks_serve_the_responses_api_alike() {
    use sluice_mock::{MockKind, MockSettings};
    let openai = mock_provider(MockSettings { kind: MockKind::OpenAi, ..MockSettings::default() }).await;
    let azure = mock_provider(MockSettings { kind: MockKind::Azure, ..MockSettings::default() }).await;
    let yaml = format!(
        r#"
listen: {{data: "127.0.0.1:0", admin: "127.0.0.1:0"}}
clients:
  app: {{key: {KEY}}}
providers:
  oa: {{kind: openai, base_url: "http://{openai}/v1"}}
  az: {{kind: azure_openai, base_url: "http://{azure}/openai/v1", api_key: k}}
"#
    );
    let gw = gateway(&yaml).await;
    let mut seen = Vec::new();
    for model in ["oa/gpt-x", "az/dep-x"] {
        for stream in [false, true] {
            let body = format!(r#"{{"model":"{model}","input":"Say hi","stream":{stream}}}"#);
            let a = send(gw.data_addr, post("/v1/responses", Some(KEY), &body)).await;
            assert_eq!(a.status, 200, "{model}: {}", a.text());
            let text = if stream {
                let (events, _) = events(&a.text());
                assert_eq!(events.last().unwrap()["type"], "response.completed");
                events.iter().filter_map(|e| e["delta"].as_str()).collect::<String>()
            } else {
                a.json()["output"][0]["content"][0]["text"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{model}: {}", a.text()))
                    .to_string()
            };
            seen.push(text);
        }
    }
    assert!(seen.iter().all(|t| t == &seen[0] && !t.is_empty()), "{seen:?}");
    let samples = parse(&scrape(&gw).await);
    for provider in ["oa", "az"] {
        let of = |kind: &str| sum(&samples, "sluice_tokens_total", &[("provider", provider), ("kind", kind)]);
        assert!(of("input") > 0.0 && of("output") > 0.0, "{provider}");
        assert_eq!(of("output"), sum(&samples, "sluice_tokens_total", &[("provider", "oa"), ("kind", "output")]));
        let ttft = sum(&samples, "sluice_time_to_first_token_seconds_count", &[("provider", provider)]);
        assert_eq!(ttft, 1.0, "{provider}: the stream's first output delta");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn anthropic_pings_keep_a_stream_alive_and_it_ends_at_message_stop() {
    // Pings 150 ms apart for 0.9 s with an idle timeout of 400 ms; then the upstream keeps
    // the connection open for 1 s after `message_stop`.
    let mut steps = anthropic_stream();
    let tail = steps.split_off(2);
    for _ in 0..6 {
        steps.push(Step::Wait(Duration::from_millis(150)));
        steps.push(anth("ping", json!({"type":"ping"})));
    }
    steps.extend(tail);
    steps.push(Step::Wait(Duration::from_secs(1)));
    let up = Upstream::start(Reply::Sse(steps)).await;
    let yaml = format!(
        r#"
listen: {{data: "127.0.0.1:0", admin: "127.0.0.1:0"}}
clients:
  app: {{key: {KEY}}}
providers:
  claude:
    kind: anthropic
    base_url: {}
    max_tokens: 100
    timeouts: {{first_byte: 2s, idle: 400ms}}
"#,
        up.base_url()
    );
    let gw = gateway(&yaml).await;
    let a = send(gw.data_addr, chat("claude/c", &[], r#","stream":true"#)).await;
    assert_eq!(a.status, 200);
    let (chunks, done) = events(&a.text());
    assert!(done, "{}", a.text());
    assert!(chunks.iter().all(|c| c.get("error").is_none()), "no idle timeout, before or after the end: {}", a.text());
    gw.shutdown().await;
}
