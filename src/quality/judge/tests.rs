use super::*;

#[test]
fn verdicts_are_read_strictly() {
    let v = parse_verdict(r#"{"reasoning":"fine","score":0.75}"#).unwrap();
    assert_eq!((v.score, v.reasoning.as_str()), (0.75, "fine"));
    // The first JSON object in surrounding text.
    let v = parse_verdict("Sure! {\"reasoning\": \"ok\", \"score\": 1} hope it helps").unwrap();
    assert_eq!(v.score, 1.0);
    assert_eq!(parse_verdict(r#"{"reasoning":"r","score":7}"#), None, "out of range");
    assert_eq!(parse_verdict(r#"{"reasoning":"r","score":-0.1}"#), None);
    assert_eq!(parse_verdict(r#"{"reasoning":"r","score":"high"}"#), None);
    assert_eq!(parse_verdict("I would rate this quite highly."), None);
    assert_eq!(parse_verdict(""), None);
}

#[test]
fn the_history_is_the_apps_own_messages_cut_from_the_front() {
    let req = br#"{"model":"bot","messages":[{"role":"system","content":"app rules"},{"role":"user","content":[{"type":"text","text":"part one"},{"type":"text","text":"part two"}]},{"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"1","content":"42"}]}"#;
    let h = history(req, Shape::Chat, 10_000);
    assert_eq!(h, "system: app rules\nuser: part one\npart two\nassistant: f({})\ntool: 42");
    let cut = history(req, Shape::Chat, 10);
    assert_eq!(cut.chars().count(), 10);
    assert!(cut.starts_with('…') && cut.ends_with("tool: 42"), "{cut}");
    let r = br#"{"model":"bot","instructions":"be brief","input":"what?"}"#;
    assert_eq!(history(r, Shape::Responses, 100), "system: be brief\nuser: what?");
    let c = br#"{"model":"bot","prompt":"once upon"}"#;
    assert_eq!(history(c, Shape::Completions, 100), "user: once upon");
}

#[test]
fn the_system_prompt_holds_the_rubric_and_the_format() {
    let s = system_prompt("  Is it helpful?\n");
    assert!(s.contains("RUBRIC:\nIs it helpful?\n"));
    assert!(s.contains("\"score\""));
}
