//! Reloading the config file of `sluice serve`: on SIGHUP, and with `--watch` when the
//! file changes (notify's debouncer, so that an editor's several writes make one reload).
//! Each reload runs on the blocking pool (it reads the file and fsyncs the state).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::server;
use crate::state::State;

/// How long the file must be quiet before a change is reloaded.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Reload on SIGHUP and, with `watch`, on changes to `path`; runs until aborted.
pub async fn run(state: Arc<State>, path: PathBuf, watch: bool) {
    // A reload request; capacity 1, so requests that pile up during a reload make one more.
    let (tx, mut rx) = mpsc::channel::<&'static str>(1);
    spawn_sighup(tx.clone());
    // Kept alive for as long as the loop runs: dropping it stops the watching.
    let _watcher = if watch { watch_file(&path, tx) } else { None };
    while let Some(why) = rx.recv().await {
        tracing::info!(file = %path.display(), why, "reloading the config file");
        let (s, p) = (Arc::clone(&state), path.clone());
        let _ = tokio::task::spawn_blocking(move || server::reload_file(&s, &p)).await;
    }
}

#[cfg(unix)]
fn spawn_sighup(tx: mpsc::Sender<&'static str>) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let _ = tx.try_send("SIGHUP");
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP: reload by SIGHUP is off"),
    }
}

#[cfg(not(unix))]
fn spawn_sighup(_tx: mpsc::Sender<&'static str>) {}

/// Watch the file's directory (editors often replace a file rather than write it) and
/// ask for a reload when an event names the file.
fn watch_file(
    path: &std::path::Path,
    tx: mpsc::Sender<&'static str>,
) -> Option<notify_debouncer_mini::Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>> {
    use notify_debouncer_mini::notify::RecursiveMode;
    let file = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = file.parent().map(std::path::Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let name = file.file_name().map(std::ffi::OsStr::to_os_string);
    let handler = move |events: notify_debouncer_mini::DebounceEventResult| {
        if let Ok(events) = events {
            if events.iter().any(|e| e.path.file_name() == name.as_deref()) {
                let _ = tx.try_send("the file changed");
            }
        }
    };
    match notify_debouncer_mini::new_debouncer(DEBOUNCE, handler) {
        Ok(mut debouncer) => match debouncer.watcher().watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                tracing::info!(file = %file.display(), "watching the config file");
                Some(debouncer)
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the config file; SIGHUP still reloads it");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; SIGHUP still reloads it");
            None
        }
    }
}
