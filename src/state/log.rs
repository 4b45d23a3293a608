//! The audit log file, `audit.jsonl`, as bytes: one JSON object per line, each line ended
//! by `\n` (serde_json never writes a raw newline inside a value, so a `\n` only ever ends
//! an entry).
//!
//! Everything here reads the file a line at a time (or a chunk at a time, from the end):
//! memory is bounded by the longest line, never by the file, and a line is at most
//! [`MAX_LINE`] bytes — far more than any entry the write path makes (which refuses one
//! that would be longer): a longer line is a damaged line (or a torn one, at the end),
//! whatever a hostile or broken file holds. Lines are split on the byte `\n`, so a line
//! torn anywhere — inside a multi-byte UTF-8 character included — is one bad line, never a
//! read error that hides the lines around it.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{AuditEntry, EntryHead};

/// How much of the file is read at once when reading from the end.
const CHUNK: usize = 64 * 1024;

/// The longest audit line (without its `\n`), in bytes: 16 MiB.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Read one line (through its `\n`) into `buf`, keeping at most `MAX_LINE + 1` of its bytes
/// (the rest is read and dropped). Returns the line's whole length (0: the end of the
/// file) and whether it ends with `\n`.
pub(super) fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<(u64, bool)> {
    buf.clear();
    let mut total = 0u64;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((total, false));
        }
        let (take, ended) = match memchr::memchr(b'\n', available) {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = (MAX_LINE + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&available[..take.min(room)]);
        reader.consume(take);
        total += take as u64;
        if ended {
            return Ok((total, true));
        }
    }
}

/// Why a complete line of `len` bytes (its `\n` included) is too long, if it is.
fn too_long(len: u64) -> Option<String> {
    (len > MAX_LINE as u64 + 1).then(|| format!("{} bytes, longer than the longest audit line ({MAX_LINE})", len - 1))
}

/// The audit log could not be read, or holds what no crash can explain.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}: the audit entry is damaged ({message})")]
    Damaged { path: String, line: u64, message: String },
    /// Found reading from the end or by a search, where line numbers are unknown.
    #[error("{path}: the audit entry at byte {offset} is damaged ({message})")]
    DamagedAt { path: String, offset: u64, message: String },
    #[error("{path}:{line}: revision {revision} follows revision {previous}: revisions must increase")]
    OutOfOrder { path: String, line: u64, revision: u64, previous: u64 },
    /// The line's revision disagrees with both its neighbours, which agree with each other
    /// (the line before holds `expected - 1`, the line after `expected + 1`): the line is
    /// damaged, not the ones around it.
    #[error("{path}:{line}: the entry says revision {revision}, but the lines around it hold revisions {} and {}: this line is damaged (it should hold revision {expected})", expected - 1, expected + 1)]
    WrongRevision { path: String, line: u64, revision: u64, expected: u64 },
    #[error("{path}:{line}: revision {revision} follows revision {previous}: the revisions between are missing from the log (lines removed by hand?). Put them back (a line cut by sluice or a repair is in the log's .bak file); `sluice state repair --drop-line` keeps a damaged line's revision in the log, so it never makes a gap")]
    Gap { path: String, line: u64, revision: u64, previous: u64 },
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.display().to_string(), source }
}

/// What a scan found: the complete lines that parse, and what follows them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Scan {
    /// Whether the file exists (a missing file scans as empty).
    pub exists: bool,
    /// The file's length.
    pub len: u64,
    /// How many lines parse (the good ones, all of them before any bad one).
    pub lines: u64,
    /// The first and last good revisions.
    pub first: Option<u64>,
    pub last: Option<Line>,
    /// The good line before `last`.
    pub before_last: Option<Line>,
    /// A complete last line that does not parse (only the last line may be bad: a bad
    /// line with a good line after it is an error).
    pub bad_last: Option<Line>,
    /// Where a last line without its `\n` (torn mid-append) starts.
    pub torn: Option<u64>,
}

