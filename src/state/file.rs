//! The file store: a state directory.
//!
//! - `state.json` — the current documents and their revision; replaced atomically (temp
//!   file, fsync, rename, fsync of the directory);
//! - `audit.jsonl` — one JSON line per revision (see `log.rs`), appended and fsynced
//!   before `state.json` is replaced;
//! - `audit.jsonl.bak` — whatever was ever cut from the log, appended (never read by sluice);
//! - `lock` — held (an OS file lock) while a sluice uses the directory.
//!
//! **A commit is all or nothing.** Append the entry to the log and fsync → replace
//! `state.json`. When the append fails, or `state.json` cannot be written, the log is cut
//! back to its length before the append (and fsynced), so the refused entry never reaches
//! a reader, its revision number is never held by two entries, and no rollback can install
//! it. When even that cut fails, the store is poisoned: it refuses every further commit
//! until a restart, which sorts the files out as below. When the directory cannot be
//! synced after the rename, the files hold the change: it is put in effect (what a restart
//! would serve), the answer says it may not survive a power loss
//! ([`StoreError::DurabilityUnknown`]), and the store is poisoned too.
//!
//! **What start-up accepts.** Let S be `state.json`'s revision (0 when it is missing) and
//! L the last revision of the log. A crash at any point of a commit leaves L = S, or L =
//! S + 1 (after the append, before the rename), or a last line without its `\n` (during
//! the append): the line beyond S and the torn line were never acknowledged; they are cut
//! (copied to `audit.jsonl.bak` first, and a warning logged). Anything else — a damaged
//! line before the last, revisions that do not follow one another (out of order, or a
//! gap: `sluice state repair` leaves a `dropped` entry in a damaged line's place, so only
//! lines removed by hand make one), a log ahead of `state.json` by more than
//! one line (a state file restored from a backup, or deleted), a log behind it (an empty
//! log included) — stops start-up with the file, the line and the command that repairs
//! it. Nothing is deleted. A missing log (moved aside) is accepted with a warning: a new
//! one starts at the next revision.
//!
//! Start-up reads the log once, a line at a time (bounded memory), parsing each line only
//! as far as checking it is JSON with a revision; the audit API reads it from the end.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::log::{self, Scan};
use super::store::{Store, StoreError, RECOVER};
use super::{AuditEntry, EntryHead, Stored};

/// A fault a test makes the next matching disk operation suffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The audit append writes half the line, then fails (a full disk).
    AuditWrite,
    /// Cutting the log back after a failed commit fails.
    AuditCut,
    /// Writing the temp file of `state.json` fails part-way.
    StateWrite,
    /// The directory cannot be synced after `state.json` was renamed into place.
    DirSync,
}

/// Faults to inject, each once (for tests of the failure paths; empty in production).
#[derive(Debug, Default)]
pub struct Faults(Mutex<Vec<Fault>>);

impl Faults {
    pub fn inject(&self, fault: Fault) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(fault);
    }

    fn take(&self, fault: Fault) -> Result<(), std::io::Error> {
        let mut faults = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match faults.iter().position(|f| *f == fault) {
            Some(i) => {
                faults.remove(i);
                Err(std::io::Error::other(format!("injected fault {fault:?}")))
            }
            None => Ok(()),
        }
    }
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.display().to_string(), source }
}

/// The file of the key that signs response tokens (when the config names none).
pub const FEEDBACK_KEY: &str = "feedback.key";

/// The key that signs response tokens, from `dir/feedback.key` (64 hex digits), made
/// the first time: 32 random bytes written to a temporary file (mode 0600), fsynced and
/// renamed into place, then the directory fsynced — so every sluice that starts on this
/// directory, or a copy of it, checks the same tokens. A damaged file stops start-up
/// (tokens already handed out would otherwise all turn invalid).
pub fn feedback_key(dir: &Path, fresh: impl FnOnce() -> [u8; 32]) -> Result<Vec<u8>, StoreError> {
    let path = dir.join(FEEDBACK_KEY);
    let damaged = |message: &str| StoreError::Damaged { path: path.display().to_string(), message: message.into() };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = std::str::from_utf8(&bytes).map_err(|_| damaged("not 64 hex digits"))?.trim();
            let key = crate::keys::parse_digest(text).ok_or_else(|| damaged("not 64 hex digits"))?;
            Ok(key.to_vec())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = fresh();
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let tmp = dir.join(format!("{FEEDBACK_KEY}.tmp"));
            let mut options = OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options.open(&tmp).map_err(io(&tmp))?;
            f.write_all(format!("{hex}\n").as_bytes()).and_then(|()| f.sync_all()).map_err(io(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
            File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
            tracing::info!(path = %path.display(), "made the key that signs response tokens");
            Ok(key.to_vec())
        }
        Err(e) => Err(io(&path)(e)),
    }
}

