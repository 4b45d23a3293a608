//! The [`Store`] over Redis (see the module above for the keys).
//!
//! **A change is one script** ([`COMMIT`]): it checks the epoch (the data is the one
//! this instance loaded), the fleet's revision (the change was made against the latest
//! one: otherwise `Behind`, and `State` catches up and decides again — so `If-Match`
//! means the fleet's revision on every instance), and the leader's fence for a guard's
//! write; then writes the items, the revision, the change-log entry and the audit entry.
//! Scripts run atomically, and the script is declared with `#!lua` so that Redis refuses
//! it before its first write when it is out of memory: a change is in Redis whole or not
//! at all. When Redis does not answer, the change is refused (never queued); if the
//! request reached Redis before the answer timed out, it may have been made, and the
//! error says so — the change log then brings it to every instance like any other.
//!
//! **Seeding.** An empty Redis (no `epoch`) is seeded from the config file on a first
//! start — unless `lost` is set, or this instance's local copy says Redis held data
//! before: then the data was lost, and changes are refused until an operator runs `sluice
//! store seed` (from the local copy, an export or the file), which writes a new epoch that
//! every instance follows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use redis::Connection;
use serde::{Deserialize, Serialize};

use super::{Link, Redis, LOG_LENGTH};
use crate::state::items::{self, ItemChange};
use crate::state::{AuditEntry, EntryHead, Health, Store, StoreError, Stored};

/// The longest item or audit entry, as the file store's longest audit line.
const MAX_ENTRY: usize = 16 * 1024 * 1024;

/// The local copy's file name in `state.dir`.
pub const COPY: &str = "fleet-copy.json";

/// A connection unused this long is checked with a `PING` before it is used again.
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// How many audit entries one read of the audit stream fetches.
const AUDIT_PAGE: usize = 64;

/// Check the epoch, the revision and the fence; write the items, the revision, the log
/// and the audit entry. KEYS: epoch, rev, items, log, audit, fence. ARGV: epoch, the
/// expected revision, the fence token (`""`: none), the audit entry, the change, the log
/// length, the number of deleted items, the deleted items, then item/value pairs.
const COMMIT: &str = r#"#!lua
local epoch = redis.call('GET', KEYS[1])
if not epoch then return {'nodata', ''} end
if epoch ~= ARGV[1] then return {'epoch', epoch} end
local rev = tonumber(redis.call('GET', KEYS[2]) or '0')
if rev ~= tonumber(ARGV[2]) then return {'behind', tostring(rev)} end
if ARGV[3] ~= '' then
  local fence = tonumber(redis.call('GET', KEYS[6]) or '0')
  if tonumber(ARGV[3]) < fence then return {'fenced', tostring(fence)} end
end
local id = string.format('%d-0', rev + 1)
for _, stream in ipairs({KEYS[4], KEYS[5]}) do
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if last then
    local n = tonumber(string.match(last[1], '^(%d+)-'))
    if n and n > rev then return {'damaged', stream .. ' already holds revision ' .. last[1]} end
  end
end
local ndel = tonumber(ARGV[7])
for i = 1, ndel do redis.call('HDEL', KEYS[3], ARGV[7 + i]) end
local i = 8 + ndel
while i < #ARGV do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], id, 'epoch', epoch, 'change', ARGV[5])
redis.call('XADD', KEYS[5], id, 'entry', ARGV[4])
return {'ok', tostring(rev + 1)}
"#;

/// A first start on an empty Redis: a new epoch (`auto:`), unless data is known lost —
/// and only once Redis has been seen empty for [`EMPTY_GRACE_MS`] (Redis's clock): long
/// enough for a running instance to notice data it had is gone and say so (`lost`), so a
/// new instance never seeds a store that just lost its data. KEYS: epoch, rev, items,
/// log, audit, lost, empty_since. ARGV: the epoch, the grace in ms.
const INIT: &str = r#"#!lua
local epoch = redis.call('GET', KEYS[1])
if epoch then return {'exists', epoch} end
if redis.call('EXISTS', KEYS[6]) == 1 then return {'lost', redis.call('GET', KEYS[6])} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since = tonumber(redis.call('GET', KEYS[7]) or '')
if not since then
  redis.call('SET', KEYS[7], now, 'PX', 600000)
  return {'wait', ''}
