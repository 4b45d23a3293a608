//! The guards' statistics of the whole fleet. Each instance flushes what its per
//! (flag, variation) statistics gained since its last acknowledged flush (every counter
//! of [`GuardSnapshot`]: requests, outcomes, latency and TTFT moments and buckets,
//! tokens, cost, feedback, judge scores and guardrail counts) into Redis, and reads back
//! the fleet's totals, which the guards and experiments then decide on
//! ([`crate::metrics::Metrics::totals`]).
//!
//! **Idempotent.** A flush is one script ([`FLUSH`]) that first claims its id
//! (`{prefix}:flush:<instance>:<seq>`, `SET NX` with a two-hour expiry) and adds nothing
//! if the id was claimed before: a flush whose reply was lost is sent again, with the
//! same id and the same deltas, until it is acknowledged, and counts once. New counts
//! meanwhile wait in the process's own counters (bounded: one set of counters per
//! (flag, variation), however long Redis is away), so a crash loses at most what was not
//! yet acknowledged. The totals are `{prefix}:stats:<flag>` (hash: `<variation> <field>`,
//! never expiring); the same deltas go to ten-second buckets `{prefix}:agg:<unix/10>`
//! (hash: `<flag> <variation> <field>`, kept two hours) for windows in time. A guard's
//! window starts from one baseline for the whole fleet ([`shared_baseline`]), so a leader
//! elected later judges on the same window as the one before it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::store::RedisStore;
use crate::metrics::{ArmTotals, Edge, GuardSnapshot, LogMoments, Moments, Signal, SignalKind, LATENCY_BUCKETS};
use crate::state::StoreError;

/// Separates the parts of a field name (never in a flag key, variation or metric name).
const SEP: char = '\u{1f}';
/// How long a flush id is remembered, and a bucket kept.
const FLUSH_TTL_SECS: u64 = 7200;
/// The width of a time bucket.
pub const BUCKET_SECS: u64 = 10;

/// Claim the flush id; if new, add every delta. KEYS: the flush id, then the hashes.
/// ARGV: the id's expiry, the buckets' expiry, then quads (key index, `i`|`f`, field, delta).
const FLUSH: &str = r#"#!lua
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local i = 3
while i <= #ARGV do
  local key = KEYS[tonumber(ARGV[i])]
  if ARGV[i + 1] == 'i' then
    redis.call('HINCRBY', key, ARGV[i + 2], ARGV[i + 3])
  else
    redis.call('HINCRBYFLOAT', key, ARGV[i + 2], ARGV[i + 3])
  end
  i = i + 4
end
for k = 2, #KEYS do
  if string.find(KEYS[k], ':agg:', 1, true) then redis.call('EXPIRE', KEYS[k], ARGV[2]) end
end
return 1
"#;

/// A snapshot's counters by field name, zeros left out.
pub type Fields = Vec<(String, Delta)>;

/// One counter's gain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delta {
    Int(i64),
    Float(f64),
}

impl Delta {
    /// As Redis takes it (`HINCRBY` / `HINCRBYFLOAT`) and [`from_fields`] reads it back.
    pub fn text(self) -> String {
        match self {
            Delta::Int(i) => i.to_string(),
            Delta::Float(f) => format!("{f:e}"),
        }
    }
}

/// The fields of a snapshot (of a window: every value is a gain), zeros left out.
pub fn fields(s: &GuardSnapshot) -> Fields {
    let mut out = Vec::new();
    let mut int = |name: &str, v: i64| {
        if v != 0 {
            out.push((name.to_string(), Delta::Int(v)));
        }
    };
    let u = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    int("requests", u(s.requests));
    int("errors", u(s.errors));
    int("client_errors", u(s.client_errors));
    int("cancelled", u(s.cancelled));
    int("random_context", u(s.random_context));
    for (name, m) in [("latency", &s.latency), ("ttft", &s.ttft)] {
        let (n, sum, sumsq) = m.fixed();
        int(&format!("{name}_n"), u(n));
        int(&format!("{name}_sum"), sum);
        int(&format!("{name}_sumsq"), sumsq);
    }
    for (i, c) in s.latency_buckets.iter().enumerate() {
        int(&format!("lb{i}"), u(*c));
    }
    int("usage_n", u(s.usage_n));
    int("input_tokens", u(s.input_tokens));
    int("output_tokens", u(s.output_tokens));
    int("output_tokens_sumsq", u(s.output_tokens_sumsq));
    let mut moments = |prefix: &str, m: &Moments| {
        if m.n > 0 {
            out.push((format!("{prefix}n"), Delta::Int(u(m.n))));
            out.push((format!("{prefix}sum"), Delta::Float(m.sum)));
            out.push((format!("{prefix}sumsq"), Delta::Float(m.sumsq)));
        }
    };
    moments("cost_", &s.cost);
    for (key, sig) in &s.signals {
        let kind = match (sig.kind, sig.higher_is_better) {
            (SignalKind::Boolean, true) => "bh",
            (SignalKind::Boolean, false) => "bl",
            (SignalKind::Numeric, true) => "nh",
            (SignalKind::Numeric, false) => "nl",
        };
        moments(&format!("sig{SEP}{key}{SEP}{kind}{SEP}"), &sig.moments);
    }
    out
}

