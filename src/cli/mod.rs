//! The `sluice` command line. Each subcommand only wires library pieces together.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ctl;
mod eval;
mod logging;
mod reload;
mod state;

pub use logging::init_logging;

use crate::config::{self, LogConfig};
use crate::{mock, server};

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
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let command = match cli.command {
        // Evaluation is synchronous: no runtime needed.
        Command::Eval(args) => return eval::run(args),
        Command::Check { config } => return check(&config),
        Command::State(args) => return state::run(args),
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
            Command::Serve { config, watch } => serve(&config, watch).await,
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
            Command::Check { .. } | Command::Eval(_) | Command::State(_) => ExitCode::FAILURE,
        }
    })
}

async fn serve(path: &std::path::Path, watch: bool) -> ExitCode {
    let shutdown = shutdown_signal();
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
    let reloads =
        tokio::spawn(reload::run(std::sync::Arc::clone(&running.state), path.to_path_buf(), watch, started_with));
    shutdown.await;
    tracing::info!("shutdown signal received");
    server::exit_after(running.shutdown_grace + server::SHUTDOWN_MARGIN);
    reloads.abort();
    running.shutdown().await;
    ExitCode::SUCCESS
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
            match server::prepare(loaded) {
                Ok(_) => {
                    println!("{summary}");
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
