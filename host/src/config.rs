//! Daemon configuration: one typed struct, read from a TOML file, then `WARDEN_*` environment
//! variables, then command-line flags (each later source wins), validated at start-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything `warden serve` needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// Directory for the embedded SQLite database and the compiled-component cache.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…`; default: SQLite at `<data_dir>/warden.db`.
    pub database_url: Option<String>,
    /// This node's unique name; default: `local`.
    pub node_name: String,
    /// Attempts that may run at once on this node.
    pub slots: usize,
    /// Most invocations claimed ahead of free slots in one transaction.
    pub prefetch: usize,
    /// Largest component upload in bytes (a componentize-py task is about 20 MB).
    pub max_upload_bytes: usize,
    /// How long SIGTERM waits for running attempts before interrupting them.
    pub shutdown_grace_ms: u64,
    /// Backoff ceiling of the first retry in ms; doubles per attempt, with equal jitter.
    pub retry_base_ms: u64,
    /// Largest retry backoff in ms.
    pub retry_max_ms: u64,
    /// Final invocations (and their history) are deleted this many ms after their last
    /// change; 0 keeps them for ever.
    pub retention_ms: u64,
    /// How often the purge runs, in ms.
    pub purge_interval_ms: u64,
    /// Labels of this node that task pins can match (`gpu`, `region=eu`).
    pub labels: Vec<String>,
    /// How often this node heartbeats (and, when it leads, renews the lease and runs the atomic
    /// services), in ms.
    pub heartbeat_interval_ms: u64,
    /// A node whose last heartbeat is older than this is dead, in ms: the leader retires it and
    /// reroutes its invocations; it is also the leader lease's length.
    pub heartbeat_timeout_ms: u64,
    /// An invocation `pending` (claimed but not started) for longer than this is recovered
    /// and rerouted (pynenc's `max_pending_seconds`), in ms.
    pub max_pending_ms: u64,
    /// pynenc's `atomic_service_interval_minutes`, in ms: the slot cycle of the atomic services
    /// (the leader is their one runner, so it runs them every heartbeat), and the age after
    /// which a `running` execution record of the current term is abandoned.
    pub service_interval_ms: u64,
    /// A live task instance must be reported for within `heartbeat_interval_ms` × this
    /// (Jobmon's `heartbeat_report_by_buffer`); its node does so every heartbeat.
    pub heartbeat_report_by_buffer: f64,
    /// Tokens in the ring that spreads invocations over the nodes (JobSync's `total_tokens`);
    /// every node of a cluster must use the same.
    pub total_tokens: u32,
    /// The ring is not assigned, so nothing is claimed, until this many nodes are live.
    pub minimum_nodes: usize,
    /// Most nodes of one workflow (or elements of one array); a larger one is refused (400).
    pub max_workflow_nodes: usize,
    /// A call claimable for longer than this (ms) ranks as the highest priority (9): the
    /// longest a low priority waits before the calls routed after it.
    pub priority_aging_ms: u64,
    /// Status changes the event stream keeps for clients that read slower than changes happen;
    /// a client further behind gets `event: lagged` and is disconnected.
    pub stream_buffer_events: usize,
    /// Where to send traces (OTLP over HTTP): a collector's base URL (`/v1/traces` is added)
    /// or the full URL of its traces path; `None`: no traces.
    pub otlp_endpoint: Option<String>,
    /// The traces' wire format.
    pub otlp_protocol: OtlpProtocol,
    /// A bootstrap key with the `admin` role (kept in memory, never stored). With it, or with
    /// any key in the store, every `/v1/*` route requires `Authorization: Bearer KEY`.
    pub admin_key: Option<Secret>,
    /// Start on a non-loopback address without any key (loud warning); refused otherwise.
    pub allow_unauthenticated: bool,
    /// `/metrics` answers without a key even when keys are in force.
    pub metrics_public: bool,
    /// Origins (`https://ui.example.com`) allowed to call the API from a browser (CORS); none
    /// by default, so browsers get no CORS headers.
    pub cors_origins: Vec<String>,
    /// Host names (with or without `:port`) accepted in the `Host` header besides the listen
    /// address, `localhost`, `127.0.0.1` and `[::1]` (DNS-rebinding defence: others get 421).
    pub allowed_hosts: Vec<String>,
    /// Largest JSON request body in bytes, except batches, workflows and arrays.
    pub max_body_bytes: usize,
    /// Largest body of `POST /v1/invocations/batch`, `/v1/workflows` and `/v1/arrays`.
    pub max_batch_body_bytes: usize,
    /// Largest call arguments, task result and event payload (JSON text), in bytes.
    pub max_args_bytes: usize,
    /// A request's head must arrive within this many ms of the moment the connection waits for
    /// it (its accept, or the end of the previous response: so it is the idle keep-alive
    /// timeout as well); the connection is closed otherwise. A request body that sends nothing
    /// for as long is cut off too.
    pub header_read_timeout_ms: u64,
    /// Most open HTTP connections; more are answered 503 with `Retry-After` and closed.
    /// 0: half the process's open-file limit, at most 4096.
    pub max_connections: usize,
}

