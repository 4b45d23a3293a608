//! Gateway keys: which app is calling.
//!
//! Keys are kept only as SHA-256 digests, in a [`KeyRing`] (the one admin tokens use too):
//! a presented key is hashed once and compared with every client's digest in constant time,
//! so neither the key nor which client it nearly matched leaks through timing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::keys::KeyRing;
pub use crate::keys::{bearer, digest, parse_digest, KeyDigest};

use crate::config::{ClientConfig, ClientKind, Config, RateLimit};
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
    /// What the key may call.
    pub kind: ClientKind,
    /// Only these flags over OFREP (`None`: every flag).
    pub flags: Option<std::collections::BTreeSet<String>>,
    /// `kind: browser`: the origins its pages come from.
    pub origins: Vec<String>,
    /// Evaluations this key may make — OFREP and `/v1/ai-configs/{flag}/evaluate` — (kept
    /// across snapshots while the client's name and rate stay: a reload or an admin change
    /// does not refill the bucket).
    pub ofrep_limit: Option<Arc<Limiter>>,
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
        Client {
            name: name.to_string(),
            attributes,
            context,
            template_value: serde_json::Value::Object(template),
            kind: ClientKind::Proxy,
            flags: None,
            origins: Vec::new(),
            ofrep_limit: None,
        }
    }

    /// The client of `name` in the config; its rate limiter is `previous`'s when that has
    /// the same rate.
    pub fn from_config(name: &str, c: &ClientConfig, previous: Option<&Client>) -> Self {
        let kept =
            |rate: RateLimit| previous.and_then(|p| p.ofrep_limit.as_ref()).filter(|l| l.rate == rate).map(Arc::clone);
        Client {
            kind: c.kind,
            flags: c.flags.as_ref().map(|f| f.iter().cloned().collect()),
            origins: c.origins.clone(),
            ofrep_limit: c.ofrep_rate_limit.map(|rate| kept(rate).unwrap_or_else(|| Arc::new(Limiter::new(rate)))),
            ..Client::new(name, c.attributes.clone())
        }
    }

    /// Whether the key may call the OpenAI endpoints and feedback (not only OFREP).
    pub fn may_proxy(&self) -> bool {
        self.kind == ClientKind::Proxy
    }

    /// Whether the key may see flag `key` over OFREP.
    pub fn sees_flag(&self, key: &str) -> bool {
        self.flags.as_ref().is_none_or(|f| f.contains(key))
    }
}

/// A rate limit as a generic cell rate algorithm: one atomic, the time the bucket would be
/// empty ("theoretical arrival time"); a request is allowed when that stays within
/// `burst` intervals of now. No lock, no background refill.
#[derive(Debug)]
pub struct Limiter {
    rate: RateLimit,
    start: Instant,
    /// Nanoseconds between requests at the sustained rate.
    interval: u64,
    /// `burst` intervals.
    tolerance: u64,
    /// Nanoseconds since `start`.
    tat: AtomicU64,
}

impl Limiter {
    pub fn new(rate: RateLimit) -> Limiter {
        let interval = (1e9 / rate.per_second).round().max(1.0) as u64;
        Limiter {
            rate,
            start: Instant::now(),
            interval,
            tolerance: interval.saturating_mul(u64::from(rate.burst)),
            tat: AtomicU64::new(0),
        }
    }

    /// Take one request at `now`, or say in whole seconds (at least 1, as `Retry-After`
    /// says it) how long until one would be allowed.
    pub fn take_or_retry_after(&self, now: Instant) -> Result<(), u64> {
        self.take(now).map_err(|wait| (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1))
    }

    /// Take one request at `now`, or say how long until one would be allowed.
    pub fn take(&self, now: Instant) -> Result<(), Duration> {
        let now = u64::try_from(now.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(self.interval);
            if next - now > self.tolerance {
                return Err(Duration::from_nanos(next - now - self.tolerance));
            }
            match self.tat.compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }
}

/// All gateway keys of a snapshot.
#[derive(Debug, Default)]
pub struct Clients {
    ring: KeyRing<Arc<Client>>,
}

impl Clients {
    /// The config's clients; each keeps the rate limiter `previous` had for it.
    pub fn from_config(config: &Config, previous: Option<&Clients>) -> Self {
        let before: std::collections::HashMap<&str, &Client> =
            previous.iter().flat_map(|p| p.all()).map(|c| (c.name.as_str(), &**c)).collect();
        let ring = config
            .clients
            .iter()
            .filter_map(|(name, c)| {
                let d = crate::keys::configured(c.key.as_ref().map(|k| k.expose()), c.key_sha256.as_deref(), 0).ok()?;
                Some((d, Arc::new(Client::from_config(name, c, before.get(name.as_str()).copied()))))
            })
            .collect();
        Clients { ring }
    }

    /// Every client.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Client>> {
        self.ring.values()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_allows_a_burst_then_the_rate() {
        let l = Limiter::new(RateLimit { per_second: 10.0, burst: 3 });
        let t0 = l.start;
        for _ in 0..3 {
            assert_eq!(l.take(t0), Ok(()));
        }
        let wait = l.take(t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100), "one interval at 10/s");
        assert!(l.take(t0 + Duration::from_millis(99)).is_err());
        assert_eq!(l.take(t0 + Duration::from_millis(100)), Ok(()));
        // A second later the whole burst is back, and no more.
        let later = t0 + Duration::from_millis(1100);
        for _ in 0..3 {
            assert_eq!(l.take(later), Ok(()));
        }
        assert!(l.take(later).is_err());
    }

    #[test]
    fn a_rebuild_keeps_a_clients_limiter_while_its_rate_stays() {
        let yaml = |rate: &str| {
            format!(
                "listen: {{data: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}}\nclients:\n  a: {{key: sk-a-0123456789abcdef, kind: ofrep, ofrep_rate_limit: {rate}}}\n  b: {{key: sk-b-0123456789abcdef, kind: ofrep, ofrep_rate_limit: {{per_second: 1}}}}\nproviders:\n  m: {{kind: mock}}\n"
            )
        };
        let config = |rate: &str| crate::config::parse(&yaml(rate), "t.yaml", &|_| None).unwrap().config;
        let limiter = |c: &Clients, name: &str| Arc::clone(c.by_name(name).unwrap().ofrep_limit.as_ref().unwrap());
        let first = Clients::from_config(&config("{per_second: 5, burst: 2}"), None);
        let same = Clients::from_config(&config("{per_second: 5, burst: 2}"), Some(&first));
        assert!(Arc::ptr_eq(&limiter(&first, "a"), &limiter(&same, "a")));
        assert!(Arc::ptr_eq(&limiter(&first, "b"), &limiter(&same, "b")));
        let changed = Clients::from_config(&config("{per_second: 5, burst: 3}"), Some(&same));
        assert!(!Arc::ptr_eq(&limiter(&same, "a"), &limiter(&changed, "a")), "a new rate starts a new bucket");
        assert!(Arc::ptr_eq(&limiter(&same, "b"), &limiter(&changed, "b")));
    }
}
