//! The state directory under faults: failed and torn audit appends, a `state.json` that
//! cannot be written, deleted or restored from a backup, a damaged line in the middle of
//! the log, a full disk — each followed by a restart that keeps every acknowledged
//! revision and refuses nothing it acknowledged — and the repairs (`sluice state
//! recover|repair`). Also: the audit log grows linearly with AI config versions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{eventually_blocking, must_replace, must_replacen, skipped};
use serde_json::{json, Value};
use sluice::state::{
    AuditEntry, AuditQuery, Change, ChangeError, Fault, Faults, FileStore, Request, State, StoreError,
};

const CONFIG: &str = "config/sluice.yaml";
const FLAG: &str = "support-bot";

/// A state directory's path in a fresh temporary directory, which is removed when the
/// first value is dropped (also when the test panics); the state directory itself does
/// not exist yet.
fn temp_state(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::Builder::new().prefix(&format!("sluice-state-faults-{name}-")).tempdir().unwrap();
    let dir = tmp.path().join("state");
    (tmp, dir)
}

/// The store in `dir`. A `sluice state` child another test is spawning holds a copy of
/// every open descriptor until it execs — the lock of a store just dropped included — so
/// wait (bounded) for that lock to be released.
fn open_store(dir: &Path, faults: Arc<Faults>) -> Result<FileStore, String> {
    eventually_blocking(LOCK_PATIENCE, || match FileStore::open_with_faults(dir, Arc::clone(&faults)) {
        Err(e @ sluice::state::StoreError::Locked { .. }) => Err(e.to_string()),
        other => Ok(other.map_err(|e| e.to_string())),
    })
}

/// How long a lock held by another test's child may outlive its store: a bound that
/// only stops a hang.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// The example config's state, in `dir`, as `sluice serve` would open it.
fn open_with(dir: &Path, faults: Arc<Faults>) -> Result<State, String> {
    let store = open_store(dir, faults)?;
    let text = std::fs::read_to_string(CONFIG).unwrap();
    let env = |name: &str| (name == "SLUICE_STATE_DIR").then(|| dir.display().to_string());
    let mut loaded = sluice::config::parse(&text, CONFIG, &env).unwrap();
    let metrics = Arc::new(sluice::metrics::Metrics::new().unwrap());
    let targeting = std::mem::take(&mut loaded.targeting);
    let snapshot = sluice::snapshot::Snapshot::build(&loaded.config, targeting, &metrics, None).unwrap();
    State::open(Box::new(store), loaded.value, CONFIG, snapshot, metrics).map_err(|e| e.to_string())
}

fn open(dir: &Path) -> Result<State, String> {
    open_with(dir, Arc::default())
}

fn req(reason: &str) -> Request {
    Request { actor: "ops".into(), reason: reason.into(), if_match: None, fence: None }
}

fn kill(state: &State, on: bool, reason: &str) -> Result<u64, ChangeError> {
    state.apply(Change::SetOn { flag: FLAG.into(), on }, &req(reason)).map(|a| a.revision)
}

fn rollout(state: &State, candidate: f64, reason: &str) -> Result<u64, ChangeError> {
    let weights = vec![("control".to_string(), 100.0 - candidate), ("candidate".to_string(), candidate)];
    state.apply(Change::Rollout { flag: FLAG.into(), weights }, &req(reason)).map(|a| a.revision)
}

fn add_version(state: &State, number: u32, prompt: &str) -> Result<u64, ChangeError> {
    let version = json!({"version": number, "provider": "mock", "model": "mock-1",
        "messages": [{"role": "system", "content": prompt}]});
    state
        .apply(Change::AddVersion { ai_config: FLAG.into(), version }, &req(&format!("version {number}")))
        .map(|a| a.revision)
}

/// Every audit entry, newest first.
fn audit(state: &State) -> Vec<AuditEntry> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = state.audit(&AuditQuery { limit: 1000, before, ..AuditQuery::default() }).unwrap();
        all.extend(page.entries);
        match page.next {
            Some(n) => before = Some(n),
            None => return all,
        }
    }
}

fn revisions(state: &State) -> Vec<u64> {
    let mut r: Vec<u64> = audit(state).iter().map(|e| e.revision).collect();
    r.reverse();
    r
}

/// A few changes of every kind: revisions 2 to 5.
fn history(state: &State) {
    assert_eq!(kill(state, false, "incident").unwrap(), 2);
    assert_eq!(rollout(state, 30.0, "ramp").unwrap(), 3);
    assert_eq!(add_version(state, 3, "Be brief. 🚀 déploiement").unwrap(), 4);
    assert_eq!(kill(state, true, "fixed").unwrap(), 5);
}

fn sluice_state(dir: &Path, args: &[&str]) -> (bool, String) {
    // As in `open_store`: a lock just released may live on a moment in another test's child.
    eventually_blocking(LOCK_PATIENCE, || {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["state"])
            .args(args)
            .args(["--config", CONFIG])
            .env("SLUICE_STATE_DIR", dir)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() && text.contains("in use by another sluice") {
            Err(text)
        } else {
            Ok((out.status.success(), text))
        }
    })
}

fn audit_path(dir: &Path) -> PathBuf {
    dir.join("audit.jsonl")
}

