//! SSE streaming: frames are forwarded as they arrive, broken and silent upstreams end
//! the stream with an error event, and a client that leaves cancels the upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use tokio::time::Instant;

const STREAM_REQ: &str = r#"{"model":"up/gpt-x","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

fn ms(n: u64) -> Step {
    Step::Wait(Duration::from_millis(n))
}

#[tokio::test]
async fn sse_is_forwarded_chunk_by_chunk_as_it_arrives() {
    let mut steps = Vec::new();
    for i in 0..5 {
        steps.push(chat_chunk(&format!("w{i}")));
        steps.push(ms(150));
    }
    steps.push(event("[DONE]"));
    let up = Upstream::start(Reply::Sse(steps)).await;
    let gw = gateway(&config(&up.base_url(), "")).await;

    let start = Instant::now();
    let resp = send_raw(gw.data_addr, post("/v1/chat/completions", Some(KEY), STREAM_REQ)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let got = frames(&mut body, start).await;

    let texts: Vec<String> = got.iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect();
    assert_eq!(texts.len(), 6, "one frame per upstream event: {texts:?}");
    for (i, t) in texts.iter().take(5).enumerate() {
        assert!(t.contains(&format!("\"w{i}\"")), "{t}");
    }
    assert_eq!(texts[5], "data: [DONE]\n\n");
    // The first chunk arrives long before the stream ends: nothing is buffered, and
    // the upstream's pacing reaches the client.
    let first = got[0].0;
    let last = got[5].0;
    assert!(last >= Duration::from_millis(700), "stream took {last:?}");
    assert!(first + Duration::from_millis(500) < last, "first chunk at {first:?}, last at {last:?}");
    for pair in got.windows(2) {
        assert!(
            pair[1].0 >= pair[0].0 + Duration::from_millis(100),
            "chunks were not paced: {:?}",
            got.iter().map(|g| g.0).collect::<Vec<_>>()
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_breaks_ends_with_an_error_event() {
    let up = Upstream::start(Reply::Sse(vec![chat_chunk("a"), ms(50), chat_chunk("b"), ms(50), Step::Break])).await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    let start = Instant::now();
    let resp = send_raw(gw.data_addr, post("/v1/chat/completions", Some(KEY), STREAM_REQ)).await;
    assert_eq!(resp.status(), 200);
    let got = frames(&mut resp.into_body(), start).await;
    assert_eq!(got.len(), 3, "{got:?}");
    let last = String::from_utf8_lossy(&got[2].1).into_owned();
    let json: serde_json::Value = serde_json::from_str(last.strip_prefix("data: ").unwrap().trim()).unwrap();
    assert_eq!(json["error"]["code"], "upstream_stream_broken");
    assert_eq!(json["error"]["type"], "upstream_error");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_silent_stream_hits_the_idle_timeout() {
    // idle is 500 ms in the test config.
    let up = Upstream::start(Reply::Sse(vec![chat_chunk("a"), ms(5_000), chat_chunk("never")])).await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    let start = Instant::now();
    let resp = send_raw(gw.data_addr, post("/v1/chat/completions", Some(KEY), STREAM_REQ)).await;
    let got = frames(&mut resp.into_body(), start).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(String::from_utf8_lossy(&got[1].1).contains("upstream_idle_timeout"));
    assert!(got[1].0 < Duration::from_secs(3), "the stream ended at {:?}", got[1].0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_event_is_a_502() {
    let up = Upstream::start(Reply::Sse(vec![ms(20), Step::Break])).await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    let a = send(gw.data_addr, post("/v1/chat/completions", Some(KEY), STREAM_REQ)).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (502, "upstream_stream_broken"));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stream_with_no_first_event_in_time_is_a_504() {
    // first_byte is 1 s in the test config; the head arrives at once, the first event never.
    let up = Upstream::start(Reply::Sse(vec![ms(5_000), chat_chunk("late")])).await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    let a = send(gw.data_addr, post("/v1/chat/completions", Some(KEY), STREAM_REQ)).await;
    assert_eq!((a.status.as_u16(), a.error_code().as_str()), (504, "upstream_timeout"));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_stream() {
    let mut steps = Vec::new();
    for i in 0..100 {
        steps.push(chat_chunk(&format!("w{i}")));
        steps.push(ms(50));
    }
    let up = Upstream::start(Reply::Sse(steps)).await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    let resp = send_raw(gw.data_addr, post("/v1/chat/completions", Some(KEY), STREAM_REQ)).await;
    let mut body = resp.into_body();
    let _ = http_body_util::BodyExt::frame(&mut body).await.unwrap().unwrap();
    assert!(!up.stream_dropped.load(Ordering::SeqCst));
    drop(body); // closes the client connection mid-stream
    eventually(Duration::from_secs(3), async || {
        up.stream_dropped.load(Ordering::SeqCst).then_some(()).ok_or("the upstream stream was never cancelled")
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn the_built_in_mock_streams_with_usage() {
    let gw = gateway(&config("http://127.0.0.1:9/v1", "")).await;
    let req = r#"{"model":"mock/mock-1","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let start = Instant::now();
    let resp = send_raw(gw.data_addr, post("/v1/chat/completions", Some(KEY), req)).await;
    assert_eq!(resp.status(), 200);
    let got = frames(&mut resp.into_body(), start).await;
    let all: String = got.iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect();
    assert!(all.ends_with("data: [DONE]\n\n"), "{all}");
    assert!(all.contains("\"usage\":{"), "{all}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_client_that_disconnects_before_the_answer_cancels_the_upstream_request() {
    use tokio::io::AsyncReadExt;
    // A raw upstream that reads the request, never answers, and notes when the request
    // has arrived and when sluice closes the connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (got, flag) = (received.clone(), closed.clone());
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 65536];
        let mut head = Vec::new();
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        got.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
        flag.store(true, Ordering::SeqCst);
    });
    let gw =
        gateway(&must_replace(&config(&format!("http://{addr}/v1"), ""), "first_byte: 1s", "first_byte: 30s")).await;
    let req = tokio::spawn(send_raw(gw.data_addr, post("/v1/chat/completions", Some(KEY), r#"{"model":"up/m"}"#)));
    // The provider has the request (its head at least) and is "thinking".
    eventually(Duration::from_secs(10), async || {
        received.load(Ordering::SeqCst).then_some(()).ok_or("the request never reached the upstream")
    })
    .await;
    assert!(!closed.load(Ordering::SeqCst));
    req.abort(); // the client goes away while the provider is still thinking
    eventually(Duration::from_secs(3), async || {
        closed.load(Ordering::SeqCst).then_some(()).ok_or("the upstream request was not cancelled")
    })
    .await;
    gw.shutdown().await;
}
