use super::*;
use crate::config::aiconfig::MessageConfig;
use crate::config::{ProviderConfig, UpstreamTimeouts};
use serde_json::json;

fn providers() -> HashMap<String, Arc<Provider>> {
    let cfg: ProviderConfig = serde_json::from_value(json!({"kind": "mock"})).unwrap();
    let p = Provider::build("mock", &cfg, &UpstreamTimeouts::default(), 1).unwrap();
    HashMap::from([("mock".to_string(), Arc::new(p))])
}

fn resolved(mode: MessagesMode, messages: &[(&str, &str)]) -> Resolved {
    Resolved {
        provider: "mock".into(),
        model: "m-2".into(),
        parameters: json!({"temperature": 0.1, "max_tokens": 50}).as_object().unwrap().clone(),
        messages: messages.iter().map(|(r, c)| MessageConfig { role: r.to_string(), content: c.to_string() }).collect(),
        messages_mode: mode,
        enabled: true,
        mode: crate::config::aiconfig::AiMode::Completion,
        instructions: None,
        tools: Vec::new(),
    }
}

const LIMIT: usize = 4096;

fn counter() -> prometheus::IntCounter {
    prometheus::IntCounter::new("missing", "test").unwrap()
}

fn scope_values() -> (Value, Value, Value) {
    (json!({"kind": "user", "key": "u1", "email": "ada@x.com"}), json!({"topic": "billing"}), json!({"name": "app"}))
}

#[test]
fn edits_set_model_parameters_and_prepended_messages() {
    let v = Version::compile(
        "bot",
        2,
        &resolved(MessagesMode::Prepend, &[("system", "Help {{ldctx.email}} with {{vars.topic}}{{vars.nope}}")]),
        &providers(),
        counter(),
        LIMIT,
    )
    .unwrap();
    assert_eq!(v.header, "bot@2");
    let (ldctx, vars, client) = scope_values();
    let scope = RenderScope { ldctx: &ldctx, vars: &vars, client: &client };
    let app: Box<RawValue> =
        RawValue::from_string(r#"[{"role":"system","content":"app sys"},{"role":"user","content":"hi"}]"#.into())
            .unwrap();
    let edits = v.edits(true, Some(&app), None, &scope).unwrap();
    let map: HashMap<&str, Value> = edits.iter().map(|(k, v)| (*k, serde_json::from_str(v).unwrap())).collect();
    assert_eq!(map["model"], "m-2");
    assert_eq!(map["temperature"], 0.1);
    assert_eq!(
        map["messages"],
        json!([{"role":"system","content":"Help ada@x.com with billing"},{"role":"system","content":"app sys"},{"role":"user","content":"hi"}])
    );
    assert_eq!(v.missing_variables.get(), 1);
    // Not chat (completions, embeddings): no messages.
    assert!(v.edits(false, Some(&app), None, &scope).unwrap().iter().all(|(k, _)| *k != "messages"));
}

#[test]
fn replace_mode_drops_the_apps_instructions() {
    let v = Version::compile(
        "bot",
        1,
        &resolved(MessagesMode::Replace, &[("system", "new")]),
        &providers(),
        counter(),
        LIMIT,
    )
    .unwrap();
    let (ldctx, vars, client) = scope_values();
    let scope = RenderScope { ldctx: &ldctx, vars: &vars, client: &client };
    let app: Box<RawValue> = RawValue::from_string(
        r#"[{"role":"developer","content":"d"},{"role":"user","content":"q"},{"role":"system","content":"s"}]"#.into(),
    )
    .unwrap();
    let edits = v.edits(true, Some(&app), None, &scope).unwrap();
    let messages: Value = serde_json::from_str(&edits.iter().find(|(k, _)| *k == "messages").unwrap().1).unwrap();
    assert_eq!(messages, json!([{"role":"system","content":"new"},{"role":"user","content":"q"}]));
    let bad: Box<RawValue> = RawValue::from_string("{\"x\":1}".into()).unwrap();
    assert_eq!(v.edits(true, Some(&bad), None, &scope), Err(EditError::BadMessages(BadMessages)));
}

#[test]
fn compile_reports_every_problem() {
    let mut r = resolved(MessagesMode::Prepend, &[("wizard", "{{#x}}"), ("user", "{{secret.key}}")]);
    r.provider = "nope".into();
    let problems = Version::compile("bot", 1, &r, &providers(), counter(), LIMIT).unwrap_err();
    let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["provider", "messages[0].role", "messages[0].content", "messages[1].content"]);
    assert!(problems[3].1.contains("unknown template name `secret`"));
}

#[test]
fn a_render_past_the_budget_names_the_message_and_makes_no_edits() {
    let template = "Hi.{{#vars.topic}} Topic: {{vars.topic}}.{{/vars.topic}}";
    let r = resolved(MessagesMode::Replace, &[("system", "fixed"), ("system", template)]);
    let v = Version::compile("bot", 2, &r, &providers(), counter(), LIMIT).unwrap();
    let (ldctx, _, client) = scope_values();
    let small = json!({"topic": [1, 2]});
    let scope = RenderScope { ldctx: &ldctx, vars: &small, client: &client };
    assert!(v.edits(true, None, None, &scope).is_ok());
    let large = json!({"topic": vec![1; 30_000]});
    let scope = RenderScope { ldctx: &ldctx, vars: &large, client: &client };
    let e = v.edits(true, None, None, &scope).unwrap_err();
    assert_eq!(e, EditError::Render { message: 1, error: RenderError::TooLarge { limit: LIMIT } });
    assert_eq!(e.to_string(), "messages[1]: its output would exceed 4096 bytes");
}

#[test]
fn messages_whose_own_text_passes_the_budget_are_refused_when_they_compile() {
    let long = "x".repeat(LIMIT / 2 + 1);
    let r = resolved(
        MessagesMode::Prepend,
        &[("system", &long), ("user", &format!("{long}{{{{#vars.a}}}}{{{{/vars.a}}}}"))],
    );
    let problems = Version::compile("bot", 1, &r, &providers(), counter(), LIMIT).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "messages");
    assert!(
        problems[0].1.contains("more than a request may render (limits.max_request_body: 4096 bytes)"),
        "{problems:?}"
    );
    // Text inside sections may not render: it is not counted.
    let r = resolved(MessagesMode::Prepend, &[("system", &format!("{{{{#vars.a}}}}{long}{long}{{{{/vars.a}}}}"))]);
    assert!(Version::compile("bot", 1, &r, &providers(), counter(), LIMIT).is_ok());
}

#[test]
fn json_strings_are_written_as_serde_json_writes_them() {
    let every_ascii: String = (0u8..0x80).map(char::from).collect();
    for s in ["", "plain", "quote \" and \\ backslash", "é 日本 🎉 \u{7f} \u{2028}", every_ascii.as_str()] {
        assert_eq!(&*super::json_string(s), serde_json::to_string(s).unwrap(), "{s:?}");
    }
}

proptest::proptest! {
    #[test]
    fn any_string_is_written_as_serde_json_writes_it(s in "\\PC*|[\\x00-\\x1f\"\\\\]*") {
        proptest::prop_assert_eq!(super::json_string(&s).to_string(), serde_json::to_string(&s).unwrap());
    }
}