/// A line of the file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    /// 1-based.
    pub number: u64,
    pub offset: u64,
    pub revision: u64,
}

/// Only the revision of an entry: the rest is validated as JSON but not kept.
#[derive(Deserialize)]
struct Head {
    revision: u64,
}

/// The revision of a line that is a whole audit entry (every field, as the audit API
/// reads it): start-up accepts no line that a later read would fail on.
fn parse_entry(line: &[u8]) -> Result<u64, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    serde_json::from_str::<AuditEntry>(text).map(|e| e.revision).map_err(|e| e.to_string())
}

pub(super) fn parse_head(line: &[u8]) -> Result<u64, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    serde_json::from_str::<Head>(text).map(|h| h.revision).map_err(|e| e.to_string())
}

/// Read the whole file once, a line at a time (bounded memory: the longest line), checking
/// that every complete line is an audit entry whose revision follows the one before (the
/// first line's may be any: a log moved aside starts again at the next revision).
/// A missing file scans as empty.
pub fn scan(path: &Path) -> Result<Scan, LogError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Scan::default()),
        Err(e) => return Err(io(path)(e)),
    };
    let mut reader = BufReader::with_capacity(CHUNK, file);
    let mut scan = Scan { exists: true, ..Scan::default() };
    let mut buf = Vec::new();
    let mut offset = 0u64;
    let mut number = 0u64;
    let mut bad: Option<(Line, String)> = None;
    loop {
        let (n, ended) = read_line(&mut reader, &mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        number += 1;
        if !ended {
            scan.torn = Some(offset);
            offset += n;
            break;
        }
        if let Some((line, message)) = bad.take() {
            // A bad line with a line after it: not a torn tail.
            return Err(LogError::Damaged { path: path.display().to_string(), line: line.number, message });
        }
        let head = match too_long(n) {
            Some(message) => Err(message),
            None => parse_entry(&buf[..buf.len() - 1]),
        };
        match head {
            Ok(revision) => {
                if let Some(last) = scan.last {
                    let previous = last.revision;
                    if revision != previous + 1 {
                        // One damaged revision, or lines out of place? The next line says.
                        let (n, ended) = read_line(&mut reader, &mut buf).map_err(io(path))?;
                        let whole = ended && too_long(n).is_none();
                        let next = if whole { parse_head(&buf[..buf.len() - 1]).ok() } else { None };
                        let (path, line) = (path.display().to_string(), number);
                        return Err(if next == Some(previous + 2) {
                            LogError::WrongRevision { path, line, revision, expected: previous + 1 }
                        } else if revision <= previous {
                            LogError::OutOfOrder { path, line, revision, previous }
                        } else {
                            LogError::Gap { path, line, revision, previous }
                        });
                    }
                }
                scan.first.get_or_insert(revision);
                scan.before_last = scan.last;
                scan.last = Some(Line { number, offset, revision });
                scan.lines += 1;
            }
            Err(message) => bad = Some((Line { number, offset, revision: 0 }, message)),
        }
        offset += n;
    }
    scan.bad_last = bad.map(|(line, _)| line);
    scan.len = offset;
    Ok(scan)
}

