//! The fleet's lease: one instance at a time runs the guards' decisions (trips, ramp
//! steps, sample-ratio pauses). `{prefix}:leader` holds the holder's name with a
//! [`LEASE`] expiry; taking it increments `{prefix}:fence`, the holder's token, which
//! each of its writes carries and the write script refuses once a newer token exists —
//! so a former leader that was paused or cut off past its lease cannot write, even with a
//! current revision. The holder renews every [`RENEW`] and counts itself the leader
//! only until [`STEP_DOWN`] after its last renewal, on the monotonic clock: well before
//! the key can have expired for anyone else.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::store::RedisStore;

/// How long the key lives without a renewal.
pub const LEASE: Duration = Duration::from_millis(5000);
/// How often the holder renews (and a candidate tries).
pub const RENEW: Duration = Duration::from_millis(1500);
/// How long after its last renewal the holder still acts.
pub const STEP_DOWN: Duration = Duration::from_millis(4000);

/// KEYS: leader, fence. ARGV: this instance, the lease in ms.
const TAKE: &str = r#"#!lua
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'held', redis.call('GET', KEYS[2]) or '0'}
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {'held', tostring(redis.call('INCR', KEYS[2]))}
end
return {'other', holder}
"#;

/// KEYS: leader. ARGV: this instance.
const RELEASE: &str = r#"#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"#;

#[derive(Debug, Default)]
struct Inner {
    token: Option<u64>,
    renewed: Option<Instant>,
    tried: Option<Instant>,
    /// Released for good (shutting down): never taken again.
    closed: bool,
}

/// This instance's side of the lease.
pub struct Lease {
    store: Arc<RedisStore>,
    inner: Mutex<Inner>,
    take: redis::Script,
    release: redis::Script,
}

impl Lease {
    pub fn new(store: Arc<RedisStore>) -> Lease {
        Lease {
            store,
            inner: Mutex::new(Inner::default()),
            take: redis::Script::new(TAKE),
            release: redis::Script::new(RELEASE),
        }
    }

    /// The store the lease is kept in.
    pub fn store(&self) -> &Arc<RedisStore> {
        &self.store
    }

    /// Renew or try to take the lease if it is time to, at `now`; the token while this
    /// instance is the leader.
    pub fn tick(&self, now: Instant) -> Option<u64> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.closed {
            return None;
        }
        if inner.tried.is_none_or(|t| now.saturating_duration_since(t) >= RENEW) {
            inner.tried = Some(now);
            let mut call = self.take.prepare_invoke();
            let k = &self.store.redis.keys;
            call.key(k.leader()).key(k.fence()).arg(&self.store.link.instance).arg(LEASE.as_millis() as u64);
            match self.store.with(|c| call.invoke::<(String, String)>(c)) {
                Ok((status, value)) if status == "held" => {
                    let token = value.parse().ok();
                    if inner.token != token {
                        tracing::info!(instance = %self.store.link.instance, token = ?token, "this instance leads the fleet: it runs the guards' decisions");
                    }
                    inner.token = token;
                    inner.renewed = Some(now);
                    self.store.link.lock().leader = Some(self.store.link.instance.clone());
                }
                Ok((_, holder)) => {
                    if inner.token.is_some() {
                        tracing::warn!(leader = %holder, "another instance holds the fleet's lease: this one stops deciding");
                    }
                    inner.token = None;
                    inner.renewed = None;
                    self.store.link.lock().leader = Some(holder);
                }
                // Unreachable: keep what was held until the step-down time.
                Err(e) => tracing::debug!(error = %e, "the fleet's lease could not be renewed"),
            }
        }
        let held = inner.renewed.is_some_and(|r| now.saturating_duration_since(r) < STEP_DOWN);
        if !held && inner.token.take().is_some() {
            tracing::warn!("the fleet's lease was not renewed in time: this instance stops deciding");
            let mut link = self.store.link.lock();
            if link.leader.as_deref() == Some(self.store.link.instance.as_str()) {
                link.leader = None;
            }
        }
        inner.token.filter(|_| held)
    }

    /// Give the lease up for good (on shutdown), so another instance takes it at once.
    pub fn release(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.closed = true;
        if inner.token.take().is_some() {
            let mut call = self.release.prepare_invoke();
            call.key(self.store.redis.keys.leader()).arg(&self.store.link.instance);
            let _ = self.store.with(|c| call.invoke::<i64>(c));
        }
        inner.renewed = None;
    }
}
