//! Repairs a person asks for (`sluice state recover`, `sluice state repair`): rebuilding
//! `state.json` from the audit log, and moving one damaged line of the log to its backup
//! file. Both hold the directory's lock, so they never run beside a serving sluice, and
//! both keep what they replace (`state.json.bak`, `audit.jsonl.bak`).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::file::{audit_path, io, lock_dir, read_state, replace_file, state_path};
use super::log::{self, LogError};
use super::{delta, AuditEntry, Docs, Kind, ObjectKey, StoreError, Stored};

/// A repair could not be made; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
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
    /// The revision of the `state.json` it replaced (kept as `state.json.bak`), if any.
    pub replaced: Option<String>,
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
/// would) before anything is written. The state file replaced is kept as `state.json.bak`.
pub fn recover(dir: &Path, check: impl FnOnce(&Stored) -> Result<(), String>) -> Result<Recovered, RecoverError> {
    let _lock = lock_dir(dir)?;
    let audit = audit_path(dir);
    let scan = log::scan(&audit)?;
    // The good lines; a damaged or torn last line was never acknowledged.
    let end = scan.bad_last.map(|l| l.offset).or(scan.torn).unwrap_or(scan.len);
    let state = rebuild(&audit, end)?;
    check(&state).map_err(|message| RecoverError::Invalid { revision: state.revision, message })?;
    let path = state_path(dir);
    let replaced = match read_state(dir) {
        Ok(None) => None,
        Ok(Some(old)) => Some(format!("revision {}", old.revision)),
        Err(e) => Some(format!("unreadable: {e}")),
    };
    if replaced.is_some() {
        let backup = PathBuf::from(format!("{}.bak", path.display()));
        std::fs::copy(&path, &backup).and_then(|_| File::open(&backup)?.sync_all()).map_err(io(&backup))?;
    }
    let bytes = serde_json::to_vec(&state)
        .map_err(|e| StoreError::Damaged { path: path.display().to_string(), message: e.to_string() })?;
    replace_file(dir, &path, &bytes, &|_| Ok(())).map_err(|(_, e)| e)?;
    let cut = log::cut(&audit, end)?;
    Ok(Recovered { revision: state.revision, replaced, cut })
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
