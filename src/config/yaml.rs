//! YAML → `serde_json::Value` with a location for every node, and `${VAR}` interpolation.
//!
//! The config is parsed once into a JSON value tree so that one deserializer (serde,
//! wrapped by `serde_path_to_error`) reports type and unknown-field errors as a path, and
//! semantic validation reports paths too. [`Locations`] maps each path (in
//! `serde_path_to_error`'s format, e.g. `providers.openai.headers`, `x[0].y`) back to the
//! line and column where it was written, so every error reads `file:line:col: message`.
//!
//! Interpolation runs on scalars after parsing, so a secret taken from the environment
//! never appears in a syntax error and never shifts a line number.
//!
//! Parsing is bounded: an alias copies its anchored value, and all the aliases of a
//! document may copy at most [`MAX_ALIAS_NODES`] nodes in all (a "billion laughs" file is
//! refused at the alias that passes it); collections nest at most [`MAX_NESTING`] deep.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

/// Most nodes (scalars and collections) the aliases of one document may copy, in all.
pub const MAX_ALIAS_NODES: usize = 100_000;

/// Deepest nesting of collections in a document.
pub const MAX_NESTING: usize = 64;

/// A 1-based line and column in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub line: usize,
    pub col: usize,
}

impl From<Marker> for Location {
    fn from(m: Marker) -> Self {
        Location { line: m.line(), col: m.col() + 1 }
    }
}

/// Where each node of the document was written, by path.
#[derive(Debug, Default)]
pub struct Locations {
    /// Where each value starts.
    nodes: HashMap<String, Location>,
    /// Where each mapping key was written (the start of `key: value`).
    keys: HashMap<String, Location>,
}

impl Locations {
    /// The location of the value at `path`; if it was not written, the key of its
    /// nearest written ancestor.
    pub fn locate(&self, path: &str) -> Location {
        if let Some(loc) = self.nodes.get(path) {
            return *loc;
        }
        self.locate_key(path)
    }

    /// The location of the key that introduces `path` (or of its nearest written ancestor).
    pub fn locate_key(&self, path: &str) -> Location {
        let mut p = path;
        loop {
            if let Some(loc) = self.keys.get(p).or_else(|| self.nodes.get(p)) {
                return *loc;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.nodes.get(".").copied().unwrap_or(Location { line: 1, col: 1 }),
            }
        }
    }
}

/// A YAML syntax or interpolation error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub location: Location,
    pub message: String,
}

/// Parse `text` into a JSON value and the location of each of its nodes.
/// `env` resolves `${NAME}`; `${NAME:-default}` falls back when it is unset or empty.
pub fn load(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(Value, Locations), YamlError> {
    let mut builder = Builder {
        env,
        stack: Vec::new(),
        root: None,
        anchors: HashMap::new(),
        aliased: 0,
        open_anchors: Vec::new(),
        locations: Locations::default(),
        error: None,
    };
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, false) {
        return Err(YamlError { location: (*e.marker()).into(), message: e.info().to_string() });
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    let value = builder.root.unwrap_or(Value::Object(Map::new()));
    let mut locations = builder.locations;
    locations.nodes.entry(".".to_string()).or_insert(Location { line: 1, col: 1 });
    Ok((value, locations))
}

/// The YAML merge key.
const MERGE_KEY: &str = "<<";

/// A collection being built, with the path it lives at and how many nodes it holds so far.
enum Frame {
    Seq { path: String, items: Vec<Value>, nodes: usize },
    Map { path: String, map: Map<String, Value>, key: Option<String>, merges: Vec<Map<String, Value>>, nodes: usize },
}

struct Builder<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    stack: Vec<Frame>,
    root: Option<Value>,
    /// Each anchored value, with its number of nodes.
    anchors: HashMap<usize, (Value, usize)>,
    /// Nodes copied by aliases so far (bounded by [`MAX_ALIAS_NODES`]).
    aliased: usize,
    /// Anchor ids of the open collections, so the finished value can be recorded.
    open_anchors: Vec<usize>,
    locations: Locations,
    error: Option<YamlError>,
}

