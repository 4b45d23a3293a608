//! Repairs a person asks for (`sluice state recover`, `sluice state repair`): rebuilding
//! `state.json` from the audit log, and moving one damaged line of the log to its backup
//! file. Both hold the directory's lock, so they never run beside a serving sluice, and
//! both keep what they replace (`state.json.bak[.N]`, never overwritten; `audit.jsonl.bak`,
//! appended to).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::file::{audit_path, io, lock_dir, read_state, replace_file, state_path};
use super::log::{self, LogError};
use super::{delta, AuditEntry, Docs, Kind, ObjectKey, StoreError, Stored};

/// A repair could not be made. Nothing was changed, except where a variant says so.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("{state} is at revision {revision}, but the audit log {audit} rebuilds only revision {rebuilt}: rebuilding would go back in time and reuse revision numbers. Nothing was changed; restore the log from a backup, or move it aside to start a new one")]
    Behind { state: String, revision: u64, audit: String, rebuilt: u64 },
    #[error("state.json was replaced by the state rebuilt at revision {revision} (the old one is kept), but then: {message}. Start-up sorts out what remains of the log's tail")]
    AfterReplace { revision: u64, message: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Log(#[from] LogError),
    #[error("{path} holds no audit entry: there is nothing to rebuild the state from")]
    Empty { path: String },
    #[error("{path}:{line}: revision {revision} where revision {expected} was expected: the log does not hold every revision since the first, so the state cannot be rebuilt from it")]
    Gap { path: String, line: u64, revision: u64, expected: u64 },
    #[error("the state rebuilt from the log (revision {revision}) is invalid with this config file: {message}")]
    Invalid { revision: u64, message: String },
    #[error("{path} has no line {line} (it has {lines})")]
    NoLine { path: String, line: u64, lines: u64 },
}

/// What `recover` did.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The revision of the rebuilt `state.json`.
    pub revision: u64,
    /// The `state.json` it replaced, if any: what it was (its revision), and the backup
    /// file it was copied to.
    pub replaced: Option<(String, String)>,
    /// Bytes of an unacknowledged tail cut from the log (into `audit.jsonl.bak`).
    pub cut: u64,
}

/// Apply one entry to the state it follows.
fn replay(state: &mut Stored, entry: AuditEntry) -> Result<(), String> {
    for c in &entry.changes {
        let docs = state.docs.of_mut(c.kind);
        match (&c.patch, &c.after) {
            (Some(patch), _) => {
                let doc =
                    docs.get_mut(&c.key).ok_or_else(|| format!("a patch of `{}`, which does not exist", c.key))?;
                delta::apply(doc, patch)?;
            }
            (None, Some(v)) => {
                docs.insert(c.key.clone(), v.clone());
            }
            (None, None) => {
                docs.remove(&c.key);
            }
        }
        if c.kind == Kind::Flag {
            state.flag_revisions.insert(c.key.clone(), entry.revision);
        }
    }
    // The file's documents as of this load (older logs do not list them: a load changed
    // what it lists in `changes`).
    let objects: Vec<ObjectKey> = match entry.file_objects {
        Some(objects) => objects,
        None if entry.actor == "file" => {
            entry.changes.iter().map(|c| ObjectKey { kind: c.kind, key: c.key.clone() }).collect()
        }
        None => Vec::new(),
    };
    for o in objects {
        match state.docs.of(o.kind).get(&o.key).cloned() {
            Some(v) => state.file.of_mut(o.kind).insert(o.key, v),
            None => state.file.of_mut(o.kind).remove(&o.key),
        };
    }
    state.revision = entry.revision;
    Ok(())
}

/// The state after the first `len` bytes of the log, replayed from revision 1.
fn rebuild(path: &Path, len: u64) -> Result<Stored, RecoverError> {
    let mut state =
        Stored { revision: 0, docs: Docs::default(), file: Docs::default(), flag_revisions: Default::default() };
    let mut gap = None;
    log::read_forward(path, len, &mut |line, entry| {
        if gap.is_some() {
            return Ok(());
        }
        if entry.revision != state.revision + 1 {
            gap = Some((line, entry.revision, state.revision + 1));
            return Ok(());
        }
        replay(&mut state, entry)
    })?;
    if let Some((line, revision, expected)) = gap {
        return Err(RecoverError::Gap { path: path.display().to_string(), line, revision, expected });
    }
    if state.revision == 0 {
        return Err(RecoverError::Empty { path: path.display().to_string() });
    }
    Ok(state)
}

