//! Where revisions are kept: the [`Store`] interface, the file store (the default) and a
//! memory store (no state directory configured, and tests).
//!
//! A store holds the current documents with their revision, and the audit log. The
//! interface is what a shared store (Redis: a hash for the documents, a stream for the
//! audit log, a compare-and-set on the revision) would implement for several instances.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::{AuditEntry, Stored};

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
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.display().to_string(), source }
}

/// Durable revisions and their audit log.
pub trait Store: Send + Sync {
    /// The last committed state, if any.
    fn load(&self) -> Result<Option<Stored>, StoreError>;
    /// Make `entry` and the documents after it durable. `entry.revision` must be the
    /// stored revision plus one. When this returns `Ok`, the change survives a crash.
    fn commit(&self, entry: &AuditEntry, state: &Stored) -> Result<(), StoreError>;
    /// The audit log, oldest first.
    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError>;
    /// Refuse further commits and release what the store holds (the directory lock).
    fn close(&self) {}
}

/// Nothing survives a restart: used when no state directory is configured.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<(Option<Stored>, Vec<AuditEntry>)>,
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Option<Stored>, StoreError> {
        Ok(self.inner.lock().unwrap_or_else(PoisonError::into_inner).0.clone())
    }

    fn commit(&self, entry: &AuditEntry, state: &Stored) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.0 = Some(state.clone());
        inner.1.push(entry.clone());
        Ok(())
    }

    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self.inner.lock().unwrap_or_else(PoisonError::into_inner).1.clone())
    }
}

/// A state directory:
///
/// - `state.json` — the current documents and their revision; replaced atomically (temp
///   file, fsync, rename, fsync of the directory);
/// - `audit.jsonl` — one JSON line per revision, appended and fsynced before `state.json`
///   is replaced;
/// - `lock` — held (an OS file lock) while a sluice uses the directory.
///
/// `state.json` decides what the current revision is. An audit line beyond it (a crash
/// between the two writes: the change was never acknowledged) is dropped when loading, as
/// is a torn last line.
pub struct FileStore {
    dir: PathBuf,
    /// Kept open while the store is: the lock lasts as long as the file. `None` once closed.
    lock: Mutex<Option<File>>,
}

impl FileStore {
    /// Open (creating it if needed) and lock `dir`.
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("lock");
        let lock =
            OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    dir: dir.display().to_string(),
                    lock: lock_path.display().to_string(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let store = FileStore { dir: dir.to_path_buf(), lock: Mutex::new(Some(lock)) };
        store.repair_audit()?;
        Ok(store)
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn audit_path(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    fn stored_revision(&self) -> Result<u64, StoreError> {
        Ok(self.load()?.map_or(0, |s| s.revision))
    }

    /// Drop audit lines that are torn or beyond the stored revision (never acknowledged).
    fn repair_audit(&self) -> Result<(), StoreError> {
        let path = self.audit_path();
        if !path.exists() {
            return Ok(());
        }
        let revision = self.stored_revision()?;
        let (entries, clean) = read_audit(&path, revision)?;
        if !clean {
            let mut text = String::new();
            for e in &entries {
                text.push_str(&serde_json::to_string(e).map_err(|e| damaged(&path, &e))?);
                text.push('\n');
            }
            write_atomically(&self.dir, &path, text.as_bytes())?;
        }
        Ok(())
    }
}

fn damaged(path: &Path, e: &dyn std::fmt::Display) -> StoreError {
    StoreError::Damaged { path: path.display().to_string(), message: e.to_string() }
}

/// The audit entries up to `revision`, and whether the file held exactly those.
fn read_audit(path: &Path, revision: u64) -> Result<(Vec<AuditEntry>, bool), StoreError> {
    let file = File::open(path).map_err(io(path))?;
    let mut entries = Vec::new();
    let mut clean = true;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(io(path))?;
        match serde_json::from_str::<AuditEntry>(&line) {
            Ok(e) if e.revision <= revision => entries.push(e),
            // Beyond the stored revision, or torn by a crash mid-write: not acknowledged.
            _ => clean = false,
        }
    }
    Ok((entries, clean))
}

/// Replace `path` with `bytes`: temp file, fsync, rename, fsync the directory.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl Store for FileStore {
    fn load(&self) -> Result<Option<Stored>, StoreError> {
        let path = self.state_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| damaged(&path, &e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn commit(&self, entry: &AuditEntry, state: &Stored) -> Result<(), StoreError> {
        // One writer at a time, and none once closed.
        let lock = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if lock.is_none() {
            return Err(StoreError::Closed);
        }
        let audit_path = self.audit_path();
        let mut line = serde_json::to_vec(entry).map_err(|e| damaged(&audit_path, &e))?;
        line.push(b'\n');
        let mut f = OpenOptions::new().create(true).append(true).open(&audit_path).map_err(io(&audit_path))?;
        f.write_all(&line).map_err(io(&audit_path))?;
        f.sync_all().map_err(io(&audit_path))?;
        let state_path = self.state_path();
        let bytes = serde_json::to_vec(state).map_err(|e| damaged(&state_path, &e))?;
        write_atomically(&self.dir, &state_path, &bytes)
    }

    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let path = self.audit_path();
        if !path.exists() {
            return Ok(Vec::new());
        }
        Ok(read_audit(&path, self.stored_revision()?)?.0)
    }

    fn close(&self) {
        // Dropping the file releases the OS lock.
        self.lock.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}
