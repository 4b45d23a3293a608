//! Repairs a person asks for (`sluice state recover`, `sluice state repair`): rebuilding
//! `state.json` from the audit log, and moving one damaged line of the log to its backup
//! file (an entry of the same revision marked `dropped` takes its place). Both hold the directory's lock, so they never run beside a serving sluice, and
//! both keep what they replace (`state.json.bak[.N]`, never overwritten; `audit.jsonl.bak`,
//! appended to).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::file::{audit_path, io, lock_dir, read_state, replace_file, state_path};
use super::log::{self, LogError};
use super::{delta, AuditEntry, Kind, ObjectKey, StoreError, Stored};

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
    #[error("{path}:{line} is a complete audit entry (revision {revision}), not a damaged one: nothing was changed. Dropping it loses what that revision changed; pass --force to drop it anyway")]
    NotDamaged { path: String, line: u64, revision: u64 },
    #[error("{path}:{line}: the revision this line held cannot be told from the lines around it (they are damaged too, or not consecutive): nothing was changed")]
    UnknownRevision { path: String, line: u64 },
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
    let before = state.docs.clone();
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
    let changed = entry.changes.iter().filter(|c| c.kind == Kind::Flag).map(|c| c.key.clone());
    super::change::next_iterations(&before, &state.docs, changed, &mut state.iterations, entry.revision, &entry.time);
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
    let mut state = Stored::empty();
    let mut gap = None;
    log::read_forward(path, len, &mut |line, entry| {
        if gap.is_some() {
            return Ok(());
        }
        if entry.revision != state.revision + 1 {
            gap = Some((line, entry.revision, state.revision + 1));
            return Ok(());
        }
        if entry.dropped {
            return Err(format!(
                "revision {} was moved to the backup file by a repair: the state cannot be rebuilt past it",
                entry.revision
            ));
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

/// What `repair_drop_line` did.
#[derive(Debug, Clone)]
pub struct Dropped {
    /// The bytes moved to `audit.jsonl.bak`.
    pub bytes: u64,
    /// The revision the line held, now held by an entry that says it was dropped.
    pub revision: u64,
}

/// Move line `line` (1-based) of the audit log in `dir` to `audit.jsonl.bak`, leaving in
/// its place an entry of the same revision that records it was dropped (`dropped: true`,
/// no changes), so the log keeps every revision number and start-up's rule — revisions
/// follow one another — still holds, while no rollback or rebuild goes through what the
/// line changed. A line that parses as an entry is only dropped with `force`. The log is
/// rewritten a line at a time (bounded memory) into a file with its permissions, synced,
/// then renamed into place.
pub fn repair_drop_line(dir: &Path, line: u64, force: bool) -> Result<Dropped, RecoverError> {
    let _lock = lock_dir(dir)?;
    let audit = audit_path(dir);
    let path = audit.display().to_string();
    // First pass: where the line is, and the revisions around it.
    let mut reader = BufReader::new(File::open(&audit).map_err(io(&audit))?);
    let (mut number, mut offset, mut buf) = (0u64, 0u64, Vec::new());
    let (mut found, mut previous, mut next) = (None, None, None);
    loop {
        let (n, _) = log::read_line(&mut reader, &mut buf).map_err(io(&audit))?;
        if n == 0 {
            break;
        }
        number += 1;
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let head = if n > log::MAX_LINE as u64 + 1 { None } else { log::parse_head(body).ok() };
        if number + 1 == line {
            previous = head;
        } else if number == line {
            let parses = n <= log::MAX_LINE as u64 + 1
                && std::str::from_utf8(body).ok().and_then(|t| serde_json::from_str::<AuditEntry>(t).ok()).is_some();
            found = Some((offset, n, head, parses));
        } else if number == line + 1 {
            next = head;
            break;
        }
        offset += n;
    }
    let Some((offset, len, head, parses)) = found else {
        return Err(RecoverError::NoLine { path, line, lines: number });
    };
    if parses && !force {
        return Err(RecoverError::NotDamaged { path, line, revision: head.unwrap_or(0) });
    }
    // The neighbours decide the revision where they can: the line's own may be what is
    // damaged.
    let revision = match (previous, next, head.filter(|_| parses)) {
        (Some(p), n, _) if n.is_none_or(|n| n == p + 2) => p + 1,
        (None, Some(n), _) if n > 1 => n - 1,
        (_, _, Some(r)) => r,
        _ => return Err(RecoverError::UnknownRevision { path, line }),
    };
    // Second pass: everything but the line into the new log, the line to the backup.
    let placeholder = AuditEntry {
        revision,
        time: super::now(),
        actor: "sluice state repair".into(),
        reason: format!(
            "line {line} was damaged and moved to audit.jsonl.bak: what revision {revision} changed is unknown"
        ),
        changes: Vec::new(),
        file_objects: None,
        dropped: true,
    };
    let mut entry = serde_json::to_vec(&placeholder)
        .map_err(|e| StoreError::Damaged { path: path.clone(), message: e.to_string() })?;
    entry.push(b'\n');
    let mut source = File::open(&audit).map_err(io(&audit))?;
    let permissions = source.metadata().map_err(io(&audit))?.permissions();
    let tmp = audit.with_extension("tmp");
    let copied = (|| -> Result<File, RecoverError> {
        let mut out = File::create(&tmp).map_err(io(&tmp))?;
        out.set_permissions(permissions).map_err(io(&tmp))?;
        std::io::copy(&mut (&mut source).take(offset), &mut out).map_err(io(&tmp))?;
        let backup = log::backup_path(&audit);
        let mut bak = OpenOptions::new().create(true).append(true).open(&backup).map_err(io(&backup))?;
        std::io::copy(&mut (&mut source).take(len), &mut bak).map_err(io(&backup))?;
        bak.write_all(b"\n").and_then(|()| bak.sync_all()).map_err(io(&backup))?;
        out.write_all(&entry).map_err(io(&tmp))?;
        std::io::copy(&mut source, &mut out).map_err(io(&tmp))?;
        out.sync_all().map_err(io(&tmp))?;
        Ok(out)
    })();
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &audit).map_err(io(&audit))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(Dropped { bytes: len, revision })
}
