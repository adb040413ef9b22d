//! Assembles a daemon from its configuration: opens the store, builds the runtime and the
//! orchestrator, recovers, serves the HTTP API, and shuts all of it down in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, Auth, GuardConfig, Limits, ServeConfig};
use crate::config::Config;
use crate::data_dir::DataDirLock;
use crate::orchestrator::{self, Orchestrator, OrchestratorConfig};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::services::{self, ServicesConfig};
use crate::store::{self, PgStore, SqliteStore, Store};

/// The membership and atomic-services settings of a configuration.
fn services_config(cfg: &Config) -> ServicesConfig {
    ServicesConfig {
        labels: cfg.labels.clone(),
        heartbeat_interval: Duration::from_millis(cfg.heartbeat_interval_ms),
        heartbeat_timeout: Duration::from_millis(cfg.heartbeat_timeout_ms),
        max_pending: Duration::from_millis(cfg.max_pending_ms),
        service_interval: Duration::from_millis(cfg.service_interval_ms),
        retention: (cfg.retention_ms > 0).then(|| Duration::from_millis(cfg.retention_ms)),
        purge_interval: Duration::from_millis(cfg.purge_interval_ms),
        total_tokens: cfg.total_tokens,
        minimum_nodes: cfg.minimum_nodes,
    }
}

/// A running daemon.
pub struct Daemon {
    addr: SocketAddr,
    orch: Orchestrator,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    keys: tokio::task::JoinHandle<()>,
    grace: Duration,
    /// One daemon per data directory, for the daemon's whole life (released when dropped).
    _lock: DataDirLock,
}

/// Checkpoints a SQLite store's log every [`store::CHECKPOINT_EVERY`] until shutdown. A failure
/// is logged and the next one tries again; a commit checkpoints by itself if they keep failing
/// (see `store/sqlite.rs`).
async fn checkpoints(store: Arc<dyn Store>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(store::CHECKPOINT_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = store.checkpoint().await {
            tracing::warn!(error = %e, "checkpointing the database log failed; will try again");
        }
    }
}

/// How often `trim_when_idle` looks whether the node ran anything.
const IDLE_TRIM_EVERY: Duration = Duration::from_secs(1);

/// Once a look finds that no outcome was recorded since the one before, after some were,
/// hands the memory the allocator keeps from the burst back to the kernel. glibc keeps what
/// a burst freed in its per-thread arenas for ever: a node that ran 5,000 calls stayed at
/// 73 MB resident instead of 46 MB (release build, `hello`), and a cluster of idle nodes pays
/// that on every node. One trim per quiet spell; it walks the arenas and costs milliseconds.
async fn trim_when_idle(orch: Orchestrator, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(IDLE_TRIM_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let recorded = || orch.counters().recorded.load(std::sync::atomic::Ordering::Relaxed);
    let (mut seen, mut trimmed) = (recorded(), true);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = recorded();
        if now != seen {
            (seen, trimmed) = (now, false);
        } else if !trimmed {
            trimmed = true;
            let released = release_freed_memory();
            tracing::debug!(released, "the node is idle; freed memory handed back to the kernel");
        }
    }
}

/// Returns the free memory of glibc's heaps to the kernel; whether any was (`malloc_trim`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_freed_memory() -> bool {
    // SAFETY: `malloc_trim` takes no pointer and touches only memory glibc's allocator owns and
    // has marked free; it is thread-safe (it locks each arena it trims).
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators give memory back by themselves, or not at all.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() -> bool {
    false
}

/// The refusal to serve a non-loopback address without keys, naming both ways out.
fn refuse_unauthenticated(listen: SocketAddr) -> anyhow::Error {
    anyhow::anyhow!(
        "refusing to listen on {listen} without API keys: anyone who can reach this address could \
         upload code, cancel and rerun calls. Pass --admin-key KEY (or WARDEN_ADMIN_KEY, or \
         `admin_key` in the config file; e.g. `openssl rand -hex 32`) to require keys, listen on \
         127.0.0.1, or pass --allow-unauthenticated to start anyway"
    )
}

/// Opens the configured database and runs its migrations.
pub async fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(path) = cfg.sqlite_path() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create data directory {}", dir.display()))?;
        }
        let s = SqliteStore::open(&path)
            .await
            .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
        return Ok(Arc::new(s));
    }
    let url = cfg.database_url.as_deref().unwrap_or_default();
    let s = PgStore::connect(url).await.context("cannot connect to PostgreSQL")?;
    Ok(Arc::new(s))
}