/// A snapshot from the fields of a totals hash (unknown fields are ignored).
pub fn from_fields<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> GuardSnapshot {
    let mut s = GuardSnapshot::default();
    let mut logs: HashMap<&str, (u64, i64, i64)> = HashMap::new();
    for (name, value) in fields {
        let int = || value.parse::<i64>().ok().or_else(|| value.parse::<f64>().ok().map(|f| f as i64)).unwrap_or(0);
        let count = || u64::try_from(int()).unwrap_or(0);
        let float = || value.parse::<f64>().ok().filter(|f| f.is_finite()).unwrap_or(0.0);
        match name {
            "requests" => s.requests = count(),
            "errors" => s.errors = count(),
            "client_errors" => s.client_errors = count(),
            "cancelled" => s.cancelled = count(),
            "random_context" => s.random_context = count(),
            "usage_n" => s.usage_n = count(),
            "input_tokens" => s.input_tokens = count(),
            "output_tokens" => s.output_tokens = count(),
            "output_tokens_sumsq" => s.output_tokens_sumsq = count(),
            "cost_n" => s.cost.n = count(),
            "cost_sum" => s.cost.sum = float(),
            "cost_sumsq" => s.cost.sumsq = float(),
            _ => {
                if let Some(i) = name.strip_prefix("lb").and_then(|i| i.parse::<usize>().ok()) {
                    if i < LATENCY_BUCKETS {
                        s.latency_buckets[i] = count();
                    }
                } else if let Some(rest) = name.strip_prefix(&format!("sig{SEP}")) {
                    let mut parts = rest.split(SEP);
                    let (Some(key), Some(kind), Some(part)) = (parts.next(), parts.next(), parts.next()) else {
                        continue;
                    };
                    let (kind, higher_is_better) = match kind {
                        "bh" => (SignalKind::Boolean, true),
                        "bl" => (SignalKind::Boolean, false),
                        "nh" => (SignalKind::Numeric, true),
                        _ => (SignalKind::Numeric, false),
                    };
                    let sig = s.signals.entry(key.to_string()).or_insert(Signal {
                        kind,
                        higher_is_better,
                        moments: Moments::default(),
                    });
                    match part {
                        "n" => sig.moments.n = count(),
                        "sum" => sig.moments.sum = float(),
                        "sumsq" => sig.moments.sumsq = float(),
                        _ => {}
                    }
                } else {
                    for q in ["latency", "ttft"] {
                        if let Some(part) = name.strip_prefix(q).and_then(|p| p.strip_prefix('_')) {
                            let e = logs.entry(q).or_default();
                            match part {
                                "n" => e.0 = count(),
                                "sum" => e.1 = int(),
                                "sumsq" => e.2 = int(),
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
    }
    for (q, (n, sum, sumsq)) in logs {
        let m = LogMoments::from_fixed(n, sum, sumsq);
        if q == "latency" {
            s.latency = m;
        } else {
            s.ttft = m;
        }
    }
    s
}

/// A flush not yet acknowledged: sent again as it is until it is.
struct Pending {
    seq: u64,
    bucket: u64,
    /// (flag, variation) → the gain.
    deltas: Vec<((String, String), Fields)>,
    /// What the totals will have been flushed up to once it is acknowledged.
    upto: HashMap<(String, String), GuardSnapshot>,
}

/// This instance's flushes (used by the fleet's thread only).
pub struct Flusher {
    seq: u64,
    pending: Option<Pending>,
    flushed: HashMap<(String, String), GuardSnapshot>,
    /// A test's fault: the next this many acknowledged flushes act as if their reply was lost.
    lose_replies: AtomicUsize,
    script: redis::Script,
}

impl Default for Flusher {
    fn default() -> Self {
        Flusher {
            seq: 0,
            pending: None,
            flushed: HashMap::new(),
            lose_replies: AtomicUsize::new(0),
            script: redis::Script::new(FLUSH),
        }
    }
}

/// What one flush did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    Nothing,
    /// Added to the fleet's totals.
    Added,
    /// Sent before (a retry after a lost reply): not added again.
    Repeat,
}

impl Flusher {
    /// Act as if the replies of the next `n` flushes were lost (they are sent again).
    pub fn lose_replies(&self, n: usize) {
        self.lose_replies.store(n, Ordering::Relaxed);
    }

    /// Flush what `now` (this process's totals) gained since the last acknowledged flush
    /// — or send the unacknowledged one again.
    pub fn flush(
        &mut self,
        store: &RedisStore,
        now: Vec<((String, String), GuardSnapshot)>,
        unix_secs: u64,
    ) -> Result<Flushed, StoreError> {
        if self.pending.is_none() {
            let mut deltas = Vec::new();
            let mut upto = self.flushed.clone();
            for (key, total) in now {
                let gain = match self.flushed.get(&key) {
                    Some(before) => total.since(before),
                    None => total.clone(),
                };
                let gain = fields(&gain);
                if !gain.is_empty() {
                    deltas.push((key.clone(), gain));
                }
                upto.insert(key, total);
            }
            if deltas.is_empty() {
                self.flushed = upto;
                return Ok(Flushed::Nothing);
            }
            self.seq += 1;
            self.pending = Some(Pending { seq: self.seq, bucket: unix_secs / BUCKET_SECS, deltas, upto });
        }
        let Some(p) = &self.pending else { return Ok(Flushed::Nothing) };
        let k = &store.redis.keys;
        let mut keys: Vec<String> = vec![k.flush(&store.link.instance, p.seq)];
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut slot = |key: String, keys: &mut Vec<String>| -> usize {
            *index.entry(key.clone()).or_insert_with(|| {
                keys.push(key);
                keys.len()
            })
        };
        let mut args: Vec<String> = vec![FLUSH_TTL_SECS.to_string(), FLUSH_TTL_SECS.to_string()];
        let bucket = slot(k.bucket(p.bucket), &mut keys);
        for ((flag, variation), gain) in &p.deltas {
            let totals = slot(k.stats(flag), &mut keys);
            for (field, delta) in gain {
                let kind = if matches!(delta, Delta::Int(_)) { "i" } else { "f" };
                let value = delta.text();
                let field = field.as_str();
                for (at, name) in [
                    (totals, format!("{variation}{SEP}{field}")),
                    (bucket, format!("{flag}{SEP}{variation}{SEP}{field}")),
                ] {
                    args.extend([at.to_string(), kind.to_string(), name, value.clone()]);
                }
            }
        }
        let mut call = self.script.prepare_invoke();
        for key in &keys {
            call.key(key);
        }
        for a in &args {
            call.arg(a);
        }
        let added: i64 = store.with(|c| call.invoke(c))?;
        if self.lose_replies.load(Ordering::Relaxed) > 0 {
            self.lose_replies.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::Unavailable("the flush's reply was lost (a test's fault)".into()));
        }
        if let Some(p) = self.pending.take() {
            self.flushed = p.upto;
        }
        Ok(if added == 1 { Flushed::Added } else { Flushed::Repeat })
    }
}

/// The fleet's totals of `flags`.
pub fn read_totals(
    store: &RedisStore,
    flags: &[String],
) -> Result<HashMap<(String, String), GuardSnapshot>, StoreError> {
    let k = &store.redis.keys;
    let mut pipe = redis::pipe();
    for f in flags {
        pipe.hgetall(k.stats(f));
    }
    let all: Vec<HashMap<String, String>> =
        if flags.is_empty() { Vec::new() } else { store.with(|c| pipe.query(c))? };
    let mut out = HashMap::new();
    for (flag, hash) in flags.iter().zip(all) {
        let mut by_variation: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
        for (name, value) in &hash {
            if let Some((variation, field)) = name.split_once(SEP) {
                by_variation.entry(variation).or_default().push((field, value.as_str()));
            }
        }
        for (variation, fields) in by_variation {
            out.insert((flag.clone(), variation.to_string()), from_fields(fields));
        }
    }
    Ok(out)
}

/// How long a shared window's baseline is kept (a window longer than this starts again).
const WINDOW_TTL_SECS: u64 = 30 * 24 * 3600;
/// How long an experiment iteration's start and end are kept: past it, an instance that
/// starts later measures from what it saw itself.
const ITERATION_TTL_SECS: u64 = 400 * 24 * 3600;

/// The baseline of a guard's window, the same on every instance: the first instance to
/// start window `id` of `flag` stores the arms' totals it saw (`SET NX`), and every
/// instance — a leader elected later included — measures from those.
pub fn shared_baseline(
    store: &RedisStore,
    flag: &str,
    id: &str,
    control: &GuardSnapshot,
    treatment: &GuardSnapshot,
) -> Result<(GuardSnapshot, GuardSnapshot), StoreError> {
    let mine: ArmTotals =
        [("control".to_string(), control.clone()), ("treatment".to_string(), treatment.clone())].into();
    let key = store.redis.keys.window(flag, id);
    let mut agreed = shared_totals(store, &key, WINDOW_TTL_SECS, Some(&mine))?.unwrap_or(mine);
    let mut arm = |name: &str| {
        agreed.remove(name).ok_or_else(|| StoreError::Damaged { path: key.clone(), message: format!("no `{name}`") })
    };
    Ok((arm("control")?, arm("treatment")?))
}

/// One edge of an experiment's iteration, the same on every instance: the first instance
/// to see iteration `number` of `flag` start (or stop) stores the arms' totals it saw, and
/// every instance — one started days later included — measures the iteration between
/// those. `mine: None` (this instance does not know the edge) only reads; `Ok(None)`: no
/// instance stored it.
pub fn shared_iteration(
    store: &RedisStore,
    flag: &str,
    number: u32,
    edge: Edge,
    mine: Option<&ArmTotals>,
) -> Result<Option<ArmTotals>, StoreError> {
    let edge = match edge {
        Edge::Start => "start",
        Edge::End => "end",
    };
    shared_totals(store, &store.redis.keys.iteration(flag, number, edge), ITERATION_TTL_SECS, mine)
}

/// `SET key mine NX EX ttl` then `GET key` (only the `GET` without `mine`): the totals by
/// variation whoever came first stored.
fn shared_totals(
    store: &RedisStore,
    key: &str,
    ttl: u64,
    mine: Option<&ArmTotals>,
) -> Result<Option<ArmTotals>, StoreError> {
    let stored: Option<String> = store.with(|c| {
        let mut pipe = redis::pipe();
        if let Some(mine) = mine {
            let text: serde_json::Map<String, serde_json::Value> = mine
                .iter()
                .map(|(arm, s)| {
                    let fields = fields(s).into_iter().map(|(k, v)| (k, serde_json::Value::String(v.text())));
                    (arm.clone(), serde_json::Value::Object(fields.collect()))
                })
                .collect();
            pipe.cmd("SET")
                .arg(key)
                .arg(serde_json::Value::Object(text).to_string())
                .arg("NX")
                .arg("EX")
                .arg(ttl)
                .ignore();
        }
        pipe.get(key).query::<(Option<String>,)>(c).map(|(s,)| s)
    })?;
    let Some(stored) = stored else { return Ok(None) };
    let damaged = |message: String| StoreError::Damaged { path: key.to_string(), message };
    let value: serde_json::Value = serde_json::from_str(&stored).map_err(|e| damaged(e.to_string()))?;
    let arms = value.as_object().ok_or_else(|| damaged("not an object".into()))?;
    let arm = |fields: &serde_json::Value| -> Result<GuardSnapshot, StoreError> {
        let map = fields.as_object().ok_or_else(|| damaged("an arm is not an object".into()))?;
        Ok(from_fields(map.iter().filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))))
    };
    arms.iter().map(|(name, fields)| Ok((name.clone(), arm(fields)?))).collect::<Result<_, _>>().map(Some)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;
    use crate::metrics::{Finished, GuardStats, Outcome, Usage};

    #[test]
    fn every_counter_survives_the_trip_through_redis_fields() {
        let stats = GuardStats::default();
        for (outcome, ms) in
            [(Outcome::Ok, 120), (Outcome::Ok, 900), (Outcome::UpstreamError, 5), (Outcome::Cancelled, 3)]
        {
            stats.record(&Finished {
                outcome,
                duration: Duration::from_millis(ms),
                ttft: Some(Duration::from_millis(ms / 3)),
                overhead: Duration::ZERO,
                usage: Some(Usage { input: 10, output: 7, cached: 0 }),
                cost: Some(0.25),
            });
        }
        stats.note_random_context();
        stats.signal("thumbs_up", SignalKind::Boolean, true).record(1.0);
        stats.signal("judge:helpfulness", SignalKind::Numeric, true).record(0.75);
        let snap = stats.snapshot();
        let text: Vec<(String, String)> = fields(&snap).into_iter().map(|(k, v)| (k, v.text())).collect();
        let back = from_fields(text.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(back, snap);
    }
}
