//! Template compilation and rendering, and the bounds on both.

use super::*;
use serde_json::json;

struct S(Value);
impl Scope for S {
    fn lookup(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }
}

fn render(t: &str, data: Value) -> (String, usize) {
    let mut out = String::new();
    let missing = Template::compile(t).unwrap().render(&S(data), &mut out, &mut Budget::new(1 << 20)).unwrap();
    (out, missing)
}

#[test]
fn renders_variables_without_escaping() {
    let data =
        json!({"ldctx": {"email": "a&b@<x>.com", "user": {"name": "Ada"}, "n": 3}, "vars": {"topic": "\"billing\""}});
    assert_eq!(
        render("Hi {{ldctx.user.name}} <{{ldctx.email}}> on {{vars.topic}} x{{ ldctx.n }} {{{ldctx.email}}}", data),
        ("Hi Ada <a&b@<x>.com> on \"billing\" x3 a&b@<x>.com".to_string(), 0)
    );
}

#[test]
fn missing_values_render_empty_and_are_counted() {
    assert_eq!(render("[{{vars.a}}][{{ldctx.b.c}}][{{x}}]", json!({"ldctx": {}})), ("[][][]".to_string(), 3));
}

#[test]
fn sections_inverted_sections_and_comments() {
    let data = json!({"vars": {"vip": true, "items": ["a", "b"], "none": []}});
    assert_eq!(
        render("{{#vars.vip}}VIP {{/vars.vip}}{{^vars.none}}empty{{/vars.none}}{{! hidden }}", data.clone()).0,
        "VIP empty"
    );
    assert_eq!(render("{{#vars.items}}<{{.}}>{{/vars.items}}", data).0, "<a><b>");
}

#[test]
fn bad_templates_are_refused() {
    for bad in ["{{#a}}open", "{{/a}}", "{{#a}}{{/b}}", "{{x", "{{>partial}}", "{{=<% %>=}}", "{{a..b}}"] {
        assert!(Template::compile(bad).is_err(), "{bad}");
    }
}

#[test]
fn roots_lists_referenced_names() {
    let t = Template::compile("{{ldctx.a}} {{#vars.x}}{{.}}{{client.name}}{{/vars.x}}").unwrap();
    assert_eq!(t.roots(), ["ldctx", "vars", "client"]);
}

fn try_render(t: &str, data: Value, output: usize) -> (Result<usize, RenderError>, String) {
    let mut out = String::new();
    let r = Template::compile(t).unwrap().render(&S(data), &mut out, &mut Budget::new(output));
    (r, out)
}

#[test]
fn a_list_rendered_inside_its_own_section_stops_at_the_output_budget() {
    // Each of the n repetitions would write the whole list: n² bytes without a budget.
    let list: Vec<u32> = vec![1; 30_000];
    let t = "{{#vars.topic}} Topic: {{vars.topic}}.{{/vars.topic}}";
    let (r, out) = try_render(t, json!({"vars": {"topic": list}}), 64 << 10);
    assert_eq!(r, Err(RenderError::TooLarge { limit: 64 << 10 }));
    // Nothing beyond the budget was written, nor allocated for one value.
    assert!(out.len() <= 64 << 10, "{}", out.len());
    assert!(out.capacity() <= 2 * (64 << 10), "{}", out.capacity());
}

#[test]
fn a_large_value_counts_against_the_budget_before_it_is_written() {
    let list: Vec<u32> = vec![7; 100_000];
    let (r, out) = try_render("{{vars.a}}", json!({"vars": {"a": list}}), 1000);
    assert_eq!(r, Err(RenderError::TooLarge { limit: 1000 }));
    assert!(out.len() <= 1000 && out.capacity() <= 4096, "{} {}", out.len(), out.capacity());
    // Within the budget, the value is written as compact JSON.
    let (r, out) = try_render("{{vars.a}}", json!({"vars": {"a": [1, "x", {"b": null}]}}), 1000);
    assert_eq!((r, out.as_str()), (Ok(0), r#"[1,"x",{"b":null}]"#));
}

#[test]
fn nested_sections_stop_at_the_iteration_budget_whatever_they_write() {
    // Nested sections over one list: n² repetitions that write nothing.
    let list: Vec<u32> = vec![1; 100_000];
    let (r, out) = try_render("{{#vars.a}}{{#vars.a}}{{/vars.a}}{{/vars.a}}", json!({"vars": {"a": list}}), 1 << 20);
    assert_eq!(r, Err(RenderError::TooManyIterations { limit: MAX_SECTION_ITERATIONS }));
    assert!(out.is_empty());
    // Exactly the budget is fine.
    let list: Vec<u32> = vec![1; MAX_SECTION_ITERATIONS];
    assert_eq!(try_render("{{#vars.a}}x{{/vars.a}}", json!({"vars": {"a": list}}), 1 << 20).0, Ok(0));
}

#[test]
fn one_budget_is_shared_by_every_message_of_a_request() {
    let t = Template::compile("{{#vars.a}}{{.}}{{/vars.a}}").unwrap();
    let data = S(json!({"vars": {"a": vec![1; MAX_SECTION_ITERATIONS / 2 + 1]}}));
    let mut budget = Budget::new(1 << 20);
    assert!(t.render(&data, &mut String::new(), &mut budget).is_ok());
    assert!(t.render(&data, &mut String::new(), &mut budget).is_err());
}

#[test]
fn sections_nested_deeper_than_the_limit_are_refused_without_recursion() {
    let ok = format!("{}{}", "{{#a}}".repeat(MAX_SECTION_DEPTH), "{{/a}}".repeat(MAX_SECTION_DEPTH));
    assert!(Template::compile(&ok).is_ok());
    for depth in [MAX_SECTION_DEPTH + 1, 5_000, 50_000] {
        let text = format!("{}{}", "{{#a}}".repeat(depth), "{{/a}}".repeat(depth));
        let e = Template::compile(&text).unwrap_err();
        assert_eq!(e.at, MAX_SECTION_DEPTH * "{{#a}}".len(), "{e}");
        assert!(e.message.contains("nest more than 32 deep"), "{e}");
    }
    // Unclosed and mismatched sections are still reported by name.
    assert!(Template::compile("{{#a}}{{#b}}").unwrap_err().message.contains("`b` is never closed"));
    assert!(Template::compile("{{#a}}{{/b}}").unwrap_err().message.contains("closes `a`"));
}

#[test]
fn inverted_and_nested_sections_render_as_before() {
    let data = json!({"vars": {"rows": [{"cells": [1, 2]}, {"cells": []}], "none": false}});
    let t = "{{#vars.rows}}[{{#cells}}{{.}}{{/cells}}{{^cells}}-{{/cells}}]{{/vars.rows}}{{^vars.none}}!{{/vars.none}}";
    assert_eq!(render(t, data).0, "[12][-]!");
}