/// A secret value (an API key) whose `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            data_dir: PathBuf::from("./warden-data"),
            database_url: None,
            node_name: "local".into(),
            slots: std::thread::available_parallelism().map(|n| n.get() * 4).unwrap_or(8),
            prefetch: 64,
            max_upload_bytes: 64 * 1024 * 1024,
            shutdown_grace_ms: 10_000,
            retry_base_ms: 500,
            retry_max_ms: 60_000,
            retention_ms: 7 * 24 * 3_600_000,
            purge_interval_ms: 60_000,
            labels: Vec::new(),
            heartbeat_interval_ms: 1_000,
            heartbeat_timeout_ms: 10_000,
            max_pending_ms: 300_000,
            service_interval_ms: 60_000,
            heartbeat_report_by_buffer: 3.1,
            total_tokens: crate::model::DEFAULT_TOTAL_TOKENS,
            minimum_nodes: 1,
            max_workflow_nodes: crate::model::workflow::MAX_NODES,
            stream_buffer_events: 16_384,
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::default(),
            priority_aging_ms: 30_000,
            admin_key: None,
            allow_unauthenticated: false,
            metrics_public: false,
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            max_body_bytes: 2 << 20,
            max_batch_body_bytes: 64 << 20,
            max_args_bytes: 1 << 20,
            header_read_timeout_ms: 10_000,
            max_connections: 0,
        }
    }
}

