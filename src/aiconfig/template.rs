//! Mustache templates for AI config messages, compiled once when the config loads.
//!
//! Supported: variables `{{a.b}}` (and `{{{a.b}}}` / `{{& a.b}}`, the same here: nothing
//! is ever HTML-escaped), sections `{{#a}}...{{/a}}` (shown when truthy; repeated for
//! each element of a list, with `{{.}}` the element), inverted sections `{{^a}}...{{/a}}`
//! and comments `{{! ...}}`. Partials and delimiter changes are not supported and are
//! refused when the template compiles. A variable that is not there renders empty and
//! is counted, so a prompt missing a value is visible.
//!
//! The semantics are those of the libraries behind LaunchDarkly's AI SDKs (mustache.js
//! in Node, chevron in Python) and of the Mustache spec, whose fixtures
//! `tests/mustache_spec.rs` runs; the README's "Template semantics" says where they
//! differ and what sluice chose. In short: a section, inverted section, closing or
//! comment tag alone on its line removes the whole line, its line ending included;
//! `false`, `null`, `0`, `""` and `[]` are falsy; a dotted name resolves from the
//! innermost scope where all of it resolves; a part of digits indexes a list; a number,
//! boolean, list or object renders as compact JSON, an empty list as nothing.
//!
//! Both steps are bounded. Sections nest at most [`MAX_SECTION_DEPTH`] deep (deeper is
//! refused when the template compiles, so rendering recurses no deeper). Rendering
//! spends a [`Budget`]: bytes of output (counted before they are written, a list or
//! object included, which is written piece by piece) and section repetitions, nested
//! ones included — so the work a request's values can cause is bounded by the budget,
//! not by the product of its list lengths.

use serde_json::Value;

/// Deepest nesting of sections a template may have.
pub const MAX_SECTION_DEPTH: usize = 32;

/// Most section repetitions (a list element, a shown section) one request's rendering may
/// take, over all of a version's messages.
pub const MAX_SECTION_ITERATIONS: usize = 10_000;

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

/// What one request's rendering may still spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    output_limit: usize,
    output_left: usize,
    iterations_left: usize,
}

impl Budget {
    /// `output` bytes of rendered text and [`MAX_SECTION_ITERATIONS`] repetitions.
    pub fn new(output: usize) -> Budget {
        Budget { output_limit: output, output_left: output, iterations_left: MAX_SECTION_ITERATIONS }
    }

    fn spend_output(&mut self, bytes: usize) -> Result<(), RenderError> {
        match self.output_left.checked_sub(bytes) {
            Some(left) => {
                self.output_left = left;
                Ok(())
            }
            None => Err(RenderError::TooLarge { limit: self.output_limit }),
        }
    }

    fn spend_iteration(&mut self) -> Result<(), RenderError> {
        match self.iterations_left.checked_sub(1) {
            Some(left) => {
                self.iterations_left = left;
                Ok(())
            }
            None => Err(RenderError::TooManyIterations { limit: MAX_SECTION_ITERATIONS }),
        }
    }
}

/// Why rendering stopped: the request's values would make the output too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("its output would exceed {limit} bytes")]
    TooLarge { limit: usize },
    #[error("its sections would repeat more than {limit} times")]
    TooManyIterations { limit: usize },
}

/// Where names are looked up: a stack of values, innermost last.
pub trait Scope {
    /// The value of a top-level name.
    fn lookup(&self, name: &str) -> Option<&Value>;
}

impl Template {
    /// Compile template text.
    pub fn compile(text: &str) -> Result<Template, TemplateError> {
        let nodes = parse(text)?;
        let literal = nodes.iter().all(|n| matches!(n, Node::Text(_)));
        Ok(Template { nodes, literal })
    }

    /// The bytes every rendering writes whatever the values: the text outside sections.
    pub fn fixed_len(&self) -> usize {
        self.nodes.iter().map(|n| if let Node::Text(t) = n { t.len() } else { 0 }).sum()
    }

    /// The first part of every name outside sections (e.g. `ldctx`, `vars`): the names
    /// that can only resolve at the root. Inside a section a name first reads the
    /// section's value (`{{#vars.orders}}{{id}}{{/vars.orders}}`), so it is not listed.
    pub fn roots(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for n in &self.nodes {
            if let Node::Var(name) | Node::Section { name, .. } = n {
                if let Some(first) = name.first() {
                    if &**first != "." && !out.contains(&&**first) {
                        out.push(first);
                    }
                }
            }
        }
        out
    }