/// Visit the entries of the first `len` bytes of the file whose head `wanted` accepts
/// (the others are parsed only as far as their head), newest first, until `visit`
/// returns `false`. Reads the file backwards a chunk at a time; each byte is read, searched
/// and copied once (a line longer than a chunk is gathered as a list of pieces).
pub fn read_back(
    path: &Path,
    len: u64,
    wanted: &dyn Fn(&EntryHead) -> bool,
    visit: &mut dyn FnMut(AuditEntry) -> bool,
) -> Result<(), LogError> {
    if len == 0 {
        return Ok(());
    }
    let mut file = File::open(path).map_err(io(path))?;
    // The pieces (last first) of the line not yet visited whose start is not yet read.
    let mut tail: Vec<Vec<u8>> = Vec::new();
    let mut tail_len = 0usize;
    let mut pos = len;
    // Line numbers are only known counting from the start: errors name the line's byte
    // offset instead (start-up, which reads from the start, names its number).
    let mut chunk = vec![0u8; CHUNK];
    while pos > 0 {
        let n = CHUNK.min(pos as usize);
        pos -= n as u64;
        file.seek(SeekFrom::Start(pos)).map_err(io(path))?;
        file.read_exact(&mut chunk[..n]).map_err(io(path))?;
        // chunk[..end] is not yet part of a visited line (the `\n`s that end lines are not
        // part of them here).
        let mut end = n;
        while let Some(i) = memchr::memrchr(b'\n', &chunk[..end]) {
            // The line that starts after this `\n` (none after the file's last one).
            if pos + i as u64 + 1 < len {
                let line = join(&chunk[i + 1..end], &mut tail);
                tail_len = 0;
                if !visit_line(path, &line, pos + i as u64 + 1, wanted, visit)? {
                    return Ok(());
                }
            }
            end = i;
        }
        tail_len += end;
        if tail_len > MAX_LINE {
            return Err(LogError::DamagedAt {
                path: path.display().to_string(),
                offset: pos,
                message: format!("longer than the longest audit line ({MAX_LINE} bytes)"),
            });
        }
        tail.push(chunk[..end].to_vec());
    }
    let line = join(&[], &mut tail);
    if !line.is_empty() {
        visit_line(path, &line, 0, wanted, visit)?;
    }
    Ok(())
}

/// `head` followed by the pieces of `tail` (stored last first), emptying `tail`.
fn join(head: &[u8], tail: &mut Vec<Vec<u8>>) -> Vec<u8> {
    let mut line = Vec::with_capacity(head.len() + tail.iter().map(Vec::len).sum::<usize>());
    line.extend_from_slice(head);
    for piece in tail.drain(..).rev() {
        line.extend_from_slice(&piece);
    }
    line
}

fn visit_line(
    path: &Path,
    line: &[u8],
    start: u64,
    wanted: &dyn Fn(&EntryHead) -> bool,
    visit: &mut dyn FnMut(AuditEntry) -> bool,
) -> Result<bool, LogError> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let damaged = |message: String| LogError::DamagedAt { path: path.display().to_string(), offset: start, message };
    let text = std::str::from_utf8(body).map_err(|e| damaged(e.to_string()))?;
    let head: EntryHead = serde_json::from_str(text).map_err(|e| damaged(e.to_string()))?;
    if !wanted(&head) {
        return Ok(true);
    }
    let entry: AuditEntry = serde_json::from_str(text).map_err(|e| damaged(e.to_string()))?;
    Ok(visit(entry))
}

