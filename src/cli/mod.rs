//! The `sluice` command line. Each subcommand only wires library pieces together.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ctl;
mod eval;
mod logging;
mod reload;
mod state;
mod store;

pub use logging::init_logging;

use crate::config::{self, LogConfig};
use crate::server;
use sluice_mock as mock;

/// sluice: an OpenAI-compatible LLM gateway for changing prompts and models in
/// production safely.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: the OpenAI-compatible data plane and the admin listener.
    Serve {
        /// The config file.
        #[arg(long, short, env = "SLUICE_CONFIG", default_value = "config/sluice.yaml")]
        config: PathBuf,
        /// Reload the config file when it changes (SIGHUP always reloads it).
        #[arg(long)]
        watch: bool,
        /// Once both listeners are bound, write `{"data": ADDR, "admin": ADDR, "pid": N}`
        /// here (atomically: a temporary file renamed into place); removed on a clean exit.
        /// With port 0 in `listen`, this is how a supervisor or a test learns the ports.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
    },
    /// Validate a config file; prints `file:line:col: message` and exits 1 on error.
    Check {
        /// The config file.
        #[arg(long, short, env = "SLUICE_CONFIG", default_value = "config/sluice.yaml")]
        config: PathBuf,
    },
    /// Evaluate a flag for a context and explain why; `--batch` evaluates JSON lines.
    Eval(eval::EvalArgs),
    /// Run a fast fake provider, OpenAI, Anthropic or Azure OpenAI (for demos, tests and
    /// load tests).
    #[command(after_help = mock::HELP)]
    MockProvider(mock::MockArgs),
    /// Drive the admin API: flags, kill, restore, rollout, promote, point, rollback,
    /// versions, audit, status, guards, guard pause|resume|rearm.
    Ctl(ctl::CtlArgs),
    /// Repair a state directory that `serve` refuses: `recover` rebuilds `state.json` from
    /// the audit log, `repair --drop-line N` moves a damaged log line to its backup.
    State(state::StateArgs),
    /// Operate a store: `seed` an empty fleet store (Redis lost its data), `export` and
    /// `import` it as JSON (backups; moving between the file and Redis stores), `status`.
    Store(store::StoreArgs),
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let command = match cli.command {
        // Evaluation is synchronous: no runtime needed.
        Command::Eval(args) => return eval::run(args),
        Command::Check { config } => return check(&config),
        Command::State(args) => return state::run(args),
        Command::Store(args) => return store::run(args),
        other => other,
    };
    // `serve` runs its data plane on worker threads of its own (see `server::start`); the
    // main runtime only has the admin plane and signals, so one thread is enough.
    let mut builder = match command {
        Command::Serve { .. } | Command::Ctl(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match command {
            Command::Serve { config, watch, ready_file } => serve(&config, watch, ready_file.as_deref()).await,
            Command::MockProvider(args) => {
                init_logging(&LogConfig::default());
                match mock::run(args).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("sluice mock-provider: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Ctl(args) => ctl::run(args).await,
            Command::Check { .. } | Command::Eval(_) | Command::State(_) | Command::Store(_) => ExitCode::FAILURE,
        }
    })
}

async fn serve(path: &std::path::Path, watch: bool, ready_file: Option<&std::path::Path>) -> ExitCode {
    let shutdown = shutdown_signal();
    // A file left by an earlier run must not be taken for this one's.
    if let Some(ready) = ready_file {
        if let Err(e) = remove_if_present(ready) {
            eprintln!("sluice: cannot remove the old ready file {}: {e}", ready.display());
            return ExitCode::FAILURE;
        }
    }
    // The content is kept (as a hash) so that `--watch` reloads only a changed file.
    let text = config::read_file(path);
    let started_with = reload::Fingerprint::of(&text);
    let file = path.display().to_string();
    let prepared =
        match text.and_then(|text| config::parse(&text, &file, &|name| std::env::var(name).ok())).and_then(|loaded| {
            init_logging(&loaded.config.log);
            server::prepare(loaded)
        }) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
    let running = match server::start(prepared).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(ready) = ready_file {
        if let Err(e) = write_ready_file(ready, running.data_addr, running.admin_addr) {
            eprintln!("sluice: cannot write the ready file {}: {e}", ready.display());
            running.shutdown().await;
            return ExitCode::FAILURE;
        }
    }
    let reloads =
        tokio::spawn(reload::run(std::sync::Arc::clone(&running.state), path.to_path_buf(), watch, started_with));
    shutdown.await;
    tracing::info!("shutdown signal received");
    server::exit_after(running.shutdown_grace + server::SHUTDOWN_MARGIN);
    reloads.abort();
    running.shutdown().await;
    if let Some(ready) = ready_file {
        if let Err(e) = remove_if_present(ready) {
            tracing::warn!(path = %ready.display(), error = %e, "cannot remove the ready file");
        }
    }
    ExitCode::SUCCESS
}

/// The ready file's content: the addresses bound (port 0 resolved) and the process id.
fn ready_json(data: std::net::SocketAddr, admin: std::net::SocketAddr, pid: u32) -> String {
    serde_json::json!({"data": data.to_string(), "admin": admin.to_string(), "pid": pid}).to_string()
}

/// Write the ready file atomically: to a temporary file beside it, then renamed over it,
/// so a reader sees either no file or the whole of it.
fn write_ready_file(
    path: &std::path::Path,
    data: std::net::SocketAddr,
    admin: std::net::SocketAddr,
) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = std::fs::write(&tmp, ready_json(data, admin, std::process::id()) + "\n")
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn remove_if_present(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load_file(path) {
        Ok(loaded) => {
            let summary = format!(
                "{}: ok ({} providers, {} clients, {} aliases, {} flags, {} segments)",
                loaded.file,
                loaded.config.providers.len(),
                loaded.config.clients.len(),
                loaded.config.aliases.len(),
                loaded.config.flags.len(),
                loaded.config.segments.len()
            );
            let unpriced = config::signals::unpriced(&loaded.config);
            let unbounded: Vec<String> =
                config::signals::unbounded(&loaded.config).into_iter().map(str::to_string).collect();
            match server::prepare(loaded) {
                Ok(_) => {
                    println!("{summary}");
                    for key in unbounded {
                        eprintln!("warning: metrics.{key} has no `min` and `max`: any value from -1e12 to 1e12 is accepted, and one far off moves its means");
                    }
                    for (provider, model) in unpriced {
                        eprintln!("warning: `pricing:` has no price for {provider}/{model}: its requests count tokens and no cost");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT (Ctrl-C) or SIGTERM.
///
/// The handlers are installed when this is called, not when the future is first polled,
/// so a signal that arrives while the gateway starts is not lost (nor fatal).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (signal(SignalKind::interrupt()).ok(), signal(SignalKind::terminate()).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let (mut int, mut term) = signals;
            let recv = |s: &mut Option<tokio::signal::unix::Signal>| {
                let s = s.take();
                async move {
                    match s {
                        Some(mut s) => {
                            s.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                }
            };
            tokio::select! {
                _ = recv(&mut int) => {},
                _ = recv(&mut term) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_ready_file_is_written_whole_and_names_the_bound_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.json");
        std::fs::write(&path, "stale").unwrap();
        write_ready_file(&path, "127.0.0.1:4100".parse().unwrap(), "127.0.0.1:4101".parse().unwrap()).unwrap();
        let ready: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            ready,
            serde_json::json!({"data": "127.0.0.1:4100", "admin": "127.0.0.1:4101", "pid": std::process::id()})
        );
        // Nothing else is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        remove_if_present(&path).unwrap();
        remove_if_present(&path).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn cli_flags_and_help() {
        let cli = Cli::try_parse_from([
            "sluice",
            "mock-provider",
            "--kind",
            "anthropic",
            "--reject-stream-options",
            "--omit-tool-call-index",
        ])
        .unwrap();
        let Command::MockProvider(args) = cli.command else { panic!("not mock-provider") };
        let settings = args.settings();
        assert_eq!(settings.kind, sluice_mock::MockKind::Anthropic);
        assert!(settings.reject_stream_options && settings.omit_tool_call_index);

        let cli = Cli::try_parse_from(["sluice", "mock-provider"]).unwrap();
        let Command::MockProvider(args) = cli.command else { panic!("not mock-provider") };
        let settings = args.settings();
        assert_eq!(settings.kind, sluice_mock::MockKind::OpenAi);
        assert!(!settings.reject_stream_options && !settings.omit_tool_call_index);
        assert!(Cli::try_parse_from(["sluice", "mock-provider", "--kind", "gemini"]).is_err());

        let help = Cli::try_parse_from(["sluice", "mock-provider", "--help"]).unwrap_err().to_string();
        for needle in [
            "--kind",
            "anthropic",
            "azure",
            "x-mock-script",
            "x-mock-cached-tokens",
            "mid_stream_error",
            "text_tool_text",
        ] {
            assert!(help.contains(needle), "{needle} missing from:\n{help}");
        }
    }
}
