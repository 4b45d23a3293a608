//! The runtime state: flags, segments and AI configs as documents with a revision, and
//! the one write path every change goes through ([`State::apply`]):
//!
//! validate → new revision → audit entry (who, when, why, what each object became: a
//! flag's document before / after, a patch of an AI config's or segment's fields) →
//! persist (all or nothing: see `file.rs`) → rebuild and swap the snapshot.
//!
//! A change that fails validation changes nothing and writes nothing. Validation includes
//! depth: a document nests at most as deep as the config file allows
//! ([`MAX_DOC_NESTING`]), so that `state.json` and the audit log, which hold it a few
//! levels deeper, can always be read back. The static part of
//! the configuration (listeners, clients, providers, limits) always comes from the file.
//!
//! **The file and runtime changes.** The file seeds the store. A reload (SIGHUP, `--watch`)
//! applies, as one revision by the actor `file`, only the objects whose text in the file
//! changed since the previous load; every other object keeps its current (perhaps
//! runtime-changed) value. So a kill switch or a rollback made at runtime stays until
//! someone changes that flag again, in the file or through the API: the last writer of an
//! object wins.

mod change;
mod delta;
mod docs;
mod file;
pub mod items;
mod log;
mod query;
mod recover;
mod store;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use change::Change;
use change::{check_depth, edit};
pub use delta::Patch;
use docs::KINDS;
pub use docs::{AuditEntry, Docs, EntryHead, Iteration, Kind, ObjectChange, ObjectKey, Stored};
pub use file::{feedback_key, import_dir, lock_dir, read_state_revision, Fault, Faults, FileStore, FEEDBACK_KEY};
pub use log::LogError;
pub use query::{AuditPage, AuditQuery};

pub use recover::{recover, repair_drop_line, Dropped, RecoverError, Recovered};
pub use store::{FleetStatus, Health, InstanceSeen, MemoryStore, Store, StoreError, StoreStatus};

use crate::config::{self, Problem};
use crate::gateway::Gateway;
use crate::snapshot::Snapshot;

/// Why a change was refused. It changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("{0}")]
    NotFound(String),
    #[error("revision {expected} is not the current one ({current}): reload and try again")]
    Stale { expected: u64, current: u64 },
    #[error("{0}")]
    Conflict(String),
    #[error("the change would make the configuration invalid")]
    Invalid(Vec<Problem>),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Who asks for a change, and why.
#[derive(Debug, Clone)]
pub struct Request {
    pub actor: String,
    pub reason: String,
    /// `If-Match`: the revision the change was made against.
    pub if_match: Option<u64>,
    /// A leader's lease token (the guards' writes in a fleet): a shared store refuses the
    /// change once a newer leader holds the lease.
    pub fence: Option<u64>,
}

impl Request {
    pub fn new(actor: impl Into<String>, reason: impl Into<String>, if_match: Option<u64>) -> Request {
        Request { actor: actor.into(), reason: reason.into(), if_match, fence: None }
    }
}

/// A change that took effect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    pub revision: u64,
    pub changes: usize,
}

/// What a change would do, checked and built but not stored (`State::preview`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Preview {
    /// The revision it was checked against.
    pub revision: u64,
    /// Each object it would change, before and after.
    pub changes: Vec<ObjectChange>,
}

/// What applying a shared store's revision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Applied,
    /// Already served (this instance's own change, or a repeat).
    Old,
    /// A revision is missing between what is served (`have`) and this one: load it all.
    Gap {
        have: u64,
    },
    /// The revision does not read, or does not build with this instance's config file.
    Invalid(String),
}

/// How often one change catches up with a shared store that is ahead before it gives up.
const MAX_CATCH_UPS: usize = 3;

/// A change checked and built, before the store has it.
struct Next {
    entry: AuditEntry,
    stored: Stored,
    snapshot: Snapshot,
    /// The config file's new value, when the change is a reload that changed it.
    base: Option<Value>,
    objects: usize,
}

