//! Evaluation contexts: who a flag is evaluated for.
//!
//! A context is one or more *kinds* (`user`, `org`, `device`...), each with a key and
//! attributes, exactly as LaunchDarkly models them. Parsing accepts LaunchDarkly's
//! context JSON — single-kind (`{"kind":"user","key":"a",...}`), multi-kind
//! (`{"kind":"multi","user":{...},"org":{...}}`) and the legacy user format (no `kind`,
//! custom attributes under `custom`). Parsing allocates; looking attributes up during
//! evaluation does not.

use std::sync::{Arc, LazyLock};

use serde_json::{Map, Value};

/// One kind of a context. Its parts are shared: a context made once (a client's) joins
/// every request's context without a copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Single {
    pub kind: Arc<str>,
    pub key: Arc<str>,
    pub name: Option<Arc<str>>,
    pub anonymous: bool,
    /// Every other attribute (for the legacy user format: the built-ins such as `email`
    /// and the entries of `custom`).
    pub attributes: Arc<Map<String, Value>>,
}

/// The kind `user` and no attributes, shared by every context made from a key alone.
static USER: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("user"));
static NO_ATTRIBUTES: LazyLock<Arc<Map<String, Value>>> = LazyLock::new(Arc::default);

impl Single {
    /// A `user` with just a key (and whether it is anonymous).
    pub fn user(key: &str, anonymous: bool) -> Self {
        Single {
            kind: Arc::clone(&USER),
            key: key.into(),
            name: None,
            anonymous,
            attributes: Arc::clone(&NO_ATTRIBUTES),
        }
    }
}

/// A context: one kind, or several (sorted by kind, each kind once).
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    kinds: Vec<Single>,
    multi: bool,
}

/// Why a context is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("a context must be a JSON object")]
    NotAnObject,
    #[error("`kind` must be a string")]
    KindNotString,
    #[error("invalid context kind `{0}` (use letters, digits, `.`, `_` and `-`; not `kind`)")]
    InvalidKind(String),
    #[error("a context of kind `{0}` needs a non-empty string `key`")]
    MissingKey(String),
    #[error("`{attribute}` of the `{kind}` context must be {expected}")]
    WrongType { kind: String, attribute: &'static str, expected: &'static str },
    #[error("a multi-kind context needs at least one kind")]
    EmptyMulti,
    #[error("`{0}` of a multi-kind context must be an object")]
    MultiMemberNotObject(String),
}

/// The legacy user format's built-in attributes, kept as ordinary attributes.
const LEGACY_USER_BUILTINS: &[&str] = &["secondary", "ip", "email", "avatar", "firstName", "lastName", "country"];

impl Context {
    /// A single-kind context with just a key.
    pub fn new(kind: &str, key: &str) -> Self {
        let single = if kind == "user" {
            Single::user(key, false)
        } else {
            Single {
                kind: kind.into(),
                key: key.into(),
                name: None,
                anonymous: false,
                attributes: Arc::clone(&NO_ATTRIBUTES),
            }
        };
        Context::single(single)
    }

    /// A single-kind context, with room for one more kind (the `client` the proxy adds).
    pub fn single(single: Single) -> Self {
        let mut kinds = Vec::with_capacity(2);
        kinds.push(single);
        Context { kinds, multi: false }
    }

    /// Parse LaunchDarkly context JSON.
    pub fn from_json(value: &Value) -> Result<Self, ContextError> {
        let obj = value.as_object().ok_or(ContextError::NotAnObject)?;
        match obj.get("kind") {
            None => Ok(Context { kinds: vec![legacy_user(obj)?], multi: false }),
            Some(Value::String(k)) if k == "multi" => {
                let mut kinds = Vec::with_capacity(obj.len() - 1);
                for (kind, member) in obj.iter().filter(|(k, _)| *k != "kind") {
                    let m = member.as_object().ok_or_else(|| ContextError::MultiMemberNotObject(kind.clone()))?;
                    kinds.push(single(kind, m)?);
                }
                if kinds.is_empty() {
                    return Err(ContextError::EmptyMulti);
                }
                kinds.sort_by(|a, b| a.kind.cmp(&b.kind));
                // A multi-kind context of one kind is that single context.
                let multi = kinds.len() > 1;
                Ok(Context { kinds, multi })
            }
            Some(Value::String(k)) => Ok(Context { kinds: vec![single(k, obj)?], multi: false }),
            Some(_) => Err(ContextError::KindNotString),
        }
    }

