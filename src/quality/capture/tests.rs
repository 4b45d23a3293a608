use super::*;

fn capture(shape: Shape, limit: usize) -> (Arc<Budget>, Capture) {
    let budget = Budget::new(1 << 20);
    let held = Held::take(&budget, 0).unwrap();
    (Arc::clone(&budget), Capture::new(shape, limit, held))
}

#[test]
fn chat_stream_deltas_tool_calls_and_finish() {
    let (_, mut c) = capture(Shape::Chat, 1 << 16);
    let frames = [
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \\\"you\\\"\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"other choice\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"lookup\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"q\\\":1}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\r\n\r\ndata: [DONE]\n\n",
    ];
    for f in frames {
        c.feed_events(f.as_bytes());
    }
    let done = c.finish();
    assert_eq!(done.answer(), "Hello \"you\"\nlookup({\"q\":1})");
    assert_eq!((done.text.as_str(), done.tools.as_str()), ("Hello \"you\"", "lookup({\"q\":1})"));
    assert_eq!(done.finish_reason.as_deref(), Some("tool_calls"));
    assert!(!done.truncated);
}

#[test]
fn whole_answers_of_each_shape() {
    let (_, mut c) = capture(Shape::Chat, 1 << 16);
    c.feed_whole(
        br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hi there"},"finish_reason":"length"}]}"#,
    );
    let d = c.finish();
    assert_eq!((d.text.as_str(), d.finish_reason.as_deref()), ("Hi there", Some("length")));

    let (_, mut c) = capture(Shape::Completions, 1 << 16);
    c.feed_whole(br#"{"choices":[{"index":0,"text":"legacy","finish_reason":"stop"}]}"#);
    assert_eq!(c.finish().text, "legacy");

    let (_, mut c) = capture(Shape::Responses, 1 << 16);
    c.feed_whole(
        br#"{"status":"incomplete","output":[{"type":"reasoning"},{"type":"message","content":[{"type":"output_text","text":"Part"}]},{"type":"function_call","name":"f","arguments":"{}"}]}"#,
    );
    let d = c.finish();
    assert_eq!((d.answer().as_str(), d.finish_reason.as_deref()), ("Part\nf({})", Some("length")));
}

#[test]
fn responses_stream_events() {
    let (_, mut c) = capture(Shape::Responses, 1 << 16);
    let events = [
        r#"{"type":"response.created","response":{"status":"in_progress"}}"#,
        r#"{"type":"response.output_text.delta","output_index":0,"delta":"Good "}"#,
        r#"{"type":"response.output_text.delta","output_index":0,"delta":"day"}"#,
        r#"{"type":"response.output_item.added","output_index":1,"item":{"type":"function_call","name":"get"}}"#,
        r#"{"type":"response.function_call_arguments.delta","output_index":1,"delta":"{\"a\":"}"#,
        r#"{"type":"response.function_call_arguments.delta","output_index":1,"delta":"2}"}"#,
        r#"{"type":"response.completed","response":{"status":"completed"}}"#,
    ];
    for e in events {
        c.feed_events(format!("event: x\ndata: {e}\n\n").as_bytes());
    }
    let d = c.finish();
    assert_eq!(d.answer(), "Good day\nget({\"a\":2})");
    assert_eq!(d.finish_reason.as_deref(), Some("stop"));
}

#[test]
fn the_limit_truncates_on_a_char_boundary() {
    let (_, mut c) = capture(Shape::Chat, 5);
    c.feed_events("data: {\"choices\":[{\"delta\":{\"content\":\"abcé\"}}]}\n\n".as_bytes());
    assert!(!c.truncated());
    c.feed_events("data: {\"choices\":[{\"delta\":{\"content\":\"xyz\"}}]}\n\n".as_bytes());
    let d = c.finish();
    // "abcé" is 5 bytes: nothing more fits.
    assert_eq!(d.text, "abcé");
    assert!(d.truncated);
    let (_, mut c) = capture(Shape::Chat, 4);
    c.feed_events("data: {\"choices\":[{\"delta\":{\"content\":\"abcé\"}}]}\n\n".as_bytes());
    let d = c.finish();
    assert_eq!((d.text.as_str(), d.truncated), ("abc", true));
}

#[test]
fn the_budget_is_held_and_given_back() {
    let budget = Budget::new(10_000);
    let held = Held::take(&budget, 1_000).unwrap();
    assert_eq!(budget.used(), 1_000);
    let mut c = Capture::new(Shape::Chat, 1 << 20, held);
    c.feed_events("data: {\"choices\":[{\"delta\":{\"content\":\"hello\"}}]}\n\n".as_bytes());
    // One step of room was taken for the text.
    assert_eq!(budget.used(), 1_000 + STEP);
    assert!(Held::take(&budget, 10_000).is_none(), "no room: nothing is taken");
    assert_eq!(budget.used(), 1_000 + STEP);
    let done = c.finish();
    drop(done);
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_full_budget_truncates_the_capture() {
    let budget = Budget::new(STEP + 10);
    let held = Held::take(&budget, 10).unwrap();
    let mut c = Capture::new(Shape::Chat, 1 << 20, held);
    let big = "x".repeat(STEP + 1);
    c.feed_events(format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{big}\"}}}}]}}\n\n").as_bytes());
    let d = c.finish();
    assert!(d.truncated);
    assert!(d.text.is_empty(), "no step fit, so nothing was kept: {}", d.text.len());
}
