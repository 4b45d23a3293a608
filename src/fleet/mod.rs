//! The fleet store: the runtime state of several sluice instances kept in one Redis
//! (`state.store: redis`). Redis is never awaited on the proxy path: every call here
//! runs on the admin plane's blocking pool, on the fleet's own threads or (a feedback or
//! track signal's claim, [`dedup`]) on the data plane's blocking pool, each with the
//! configured connect and response timeouts.
//!
//! - [`store`] — the [`crate::state::Store`] over Redis: every change one Lua
//!   compare-and-set (the fleet's revision, the leader's fence, the documents, the change
//!   log and the audit log in one script), the consistent snapshot a start or a catch-up
//!   loads, seeding, export and import;
//! - [`tail`] — the thread that follows the change log and swaps this instance's snapshot
//!   per revision, reloading everything on a gap, a trim, a reconnect or a new epoch, with
//!   a periodic backstop; it keeps the local copy served when Redis is down at start.
//!
//! Keys, all under one hash tag `{prefix}`: `epoch` (what the data is: set when the
//! store is seeded; missing means Redis lost it), `rev` (the fleet's revision), `items`
//! (the documents, `crate::state::items`), `log` (a stream: per revision the epoch and
//! the items it changed, trimmed to about [`LOG_LENGTH`] entries), `audit` (a stream: the
//! audit entry of every revision, never trimmed), `lost` (set by an instance that found
//! the data gone: no instance seeds it from its file until an operator runs
//! `sluice store seed`), `instances` (a hash: who was seen when), `feedback_key` (the key
//! that signs response tokens, the same on every instance), `seen:<pair>` (a feedback or
//! track signal counted, until its token expires: [`dedup`]). Stream ids are
//! `<revision>-0`, so a cursor is a revision.

pub mod dedup;
pub mod lease;
pub mod stats;
pub mod store;
pub mod tail;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::RedisConfig;

pub use store::RedisStore;

/// How many change-log entries Redis keeps (about: `MAXLEN ~`). An instance further
/// behind than this reloads everything.
pub const LOG_LENGTH: u64 = 100_000;

/// The names of the keys.
#[derive(Debug, Clone)]
pub struct Keys {
    tag: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys { tag: format!("{{{prefix}}}") }
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.tag)
    }

    pub fn epoch(&self) -> String {
        self.key("epoch")
    }
    pub fn rev(&self) -> String {
        self.key("rev")
    }
    pub fn items(&self) -> String {
        self.key("items")
    }
    pub fn log(&self) -> String {
        self.key("log")
    }
    pub fn audit(&self) -> String {
        self.key("audit")
    }
    pub fn lost(&self) -> String {
        self.key("lost")
    }
    pub fn leader(&self) -> String {
        self.key("leader")
    }
    /// When a first start found Redis empty (the seeding grace).
    pub fn empty_since(&self) -> String {
        self.key("empty_since")
    }
    pub fn fence(&self) -> String {
        self.key("fence")
    }
    pub fn instances(&self) -> String {
        self.key("instances")
    }
    pub fn feedback_key(&self) -> String {
        self.key("feedback_key")
    }
    /// The fleet's statistics totals of one flag.
    pub fn stats(&self, flag: &str) -> String {
        self.key(&format!("stats:{flag}"))
    }
    /// The statistics of one ten-second bucket.
    pub fn bucket(&self, bucket: u64) -> String {
        self.key(&format!("agg:{bucket}"))
    }
    /// Where a guard's window starts, for the whole fleet.
    pub fn window(&self, flag: &str, id: &str) -> String {
        self.key(&format!("window:{flag}:{id}"))
    }
    /// Where an experiment's iteration starts or ends (`edge`), for the whole fleet.
    pub fn iteration(&self, flag: &str, number: u32, edge: &str) -> String {
        self.key(&format!("iteration:{flag}:{number}:{edge}"))
    }
    /// A (token, metric) pair the fleet counted (`crate::token::Dedup::pair_name`).
    pub fn seen(&self, pair: &str) -> String {
        self.key(&format!("seen:{pair}"))
    }
    /// One flush's id.
    pub fn flush(&self, instance: &str, seq: u64) -> String {
        self.key(&format!("flush:{instance}:{seq}"))
    }
}