impl Builder<'_> {
    fn fail(&mut self, location: Location, message: String) {
        if self.error.is_none() {
            self.error = Some(YamlError { location, message });
        }
    }

    /// The path the next node will live at, or `None` when it is a mapping key.
    fn next_path(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(".".to_string()),
            Some(Frame::Seq { path, items, .. }) => Some(format!("{}[{}]", root_relative(path), items.len())),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map { path, key: Some(k), .. }) => Some(join(path, k)),
        }
    }

    /// Place a finished node of `nodes` nodes in its parent (or as the root).
    fn push_value(&mut self, value: Value, nodes: usize, anchor: usize, mark: Location) {
        if anchor > 0 {
            self.anchors.insert(anchor, (value.clone(), nodes));
        }
        if let Some(Frame::Seq { nodes: n, .. } | Frame::Map { nodes: n, .. }) = self.stack.last_mut() {
            *n = n.saturating_add(nodes);
        }
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { key, map, path, merges, .. }) => match key.take() {
                // A merge key (`<<: *anchor` or `<<: [*a, *b]`): its mappings fill in the
                // keys this mapping does not set itself, when the mapping ends.
                Some(k) if k == MERGE_KEY => match value {
                    Value::Object(m) => merges.push(m),
                    Value::Array(items) if items.iter().all(Value::is_object) => {
                        merges.extend(items.into_iter().filter_map(|v| match v {
                            Value::Object(m) => Some(m),
                            _ => None,
                        }));
                    }
                    _ => {
                        let at = path.clone();
                        self.fail(mark, format!("`<<` (merge key) in `{at}` needs a mapping or a list of mappings"));
                    }
                },
                Some(k) => {
                    map.insert(k, value);
                }
                None => {
                    let Value::String(k) = value else {
                        let at = path.clone();
                        self.fail(mark, format!("mapping keys must be strings (in `{at}`)"));
                        return;
                    };
                    if map.contains_key(&k) {
                        let at = join(path, &k);
                        self.fail(mark, format!("duplicate key `{at}`"));
                        return;
                    }
                    let key_path = join(path, &k);
                    self.locations.keys.insert(key_path, mark);
                    *key = Some(k);
                }
            },
        }
    }

    fn scalar(&mut self, raw: String, style: TScalarStyle, tag: Option<Tag>, mark: Location) -> Value {
        let is_key = self.next_path().is_none();
        let explicit_str = tag.as_ref().is_some_and(|t| t.handle == "!!" && t.suffix == "str");
        let plain = style == TScalarStyle::Plain && !explicit_str;
        let interpolated = raw.contains("${") && !is_key;
        let text = if interpolated {
            match interpolate(&raw, self.env) {
                // `${UNSET:-}` is an empty string, not a YAML null.
                Ok(s) if s.is_empty() => return Value::String(s),
                Ok(s) => s,
                Err(message) => {
                    self.fail(mark, message);
                    return Value::Null;
                }
            }
        } else {
            raw
        };
        if !plain || is_key {
            return Value::String(text);
        }
        match Yaml::from_str(&text) {
            Yaml::Null => Value::Null,
            Yaml::Boolean(b) => Value::Bool(b),
            Yaml::Integer(i) => Value::Number(i.into()),
            Yaml::Real(r) => {
                r.parse::<f64>().ok().and_then(Number::from_f64).map_or(Value::String(text), Value::Number)
            }
            _ => Value::String(text),
        }
    }
}

fn root_relative(path: &str) -> &str {
    if path == "." {
        ""
    } else {
        path
    }
}

fn join(path: &str, key: &str) -> String {
    match root_relative(path) {
        "" => key.to_string(),
        p => format!("{p}.{key}"),
    }
}