    /// Render into `out`, spending `budget`; returns how many variables were missing.
    /// On an error `out` holds a partial rendering, to be thrown away.
    pub fn render(&self, scope: &dyn Scope, out: &mut String, budget: &mut Budget) -> Result<usize, RenderError> {
        if self.literal {
            for n in &self.nodes {
                if let Node::Text(t) = n {
                    budget.spend_output(t.len())?;
                    out.push_str(t);
                }
            }
            return Ok(0);
        }
        let mut stack: Vec<&Value> = Vec::with_capacity(MAX_SECTION_DEPTH);
        let mut r = Render { scope, out, budget, missing: 0 };
        r.nodes(&self.nodes, &mut stack)?;
        Ok(r.missing)
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

/// A section whose closing tag is not reached yet.
struct Open {
    /// The name as written, to match its closing tag.
    written: Box<str>,
    name: Vec<Box<str>>,
    inverted: bool,
    /// The nodes of the enclosing level, so far.
    outer: Vec<Node>,
}

/// Parse the whole of `text`. Sections are kept on an explicit stack, at most
/// [`MAX_SECTION_DEPTH`] deep, so no template can exhaust the thread's stack.
fn parse(text: &str) -> Result<Vec<Node>, TemplateError> {
    let mut open: Vec<Open> = Vec::new();
    let mut nodes = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &text[pos..];
        let Some(start) = rest.find("{{") else {
            if let Some(o) = open.last() {
                return Err(TemplateError {
                    at: text.len(),
                    message: format!("section `{}` is never closed", o.written),
                });
            }
            if !rest.is_empty() {
                nodes.push(Node::Text(rest.into()));
            }
            return Ok(nodes);
        };
        let tag_at = pos + start;
        let after = &text[tag_at + 2..];
        let (inner, len) = if let Some(stripped) = after.strip_prefix('{') {
            let end = stripped.find("}}}").ok_or(TemplateError { at: tag_at, message: "unclosed `{{{`".into() })?;
            (format!("&{}", &stripped[..end]), 3 + end + 3)
        } else {
            let end = after.find("}}").ok_or(TemplateError { at: tag_at, message: "unclosed `{{`".into() })?;
            (after[..end].to_string(), 2 + end + 2)
        };
        let inner = inner.trim();
        let (sigil, name) = match inner.chars().next() {
            Some(c @ ('#' | '^' | '/' | '!' | '&' | '>' | '=')) => (Some(c), inner[1..].trim()),
            _ => (None, inner),
        };
        // A section, inverted section, closing or comment tag alone on its line takes the
        // line with it: its indentation, trailing blanks and line ending.
        let line_end = match sigil {
            Some('#' | '^' | '/' | '!') => standalone(text, tag_at, tag_at + len),
            _ => None,
        };
        let before = &rest[..start];
        let before = if line_end.is_some() { before.trim_end_matches(BLANK) } else { before };
        if !before.is_empty() {
            nodes.push(Node::Text(before.into()));
        }
        pos = line_end.unwrap_or(tag_at + len);
        match sigil {
            Some('!') => {}
            Some('&') | None => nodes.push(Node::Var(split_name(name, tag_at)?)),
            Some(c @ ('#' | '^')) => {
                if open.len() == MAX_SECTION_DEPTH {
                    return Err(TemplateError {
                        at: tag_at,
                        message: format!("sections nest more than {MAX_SECTION_DEPTH} deep"),
                    });
                }
                let split = split_name(name, tag_at)?;
                let outer = std::mem::take(&mut nodes);
                open.push(Open { written: name.into(), name: split, inverted: c == '^', outer });
            }
            Some('/') => match open.pop() {
                Some(o) if *o.written == *name => {
                    let body = std::mem::replace(&mut nodes, o.outer);
                    nodes.push(Node::Section { name: o.name, inverted: o.inverted, body });
                }
                Some(o) => {
                    return Err(TemplateError {
                        at: tag_at,
                        message: format!("`{{{{/{name}}}}}` closes `{}`", o.written),
                    })
                }
                None => return Err(TemplateError { at: tag_at, message: format!("`{{{{/{name}}}}}` closes nothing") }),
            },
            _ => {
                return Err(TemplateError {
                    at: tag_at,
                    message: "partials (`{{>`) and delimiter changes (`{{=`) are not supported".into(),
                })
            }
        }
    }
}

/// Spaces and tabs: what may surround a standalone tag on its line.
const BLANK: [char; 2] = [' ', '\t'];

/// Where the line of the tag at `tag_at..tag_end` ends, its line ending included, if
/// the tag stands alone on it: only blanks between the line's start (or the template's)
/// and the tag, and between the tag and the line's end (`\n`, `\r\n` or the template's).
fn standalone(text: &str, tag_at: usize, tag_end: usize) -> Option<usize> {
    let line_start = text[..tag_at].rfind('\n').map_or(0, |i| i + 1);
    if !text[line_start..tag_at].chars().all(|c| BLANK.contains(&c)) {
        return None;
    }
    let after = &text[tag_end..];
    let trailing = after.trim_start_matches(BLANK);
    let blanks = after.len() - trailing.len();
    let ending = if trailing.is_empty() {
        0
    } else if trailing.starts_with("\r\n") {
        2
    } else if trailing.starts_with('\n') {
        1
    } else {
        return None;
    };
    Some(tag_end + blanks + ending)
}

/// Resolve a dotted name as mustache.js and chevron do: from the innermost scope in
/// which the whole name resolves (the last part may hold `null`), else from the root.
/// A part of digits indexes a list (`items.0`).
fn resolve<'a>(name: &[Box<str>], scope: &'a dyn Scope, stack: &[&'a Value]) -> Option<&'a Value> {
    let (first, rest) = name.split_first()?;
    let walk = |v: &'a Value| rest.iter().try_fold(v, |v, part| member(v, part));
    if &**first == "." {
        return stack.last().and_then(|v| walk(v));
    }
    stack.iter().rev().filter_map(|v| member(v, first)).chain(scope.lookup(first)).find_map(walk)
}

/// `v.part`: an object's member, or a list's element when `part` is an index written
/// without a sign or leading zeros.
fn member<'a>(v: &'a Value, part: &str) -> Option<&'a Value> {
    match v {
        Value::Object(o) => o.get(part),
        Value::Array(a) if part == "0" || (!part.starts_with('0') && part.bytes().all(|b| b.is_ascii_digit())) => {
            part.parse::<usize>().ok().and_then(|i| a.get(i))
        }
        _ => None,
    }
}

