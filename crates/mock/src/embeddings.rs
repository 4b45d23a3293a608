//! `POST /v1/embeddings`: deterministic vectors derived from a hash of each input, so
//! the same input always gets the same embedding.

use std::fmt::{self, Write as _};

use http::{Response, StatusCode};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::chat::{parse_object, require_model, Text};
use super::render::{self, BadRequest};
use crate::body::Body;

/// Vector length when the request does not ask for `dimensions`.
const DEFAULT_DIMENSIONS: u64 = 8;
/// Largest accepted `dimensions`.
const MAX_DIMENSIONS: u64 = 8192;

#[derive(Deserialize)]
struct EmbeddingsRequest<'a> {
    #[serde(borrow)]
    model: Option<Text<'a>>,
    input: Option<Input>,
    dimensions: Option<u64>,
    #[serde(borrow)]
    encoding_format: Option<Text<'a>>,
}

/// One input to embed, reduced to what the answer needs.
#[derive(Debug, Clone, Copy)]
struct Item {
    /// FNV-1a hash of the text or tokens; seeds the vector.
    seed: u64,
    /// Estimated (text) or exact (token array) token count.
    tokens: u64,
}

/// FNV-1a, 64 bits.
struct Fnv(u64, u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325, 0)
    }

    fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn token(&mut self, token: u64) {
        self.feed(&token.to_le_bytes());
        self.1 += 1;
    }

    fn finish(self) -> Item {
        Item { seed: self.0, tokens: self.1 }
    }
}

fn text_item(text: &str) -> Item {
    let mut hash = Fnv::new();
    hash.feed(text.as_bytes());
    Item { seed: hash.0, tokens: (text.len() as u64 / 4).max(1) }
}

/// `input`: a string, an array of strings, a token array, or an array of token arrays.
struct Input(Vec<Item>);

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(InputVisitor)
    }
}

struct InputVisitor;

impl<'de> Visitor<'de> for InputVisitor {
    type Value = Input;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, an array of strings, or an array of token arrays")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Input, E> {
        Ok(Input(vec![text_item(text)]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Input, A::Error> {
        let mut items = Vec::new();
        let mut tokens: Option<Fnv> = None;
        while let Some(element) = seq.next_element::<Element>()? {
            match element {
                Element::Item(item) if tokens.is_none() => items.push(item),
                Element::Token(token) if items.is_empty() => tokens.get_or_insert_with(Fnv::new).token(token),
                _ => return Err(de::Error::custom("input mixes tokens with strings or token arrays")),
            }
        }
        items.extend(tokens.map(Fnv::finish));
        Ok(Input(items))
    }
}

/// One element of an `input` array.
enum Element {
    /// A string or a token array.
    Item(Item),
    /// A bare token: the whole `input` is one token array.
    Token(u64),
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ElementVisitor)
    }
}

struct ElementVisitor;

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a token or a token array")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Element, E> {
        Ok(Element::Item(text_item(text)))
    }

    fn visit_u64<E: de::Error>(self, token: u64) -> Result<Element, E> {
        Ok(Element::Token(token))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
        let mut hash = Fnv::new();
        while let Some(token) = seq.next_element::<u64>()? {
            hash.token(token);
        }
        Ok(Element::Item(hash.finish()))
    }
}

/// splitmix64: the next value of a deterministic sequence.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A unit-length vector of `dimensions` values derived from `seed`.
fn vector(seed: u64, dimensions: usize) -> Vec<f32> {
    let mut state = seed;
    let raw: Vec<f64> =
        (0..dimensions).map(|_| (splitmix(&mut state) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0).collect();
    let norm = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
    let norm = if norm > 0.0 { norm } else { 1.0 };
    raw.into_iter().map(|v| (v / norm) as f32).collect()
}

/// Append `values` as standard base64 of their little-endian `f32` bytes.
fn push_base64(out: &mut String, values: &[f32]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    for group in bytes.chunks(3) {
        let b = [
            group.first().copied().unwrap_or(0),
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

/// Answer an embeddings request.
pub(crate) fn respond(body: &[u8]) -> Response<Body> {
    embed(body).unwrap_or_else(BadRequest::into_response)
}

fn embed(body: &[u8]) -> Result<Response<Body>, BadRequest> {
    let request: EmbeddingsRequest<'_> = parse_object(body)?;
    let model = require_model(request.model)?;
    let items = match request.input {
        Some(Input(items)) if !items.is_empty() => items,
        _ => return Err(BadRequest::new("'input' must not be empty", Some("input"))),
    };
    let dimensions = match request.dimensions.unwrap_or(DEFAULT_DIMENSIONS) {
        d @ 1..=MAX_DIMENSIONS => d as usize,
        _ => {
            return Err(BadRequest::new(
                format!("'dimensions' must be between 1 and {MAX_DIMENSIONS}"),
                Some("dimensions"),
            ))
        }
    };
    let base64 = match request.encoding_format.as_ref().map(|Text(f)| f.as_ref()) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(BadRequest::new("'encoding_format' must be 'float' or 'base64'", Some("encoding_format")))
        }
    };

    let mut out = String::with_capacity(128 + model.len() + items.len() * (64 + dimensions * 12));
    out.push_str(r#"{"object":"list","data":["#);
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let _ = write!(out, r#"{{"object":"embedding","index":{index},"embedding":"#);
        let values = vector(item.seed, dimensions);
        if base64 {
            out.push('"');
            push_base64(&mut out, &values);
            out.push('"');
        } else {
            out.push('[');
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{value}");
            }
            out.push(']');
        }
        out.push('}');
    }
    out.push_str(r#"],"model":"#);
    render::push_json_str(&mut out, &model);
    let tokens: u64 = items.iter().map(|item| item.tokens).sum();
    let _ = write!(out, r#","usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}}}"#);
    Ok(render::json_response(StatusCode::OK, out))
}
