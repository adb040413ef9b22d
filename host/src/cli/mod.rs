//! The `warden` command line (clap): `serve` runs the daemon; the client commands (`deploy`,
//! `rm`, `call`, `wait`, `get`, `ls`, `history`, `logs`, `cancel`, `rerun`, `watch`, `route`)
//! talk to a running daemon over its HTTP API and print for people or, with `-o json`, for
//! scripts; `status-graph` prints the invocation table; `openapi` the OpenAPI document of the
//! HTTP API; `bench` measures throughput and latency.

mod bench;
mod bench_feed;
mod client;
mod commands;
mod output;
mod project;
mod stream;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, Overrides};
use crate::server::Daemon;
use client::Client;
use output::{Format, exit};

/// Warden: a WebAssembly task host.
#[derive(Debug, Parser)]
#[command(
    name = "warden",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("WARDEN_GIT_COMMIT"), ")"),
    about,
    after_help = "Exit codes: 0 done (a waited call succeeded), 1 a waited call did not succeed or another \
                  error, 2 bad usage or a request the daemon refused, 3 the daemon is unreachable or failing, \
                  130 interrupted while waiting (the calls keep running)."
)]
pub struct Cli {
    /// Output of client commands: `text` for people, `json` for scripts.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text, global = true)]
    output: Format,
    /// Log lines (on stderr): `text` for people, `json` (one object per line: timestamp, level,
    /// target, fields, span) for a log collector. The level is `WARDEN_LOG` (default
    /// `warn,warden=info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "WARDEN_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How the log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event, for people (colour only on a terminal).
    Text,
    /// One JSON object per event.
    Json,
}

/// Starts logging to stderr in `format`, at the levels of `WARDEN_LOG`, and, with `traces`,
/// exporting the spans of `warden` at level info and above (whatever `WARDEN_LOG` says).
fn init_logs(format: LogFormat, traces: Option<&crate::telemetry::Exporter>) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,warden=info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Json => logs.json().with_current_span(true).with_span_list(false).boxed(),
        // Colour only on a terminal: logs piped to a file or a collector stay plain text.
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).boxed(),
    };
    let spans = tracing_subscriber::filter::Targets::new().with_target("warden", tracing::Level::INFO);
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces.map(|t| t.layer().with_filter(spans)))
        .init();
}

/// The trace export `warden serve` asks for (`--otlp-endpoint`), started before the async
/// runtime (its HTTP client is a blocking one, on the exporter's own thread). A configuration
/// that does not load starts none: `serve` reports why.
fn start_traces(command: &Command) -> anyhow::Result<Option<crate::telemetry::Exporter>> {
    let Command::Serve { overrides } = command else { return Ok(None) };
    let Ok(cfg) = Config::load(overrides) else { return Ok(None) };
    cfg.otlp_traces_url()
        .map(|url| crate::telemetry::Exporter::start(url, cfg.otlp_protocol, &cfg.node_name))
        .transpose()
}