/// Whether a section shows: not `false`, `null`, `0`, `""` or `[]` (the spec's and
/// mustache.js's JavaScript truthiness, which chevron shares for these values).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Array(a) => !a.is_empty(),
        Value::String(s) => !s.is_empty(),
        Value::Object(_) => true,
    }
}

/// One rendering: where it writes and what it may still spend.
struct Render<'a, 'o> {
    scope: &'a dyn Scope,
    out: &'o mut String,
    budget: &'o mut Budget,
    missing: usize,
}

impl<'a> Render<'a, '_> {
    /// Render `nodes`; recursion follows the template's sections, at most
    /// [`MAX_SECTION_DEPTH`] deep.
    fn nodes(&mut self, nodes: &'a [Node], stack: &mut Vec<&'a Value>) -> Result<(), RenderError> {
        for n in nodes {
            match n {
                Node::Text(t) => self.text(t)?,
                Node::Var(name) => match resolve(name, self.scope, stack) {
                    Some(Value::String(s)) => self.text(s)?,
                    Some(Value::Null) | None => self.missing += 1,
                    // As both SDKs' libraries render it.
                    Some(Value::Array(a)) if a.is_empty() => {}
                    Some(other) => self.json(other)?,
                },
                Node::Section { name, inverted, body } => {
                    let v = resolve(name, self.scope, stack);
                    let shown = v.is_some_and(truthy);
                    if *inverted {
                        if !shown {
                            self.budget.spend_iteration()?;
                            self.nodes(body, stack)?;
                        }
                        continue;
                    }
                    match v {
                        Some(Value::Array(items)) => {
                            for item in items {
                                self.budget.spend_iteration()?;
                                stack.push(item);
                                let result = self.nodes(body, stack);
                                stack.pop();
                                result?;
                            }
                        }
                        Some(v) if truthy(v) => {
                            self.budget.spend_iteration()?;
                            stack.push(v);
                            let result = self.nodes(body, stack);
                            stack.pop();
                            result?;
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    fn text(&mut self, t: &str) -> Result<(), RenderError> {
        self.budget.spend_output(t.len())?;
        self.out.push_str(t);
        Ok(())
    }

    /// A list, object, number or boolean as compact JSON, written piece by piece so
    /// that the budget stops it before it is all in memory.
    fn json(&mut self, v: &Value) -> Result<(), RenderError> {
        let mut w = Bounded { out: self.out, budget: self.budget, stopped: None };
        match serde_json::to_writer(&mut w, v) {
            Ok(()) => Ok(()),
            Err(_) => Err(w.stopped.unwrap_or(RenderError::TooLarge { limit: w.budget.output_limit })),
        }
    }
}

/// An `io::Write` into the output that spends the budget before each write.
struct Bounded<'o> {
    out: &'o mut String,
    budget: &'o mut Budget,
    stopped: Option<RenderError>,
}

impl std::io::Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Err(e) = self.budget.spend_output(buf.len()) {
            self.stopped = Some(e);
            return Err(std::io::Error::other(e));
        }
        // serde_json writes whole characters: each piece is valid UTF-8.
        let s = std::str::from_utf8(buf).map_err(std::io::Error::other)?;
        self.out.push_str(s);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
