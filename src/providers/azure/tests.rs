use super::*;

fn run(pieces: &[&[u8]]) -> String {
    let mut n = StreamNormaliser::new();
    let mut out = Vec::new();
    for p in pieces {
        out.extend(n.feed(p));
    }
    out.extend(n.finish());
    String::from_utf8(out).unwrap()
}

#[test]
fn annotation_and_filter_only_chunks_are_dropped_and_the_rest_stripped() {
    let stream = concat!(
        "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":\"safe\"}}}]}\n\n",
        "data: {\"choices\":[{\"content_filter_results\":{},\"delta\":{\"content\":\"hi\",\"role\":\"assistant\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"id\":\"c1\",\"object\":\"chat.completion.chunk\"}\n\n",
        "data: {\"choices\":[{\"content_filter_offsets\":{\"check_offset\":0,\"start_offset\":0,\"end_offset\":2},\"content_filter_results\":{\"violence\":{\"filtered\":false,\"severity\":\"safe\"}},\"finish_reason\":null,\"index\":0}],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\"}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"no annotations\"},\"finish_reason\":null,\"index\":0}],\"id\":\"c1\"}\n\n",
        "data: {\"choices\":[{\"content_filter_results\":{\"hate\":{\"filtered\":true,\"severity\":\"high\"}},\"delta\":{},\"finish_reason\":\"content_filter\",\"index\":0,\"logprobs\":null}],\"id\":\"c1\",\"object\":\"chat.completion.chunk\"}\n\n",
        "data: [DONE]\n\n",
    );
    let out = run(&[stream.as_bytes()]);
    assert_eq!(
        out,
        concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\",\"role\":\"assistant\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"id\":\"c1\",\"object\":\"chat.completion.chunk\"}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"no annotations\"},\"finish_reason\":null,\"index\":0}],\"id\":\"c1\"}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"content_filter\",\"index\":0,\"logprobs\":null}],\"id\":\"c1\",\"object\":\"chat.completion.chunk\"}\n\n",
            "data: [DONE]\n\n",
        )
    );
    let bytes = stream.as_bytes();
    for cut in 0..bytes.len() {
        assert_eq!(run(&[&bytes[..cut], &bytes[cut..]]), out, "cut at {cut}");
    }
}

#[test]
fn events_without_filter_pass_byte_for_byte_and_usage_chunks_stay() {
    // Unusual spacing and key order survive: the event is not re-serialised.
    let plain = "data:{ \"choices\" : [ ] , \"usage\":{\"total_tokens\":3} }\r\n\r\n: comment\n\n";
    assert_eq!(run(&[plain.as_bytes()]), plain);
    let usage = "data: {\"choices\":[],\"id\":\"c1\",\"prompt_filter_results\":[],\"usage\":{\"total_tokens\":3}}\n\n";
    assert_eq!(run(&[usage.as_bytes()]), "data: {\"choices\":[],\"id\":\"c1\",\"usage\":{\"total_tokens\":3}}\n\n");
    // "filter" only in the text: nothing to change, so the bytes stay as they were.
    let text = "data: {\"choices\":[{\"delta\":{\"content\":\"a coffee filter\"},\"index\":0}]}\n\n";
    assert_eq!(run(&[text.as_bytes()]), text);
    // An event that never ended is passed on as it came.
    assert_eq!(run(&[b"data: {\"content_filter_results\""]), "data: {\"content_filter_results\"");
}

