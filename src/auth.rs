//! Gateway keys: which app is calling.
//!
//! Keys are kept only as SHA-256 digests. A presented key is hashed once and compared
//! with every client's digest in constant time (`subtle`), so neither the key nor which
//! client it nearly matched leaks through timing.

use std::sync::Arc;

use subtle::ConstantTimeEq;

pub use crate::keys::{bearer, digest, parse_digest, KeyDigest};

use crate::config::Config;
use crate::flags::Single;

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
