//! The request body: read the few top-level fields sluice needs, and rewrite some of
//! them while every other byte passes through untouched.
//!
//! The body is parsed once into its top-level members as borrowed raw JSON
//! (`&RawValue` slices of the original buffer); nothing below the top level is
//! deserialized. A rewrite splices new values into the original bytes, so tools,
//! response_format, unknown fields and even whitespace reach the provider as the app
//! sent them.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Why a body, or one of the members sluice reads, cannot be taken (the data plane turns
/// each into its 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Valid JSON, but not an object.
    NotAnObject,
    /// Not JSON, or a string that does not decode.
    Malformed(String),
    MissingModel,
    InvalidField {
        field: &'static str,
        expected: &'static str,
    },
}

/// The top-level members of a JSON object request body, in order.
pub struct JsonBody<'a> {
    source: &'a [u8],
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> JsonBody<'a> {
    /// Parse `source`; it must be one JSON object.
    pub fn parse(source: &'a [u8]) -> Result<Self, BodyError> {
        let mut de = serde_json::Deserializer::from_slice(source);
        let members = de.deserialize_map(MembersVisitor).map_err(|e| {
            if e.classify() == serde_json::error::Category::Data {
                BodyError::NotAnObject
            } else {
                BodyError::Malformed(e.to_string())
            }
        })?;
        de.end().map_err(|e| BodyError::Malformed(e.to_string()))?;
        Ok(JsonBody { source, members })
    }

    /// The raw value of top-level member `key` (the last one, if repeated).
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// `model`: a required string.
    pub fn model(&self) -> Result<Cow<'a, str>, BodyError> {
        let raw = self.get("model").ok_or(BodyError::MissingModel)?;
        match serde_json::from_str::<Option<Cow<'a, str>>>(raw.get()) {
            Ok(Some(m)) if !m.is_empty() => Ok(m),
            Ok(_) => Err(BodyError::MissingModel),
            // A string that does not decode (a lone surrogate escape): not a type error.
            Err(e) if raw.get().starts_with('"') => Err(BodyError::Malformed(format!("`model`: {e}"))),
            Err(_) => Err(BodyError::InvalidField { field: "model", expected: "a string" }),
        }
    }

    /// `stream`: an optional boolean (absent or null is false).
    pub fn stream(&self) -> Result<bool, BodyError> {
        match self.get("stream") {
            None => Ok(false),
            Some(raw) => serde_json::from_str::<Option<bool>>(raw.get())
                .map(Option::unwrap_or_default)
                .map_err(|_| BodyError::InvalidField { field: "stream", expected: "a boolean" }),
        }
    }

    /// `user`: an optional string (absent, null or empty is none).
    pub fn user(&self) -> Result<Option<Cow<'a, str>>, BodyError> {
        match self.get("user") {
            None => Ok(None),
            Some(raw) => serde_json::from_str::<Option<Cow<'a, str>>>(raw.get())
                .map(|u| u.filter(|u| !u.is_empty()))
                .map_err(|_| BodyError::InvalidField { field: "user", expected: "a string" }),
        }
    }

    /// The body with each `(key, raw JSON)` of `set` replacing that member's value
    /// (every occurrence) or, when absent, added as the first member. Everything else
    /// is copied byte for byte.
    pub fn rewrite(&self, set: &[(&str, &str)]) -> Vec<u8> {
        let extra: usize = set.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        let mut out = Vec::with_capacity(self.source.len() + extra);
        // Replacements as (start, end, new value), in source order.
        let mut splices: Vec<(usize, usize, &str)> = Vec::with_capacity(set.len());
        let mut added: Vec<(&str, &str)> = Vec::new();
        for (key, value) in set {
            let mut found = false;
            for (k, raw) in &self.members {
                if k == key {
                    let start = self.offset_of(raw);
                    splices.push((start, start + raw.get().len(), value));
                    found = true;
                }
            }
            if !found {
                added.push((key, value));
            }
        }
        splices.sort_unstable_by_key(|s| s.0);
        let mut at = 0;
        if !added.is_empty() {
            // Insert new members right after the opening brace.
            let brace = self.source.iter().position(|&b| b == b'{').map_or(0, |i| i + 1);
            out.extend_from_slice(&self.source[..brace]);
            for (i, (k, v)) in added.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Keys come from sluice, never from the request: plain ASCII names.
                out.push(b'"');
                out.extend_from_slice(k.as_bytes());
                out.extend_from_slice(b"\":");
                out.extend_from_slice(v.as_bytes());
            }
            if !self.members.is_empty() {
                out.push(b',');
            }
            at = brace;
        }
        for (start, end, value) in splices {
            out.extend_from_slice(&self.source[at..start]);
            out.extend_from_slice(value.as_bytes());
            at = end;
        }
        out.extend_from_slice(&self.source[at..]);
        out
    }

    /// The source without member `key` (its last occurrence) and its separating comma;
    /// `None` when there is no such member. Every other byte is copied as it is.
    pub fn without(&self, key: &str) -> Option<Vec<u8>> {
        let i = self.members.iter().rposition(|(k, _)| k == key)?;
        let end_of = |raw: &RawValue| self.offset_of(raw) + raw.get().len();
        let (cut_start, cut_end) = if i > 0 {
            // `, "key": value` from the end of the previous value.
            (end_of(self.members[i - 1].1), end_of(self.members[i].1))
        } else {
            let brace = self.source.iter().position(|&b| b == b'{').map_or(0, |b| b + 1);
            match self.members.get(1) {
                // `"key": value ,` up to the next member's key.
                Some(_) => {
                    let after = end_of(self.members[0].1);
                    let comma = self.source[after..].iter().position(|&b| b == b',').map_or(after, |c| after + c + 1);
                    let next =
                        self.source[comma..].iter().position(|b| !b.is_ascii_whitespace()).map_or(comma, |n| comma + n);
                    (brace, next)
                }
                None => (brace, end_of(self.members[0].1)),
            }
        };
        let mut out = Vec::with_capacity(self.source.len() - (cut_end - cut_start));
        out.extend_from_slice(&self.source[..cut_start]);
        out.extend_from_slice(&self.source[cut_end..]);
        Some(out)
    }

    /// Byte offset of a member's raw value within the source buffer.
    fn offset_of(&self, raw: &RawValue) -> usize {
        // `raw` borrows from `source`, so the difference of the addresses is its offset.
        raw.get().as_ptr() as usize - self.source.as_ptr() as usize
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            let value: &'de RawValue = map.next_value()?;
            members.push((key.0, value));
        }
        Ok(members)
    }
}