#[test]
fn whole_answers_lose_their_filter_results() {
    let body = br#"{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"finish_reason":"stop","index":0,"message":{"content":"hi","role":"assistant"}}],"id":"c1","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}"#;
    let out: Value = serde_json::from_slice(&normalise_json(body).unwrap()).unwrap();
    assert_eq!(
        out,
        json!({"choices": [{"finish_reason": "stop", "index": 0, "message": {"content": "hi", "role": "assistant"}}], "id": "c1"})
    );
    assert_eq!(normalise_json(br#"{"choices":[{"message":{"content":"filter coffee"}}]}"#), None);
    assert_eq!(normalise_json(b"not json, but a filter"), None);
    assert_eq!(normalise_json(br#"{"id":"c1"}"#), None);
}

#[test]
fn the_content_filter_400_becomes_openai_s_error() {
    let body = br#"{"error":{"message":"The response was filtered due to the prompt triggering content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"}}}}}"#;
    let (status, error) = translate_error(400, body).unwrap();
    assert_eq!(status, 400);
    assert_eq!(
        error,
        json!({"error": {"message": "The response was filtered due to the prompt triggering content management policy.",
            "type": "invalid_request_error", "param": "prompt", "code": "content_filter"}})
    );
    assert_eq!(translate_error(429, body), None);
    assert_eq!(translate_error(400, br#"{"error":{"code":"invalid_request","message":"x"}}"#), None);
    assert_eq!(translate_error(400, b"<html>"), None);
}

#[test]
fn members_are_cut_out_of_the_bytes_wherever_they_stand() {
    let strip = |json: &str, key: &str| {
        let mut bytes = json.as_bytes().to_vec();
        while let Some(cut) = member_span(&bytes, key.as_bytes()) {
            bytes.drain(cut);
        }
        let out = String::from_utf8(bytes).unwrap();
        let _: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
        out
    };
    let k = "content_filter_results";
    assert_eq!(strip(r#"{"content_filter_results":{"a":{"b":[1,{"c":"}"}]}},"x":1}"#, k), r#"{"x":1}"#);
    assert_eq!(strip(r#"{"x":1,"content_filter_results":{},"y":"z"}"#, k), r#"{"x":1,"y":"z"}"#);
    assert_eq!(strip(r#"{"x":[1,2],"content_filter_results":{"q":"\"}"}}"#, k), r#"{"x":[1,2]}"#);
    assert_eq!(strip(r#"{"content_filter_results":true}"#, k), r#"{}"#);
    // The key's text inside a string is content, not a member.
    let text = r#"{"delta":{"content":"say \"content_filter_results\":{} now"},"content_filter_results":{}}"#;
    assert_eq!(strip(text, k), r#"{"delta":{"content":"say \"content_filter_results\":{} now"}}"#);
    let two = r#"{"choices":[{"content_filter_results":{"h":1},"i":0},{"i":1,"content_filter_results":{"h":2}}]}"#;
    assert_eq!(strip(two, k), r#"{"choices":[{"i":0},{"i":1}]}"#);
}

#[test]
fn the_byte_cut_and_the_parsed_path_agree() {
    let chunks = [
        r#"{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"delta":{"content":"héllo"},"finish_reason":null,"index":0,"logprobs":null}],"created":1,"id":"c","model":"m","object":"chat.completion.chunk"}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":1}"}}]},"finish_reason":null,"index":0,"content_filter_results":{},"content_filter_offsets":{"check_offset":0,"start_offset":0,"end_offset":5}}],"id":"c","model":"m","object":"chat.completion.chunk"}"#,
    ];
    for chunk in chunks {
        let event = format!("data: {chunk}\n\n");
        let mut fast = Vec::new();
        assert!(stripped_content_chunk(event.as_bytes(), &mut fast), "{chunk}");
        let mut parsed: Map<String, Value> = serde_json::from_str(chunk).unwrap();
        assert_eq!(normalise_chunk(&mut parsed), Change::Changed);
        let fast: Value = serde_json::from_slice(fast.strip_prefix(b"data: ").unwrap()).unwrap();
        assert_eq!(fast, Value::Object(parsed), "{chunk}");
    }
    // A filter-only chunk and the annotation chunk are not for the cut.
    for other in [
        r#"{"choices":[{"delta":{},"content_filter_results":{},"finish_reason":null,"index":0}],"id":"c"}"#,
        r#"{"choices":[],"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}"#,
    ] {
        assert!(!stripped_content_chunk(format!("data: {other}\n\n").as_bytes(), &mut Vec::new()), "{other}");
    }
}
