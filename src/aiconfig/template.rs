//! Mustache templates for AI config messages, compiled once when the config loads.
//!
//! Supported: variables `{{a.b}}` (and `{{{a.b}}}` / `{{& a.b}}`, the same here: nothing
//! is ever HTML-escaped), sections `{{#a}}...{{/a}}` (shown when truthy; repeated for
//! each element of a list, with `{{.}}` the element), inverted sections `{{^a}}...{{/a}}`
//! and comments `{{! ...}}`. Partials and delimiter changes are not supported and are
//! refused when the template compiles. A variable that is not there renders empty and
//! is counted, so a prompt missing a value is visible.

use serde_json::Value;

/// A compiled template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
    /// Whether the template is plain text (then rendering is a copy).
    literal: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(Box<str>),
    /// A dotted name, split; `["."]` is the current element.
    Var(Vec<Box<str>>),
    Section {
        name: Vec<Box<str>>,
        inverted: bool,
        body: Vec<Node>,
    },
}

/// Why a template does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template error at byte {at}: {message}")]
pub struct TemplateError {
    pub at: usize,
    pub message: String,
}

/// Where names are looked up: a stack of values, innermost last.
pub trait Scope {
    /// The value of a top-level name.
    fn lookup(&self, name: &str) -> Option<&Value>;
}

impl Template {
    /// Compile template text.
    pub fn compile(text: &str) -> Result<Template, TemplateError> {
        let mut pos = 0;
        let nodes = parse(text, &mut pos, None)?;
        let literal = nodes.iter().all(|n| matches!(n, Node::Text(_)));
        Ok(Template { nodes, literal })
    }

    /// Every top-level name the template refers to (e.g. `ldctx`, `vars`).
    pub fn roots(&self) -> Vec<&str> {
        let mut out = Vec::new();
        collect_roots(&self.nodes, &mut out);
        out
    }

    /// Render into `out`; returns how many variables were missing.
    pub fn render(&self, scope: &dyn Scope, out: &mut String) -> usize {
        if self.literal {
            for n in &self.nodes {
                if let Node::Text(t) = n {
                    out.push_str(t);
                }
            }
            return 0;
        }
        let mut stack: Vec<&Value> = Vec::new();
        render_nodes(&self.nodes, scope, &mut stack, out)
    }
}

fn collect_roots<'a>(nodes: &'a [Node], out: &mut Vec<&'a str>) {
    for n in nodes {
        match n {
            Node::Text(_) => {}
            Node::Var(name) | Node::Section { name, .. } => {
                if let Some(first) = name.first() {
                    if &**first != "." && !out.contains(&&**first) {
                        out.push(first);
                    }
                }
                if let Node::Section { body, .. } = n {
                    collect_roots(body, out);
                }
            }
        }
    }
}

fn split_name(name: &str, at: usize) -> Result<Vec<Box<str>>, TemplateError> {
    let name = name.trim();
    if name == "." {
        return Ok(vec![".".into()]);
    }
    if name.is_empty() || name.split('.').any(str::is_empty) {
        return Err(TemplateError { at, message: format!("invalid name `{name}`") });
    }
    Ok(name.split('.').map(Box::from).collect())
}

/// Parse until the end of `text` or the closing tag of `open`.
fn parse(text: &str, pos: &mut usize, open: Option<&str>) -> Result<Vec<Node>, TemplateError> {
    let mut nodes = Vec::new();
    loop {
        let rest = &text[*pos..];
        let Some(start) = rest.find("{{") else {
            if let Some(name) = open {
                return Err(TemplateError { at: text.len(), message: format!("section `{name}` is never closed") });
            }
            if !rest.is_empty() {
                nodes.push(Node::Text(rest.into()));
            }
            *pos = text.len();
            return Ok(nodes);
        };
        if start > 0 {
            nodes.push(Node::Text(rest[..start].into()));
        }
        let tag_at = *pos + start;
        let after = &text[tag_at + 2..];
        let (inner, len) = if let Some(stripped) = after.strip_prefix('{') {
            let end = stripped.find("}}}").ok_or(TemplateError { at: tag_at, message: "unclosed `{{{`".into() })?;
            (format!("&{}", &stripped[..end]), 3 + end + 3)
        } else {
            let end = after.find("}}").ok_or(TemplateError { at: tag_at, message: "unclosed `{{`".into() })?;
            (after[..end].to_string(), 2 + end + 2)
        };
        *pos = tag_at + len;
        let inner = inner.trim();
        let (sigil, name) = match inner.chars().next() {
            Some(c @ ('#' | '^' | '/' | '!' | '&' | '>' | '=')) => (Some(c), inner[1..].trim()),
            _ => (None, inner),
        };
        match sigil {
            Some('!') => {}
            Some('&') | None => nodes.push(Node::Var(split_name(name, tag_at)?)),
            Some(c @ ('#' | '^')) => {
                let body = parse(text, pos, Some(name))?;
                nodes.push(Node::Section { name: split_name(name, tag_at)?, inverted: c == '^', body });
            }
            Some('/') => {
                return match open {
                    Some(o) if o == name => Ok(nodes),
                    Some(o) => Err(TemplateError { at: tag_at, message: format!("`{{{{/{name}}}}}` closes `{o}`") }),
                    None => Err(TemplateError { at: tag_at, message: format!("`{{{{/{name}}}}}` closes nothing") }),
                };
            }
            _ => {
                return Err(TemplateError {
                    at: tag_at,
                    message: "partials (`{{>`) and delimiter changes (`{{=`) are not supported".into(),
                })
            }
        }
    }
}

/// Resolve a dotted name: the first part from the innermost scope that has it.
fn resolve<'a>(name: &[Box<str>], scope: &'a dyn Scope, stack: &[&'a Value]) -> Option<&'a Value> {
    let (first, rest) = name.split_first()?;
    let mut v = if &**first == "." {
        *stack.last()?
    } else {
        stack.iter().rev().find_map(|v| v.get(&**first)).or_else(|| scope.lookup(first))?
    };
    for part in rest {
        v = v.get(&**part)?;
    }
    Some(v)
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Array(a) => !a.is_empty(),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn render_nodes<'a>(nodes: &'a [Node], scope: &'a dyn Scope, stack: &mut Vec<&'a Value>, out: &mut String) -> usize {
    let mut missing = 0;
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Var(name) => match resolve(name, scope, stack) {
                Some(Value::String(s)) => out.push_str(s),
                Some(Value::Null) | None => missing += 1,
                Some(other) => out.push_str(&other.to_string()),
            },
            Node::Section { name, inverted, body } => {
                let v = resolve(name, scope, stack);
                let shown = v.is_some_and(truthy);
                if *inverted {
                    if !shown {
                        missing += render_nodes(body, scope, stack, out);
                    }
                    continue;
                }
                match v {
                    Some(Value::Array(items)) => {
                        for item in items {
                            stack.push(item);
                            missing += render_nodes(body, scope, stack, out);
                            stack.pop();
                        }
                    }
                    Some(v) if truthy(v) => {
                        stack.push(v);
                        missing += render_nodes(body, scope, stack, out);
                        stack.pop();
                    }
                    _ => {}
                }
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
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
        let missing = Template::compile(t).unwrap().render(&S(data), &mut out);
        (out, missing)
    }

    #[test]
    fn renders_variables_without_escaping() {
        let data = json!({"ldctx": {"email": "a&b@<x>.com", "user": {"name": "Ada"}, "n": 3}, "vars": {"topic": "\"billing\""}});
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
}
