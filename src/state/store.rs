//! Where revisions are kept: the [`Store`] interface and the memory store (no state
//! directory configured, and tests). The file store, the default, is in `file.rs`.
//!
//! A store holds the current documents with their revision, and the audit log. The fleet
//! store (the `fleet` module, a floor up: Redis — a hash for the documents, streams for the change log
//! and the audit log, a compare-and-set on the revision) implements it for several
//! instances.

use std::sync::{Mutex, PoisonError};

use super::log::LogError;
use super::{AuditEntry, EntryHead, Stored};

/// The command that rebuilds `state.json` from the audit log, as errors quote it.
pub const RECOVER: &str = "sluice state recover --config <config file>";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state directory {dir} is in use by another sluice (lock file {lock})")]
    Locked { dir: String, lock: String },
    #[error("state directory {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("state file {path} is damaged: {message}")]
    Damaged { path: String, message: String },
    #[error("the state store is closed: sluice is shutting down")]
    Closed,
    #[error("{0}")]
    Log(LogError),
    #[error("{0}; nothing was changed. Correct the line, or move it to the backup file with `sluice state repair --config <config file> --drop-line {1}`")]
    Corrupt(LogError, u64),
    #[error("{0}: the audit log was changed since start-up, which checked every line. Restart sluice to find the line (start-up names it and how to repair it)")]
    DamagedSinceStart(LogError),
    #[error("{0}; nothing was changed. Correct its revision, or move the line to the backup file with `sluice state repair --config <config file> --drop-line {1} --force` (what the revision changed is then lost)")]
    WrongRevision(LogError, u64),
    #[error("{state} is missing but {audit} holds revisions up to {last}: sluice will not start at revision 1 over that history. Rebuild the state from the log with `{RECOVER}`")]
    MissingState { state: String, audit: String, last: u64 },
    #[error("{state} is at revision {revision} but {audit} goes on to revision {last} (line {line}): the state file is older than the log (restored from a backup?). Rebuild it from the log with `{RECOVER}`")]
    StateBehind { state: String, revision: u64, audit: String, last: u64, line: u64 },
    #[error("{audit} ends at revision {last}, before {state}'s revision {revision}: entries are missing from the log. Restore the log from a backup, or move it aside to start a new one")]
    LogBehind { audit: String, last: u64, state: String, revision: u64 },
    #[error("the change's audit entry would be {bytes} bytes, more than the {max} an audit line may hold: nothing was changed")]
    TooLarge { bytes: usize, max: usize },
    #[error("{audit} is empty but {state} is at revision {revision}: the log lost its entries. Restore it from a backup, or move it aside (a missing log starts again at the next revision)")]
    EmptyLog { audit: String, state: String, revision: u64 },
    #[error("the state store refuses changes: {reason}. Restart sluice once the disk is healthy")]
    Poisoned { reason: String },
    /// The change reached `state.json` (and is in effect), but the directory could not be
    /// synced: it may not survive a power loss. The store is poisoned.
    #[error("the change was applied but may not survive a power loss ({reason}); the store refuses further changes until a restart")]
    DurabilityUnknown { reason: String },
    /// A shared store is at a later revision than the one the change was made against
    /// (another instance changed something this one had not applied yet). Nothing was
    /// written.
    #[error("the fleet is at revision {fleet}, later than this instance's")]
    Behind { fleet: u64 },
    /// A leader's write after a newer leader took the lease. Nothing was written.
    #[error("a newer leader holds the lease (fence {fence}, this write's {token}): refused")]
    Fenced { fence: u64, token: u64 },
    /// The shared store cannot be reached: nothing was written (never queued).
    #[error("the shared store is unreachable ({0}): nothing was changed; try again shortly")]
    Unavailable(String),
    /// The request reached the shared store but its answer did not come back: the change
    /// may have been made (the change log then brings it to every instance).
    #[error(
        "the shared store did not answer ({0}): the change may have been made; check the revision before trying again"
    )]
    Unknown(String),
    /// The shared store lost its data (or was never seeded): changes are refused until an
    /// operator seeds it.
    #[error("{0}")]
    NotSeeded(String),
}

impl From<LogError> for StoreError {
    fn from(e: LogError) -> Self {
        match e {
            // Found reading from the end, where line numbers are unknown: a line damaged
            // since start-up, which names it.
            LogError::DamagedAt { .. } => StoreError::DamagedSinceStart(e),
            LogError::Damaged { line, .. } | LogError::OutOfOrder { line, .. } => StoreError::Corrupt(e, line),
            LogError::WrongRevision { line, .. } => StoreError::WrongRevision(e, line),
            LogError::Io { .. } | LogError::Gap { .. } => StoreError::Log(e),
        }
    }
}

/// What `GET /admin/v1/status` says of the store.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StoreStatus {
    /// `file`, `memory` or `redis`.
    pub kind: String,
    /// `ok`, `degraded` or `not_ready`.
    pub health: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
}

/// A fleet store's view of the fleet.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FleetStatus {
    /// The Redis URL without credentials.
    pub redis: String,
    pub epoch: Option<String>,
    /// The fleet's latest revision as this instance last read it.
    pub fleet_revision: u64,
    /// This instance's name.
    pub instance: String,
    /// Seconds since this instance last knew it served the fleet's latest revision.
    pub staleness_seconds: Option<f64>,
    /// The instance that holds the lease (runs the guards, ramps and experiment decisions).
    pub leader: Option<String>,
    /// Seen within the last 30 s.
    pub instances: Vec<InstanceSeen>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct InstanceSeen {
    pub name: String,
    pub revision: u64,
    pub seen_seconds_ago: u64,
}

