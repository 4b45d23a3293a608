//! Following the fleet: one thread per instance (`sluice-fleet`) with a connection of its
//! own, blocked in `XREAD` on the change log from the revision it serves (the stream ids
//! are revisions). Each entry is applied in order ([`State::apply_remote`]): the next
//! revision is swapped in; one already served (this instance's own change) is skipped;
//! a gap (entries trimmed, or missed), an entry of another epoch (the store was seeded
//! again), a reconnect, or a revision that does not apply makes it load everything
//! again ([`RedisStore::load`]: one transaction). A backstop compares the epoch and the
//! revision whenever a read comes back empty (about once a second when idle) and at least
//! every [`BACKSTOP`], and while Redis is unreachable the thread retries with a
//! growing, jittered pause. Every second it flushes this process's statistics and reads
//! the fleet's totals (`stats.rs`); every two it notes this instance in the fleet's list
//! and keeps its local copy (`state.dir`) up to date.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::store::RedisStore;
use crate::state::items::ItemChange;
use crate::state::{Remote, State, StoreError};

/// How long one `XREAD` waits for an entry.
const BLOCK: Duration = Duration::from_secs(1);
/// How often the epoch and the revision are compared even when entries flow.
pub const BACKSTOP: Duration = Duration::from_secs(30);
/// How often this instance flushes its statistics and reads the fleet's.
const FLUSH: Duration = Duration::from_secs(1);
/// How often this instance notes itself in the fleet's list.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Who counts as seen recently, in seconds.
pub const RECENT: u64 = 30;
/// The longest pause between attempts to reach Redis.
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// Entries read at once.
const BATCH: usize = 512;

type Entries = Vec<(String, Vec<(String, HashMap<String, String>)>)>;

/// The thread's handle: its view of the fleet, and a way to stop it.
pub struct Tail {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Tail {
    /// Start following the fleet.
    pub fn spawn(state: Arc<State>, store: Arc<RedisStore>) -> std::io::Result<Tail> {
        let stop = Arc::new(AtomicBool::new(false));
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let s = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("sluice-fleet".into()).spawn(move || {
            let _logging = tracing::dispatcher::set_default(&dispatch);
            Follower::new(state, store, s).run();
        })?;
        Ok(Tail { stop, thread: Some(thread) })
    }

    /// Stop the thread (it notices within one `XREAD`).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Follower {
    state: Arc<State>,
    store: Arc<RedisStore>,
    stop: Arc<AtomicBool>,
    conn: Option<redis::Connection>,
    full: bool,
    pause: Duration,
    backstop: Instant,
    heartbeat: Option<Instant>,
    copied: u64,
    flusher: super::stats::Flusher,
    flushed_at: Option<Instant>,
}

impl Follower {
    fn new(state: Arc<State>, store: Arc<RedisStore>, stop: Arc<AtomicBool>) -> Follower {
        // Whatever start-up loaded (or not) is looked at again once connected.
        let full = store.link.lock().epoch.is_none();
        Follower {
            state,
            store,
            stop,
            conn: None,
            full,
            pause: Duration::from_millis(100),
            backstop: Instant::now(),
            heartbeat: None,
            copied: u64::MAX,
            flusher: super::stats::Flusher::default(),
            flushed_at: None,
        }
    }

    fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.step() {
                self.conn = None;
                self.full = true;
                tracing::debug!(error = %e, "the fleet's change log could not be read");
                let jitter = Duration::from_millis(fastrand::u64(0..=250));
                std::thread::sleep(self.pause + jitter);
                self.pause = (self.pause * 2).min(MAX_PAUSE);
            }
            self.housekeeping();
        }
        // What this process counted since its last flush reaches the fleet's totals.
        if let Err(e) = self.flush_stats() {
            tracing::warn!(error = %e, "the last statistics could not be flushed to the fleet store");
        }
    }

    /// Flush this process's statistics and read the fleet's totals back.
    fn flush_stats(&mut self) -> Result<(), StoreError> {
        let metrics = Arc::clone(&self.state.gateway().metrics);
        let now: Vec<_> = metrics.all_guard_stats().into_iter().map(|(k, s)| (k, s.snapshot())).collect();
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        self.flusher.flush(&self.store, now, unix)?;
        let flags = self.state.flag_keys();
        metrics.set_fleet_totals(super::stats::read_totals(&self.store, &flags)?);
        if let Err(e) = self.agree_iterations(&metrics) {
            tracing::debug!(error = %e, "experiment iterations not agreed with the fleet yet (tried again at the next flush)");
        }
        Ok(())
    }

    /// Take the fleet's start and end of every experiment iteration not agreed on yet (a
    /// few per experiment change, then nothing).
    fn agree_iterations(&self, metrics: &crate::metrics::Metrics) -> Result<(), StoreError> {
        use crate::metrics::Edge;
        for (flag, i) in metrics.iterations_to_agree() {
            if !i.start_agreed {
                let agreed =
                    super::stats::shared_iteration(&self.store, &flag, i.number, Edge::Start, i.baseline.as_ref())?;
                metrics.agree_iteration(&flag, i.number, Edge::Start, agreed);
            }
            if let Some(end) = i.end.as_ref().filter(|_| !i.end_agreed) {
                let agreed = super::stats::shared_iteration(&self.store, &flag, i.number, Edge::End, Some(end))?;
                metrics.agree_iteration(&flag, i.number, Edge::End, agreed);
            }
        }
        Ok(())
    }

    /// One round: a full load if needed, then one `XREAD`.
    fn step(&mut self) -> Result<(), String> {
        if self.full {
            self.reload()?;
        }
        if self.conn.is_none() {
            let timeout = BLOCK + self.store.redis.response_timeout;
            let conn = self.store.redis.connect(Some(timeout)).map_err(|e| {
                self.store.link.failed(&e);
                super::describe(&e)
            })?;
            self.conn = Some(conn);
            // What happened while disconnected is not known: load it all.
            self.reload()?;
        }
        let cursor = self.state.revision();
        let log = self.store.redis.keys.log();
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        let read: Option<Entries> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&log)
            .arg(format!("{cursor}-0"))
            .query(conn)
            .map_err(|e| {
                self.store.link.failed(&e);
                super::describe(&e)
            })?;
        self.store.link.reached();
        self.pause = Duration::from_millis(100);
        let entries = read.into_iter().flatten().flat_map(|(_, entries)| entries);
        let mut last = None;
        for (id, fields) in entries {
            let revision: u64 = id.split('-').next().and_then(|r| r.parse().ok()).unwrap_or(0);
            let epoch = self.store.link.lock().epoch.clone();
            let change = fields.get("change").map(String::as_str).unwrap_or_default();
            if fields.get("epoch") != epoch.as_ref() || change.is_empty() {
                // Seeded again: everything is new.
                self.full = true;
                return Ok(());
            }
            let change: ItemChange = match serde_json::from_str(change) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(revision, error = %e, "a change-log entry does not read: loading the whole state");
                    self.full = true;
                    return Ok(());
                }
            };
            match self.state.apply_remote(revision, &change) {
                Remote::Applied | Remote::Old => last = Some(revision),
                Remote::Gap { have } => {
                    tracing::info!(
                        have,
                        next = revision,
                        "the change log skips revisions (trimmed, or missed): loading the whole state"
                    );
                    self.full = true;
                    return Ok(());
                }
                Remote::Invalid(why) => {
                    self.invalid(revision, &why);
                    self.full = true;
                    return Ok(());
                }
            }
        }
        // The state's lock is never taken while the link's is held (the write path takes
        // them the other way round).
        let served = self.state.revision();
        let mut link = self.store.link.lock();
        if let Some(r) = last {
            link.fleet_revision = link.fleet_revision.max(r);
        }
        if served >= link.fleet_revision {
            link.current_at = Some(Instant::now());
            link.invalid = None;
        }
        drop(link);
        // Idle (the read timed out), or due: a lost or replaced store shows within a second.
        if last.is_none() || self.backstop.elapsed() >= BACKSTOP {
            self.check_backstop()?;
        }
        Ok(())
    }

    /// Load the whole state and serve it.
    fn reload(&mut self) -> Result<(), String> {
        let before = self.store.link.lock().epoch.clone();
        match crate::state::Store::load(self.store.as_ref()) {
            Ok(Some(stored)) => {
                let epoch = self.store.link.lock().epoch.clone();
                let force = before.is_some() && before != epoch;
                let revision = stored.revision;
                match self.state.install_remote(stored, force) {
                    Ok(_) => {
                        let mut link = self.store.link.lock();
                        link.invalid = None;
                        link.current_at = Some(Instant::now());
                    }
                    Err(problems) => {
                        let why = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                        self.invalid(revision, &why);
                    }
                }
            }
            // Empty, on a first start: the config file seeds it.
            Ok(None) => match self.state.seed_from_file("seeded an empty fleet store") {
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "the fleet store could not be seeded from the config file"),
            },
            // Lost data: keep serving; look again at the next round.
            Err(StoreError::NotSeeded(_)) => {
                self.full = true;
                self.backstop = Instant::now();
                std::thread::sleep(BLOCK);
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        }
        self.full = false;
        self.backstop = Instant::now();
        Ok(())
    }

    fn invalid(&mut self, revision: u64, why: &str) {
        let message = format!(
            "the fleet's revision {revision} does not build with this instance's config file ({why}): serving revision {}",
            self.state.revision()
        );
        tracing::error!("{message}");
        self.store.link.lock().invalid = Some(message);
        // Try again at the backstop, not in a loop.
        std::thread::sleep(BACKSTOP.min(Duration::from_secs(5)));
    }

    /// Compare the epoch and the revision with what is served.
    fn check_backstop(&mut self) -> Result<(), String> {
        self.backstop = Instant::now();
        let k = &self.store.redis.keys;
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        let (epoch, rev): (Option<String>, Option<u64>) =
            redis::pipe().get(k.epoch()).get(k.rev()).query(conn).map_err(|e| super::describe(&e))?;
        let known = self.store.link.lock().epoch.clone();
        if epoch != known || rev.unwrap_or(0) > self.state.revision() {
            tracing::info!(
                served = self.state.revision(),
                fleet = rev.unwrap_or(0),
                "the backstop found this instance behind: loading the whole state"
            );
            self.full = true;
        }
        Ok(())
    }

    /// The heartbeat, the local copy and the staleness gauge.
    fn housekeeping(&mut self) {
        let metrics = &self.state.gateway().metrics;
        metrics.set_config_staleness(self.store.link.staleness());
        if self.flushed_at.is_none_or(|t| t.elapsed() >= FLUSH) {
            self.flushed_at = Some(Instant::now());
            if let Err(e) = self.flush_stats() {
                tracing::debug!(error = %e, "statistics not flushed to the fleet store (kept for the next flush)");
            }
        }
        if self.heartbeat.is_some_and(|t| t.elapsed() < HEARTBEAT) {
            return;
        }
        self.heartbeat = Some(Instant::now());
        let revision = self.state.revision();
        if let Ok(seen) = self.store.heartbeat(revision, RECENT) {
            self.store.link.lock().seen = seen;
        }
        if revision != self.copied && self.store.link.lock().epoch.is_some() && revision > 0 {
            match self.store.write_copy(&self.state.current()) {
                Ok(()) => self.copied = revision,
                Err(e) => tracing::warn!(error = %e, "the local copy of the fleet's state could not be written"),
            }
        }
    }
}