/// Rebuild `state.json` in `dir` from the audit log; `check` validates it (as start-up
/// would) before anything is written.
///
/// When `state.json` is readable at revision S, start-up's rule for the log's tail holds:
/// a last entry S + 1 was never acknowledged, so the state is rebuilt up to S and that
/// entry goes to `audit.jsonl.bak`; a log that ends before S is refused (rebuilding it
/// would go back in time and reuse revision numbers). A log that goes on past S + 1 is
/// replayed to its end (a state file restored from a backup). The state file replaced is
/// copied first to a backup of its own — `state.json.bak`, or `state.json.bak.2`, `.3`, …
/// when that exists: a backup is never overwritten.
pub fn recover(dir: &Path, check: impl FnOnce(&Stored) -> Result<(), String>) -> Result<Recovered, RecoverError> {
    let _lock = lock_dir(dir)?;
    let audit = audit_path(dir);
    let scan = log::scan(&audit)?;
    // The good lines; a damaged or torn last line was never acknowledged.
    let mut end = scan.bad_last.map(|l| l.offset).or(scan.torn).unwrap_or(scan.len);
    let path = state_path(dir);
    let existing = read_state(dir);
    let stored = match &existing {
        Ok(Some(old)) => Some(old.revision),
        _ => None,
    };
    if let (Some(s), Some(last)) = (stored, scan.last) {
        if last.revision == s + 1 {
            end = last.offset;
        }
    }
    let state = rebuild(&audit, end)?;
    if let Some(s) = stored.filter(|s| *s > state.revision) {
        return Err(RecoverError::Behind {
            state: path.display().to_string(),
            revision: s,
            audit: audit.display().to_string(),
            rebuilt: state.revision,
        });
    }
    check(&state).map_err(|message| RecoverError::Invalid { revision: state.revision, message })?;
    let replaced = match existing {
        Ok(None) => None,
        Ok(Some(old)) => Some(format!("revision {}", old.revision)),
        Err(e) => Some(format!("unreadable: {e}")),
    };
    let replaced = match replaced {
        Some(what) => Some((what, backup_state(dir, &path)?)),
        None => None,
    };
    let bytes = serde_json::to_vec(&state)
        .map_err(|e| StoreError::Damaged { path: path.display().to_string(), message: e.to_string() })?;
    replace_file(dir, &path, &bytes, &|_| Ok(())).map_err(|(renamed, e)| match renamed {
        false => RecoverError::Store(e),
        true => RecoverError::AfterReplace { revision: state.revision, message: e.to_string() },
    })?;
    let cut = log::cut(&audit, end)
        .map_err(|e| RecoverError::AfterReplace { revision: state.revision, message: e.to_string() })?;
    Ok(Recovered {
        revision: state.revision,
        replaced: replaced.map(|(what, backup)| (what, backup.display().to_string())),
        cut,
    })
}

/// Copy `state.json` to a backup file no other backup uses, synced with its directory
/// entry. Returns its path.
fn backup_state(dir: &Path, path: &Path) -> Result<PathBuf, RecoverError> {
    let mut source = File::open(path).map_err(io(path))?;
    let mut n = 1u32;
    loop {
        let backup = match n {
            1 => PathBuf::from(format!("{}.bak", path.display())),
            n => PathBuf::from(format!("{}.bak.{n}", path.display())),
        };
        match OpenOptions::new().write(true).create_new(true).open(&backup) {
            Ok(mut f) => {
                std::io::copy(&mut source, &mut f).and_then(|_| f.sync_all()).map_err(io(&backup))?;
                File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
                return Ok(backup);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(io(&backup)(e).into()),
        }
    }
}

/// Move line `line` (1-based) of the audit log in `dir` to `audit.jsonl.bak`. Returns the
/// bytes moved.
pub fn repair_drop_line(dir: &Path, line: u64) -> Result<u64, RecoverError> {
    let _lock = lock_dir(dir)?;
    let audit = audit_path(dir);
    let tmp = audit.with_extension("tmp");
    let mut reader = BufReader::new(File::open(&audit).map_err(io(&audit))?);
    let mut out = BufWriter::new(File::create(&tmp).map_err(io(&tmp))?);
    let (mut number, mut dropped) = (0u64, None);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io(&audit))? == 0 {
            break;
        }
        number += 1;
        if number == line {
            dropped = Some(buf.clone());
        } else {
            out.write_all(&buf).map_err(io(&tmp))?;
        }
    }
    let Some(mut bytes) = dropped else {
        let _ = std::fs::remove_file(&tmp);
        return Err(RecoverError::NoLine { path: audit.display().to_string(), line, lines: number });
    };
    out.into_inner().map_err(|e| io(&tmp)(e.into_error())).and_then(|f| f.sync_all().map_err(io(&tmp)))?;
    if bytes.last() != Some(&b'\n') {
        bytes.push(b'\n');
    }
    let backup = log::backup_path(&audit);
    let mut bak = OpenOptions::new().create(true).append(true).open(&backup).map_err(io(&backup))?;
    bak.write_all(&bytes).and_then(|()| bak.sync_all()).map_err(io(&backup))?;
    std::fs::rename(&tmp, &audit).map_err(io(&audit))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(bytes.len() as u64)
}