/// Values given on the command line or in the environment; `None` keeps the lower layer's.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Address of the HTTP API [default: 127.0.0.1:7700].
    #[arg(long, env = "WARDEN_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory [default: ./warden-data].
    #[arg(long, env = "WARDEN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL (sqlite://PATH or postgres://…) [default: SQLite in the data directory].
    #[arg(long = "database", env = "WARDEN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Unique node name [default: local].
    #[arg(long, env = "WARDEN_NODE_NAME")]
    pub node_name: Option<String>,
    /// Concurrent attempts on this node [default: 4 × cores].
    #[arg(long, env = "WARDEN_SLOTS")]
    pub slots: Option<usize>,
    /// Invocations claimed ahead of free slots in one transaction [default: 64].
    #[arg(long, env = "WARDEN_PREFETCH")]
    pub prefetch: Option<usize>,
    /// Largest component upload in bytes [default: 64 MiB].
    #[arg(long, env = "WARDEN_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<usize>,
    /// Grace period for running attempts on SIGTERM, in ms [default: 10000].
    #[arg(long, env = "WARDEN_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Backoff ceiling of the first retry in ms, doubling per attempt [default: 500].
    #[arg(long, env = "WARDEN_RETRY_BASE_MS")]
    pub retry_base_ms: Option<u64>,
    /// Largest retry backoff in ms [default: 60000].
    #[arg(long, env = "WARDEN_RETRY_MAX_MS")]
    pub retry_max_ms: Option<u64>,
    /// Keep final invocations this many ms; 0 keeps them for ever [default: 7 days].
    #[arg(long, env = "WARDEN_RETENTION_MS")]
    pub retention_ms: Option<u64>,
    /// How often old invocations are purged, in ms [default: 60000].
    #[arg(long, env = "WARDEN_PURGE_INTERVAL_MS")]
    pub purge_interval_ms: Option<u64>,
    /// Labels of this node, comma-separated (`gpu,region=eu`) [default: none].
    #[arg(long, env = "WARDEN_LABELS", value_delimiter = ',')]
    pub labels: Option<Vec<String>>,
    /// Heartbeat interval in ms [default: 1000].
    #[arg(long, env = "WARDEN_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// A node silent for this many ms is dead [default: 10000].
    #[arg(long, env = "WARDEN_HEARTBEAT_TIMEOUT_MS")]
    pub heartbeat_timeout_ms: Option<u64>,
    /// Reroute invocations pending longer than this, in ms [default: 300000].
    #[arg(long, env = "WARDEN_MAX_PENDING_MS")]
    pub max_pending_ms: Option<u64>,
    /// Cycle of the atomic services; a running execution older than this is abandoned, in ms
    /// [default: 60000].
    #[arg(long, env = "WARDEN_SERVICE_INTERVAL_MS")]
    pub service_interval_ms: Option<u64>,
    /// Task instances must be reported for within heartbeat interval × this [default: 3.1].
    #[arg(long, env = "WARDEN_HEARTBEAT_REPORT_BY_BUFFER")]
    pub heartbeat_report_by_buffer: Option<f64>,
    /// Tokens in the ring; the same on every node [default: 10000].
    #[arg(long, env = "WARDEN_TOTAL_TOKENS")]
    pub total_tokens: Option<u32>,
    /// Nodes that must be live before work is distributed [default: 1].
    #[arg(long, env = "WARDEN_MINIMUM_NODES")]
    pub minimum_nodes: Option<usize>,
    /// Most nodes of one workflow or elements of one array; more is refused with 400
    /// [default: 100000].
    #[arg(long, env = "WARDEN_MAX_WORKFLOW_NODES")]
    pub max_workflow_nodes: Option<usize>,
    /// A call claimable longer than this many ms ranks as priority 9, so low priorities are
    /// not starved by high ones [default: 30000].
    #[arg(long, env = "WARDEN_PRIORITY_AGING_MS")]
    pub priority_aging_ms: Option<u64>,
    /// Status changes the event stream keeps for slow clients (one ring per node); a client
    /// further behind is sent `event: lagged` and disconnected [default: 16384; at least 4096].
    #[arg(long, env = "WARDEN_STREAM_BUFFER_EVENTS")]
    pub stream_buffer_events: Option<usize>,
    /// Send OpenTelemetry traces (routing, claims, attempts, outcomes) to this OTLP/HTTP
    /// collector, e.g. http://127.0.0.1:4318 [default: no traces].
    #[arg(long, env = "WARDEN_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Wire format of the traces [default: http/protobuf].
    #[arg(long, env = "WARDEN_OTLP_PROTOCOL", value_enum)]
    pub otlp_protocol: Option<OtlpProtocol>,
    /// Bootstrap admin API key; with it (or any stored key) every /v1 route needs a key.
    #[arg(long, env = "WARDEN_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Start on a non-loopback address with no API key anyway (anyone reaching the port can
    /// drive the daemon).
    #[arg(long, env = "WARDEN_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    /// Serve /metrics without a key even when keys are in force.
    #[arg(long, env = "WARDEN_METRICS_PUBLIC")]
    pub metrics_public: bool,
    /// Browser origins allowed to call the API (CORS), comma-separated [default: none].
    #[arg(long = "cors-origin", env = "WARDEN_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Extra host names accepted in the Host header, comma-separated [default: none].
    #[arg(long, env = "WARDEN_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Option<Vec<String>>,
    /// Largest JSON request body in bytes (batches, workflows, arrays excepted) [default: 2 MiB].
    #[arg(long, env = "WARDEN_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest body of a batch, workflow or array request in bytes [default: 64 MiB].
    #[arg(long, env = "WARDEN_MAX_BATCH_BODY_BYTES")]
    pub max_batch_body_bytes: Option<usize>,
    /// Largest call arguments, result and event payload in bytes [default: 1 MiB].
    #[arg(long, env = "WARDEN_MAX_ARGS_BYTES")]
    pub max_args_bytes: Option<usize>,
    /// A request head must arrive within this many ms; also the idle keep-alive timeout and
    /// the longest pause within a request body [default: 10000].
    #[arg(long, env = "WARDEN_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Most open HTTP connections; beyond, 503 with Retry-After [default: min(open-file
    /// limit / 2, 4096)].
    #[arg(long, env = "WARDEN_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// TOML file with any of the settings above (lowest precedence).
    #[arg(long, env = "WARDEN_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The wire format of exported traces (`--otlp-protocol`), named as OTLP's
/// `OTEL_EXPORTER_OTLP_PROTOCOL` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP (`http/protobuf`, OTLP's default).
    #[default]
    #[serde(rename = "http/protobuf")]
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    /// JSON over HTTP (`http/json`).
    #[serde(rename = "http/json")]
    #[value(name = "http/json")]
    HttpJson,
}

/// The URL traces are posted to: `endpoint` as given if it names a path, else OTLP's
/// `/v1/traces` under it (as `OTEL_EXPORTER_OTLP_ENDPOINT` is read).
fn traces_url(endpoint: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| format!("otlp_endpoint `{endpoint}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("otlp_endpoint `{endpoint}` must be an http:// or https:// URL (OTLP over HTTP)"));
    }
    Ok(if url.path() == "/" || url.path().is_empty() {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    } else {
        endpoint.to_string()
    })
}

