//! Reloading the config file of `sluice serve`: on SIGHUP, and with `--watch` when the
//! file's content changes. File events are debounced (an editor's several writes make one
//! reload); access events (opening or reading the file, as every reload does) are
//! ignored, and a reload happens only when the bytes differ from those last loaded — so
//! one change makes one reload, and a broken file one error, not a stream of them.
//! SIGHUP always reloads. Each reload runs on the blocking pool (it reads the file and
//! fsyncs the state).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::{self, ConfigError};
use crate::server;
use crate::state::State;

/// How long the file must be quiet before a change is reloaded.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// What the config file held when it was last read: its SHA-256, or why it could not
/// be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Result<[u8; 32], String>);

impl Fingerprint {
    pub fn of(read: &Result<String, ConfigError>) -> Fingerprint {
        Fingerprint(match read {
            Ok(text) => Ok(Sha256::digest(text.as_bytes()).into()),
            Err(e) => Err(e.to_string()),
        })
    }
}

/// Reload on SIGHUP and, with `watch`, when the content of `path` changes from `loaded`
/// (what the gateway started with); runs until aborted.
pub async fn run(state: Arc<State>, path: PathBuf, watch: bool, loaded: Fingerprint) {
    // Capacity 1 each: signals that pile up during a reload make one more.
    let (hup_tx, mut hup) = mpsc::channel::<()>(1);
    let (file_tx, mut file) = mpsc::channel::<()>(1);
    spawn_sighup(hup_tx);
    // Kept alive for as long as the loop runs: dropping it stops the watching.
    let _watcher = if watch { watch_file(&path, file_tx) } else { None };
    let mut last = loaded;
    loop {
        let forced = tokio::select! {
            Some(()) = hup.recv() => true,
            Some(()) = file.recv() => {
                // Debounce: wait until the file has been quiet for a while.
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, file.recv()).await {}
                false
            }
            else => return,
        };
        let (s, p, seen) = (Arc::clone(&state), path.clone(), last.clone());
        if let Ok(now) = tokio::task::spawn_blocking(move || reload(&s, &p, forced, seen)).await {
            last = now;
        }
    }
}

/// Read the file and, if `forced` or its content is not `last`, apply it; returns what
/// was read.
fn reload(state: &State, path: &Path, forced: bool, last: Fingerprint) -> Fingerprint {
    let text = config::read_file(path);
    let now = Fingerprint::of(&text);
    if !forced && now == last {
        return now;
    }
    let why = if forced { "SIGHUP" } else { "the file changed" };
    tracing::info!(file = %path.display(), why, "reloading the config file");
    server::reload_file(state, path, text);
    now
}

#[cfg(unix)]
fn spawn_sighup(tx: mpsc::Sender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let _ = tx.try_send(());
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP: reload by SIGHUP is off"),
    }
}

#[cfg(not(unix))]
fn spawn_sighup(_tx: mpsc::Sender<()>) {}

/// Watch the file's directory (editors often replace a file rather than write it) and
/// signal when an event other than an access names the file.
fn watch_file(path: &Path, tx: mpsc::Sender<()>) -> Option<notify_debouncer_mini::notify::RecommendedWatcher> {
    use notify_debouncer_mini::notify::{self, EventKind, RecursiveMode, Watcher};
    let file = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let name = file.file_name().map(std::ffi::OsStr::to_os_string);
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let names_file = event.paths.iter().any(|p| p.file_name() == name.as_deref());
        if names_file && !matches!(event.kind, EventKind::Access(_)) {
            let _ = tx.try_send(());
        }
    };
    let watching = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match watching {
        Ok(w) => {
            tracing::info!(file = %file.display(), "watching the config file");
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the config file; SIGHUP still reloads it");
            None
        }
    }
}
