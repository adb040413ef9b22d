//! The `warden` command line (clap): `serve` runs the daemon; `deploy`, `call`, `get` and `ls`
//! talk to a running daemon over its HTTP API; `status-graph` prints the invocation table;
//! `bench` measures throughput and latency.

mod bench;
mod client;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::config::{Config, Overrides};
use crate::server::Daemon;
use client::Client;

/// Warden: a WebAssembly task host.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a client command finds the daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// Base URL of the daemon's API.
    #[arg(long, env = "WARDEN_URL", default_value = "http://127.0.0.1:7700", global = true)]
    url: String,
    /// API key, sent as `Authorization: Bearer KEY` on every request.
    #[arg(long, env = "WARDEN_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
}

impl Remote {
    fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.url, self.api_key.as_deref())
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (SQLite in the data directory unless --database names PostgreSQL).
    Serve {
        #[command(flatten)]
        overrides: Box<Overrides>,
    },
    /// Upload a component (a wasm32-wasip2 .wasm) and register its tasks.
    Deploy {
        /// The component file.
        file: PathBuf,
        /// Component name [default: the file stem].
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Route a call of TASK with JSON arguments; with --wait, print the final invocation.
    Call {
        /// Task name.
        task: String,
        /// Arguments as JSON [default: {}].
        args: Option<String>,
        /// Wait for the result.
        #[arg(long)]
        wait: bool,
        /// Longest wait in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one invocation.
    Get {
        /// Invocation id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List tasks or invocations.
    Ls {
        /// What to list.
        what: Listing,
        /// Only invocations of this task.
        #[arg(long)]
        task: Option<String>,
        /// Only invocations in this status.
        #[arg(long)]
        status: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print the invocation status machine.
    StatusGraph,
    /// Measure throughput and latency of no-op calls (starts its own daemon).
    Bench(bench::BenchArgs),
}

/// What `warden ls` lists.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Listing {
    /// Registered tasks.
    Tasks,
    /// Invocations, newest first.
    Invocations,
}

/// The whole `warden` program: logging, the command line from `std::env::args`, the exit code.
/// The binary's `main` is just this, so test harnesses can build the same program.
pub fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,warden=info")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: logs piped to a file or a collector stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { overrides } => serve(*overrides).await,
        Command::Deploy { file, name, remote } => {
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let name = match name {
                Some(n) => n,
                None => file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_string)
                    .context("cannot derive a component name from the file name; pass --name")?,
            };
            let v = remote.client()?.deploy(&name, bytes).await?;
            print_json(&v)
        }
        Command::Call { task, args, wait, timeout, remote } => {
            let args: Value = match args {
                Some(a) => serde_json::from_str(&a).with_context(|| format!("arguments are not valid JSON: {a}"))?,
                None => Value::Object(Default::default()),
            };
            let c = remote.client()?;
            let routed = c.call(&task, &args).await?;
            if !wait {
                return print_json(&routed);
            }
            let id = routed["id"].as_str().context("the daemon answered without an invocation id")?;
            let inv = c.result(id, Duration::from_secs(timeout)).await?;
            print_json(&inv)?;
            if inv["status"] != "success" {
                anyhow::bail!("invocation {id} ended {}", inv["status"]);
            }
            Ok(())
        }
        Command::Get { id, remote } => print_json(&remote.client()?.get(&format!("/v1/invocations/{id}")).await?),
        Command::Ls { what, task, status, limit, remote } => {
            let c = remote.client()?;
            match what {
                Listing::Tasks => print_json(&c.get("/v1/tasks").await?),
                Listing::Invocations => {
                    let mut q = vec![("limit", limit.to_string())];
                    q.extend(task.map(|t| ("task", t)));
                    q.extend(status.map(|s| ("status", s)));
                    print_json(&c.get_query("/v1/invocations", &q).await?)
                }
            }
        }
        Command::StatusGraph => {
            print!("{}", crate::model::status::render_table());
            Ok(())
        }
        Command::Bench(args) => bench::run(args).await,
    }
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn serve(overrides: Overrides) -> anyhow::Result<()> {
    let cfg = Config::load(&overrides)?;
    let daemon = Daemon::start(cfg).await?;
    eprintln!("warden listening on {} (Ctrl-C or SIGTERM to stop)", daemon.url());
    shutdown_signal().await;
    eprintln!("warden: stopping (letting running attempts finish)");
    daemon.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
