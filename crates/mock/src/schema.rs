//! Tool arguments and structured answers generated from a JSON schema: each `required`
//! property gets a fixed value of its type. Schemas are read as `serde_json::Value`: they
//! only come with tool and structured-output requests, never on the plain-text hot path.

use serde_json::{json, Map, Value};

/// Compact JSON for `schema` (an empty object when there is none). Keys come out sorted,
/// as `serde_json` prints any object, so a tool input turned back into text matches.
pub(crate) fn generate_json(schema: Option<&Value>) -> String {
    serde_json::to_string(&generate(schema)).unwrap_or_else(|_| "{}".to_owned())
}

/// The value for `schema`: an object of its required properties, unless the schema is of a
/// non-object type.
pub(crate) fn generate(schema: Option<&Value>) -> Value {
    let Some(Value::Object(schema)) = schema else {
        return Value::Object(Map::new());
    };
    match type_of(schema) {
        Some(ty) if ty != "object" => return value_for(schema),
        _ => {}
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let required = schema.get("required").and_then(Value::as_array);
    let mut out = Map::new();
    for name in required.into_iter().flatten().filter_map(Value::as_str) {
        let value = match properties.and_then(|p| p.get(name)).and_then(Value::as_object) {
            Some(property) => value_for(property),
            None => Value::Null,
        };
        out.insert(name.to_owned(), value);
    }
    Value::Object(out)
}

/// The schema's type: its `type`, or the first non-null one of a list of types.
fn type_of(schema: &Map<String, Value>) -> Option<&str> {
    match schema.get("type")? {
        Value::String(ty) => Some(ty),
        Value::Array(types) => types.iter().filter_map(Value::as_str).find(|ty| *ty != "null"),
        _ => None,
    }
}

/// The fixed value of a property: by type, else its first `enum` value, else null.
fn value_for(property: &Map<String, Value>) -> Value {
    match type_of(property) {
        Some("string") => json!("mock"),
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("array") => json!([]),
        Some("object") => json!({}),
        _ => property.get("enum").and_then(Value::as_array).and_then(|e| e.first()).cloned().unwrap_or(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn required_properties_by_type() {
        let schema = json!({
            "type": "object",
            "properties": {
                "s": {"type": "string"}, "i": {"type": "integer"}, "n": {"type": "number"},
                "b": {"type": "boolean"}, "a": {"type": "array"}, "o": {"type": "object"},
                "opt": {"type": ["string", "null"]}, "e": {"enum": ["x", "y"]}, "skipped": {"type": "string"}
            },
            "required": ["s", "i", "n", "b", "a", "o", "opt", "e", "missing"]
        });
        assert_eq!(
            generate_json(Some(&schema)),
            r#"{"a":[],"b":true,"e":"x","i":1,"missing":null,"n":1.5,"o":{},"opt":"mock","s":"mock"}"#
        );
        assert_eq!(generate_json(Some(&json!({"type": "object", "properties": {}}))), "{}");
        assert_eq!(generate_json(None), "{}");
        assert_eq!(generate_json(Some(&json!({"type": "string"}))), r#""mock""#);
    }
}
