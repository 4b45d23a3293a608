use serde_json::json;

use super::*;

fn run(pieces: &[&[u8]]) -> String {
    let mut f = ToolIndexFiller::new();
    let mut out = Vec::new();
    for p in pieces {
        out.extend(f.feed(p));
    }
    out.extend(f.finish());
    String::from_utf8(out).unwrap()
}

fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

#[test]
fn missing_indexes_are_filled_per_choice() {
    let calls = |choice: u64, list: Value| json!({"object": "chat.completion.chunk", "choices": [{"index": choice, "delta": {"tool_calls": list}}]});
    let input = [
        calls(0, json!([{"id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}])),
        calls(0, json!([{"function": {"arguments": "{\"x\":"}}])),
        calls(1, json!([{"id": "c", "function": {"name": "h", "arguments": "{}"}}])),
        calls(0, json!([{"id": "b", "function": {"name": "g", "arguments": "{}"}}, {"function": {"arguments": " "}}])),
        calls(0, json!([{"id": "a", "function": {"arguments": "1}"}}])),
    ];
    let expected = [
        calls(0, json!([{"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}])),
        calls(0, json!([{"index": 0, "function": {"arguments": "{\"x\":"}}])),
        calls(1, json!([{"index": 0, "id": "c", "function": {"name": "h", "arguments": "{}"}}])),
        calls(
            0,
            json!([{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}, {"index": 1, "function": {"arguments": " "}}]),
        ),
        calls(0, json!([{"index": 0, "id": "a", "function": {"arguments": "1}"}}])),
    ];
    let input: String = input.iter().map(sse).collect();
    let expected: String = expected.iter().map(sse).collect();
    assert_eq!(run(&[input.as_bytes()]), expected);
}

#[test]
fn streams_that_have_indexes_or_no_tool_calls_pass_byte_for_byte() {
    let with_index =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\"}]}}]}\r\n\r\n";
    let text = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"héllo\"}}]}\n\ndata: [DONE]\n\n";
    assert_eq!(run(&[with_index.as_bytes(), text.as_bytes()]), format!("{with_index}{text}"));
    // After an entry with its own index, an entry without one continues that call.
    let next =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n";
    let out = run(&[with_index.as_bytes(), next.as_bytes()]);
    let last: Value = serde_json::from_str(out.rsplit("data: ").next().unwrap().trim_end()).unwrap();
    assert_eq!(last["choices"][0]["delta"]["tool_calls"][0]["index"], 0, "{out}");
    let partial = "data: {\"choices\":[{\"delta\":{\"tool_calls\"";
    assert_eq!(run(&[partial.as_bytes()]), partial);
}