fn bak(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("audit.jsonl.bak")).unwrap_or_default()
}

#[test]
fn a_deleted_state_file_stops_start_up_and_recover_rebuilds_it_from_the_log() {
    let (_tmp, dir) = temp_state("deleted");
    let state = open(&dir).unwrap();
    history(&state);
    let before = state.current();
    drop(state);
    let log = std::fs::read(audit_path(&dir)).unwrap();
    std::fs::remove_file(dir.join("state.json")).unwrap();

    let err = open(&dir).expect_err("refused");
    for part in ["state.json is missing", "audit.jsonl holds revisions up to 5", "sluice state recover --config"] {
        assert!(err.contains(part), "{part:?} in {err}");
    }
    assert_eq!(std::fs::read(audit_path(&dir)).unwrap(), log, "the log is untouched");
    assert!(!dir.join("state.json").exists(), "and no state was made up");

    let (ok, out) = sluice_state(&dir, &["recover"]);
    assert!(ok, "{out}");
    assert!(out.contains("at revision 5"), "{out}");
    let state = open(&dir).unwrap();
    let after = state.current();
    assert_eq!(after.revision, 5);
    assert_eq!(after.docs, before.docs, "every runtime change is back, the version added included");
    assert_eq!(after.file, before.file);
    assert_eq!(after.flag_revisions, before.flag_revisions);
    // The experiment's iterations are rebuilt as they were: its last allocation change was
    // revision 5 (the flag back on); none of them is written into a document.
    assert_eq!(before.iterations.get(FLAG).map(|i| i.revision), Some(5));
    assert_eq!(after.iterations, before.iterations);
    assert!(after.docs.flags[FLAG]["experiment"].get("iteration").is_none());
    assert_eq!(revisions(&state), [1, 2, 3, 4, 5]);
    assert_eq!(kill(&state, false, "after recovery").unwrap(), 6);
    drop(state);
}

#[test]
fn a_state_file_older_than_the_log_stops_start_up_and_recover_catches_it_up() {
    let (_tmp, dir) = temp_state("older");
    let state = open(&dir).unwrap();
    assert_eq!(kill(&state, false, "incident").unwrap(), 2);
    let backup = std::fs::read(dir.join("state.json")).unwrap();
    assert_eq!(rollout(&state, 30.0, "ramp").unwrap(), 3);
    assert_eq!(kill(&state, true, "fixed").unwrap(), 4);
    let current = state.current();
    drop(state);
    std::fs::write(dir.join("state.json"), backup).unwrap();
    let log = std::fs::read(audit_path(&dir)).unwrap();

    let err = open(&dir).expect_err("refused");
    assert!(err.contains("is at revision 2 but") && err.contains("goes on to revision 4 (line 4)"), "{err}");
    assert!(err.contains("sluice state recover"), "{err}");
    assert_eq!(std::fs::read(audit_path(&dir)).unwrap(), log, "the log is untouched");

    let (ok, out) = sluice_state(&dir, &["recover"]);
    assert!(ok && out.contains("revision 2, is in state.json.bak"), "{out}");
    let state = open(&dir).unwrap();
    assert_eq!(state.current().docs, current.docs);
    assert_eq!(revisions(&state), [1, 2, 3, 4]);
    drop(state);
}

#[test]
fn a_failed_audit_append_is_cut_back_and_the_change_refused() {
    let (_tmp, dir) = temp_state("append");
    let faults = Arc::new(Faults::default());
    let state = open_with(&dir, Arc::clone(&faults)).unwrap();
    let len = std::fs::metadata(audit_path(&dir)).unwrap().len();
    faults.inject(Fault::AuditWrite);
    let err = kill(&state, false, "disk full").unwrap_err();
    assert!(matches!(err, ChangeError::Store(_)), "{err}");
    assert_eq!(std::fs::metadata(audit_path(&dir)).unwrap().len(), len, "the torn half line is cut");
    assert_eq!(state.revision(), 1, "memory unchanged");
    assert!(state.gateway().metrics.render().contains("sluice_config_revision 1"), "the data plane unchanged");
    assert_eq!(state.current().docs.flags[FLAG]["on"], Value::Null, "not killed");

    assert_eq!(kill(&state, false, "after free").unwrap(), 2, "the next change starts on a line of its own");
    drop(state);
    let state = open(&dir).unwrap();
    assert_eq!(state.revision(), 2);
    let entries = audit(&state);
    assert_eq!(revisions(&state), [1, 2]);
    assert_eq!(entries[0].reason, "after free");
    drop(state);
}