/// A map key that borrows from the input when it has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_and_stream() {
        let src = br#"{"model":"openai/gpt-4o","stream":true,"x":{"model":"inner"}}"#;
        let body = JsonBody::parse(src).unwrap();
        assert_eq!(body.model().unwrap(), "openai/gpt-4o");
        assert!(body.stream().unwrap());
        let escaped = br#"{"model":"a\/b"}"#;
        assert_eq!(JsonBody::parse(escaped).unwrap().model().unwrap(), "a/b");
    }

    #[test]
    fn rejects_bad_bodies() {
        assert!(matches!(JsonBody::parse(b"{\"model\":"), Err(BodyError::Malformed(_))));
        assert!(matches!(JsonBody::parse(b"[1,2]"), Err(BodyError::NotAnObject)));
        assert!(matches!(JsonBody::parse(b"{} x"), Err(BodyError::Malformed(_))));
        let b = JsonBody::parse(b"{\"messages\":[]}").unwrap();
        assert!(matches!(b.model(), Err(BodyError::MissingModel)));
        let b = JsonBody::parse(b"{\"model\":5}").unwrap();
        assert!(matches!(b.model(), Err(BodyError::InvalidField { field: "model", .. })));
        let b = JsonBody::parse(b"{\"model\":\"m\",\"stream\":\"yes\"}").unwrap();
        assert!(matches!(b.stream(), Err(BodyError::InvalidField { field: "stream", .. })));
    }

    #[test]
    fn rewrite_splices_and_keeps_everything_else() {
        let src = br#"{ "model" : "p/m", "tools":[{"type":"function"}],  "zz\u00e9": 1.50 }"#;
        let body = JsonBody::parse(src).unwrap();
        let out = body.rewrite(&[("model", "\"m\"")]);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{ "model" : "m", "tools":[{"type":"function"}],  "zz\u00e9": 1.50 }"#
        );
        let out = body.rewrite(&[("model", "\"m\""), ("stream_options", "{\"include_usage\":true}")]);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "m");
        assert_eq!(v["zz\u{e9}"], 1.50);
        let empty = JsonBody::parse(b"{}").unwrap();
        assert_eq!(empty.rewrite(&[("model", "\"m\"")]), br#"{"model":"m"}"#);
    }

    #[test]
    fn without_removes_one_member_and_its_comma() {
        let cases: &[(&[u8], &[u8])] = &[
            (br#"{"id":"x","choices":[],"usage":null}"#, br#"{"id":"x","choices":[]}"#),
            (br#"{"usage":null,"id":"x"}"#, br#"{"id":"x"}"#),
            (br#"{ "usage" : null , "id":"x"}"#, br#"{"id":"x"}"#),
            (br#"{"a":1, "usage": {"n":[1,{"usage":2}]}, "b":"\"usage\":null"}"#, br#"{"a":1, "b":"\"usage\":null"}"#),
            (br#"{"usage":null}"#, br#"{}"#),
        ];
        for (src, want) in cases {
            let got = JsonBody::parse(src).unwrap().without("usage").unwrap();
            assert_eq!(std::str::from_utf8(&got).unwrap(), std::str::from_utf8(want).unwrap());
        }
        assert!(JsonBody::parse(br#"{"a":{"usage":null}}"#).unwrap().without("usage").is_none());
    }
}