/// The served documents: changed under a lock, one change at a time (a change holds it
/// while the store commits: an fsync, or a round trip to Redis), read without one — a
/// reader (an admin GET, the console, the fleet's thread) never waits for a commit.
struct Current {
    writer: Mutex<Arc<Stored>>,
    served: arc_swap::ArcSwap<Stored>,
}

impl Current {
    fn new(stored: Arc<Stored>) -> Current {
        Current { served: arc_swap::ArcSwap::new(Arc::clone(&stored)), writer: Mutex::new(stored) }
    }

    /// The writer's lock; what it leaves is served when it is released.
    fn lock(&self) -> Writing<'_> {
        Writing { guard: self.writer.lock().unwrap_or_else(PoisonError::into_inner), served: &self.served }
    }

    /// What is served now.
    fn load(&self) -> Arc<Stored> {
        self.served.load_full()
    }
}

/// A change in progress (see [`Current::lock`]).
struct Writing<'a> {
    guard: std::sync::MutexGuard<'a, Arc<Stored>>,
    served: &'a arc_swap::ArcSwap<Stored>,
}

impl std::ops::Deref for Writing<'_> {
    type Target = Arc<Stored>;
    fn deref(&self) -> &Arc<Stored> {
        &self.guard
    }
}

impl std::ops::DerefMut for Writing<'_> {
    fn deref_mut(&mut self) -> &mut Arc<Stored> {
        &mut self.guard
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.served.store(Arc::clone(&self.guard));
    }
}

/// The runtime state of one gateway.
pub struct State {
    store: Box<dyn Store>,
    /// The config file as JSON: the static part of every configuration.
    base: Mutex<Value>,
    /// Shared, never copied to be read: a reader takes the `Arc` without waiting for a
    /// change in progress; a change replaces it.
    current: Current,
    gateway: Arc<Gateway>,
    reload: Mutex<ReloadStatus>,
}

/// How the last reload of the config file went. Before any reload (`time: null`) it is
/// `ok`: the configuration running is the file's as loaded at start (as
/// `sluice_config_last_reload_successful` says).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// RFC 3339.
    pub time: Option<String>,
    pub ok: bool,
    /// Why the file was refused (the running configuration was kept).
    pub error: Option<String>,
    /// The revision the reload made, if it changed anything.
    pub revision: Option<u64>,
}

impl Default for ReloadStatus {
    fn default() -> Self {
        ReloadStatus { time: None, ok: true, error: None, revision: None }
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("State")
    }
}

/// Building a configuration from documents failed.
fn build(
    base: &Value,
    docs: &Docs,
    iterations: &BTreeMap<String, Iteration>,
    gateway: &Gateway,
) -> Result<Snapshot, Vec<Problem>> {
    let mut value = base.clone();
    if let Some(obj) = value.as_object_mut() {
        for kind in KINDS {
            let section: serde_json::Map<String, Value> = docs
                .of(kind)
                .iter()
                .map(|(k, v)| {
                    let mut v = v.clone();
                    if kind == Kind::Flag {
                        docs::with_iteration(&mut v, iterations.get(k));
                    }
                    (k.clone(), v)
                })
                .collect();
            obj.insert(kind.section().to_string(), Value::Object(section));
        }
    }
    let (config, targeting) = config::check_value(value)?;
    Snapshot::build(&config, targeting, &gateway.metrics, Some(&gateway.snapshot()))
}

pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl State {
    /// Open the state: the store's last revision with the file's changes since its last
    /// load applied (as a revision by `file`), or — for an empty store — the file as
    /// revision 1. Returns the state with a gateway serving it.
    ///
    /// A shared store is seeded by the file only when it is empty; a seeded one is served
    /// as it is (the file's documents reach it by an explicit reload). When it cannot be
    /// reached, its local copy is served if there is one, else the file's snapshot at
    /// revision 0 (not ready: [`Store::health`]) until the fleet's state arrives.
    pub fn open(
        store: Box<dyn Store>,
        file_value: Value,
        file_name: &str,
        mut snapshot_from_file: Snapshot,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<State, StartupError> {
        let file_docs = Docs::from_config_value(&file_value);
        let shared = store.shared();
        let (stored, reachable) = match store.load() {
            Ok(stored) => (stored, true),
            Err(e) if shared => {
                tracing::warn!(error = %e, "the shared store cannot be read at start: serving this instance's copy of the fleet's state, if it has one");
                (store.local_copy(), false)
            }
            Err(e) => return Err(e.into()),
        };
        let empty = stored.is_none();
        // Nothing of a shared store's to serve, and not ours to seed: hold every request
        // until the fleet's state arrives (the file's flags are not the fleet's).
        snapshot_from_file.held = shared && empty && !reachable;
        let gateway = Arc::new(Gateway::new(snapshot_from_file, metrics));
        let stored = match stored {
            None => Stored::empty(),
            Some(stored) => {
                let snapshot = build(&file_value, &stored.docs, &stored.iterations, &gateway)
                    .map_err(|problems| StartupError::Invalid { revision: stored.revision, problems })?;
                gateway.install(snapshot, stored.revision);
                stored
            }
        };
        let state = State {
            store,
            base: Mutex::new(file_value.clone()),
            current: Current::new(Arc::new(stored)),
            gateway,
            reload: Mutex::new(ReloadStatus::default()),
        };
        if shared && !(empty && reachable) {
            if reachable && state.current().file != file_docs {
                tracing::warn!(revision = state.revision(), "the config file's flags, segments or AI configs differ from those the fleet last loaded: they are not applied at start (a reload — SIGHUP, or `--watch` — applies what changed, for the whole fleet)");
            }
            return Ok(state);
        }
        let request = Request::new("file", format!("loaded {file_name}"), None);
        match state.apply(Change::File { base: file_value, docs: file_docs }, &request) {
            Ok(_) | Err(ChangeError::Conflict(_)) => {}
            Err(ChangeError::Invalid(problems)) => {
                let revision = state.revision();
                return Err(StartupError::Invalid { revision, problems });
            }
            Err(ChangeError::Store(e)) if shared => {
                tracing::warn!(error = %e, "the shared store could not be seeded from the config file now: it will be when it can")
            }
            Err(e) => return Err(StartupError::Change(e.to_string())),
        }
        Ok(state)
    }

    /// Seed an empty shared store with the config file, as revision 1 by `file` (when the
    /// store could not be reached at start). Nothing happens when this instance already
    /// serves a revision.
    pub fn seed_from_file(&self, why: &str) -> Result<Option<Applied>, ChangeError> {
        if self.revision() > 0 {
            return Ok(None);
        }
        let base = self.base();
        let docs = Docs::from_config_value(&base);
        match self.apply(Change::File { base, docs }, &Request::new("file", why, None)) {
            Ok(applied) => Ok(Some(applied)),
            Err(ChangeError::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The store's health (a shared store: reachable, seeded, current). Not ready while
    /// the data plane still holds requests, whatever the store says: a shared store marks
    /// itself current as it reads the fleet's state, a moment before that state is
    /// installed, and `/readyz` must not send traffic into that moment.
    pub fn store_health(&self) -> Health {
        match self.store.health() {
            Health::NotReady(why) => Health::NotReady(why),
            _ if self.gateway.snapshot().held => {
                Health::NotReady("the fleet's state has been read but not installed yet: requests are held".into())
            }
            health => health,
        }
    }

    /// What the status says of the store.
    pub fn store_status(&self) -> StoreStatus {
        let (health, detail) = match self.store_health() {
            Health::Ok => ("ok", None),
            Health::Degraded(why) => ("degraded", Some(why)),
            Health::NotReady(why) => ("not_ready", Some(why)),
        };
        StoreStatus { kind: self.store.kind().into(), health: health.into(), detail, fleet: self.store.fleet() }
    }

    /// Serve a shared store's state: `stored` if it is newer than what is served, or
    /// `force` (a new epoch: the store was seeded again). Returns whether it was installed.
    pub fn install_remote(&self, stored: Stored, force: bool) -> Result<bool, Vec<Problem>> {
        let mut current = self.current.lock();
        if !force && stored.revision <= current.revision {
            return Ok(false);
        }
        self.install_locked(&mut current, stored)?;
        Ok(true)
    }

    /// Apply revision `revision` of a shared store, given what it changed item by item.
    pub fn apply_remote(&self, revision: u64, change: &items::ItemChange) -> Remote {
        let mut current = self.current.lock();
        if revision <= current.revision {
            return Remote::Old;
        }
        if revision != current.revision + 1 {
            return Remote::Gap { have: current.revision };
        }
        let mut all = items::to_items(&current);
        change.apply(&mut all);
        let stored = match items::from_items(revision, &all) {
            Ok(s) => s,
            Err(e) => return Remote::Invalid(e),
        };
        match self.install_locked(&mut current, stored) {
            Ok(()) => Remote::Applied,
            Err(problems) => Remote::Invalid(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")),
        }
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    pub fn revision(&self) -> u64 {
        self.current.load().revision
    }

    /// The keys of the flags served (without copying the documents).
    pub fn flag_keys(&self) -> Vec<String> {
        self.current.load().docs.flags.keys().cloned().collect()
    }

    /// The current documents and revision.
    pub fn current(&self) -> Arc<Stored> {
        self.current.load()
    }

    /// Stop taking changes and release the store (on shutdown).
    pub fn close(&self) {
        let _writer = self.current.lock();
        self.store.close();
    }

    /// A page of the audit log, newest first (reads files: call it on a blocking thread).
    pub fn audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        query.run(self.store.as_ref())
    }

    /// The one write path. Holds the state's lock throughout, so changes are applied one
    /// at a time and `If-Match` is checked against the revision they are applied to.
    pub fn apply(&self, change: Change, request: &Request) -> Result<Applied, ChangeError> {
        self.apply_at(change, request, std::time::SystemTime::now())
    }

    /// What [`State::apply`] would do with `change` now: every check it makes (`If-Match`
    /// against this instance's revision, validation, the snapshot built), nothing stored.
    pub fn preview(&self, change: Change, request: &Request) -> Result<Preview, ChangeError> {
        let current = self.current.load();
        if let Some(expected) = request.if_match.filter(|e| *e != current.revision) {
            return Err(ChangeError::Stale { expected, current: current.revision });
        }
        let next = self.prepare(&current, &change, request, std::time::SystemTime::now())?;
        Ok(Preview { revision: current.revision, changes: next.entry.changes })
    }

    /// [`State::apply`], with the time its audit entry records given by the caller (the
    /// guard task, which decides on a clock of its own).
    pub fn apply_at(
        &self,
        change: Change,
        request: &Request,
        time: std::time::SystemTime,
    ) -> Result<Applied, ChangeError> {
        let mut current = self.current.lock();
        // A shared store may be ahead of this instance (another one changed something that
        // has not reached this one yet): catch up, then decide — so `If-Match` means the
        // fleet's revision on every instance, and a change never rests on a stale state.
        let mut catch_ups = 0;
        loop {
            let behind = match request.if_match {
                Some(expected) if expected != current.revision => {
                    if !self.store.shared() || catch_ups > 0 {
                        return Err(ChangeError::Stale { expected, current: current.revision });
                    }
                    true
                }
                _ => {
                    let next = self.prepare(&current, &change, request, time)?;
                    match self.store.commit(&next.entry, &current, &next.stored, request.fence) {
                        Ok(()) => return Ok(self.put(&mut current, next, request)),
                        // The files hold the change: serve it, as a restart would, and say so.
                        Err(e @ StoreError::DurabilityUnknown { .. }) => {
                            self.put(&mut current, next, request);
                            return Err(e.into());
                        }
                        Err(StoreError::Behind { .. }) if catch_ups < MAX_CATCH_UPS => true,
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            if behind {
                catch_ups += 1;
                self.catch_up(&mut current)?;
            }
        }
    }

    /// The next state `change` makes from `current`, checked and built, not yet stored.
    fn prepare(
        &self,
        current: &Stored,
        change: &Change,
        request: &Request,
        time: std::time::SystemTime,
    ) -> Result<Next, ChangeError> {
        let mut docs = current.docs.clone();
        let mut file = current.file.clone();
        let mut base = self.base.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut base_changed = false;
        let mut file_objects = None;
        match change {
            Change::File { base: new_base, docs: new_file } => {
                // Only what the file itself changed since its last load.
                let mut objects = Vec::new();
                for kind in KINDS {
                    let (old, new) = (current.file.of(kind), new_file.of(kind));
                    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
                    for key in keys {
                        if old.get(key) != new.get(key) {
                            objects.push(ObjectKey { kind, key: key.clone() });
                            match new.get(key) {
                                Some(v) => docs.of_mut(kind).insert(key.clone(), v.clone()),
                                None => docs.of_mut(kind).remove(key),
                            };
                        }
                    }
                }
                base_changed = *new_base != base;
                if *new_file == current.file && !base_changed {
                    return Err(ChangeError::Conflict("the file has not changed since it was last loaded".into()));
                }
                file = new_file.clone();
                base = new_base.clone();
                file_objects = Some(objects);
            }
            Change::Rollback { flag, revision } => {
                if *revision > current.revision {
                    return Err(ChangeError::NotFound(format!(
                        "no revision {revision}: the current revision is {}",
                        current.revision
                    )));
                }
                let value = self.flag_at(flag, *revision)?;
                docs.flags.insert(flag.clone(), value);
            }
            other => edit(&mut docs, other)?,
        }
        change::forget_trip(&mut docs, change);
        let changes = docs.changes_since(&current.docs);
        if changes.is_empty() && file == current.file && !base_changed {
            return Err(ChangeError::Conflict("the change changes nothing".into()));
        }
        check_depth(&docs, &changes)?;
        let revision = current.revision + 1;
        let stamp = humantime::format_rfc3339_millis(time).to_string();
        let mut iterations = current.iterations.clone();
        let changed_flags = changes.iter().filter(|c| c.kind == Kind::Flag).map(|c| c.key.clone());
        change::next_iterations(&current.docs, &docs, changed_flags, &mut iterations, revision, &stamp);
        let snapshot = build(&base, &docs, &iterations, &self.gateway).map_err(ChangeError::Invalid)?;
        let objects = changes.len();
        let mut flag_revisions = current.flag_revisions.clone();
        for c in changes.iter().filter(|c| c.kind == Kind::Flag) {
            flag_revisions.insert(c.key.clone(), revision);
        }
        let entry = AuditEntry {
            revision,
            time: stamp,
            actor: request.actor.clone(),
            reason: request.reason.clone(),
            changes,
            file_objects,
            dropped: false,
        };
        let stored = Stored { revision, docs, file, flag_revisions, iterations };
        Ok(Next { entry, stored, snapshot, base: base_changed.then_some(base), objects })
    }

    /// Put a stored change in effect.
    fn put(&self, current: &mut Arc<Stored>, next: Next, request: &Request) -> Applied {
        let revision = next.stored.revision;
        *current = Arc::new(next.stored);
        if let Some(base) = next.base {
            *self.base.lock().unwrap_or_else(PoisonError::into_inner) = base;
        }
        self.gateway.install(next.snapshot, revision);
        tracing::info!(revision, actor = %request.actor, reason = %request.reason, objects = next.objects, "configuration changed");
        Applied { revision, changes: next.objects }
    }

    /// Load the shared store's latest state and serve it (the store was ahead).
    fn catch_up(&self, current: &mut Arc<Stored>) -> Result<(), ChangeError> {
        let Some(stored) = self.store.load()? else {
            return Err(StoreError::NotSeeded("the shared store holds no state".into()).into());
        };
        self.install_locked(current, stored).map_err(ChangeError::Invalid)
    }

    /// Serve `stored` (a shared store's state, newer than `current` or of a new epoch):
    /// built with this instance's config file, swapped in.
    fn install_locked(&self, current: &mut Arc<Stored>, stored: Stored) -> Result<(), Vec<Problem>> {
        let base = self.base.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let snapshot = build(&base, &stored.docs, &stored.iterations, &self.gateway)?;
        let revision = stored.revision;
        *current = Arc::new(stored);
        self.gateway.install(snapshot, revision);
        Ok(())
    }

    /// Note how a reload of the config file went (`Ok(revision)`: applied; `Ok(None)`:
    /// unchanged).
    pub fn record_reload(&self, result: Result<Option<u64>, String>) {
        let metrics = &self.gateway.metrics;
        let status = match result {
            Ok(revision) => {
                metrics.reload_succeeded();
                ReloadStatus { time: Some(now()), ok: true, error: None, revision }
            }
            Err(error) => {
                metrics.reload_failed();
                tracing::error!(%error, "the config file was not reloaded; the running configuration stays");
                ReloadStatus { time: Some(now()), ok: false, error: Some(error), revision: None }
            }
        };
        *self.reload.lock().unwrap_or_else(PoisonError::into_inner) = status;
    }

    /// How the last reload went.
    pub fn reload_status(&self) -> ReloadStatus {
        self.reload.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The config file's value as last loaded.
    pub fn base(&self) -> Value {
        self.base.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A flag's document as of `revision`: the newest change of it at or before `revision`,
    /// provided every revision from there to `revision` is in the log.
    fn flag_at(&self, flag: &str, revision: u64) -> Result<Value, ChangeError> {
        let mut last = None;
        let mut dropped = None;
        // Whether any line at or before `revision` is in the log.
        let oldest = std::cell::Cell::new(None);
        let wanted = |h: &EntryHead| {
            oldest.set(Some(h.revision));
            h.dropped || h.changes.iter().any(|c| c.kind == Kind::Flag && c.key == flag)
        };
        self.store.audit_back(Some(revision.saturating_add(1)), &wanted, &mut |e| {
            if e.dropped {
                dropped = Some(e.revision);
                return false;
            }
            last = e.changes.into_iter().find(|c| c.kind == Kind::Flag && c.key == flag);
            last.is_none()
        })?;
        let oldest = oldest.get();
        if let Some(missing) = dropped {
            return Err(ChangeError::Conflict(format!(
                "revision {missing} is not in the audit log (a repair moved its damaged line to audit.jsonl.bak): flag `{flag}` as of revision {revision} is unknown"
            )));
        }
        match last {
            Some(ObjectChange { after: Some(v), .. }) => Ok(v.clone()),
            Some(_) => Err(ChangeError::Conflict(format!("flag `{flag}` did not exist at revision {revision}"))),
            // No line at or before `revision`: the log begins after it (moved aside).
            None if oldest.is_none() => {
                Err(ChangeError::NotFound(format!("revision {revision} is not in the audit log (it begins after it)")))
            }
            None => Err(ChangeError::NotFound(format!("no revision up to {revision} has flag `{flag}`"))),
        }
    }
}

/// The state could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the stored configuration (revision {revision}) with this file is invalid: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid { revision: u64, problems: Vec<Problem> },
    #[error("{0}")]
    Change(String),
}

/// How deep a document may nest, counted as in the config file (where it sits two levels
/// down, under its section): the YAML loader's limit, so that whatever the admin API
/// stores could also be written in the file, and so that `state.json` and the audit log,
/// which hold it a few levels deeper still, stay well inside what their reader accepts.
pub const MAX_DOC_NESTING: usize = config::yaml::MAX_NESTING - 2;