#[test]
fn a_failed_cut_poisons_the_store_and_the_restart_keeps_lines_apart() {
    // The fault writes the first half of the line. The line's length is fixed by its
    // reason (the time has a fixed width), so one of these prefixes puts the half inside
    // an `é` (2 bytes): found, and asserted, below.
    let mut found = None;
    for prefix in ["", "x", "xx"] {
        let (tmp, dir) = temp_state(&format!("poison{}", prefix.len()));
        let faults = Arc::new(Faults::default());
        let state = open_with(&dir, Arc::clone(&faults)).unwrap();
        assert_eq!(kill(&state, false, "before").unwrap(), 2);
        let acknowledged = std::fs::metadata(audit_path(&dir)).unwrap().len() as usize;
        faults.inject(Fault::AuditWrite);
        faults.inject(Fault::AuditCut);
        assert!(kill(&state, true, &format!("torn {prefix}{}", "é".repeat(20_000))).is_err());
        let torn = std::fs::read(audit_path(&dir)).unwrap()[acknowledged..].to_vec();
        match std::str::from_utf8(&torn) {
            // Incomplete at the end: the cut is inside a multi-byte character.
            Err(e) if e.error_len().is_none() && torn.ends_with(&"é".as_bytes()[..1]) => {
                found = Some((tmp, dir, faults, state));
                break;
            }
            _ => drop(state),
        }
    }
    let (_tmp, dir, _faults, state) = found.expect("a cut inside `é`");
    let err = rollout(&state, 10.0, "glued?").unwrap_err();
    assert!(err.to_string().contains("refuses changes"), "poisoned: {err}");
    assert_eq!(state.revision(), 2);
    assert_eq!(revisions(&state), [1, 2], "readers stop at the last acknowledged entry");
    let log = std::fs::read(audit_path(&dir)).unwrap();
    assert_ne!(log.last(), Some(&b'\n'), "the torn half line is still there");
    drop(state);

    let state = open(&dir).unwrap();
    assert_eq!(state.revision(), 2);
    assert!(String::from_utf8_lossy(&bak(&dir)).contains("\"revision\":3"), "the torn bytes are kept");
    assert_eq!(rollout(&state, 10.0, "after restart").unwrap(), 3);
    drop(state);
    let state = open(&dir).unwrap();
    assert_eq!(revisions(&state), [1, 2, 3]);
    assert_eq!(audit(&state)[0].reason, "after restart");
    drop(state);
}

#[test]
fn a_torn_last_line_cut_inside_an_emoji_is_repaired() {
    let (_tmp, dir) = temp_state("torn");
    let state = open(&dir).unwrap();
    assert_eq!(kill(&state, false, "ramp to 20% 🚀 déploiement").unwrap(), 2);
    drop(state);
    // A crash mid-append of revision 3, cut inside the emoji.
    let log = std::fs::read(audit_path(&dir)).unwrap();
    let last = log[..log.len() - 1].rsplit(|b| *b == b'\n').next().unwrap().to_vec();
    let text = must_replace(&String::from_utf8(last).unwrap(), "\"revision\":2", "\"revision\":3");
    let cut = text.find('🚀').unwrap() + 2;
    let torn = &text.as_bytes()[..cut];
    assert!(std::str::from_utf8(torn).is_err(), "cut inside the character");
    let mut damaged = log.clone();
    damaged.extend_from_slice(torn);
    std::fs::write(audit_path(&dir), &damaged).unwrap();

    let state = open(&dir).unwrap();
    assert_eq!(state.revision(), 2);
    assert_eq!(std::fs::read(audit_path(&dir)).unwrap(), log, "exactly the torn bytes were cut");
    assert!(bak(&dir).starts_with(torn), "and kept in the backup");
    assert_eq!(audit(&state)[0].reason, "ramp to 20% 🚀 déploiement");
    assert_eq!(kill(&state, true, "next").unwrap(), 3);
    drop(state);
}

#[test]
fn the_crash_between_the_two_writes_is_cut_with_a_backup() {
    let (_tmp, dir) = temp_state("between");
    let state = open(&dir).unwrap();
    assert_eq!(kill(&state, false, "acknowledged").unwrap(), 2);
    let state_json = std::fs::read(dir.join("state.json")).unwrap();
    assert_eq!(kill(&state, true, "never acknowledged").unwrap(), 3);
    drop(state);
    // As if the process died after the append of revision 3, before its state.json.
    std::fs::write(dir.join("state.json"), state_json).unwrap();
    let state = open(&dir).unwrap();
    assert_eq!(state.revision(), 2);
    assert_eq!(revisions(&state), [1, 2]);
    assert!(String::from_utf8_lossy(&bak(&dir)).contains("never acknowledged"));
    drop(state);
}

#[test]
fn a_refused_state_write_leaves_no_entry_to_reuse_or_roll_back_to() {
    let (_tmp, dir) = temp_state("refused");
    let faults = Arc::new(Faults::default());
    let state = open_with(&dir, Arc::clone(&faults)).unwrap();
    assert_eq!(kill(&state, false, "before ro").unwrap(), 2);
    let len = std::fs::metadata(audit_path(&dir)).unwrap().len();
    faults.inject(Fault::StateWrite);
    assert!(matches!(kill(&state, true, "while ro"), Err(ChangeError::Store(_))));
    faults.inject(Fault::StateWrite);
    assert!(matches!(rollout(&state, 30.0, "while ro 2"), Err(ChangeError::Store(_))));
    assert_eq!(std::fs::metadata(audit_path(&dir)).unwrap().len(), len, "the refused entries are gone");
    assert!(!dir.join("state.tmp").exists());
    assert_eq!(state.revision(), 2);
    assert_eq!(kill(&state, true, "after ro").unwrap(), 3);
    drop(state);

    let state = open(&dir).unwrap();
    let entries = audit(&state);
    assert_eq!(revisions(&state), [1, 2, 3], "one entry per revision");
    assert!(entries.iter().all(|e| !e.reason.starts_with("while ro")));
    // Revision 3 is the restore: rolling back to it installs no refused rollout.
    assert_eq!(kill(&state, false, "kill again").unwrap(), 4);
    state.apply(Change::Rollback { flag: FLAG.into(), revision: 3 }, &req("undo")).unwrap();
    let flag = &state.current().docs.flags[FLAG];
    assert_eq!(flag["on"], true);
    assert!(flag["fallthrough"].get("rollout").is_none_or(|r| !r.to_string().contains("70")), "{flag}");
    drop(state);
}

