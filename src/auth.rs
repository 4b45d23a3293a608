//! Gateway keys: which app is calling.
//!
//! Keys are kept only as SHA-256 digests. A presented key is hashed once and compared
//! with every client's digest in constant time (`subtle`), so neither the key nor which
//! client it nearly matched leaks through timing.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::flags::Single;

/// A SHA-256 digest of a gateway key.
pub type KeyDigest = [u8; 32];

/// The credential of an `Authorization: Bearer <token>` header value, surrounding spaces
/// trimmed; the scheme is case-insensitive (RFC 9110 §11.1). The one parser for gateway
/// keys and admin tokens.
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => Some(value[7..].trim_ascii()),
        _ => None,
    }
}

/// SHA-256 of `key`.
pub fn digest(key: &[u8]) -> KeyDigest {
    Sha256::digest(key).into()
}

/// Parse a hex SHA-256 digest (64 hex digits, either case).
pub fn parse_digest(hex: &str) -> Option<KeyDigest> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// An authenticated app.
#[derive(Debug)]
pub struct Client {
    pub name: String,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// The app as a context of kind `client`, added to every request's context.
    pub context: Single,
    /// The app as templates see it (`{{client.name}}`, `{{client.<attribute>}}`).
    pub template_value: serde_json::Value,
}

impl Client {
    pub fn new(name: &str, attributes: serde_json::Map<String, serde_json::Value>) -> Self {
        let context = Single {
            kind: "client".into(),
            key: name.into(),
            name: None,
            anonymous: false,
            attributes: attributes.clone(),
        };
        let mut template = attributes.clone();
        template.insert("name".into(), serde_json::Value::String(name.to_string()));
        Client { name: name.to_string(), attributes, context, template_value: serde_json::Value::Object(template) }
    }
}

/// All gateway keys of a snapshot.
#[derive(Debug, Default)]
pub struct Clients {
    entries: Vec<(KeyDigest, Arc<Client>)>,
}

impl Clients {
    pub fn from_config(config: &Config) -> Self {
        let entries = config
            .clients
            .iter()
            .filter_map(|(name, c)| {
                let d = match (&c.key, &c.key_sha256) {
                    (Some(k), _) => digest(k.expose().as_bytes()),
                    (None, Some(hex)) => parse_digest(hex)?,
                    (None, None) => return None,
                };
                let client = Client::new(name, c.attributes.clone());
                Some((d, Arc::new(client)))
            })
            .collect();
        Clients { entries }
    }

    /// The client whose key is `key`. Every digest is compared, match or not.
    /// The client named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Client>> {
        self.entries.iter().map(|(_, c)| c).find(|c| c.name == name)
    }

    pub fn authenticate(&self, key: &[u8]) -> Option<&Arc<Client>> {
        let presented = digest(key);
        let mut found = None;
        for (d, client) in &self.entries {
            if bool::from(d.ct_eq(&presented)) {
                found = Some(client);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_through_hex() {
        let d = digest(b"abc");
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(parse_digest(&hex.to_uppercase()), Some(d));
        assert_eq!(parse_digest("zz"), None);
        assert_eq!(parse_digest(&"g".repeat(64)), None);
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_trimmed() {
        for v in ["Bearer tok", "bearer tok", "BEARER  tok ", "bEaReR tok"] {
            assert_eq!(bearer(v.as_bytes()), Some(&b"tok"[..]), "{v}");
        }
        for v in ["Basic tok", "Bearertok", "Bear", ""] {
            assert_eq!(bearer(v.as_bytes()), None, "{v}");
        }
    }
}
