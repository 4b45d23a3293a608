//! `sluice store seed|export|import|status`: the operations of a store — seeding a fleet
//! store (after Redis lost its data, or to start a fleet from a backup), backups and
//! moves between the file and Redis stores as JSON, and a look at what a store holds.
//! Each checks what it writes with the config file, as start-up would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::config::{self, StoreKind};
use crate::fleet::store::{read_copy, Export};
use crate::fleet::{Link, Redis, RedisStore};
use crate::server;
use crate::state::{self, AuditEntry, FileStore, MemoryStore, State, Store, Stored};

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Seed an empty fleet store (Redis lost its data, or a new fleet): from `--from` (an
    /// export, or a local copy `fleet-copy.json`), else from this instance's local copy in
    /// `state.dir`, else from the config file. Writes a new epoch: every instance follows
    /// it. A store that holds data is left alone unless `--force`.
    Seed {
        #[arg(long, short, env = "SLUICE_CONFIG", default_value = "config/sluice.yaml")]
        config: PathBuf,
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
        /// Replace the data the store holds — its audit log included (`export` it first).
        #[arg(long)]
        force: bool,
    },
    /// Write the store's state and whole audit log as JSON (a file store: only while no
    /// sluice serves from its directory).
    Export {
        #[arg(long, short, env = "SLUICE_CONFIG", default_value = "config/sluice.yaml")]
        config: PathBuf,
        /// Where (default: standard output).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Load an export into the configured store: an empty Redis (or any with `--force`),
    /// or an empty state directory.
    Import {
        #[arg(long, short, env = "SLUICE_CONFIG", default_value = "config/sluice.yaml")]
        config: PathBuf,
        file: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// What the store holds: its kind, revision, and for Redis the epoch, the lease and the
    /// instances seen recently.
    Status {
        #[arg(long, short, env = "SLUICE_CONFIG", default_value = "config/sluice.yaml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: StoreArgs) -> ExitCode {
    let result = match args.command {
        StoreCommand::Seed { config, from, force } => seed(&config, from.as_deref(), force),
        StoreCommand::Export { config, out } => export(&config, out.as_deref()),
        StoreCommand::Import { config, file, force } => import(&config, &file, force),
        StoreCommand::Status { config, json } => status(&config, json),
    };
    match result {
        Ok(message) => {
            if !message.is_empty() {
                println!("{message}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice store: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The config file, checked.
fn load(path: &Path) -> Result<config::Loaded, String> {
    config::load_file(path).map_err(|e| e.to_string())
}

/// The fleet store of the config (its `state.dir` is not locked: a sluice may serve from it).
fn redis_of(loaded: &config::Loaded) -> Result<Option<RedisStore>, String> {
    if loaded.config.state.kind() != StoreKind::Redis {
        return Ok(None);
    }
    let Some(r) = &loaded.config.state.redis else { return Err("`store: redis` needs `state.redis`".into()) };
    let redis = Redis::new(r)?;
    RedisStore::open(redis, Link::new(), None).map(Some).map_err(|e| e.to_string())
}

/// Whether `stored` builds with this config file, as start-up would build it.
fn check(loaded: config::Loaded, stored: &Stored) -> Result<(), String> {
    let (value, file, snapshot, metrics) = server::prepare(loaded).map_err(|e| e.to_string())?.into_parts();
    let store = Box::new(MemoryStore::with(stored.clone()));
    State::open(store, value, &file, snapshot, metrics).map(|_| ()).map_err(|e| e.to_string())
}

/// The config file's documents as a first start stores them (revision 1).
fn from_file(loaded: config::Loaded) -> Result<Stored, String> {
    let (value, file, snapshot, metrics) = server::prepare(loaded).map_err(|e| e.to_string())?.into_parts();
    let state =
        State::open(Box::new(MemoryStore::default()), value, &file, snapshot, metrics).map_err(|e| e.to_string())?;
    Ok(Stored::clone(&state.current()))
}

/// An export or a local copy.
fn read_source(path: &Path) -> Result<(Stored, Option<Vec<AuditEntry>>), String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if value.get("audit").is_some() {
        let export: Export = serde_json::from_value(value).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok((export.stored, Some(export.audit)));
    }
    let copy: crate::fleet::store::Copy =
        serde_json::from_value(value).map_err(|e| format!("{}: not an export or a local copy: {e}", path.display()))?;
    Ok((copy.stored, None))
}

fn seed(path: &Path, from: Option<&Path>, force: bool) -> Result<String, String> {
    let loaded = load(path)?;
    let Some(store) = redis_of(&loaded)? else {
        return Err(format!(
            "{}: `state.store` is not `redis`: a file store is seeded by its config file",
            loaded.file
        ));
    };
    let dir = loaded.config.state.dir.clone();
    let (stored, audit, source, fresh) = match from {
        Some(file) => {
            let (stored, audit) = read_source(file)?;
            (stored, audit, file.display().to_string(), false)
        }
        None => match dir.as_deref().and_then(read_copy) {
            Some(copy) => {
                (copy.stored, None, format!("the local copy in {}", dir.unwrap_or_default().display()), false)
            }
            None => (from_file(load(path)?)?, None, loaded.file.clone(), true),
        },
    };
    check(loaded, &stored)?;
    match audit {
        // An export: its revisions and audit log as they were.
        Some(entries) => {
            store.put_audit(&entries).map_err(|e| e.to_string())?;
            let epoch = store.seed(&stored, None, force).map_err(|e| e.to_string())?;
            Ok(format!("seeded {} at revision {} (epoch {epoch}) from {source}", store.redis.shown, stored.revision))
        }
        // A copy or the file: one more revision, which says so.
        None => {
            // The file's documents are its revision 1; a copy's state moves on by one.
            let revision = if fresh { 1 } else { stored.revision + 1 };
            let mut next = stored;
            next.revision = revision;
            let entry = AuditEntry {
                revision,
                time: state::now(),
                actor: "seed".into(),
                reason: if fresh {
                    format!("seeded from {source}")
                } else {
                    format!("seeded from {source} (revision {})", revision - 1)
                },
                changes: Vec::new(),
                file_objects: None,
                dropped: false,
            };
            let epoch = store.seed(&next, Some(&entry), force).map_err(|e| e.to_string())?;
            Ok(format!("seeded {} at revision {revision} (epoch {epoch}) from {source}", store.redis.shown))
        }
    }
}

fn export(path: &Path, out: Option<&Path>) -> Result<String, String> {
    let loaded = load(path)?;
    let export = match redis_of(&loaded)? {
        Some(store) => store.export().map_err(|e| e.to_string())?,
        None => {
            let Some(dir) = &loaded.config.state.dir else {
                return Err(format!("{}: no `state.dir` and no Redis: nothing to export", loaded.file));
            };
            let store = FileStore::open(dir).map_err(|e| e.to_string())?;
            let stored = store.load().map_err(|e| e.to_string())?.unwrap_or_else(Stored::empty);
            let mut audit = Vec::new();
            store
                .audit_back(None, &|_| true, &mut |e| {
                    audit.push(e);
                    true
                })
                .map_err(|e| e.to_string())?;
            audit.reverse();
            Export { revision: stored.revision, stored, audit }
        }
    };
    let bytes = serde_json::to_vec_pretty(&export).map_err(|e| e.to_string())?;
    match out {
        Some(file) => {
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, &bytes)
                .and_then(|()| std::fs::rename(&tmp, file))
                .map_err(|e| format!("{}: {e}", file.display()))?;
            Ok(format!(
                "exported revision {} ({} audit entries) to {}",
                export.revision,
                export.audit.len(),
                file.display()
            ))
        }
        None => {
            std::io::stdout().write_all(&bytes).map_err(|e| e.to_string())?;
            Ok(String::new())
        }
    }
}

fn import(path: &Path, file: &Path, force: bool) -> Result<String, String> {
    let loaded = load(path)?;
    let (stored, audit) = read_source(file)?;
    let audit = audit.ok_or_else(|| format!("{}: not an export (no audit log)", file.display()))?;
    let redis = redis_of(&loaded)?;
    let dir = loaded.config.state.dir.clone();
    check(loaded, &stored)?;
    match redis {
        Some(store) => {
            store.put_audit(&audit).map_err(|e| e.to_string())?;
            let epoch = store.seed(&stored, None, force).map_err(|e| e.to_string())?;
            Ok(format!("imported revision {} into {} (epoch {epoch})", stored.revision, store.redis.shown))
        }
        None => {
            let dir = dir.ok_or("no `state.dir` and no Redis: nowhere to import into")?;
            state::import_dir(&dir, &stored, &audit).map_err(|e| e.to_string())?;
            Ok(format!("imported revision {} into {}", stored.revision, dir.display()))
        }
    }
}

fn status(path: &Path, json: bool) -> Result<String, String> {
    let loaded = load(path)?;
    let value = match redis_of(&loaded)? {
        Some(store) => {
            let k = &store.redis.keys;
            let (epoch, rev, lost, log, audit, fence): (
                Option<String>,
                Option<u64>,
                Option<String>,
                u64,
                u64,
                Option<u64>,
            ) = store
                .with(|c| {
                    redis::pipe()
                        .get(k.epoch())
                        .get(k.rev())
                        .get(k.lost())
                        .cmd("XLEN")
                        .arg(k.log())
                        .cmd("XLEN")
                        .arg(k.audit())
                        .get(k.fence())
                        .query(c)
                })
                .map_err(|e| e.to_string())?;
            let leader: Option<String> =
                store.with(|c| redis::cmd("GET").arg(k.leader()).query(c)).map_err(|e| e.to_string())?;
            let instances = store.heartbeat_read(crate::fleet::tail::RECENT).map_err(|e| e.to_string())?;
            serde_json::json!({
                "kind": "redis",
                "redis": store.redis.shown,
                "epoch": epoch,
                "revision": rev.unwrap_or(0),
                "lost": lost,
                "log_entries": log,
                "audit_entries": audit,
                "leader": leader,
                "fence": fence,
                "instances": instances.iter().map(|(n, r, ago)| serde_json::json!({"name": n, "revision": r, "seen_seconds_ago": ago})).collect::<Vec<_>>(),
            })
        }
        None => {
            let kind = loaded.config.state.kind();
            let revision = match &loaded.config.state.dir {
                Some(dir) => state::read_state_revision(dir).map_err(|e| e.to_string())?,
                None => None,
            };
            serde_json::json!({"kind": if kind == StoreKind::File { "file" } else { "memory" }, "dir": loaded.config.state.dir, "revision": revision})
        }
    };
    if json {
        return Ok(value.to_string());
    }
    let mut lines = Vec::new();
    if let Some(obj) = value.as_object() {
        for (k, v) in obj {
            match v {
                serde_json::Value::Array(items) => {
                    lines.push(format!("{k}:"));
                    for i in items {
                        lines.push(format!("  {i}"));
                    }
                }
                serde_json::Value::String(s) => lines.push(format!("{k}: {s}")),
                other => lines.push(format!("{k}: {other}")),
            }
        }
    }
    Ok(lines.join("\n"))
}