/// See the module documentation.
pub struct FileStore {
    dir: PathBuf,
    inner: Mutex<Inner>,
    faults: Arc<Faults>,
}

struct Inner {
    /// Kept open while the store is: the lock lasts as long as the file. `None` once closed.
    lock: Option<File>,
    /// The log's length up to its last acknowledged entry: readers read no further, and
    /// a failed commit cuts the file back to it.
    len: u64,
    /// Why the store refuses commits, if it does.
    poisoned: Option<String>,
}

/// Lock `dir` (creating it if needed): the returned file holds the OS lock.
pub fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // The new directory's entry is durable before anything is committed in it.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent).and_then(|p| p.sync_all()).map_err(io(parent))?;
        }
    }
    let lock_path = dir.join("lock");
    let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StoreError::Locked { dir: dir.display().to_string(), lock: lock_path.display().to_string() })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io(&lock_path)(e)),
    }
}

pub(super) fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

pub(super) fn audit_path(dir: &Path) -> PathBuf {
    dir.join("audit.jsonl")
}

/// `state.json`, if there is one.
pub(super) fn read_state(dir: &Path) -> Result<Option<Stored>, StoreError> {
    let path = state_path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError::Damaged {
            path: path.display().to_string(),
            message: format!("{e}; rebuild it from the audit log with `{RECOVER}`"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

impl FileStore {
    /// Open (creating it if needed) and lock `dir`, and check its files (see the module
    /// documentation).
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        FileStore::open_with_faults(dir, Arc::default())
    }

    /// [`FileStore::open`], with faults a test injects.
    pub fn open_with_faults(dir: &Path, faults: Arc<Faults>) -> Result<FileStore, StoreError> {
        let lock = lock_dir(dir)?;
        let stored = read_state(dir)?.map(|s| s.revision);
        let audit = audit_path(dir);
        let scan = log::scan(&audit)?;
        let len = match cut_point(&scan, stored, dir)? {
            Some(offset) => {
                let cut = log::cut(&audit, offset)?;
                tracing::warn!(
                    log = %audit.display(),
                    bytes = cut,
                    backup = %log::backup_path(&audit).display(),
                    "cut the audit log's unacknowledged tail (a crash during a change): the bytes are in the backup file"
                );
                offset
            }
            None => scan.len,
        };
        if !scan.exists && stored.is_some() {
            tracing::warn!(log = %audit.display(), "there is no audit log (moved aside): a new one starts at the next revision");
        }
        Ok(FileStore {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner { lock: Some(lock), len, poisoned: None }),
            faults,
        })
    }

    /// Append `line` at `start`: nothing may follow the last acknowledged entry, so each
    /// entry starts on a line of its own.
    fn append(&self, path: &Path, start: u64, line: &[u8]) -> Result<(), StoreError> {
        let mut f = OpenOptions::new().create(true).append(true).open(path).map_err(io(path))?;
        let len = f.metadata().map_err(io(path))?.len();
        if len < start {
            // Shortened (or replaced) behind sluice's back: appending would leave a gap.
            let e = std::io::Error::other(format!("the log is {len} bytes, shorter than its {start} acknowledged"));
            return Err(io(path)(e));
        }
        if len > start {
            f.set_len(start).map_err(io(path))?;
        }
        if let Err(e) = self.faults.take(Fault::AuditWrite) {
            let _ = f.write_all(&line[..line.len() / 2]);
            return Err(io(path)(e));
        }
        f.write_all(line).map_err(io(path))?;
        f.sync_data().map_err(io(path))
    }

    /// Cut the log back to `start` after a failed commit; poison the store if that fails.
    fn undo(&self, inner: &mut Inner, path: &Path, start: u64, cause: StoreError) -> StoreError {
        let cut = self.faults.take(Fault::AuditCut).and_then(|()| {
            let f = OpenOptions::new().write(true).open(path)?;
            let len = f.metadata()?.len();
            if len < start {
                // Never lengthen the log (with zeros): a store that lost its log stops.
                return Err(std::io::Error::other(format!("the log is {len} bytes, shorter than acknowledged")));
            }
            if len > start {
                f.set_len(start)?;
            }
            f.sync_all()
        });
        if let Err(e) = cut {
            let reason = format!("{cause}; then cutting {} back to {start} bytes failed: {e}", path.display());
            tracing::error!(%reason, "the state store refuses further changes");
            inner.poisoned = Some(reason);
        }
        cause
    }

    /// Replace `state.json`: `Err((false, _))` when it was not replaced, `Err((true, _))`
    /// when it was but the directory could not be synced.
    fn replace_state(&self, state: &Stored) -> Result<(), (bool, StoreError)> {
        let path = state_path(&self.dir);
        let bytes = serde_json::to_vec(state)
            .map_err(|e| (false, StoreError::Damaged { path: path.display().to_string(), message: e.to_string() }))?;
        let faults = &self.faults;
        replace_file(&self.dir, &path, &bytes, &|step| match step {
            Step::Write => faults.take(Fault::StateWrite),
            Step::SyncDir => faults.take(Fault::DirSync),
        })
    }
}

/// The steps of [`replace_file`] a fault can hit.
pub(super) enum Step {
    Write,
    SyncDir,
}

/// Replace `path` with `bytes`: temp file, fsync, rename, fsync the directory. `Err((false,
/// _))`: `path` was not replaced; `Err((true, _))`: it was, but the directory could not be
/// synced (whether the rename is durable is unknown).
pub(super) fn replace_file(
    dir: &Path,
    path: &Path,
    bytes: &[u8],
    fault: &dyn Fn(Step) -> Result<(), std::io::Error>,
) -> Result<(), (bool, StoreError)> {
    let tmp = path.with_extension("tmp");
    let written = File::create(&tmp).and_then(|mut f| {
        if let Err(e) = fault(Step::Write) {
            let _ = f.write_all(&bytes[..bytes.len() / 2]);
            return Err(e);
        }
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err((false, io(path)(e)));
    }
    fault(Step::SyncDir).and_then(|()| File::open(dir)?.sync_all()).map_err(|e| (true, io(dir)(e)))
}

/// Where start-up cuts the log (its unacknowledged tail), or why it refuses to start.
fn cut_point(scan: &Scan, stored: Option<u64>, dir: &Path) -> Result<Option<u64>, StoreError> {
    let last = scan.last.map_or(0, |l| l.revision);
    let (state, audit) = (state_path(dir).display().to_string(), audit_path(dir).display().to_string());
    let damaged = |line: u64| {
        StoreError::from(log::LogError::Damaged {
            path: audit.clone(),
            line,
            message: "not a complete audit entry, and not the last line".into(),
        })
    };
    let Some(revision) = stored else {
        // No state: only the first commit's crash explains a log, which is then one line
        // (revision 1) or less.
        return match (scan.last, scan.bad_last, scan.torn) {
            (None, _, _) if scan.len == 0 => Ok(None),
            (None, Some(_), None) | (None, None, Some(_)) => Ok(Some(0)),
            (Some(l), None, None) if scan.lines == 1 && l.revision == 1 => Ok(Some(0)),
            _ => Err(StoreError::MissingState { state, audit, last }),
        };
    };
    if scan.exists && scan.len == 0 {
        // A log moved aside is missing, not empty: an empty one lost its entries.
        return Err(StoreError::EmptyLog { audit, state, revision });
    }
    if let Some(bad) = scan.bad_last {
        // A damaged last line is a torn entry only if the log is complete without it.
        return match scan.torn {
            None if last == revision => Ok(Some(bad.offset)),
            _ => Err(damaged(bad.number)),
        };
    }
    match scan.last {
        // The entry beyond state.json follows state.json's own (or is the first of a log
        // moved aside).
        Some(l)
            if l.revision == revision + 1
                && scan.torn.is_none()
                && scan.before_last.is_none_or(|b| b.revision == revision) =>
        {
            Ok(Some(l.offset))
        }
        Some(l) if l.revision > revision => {
            Err(StoreError::StateBehind { state, revision, audit, last: l.revision, line: l.number })
        }
        Some(l) if l.revision < revision => Err(StoreError::LogBehind { audit, last: l.revision, state, revision }),
        _ => Ok(scan.torn),
    }
}

impl Store for FileStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn load(&self) -> Result<Option<Stored>, StoreError> {
        read_state(&self.dir)
    }

    fn commit(&self, entry: &AuditEntry, _prev: &Stored, state: &Stored, _: Option<u64>) -> Result<(), StoreError> {
        // One writer at a time, and none once closed or poisoned.
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.lock.is_none() {
            return Err(StoreError::Closed);
        }
        if let Some(reason) = &inner.poisoned {
            return Err(StoreError::Poisoned { reason: reason.clone() });
        }
        let audit = audit_path(&self.dir);
        let start = inner.len;
        let mut line = serde_json::to_vec(entry)
            .map_err(|e| StoreError::Damaged { path: audit.display().to_string(), message: e.to_string() })?;
        if line.len() > log::MAX_LINE {
            return Err(StoreError::TooLarge { bytes: line.len(), max: log::MAX_LINE });
        }
        line.push(b'\n');
        if let Err(e) = self.append(&audit, start, &line) {
            return Err(self.undo(&mut inner, &audit, start, e));
        }
        match self.replace_state(state) {
            Ok(()) => {
                inner.len = start + line.len() as u64;
                Ok(())
            }
            Err((false, e)) => Err(self.undo(&mut inner, &audit, start, e)),
            Err((true, e)) => {
                // The directory shows the new state.json and its entry: that is what a
                // restart serves, so readers see the entry too. Whether it is durable is
                // unknown: no further commit until a restart.
                inner.len = start + line.len() as u64;
                let reason = format!("{e}, after state.json was replaced by revision {}", entry.revision);
                tracing::error!(%reason, "the state store refuses further changes");
                inner.poisoned = Some(reason.clone());
                Err(StoreError::DurabilityUnknown { reason })
            }
        }
    }

    fn audit_back(
        &self,
        before: Option<u64>,
        wanted: &dyn Fn(&EntryHead) -> bool,
        visit: &mut dyn FnMut(AuditEntry) -> bool,
    ) -> Result<(), StoreError> {
        // What lies before `len` never changes while the store is open: read it unlocked.
        let len = self.inner.lock().unwrap_or_else(PoisonError::into_inner).len;
        let path = audit_path(&self.dir);
        let end = match before {
            Some(revision) => log::offset_of(&path, len, revision)?,
            None => len,
        };
        Ok(log::read_back(&path, end, wanted, visit)?)
    }

    fn close(&self) {
        // Dropping the file releases the OS lock.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).lock.take();
    }
}

/// Write an exported state and its audit log (oldest first) into `dir`, which must hold
/// neither: the log first (fsynced), then `state.json` (replaced atomically), so a crash
/// leaves a log without a state file — which start-up refuses, naming `recover` — never a
/// state file without its log.
pub fn import_dir(dir: &Path, stored: &Stored, audit: &[AuditEntry]) -> Result<(), StoreError> {
    let _lock = lock_dir(dir)?;
    for path in [state_path(dir), audit_path(dir)] {
        if path.exists() {
            return Err(StoreError::Io {
                path: path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "already exists: import only into an empty state directory",
                ),
            });
        }
    }
    if let Some(last) = audit.last().filter(|e| e.revision != stored.revision) {
        return Err(StoreError::LogBehind {
            audit: "the export's audit log".into(),
            last: last.revision,
            state: "its state".into(),
            revision: stored.revision,
        });
    }
    let path = audit_path(dir);
    let mut bytes = Vec::new();
    for e in audit {
        serde_json::to_writer(&mut bytes, e).map_err(|e| io(&path)(std::io::Error::other(e)))?;
        bytes.push(b'\n');
    }
    let mut f = OpenOptions::new().create_new(true).write(true).open(&path).map_err(io(&path))?;
    f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(io(&path))?;
    let state = serde_json::to_vec(stored).map_err(|e| io(&path)(std::io::Error::other(e)))?;
    replace_file(dir, &state_path(dir), &state, &|_| Ok(())).map_err(|(_, e)| e)
}

/// The revision of `dir`'s `state.json`, if there is one (read without the lock).
pub fn read_state_revision(dir: &Path) -> Result<Option<u64>, StoreError> {
    Ok(read_state(dir)?.map(|s| s.revision))
}