/// An error with the exit code of its kind (see `output::exit`); any other error exits 1.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// Where a client command finds the daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The daemon's API: a URL, or `host:port` (http).
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
    /// Create a task project: `./NAME` with one task named NAME (hyphens become underscores).
    New {
        /// Project name (lower-case letters, digits, `-`, `_`).
        name: String,
        /// Language of the task.
        #[arg(long, value_enum, default_value_t = project::Lang::Rust)]
        lang: project::Lang,
        /// Where to create it [default: the current directory].
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// Build the task project in the current directory (or --path) into a component.
    Build {
        /// The project directory.
        #[arg(long, default_value = ".")]
        path: PathBuf,
    },
    /// Upload a component (a wasm32-wasip2 .wasm) and register its tasks; with no file, build
    /// the project in the current directory and upload that.
    Deploy {
        /// The component file [default: build the project here, or in --path].
        file: Option<PathBuf>,
        /// The project directory to build and upload instead of a file.
        #[arg(long, conflicts_with = "file")]
        path: Option<PathBuf>,
        /// Component name [default: the file stem].
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove a component (refused while its calls are queued or running).
    Rm {
        /// Component name.
        component: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the stored versions of a component, newest first (which is current, how many
    /// unfinished calls are bound to each).
    Versions {
        /// Component name.
        component: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make an earlier version of a component current again (new calls run it; started calls
    /// keep theirs).
    Rollback {
        /// Component name.
        component: String,
        /// The version [default: the newest before the current one].
        #[arg(long)]
        to: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Route a call of TASK with JSON arguments; with --wait, wait for it and print the outcome
    /// (exit 1 unless it succeeded).
    Call {
        /// Task name.
        task: String,
        /// Arguments as JSON [default: {}].
        args: Option<String>,
        /// Wait for the result (Ctrl-C stops waiting; the call keeps running).
        #[arg(long)]
        wait: bool,
        /// Longest wait in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Start no earlier than this many ms from now (a delayed call).
        #[arg(long, conflicts_with = "not_before")]
        delay_ms: Option<u64>,
        /// Start no earlier than this time, RFC 3339 (a scheduled call), e.g. 2026-12-24T18:00:00Z.
        #[arg(long)]
        not_before: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Wait for invocations to end and print them (exit 1 unless all succeeded).
    Wait {
        /// Invocation ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Longest wait in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print every status change as it happens (the event stream), until Ctrl-C.
    Watch {
        /// Only invocations of this task.
        #[arg(long)]
        task: Option<String>,
        /// Only invocations routed by this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only this invocation.
        #[arg(long)]
        invocation: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Route a file of calls (JSON Lines: {"task":…,"args":…} per line) in batches and wait
    /// for them all, with a progress bar (exit 1 unless all succeeded).
    Route {
        /// The file (`-`-less path; blank lines and `#` comments are skipped).
        file: PathBuf,
        /// Calls per request (at most 10,000).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Longest wait for all of them, in seconds.
        #[arg(long, default_value_t = 600)]
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
    /// The statuses an invocation went through, with when and where.
    History {
        /// Invocation id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// What an invocation's attempts logged and printed.
    Logs {
        /// Invocation id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Cancel an invocation (a running guest is interrupted).
    Cancel {
        /// Invocation id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Run a final invocation's call again, as a new invocation.
    Rerun {
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
        /// The page after this one (the `next_cursor` of the previous page).
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Rate limits: at most N attempts of the tasks naming one start per window, cluster-wide.
    RateLimit {
        #[command(subcommand)]
        action: RateLimitAction,
    },
    /// Print the invocation status machine.
    StatusGraph,
    /// Print the OpenAPI 3.1 document of the HTTP API (as `GET /openapi.json` serves it; no
    /// daemon needed).
    Openapi {
        /// As a daemon with `--metrics-public` serves it (`/metrics` open).
        #[arg(long)]
        metrics_public: bool,
    },
    /// Print a completion script for SHELL (e.g. `warden completions bash > ~/.local/share/bash-completion/completions/warden`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Measure throughput and latency of no-op calls (starts its own daemon).
    Bench(bench::BenchArgs),
}

/// What `warden rate-limit` does.
#[derive(Debug, Subcommand)]
enum RateLimitAction {
    /// Create or replace a limit; with --task, those tasks count their attempts against it.
    Set {
        /// The limit's name.
        name: String,
        /// Most attempts started per window (1 to 1,000,000).
        #[arg(long)]
        limit: i64,
        /// The window in ms (1 to 86,400,000).
        #[arg(long)]
        per_ms: i64,
        /// A JSON path into the arguments (e.g. `$.customer`): one limit per value found there.
        #[arg(long)]
        key: Option<String>,
        /// A task that counts against it (repeat for more).
        #[arg(long)]
        task: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the limits and the tasks naming each.
    Ls {
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove a limit (refused while a task names it; `warden rate-limit unset TASK` first).
    Rm {
        /// The limit's name.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop a task counting against its limit.
    Unset {
        /// The task.
        task: String,
        #[command(flatten)]
        remote: Remote,
    },
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
    let cli = Cli::parse();
    let log_format = cli.log_format;
    let traces = match start_traces(&cli.command) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot export traces: {e:#}\nhint: check --otlp-endpoint and --otlp-protocol");
            return std::process::ExitCode::from(exit::USAGE);
        }
    };
    init_logs(log_format, traces.as_ref());
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let ran = rt.block_on(run(cli));
    // Outside the runtime: the exporter's blocking client sends the last spans.
    drop(rt);
    if let Some(t) = traces {
        t.shutdown();
    }
    match ran {
        Ok(()) => std::process::ExitCode::from(exit::OK),
        Err(e) => {
            match log_format {
                LogFormat::Text => eprintln!("error: {e:#}"),
                LogFormat::Json => tracing::error!(error = format!("{e:#}"), "warden stopped with an error"),
            }
            std::process::ExitCode::from(e.downcast_ref::<Failure>().map_or(1, |f| f.code))
        }
    }
}

/// Runs the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let fmt = cli.output;
    match cli.command {
        Command::Serve { overrides } => serve(*overrides, cli.log_format).await,
        Command::New { name, lang, path } => {
            let dir = project::new(&name, lang, &path.unwrap_or_else(|| PathBuf::from(".")))?;
            match fmt {
                Format::Json => output::emit(&output::json(&serde_json::json!({"created": dir}))),
                Format::Text => output::emit(&format!(
                    "created {}
next: cd {} && warden build && warden deploy && warden call {} '{{}}' --wait
",
                    dir.display(),
                    dir.display(),
                    name.replace('-', "_")
                )),
            }
            Ok(())
        }
        Command::Build { path } => {
            let built = project::build(&path)?;
            match fmt {
                Format::Json => {
                    output::emit(&output::json(&serde_json::json!({"component": built.path, "name": built.name})))
                }
                Format::Text => output::emit(&format!("{}\n", built.path.display())),
            }
            Ok(())
        }
        Command::Deploy { file, path, name, remote } => {
            let (file, name) = match file {
                Some(f) => (f, name),
                None => {
                    let built = project::build(&path.unwrap_or_else(|| PathBuf::from(".")))?;
                    (built.path, name.or(Some(built.name)))
                }
            };
            commands::deploy(&remote.client()?, fmt, &file, name).await
        }
        Command::Rm { component, remote } => commands::rm(&remote.client()?, fmt, &component).await,
        Command::Versions { component, remote } => commands::versions(&remote.client()?, fmt, &component).await,
        Command::Rollback { component, to, remote } => commands::rollback(&remote.client()?, fmt, &component, to).await,
        Command::Call { task, args, wait, timeout, delay_ms, not_before, remote } => {
            let args = commands::parse_args(args.as_deref())?;
            let mut options = serde_json::Map::new();
            options.extend(delay_ms.map(|d| ("delay_ms".to_string(), serde_json::json!(d))));
            options.extend(not_before.map(|t| ("not_before".to_string(), serde_json::json!(t))));
            let options = if options.is_empty() { serde_json::Value::Null } else { options.into() };
            commands::call(&remote.client()?, fmt, &task, &args, &options, wait, Duration::from_secs(timeout)).await
        }
        Command::Wait { ids, timeout, remote } => {
            commands::wait(&remote.client()?, fmt, &ids, Duration::from_secs(timeout)).await
        }
        Command::Get { id, remote } => commands::get(&remote.client()?, fmt, &id).await,
        Command::Watch { task, workflow, invocation, remote } => {
            let mut q = Vec::new();
            q.extend(task.map(|t| ("task", t)));
            q.extend(workflow.map(|w| ("workflow", w)));
            q.extend(invocation.map(|i| ("invocation", i)));
            stream::watch(&remote.client()?, fmt, &q).await
        }
        Command::Route { file, batch, timeout, remote } => {
            stream::route_file(&remote.client()?, fmt, &file, batch, Duration::from_secs(timeout)).await
        }
        Command::History { id, remote } => commands::history(&remote.client()?, fmt, &id).await,
        Command::Logs { id, remote } => commands::logs(&remote.client()?, fmt, &id).await,
        Command::Cancel { id, remote } => commands::act(&remote.client()?, fmt, &id, "cancel").await,
        Command::Rerun { id, remote } => commands::act(&remote.client()?, fmt, &id, "rerun").await,
        Command::Ls { what, task, status, limit, cursor, remote } => {
            let c = remote.client()?;
            match what {
                Listing::Tasks => commands::ls_tasks(&c, fmt).await,
                Listing::Invocations => {
                    let mut q = vec![("limit", limit.to_string())];
                    q.extend(task.map(|t| ("task", t)));
                    q.extend(status.map(|s| ("status", s)));
                    q.extend(cursor.map(|c| ("cursor", c)));
                    commands::ls_invocations(&c, fmt, &q).await
                }
            }
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "warden", &mut out);
            output::emit(&String::from_utf8_lossy(&out));
            Ok(())
        }
        Command::RateLimit { action } => match action {
            RateLimitAction::Set { name, limit, per_ms, key, task, remote } => {
                let spec = serde_json::json!({"limit": limit, "per_ms": per_ms, "key": key});
                commands::rate_limit_set(&remote.client()?, fmt, &name, &spec, &task).await
            }
            RateLimitAction::Ls { remote } => commands::rate_limit_ls(&remote.client()?, fmt).await,
            RateLimitAction::Rm { name, remote } => commands::rate_limit_rm(&remote.client()?, fmt, &name).await,
            RateLimitAction::Unset { task, remote } => commands::rate_limit_unset(&remote.client()?, fmt, &task).await,
        },
        Command::StatusGraph => {
            output::emit(&crate::model::status::render_table());
            Ok(())
        }
        Command::Openapi { metrics_public } => {
            let doc = crate::api::openapi::document(metrics_public);
            output::emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?));
            Ok(())
        }
        Command::Bench(args) => bench::run(args).await,
    }
}

async fn serve(overrides: Overrides, logs: LogFormat) -> anyhow::Result<()> {
    let cfg = Config::load(&overrides)?;
    let daemon = Daemon::start(cfg).await?;
    // For a person at a terminal; a log collector has the JSON lines of the same events.
    if logs == LogFormat::Text {
        eprintln!("warden listening on {} (Ctrl-C or SIGTERM to stop)", daemon.url());
    }
    shutdown_signal().await;
    match logs {
        LogFormat::Text => eprintln!("warden: stopping (letting running attempts finish)"),
        LogFormat::Json => tracing::info!("stopping (letting running attempts finish)"),
    }
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