end
if now - since < tonumber(ARGV[2]) then return {'wait', ''} end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[7])
redis.call('SET', KEYS[1], ARGV[1])
return {'ok', ARGV[1]}
"#;

/// How long an empty Redis must stay empty before a first start seeds it: longer than a
/// running instance takes to notice its data is gone (an idle change-log read, 1 s).
pub const EMPTY_GRACE_MS: u64 = 2500;

/// `sluice store seed`/`import`: the state at a revision, under a new epoch (`seed:`).
/// KEYS: epoch, rev, items, log, audit, lost. ARGV: the epoch, the revision, the audit
/// entry (`""`: the audit stream was written before), `force` (`1`: replace data), then
/// item/value pairs.
const SEED: &str = r#"#!lua
local epoch = redis.call('GET', KEYS[1])
if epoch and ARGV[4] ~= '1' then return {'exists', epoch} end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
if ARGV[3] ~= '' then redis.call('DEL', KEYS[5]) end
local i = 5
while i < #ARGV do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[6])
local id = ARGV[2] .. '-0'
redis.call('XADD', KEYS[4], id, 'epoch', ARGV[1], 'change', '')
if ARGV[3] ~= '' then redis.call('XADD', KEYS[5], id, 'entry', ARGV[3]) end
return {'ok', ARGV[2]}
"#;

/// What a local copy holds: the fleet's state as this instance last served it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Copy {
    pub epoch: String,
    pub stored: Stored,
}

/// The local copy in `dir`, if there is one that reads (bounded: at most 64 MiB).
pub fn read_copy(dir: &Path) -> Option<Copy> {
    let path = dir.join(COPY);
    let file = std::fs::File::open(&path).ok()?;
    let len = file.metadata().ok()?.len();
    if len > 4 * MAX_ENTRY as u64 {
        tracing::warn!(path = %path.display(), len, "the local copy of the fleet's state is too large to read: ignored");
        return None;
    }
    match serde_json::from_reader(std::io::BufReader::new(file)) {
        Ok(copy) => Some(copy),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the local copy of the fleet's state does not read: ignored");
            None
        }
    }
}

/// A whole store as `sluice store export` writes it and `import` reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Export {
    pub revision: u64,
    pub stored: Stored,
    /// Oldest first.
    pub audit: Vec<AuditEntry>,
}

/// See the module documentation.
pub struct RedisStore {
    pub redis: Redis,
    pub link: Arc<Link>,
    /// The connection, and when it last answered.
    conn: Mutex<Option<(Connection, Instant)>>,
    /// Where the local copy is kept (`state.dir`), locked while this store is open.
    dir: Option<PathBuf>,
    _lock: Option<std::fs::File>,
    scripts: Scripts,
}

struct Scripts {
    commit: redis::Script,
    init: redis::Script,
    seed: redis::Script,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn new_epoch(kind: &str) -> String {
    format!("{kind}:{:016x}", fastrand::u64(..))
}

/// Whether an error on an open connection certainly came before the request reached Redis
/// (then nothing happened); any other may have come after Redis carried it out.
fn before_sending(e: &redis::RedisError) -> bool {
    e.is_connection_refusal()
}

impl RedisStore {
    /// A store on `redis`, its local copy in `dir` (locked, as the file store locks it).
    /// Nothing is connected yet.
    pub fn open(redis: Redis, link: Arc<Link>, dir: Option<&Path>) -> Result<RedisStore, StoreError> {
        let lock = dir.map(crate::state::lock_dir).transpose()?;
        Ok(RedisStore {
            redis,
            link,
            conn: Mutex::new(None),
            dir: dir.map(Path::to_path_buf),
            _lock: lock,
            scripts: Scripts {
                commit: redis::Script::new(COMMIT),
                init: redis::Script::new(INIT),
                seed: redis::Script::new(SEED),
            },
        })
    }