/// The offset of the first line, within the first `len` bytes, whose revision is at least
/// `revision` (`len` if there is none): a binary search over byte offsets (the lines are
/// sorted by revision), reading two lines or so per step.
pub fn offset_of(path: &Path, len: u64, revision: u64) -> Result<u64, LogError> {
    let mut reader = BufReader::with_capacity(CHUNK, File::open(path).map_err(io(path))?);
    let mut buf = Vec::new();
    // The first line that starts at or after `p`, and its revision.
    let mut line_from = |p: u64| -> Result<Option<(u64, u64)>, LogError> {
        let mut start = p;
        if p > 0 {
            reader.seek(SeekFrom::Start(p - 1)).map_err(io(path))?;
            start = p - 1 + read_line(&mut reader, &mut buf).map_err(io(path))?.0;
        }
        if start >= len {
            return Ok(None);
        }
        reader.seek(SeekFrom::Start(start)).map_err(io(path))?;
        let (n, _) = read_line(&mut reader, &mut buf).map_err(io(path))?;
        let damaged = |message| LogError::DamagedAt { path: path.display().to_string(), offset: start, message };
        if let Some(message) = too_long(n) {
            return Err(damaged(message));
        }
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        parse_head(body).map(|r| Some((start, r))).map_err(damaged)
    };
    let (mut lo, mut hi) = (0u64, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match line_from(mid)? {
            Some((_, r)) if r < revision => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(line_from(lo)?.map_or(len, |(start, _)| start))
}

/// Visit every entry of the first `len` bytes, oldest first (for rebuilding the state
/// from the log).
pub fn read_forward(
    path: &Path,
    len: u64,
    visit: &mut dyn FnMut(u64, AuditEntry) -> Result<(), String>,
) -> Result<(), LogError> {
    let file = File::open(path).map_err(io(path))?;
    let mut reader = BufReader::with_capacity(CHUNK, file.take(len));
    let mut buf = Vec::new();
    let mut number = 0u64;
    loop {
        let (n, ended) = read_line(&mut reader, &mut buf).map_err(io(path))?;
        if n == 0 || !ended {
            // The end, or a torn last line (never acknowledged).
            return Ok(());
        }
        number += 1;
        let damaged = |message: String| LogError::Damaged { path: path.display().to_string(), line: number, message };
        if let Some(message) = too_long(n) {
            return Err(damaged(message));
        }
        let text = std::str::from_utf8(&buf[..buf.len() - 1]).map_err(|e| damaged(e.to_string()))?;
        let entry: AuditEntry = serde_json::from_str(text).map_err(|e| damaged(e.to_string()))?;
        visit(number, entry).map_err(damaged)?;
    }
}

/// The backup file next to `path` (`audit.jsonl.bak`).
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".bak");
    PathBuf::from(name)
}

