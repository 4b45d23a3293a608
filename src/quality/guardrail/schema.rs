//! A small JSON Schema validator: the subset OpenAI structured outputs allow.
//!
//! Not the `jsonschema` crate: even without default features it brings ~70 crates
//! (`fancy-regex`, `fraction`, `referencing`, …), its backtracking `pattern` engine is a
//! poor fit for schemas that come from the app's request (hostile input), and it compiles
//! a validator per schema where this walks the schema value once per answer.
//!
//! Supported: boolean schemas, `type` (one or a list; `integer` is a number with no
//! fraction), `enum`, `const` (numbers compare by value), `anyOf`, `allOf`, `oneOf`, `not`,
//! `properties`, `required`, `additionalProperties`, `minProperties`/`maxProperties`,
//! `items` (a schema, or a list: the tuple form), `prefixItems`, `minItems`/`maxItems`,
//! `minLength`/`maxLength` (in chars), `pattern` (the `regex` crate, size-limited, at
//! most [`MAX_PATTERNS`] per answer),
//! `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum`/`multipleOf`, and `$ref` to
//! a local JSON pointer (`#`, `#/$defs/…`, `#/definitions/…`). Other keywords (`format`,
//! `uniqueItems`, remote `$ref`s, a `pattern` the `regex` crate cannot compile) are not
//! checked: they pass. A schema with `patternProperties` is not checked at all, as its
//! interplay with `additionalProperties` is not modelled.
//!
//! The work is bounded: a schema over [`MAX_SCHEMA_BYTES`] or nested deeper than
//! [`MAX_SCHEMA_DEPTH`], evaluation deeper than [`MAX_EVAL_DEPTH`] (a `$ref` cycle) or
//! longer than [`MAX_STEPS`] schema nodes (`anyOf` blow-up) cannot be checked, and
//! [`check`] says so (`None`); the guardrail then passes the answer.

use regex::Regex;
use serde_json::{Map, Value};

use crate::config::guardrails::compile_regex;

/// Largest `response_format` whose schema is checked.
pub const MAX_SCHEMA_BYTES: usize = 64 << 10;
/// Deepest schema (nested objects and arrays) that is checked.
pub const MAX_SCHEMA_DEPTH: usize = 32;
/// Deepest evaluation (schema descent, `$ref`s included).
pub const MAX_EVAL_DEPTH: usize = 64;
/// Most schema nodes one answer is checked against.
pub const MAX_STEPS: usize = 20_000;

/// Most distinct `pattern`s compiled for one answer (more are not checked).
pub const MAX_PATTERNS: usize = 16;

/// Work beyond the bounds: the answer cannot be checked.
struct Unknown;

/// Whether `instance` matches `schema` (`None`: cannot tell, see the module doc).
pub fn check(schema: &Value, instance: &Value) -> Option<bool> {
    if depth(schema, 0) > MAX_SCHEMA_DEPTH || has_key(schema, "patternProperties") {
        return None;
    }
    let mut v = Validator { root: schema, steps: 0, patterns: Vec::new() };
    v.valid(schema, instance, 0).ok()
}

/// The nesting depth of `value`, counting no further than one past the limit.
fn depth(value: &Value, at: usize) -> usize {
    if at > MAX_SCHEMA_DEPTH {
        return at;
    }
    match value {
        Value::Array(a) => a.iter().map(|c| depth(c, at + 1)).max().unwrap_or(at + 1),
        Value::Object(o) => o.values().map(|c| depth(c, at + 1)).max().unwrap_or(at + 1),
        _ => at,
    }
}

/// Whether any object in `value` (depth-bounded already) has `key`.
fn has_key(value: &Value, key: &str) -> bool {
    match value {
        Value::Object(o) => o.contains_key(key) || o.values().any(|c| has_key(c, key)),
        Value::Array(a) => a.iter().any(|c| has_key(c, key)),
        _ => false,
    }
}

struct Validator<'s> {
    root: &'s Value,
    steps: usize,
    /// `pattern`s compiled so far (`None`: not supported), each once per answer.
    patterns: Vec<(&'s str, Option<Regex>)>,
}

impl<'s> Validator<'s> {
    fn valid(&mut self, schema: &'s Value, instance: &Value, depth: usize) -> Result<bool, Unknown> {
        self.steps += 1;
        if self.steps > MAX_STEPS || depth > MAX_EVAL_DEPTH {
            return Err(Unknown);
        }
        let s = match schema {
            Value::Bool(b) => return Ok(*b),
            Value::Object(s) => s,
            _ => return Ok(true),
        };
        if let Some(Value::String(r)) = s.get("$ref") {
            if let Some(target) = self.resolve(r) {
                if !self.valid(target, instance, depth + 1)? {
                    return Ok(false);
                }
            }
        }
        if let Some(t) = s.get("type") {
            let ok = match t {
                Value::String(t) => has_type(t, instance),
                Value::Array(ts) => ts.iter().any(|t| t.as_str().is_some_and(|t| has_type(t, instance))),
                _ => true,
            };
            if !ok {
                return Ok(false);
            }
        }
        if let Some(Value::Array(options)) = s.get("enum") {
            if !options.iter().any(|o| json_eq(o, instance)) {
                return Ok(false);
            }
        }
        if let Some(c) = s.get("const") {
            if !json_eq(c, instance) {
                return Ok(false);
            }
        }
        if !self.combinators(s, instance, depth)? {
            return Ok(false);
        }
        match instance {
            Value::Object(o) => self.object(s, o, depth),
            Value::Array(a) => self.array(s, a, depth),
            Value::String(text) => Ok(self.string(s, text)),
            Value::Number(n) => Ok(n.as_f64().is_none_or(|x| number(s, x))),
            _ => Ok(true),
        }
    }

