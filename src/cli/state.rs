//! `sluice state recover|repair`: explicit repairs of a state directory, for when
//! `sluice serve` refuses to start and says which one to run. Each holds the directory's
//! lock (so it refuses to run beside a serving sluice) and keeps what it replaces in a
//! `.bak` file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::state::{self, MemoryStore, State};
use crate::{config, server};

#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(subcommand)]
    command: StateCommand,
}

#[derive(Debug, Subcommand)]
enum StateCommand {
    /// Rebuild `state.json` from the audit log (when it is missing, or older than the log),
    /// check it with the config file as start-up would, and replace it atomically (the old
    /// one is kept as `state.json.bak`, or `state.json.bak.N` when that exists). A last
    /// entry one beyond a readable `state.json` was never acknowledged and is not replayed;
    /// a log behind `state.json` is refused.
    Recover {
        /// The config file (its `state.dir` is the directory repaired).
        #[arg(long, short, env = "SLUICE_CONFIG", default_value = "config/sluice.yaml")]
        config: PathBuf,
    },
    /// Move one damaged line of the audit log to `audit.jsonl.bak` (start-up names it),
    /// leaving an entry of its revision that records it was dropped.
    Repair {
        #[arg(long, short, env = "SLUICE_CONFIG", default_value = "config/sluice.yaml")]
        config: PathBuf,
        /// The line's number (1-based), as start-up's error gives it.
        #[arg(long)]
        drop_line: u64,
        /// Drop the line even though it is a complete entry.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(args: StateArgs) -> ExitCode {
    let result = match args.command {
        StateCommand::Recover { config } => recover(&config),
        StateCommand::Repair { config, drop_line, force } => repair(&config, drop_line, force),
    };
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice state: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The config file, and its state directory.
fn load(path: &Path) -> Result<(server::Prepared, PathBuf), String> {
    let loaded = config::load_file(path).map_err(|e| e.to_string())?;
    let dir =
        loaded.config.state.dir.clone().ok_or_else(|| format!("{}: no `state.dir`: nothing to repair", loaded.file))?;
    Ok((server::prepare(loaded).map_err(|e| e.to_string())?, dir))
}

fn recover(path: &Path) -> Result<String, String> {
    let (prepared, dir) = load(path)?;
    let (value, file, snapshot, metrics) = prepared.into_parts();
    // What start-up will do with the rebuilt state, on a memory store.
    let check = |stored: &state::Stored| {
        let store = Box::new(MemoryStore::with(stored.clone()));
        State::open(store, value, &file, snapshot, metrics).map(|_| ()).map_err(|e| e.to_string())
    };
    let done = state::recover(&dir, check).map_err(|e| e.to_string())?;
    let mut message = format!("{}: state.json rebuilt from the audit log at revision {}", dir.display(), done.revision);
    if let Some((old, backup)) = done.replaced {
        let name = Path::new(&backup).file_name().map_or(backup.clone(), |n| n.to_string_lossy().into_owned());
        message.push_str(&format!(" (the state file it replaced, {old}, is in {name})"));
    }
    if done.cut > 0 {
        message.push_str(&format!("; {} bytes of an unacknowledged last line moved to audit.jsonl.bak", done.cut));
    }
    Ok(message)
}

fn repair(path: &Path, line: u64, force: bool) -> Result<String, String> {
    let (_, dir) = load(path)?;
    let done = state::repair_drop_line(&dir, line, force).map_err(|e| e.to_string())?;
    Ok(format!(
        "{}: line {line} of audit.jsonl ({} bytes) moved to audit.jsonl.bak; an entry saying revision {} was dropped takes its place",
        dir.display(),
        done.bytes,
        done.revision
    ))
}