    /// Run `f` on the store's connection (connecting first if needed); a failure drops
    /// the connection and reads as [`StoreError::Unavailable`] (nothing was sent) or
    /// [`StoreError::Unknown`] (it may have been carried out). `f` must be safe to run
    /// twice: after an unknown outcome it is run once more on a new connection.
    pub fn with<T>(&self, mut f: impl FnMut(&mut Connection) -> redis::RedisResult<T>) -> Result<T, StoreError> {
        match self.once(&mut f) {
            // Everything but a change is safe to send again: once, on a new connection.
            Err(StoreError::Unknown(_)) => self.once(&mut f),
            other => other,
        }
    }

    /// [`RedisStore::with`] without the second attempt (for a change: a lost answer is
    /// sorted out by looking at what Redis holds).
    fn once<T>(&self, f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>) -> Result<T, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        // A connection idle for a while may have been dropped by Redis (a restart, a
        // `CLIENT KILL`, its `timeout`): a `PING` finds out before anything that matters is
        // sent on it, so a command is never lost to a connection that was already dead.
        if let Some((c, used)) = guard.as_mut() {
            if used.elapsed() >= IDLE_CHECK && redis::cmd("PING").query::<String>(c).is_err() {
                *guard = None;
            }
        }
        let conn = match guard.as_mut() {
            Some((c, _)) => c,
            None => match self.redis.connect(None) {
                Ok(c) => &mut guard.insert((c, Instant::now())).0,
                Err(e) => {
                    self.link.failed(&e);
                    return Err(StoreError::Unavailable(format!("{}: {}", self.redis.shown, super::describe(&e))));
                }
            },
        };
        let result = f(conn);
        if let Some((_, used)) = guard.as_mut() {
            *used = Instant::now();
        }
        match result {
            Ok(v) => {
                self.link.reached();
                Ok(v)
            }
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
                // Redis answered with an error: the connection is fine.
                self.link.reached();
                Err(StoreError::Unavailable(format!("Redis refused the command: {}", super::describe(&e))))
            }
            Err(e) => {
                *guard = None;
                self.link.failed(&e);
                let why = format!("{}: {}", self.redis.shown, super::describe(&e));
                Err(if before_sending(&e) { StoreError::Unavailable(why) } else { StoreError::Unknown(why) })
            }
        }
    }

    fn keys6(&self, last: String) -> [String; 6] {
        let k = &self.redis.keys;
        [k.epoch(), k.rev(), k.items(), k.log(), k.audit(), last]
    }

    /// The fleet's epoch, revision and items, read in one transaction (consistent).
    pub fn read_all(&self) -> Result<(Option<String>, u64, Items), StoreError> {
        let k = &self.redis.keys;
        let (epoch, rev, items): (Option<String>, Option<u64>, HashMap<String, String>) =
            self.with(|c| redis::pipe().atomic().get(k.epoch()).get(k.rev()).hgetall(k.items()).query(c))?;
        if let Some((name, _)) = items.iter().find(|(n, v)| n.len() > 1024 || v.len() > MAX_ENTRY) {
            return Err(StoreError::Damaged {
                path: format!("{} item {}", k.items(), name.chars().take(64).collect::<String>()),
                message: format!("longer than {MAX_ENTRY} bytes"),
            });
        }
        Ok((epoch, rev.unwrap_or(0), items.into_iter().collect()))
    }

    /// Mark the data lost (for every instance, and for a later start).
    fn lose(&self, why: &str) -> StoreError {
        let known = self.link.lock().epoch.clone().unwrap_or_default();
        let lost = self.redis.keys.lost();
        let _ = self.with(|c| redis::cmd("SET").arg(&lost).arg(&known).arg("NX").query::<Option<String>>(c));
        let message = format!(
            "{why}: this instance keeps serving revision {} and refuses changes until an operator seeds the store (`sluice store seed --config <file>`)",
            self.link.lock().fleet_revision
        );
        self.link.lock().lost = Some(message.clone());
        StoreError::NotSeeded(message)
    }

    /// Whether a change whose answer was lost was made: `Some(true)` when the audit entry
    /// of `revision` is `audit`, `Some(false)` when the fleet is still at the revision
    /// before (nothing was made), `None` when that cannot be told (Redis still away, or
    /// another change took the revision: the compare-and-set sorts that out).
    fn outcome(&self, revision: u64, audit: &str) -> Option<bool> {
        let k = &self.redis.keys;
        let id = format!("{revision}-0");
        let (rev, entries): (Option<u64>, Vec<StreamEntry>) =
            self.with(|c| redis::pipe().get(k.rev()).cmd("XRANGE").arg(k.audit()).arg(&id).arg(&id).query(c)).ok()?;
        if entries.first().and_then(|(_, f)| f.get("entry")).is_some_and(|e| e == audit) {
            return Some(true);
        }
        (rev.unwrap_or(0) + 1 == revision).then_some(false)
    }

    /// The epoch of the local copy, if there is one.
    fn copy_epoch(&self) -> Option<String> {
        self.read_copy().map(|c| c.epoch)
    }

    pub fn read_copy(&self) -> Option<Copy> {
        read_copy(self.dir.as_ref()?)
    }

    /// Replace the local copy (temporary file, fsync, rename): a crash leaves the old
    /// copy or the new one, never a torn one.
    pub fn write_copy(&self, stored: &Stored) -> std::io::Result<()> {
        let (Some(dir), Some(epoch)) = (&self.dir, self.link.lock().epoch.clone()) else { return Ok(()) };
        let bytes = serde_json::to_vec(&Copy { epoch, stored: stored.clone() }).map_err(std::io::Error::other)?;
        let tmp = dir.join(format!("{COPY}.tmp"));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, dir.join(COPY))
    }

    /// Seed the store with `stored` at its revision under a new epoch, with `entry` as the
    /// audit entry of that revision. Refused when the store holds data, unless `force`.
    pub fn seed(&self, stored: &Stored, entry: Option<&AuditEntry>, force: bool) -> Result<String, StoreError> {
        let epoch = new_epoch("seed");
        let entry = match entry {
            Some(e) => serde_json::to_string(e).map_err(|e| StoreError::Unavailable(e.to_string()))?,
            None => String::new(),
        };
        let mut call = self.scripts.seed.prepare_invoke();
        for k in self.keys6(self.redis.keys.lost()) {
            call.key(k);
        }
        call.arg(&epoch).arg(stored.revision).arg(&entry).arg(if force { "1" } else { "0" });
        for (k, v) in items::to_items(stored) {
            call.arg(k).arg(v);
        }
        let (status, detail): (String, String) = self.once(|c| call.invoke(c))?;
        match status.as_str() {
            "ok" => Ok(epoch),
            _ => Err(StoreError::NotSeeded(format!(
                "the store already holds data (epoch {detail}): nothing was changed (--force replaces it)"
            ))),
        }
    }

    /// Append audit entries (an import, before [`RedisStore::seed`] without an entry).
    pub fn put_audit(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        let audit = self.redis.keys.audit();
        self.with(|c| redis::cmd("DEL").arg(&audit).query::<()>(c))?;
        for chunk in entries.chunks(256) {
            let mut pipe = redis::pipe();
            for e in chunk {
                let text = serde_json::to_string(e).unwrap_or_default();
                pipe.cmd("XADD").arg(&audit).arg(format!("{}-0", e.revision)).arg("entry").arg(text).ignore();
            }
            self.with(|c| pipe.query::<()>(c))?;
        }
        Ok(())
    }

    /// Everything: the state and the whole audit log, oldest first.
    pub fn export(&self) -> Result<Export, StoreError> {
        let (epoch, revision, items) = self.read_all()?;
        if epoch.is_none() {
            return Err(StoreError::NotSeeded("the store holds no data".into()));
        }
        let stored = items::from_items(revision, &items)
            .map_err(|message| StoreError::Damaged { path: self.redis.keys.items(), message })?;
        let mut audit = Vec::new();
        self.audit_back(None, &|_| true, &mut |e| {
            audit.push(e);
            true
        })?;
        audit.reverse();
        Ok(Export { revision, stored, audit })
    }

    /// Note this instance as seen (with the revision it serves), and read who was seen
    /// within `recent` seconds: name, revision, seconds since.
    pub fn heartbeat(&self, revision: u64, recent: u64) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let key = self.redis.keys.instances();
        let now = unix_now();
        let me = self.link.instance.clone();
        self.with(|c| redis::cmd("HSET").arg(&key).arg(&me).arg(format!("{now} {revision}")).query::<()>(c))?;
        self.heartbeat_read(recent)
    }

    /// Who was seen within `recent` seconds (and forget who was not seen for a day).
    pub fn heartbeat_read(&self, recent: u64) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let key = self.redis.keys.instances();
        let now = unix_now();
        let all: HashMap<String, String> = self.with(|c| redis::cmd("HGETALL").arg(&key).query(c))?;
        let mut seen = Vec::new();
        let mut stale = Vec::new();
        for (name, value) in all {
            let mut parts = value.split(' ');
            let at: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let rev: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let ago = now.saturating_sub(at);
            if ago <= recent {
                seen.push((name, rev, ago));
            } else if ago > 24 * 3600 {
                stale.push(name);
            }
        }
        if !stale.is_empty() {
            let _ = self.with(|c| redis::cmd("HDEL").arg(&key).arg(&stale).query::<()>(c));
        }
        seen.sort();
        Ok(seen)
    }

    /// The key that signs response tokens, the same for the whole fleet (made once).
    pub fn feedback_key(&self, fresh: [u8; 32]) -> Result<Vec<u8>, StoreError> {
        let key = self.redis.keys.feedback_key();
        let hex: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
        let text: String = self.with(|c| {
            redis::pipe()
                .cmd("SET")
                .arg(&key)
                .arg(&hex)
                .arg("NX")
                .ignore()
                .get(&key)
                .query::<(String,)>(c)
                .map(|(s,)| s)
        })?;
        crate::keys::parse_digest(text.trim())
            .map(|k| k.to_vec())
            .ok_or_else(|| StoreError::Damaged { path: key, message: "not 64 hex digits".into() })
    }
}