/// Cut the file back to `offset`, first appending (and syncing) the bytes cut to the
/// backup file. Returns how many bytes were cut.
pub fn cut(path: &Path, offset: u64) -> Result<u64, LogError> {
    let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    if len <= offset {
        return Ok(0);
    }
    let backup = backup_path(path);
    let mut bak = OpenOptions::new().create(true).append(true).open(&backup).map_err(io(&backup))?;
    file.seek(SeekFrom::Start(offset)).map_err(io(path))?;
    std::io::copy(&mut (&mut file).take(len - offset), &mut bak).map_err(io(&backup))?;
    // The cut bytes end with a newline in the backup, so that backups of several cuts
    // stay separate lines.
    bak.write_all(b"\n").map_err(io(&backup))?;
    bak.sync_all().map_err(io(&backup))?;
    // The backup's directory entry is durable before anything is cut.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    }
    file.set_len(offset).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    Ok(len - offset)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(revision: u64, reason_len: usize) -> AuditEntry {
        AuditEntry {
            revision,
            time: "2026-12-01T00:00:00Z".into(),
            actor: "t".into(),
            reason: "é".repeat(reason_len),
            changes: Vec::new(),
            file_objects: None,
            dropped: false,
        }
    }

    #[test]
    fn lines_longer_and_shorter_than_a_chunk_are_read_back_and_scanned() {
        let path = std::env::temp_dir().join(format!("sluice-log-unit-{}.jsonl", std::process::id()));
        let sizes = [0, 1, CHUNK, 3 * CHUNK + 7, 10, CHUNK / 2 - 40, 0];
        let mut bytes = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            bytes.extend(serde_json::to_vec(&entry(i as u64 + 1, *n)).unwrap());
            bytes.push(b'\n');
        }
        std::fs::write(&path, &bytes).unwrap();
        let mut seen = Vec::new();
        read_back(&path, bytes.len() as u64, &|_| true, &mut |e| {
            seen.push((e.revision, e.reason.chars().count()));
            true
        })
        .unwrap();
        let expected: Vec<(u64, usize)> = sizes.iter().enumerate().rev().map(|(i, n)| (i as u64 + 1, *n)).collect();
        assert_eq!(seen, expected);
        let scan = scan(&path).unwrap();
        assert_eq!((scan.lines, scan.last.map(|l| l.revision), scan.torn, scan.bad_last), (7, Some(7), None, None));
        // Stopping early reads no further.
        let mut n = 0;
        read_back(&path, bytes.len() as u64, &|_| true, &mut |_| {
            n += 1;
            n < 2
        })
        .unwrap();
        assert_eq!(n, 2);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_line_past_the_limit_is_damaged_or_torn_and_never_read_whole() {
        let path = std::env::temp_dir().join(format!("sluice-log-long-{}.jsonl", std::process::id()));
        let mut bytes = serde_json::to_vec(&entry(1, 0)).unwrap();
        bytes.push(b'\n');
        let good = bytes.len() as u64;
        // A line one byte over the limit, then a good line: damaged, not the last line.
        let mut long = bytes.clone();
        long.extend(std::iter::repeat_n(b'x', MAX_LINE + 1));
        long.push(b'\n');
        long.extend(serde_json::to_vec(&entry(2, 0)).unwrap());
        long.push(b'\n');
        std::fs::write(&path, &long).unwrap();
        let err = scan(&path).unwrap_err().to_string();
        assert!(err.contains(":2:") && err.contains("longer than the longest audit line"), "{err}");
        // The same line at the end without its newline: a torn tail.
        let torn = &long[..good as usize + MAX_LINE + 1];
        std::fs::write(&path, torn).unwrap();
        let found = scan(&path).unwrap();
        assert_eq!((found.lines, found.torn), (1, Some(good)));
        // Read back, a line past the limit is an error, not an allocation of its size.
        std::fs::write(&path, &long[good as usize..]).unwrap();
        let mut seen = Vec::new();
        let err = read_back(&path, long.len() as u64 - good, &|_| true, &mut |e| {
            seen.push(e.revision);
            true
        })
        .unwrap_err();
        assert_eq!(seen, [2]);
        assert!(err.to_string().contains("longer than the longest audit line"), "{err}");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_page_before_a_revision_never_parses_the_newer_entries_and_filters_read_only_heads() {
        let path = std::env::temp_dir().join(format!("sluice-log-page-{}.jsonl", std::process::id()));
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for revision in 1..=40u64 {
            starts.push(bytes.len() as u64);
            let mut value = serde_json::to_value(entry(revision, (revision as usize * 37) % 300)).unwrap();
            if revision % 2 == 0 {
                // Whole, these do not parse as entries (a patch that is not one): only
                // their heads can be read.
                value["changes"] = serde_json::json!([{"kind": "flag", "key": "other", "patch": 12}]);
            }
            bytes.extend(serde_json::to_vec(&value).unwrap());
            bytes.push(b'\n');
        }
        std::fs::write(&path, &bytes).unwrap();
        let len = bytes.len() as u64;
        let second = &bytes[starts[1] as usize..starts[2] as usize - 1];
        assert!(serde_json::from_slice::<AuditEntry>(second).is_err(), "a line that cannot be parsed whole");
        for (i, start) in starts.iter().enumerate() {
            assert_eq!(offset_of(&path, len, i as u64 + 1).unwrap(), *start);
        }
        assert_eq!(offset_of(&path, len, 41).unwrap(), len);
        assert_eq!(offset_of(&path, len, 0).unwrap(), 0);
        // Before revision 2: only revision 1 is read, never the unparsable newer ones.
        let mut seen = Vec::new();
        read_back(&path, offset_of(&path, len, 2).unwrap(), &|_| true, &mut |e| {
            seen.push(e.revision);
            true
        })
        .unwrap();
        assert_eq!(seen, [1]);
        // A filter that skips the even entries reads only their heads.
        let mut seen = Vec::new();
        read_back(&path, len, &|h| h.changes.is_empty(), &mut |e| {
            seen.push(e.revision);
            seen.len() < 3
        })
        .unwrap();
        assert_eq!(seen, [39, 37, 35]);
        let _ = std::fs::remove_file(&path);
    }
}