    /// Parse context JSON from bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ContextError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|_| ContextError::NotAnObject)?;
        Self::from_json(&v)
    }

    /// The individual context of `kind`, if present.
    pub fn get(&self, kind: &str) -> Option<&Single> {
        self.kinds.iter().find(|s| &*s.kind == kind)
    }

    /// Every individual context.
    pub fn kinds(&self) -> &[Single] {
        &self.kinds
    }

    pub fn is_multi(&self) -> bool {
        self.multi
    }

    /// Add (or replace) one kind, making this a multi-kind context when needed.
    pub fn with(mut self, single: Single) -> Self {
        self.kinds.retain(|s| s.kind != single.kind);
        self.kinds.push(single);
        self.kinds.sort_by(|a, b| a.kind.cmp(&b.kind));
        self.multi = self.kinds.len() > 1;
        self
    }

    /// LaunchDarkly-compatible JSON of this context.
    pub fn to_json(&self) -> Value {
        let one = |s: &Single, with_kind: bool| {
            let mut m = (*s.attributes).clone();
            if with_kind {
                m.insert("kind".into(), Value::String(s.kind.to_string()));
            }
            m.insert("key".into(), Value::String(s.key.to_string()));
            if let Some(n) = &s.name {
                m.insert("name".into(), Value::String(n.to_string()));
            }
            if s.anonymous {
                m.insert("anonymous".into(), Value::Bool(true));
            }
            Value::Object(m)
        };
        if !self.multi {
            return self.kinds.first().map_or(Value::Null, |s| {
                // Only the legacy user format may have an empty key: write it that way.
                if s.key.is_empty() && &*s.kind == "user" {
                    return legacy_json(s);
                }
                one(s, true)
            });
        }
        let mut m = Map::new();
        m.insert("kind".into(), Value::String("multi".into()));
        for s in &self.kinds {
            m.insert(s.kind.to_string(), one(s, false));
        }
        Value::Object(m)
    }
}

/// A legacy-format user (no `kind`, attributes under `custom`).
fn legacy_json(s: &Single) -> Value {
    let mut m = Map::new();
    m.insert("key".into(), Value::String(s.key.to_string()));
    if let Some(n) = &s.name {
        m.insert("name".into(), Value::String(n.to_string()));
    }
    if s.anonymous {
        m.insert("anonymous".into(), Value::Bool(true));
    }
    m.insert("custom".into(), Value::Object((*s.attributes).clone()));
    Value::Object(m)
}

/// A kind name is letters, digits, `.`, `_`, `-`; `kind` and `multi` are reserved.
pub fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind != "kind"
        && kind != "multi"
        && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn single(kind: &str, obj: &Map<String, Value>) -> Result<Single, ContextError> {
    if !valid_kind(kind) {
        return Err(ContextError::InvalidKind(kind.to_string()));
    }
    let key = match obj.get("key") {
        Some(Value::String(k)) if !k.is_empty() => k.as_str(),
        _ => return Err(ContextError::MissingKey(kind.to_string())),
    };
    let (name, anonymous) = name_and_anonymous(obj, kind)?;
    let attributes = obj
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "kind" | "key" | "name" | "anonymous" | "_meta"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Single { kind: kind.into(), key: key.into(), name, anonymous, attributes: Arc::new(attributes) })
}

/// The built-in `name` (a string) and `anonymous` (a boolean); null is absent.
fn name_and_anonymous(obj: &Map<String, Value>, kind: &str) -> Result<(Option<Arc<str>>, bool), ContextError> {
    let wrong = |attribute, expected| ContextError::WrongType { kind: kind.to_string(), attribute, expected };
    let name = match obj.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) => Some(n.as_str().into()),
        Some(_) => return Err(wrong("name", "a string")),
    };
    let anonymous = match obj.get("anonymous") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(wrong("anonymous", "a boolean")),
    };
    Ok((name, anonymous))
}