type Items = items::Items;

/// One stream entry: its id and fields.
type StreamEntry = (String, HashMap<String, String>);

impl Store for RedisStore {
    fn shared(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn fleet(&self) -> Option<crate::state::FleetStatus> {
        let s = self.link.state();
        Some(crate::state::FleetStatus {
            redis: self.redis.shown.clone(),
            epoch: s.epoch.clone(),
            fleet_revision: s.fleet_revision,
            instance: self.link.instance.clone(),
            staleness_seconds: self.link.staleness(),
            leader: s.leader.clone(),
            instances: s
                .seen
                .iter()
                .map(|(name, revision, ago)| crate::state::InstanceSeen {
                    name: name.clone(),
                    revision: *revision,
                    seen_seconds_ago: *ago,
                })
                .collect(),
        })
    }

    fn load(&self) -> Result<Option<Stored>, StoreError> {
        let (epoch, revision, items) = self.read_all()?;
        let known = self.link.lock().epoch.clone();
        let Some(epoch) = epoch else {
            let lost: Option<String> = self.with(|c| redis::cmd("GET").arg(self.redis.keys.lost()).query(c))?;
            if lost.is_some() {
                return Err(self.lose("Redis lost its data (an instance found it gone)"));
            }
            if known.is_some() || self.copy_epoch().is_some() {
                return Err(self.lose("Redis holds no data, but it did before"));
            }
            // A first start: a new epoch, and the file seeds revision 1.
            let mut call = self.scripts.init.prepare_invoke();
            for k in self.keys6(self.redis.keys.lost()) {
                call.key(k);
            }
            call.key(self.redis.keys.empty_since()).arg(new_epoch("auto")).arg(EMPTY_GRACE_MS);
            let (status, epoch): (String, String) = self.with(|c| call.invoke(c))?;
            if status == "lost" {
                return Err(self.lose("Redis lost its data (an instance found it gone)"));
            }
            if status == "wait" {
                return Err(StoreError::Unavailable(format!(
                    "{} is empty: waiting {EMPTY_GRACE_MS} ms for running instances to say whether it lost data before seeding it",
                    self.redis.shown
                )));
            }
            let mut link = self.link.lock();
            link.epoch = Some(epoch);
            link.fleet_revision = 0;
            link.lost = None;
            link.current_at = Some(Instant::now());
            // Another instance may have seeded it meanwhile: read again then.
            drop(link);
            if status == "exists" {
                return self.load();
            }
            return Ok(None);
        };
        let was = known.or_else(|| self.copy_epoch());
        if let Some(was) = was.filter(|w| *w != epoch) {
            if !epoch.starts_with("seed:") {
                return Err(self.lose(&format!(
                    "Redis's data was replaced (epoch {was} became {epoch}) without `sluice store seed`"
                )));
            }
        }
        if revision == 0 {
            // Initialised by a first start that has not seeded it yet: seed it too (one
            // of the two compare-and-sets wins; the other catches up).
            let mut link = self.link.lock();
            link.epoch = Some(epoch);
            link.lost = None;
            return Ok(None);
        }
        let stored = items::from_items(revision, &items)
            .map_err(|message| StoreError::Damaged { path: self.redis.keys.items(), message })?;
        let mut link = self.link.lock();
        link.epoch = Some(epoch);
        link.fleet_revision = revision;
        link.lost = None;
        link.serving_copy = false;
        link.current_at = Some(Instant::now());
        Ok(Some(stored))
    }

    fn commit(&self, entry: &AuditEntry, prev: &Stored, next: &Stored, fence: Option<u64>) -> Result<(), StoreError> {
        let (epoch, lost) = {
            let link = self.link.lock();
            (link.epoch.clone(), link.lost.clone())
        };
        if let Some(lost) = lost {
            return Err(StoreError::NotSeeded(lost));
        }
        let Some(epoch) = epoch else {
            return Err(StoreError::Unavailable("the fleet's state has not been read yet".into()));
        };
        let audit = serde_json::to_string(entry).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if audit.len() > MAX_ENTRY {
            return Err(StoreError::TooLarge { bytes: audit.len(), max: MAX_ENTRY });
        }
        let change: ItemChange = items::diff(&items::to_items(prev), &items::to_items(next));
        let change_text = serde_json::to_string(&change).unwrap_or_default();
        let mut call = self.scripts.commit.prepare_invoke();
        for k in self.keys6(self.redis.keys.fence()) {
            call.key(k);
        }
        call.arg(&epoch)
            .arg(prev.revision)
            .arg(fence.map(|f| f.to_string()).unwrap_or_default())
            .arg(&audit)
            .arg(&change_text)
            .arg(LOG_LENGTH)
            .arg(change.del.len());
        for k in &change.del {
            call.arg(k);
        }
        for (k, v) in &change.set {
            call.arg(k).arg(v);
        }
        let (status, detail): (String, String) = match self.once(|c| call.invoke(c)) {
            Err(StoreError::Unknown(why)) => match self.outcome(prev.revision + 1, &audit) {
                // Made: its audit entry is the next revision's.
                Some(true) => ("ok".into(), String::new()),
                // Not made, and nothing else either: send it again, once.
                Some(false) => self.once(|c| call.invoke(c))?,
                None => return Err(StoreError::Unknown(why)),
            },
            other => other?,
        };
        match status.as_str() {
            "ok" => {
                let mut link = self.link.lock();
                link.fleet_revision = link.fleet_revision.max(next.revision);
                Ok(())
            }
            "behind" => {
                let fleet = detail.parse().unwrap_or(0);
                self.link.lock().fleet_revision = fleet;
                Err(StoreError::Behind { fleet })
            }
            "epoch" if detail.starts_with("seed:") => Err(StoreError::Behind { fleet: 0 }),
            "epoch" => Err(self.lose(&format!(
                "Redis's data was replaced (epoch {epoch} became {detail}) without `sluice store seed`"
            ))),
            "nodata" => Err(self.lose("Redis lost its data")),
            "fenced" => Err(StoreError::Fenced { fence: detail.parse().unwrap_or(0), token: fence.unwrap_or(0) }),
            _ => Err(StoreError::Damaged { path: self.redis.keys.log(), message: detail }),
        }
    }

    fn audit_back(
        &self,
        before: Option<u64>,
        wanted: &dyn Fn(&EntryHead) -> bool,
        visit: &mut dyn FnMut(AuditEntry) -> bool,
    ) -> Result<(), StoreError> {
        let key = self.redis.keys.audit();
        let mut end = match before {
            Some(0) => return Ok(()),
            Some(b) => format!("({b}-0"),
            None => "+".to_string(),
        };
        loop {
            let page: Vec<(String, HashMap<String, String>)> = self
                .with(|c| redis::cmd("XREVRANGE").arg(&key).arg(&end).arg("-").arg("COUNT").arg(AUDIT_PAGE).query(c))?;
            let Some((last_id, _)) = page.last() else { return Ok(()) };
            let next_end = format!("({last_id}");
            let full = page.len() == AUDIT_PAGE;
            for (id, fields) in page {
                let damaged = |message: String| StoreError::Damaged { path: format!("{key} {id}"), message };
                let text = fields.get("entry").ok_or_else(|| damaged("no `entry` field".into()))?;
                if text.len() > MAX_ENTRY {
                    return Err(damaged(format!("longer than {MAX_ENTRY} bytes")));
                }
                let head: EntryHead = serde_json::from_str(text).map_err(|e| damaged(e.to_string()))?;
                if wanted(&head) {
                    let entry: AuditEntry = serde_json::from_str(text).map_err(|e| damaged(e.to_string()))?;
                    if !visit(entry) {
                        return Ok(());
                    }
                }
            }
            if !full {
                return Ok(());
            }
            end = next_end;
        }
    }

    fn local_copy(&self) -> Option<Stored> {
        let copy = self.read_copy()?;
        let mut link = self.link.lock();
        link.serving_copy = true;
        link.fleet_revision = copy.stored.revision;
        Some(copy.stored)
    }

    fn health(&self) -> Health {
        let s = self.link.state();
        // Nothing of the fleet's served yet (the file's flags are not the fleet's).
        if s.epoch.is_none() && !s.serving_copy {
            let why = s.lost.or(s.error).map(|e| format!(" ({e})")).unwrap_or_default();
            return Health::NotReady(format!("the fleet's state has not been read from {} yet{why}", self.redis.shown));
        }
        if let Some(lost) = s.lost {
            return Health::Degraded(lost);
        }
        if !s.reachable || s.serving_copy {
            return Health::Degraded(format!(
                "{} cannot be reached{}: serving the last state this instance has; changes are refused",
                self.redis.shown,
                s.error.map(|e| format!(" ({e})")).unwrap_or_default()
            ));
        }
        if let Some(invalid) = s.invalid {
            return Health::Degraded(invalid);
        }
        Health::Ok
    }

    fn close(&self) {
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}