impl Builder<'_> {
    /// Copy the value anchored as `id`, within the document's alias budget: the size is
    /// checked before anything is copied.
    fn alias(&mut self, id: usize, mark: Location) {
        let Some(&(_, nodes)) = self.anchors.get(&id) else {
            return self.fail(mark, "alias to an unknown anchor".to_string());
        };
        self.aliased = self.aliased.saturating_add(nodes);
        if self.aliased > MAX_ALIAS_NODES {
            return self.fail(
                mark,
                format!("aliases expand to more than {MAX_ALIAS_NODES} nodes in all; write the values out instead"),
            );
        }
        if let Some((value, _)) = self.anchors.get(&id).cloned() {
            self.push_value(value, nodes, 0, mark);
        }
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, marker: Marker) {
        if self.error.is_some() {
            return;
        }
        let mark = Location::from(marker);
        match ev {
            Event::Scalar(raw, style, anchor, tag) => {
                if let Some(path) = self.next_path() {
                    self.locations.nodes.insert(path, mark);
                }

                let value = self.scalar(raw, style, tag, mark);
                self.push_value(value, 1, anchor, mark);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                let Some(path) = self.next_path() else {
                    self.fail(mark, "mapping keys must be strings".to_string());
                    return;
                };
                if self.stack.len() == MAX_NESTING {
                    self.fail(mark, format!("collections nest more than {MAX_NESTING} deep"));
                    return;
                }
                self.locations.nodes.insert(path.clone(), mark);
                self.open_anchors.push(anchor);
                self.stack.push(if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq { path, items: Vec::new(), nodes: 0 }
                } else {
                    Frame::Map { path, map: Map::new(), key: None, merges: Vec::new(), nodes: 0 }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let anchor = self.open_anchors.pop().unwrap_or(0);
                let (value, nodes) = match self.stack.pop() {
                    Some(Frame::Seq { items, nodes, .. }) => (Value::Array(items), nodes),
                    Some(Frame::Map { mut map, merges, nodes, .. }) => {
                        for merged in merges {
                            for (k, v) in merged {
                                map.entry(k).or_insert(v);
                            }
                        }
                        (Value::Object(map), nodes)
                    }
                    None => return,
                };
                self.push_value(value, nodes.saturating_add(1), anchor, mark);
            }
            Event::Alias(id) => self.alias(id, mark),
            Event::DocumentStart | Event::DocumentEnd | Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
}

/// Replace `${NAME}` and `${NAME:-default}` in `raw`; `$${` is a literal `${`.
/// The error names the variable, never a value.
fn interpolate(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find('}') else {
            return Err("unterminated `${` in value".to_string());
        };
        let expr = &rest[i + 2..i + end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!("invalid environment variable name `{name}` in `${{...}}`"));
        }
        match (env(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable `{name}` is not set (use `${{{name}:-default}}` for a default)"
                ))
            }
        }
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("9000".into()),
            "KEY" => Some("s3cret".into()),
            _ => None,
        }
    }

    #[test]
    fn builds_values_with_locations() {
        let text = "a: 1\nb:\n  c: [x, 2.5, true]\n  d: \"7\"\nlist:\n  - name: n\n    v: ~\n";
        let (v, locs) = load(text, &env).unwrap();
        assert_eq!(v, json!({"a":1,"b":{"c":["x",2.5,true],"d":"7"},"list":[{"name":"n","v":null}]}));
        assert_eq!(locs.locate("a"), Location { line: 1, col: 4 });
        assert_eq!(locs.locate("b.d"), Location { line: 4, col: 6 });
        assert_eq!(locs.locate("list[0].v"), Location { line: 7, col: 8 });
        assert_eq!(locs.locate("b.c[1]"), Location { line: 3, col: 10 });
        // An unwritten child falls back to its nearest written ancestor.
        assert_eq!(locs.locate("b.zzz"), Location { line: 2, col: 1 });
        assert_eq!(locs.locate_key("list[0].v"), Location { line: 7, col: 5 });
    }

    #[test]
    fn interpolates_and_retypes_plain_scalars() {
        let text = "port: ${PORT}\nquoted: \"${PORT}\"\nkey: x-${KEY}\ndef: ${NOPE:-fallback}\nlit: $${HOME}\n";
        let (v, _) = load(text, &env).unwrap();
        assert_eq!(v, json!({"port":9000,"quoted":"9000","key":"x-s3cret","def":"fallback","lit":"${HOME}"}));
    }

    #[test]
    fn missing_variable_is_located_and_names_no_value() {
        let err = load("a: 1\nb: ${MISSING}\n", &env).unwrap_err();
        assert_eq!(err.location, Location { line: 2, col: 4 });
        assert!(err.message.contains("MISSING"), "{}", err.message);
    }

    #[test]
    fn duplicate_keys_and_syntax_errors_are_located() {
        let err = load("a: 1\na: 2\n", &env).unwrap_err();
        assert_eq!(err.location.line, 2);
        assert!(err.message.contains("duplicate key `a`"));
        let err = load("a: [1, 2\nb: 3\n", &env).unwrap_err();
        assert!(err.location.line >= 1);
    }

    #[test]
    fn merge_keys_fill_in_without_overriding() {
        let text = "base: &b {x: 1, y: 2}\nother: &o {z: 3}\nm:\n  y: 9\n  <<: [*b, *o]\n";
        let (v, _) = load(text, &env).unwrap();
        assert_eq!(v["m"], json!({"x":1,"y":9,"z":3}));
        assert!(load("m:\n  <<: 5\n", &env).is_err());
    }

    /// The "billion laughs" document: 10 anchors, each a list of ten aliases to the one
    /// before, `levels` deep.
    fn laughs(levels: usize) -> String {
        let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..levels {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        text
    }

    #[test]
    fn an_alias_bomb_is_refused_at_the_alias_that_passes_the_budget() {
        // 10⁴ laughs are fine; 10⁹ (which would take gigabytes) are refused.
        assert!(load(&laughs(4), &env).is_ok());
        let err = load(&laughs(10), &env).unwrap_err();
        assert!(err.message.contains("aliases expand to more than 100000 nodes"), "{}", err.message);
        // a3 holds 11,111 nodes: the aliases to it on line 5 (a4) pass the budget.
        assert_eq!(err.location.line, 5, "{err:?}");
        assert!(err.location.col > 1);
    }

    #[test]
    fn collections_nested_too_deep_are_refused() {
        let ok = format!("a: {}{}\n", "[".repeat(MAX_NESTING - 1), "]".repeat(MAX_NESTING - 1));
        assert!(load(&ok, &env).is_ok());
        let deep = format!("a: {}{}\n", "[".repeat(200), "]".repeat(200));
        let err = load(&deep, &env).unwrap_err();
        assert!(err.message.contains("nest more than 64 deep"), "{}", err.message);
    }

    #[test]
    fn anchors_and_aliases_copy_values() {
        let (v, _) = load("base: &b {x: 1}\nother: *b\n", &env).unwrap();
        assert_eq!(v, json!({"base":{"x":1},"other":{"x":1}}));
    }
}
