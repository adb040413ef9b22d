//! A daemon under test: starts a real `warden` daemon in-process on a fresh data directory and
//! a fresh database (a new SQLite file, or a new PostgreSQL database made through
//! `DATABASE_URL`), and talks to it over real HTTP.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use warden::config::Config;
use warden::server::Daemon;

/// Which database a test daemon runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file in the data directory.
    Sqlite,
    /// A fresh database on the PostgreSQL server named by `DATABASE_URL`.
    Postgres,
}

/// The PostgreSQL server URL for tests; a missing `DATABASE_URL` is a failure, never a skip.
pub fn database_url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "DATABASE_URL is not set: the PostgreSQL tests need a server, e.g. \
             DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test --workspace"
        ),
    }
}

/// Creates a fresh, uniquely named PostgreSQL database and returns its URL.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let url = database_url();
    let name = format!("warden_e2e_{}", uuid_like());
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    drop_databases_of_ended_runs(&mut conn).await;
    let sql = format!("CREATE DATABASE {name}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    let (base, _) = url.rsplit_once('/').unwrap_or((&url, ""));
    format!("{base}/{name}")
}

/// Drops, once per test process, the databases that earlier test processes created (named
/// `warden_e2e_PID_…`, PID no longer running): a database lives as long as its process may use
/// it, so runs on a long-lived server do not pile them up.
async fn drop_databases_of_ended_runs(conn: &mut sqlx::PgConnection) {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'warden\\_e2e\\_%'")
                .fetch_all(&mut *conn)
                .await
                .unwrap_or_default();
        for name in names {
            let pid = name.trim_start_matches("warden_e2e_").split('_').next().unwrap_or("");
            let ended = pid.parse::<u32>().is_ok_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists());
            if ended {
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await {
                    eprintln!("could not drop the old test database {name}: {e}");
                }
            }
        }
    })
    .await;
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}_{}_{}", std::process::id(), t, N.fetch_add(1, Ordering::Relaxed))
}

/// An HTTP client of one daemon's API with the calls tests make.
#[derive(Clone)]
pub struct Api {
    /// Base URL, e.g. `http://127.0.0.1:PORT`.
    pub url: String,
    /// HTTP client.
    pub http: reqwest::Client,
}

/// A daemon under test (in this process) and an HTTP client for it.
pub struct TestDaemon {
    daemon: Option<Daemon>,
    config: Config,
    api: Api,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TestDaemon {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestDaemon {
    /// The daemon's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Starts a daemon (4 slots) on a fresh database of the given backend.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a daemon after letting `tweak` change the configuration.
    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
            data_dir: dir.path().to_path_buf(),
            slots: 4,
            shutdown_grace_ms: 2_000,
            // Atomic services (triggers, recovery, purge) every 100 ms instead of every second.
            heartbeat_interval_ms: 100,
            heartbeat_timeout_ms: 2_000,
            ..Config::default()
        };
        if backend == Backend::Postgres {
            config.database_url = Some(fresh_postgres_database().await);
        }
        tweak(&mut config);
        let daemon = Daemon::start(config.clone()).await.unwrap_or_else(|e| panic!("daemon did not start: {e:#}"));
        let api = Api::new(&daemon.url());
        Self { daemon: Some(daemon), config, api, _dir: dir }
    }

    /// Starts another node of the same cluster: a second daemon named `node` on this one's
    /// database (the same SQLite file, or the same PostgreSQL database), with its own data
    /// directory; `tweak` may change its configuration further.
    pub async fn join(&self, node: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut config = self.config.clone();
        config.listen = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
        config.data_dir = dir.path().to_path_buf();
        config.node_name = node.to_string();
        if config.database_url.is_none() {
            let path = self.config.data_dir.join("warden.db");
            config.database_url = Some(format!("sqlite://{}", path.display()));
        }
        tweak(&mut config);
        let daemon = Daemon::start(config.clone()).await.unwrap_or_else(|e| panic!("node {node} did not start: {e:#}"));
        let api = Api::new(&daemon.url());
        Self { daemon: Some(daemon), config, api, _dir: dir }
    }