#[test]
fn an_unsynced_rename_poisons_the_store_and_a_restart_agrees_with_the_disk() {
    let (_tmp, dir) = temp_state("dirsync");
    let faults = Arc::new(Faults::default());
    let state = open_with(&dir, Arc::clone(&faults)).unwrap();
    faults.inject(Fault::DirSync);
    let err = kill(&state, false, "unknown outcome").unwrap_err();
    assert!(matches!(err, ChangeError::Store(StoreError::DurabilityUnknown { .. })), "{err}");
    assert!(err.to_string().contains("applied but may not survive a power loss"), "{err}");
    assert_eq!(state.revision(), 2, "in effect, as the directory shows");
    assert_eq!(state.current().docs.flags[FLAG]["on"], false);
    assert!(state.gateway().metrics.render().contains("sluice_config_revision 2"), "the data plane serves it");
    assert_eq!(revisions(&state), [1, 2], "its entry is readable");
    assert!(kill(&state, true, "again").unwrap_err().to_string().contains("refuses changes"));
    assert_eq!(state.revision(), 2);
    drop(state);
    // state.json did reach revision 2 here: the restart serves it, with its entry.
    let state = open(&dir).unwrap();
    assert_eq!(state.revision(), 2);
    assert_eq!(revisions(&state), [1, 2]);
    drop(state);
}