    /// A local `$ref` (a JSON pointer into the root schema); `None` for others.
    fn resolve(&self, r: &str) -> Option<&'s Value> {
        let pointer = r.strip_prefix('#')?;
        if pointer.is_empty() {
            Some(self.root)
        } else {
            self.root.pointer(pointer)
        }
    }

    fn combinators(&mut self, s: &'s Map<String, Value>, instance: &Value, depth: usize) -> Result<bool, Unknown> {
        if let Some(Value::Array(all)) = s.get("allOf") {
            for sub in all {
                if !self.valid(sub, instance, depth + 1)? {
                    return Ok(false);
                }
            }
        }
        if let Some(Value::Array(any)) = s.get("anyOf") {
            let mut matched = false;
            for sub in any {
                if self.valid(sub, instance, depth + 1)? {
                    matched = true;
                    break;
                }
            }
            if !matched {
                return Ok(false);
            }
        }
        if let Some(Value::Array(one)) = s.get("oneOf") {
            let mut matched = 0;
            for sub in one {
                matched += usize::from(self.valid(sub, instance, depth + 1)?);
            }
            if matched != 1 {
                return Ok(false);
            }
        }
        if let Some(not) = s.get("not") {
            if self.valid(not, instance, depth + 1)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn object(&mut self, s: &'s Map<String, Value>, o: &Map<String, Value>, depth: usize) -> Result<bool, Unknown> {
        if let Some(Value::Array(required)) = s.get("required") {
            if required.iter().any(|r| r.as_str().is_some_and(|k| !o.contains_key(k))) {
                return Ok(false);
            }
        }
        if !within(o.len(), s.get("minProperties"), s.get("maxProperties")) {
            return Ok(false);
        }
        let properties = s.get("properties").and_then(Value::as_object);
        let additional = s.get("additionalProperties");
        for (key, value) in o {
            let sub = match properties.and_then(|p| p.get(key)) {
                Some(sub) => sub,
                None => match additional {
                    Some(sub) => sub,
                    None => continue,
                },
            };
            if !self.valid(sub, value, depth + 1)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn array(&mut self, s: &'s Map<String, Value>, a: &[Value], depth: usize) -> Result<bool, Unknown> {
        if !within(a.len(), s.get("minItems"), s.get("maxItems")) {
            return Ok(false);
        }
        // Draft 2020-12 `prefixItems` + `items`, or the older tuple form `items: [...]`
        // with `additionalItems`.
        let (prefix, rest) = match (s.get("prefixItems"), s.get("items")) {
            (Some(Value::Array(p)), items) => (p.as_slice(), items),
            (_, Some(Value::Array(p))) => (p.as_slice(), s.get("additionalItems")),
            (_, items) => (&[][..], items),
        };
        for (i, item) in a.iter().enumerate() {
            let sub = match prefix.get(i) {
                Some(sub) => sub,
                None => match rest {
                    Some(sub) => sub,
                    None => break,
                },
            };
            if !self.valid(sub, item, depth + 1)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl<'s> Validator<'s> {
    fn string(&mut self, s: &'s Map<String, Value>, text: &str) -> bool {
        if s.contains_key("minLength") || s.contains_key("maxLength") {
            let chars = text.chars().count();
            if !within(chars, s.get("minLength"), s.get("maxLength")) {
                return false;
            }
        }
        let Some(pattern) = s.get("pattern").and_then(Value::as_str) else { return true };
        let at = match self.patterns.iter().position(|(p, _)| *p == pattern) {
            Some(at) => at,
            None if self.patterns.len() >= MAX_PATTERNS => return true,
            None => {
                self.patterns.push((pattern, compile_regex(pattern).ok()));
                self.patterns.len() - 1
            }
        };
        self.patterns[at].1.as_ref().is_none_or(|re| re.is_match(text))
    }
}

/// Whether `instance` is of JSON Schema type `t` (an unknown type name does not restrict).
fn has_type(t: &str, instance: &Value) -> bool {
    match t {
        "object" => instance.is_object(),
        "array" => instance.is_array(),
        "string" => instance.is_string(),
        "number" => instance.is_number(),
        "integer" => match instance {
            Value::Number(n) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|x| x.fract() == 0.0),
            _ => false,
        },
        "boolean" => instance.is_boolean(),
        "null" => instance.is_null(),
        _ => true,
    }
}

/// JSON equality with numbers compared by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64().zip(y.as_f64()).is_some_and(|(x, y)| x == y),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Whether `n` is within the optional integer bounds `min` and `max`.
fn within(n: usize, min: Option<&Value>, max: Option<&Value>) -> bool {
    let n = n as u64;
    min.and_then(Value::as_u64).is_none_or(|m| n >= m) && max.and_then(Value::as_u64).is_none_or(|m| n <= m)
}

fn number(s: &Map<String, Value>, x: f64) -> bool {
    let bound = |k: &str| s.get(k).and_then(Value::as_f64);
    bound("minimum").is_none_or(|m| x >= m)
        && bound("maximum").is_none_or(|m| x <= m)
        && bound("exclusiveMinimum").is_none_or(|m| x > m)
        && bound("exclusiveMaximum").is_none_or(|m| x < m)
        && bound("multipleOf").filter(|m| *m > 0.0).is_none_or(|m| {
            let q = x / m;
            (q - q.round()).abs() <= 1e-9 * q.abs().max(1.0)
        })
}