    /// The daemon's database as a URL (`sqlite://…` for the embedded file), for tests that
    /// audit what is stored behind the API.
    pub fn database_url(&self) -> String {
        self.config
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.config.data_dir.join("warden.db").display()))
    }

    /// Stops the daemon gracefully and starts it again on the same data and database.
    pub async fn restart(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop().await;
        }
        let mut config = self.config.clone();
        config.listen = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
        let daemon = Daemon::start(config).await.unwrap_or_else(|e| panic!("daemon did not restart: {e:#}"));
        self.api.url = daemon.url();
        self.daemon = Some(daemon);
    }

    /// Stops the daemon.
    pub async fn stop(mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop().await;
        }
    }
}

impl Api {
    /// A client of the daemon at `url`.
    pub fn new(url: &str) -> Self {
        Self { url: url.to_string(), http: reqwest::Client::new() }
    }

    /// The same daemon, every request sent with `Authorization: Bearer KEY`.
    pub fn with_key(&self, key: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .unwrap_or_else(|e| panic!("bad key {key}: {e}"));
        headers.insert(reqwest::header::AUTHORIZATION, value);
        let http = reqwest::Client::builder().default_headers(headers).build().unwrap_or_else(|e| panic!("{e}"));
        Self { url: self.url.clone(), http }
    }

    /// Creates an API key (this client needs an admin key); panics unless 201; returns the
    /// secret.
    pub async fn create_key(&self, name: &str, role: &str) -> String {
        let (s, v) = self.post("/v1/keys", &json!({"name": name, "role": role})).await;
        assert_eq!(s, StatusCode::CREATED, "create key {name}: {v}");
        assert_eq!((v["name"].as_str(), v["role"].as_str()), (Some(name), Some(role)), "{v}");
        v["key"].as_str().unwrap_or_else(|| panic!("no key in {v}")).to_string()
    }

    /// `DELETE path` → (status, JSON body).
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .delete(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("DELETE {path}: {e}"));
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Waits until `/health/ready` answers 200, for up to `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(r) = self.http.get(format!("{}/health/ready", self.url)).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "daemon at {} not ready after {timeout:?}", self.url);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET path` → (status, JSON body).
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.http.get(format!("{}{path}", self.url)).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// `POST path` with a JSON body → (status, JSON body).
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send_json(reqwest::Method::POST, path, body).await
    }

    /// `PUT path` with a JSON body → (status, JSON body).
    pub async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send_json(reqwest::Method::PUT, path, body).await
    }

    /// `PATCH path` with a JSON body → (status, JSON body).
    pub async fn patch(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send_json(reqwest::Method::PATCH, path, body).await
    }

    async fn send_json(&self, method: reqwest::Method, path: &str, body: &Value) -> (StatusCode, Value) {
        let r = self
            .http
            .request(method.clone(), format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// `POST path` with raw bytes (a component upload) → (status, JSON body).
    pub async fn post_bytes(&self, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        self.post_raw(path, "application/wasm", body).await
    }

    /// `POST path` with a raw body of the given content type → (status, JSON body).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Uploads the component at `path` as `name`; panics unless 201.
    pub async fn deploy(&self, name: &str, path: &str) -> Value {
        let bytes = std::fs::read(Path::new(path)).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let (s, v) = self.post_bytes(&format!("/v1/components?name={name}"), bytes).await;
        assert_eq!(s, StatusCode::CREATED, "deploy {name}: {v}");
        v
    }

    /// Routes one call; panics unless 202; returns the invocation id.
    pub async fn call(&self, task: &str, args: Value) -> String {
        let (s, v) = self.post("/v1/invocations", &json!({"task": task, "args": args})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "call {task}: {v}");
        v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
    }

    /// Long-polls the result for up to `timeout`; panics unless the invocation became final.
    pub async fn result(&self, id: &str, timeout: Duration) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let (s, v) =
                self.get(&format!("/v1/invocations/{id}/result?timeout_ms={}", left.as_millis().min(30_000))).await;
            if s == StatusCode::OK {
                return v;
            }
            assert_eq!(s, StatusCode::ACCEPTED, "result of {id}: {v}");
            assert!(!left.is_zero(), "invocation {id} not final after {timeout:?}: {v}");
        }
    }

    /// Routes one call and waits for its final invocation.
    pub async fn run(&self, task: &str, args: Value) -> Value {
        let id = self.call(task, args).await;
        self.result(&id, Duration::from_secs(60)).await
    }
}
