use proptest::prelude::*;

use super::*;

/// A recorded Anthropic stream: text, two tool blocks (one without arguments), a ping.
const TRANSCRIPT: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\ndata: {\"type\":\"ping\"}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Héllo \"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"wörld\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"now\",\"input\":{}}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":40}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

fn run(pieces: &[&[u8]], include_usage: bool) -> String {
    let mut t = Translator::new(&Reply { include_usage, json_tool: None }, 1);
    let mut out = Vec::new();
    for p in pieces {
        out.extend(t.feed(p));
    }
    out.extend(t.finish());
    String::from_utf8(out).unwrap()
}

fn events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[test]
fn a_transcript_becomes_openai_chunks() {
    let text = run(&[TRANSCRIPT.as_bytes()], true);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let ev = events(&text);
    assert_eq!(ev[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    assert_eq!(ev[0]["id"], "msg_1");
    assert!(ev.iter().all(|e| e["object"] == "chat.completion.chunk"));
    let content: String = ev.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, "Héllo wörld");
    // Tool indexes count tool blocks; arguments have no `{}` prefix; an argument-less tool gets "{}".
    let args = |k: u64| -> String {
        ev.iter()
            .flat_map(|e| e["choices"][0]["delta"]["tool_calls"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["index"] == k)
            .filter_map(|c| c["function"]["arguments"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(args(0), "{\"city\": \"Paris\"}");
    assert_eq!(args(1), "{}");
    let finish = ev.iter().find_map(|e| e["choices"][0]["finish_reason"].as_str()).unwrap();
    assert_eq!(finish, "tool_calls");
    let last = ev.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 35, "cache reads count as prompt tokens");
    assert_eq!(last["usage"]["completion_tokens"], 40, "output usage is set, not added");
    // Without usage asked for: no usage chunk.
    let plain = events(&run(&[TRANSCRIPT.as_bytes()], false));
    assert!(plain.iter().all(|e| e.get("usage").is_none()));
}

#[test]
fn errors_and_early_eof_end_the_stream_with_an_error_event() {
    let overloaded = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"x\",\"usage\":{}}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let ev = events(&run(&[overloaded.as_bytes()], false));
    assert_eq!(ev.last().unwrap()["error"]["code"], "upstream_stream_broken");
    assert!(ev.last().unwrap()["error"]["message"].as_str().unwrap().contains("overloaded_error"));
    let cut = &TRANSCRIPT[..TRANSCRIPT.len() / 2];
    let text = run(&[cut.as_bytes()], false);
    assert!(!text.contains("[DONE]"));
    assert_eq!(events(&text).last().unwrap()["error"]["type"], "upstream_error");
}

proptest! {
    /// Bytes may split anywhere (mid-line, mid-UTF-8): the output is the same.
    #[test]
    fn any_split_gives_the_same_output(cuts in proptest::collection::vec(0usize..TRANSCRIPT.len(), 0..30)) {
        let bytes = TRANSCRIPT.as_bytes();
        let mut cuts = cuts;
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = Vec::new();
        let mut at = 0;
        for c in cuts {
            pieces.push(&bytes[at..c]);
            at = c;
        }
        pieces.push(&bytes[at..]);
        prop_assert_eq!(run(&pieces, true), run(&[bytes], true));
    }
}

#[test]
fn the_json_tool_streams_as_content() {
    let stream = concat!(
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"x\",\"usage\":{\"input_tokens\":3}}}\n\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"answer\",\"input\":{}}}\n\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":5}}\n\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );
    let reply = Reply { include_usage: false, json_tool: Some("answer".into()) };
    let run_json = |s: &str| {
        let mut t = Translator::new(&reply, 1);
        let mut out = t.feed(s.as_bytes());
        out.extend(t.finish());
        events(&String::from_utf8(out).unwrap())
    };
    let ev = run_json(stream);
    let content: String = ev.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, "{\"a\":1}");
    assert!(ev.iter().all(|e| e["choices"][0]["delta"].get("tool_calls").is_none()));
    assert_eq!(ev.last().unwrap()["choices"][0]["finish_reason"], "stop");
    // No deltas at all: "{}".
    let empty: String = stream.split_inclusive("\n\n").filter(|e| !e.contains("input_json_delta")).collect();
    let ev = run_json(&empty);
    let content: String = ev.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, "{}");
    assert_eq!(ev.last().unwrap()["choices"][0]["finish_reason"], "stop");
}
