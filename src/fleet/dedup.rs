//! The fleet's feedback de-duplication set: every (token, metric) pair an instance takes
//! is also claimed in Redis (one script: `SET seen:<pair> <claim id> NX PX <until the
//! token expires>`, the pair ours when it holds our id), so a signal sent to two
//! instances — an app's retry through the load balancer, or a replay aimed at each
//! instance in turn — counts once. A claim whose reply was lost is sent again with the
//! same id, so a pair it did take reads back as ours rather than as a duplicate. Calls
//! run on the data plane's blocking pool, never on an event loop, on a connection of their
//! own (feedback never waits behind an admin write).

use std::sync::{Mutex, PoisonError};

use super::Redis;
use crate::token::SharedDedup;

/// Claim `KEYS` for `ARGV[2]` ms under the claim id `ARGV[1]`; the first key gates the
/// rest (a report already counted claims none of its metrics). Per key: 1 when it holds
/// the id (taken now, or by this claim's earlier try), else 0.
const CLAIM: &str = r#"
local out = {}
for i = 1, #KEYS do
  local mine = redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', KEYS[i]) == ARGV[1]
  out[i] = mine and 1 or 0
  if i == 1 and not mine then return out end
end
return out
"#;

pub struct FleetDedup {
    redis: Redis,
    script: redis::Script,
    conn: Mutex<Option<redis::Connection>>,
}

impl FleetDedup {
    pub fn new(redis: Redis) -> FleetDedup {
        FleetDedup { redis, script: redis::Script::new(CLAIM), conn: Mutex::new(None) }
    }

    fn once(&self, pairs: &[String], ttl_ms: u64, id: &str) -> redis::RedisResult<Vec<bool>> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let c = match conn.as_mut() {
            Some(c) => c,
            None => conn.insert(self.redis.connect(None)?),
        };
        let mut call = self.script.prepare_invoke();
        for pair in pairs {
            call.key(self.redis.keys.seen(pair));
        }
        call.arg(id).arg(ttl_ms.max(1));
        match call.invoke::<Vec<i64>>(c) {
            Ok(held) => Ok((0..pairs.len()).map(|i| held.get(i) == Some(&1)).collect()),
            Err(e) => {
                *conn = None;
                Err(e)
            }
        }
    }
}

impl SharedDedup for FleetDedup {
    fn claim(&self, pairs: &[String], ttl_ms: u64) -> Result<Vec<bool>, String> {
        let id = format!("{:016x}", fastrand::u64(..));
        self.once(pairs, ttl_ms, &id)
            .or_else(|_| self.once(pairs, ttl_ms, &id))
            .map_err(|e| format!("{}: {}", self.redis.shown, super::describe(&e)))
    }
}