/// How to reach Redis: a client and the timeouts every connection gets.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub keys: Keys,
    /// What logs and the status say instead of the URL (no credentials).
    pub shown: String,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redis({})", self.shown)
    }
}

/// A Redis error as it may be shown (redis-rs never puts the password in one).
pub fn describe(e: &redis::RedisError) -> String {
    e.to_string()
}

impl Redis {
    /// A client for `config` (nothing is connected yet).
    pub fn new(config: &RedisConfig) -> Result<Redis, String> {
        let info = redis::IntoConnectionInfo::into_connection_info(config.url.as_str())
            .map_err(|e| format!("state.redis.url: {e}"))?;
        let mut settings = info.redis_settings().clone();
        if let Some(p) = config.password.as_ref().filter(|p| !p.is_empty()) {
            settings = settings.set_password(p.expose());
        }
        if let Some(u) = config.username.as_ref().filter(|u| !u.is_empty()) {
            settings = settings.set_username(u);
        }
        let info = info.set_redis_settings(settings);
        let shown = shown_url(&config.url);
        let client = redis::Client::open(info).map_err(|e| format!("state.redis.url: {e}"))?;
        Ok(Redis {
            client,
            connect_timeout: config.connect_timeout.0,
            response_timeout: config.response_timeout.0,
            keys: Keys::new(&config.prefix),
            shown,
        })
    }

    /// A connection whose every reply may take at most `response` (`None`: the configured
    /// response timeout).
    pub fn connect(&self, response: Option<Duration>) -> redis::RedisResult<redis::Connection> {
        let conn = self.client.get_connection_with_timeout(self.connect_timeout)?;
        let timeout = response.unwrap_or(self.response_timeout);
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        Ok(conn)
    }
}

/// The URL without user information.
fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            format!("{scheme}://{host}")
        }
        None => url.to_string(),
    }
}

/// What this instance knows of the fleet: shared by the store, the tail and the status.
#[derive(Debug)]
pub struct Link {
    inner: Mutex<LinkState>,
    /// This instance's name in the fleet: host name, process id and a start id.
    pub instance: String,
}

#[derive(Debug, Default, Clone)]
pub struct LinkState {
    /// The epoch of the data served (`None`: none loaded from Redis yet).
    pub epoch: Option<String>,
    /// The fleet's latest revision as last read.
    pub fleet_revision: u64,
    /// Whether the last call reached Redis.
    pub reachable: bool,
    /// The last error reaching Redis.
    pub error: Option<String>,
    /// Redis lost its data (or it was replaced without `sluice store seed`): changes are
    /// refused until it is seeded.
    pub lost: Option<String>,
    /// A revision of the fleet does not build with this instance's config file.
    pub invalid: Option<String>,
    /// The local copy is served (Redis could not be read at start).
    pub serving_copy: bool,
    /// When this instance last knew it served the fleet's latest revision.
    pub current_at: Option<Instant>,
    /// The instances seen recently: name, the revision each served, seconds since.
    pub seen: Vec<(String, u64, u64)>,
    /// The instance holding the lease, as last read.
    pub leader: Option<String>,
}

impl Link {
    pub fn new() -> Arc<Link> {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "sluice".into());
        let instance = format!("{host}:{}:{:08x}", std::process::id(), fastrand::u32(..));
        Arc::new(Link { inner: Mutex::new(LinkState::default()), instance })
    }

    pub fn lock(&self) -> MutexGuard<'_, LinkState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn state(&self) -> LinkState {
        self.lock().clone()
    }

    pub fn reached(&self) {
        let mut s = self.lock();
        s.reachable = true;
        s.error = None;
    }

    pub fn failed(&self, e: &redis::RedisError) {
        let mut s = self.lock();
        s.reachable = false;
        s.error = Some(describe(e));
    }

    /// Seconds since this instance last knew it served the fleet's latest revision
    /// (`None`: it never has).
    pub fn staleness(&self) -> Option<f64> {
        self.lock().current_at.map(|t| t.elapsed().as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag_and_urls_are_shown_without_credentials() {
        let k = Keys::new("prod");
        assert_eq!(k.epoch(), "{prod}:epoch");
        assert_eq!(k.log(), "{prod}:log");
        assert_eq!(shown_url("redis://user:secret@10.0.0.1:6379/2"), "redis://10.0.0.1:6379/2");
        assert_eq!(shown_url("rediss://cache:6380"), "rediss://cache:6380");
    }
}
