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
fn roots_lists_the_names_outside_sections() {
    let t =
        Template::compile("{{ldctx.a}} {{#vars.x}}{{.}}{{client.name}}{{id}}{{/vars.x}}{{^other}}{{/other}}").unwrap();
    assert_eq!(t.roots(), ["ldctx", "vars", "other"]);
    // Inside a section a name reads the section's value first, the root after.
    let data = json!({"vars": {"orders": [{"id": 1}, {"id": 2}]}, "client": {"name": "app"}});
    assert_eq!(render("{{#vars.orders}}{{id}}@{{client.name}} {{/vars.orders}}", data).0, "1@app 2@app ");
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

#[test]
fn a_tag_alone_on_its_line_takes_the_line_with_it() {
    let t = "Hello\n{{#vars.vip}}\nVIP line\n  {{/vars.vip}}  \n{{! note }}\nBye\n";
    assert_eq!(render(t, json!({"vars": {"vip": true}})).0, "Hello\nVIP line\nBye\n");
    assert_eq!(render(t, json!({"vars": {"vip": false}})).0, "Hello\nBye\n");
    // \r\n endings, and the template's start and end, bound a line too.
    assert_eq!(render("\t{{^vars.a}}\r\nnone\r\n{{/vars.a}}", json!({"vars": {}})).0, "none\r\n");
    // A tag sharing its line with text or another tag leaves the line as it is.
    assert_eq!(render("a {{#vars.a}}\nb\n{{/vars.a}} c", json!({"vars": {"a": true}})).0, "a \nb\n c");
    assert_eq!(render("{{#vars.a}}{{#vars.a}}{{/vars.a}}\n{{/vars.a}}", json!({"vars": {"a": true}})).0, "\n");
    // Variables are never standalone.
    assert_eq!(render("  {{vars.a}}\n", json!({"vars": {"a": "x"}})).0, "  x\n");
    // The text outside sections, as budgeted, is the text left after the lines went.
    assert_eq!(Template::compile("a\n{{#x}}\nb\n{{/x}}\nc").unwrap().fixed_len(), "a\nc".len());
}

#[test]
fn zero_empty_strings_and_empty_lists_are_falsy_objects_are_not() {
    let t = "{{#vars.v}}shown{{/vars.v}}{{^vars.v}}hidden{{/vars.v}}";
    for falsy in [json!(0), json!(0.0), json!(-0.0), json!(""), json!([]), json!(false), json!(null)] {
        assert_eq!(render(t, json!({"vars": {"v": falsy}})).0, "hidden", "{falsy}");
    }
    assert_eq!(render(t, json!({"vars": {}})).0, "hidden");
    for truthy in [json!(1), json!(0.5), json!("0"), json!(" "), json!([0]), json!({}), json!(true)] {
        assert_eq!(render(t, json!({"vars": {"v": truthy}})).0, "shown", "{truthy}");
    }
    // Interpolated, a zero is still written.
    assert_eq!(render("[{{vars.v}}]", json!({"vars": {"v": 0}})), ("[0]".to_string(), 0));
}

#[test]
fn a_dotted_name_resolves_from_the_innermost_scope_that_has_all_of_it() {
    let t = "{{#vars.a}}[{{b.c}}]{{/vars.a}}";
    // `b` in the section's value lacks `c`: the name resolves further out.
    let data = json!({"vars": {"a": {"b": {}}}, "b": {"c": "outer"}});
    assert_eq!(render(t, data), ("[outer]".to_string(), 0));
    // A null is a value: it masks the outer one, and renders empty as missing.
    let data = json!({"vars": {"a": {"b": {"c": null}}}, "b": {"c": "outer"}});
    assert_eq!(render(t, data), ("[]".to_string(), 1));
    assert_eq!(render(t, json!({"vars": {"a": {"b": {}}}})), ("[]".to_string(), 1));
}

#[test]
fn digits_index_a_list() {
    let data = json!({"vars": {"items": ["a", {"name": "b"}]}});
    assert_eq!(
        render("{{vars.items.0}}|{{vars.items.1.name}}|{{vars.items.2}}", data.clone()),
        ("a|b|".to_string(), 1)
    );
    assert_eq!(render("{{#vars.items.1}}{{name}}{{/vars.items.1}}", data.clone()).0, "b");
    // No sign, no leading zero, no `length`.
    assert_eq!(render("{{vars.items.01}}{{vars.items.+1}}{{vars.items.length}}", data), (String::new(), 3));
}

#[test]
fn an_empty_list_renders_as_nothing_other_values_as_json() {
    let data = json!({"vars": {"e": [], "l": [1, "a"], "o": {"k": true}, "t": true, "n": 1.0}});
    assert_eq!(
        render("[{{vars.e}}][{{vars.l}}][{{vars.o}}][{{vars.t}}][{{vars.n}}]", data),
        (r#"[][[1,"a"]][{"k":true}][true][1.0]"#.to_string(), 0)
    );
}