/// The legacy user format: `key` (may be empty), built-ins at the top, `custom` attributes.
fn legacy_user(obj: &Map<String, Value>) -> Result<Single, ContextError> {
    let key = match obj.get("key") {
        Some(Value::String(k)) => k.as_str(),
        _ => return Err(ContextError::MissingKey("user".to_string())),
    };
    let (name, anonymous) = name_and_anonymous(obj, "user")?;
    let wrong = |attribute, expected| ContextError::WrongType { kind: "user".to_string(), attribute, expected };
    let mut attributes = Map::new();
    for b in LEGACY_USER_BUILTINS {
        match obj.get(*b) {
            None | Some(Value::Null) => {}
            Some(v @ Value::String(_)) => {
                attributes.insert((*b).to_string(), v.clone());
            }
            Some(_) => return Err(wrong("a built-in user attribute", "a string")),
        }
    }
    match obj.get("custom") {
        None | Some(Value::Null) => {}
        Some(Value::Object(custom)) => {
            for (k, v) in custom {
                if !matches!(k.as_str(), "kind" | "key" | "name" | "anonymous" | "_meta") {
                    attributes.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        Some(_) => return Err(wrong("custom", "an object")),
    }
    Ok(Single { kind: Arc::clone(&USER), key: key.into(), name, anonymous, attributes: Arc::new(attributes) })
}

/// A reference to an attribute: a name, or a `/`-separated path into nested objects
/// (with `~1` for `/` and `~0` for `~`), compiled once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrRef {
    /// Path components; a plain name is one component.
    path: Vec<Box<str>>,
}

/// What an attribute lookup found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Found<'a> {
    /// A JSON attribute value.
    Value(&'a Value),
    /// A string built-in (`key`, `kind`, `name`).
    Str(&'a str),
    Bool(bool),
}

impl AttrRef {
    /// Parse a reference: with `/`, a path; otherwise a plain name.
    /// `None` when malformed (`/`, an empty component, a bad escape).
    pub fn parse(reference: &str) -> Option<Self> {
        if reference.is_empty() {
            return None;
        }
        let Some(rest) = reference.strip_prefix('/') else {
            return Some(AttrRef { path: vec![reference.into()] });
        };
        let mut path = Vec::new();
        for part in rest.split('/') {
            if part.is_empty() {
                return None;
            }
            let mut out = String::with_capacity(part.len());
            let mut chars = part.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return None,
                    }
                } else {
                    out.push(c);
                }
            }
            path.push(out.into());
        }
        Some(AttrRef { path })
    }

    /// A plain attribute name, taken literally (no path syntax).
    pub fn literal(name: &str) -> Option<Self> {
        (!name.is_empty()).then(|| AttrRef { path: vec![name.into()] })
    }

    /// Whether this is the built-in `kind` attribute.
    pub fn is_kind(&self) -> bool {
        self.path.len() == 1 && &*self.path[0] == "kind"
    }

    /// The top-level attribute name.
    pub fn first(&self) -> &str {
        self.path.first().map_or("", |p| p)
    }

    /// Look the attribute up in one individual context.
    pub fn get<'a>(&self, ctx: &'a Single) -> Option<Found<'a>> {
        let (first, rest) = self.path.split_first()?;
        let top = match &**first {
            "key" => Found::Str(&ctx.key),
            "kind" => Found::Str(&ctx.kind),
            "name" => Found::Str(ctx.name.as_deref()?),
            "anonymous" => Found::Bool(ctx.anonymous),
            other => Found::Value(ctx.attributes.get(other)?),
        };
        if rest.is_empty() {
            return Some(top);
        }
        let Found::Value(mut v) = top else { return None };
        for part in rest {
            v = v.as_object()?.get(&**part)?;
        }
        Some(Found::Value(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_single_multi_and_legacy() {
        let c = Context::from_json(&json!({"kind":"org","key":"o1","name":"Org","plan":"gold"})).unwrap();
        assert_eq!(&*c.get("org").unwrap().key, "o1");
        assert!(!c.is_multi());
        let m = Context::from_json(&json!({"kind":"multi","user":{"key":"u"},"org":{"key":"o"}})).unwrap();
        assert!(m.is_multi());
        assert_eq!(m.kinds().iter().map(|s| &*s.kind).collect::<Vec<_>>(), ["org", "user"]);
        let l = Context::from_json(&json!({"key":"u","email":"a@b","custom":{"plan":"x"}})).unwrap();
        let u = l.get("user").unwrap();
        assert_eq!(u.attributes["email"], "a@b");
        assert_eq!(u.attributes["plan"], "x");
        assert_eq!(Context::from_json(&l.to_json()).unwrap(), l);
        // A legacy user may have an empty key, and still round-trips (found by fuzzing).
        let empty = Context::from_json(&json!({"key":"","email":"e@x","custom":{"a":[1]}})).unwrap();
        assert_eq!(Context::from_json(&empty.to_json()).unwrap(), empty);
    }

    #[test]
    fn rejects_invalid_contexts() {
        assert_eq!(Context::from_json(&json!([])), Err(ContextError::NotAnObject));
        assert!(matches!(Context::from_json(&json!({"kind":"user"})), Err(ContextError::MissingKey(_))));
        assert!(matches!(Context::from_json(&json!({"kind":"user","key":""})), Err(ContextError::MissingKey(_))));
        assert!(matches!(Context::from_json(&json!({"kind":"a b","key":"k"})), Err(ContextError::InvalidKind(_))));
        assert!(matches!(Context::from_json(&json!({"kind":"kind","key":"k"})), Err(ContextError::InvalidKind(_))));
        assert_eq!(Context::from_json(&json!({"kind":"multi"})), Err(ContextError::EmptyMulti));
        assert!(matches!(
            Context::from_json(&json!({"kind":"user","key":"k","anonymous":"yes"})),
            Err(ContextError::WrongType { .. })
        ));
    }

    #[test]
    fn attribute_references() {
        let c = Context::from_json(&json!({"kind":"user","key":"x","a/b":1,"o":{"p/q":{"r":"deep"}},"t~":2})).unwrap();
        let u = c.get("user").unwrap();
        let get = |r: &str| AttrRef::parse(r).and_then(|a| a.get(u).map(|f| format!("{f:?}")));
        assert_eq!(get("/o/p~1q/r"), Some(format!("{:?}", Found::Value(&json!("deep")))));
        assert_eq!(get("/a~1b"), Some(format!("{:?}", Found::Value(&json!(1)))));
        assert_eq!(get("/t~0"), Some(format!("{:?}", Found::Value(&json!(2)))));
        assert_eq!(get("key"), Some(format!("{:?}", Found::Str("x"))));
        assert_eq!(get("/o/missing"), None);
        assert!(AttrRef::parse("/").is_none());
        assert!(AttrRef::parse("//x").is_none());
        assert!(AttrRef::parse("/a~2").is_none());
        assert!(AttrRef::parse("").is_none());
    }
}