impl Config {
    /// Where traces are posted, if anywhere (`otlp_endpoint`, completed with `/v1/traces`).
    pub fn otlp_traces_url(&self) -> Option<String> {
        self.otlp_endpoint.as_deref().and_then(|e| traces_url(e).ok())
    }

    /// Builds the configuration: defaults < file < environment < flags (clap reads the
    /// environment for any flag not given).
    pub fn load(o: &Overrides) -> Result<Self, ConfigError> {
        let mut c = match &o.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        // Each value given on the command line or in the environment replaces the file's.
        macro_rules! layer {
            ($($field:ident),*) => {$(
                if let Some(v) = o.$field.clone() {
                    c.$field = v.into();
                }
            )*};
        }
        layer!(
            listen,
            data_dir,
            database_url,
            node_name,
            slots,
            prefetch,
            max_upload_bytes,
            shutdown_grace_ms,
            retry_base_ms,
            retry_max_ms,
            retention_ms,
            purge_interval_ms,
            labels,
            heartbeat_interval_ms,
            heartbeat_timeout_ms,
            max_pending_ms,
            service_interval_ms,
            heartbeat_report_by_buffer,
            total_tokens,
            minimum_nodes,
            max_workflow_nodes,
            stream_buffer_events,
            otlp_protocol,
            priority_aging_ms,
            cors_origins,
            allowed_hosts,
            max_body_bytes,
            max_batch_body_bytes,
            max_args_bytes,
            header_read_timeout_ms,
            max_connections
        );
        if o.otlp_endpoint.is_some() {
            c.otlp_endpoint = o.otlp_endpoint.clone();
        }
        if let Some(k) = &o.admin_key {
            c.admin_key = Some(Secret::new(k.clone()));
        }
        // Switches only ever turn on from a higher layer.
        c.allow_unauthenticated |= o.allow_unauthenticated;
        c.metrics_public |= o.metrics_public;
        c.validate()?;
        Ok(c)
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })
    }

    /// Checks ranges and formats.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.slots == 0 || self.slots > 10_000 {
            return Err(ConfigError::Invalid(format!("slots must be between 1 and 10000, got {}", self.slots)));
        }
        if self.purge_interval_ms == 0 {
            return Err(ConfigError::Invalid("purge_interval_ms must be at least 1".into()));
        }
        if self.prefetch == 0 || self.prefetch > 4096 {
            return Err(ConfigError::Invalid(format!("prefetch must be between 1 and 4096, got {}", self.prefetch)));
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_timeout_ms <= self.heartbeat_interval_ms {
            return Err(ConfigError::Invalid(format!(
                "heartbeat_timeout_ms ({}) must exceed heartbeat_interval_ms ({}), which must be at least 1",
                self.heartbeat_timeout_ms, self.heartbeat_interval_ms
            )));
        }
        if self.total_tokens == 0 || self.total_tokens > 1_000_000 || self.minimum_nodes == 0 {
            return Err(ConfigError::Invalid(format!(
                "total_tokens must be between 1 and 1000000 and minimum_nodes at least 1, got {} and {}",
                self.total_tokens, self.minimum_nodes
            )));
        }
        if !(1.0..=1000.0).contains(&self.heartbeat_report_by_buffer) {
            return Err(ConfigError::Invalid(format!(
                "heartbeat_report_by_buffer must be between 1 and 1000, got {}",
                self.heartbeat_report_by_buffer
            )));
        }
        if self.max_workflow_nodes == 0 || self.max_workflow_nodes > 10_000_000 {
            return Err(ConfigError::Invalid(format!(
                "max_workflow_nodes must be between 1 and 10000000, got {}",
                self.max_workflow_nodes
            )));
        }
        // At least a few of the feed's reads (1,000 rows each), or a burst would overrun even
        // a client that keeps up.
        if !(4_096..=1_048_576).contains(&self.stream_buffer_events) {
            return Err(ConfigError::Invalid(format!(
                "stream_buffer_events must be between 4096 and 1048576, got {}",
                self.stream_buffer_events
            )));
        }
        if self.service_interval_ms == 0 || self.max_pending_ms == 0 {
            return Err(ConfigError::Invalid("service_interval_ms and max_pending_ms must be at least 1".into()));
        }
        if let Some(bad) = self.labels.iter().find(|l| l.is_empty() || l.len() > 128 || l.contains(char::is_whitespace))
        {
            return Err(ConfigError::Invalid(format!("label `{bad}` must be 1-128 characters without spaces")));
        }
        if let Some(e) = &self.otlp_endpoint {
            traces_url(e).map_err(ConfigError::Invalid)?;
        }
        if self.node_name.is_empty() || self.node_name.len() > 128 {
            return Err(ConfigError::Invalid("node name must be 1-128 characters".into()));
        }
        if let Some(key) = &self.admin_key
            && (key.expose().len() < 16 || key.expose().chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(ConfigError::Invalid(
                "the admin key must be at least 16 characters without spaces (e.g. `openssl rand -hex 32`)".into(),
            ));
        }
        if self.max_args_bytes < 64 || self.max_body_bytes < 1024 || self.max_batch_body_bytes < self.max_body_bytes {
            return Err(ConfigError::Invalid(format!(
                "max_args_bytes must be at least 64 ({}), max_body_bytes at least 1024 ({}) and \
                 max_batch_body_bytes at least max_body_bytes ({})",
                self.max_args_bytes, self.max_body_bytes, self.max_batch_body_bytes
            )));
        }
        if self.header_read_timeout_ms == 0 {
            return Err(ConfigError::Invalid("header_read_timeout_ms must be at least 1".into()));
        }
        if let Some(bad) = self.cors_origins.iter().find(|o| {
            !(o.starts_with("http://") || o.starts_with("https://"))
                || o.ends_with('/')
                || o.contains(char::is_whitespace)
        }) {
            return Err(ConfigError::Invalid(format!(
                "CORS origin `{bad}` must be scheme://host[:port] without a path, e.g. https://ui.example.com"
            )));
        }
        if let Some(bad) = self.allowed_hosts.iter().find(|h| h.is_empty() || h.contains(['/', ' ', '@'])) {
            return Err(ConfigError::Invalid(format!(
                "allowed host `{bad}` must be a host name, optionally with :port"
            )));
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid(format!(
                "database URL must start with sqlite: or postgres://, got `{url}`"
            )));
        }
        Ok(())
    }

    /// The SQLite file used when no database URL is set, or given as `sqlite://PATH`.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match &self.database_url {
            None => Some(self.data_dir.join("warden.db")),
            Some(url) => url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .map(|p| PathBuf::from(p.split('?').next().unwrap_or(p))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags_with_later_sources_winning() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("w.toml");
        std::fs::write(&file, "slots = 3\nnode_name = \"from-file\"\nlisten = \"127.0.0.1:9000\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let o = Overrides { config: Some(file.clone()), node_name: Some("from-flag".into()), ..Default::default() };
        let c = Config::load(&o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.slots, 3);
        assert_eq!(c.node_name, "from-flag");
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.sqlite_path(), Some(PathBuf::from("./warden-data/warden.db")));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected_with_the_cause() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("w.toml");
        std::fs::write(&file, "slotz = 3\n").unwrap_or_else(|e| panic!("{e}"));
        let err = Config::load(&Overrides { config: Some(file), ..Default::default() })
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("slotz"), "{err}");
        let err = Config::load(&Overrides { slots: Some(0), ..Default::default() })
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("slots"), "{err}");
        let err = Config::load(&Overrides { database_url: Some("mysql://x".into()), ..Default::default() })
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("database URL"), "{err}");
    }

    #[test]
    fn otlp_endpoints_are_completed_and_checked() {
        assert_eq!(traces_url("http://127.0.0.1:4318").as_deref(), Ok("http://127.0.0.1:4318/v1/traces"));
        assert_eq!(traces_url("http://127.0.0.1:4318/").as_deref(), Ok("http://127.0.0.1:4318/v1/traces"));
        assert_eq!(traces_url("https://c:4318/custom").as_deref(), Ok("https://c:4318/custom"));
        let o = Overrides { otlp_endpoint: Some("grpc://c:4317".into()), ..Default::default() };
        let err = Config::load(&o).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("http:// or https://"), "{err}");
        let o = Overrides { otlp_endpoint: Some("collector".into()), ..Default::default() };
        let err = Config::load(&o).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("not a URL"), "{err}");
        let file = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(file.path(), "otlp_endpoint = \"http://c:4318\"\notlp_protocol = \"http/json\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let c = Config::load(&Overrides { config: Some(file.path().into()), ..Default::default() })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.otlp_traces_url().as_deref(), c.otlp_protocol),
            (Some("http://c:4318/v1/traces"), OtlpProtocol::HttpJson)
        );
    }
}
