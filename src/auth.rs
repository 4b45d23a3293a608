//! Gateway keys: which app is calling.
//!
//! Keys are kept only as SHA-256 digests, in a [`KeyRing`] (the one admin tokens use too):
//! a presented key is hashed once and compared with every client's digest in constant time,
//! so neither the key nor which client it nearly matched leaks through timing.

use std::sync::Arc;

use crate::keys::KeyRing;
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
            attributes: std::sync::Arc::new(attributes.clone()),
        };
        let mut template = attributes.clone();
        template.insert("name".into(), serde_json::Value::String(name.to_string()));
        Client { name: name.to_string(), attributes, context, template_value: serde_json::Value::Object(template) }
    }
}

/// All gateway keys of a snapshot.
#[derive(Debug, Default)]
pub struct Clients {
    ring: KeyRing<Arc<Client>>,
}

impl Clients {
    pub fn from_config(config: &Config) -> Self {
        let ring = config
            .clients
            .iter()
            .filter_map(|(name, c)| {
                let d = crate::keys::configured(c.key.as_ref().map(|k| k.expose()), c.key_sha256.as_deref(), 0).ok()?;
                Some((d, Arc::new(Client::new(name, c.attributes.clone()))))
            })
            .collect();
        Clients { ring }
    }

    /// The client named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Client>> {
        self.ring.values().find(|c| c.name == name)
    }

    /// The client whose key is `key`. Every digest is compared, match or not.
    pub fn authenticate(&self, key: &[u8]) -> Option<&Arc<Client>> {
        self.ring.open(key)
    }
}