#[test]
fn a_read_only_state_directory_refuses_the_change() {
    // Only meaningful where permissions apply (not as root).
    let (_tmp, dir) = temp_state("readonly");
    let state = open(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::File::create(dir.join("probe")).is_ok() {
        skipped(
            "a_read_only_state_directory_refuses_the_change",
            "running as root, which writes to a read-only directory anyway; run as a normal user to test it (the \
             fault-injected tests cover the path)",
        );
        let _ = std::fs::remove_file(dir.join("probe"));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        drop(state);
        return;
    }
    let len = std::fs::metadata(audit_path(&dir)).unwrap().len();
    assert!(matches!(kill(&state, false, "while ro"), Err(ChangeError::Store(_))));
    assert_eq!(std::fs::metadata(audit_path(&dir)).unwrap().len(), len);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(kill(&state, false, "after ro").unwrap(), 2);
    drop(state);
}

#[test]
fn a_damaged_middle_line_stops_start_up_and_repair_moves_it_to_the_backup() {
    let (_tmp, dir) = temp_state("middle");
    let state = open(&dir).unwrap();
    history(&state);
    drop(state);
    let log = std::fs::read(audit_path(&dir)).unwrap();
    let mut lines: Vec<Vec<u8>> = log.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    let third = lines[2].clone();
    lines[2].truncate(third.len() - 5);
    std::fs::write(audit_path(&dir), lines.join(&b'\n')).unwrap();
    let damaged = std::fs::read(audit_path(&dir)).unwrap();

    let err = open(&dir).expect_err("refused");
    assert!(err.contains("audit.jsonl:3: the audit entry is damaged"), "{err}");
    assert!(err.contains("--drop-line 3"), "{err}");
    assert_eq!(std::fs::read(audit_path(&dir)).unwrap(), damaged, "nothing deleted");

    // A line that parses is not dropped without --force.
    let (ok, out) = sluice_state(&dir, &["repair", "--drop-line", "2"]);
    assert!(!ok && out.contains("is a complete audit entry (revision 2)") && out.contains("--force"), "{out}");
    assert_eq!(std::fs::read(audit_path(&dir)).unwrap(), damaged, "nothing changed");

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(audit_path(&dir), std::fs::Permissions::from_mode(0o640)).unwrap();
    let (ok, out) = sluice_state(&dir, &["repair", "--drop-line", "3"]);
    assert!(ok, "{out}");
    let mode = std::fs::metadata(audit_path(&dir)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the log keeps its permissions");
    assert!(bak(&dir).starts_with(&third[..third.len() - 5]), "the line is kept");
    let state = open(&dir).unwrap();
    assert_eq!(state.revision(), 5);
    assert_eq!(revisions(&state), [1, 2, 3, 4, 5], "revision 3 keeps its number");
    let entries = audit(&state);
    assert!(entries[2].dropped && entries[2].changes.is_empty(), "{:?}", entries[2]);
    assert_eq!(entries[2].actor, "sluice state repair");
    // What revision 3 did is unknown: no rollback to it, or through it, installs a guess.
    for revision in [3, 4] {
        let err = state.apply(Change::Rollback { flag: FLAG.into(), revision }, &req("undo")).unwrap_err();
        assert!(err.to_string().contains("revision 3 is not in the audit log"), "{err}");
    }
    state.apply(Change::Rollback { flag: FLAG.into(), revision: 2 }, &req("undo")).unwrap();
    assert_eq!(state.current().docs.flags[FLAG]["on"], false, "revision 2's kill");
    drop(state);
    let (ok, out) = sluice_state(&dir, &["recover"]);
    assert!(!ok && out.contains("revision 3 was moved to the backup file"), "{out}");

    // Lines out of order are found too.
    let text = String::from_utf8(std::fs::read(audit_path(&dir)).unwrap()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(2, 3);
    std::fs::write(audit_path(&dir), lines.join("\n") + "\n").unwrap();
    let err = open(&dir).expect_err("refused");
    assert!(err.contains("audit.jsonl:3: revision 4 follows revision 2: the revisions between are missing"), "{err}");
}

#[test]
fn a_damaged_revision_number_is_blamed_on_its_own_line_and_repair_restores_it() {
    let (_tmp, dir) = temp_state("wrong-revision");
    let state = open(&dir).unwrap();
    history(&state);
    drop(state);
    let good = String::from_utf8(std::fs::read(audit_path(&dir)).unwrap()).unwrap();
    // One digit of line 3's revision changed, up or down: its neighbours (2 and 4) agree
    // with each other, so line 3 is named — not line 4, the first that looks out of place.
    for wrong in ["9", "1", "2", "4"] {
        let damaged = must_replacen(&good, "\"revision\":3,", &format!("\"revision\":{wrong},"), 1);
        std::fs::write(audit_path(&dir), &damaged).unwrap();
        let err = open(&dir).expect_err("refused");
        assert!(
            err.contains(&format!(
                "audit.jsonl:3: the entry says revision {wrong}, but the lines around it hold revisions 2 and 4"
            )) && err.contains("should hold revision 3")
                && err.contains("--drop-line 3 --force"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(audit_path(&dir)).unwrap(), damaged, "nothing changed");
    }
    // The repair takes the revision from the neighbours, not from the damaged line.
    let (ok, out) = sluice_state(&dir, &["repair", "--drop-line", "3", "--force"]);
    assert!(ok, "{out}");
    let state = open(&dir).unwrap();
    assert_eq!(revisions(&state), [1, 2, 3, 4, 5]);
    assert!(audit(&state)[2].dropped);
    drop(state);
}

#[test]
fn the_audit_log_grows_linearly_with_ai_config_versions() {
    // Each change validates the whole configuration and rewrites state.json, so this test
    // costs the square of its size: 300 by default; `SLUICE_TEST_VERSIONS=2000` for the
    // full figure.
    let versions: u32 = std::env::var("SLUICE_TEST_VERSIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let (_tmp, dir) = temp_state("linear");
    let state = open(&dir).unwrap();
    let first = std::fs::metadata(audit_path(&dir)).unwrap().len();
    for n in 0..versions {
        let prompt = format!("{n} {}", "You answer support questions. ".repeat(70));
        assert!(prompt.len() >= 2000);
        add_version(&state, 100 + n, &prompt).unwrap();
    }
    let grown = std::fs::metadata(audit_path(&dir)).unwrap().len() - first;
    eprintln!("{versions} versions: the audit log grew by {grown} bytes");
    assert!(grown < u64::from(versions) * 4096, "{grown} bytes: not linear in the versions");
    assert_eq!(kill(&state, false, "incident").unwrap(), u64::from(versions) + 2);
    drop(state);

    let state = open(&dir).unwrap();
    let page = state.audit(&AuditQuery { limit: 50, ..AuditQuery::default() }).unwrap();
    assert_eq!(page.entries.len(), 50);
    assert_eq!(page.next, Some(page.entries[49].revision));
    let count = state.current().docs.ai_configs[FLAG]["versions"].as_array().unwrap().len();
    assert_eq!(count, versions as usize + 2);
    // Rollbacks still find a flag's past document across the patched entries.
    state.apply(Change::Rollback { flag: FLAG.into(), revision: 1 }, &req("undo")).unwrap();
    assert_eq!(state.current().docs.flags[FLAG].get("on"), None);
    drop(state);
}

#[test]
fn a_rollback_to_a_revision_that_does_not_exist_is_not_found() {
    let (_tmp, dir) = temp_state("future");
    let state = open(&dir).unwrap();
    let err = state.apply(Change::Rollback { flag: FLAG.into(), revision: 99999 }, &req("undo")).unwrap_err();
    assert!(matches!(err, ChangeError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("no revision 99999"), "{err}");
    drop(state);
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_full_disk_refuses_the_change_and_leaves_the_log_whole() {
    let (_tmp, mount) = temp_state("tmpfs");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mount)
        .output()
        .map(|o| o.status.success());
    if mounted.as_ref().map_or(true, |ok| !ok) {
        skipped(
            "a_full_disk_refuses_the_change_and_leaves_the_log_whole",
            &format!(
                "cannot mount a tmpfs here ({mounted:?}): it needs root; run as root to test it (the fault-injected \
                 tests cover the path)"
            ),
        );
        return;
    }
    let _unmount = Tmpfs(mount.clone());
    let dir = mount.join("state");
    let state = open(&dir).unwrap();
    // Fill the disk, leaving a little room.
    let room = 48 * 1024;
    let free = {
        let out = Command::new("df").args(["-B1", "--output=avail"]).arg(&mount).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse::<usize>().unwrap()
    };
    std::fs::write(mount.join("filler"), vec![0u8; free.saturating_sub(room)]).unwrap();
    let mut acknowledged = 1;
    let mut refused = 0;
    for n in 0..40u32 {
        match add_version(&state, 100 + n, &"é".repeat(3000)) {
            Ok(r) => acknowledged = r,
            Err(ChangeError::Store(_)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
        assert_eq!(state.revision(), acknowledged);
    }
    assert!(refused > 0, "the disk filled up");
    let log = std::fs::read(audit_path(&dir)).unwrap();
    assert_eq!(log.last(), Some(&b'\n'), "no torn line left behind");
    std::fs::remove_file(mount.join("filler")).unwrap();
    let after = kill(&state, false, "after free").unwrap();
    assert_eq!(after, acknowledged + 1);
    drop(state);
    let state = open(&dir).unwrap();
    assert_eq!(state.revision(), after);
    assert_eq!(revisions(&state), (1..=after).collect::<Vec<_>>());
    drop(state);
}

#[test]
fn a_log_removed_under_a_running_store_is_never_padded_and_the_store_stops() {
    let (_tmp, dir) = temp_state("removed");
    let state = open(&dir).unwrap();
    assert_eq!(kill(&state, false, "before").unwrap(), 2);
    std::fs::remove_file(audit_path(&dir)).unwrap();
    assert!(matches!(kill(&state, true, "after"), Err(ChangeError::Store(_))));
    assert!(kill(&state, true, "again").unwrap_err().to_string().contains("refuses changes"));
    let log = std::fs::read(audit_path(&dir)).unwrap_or_default();
    assert!(!log.contains(&0), "no gap of zeros: {} bytes", log.len());
    assert_eq!(state.revision(), 2);
    drop(state);
}

#[test]
fn start_up_accepts_exactly_the_tails_a_crash_leaves() {
    let (_tmp, dir) = temp_state("tails");
    let state = open(&dir).unwrap();
    assert_eq!(kill(&state, false, "a").unwrap(), 2);
    drop(state);
    let log = std::fs::read(audit_path(&dir)).unwrap();
    let first_line = log.iter().position(|b| *b == b'\n').unwrap() + 1;

    // A complete last line that does not parse, after the stored revision: cut.
    let mut garbage = log.clone();
    garbage.extend_from_slice(b"\0\0\0{\"revision\n");
    std::fs::write(audit_path(&dir), &garbage).unwrap();
    assert_eq!(open(&dir).unwrap().revision(), 2);
    assert_eq!(std::fs::read(audit_path(&dir)).unwrap(), log);

    // The same line where the stored revision's own entry should be: refused.
    let mut damaged = log[..first_line].to_vec();
    damaged.extend_from_slice(b"{\"revision\":2,\n");
    std::fs::write(audit_path(&dir), &damaged).unwrap();
    let err = open(&dir).expect_err("refused");
    assert!(err.contains("audit.jsonl:2:"), "{err}");

    // A log behind state.json: refused, not truncated further.
    std::fs::write(audit_path(&dir), &log[..first_line]).unwrap();
    let err = open(&dir).expect_err("refused");
    assert!(err.contains("ends at revision 1, before") && err.contains("revision 2"), "{err}");
    assert_eq!(std::fs::read(audit_path(&dir)).unwrap(), &log[..first_line]);

    // An empty log under state.json: refused (only a missing one means "moved aside").
    std::fs::write(audit_path(&dir), b"").unwrap();
    let err = open(&dir).expect_err("refused");
    assert!(err.contains("audit.jsonl is empty but") && err.contains("at revision 2"), "{err}");
    std::fs::remove_file(audit_path(&dir)).unwrap();
    let state = open(&dir).unwrap();
    assert_eq!(state.revision(), 2, "a log moved aside starts again");
    assert_eq!(kill(&state, true, "new log").unwrap(), 3);
    assert_eq!(revisions(&state), [3]);
    let err = state.apply(Change::Rollback { flag: FLAG.into(), revision: 2 }, &req("undo")).unwrap_err();
    assert!(err.to_string().contains("revision 2 is not in the audit log (it begins after it)"), "{err}");
    drop(state);
    std::fs::write(audit_path(&dir), &log[..first_line]).unwrap();

    // No state.json and only the first entry: the first commit crashed; start afresh.
    std::fs::remove_file(dir.join("state.json")).unwrap();
    let state = open(&dir).unwrap();
    assert_eq!(state.revision(), 1);
    assert_eq!(revisions(&state), [1]);
    drop(state);
}

#[test]
fn recover_replays_no_unacknowledged_tail_and_never_overwrites_a_backup() {
    let (_tmp, dir) = temp_state("recover-tail");
    let state = open(&dir).unwrap();
    assert_eq!(kill(&state, false, "acknowledged").unwrap(), 2);
    let state_json = std::fs::read(dir.join("state.json")).unwrap();
    assert_eq!(kill(&state, true, "never acknowledged").unwrap(), 3);
    drop(state);
    // The crash between the two writes of revision 3: its entry got no answer.
    std::fs::write(dir.join("state.json"), &state_json).unwrap();

    let (ok, out) = sluice_state(&dir, &["recover"]);
    assert!(ok && out.contains("at revision 2") && out.contains("is in state.json.bak"), "{out}");
    assert!(String::from_utf8_lossy(&bak(&dir)).contains("never acknowledged"), "the tail is in the backup");
    let first_backup = std::fs::read(dir.join("state.json.bak")).unwrap();
    assert_eq!(first_backup, state_json);
    let state = open(&dir).unwrap();
    assert_eq!(state.revision(), 2);
    assert_eq!(state.current().docs.flags[FLAG]["on"], false, "the refused restore is not in effect");
    assert_eq!(revisions(&state), [1, 2]);
    drop(state);

    // A second recover keeps the first backup and makes a new one.
    let (ok, out) = sluice_state(&dir, &["recover"]);
    assert!(ok && out.contains("is in state.json.bak.2"), "{out}");
    assert_eq!(std::fs::read(dir.join("state.json.bak")).unwrap(), first_backup, "never overwritten");
    assert!(dir.join("state.json.bak.2").exists());
}

#[test]
fn recover_refuses_a_log_behind_the_state_file() {
    let (_tmp, dir) = temp_state("recover-behind");
    let state = open(&dir).unwrap();
    history(&state);
    drop(state);
    let log = std::fs::read(audit_path(&dir)).unwrap();
    let lines: Vec<&[u8]> = log.split_inclusive(|b| *b == b'\n').collect();
    std::fs::write(audit_path(&dir), lines[..3].concat()).unwrap();
    let state_json = std::fs::read(dir.join("state.json")).unwrap();

    let (ok, out) = sluice_state(&dir, &["recover"]);
    assert!(!ok, "{out}");
    assert!(out.contains("is at revision 5") && out.contains("rebuilds only revision 3"), "{out}");
    assert_eq!(std::fs::read(dir.join("state.json")).unwrap(), state_json, "nothing changed");
    assert!(!dir.join("state.json.bak").exists(), "no backup made");
}

#[test]
fn a_gap_in_the_revisions_stops_start_up() {
    let (_tmp, dir) = temp_state("gap");
    let state = open(&dir).unwrap();
    history(&state);
    drop(state);
    let log = std::fs::read(audit_path(&dir)).unwrap();
    let lines: Vec<&[u8]> = log.split_inclusive(|b| *b == b'\n').collect();
    let without_3 = [lines[..2].concat(), lines[3..].concat()].concat();
    std::fs::write(audit_path(&dir), &without_3).unwrap();
    let err = open(&dir).expect_err("refused");
    assert!(err.contains("audit.jsonl:3: revision 4 follows revision 2"), "{err}");
    assert!(err.contains("missing from the log"), "{err}");
    assert_eq!(std::fs::read(audit_path(&dir)).unwrap(), without_3, "nothing deleted");

    // Where a gap sits just before the entry beyond state.json, it is refused too: the
    // line cut must follow state.json's own entry.
    let state_at_4 = {
        let text = String::from_utf8(std::fs::read(dir.join("state.json")).unwrap()).unwrap();
        must_replacen(&text, "\"revision\":5", "\"revision\":4", 1)
    };
    std::fs::write(dir.join("state.json"), state_at_4).unwrap();
    let gapped_tail = [lines[..2].concat(), lines[4].to_vec()].concat();
    std::fs::write(audit_path(&dir), &gapped_tail).unwrap();
    let err = open(&dir).expect_err("refused");
    assert!(err.contains("revision 5 follows revision 2"), "{err}");
    assert_eq!(std::fs::read(audit_path(&dir)).unwrap(), gapped_tail);
}

#[test]
fn an_entry_longer_than_an_audit_line_may_be_is_refused_before_anything_is_written() {
    use sluice::state::Store;
    let (_tmp, dir) = temp_state("too-long");
    let state = open(&dir).unwrap();
    let stored = state.current();
    drop(state);
    let log = std::fs::read(audit_path(&dir)).unwrap();
    let store = open_store(&dir, Arc::default()).unwrap();
    let entry = AuditEntry {
        revision: stored.revision + 1,
        time: "2026-12-01T00:00:00.000Z".into(),
        actor: "ops".into(),
        reason: "x".repeat(16 * 1024 * 1024),
        changes: Vec::new(),
        file_objects: None,
        dropped: false,
    };
    let err = store.commit(&entry, &stored, &stored, None).unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    assert_eq!(std::fs::read(audit_path(&dir)).unwrap(), log, "nothing appended");
    drop(store);
}

#[test]
fn a_line_that_is_json_but_not_an_entry_stops_start_up_and_a_later_one_is_not_blamed_on_a_guess() {
    let (_tmp, dir) = temp_state("not-an-entry");
    let state = open(&dir).unwrap();
    history(&state);
    drop(state);
    let good = String::from_utf8(std::fs::read(audit_path(&dir)).unwrap()).unwrap();
    // Line 3 keeps its revision and stays JSON, but loses its actor: start-up reads every
    // field, as the audit API does, so it is named now, not when someone reads the audit.
    let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
    lines[2] = must_replace(&lines[2], "\"actor\":\"ops\"", "\"who\":\"ops\"");
    let damaged = lines.join("\n") + "\n";
    std::fs::write(audit_path(&dir), &damaged).unwrap();
    let err = open(&dir).expect_err("refused");
    assert!(err.contains("audit.jsonl:3: the audit entry is damaged") && err.contains("--drop-line 3"), "{err}");
    // It does not parse as an entry, so repair takes it without --force.
    let (ok, out) = sluice_state(&dir, &["repair", "--drop-line", "3"]);
    assert!(ok, "{out}");
    let state = open(&dir).unwrap();
    assert_eq!(revisions(&state), [1, 2, 3, 4, 5]);

    // A line damaged while sluice runs is found by the audit read, which cannot know its
    // number: it names the byte and sends the operator to start-up, never to a line
    // counted from the end.
    let text = std::fs::read_to_string(audit_path(&dir)).unwrap();
    let offset = text.match_indices('\n').nth(3).unwrap().0 + 1;
    // Same length: the running store reads the bytes it wrote.
    std::fs::write(audit_path(&dir), must_replacen(&text, "\"reason\":\"fixed\"", "\"reason\":1234567", 1)).unwrap();
    let err = state.audit(&AuditQuery { limit: 1000, ..AuditQuery::default() }).unwrap_err().to_string();
    assert!(err.contains(&format!("the audit entry at byte {offset} is damaged")), "{err}");
    assert!(err.contains("Restart sluice") && !err.contains("--drop-line"), "{err}");
    drop(state);
    let err = open(&dir).expect_err("refused");
    assert!(err.contains("audit.jsonl:5: the audit entry is damaged"), "{err}");
}

/// A store whose commits wait until the test lets them finish (a slow fsync, or a round
/// trip to a slow Redis).
struct SlowStore {
    inner: sluice::state::MemoryStore,
    entered: std::sync::mpsc::SyncSender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl sluice::state::Store for SlowStore {
    fn load(&self) -> Result<Option<sluice::state::Stored>, StoreError> {
        self.inner.load()
    }
    fn commit(
        &self,
        entry: &AuditEntry,
        prev: &sluice::state::Stored,
        state: &sluice::state::Stored,
        fence: Option<u64>,
    ) -> Result<(), StoreError> {
        if entry.revision > 1 {
            self.entered.send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
        }
        self.inner.commit(entry, prev, state, fence)
    }
    fn kind(&self) -> &'static str {
        "slow"
    }
    fn audit_back(
        &self,
        before: Option<u64>,
        wanted: &dyn Fn(&sluice::state::EntryHead) -> bool,
        visit: &mut dyn FnMut(AuditEntry) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.audit_back(before, wanted, visit)
    }
}

/// While a change waits on its store's commit, readers of the state — the admin API's
/// GETs, the console's polling, the fleet's thread — are answered at once with the
/// revision served; the change shows when its commit is done. (They used to wait for the
/// commit, on the admin plane's event loop.)
#[test]
fn readers_do_not_wait_for_a_slow_commit() {
    let (entered_tx, entered) = std::sync::mpsc::sync_channel(1);
    let (release, release_rx) = std::sync::mpsc::channel();
    let store =
        SlowStore { inner: sluice::state::MemoryStore::default(), entered: entered_tx, release: release_rx.into() };
    let text = std::fs::read_to_string(CONFIG).unwrap();
    let env = |name: &str| (name == "SLUICE_STATE_DIR").then(|| "/nonexistent".to_string());
    let mut loaded = sluice::config::parse(&text, CONFIG, &env).unwrap();
    let metrics = Arc::new(sluice::metrics::Metrics::new().unwrap());
    let targeting = std::mem::take(&mut loaded.targeting);
    let snapshot = sluice::snapshot::Snapshot::build(&loaded.config, targeting, &metrics, None).unwrap();
    let state = Arc::new(State::open(Box::new(store), loaded.value, CONFIG, snapshot, metrics).unwrap());
    assert_eq!(state.revision(), 1);

    let writer = {
        let state = Arc::clone(&state);
        std::thread::spawn(move || kill(&state, false, "while the disk is slow"))
    };
    entered.recv().unwrap(); // the change is in its commit, holding the writer's lock
    let (read_tx, read) = std::sync::mpsc::channel();
    let reader = {
        let state = Arc::clone(&state);
        std::thread::spawn(move || read_tx.send((state.revision(), state.current().revision, state.flag_keys())))
    };
    // A bound that only stops a hang: the reader answers at once, or not until the commit.
    let (revision, current, flags) =
        read.recv_timeout(std::time::Duration::from_secs(30)).expect("a reader waited for the commit");
    assert_eq!((revision, current), (1, 1), "the revision served until the commit is done");
    assert!(flags.contains(&FLAG.to_string()));
    release.send(()).unwrap();
    assert_eq!(writer.join().unwrap().unwrap(), 2);
    reader.join().unwrap().unwrap();
    assert_eq!((state.revision(), state.current().revision), (2, 2), "the change shows once committed");
}