/// A store's health, for `/readyz` and the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// Serving, but what is served may be stale or changes are refused (why).
    Degraded(String),
    /// Nothing of the store's has been served yet (why).
    NotReady(String),
}

/// Durable revisions and their audit log.
pub trait Store: Send + Sync {
    /// The last committed state, if any.
    fn load(&self) -> Result<Option<Stored>, StoreError>;
    /// Make `entry` and the documents after it durable, or nothing: when this returns
    /// `Err`, the change is not in effect and its entry is not in the audit log — except
    /// [`StoreError::DurabilityUnknown`]: the files hold the change (the caller puts it in
    /// effect, as a restart would), but whether it survives a power loss is unknown, and
    /// the store refuses every later commit until a restart. `entry.revision` must be
    /// the stored revision plus one (`prev`, the state it was made against, is at the
    /// revision before). When this returns `Ok`, the change survives a crash. A shared
    /// store refuses a change made against a revision that is no longer its latest
    /// ([`StoreError::Behind`]) and a leader's write (`fence`: its lease's token) once a
    /// newer leader took over ([`StoreError::Fenced`]).
    fn commit(&self, entry: &AuditEntry, prev: &Stored, state: &Stored, fence: Option<u64>) -> Result<(), StoreError>;
    /// Whether other instances write to this store too (then `State` catches up with it
    /// before it refuses an `If-Match`, and the config file only seeds it).
    fn shared(&self) -> bool {
        false
    }
    /// A shared store's local copy of its last state (served when the store cannot be
    /// reached at start).
    fn local_copy(&self) -> Option<Stored> {
        None
    }
    /// Whether the store is reachable and what is served is current.
    fn health(&self) -> Health {
        Health::Ok
    }
    /// `file`, `memory` or `redis`.
    fn kind(&self) -> &'static str;
    /// A fleet store's view of the fleet.
    fn fleet(&self) -> Option<FleetStatus> {
        None
    }
    /// Visit the entries of the audit log before revision `before` (all: `None`) newest
    /// first, until `visit` returns `false`; only the entries whose head `wanted` accepts
    /// are parsed whole and visited (it sees every head, newest first).
    fn audit_back(
        &self,
        before: Option<u64>,
        wanted: &dyn Fn(&EntryHead) -> bool,
        visit: &mut dyn FnMut(AuditEntry) -> bool,
    ) -> Result<(), StoreError>;
    /// Refuse further commits and release what the store holds (the directory lock).
    fn close(&self) {}
}

/// Nothing survives a restart: used when no state directory is configured.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<(Option<Stored>, Vec<AuditEntry>)>,
}

impl MemoryStore {
    /// A store holding `stored` (to check a rebuilt state the way start-up does).
    pub fn with(stored: Stored) -> MemoryStore {
        MemoryStore { inner: Mutex::new((Some(stored), Vec::new())) }
    }
}

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn load(&self) -> Result<Option<Stored>, StoreError> {
        Ok(self.inner.lock().unwrap_or_else(PoisonError::into_inner).0.clone())
    }

    fn commit(&self, entry: &AuditEntry, _prev: &Stored, state: &Stored, _: Option<u64>) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.0 = Some(state.clone());
        inner.1.push(entry.clone());
        Ok(())
    }

    fn audit_back(
        &self,
        before: Option<u64>,
        wanted: &dyn Fn(&EntryHead) -> bool,
        visit: &mut dyn FnMut(AuditEntry) -> bool,
    ) -> Result<(), StoreError> {
        let entries = self.inner.lock().unwrap_or_else(PoisonError::into_inner).1.clone();
        for e in entries.into_iter().rev().filter(|e| before.is_none_or(|b| e.revision < b)) {
            if wanted(&EntryHead::from(&e)) && !visit(e) {
                break;
            }
        }
        Ok(())
    }
}

/// A store shared with whoever else holds it (the fleet's thread holds the Redis store too).
impl<T: Store + ?Sized> Store for std::sync::Arc<T> {
    fn load(&self) -> Result<Option<Stored>, StoreError> {
        (**self).load()
    }
    fn commit(&self, entry: &AuditEntry, prev: &Stored, state: &Stored, fence: Option<u64>) -> Result<(), StoreError> {
        (**self).commit(entry, prev, state, fence)
    }
    fn shared(&self) -> bool {
        (**self).shared()
    }
    fn local_copy(&self) -> Option<Stored> {
        (**self).local_copy()
    }
    fn health(&self) -> Health {
        (**self).health()
    }
    fn kind(&self) -> &'static str {
        (**self).kind()
    }
    fn fleet(&self) -> Option<FleetStatus> {
        (**self).fleet()
    }
    fn audit_back(
        &self,
        before: Option<u64>,
        wanted: &dyn Fn(&EntryHead) -> bool,
        visit: &mut dyn FnMut(AuditEntry) -> bool,
    ) -> Result<(), StoreError> {
        (**self).audit_back(before, wanted, visit)
    }
    fn close(&self) {
        (**self).close()
    }
}
