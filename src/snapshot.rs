//! The immutable, precompiled view of the configuration that one request uses.
//!
//! A [`Snapshot`] is built whenever the configuration changes and swapped in behind an
//! `ArcSwap`; the request path loads it once and never takes a lock or compiles
//! anything. Today it holds gateway keys, providers and model routes; flags, AI configs
//! and metric handles join it as they arrive.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::auth::Clients;
use crate::config::{Config, Problem};
use crate::providers::Provider;

/// Everything a data-plane request needs, built once per configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub clients: Clients,
    /// Providers by name: `model: "name/model"` routes to one.
    providers: HashMap<String, Arc<Provider>>,
    /// Aliases: a short model name → (provider, upstream model name).
    aliases: HashMap<String, (Arc<Provider>, String)>,
    /// The `GET /v1/models` body, rendered once.
    pub models_json: Bytes,
    pub max_request_body: u64,
    pub body_read_timeout: Duration,
    pub access_log: bool,
}

/// Where a request's `model` goes.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    pub provider: &'a Arc<Provider>,
    /// The model name the provider knows.
    pub model: &'a str,
}

impl Snapshot {
    /// Compile `config`. It has been validated, so failures here come from the outside
    /// world (for example TLS roots) and are reported at the provider's path.
    pub fn build(config: &Config) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut providers = HashMap::new();
        for (name, cfg) in &config.providers {
            match Provider::build(name, cfg, &config.upstream) {
                Ok(p) => {
                    providers.insert(name.clone(), Arc::new(p));
                }
                Err(msg) => problems.push(Problem::new(format!("providers.{name}"), msg)),
            }
        }
        let mut aliases = HashMap::new();
        for (alias, target) in &config.aliases {
            let resolved =
                target.split_once('/').and_then(|(p, m)| providers.get(p).map(|p| (Arc::clone(p), m.to_string())));
            match resolved {
                Some(route) => {
                    aliases.insert(alias.clone(), route);
                }
                None => problems
                    .push(Problem::new(format!("aliases.{alias}"), "must be `provider/model` of a known provider")),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let models_json = models_json(config);
        Ok(Snapshot {
            clients: Clients::from_config(config),
            providers,
            aliases,
            models_json,
            max_request_body: config.limits.max_request_body.0,
            body_read_timeout: config.limits.body_read_timeout.0,
            access_log: config.log.access_log,
        })
    }

    /// Where `model` goes: an alias, else `provider/model`.
    pub fn route<'a>(&'a self, model: &'a str) -> Option<Route<'a>> {
        if let Some((provider, m)) = self.aliases.get(model) {
            return Some(Route { provider, model: m });
        }
        let (provider, m) = model.split_once('/')?;
        if m.is_empty() {
            return None;
        }
        self.providers.get(provider).map(|provider| Route { provider, model: m })
    }
}

/// The OpenAI `GET /v1/models` list: aliases, then each provider's listed models.
fn models_json(config: &Config) -> Bytes {
    let mut ids: Vec<String> = config.aliases.keys().cloned().collect();
    for (name, p) in &config.providers {
        ids.extend(p.models.iter().map(|m| format!("{name}/{m}")));
    }
    let data: Vec<_> = ids
        .into_iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "sluice"}))
        .collect();
    serde_json::json!({"object": "list", "data": data}).to_string().into()
}