impl Daemon {
    /// Starts a daemon and returns once it accepts requests.
    pub async fn start(cfg: Config) -> anyhow::Result<Self> {
        cfg.validate()?;
        let lock = DataDirLock::acquire(&cfg.data_dir)?;
        let store = open_store(&cfg).await?;
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: cfg.data_dir.join("cache"),
            max_instances: ((cfg.slots + cfg.prefetch) as u32).saturating_mul(2).clamp(128, 4000),
            max_component_bytes: cfg.max_upload_bytes,
            max_result_bytes: cfg.max_args_bytes,
            // Under the data directory's lock: no other daemon empties it at its start.
            scratch_dir: Some(cfg.data_dir.join("scratch")),
            ..RuntimeConfig::default()
        })
        .context("cannot start the wasm runtime")?;
        let orch = Orchestrator::new(
            store.clone(),
            runtime,
            OrchestratorConfig {
                node: cfg.node_name.clone(),
                slots: cfg.slots,
                prefetch: cfg.prefetch,
                retry_base: Duration::from_millis(cfg.retry_base_ms),
                retry_max: Duration::from_millis(cfg.retry_max_ms),
                poll_interval: Duration::from_millis(500),
                max_args_bytes: cfg.max_args_bytes,
                heartbeat_interval: Duration::from_millis(cfg.heartbeat_interval_ms),
                heartbeat_timeout: Duration::from_millis(cfg.heartbeat_timeout_ms),
                report_buffer: cfg.heartbeat_report_by_buffer,
                total_tokens: cfg.total_tokens,
                max_workflow_nodes: cfg.max_workflow_nodes,
                priority_aging_ms: cfg.priority_aging_ms,
                stream_buffer_events: cfg.stream_buffer_events,
            },
        );
        // The API's one handle on the database: the key table, for `Auth`.
        let auth = Auth::new(
            store,
            cfg.admin_key.as_ref().map(|k| k.expose()),
            Duration::from_millis(cfg.heartbeat_interval_ms),
        );
        auth.refresh().await.context("cannot read the API keys")?;
        if !cfg.listen.ip().is_loopback() && !auth.enabled() {
            if !cfg.allow_unauthenticated {
                return Err(refuse_unauthenticated(cfg.listen));
            }
            tracing::warn!(
                listen = %cfg.listen,
                "SERVING WITHOUT AUTHENTICATION on a non-loopback address (--allow-unauthenticated): \
                 anyone who reaches it can upload code and drive every call; create a key with \
                 POST /v1/keys or restart with --admin-key"
            );
        }
        orch.recover().await.context("cannot recover invocations of this node's previous life")?;
        // The loops of this node's life, each tracked by the orchestrator so that a stop lets
        // them finish: claiming and running, membership with the atomic services (leader
        // only), and the workflow scheduler.
        orch.run_loop(orchestrator::dispatch_loop(orch.clone()));
        // Each membership tick publishes the version of the API keys; `Auth` reads them again
        // when it moves.
        let (keys_version, keys_seen) = tokio::sync::watch::channel(0);
        orch.run_loop(services::run(orch.clone(), services_config(&cfg), keys_version));
        orch.run_loop(orchestrator::workflow_scheduler(orch.clone()));
        orch.run_loop(orchestrator::feed_loop(orch.clone()));
        orch.run_loop(orchestrator::due_loop(orch.clone()));
        orch.run_loop(trim_when_idle(orch.clone(), orch.shutdown_token()));
        if orch.store().dialect() == "sqlite" {
            orch.run_loop(checkpoints(orch.store().clone(), orch.shutdown_token()));
        }
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let app = api::router(AppState {
            orch: orch.clone(),
            limits: Limits {
                max_upload_bytes: cfg.max_upload_bytes,
                max_body_bytes: cfg.max_body_bytes,
                max_batch_body_bytes: cfg.max_batch_body_bytes,
                max_args_bytes: cfg.max_args_bytes,
                body_idle_timeout: Duration::from_millis(cfg.header_read_timeout_ms),
            },
            auth: auth.clone(),
            guard: GuardConfig {
                listen: Some(addr),
                allowed_hosts: cfg.allowed_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                cors_origins: cfg.cors_origins.clone(),
                metrics_public: cfg.metrics_public,
            },
            stop: stop.clone(),
        });
        let serve_cfg = ServeConfig {
            header_read_timeout: Duration::from_millis(cfg.header_read_timeout_ms),
            max_connections: match cfg.max_connections {
                0 => api::serve::default_max_connections(),
                n => n,
            },
        };
        let server = tokio::spawn(api::serve(listener, app, serve_cfg, stop.clone()));
        let keys_on = auth.enabled();
        let keys = tokio::spawn(auth.run(stop.clone(), keys_seen));
        tracing::info!(%addr, node = %cfg.node_name, slots = cfg.slots, keys = keys_on, "warden is serving");
        Ok(Self { addr, orch, stop, server, keys, grace: Duration::from_millis(cfg.shutdown_grace_ms), _lock: lock })
    }

    /// The address the API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of the API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The daemon's orchestrator.
    pub fn orchestrator(&self) -> &Orchestrator {
        &self.orch
    }

    /// Stops accepting requests, drains running attempts within the grace period, and stops.
    pub async fn stop(self) {
        self.stop.cancel();
        self.orch.shutdown(self.grace).await;
        let _ = tokio::time::timeout(api::serve::DRAIN + Duration::from_secs(1), self.server).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.keys).await;
    }
}
